//! `classic [--name NAME] A B C D`: runs the `tiny` model (f32 [1, 4] in and
//! out, preloaded by the host) through the upstream `wasi-nn` 0.6 crate, the
//! way the wasmtime and WasmEdge examples are written, and prints the four
//! outputs. It checks that hosts stay compatible with existing guests.

use std::process::ExitCode;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1"))]
fn infer(name: &str, input: &[f32; 4]) -> Result<[f32; 4], String> {
    use wasi_nn::{ExecutionTarget, GraphBuilder, GraphEncoding, TensorType};

    let graph = GraphBuilder::new(GraphEncoding::Onnx, ExecutionTarget::CPU)
        .build_from_cache(name)
        .map_err(|e| format!("cannot load {name:?} (preload it with --nn-preload): {e}"))?;
    let mut ctx = graph.init_execution_context().map_err(|e| e.to_string())?;
    ctx.set_input(0, TensorType::F32, &[1, 4], input)
        .map_err(|e| e.to_string())?;
    ctx.compute().map_err(|e| e.to_string())?;
    let mut output = [0f32; 4];
    let bytes = ctx.get_output(0, &mut output).map_err(|e| e.to_string())?;
    if bytes != size_of_val(&output) {
        return Err(format!("expected 16 output bytes, got {bytes}"));
    }
    Ok(output)
}

#[cfg(not(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1")))]
fn infer(_name: &str, _input: &[f32; 4]) -> Result<[f32; 4], String> {
    Err("build for wasm32-wasip1: the wasi-nn 0.6 crate uses the witx imports".into())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut name = "tiny".to_owned();
    if args.first().is_some_and(|a| a == "--name") && args.len() > 1 {
        name = args.remove(1);
        args.remove(0);
    }
    let values: Result<Vec<f32>, _> = args.iter().map(|a| a.parse::<f32>()).collect();
    let input: [f32; 4] = match values.ok().and_then(|v| v.try_into().ok()) {
        Some(input) => input,
        None => {
            eprintln!("usage: classic [--name NAME] A B C D   (four numbers)");
            return ExitCode::from(2);
        }
    };
    match infer(&name, &input) {
        Ok(output) => {
            let out: Vec<String> = output.iter().map(f32::to_string).collect();
            println!("{}", out.join(" "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("classic: {e}");
            ExitCode::FAILURE
        }
    }
}
