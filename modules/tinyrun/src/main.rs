//! `tinyrun (NAME | --file PATH) [--dims D,D,..] [--outputs N] [VALUE..]`:
//! one f32 inference through `weft-guest`, for host tests of both guest kinds
//! (wasm32-wasip1 modules and wasm32-wasip2 components).
//!
//! The model is loaded by name (preloaded by the host) or from an ONNX file
//! the guest can read. The VALUEs form input 0 with shape `--dims` (default
//! `1,<number of values>`). Each of the first N outputs (default 1) is printed
//! as one line of space-separated values. `--feed-back` binds output 0 to
//! input 0 (`Context::bind_output`), so `--repeat N` iterates the model.

use std::process::ExitCode;

use weft_guest::{Encoding, Graph, Target, Tensor, TensorType};

const USAGE: &str = "usage: tinyrun (NAME | --file PATH) [--dims D,D,..] [--outputs N] [--repeat N] [--feed-back] [VALUE..]";

struct Args {
    model: Model,
    dims: Option<Vec<u32>>,
    outputs: u32,
    /// Compute this many times (a long-running guest for lifecycle tests).
    repeat: u64,
    /// Bind output 0 to input 0 (residency): each compute feeds the next.
    feed_back: bool,
    values: Vec<f32>,
}

enum Model {
    Name(String),
    File(String),
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = args.into_iter();
    let (mut model, mut dims, mut outputs, mut values) = (None, None, 1, Vec::new());
    let mut repeat = 1;
    let mut feed_back = false;
    while let Some(arg) = args.next() {
        if arg == "--feed-back" {
            feed_back = true;
            continue;
        }
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--file" => model = Some(Model::File(value("--file")?)),
            "--dims" => {
                let list = value("--dims")?;
                let parsed: Result<Vec<u32>, _> = list.split(',').map(str::parse).collect();
                dims = Some(parsed.map_err(|_| format!("bad --dims {list:?}"))?);
            }
            "--outputs" => {
                let n = value("--outputs")?;
                outputs = n.parse().map_err(|_| format!("bad --outputs {n:?}"))?;
            }
            "--repeat" => {
                let n = value("--repeat")?;
                repeat = n.parse().map_err(|_| format!("bad --repeat {n:?}"))?;
            }
            _ if model.is_none() && !arg.starts_with('-') => model = Some(Model::Name(arg)),
            _ => values.push(arg.parse().map_err(|_| format!("bad value {arg:?}"))?),
        }
    }
    let model = model.ok_or("no model given")?;
    Ok(Args {
        model,
        dims,
        outputs,
        repeat,
        feed_back,
        values,
    })
}

fn run(args: Args) -> Result<(), String> {
    let graph = match &args.model {
        Model::Name(name) => Graph::load_by_name(name).map_err(|e| {
            format!("{e}; is {name:?} preloaded (--nn-preload {name}:onnx:cpu:PATH)?")
        })?,
        Model::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            Graph::load(&[&bytes], Encoding::Onnx, Target::Cpu).map_err(|e| e.to_string())?
        }
    };
    let dims = args
        .dims
        .unwrap_or_else(|| vec![1, args.values.len() as u32]);
    let mut ctx = graph.context().map_err(|e| e.to_string())?;
    let input = Tensor::f32(&dims, &args.values).map_err(|e| e.to_string())?;
    ctx.set_input(0, &input).map_err(|e| e.to_string())?;
    if args.feed_back {
        ctx.bind_output(0, 0).map_err(|e| e.to_string())?;
    }
    for _ in 0..args.repeat.max(1) {
        ctx.compute().map_err(|e| e.to_string())?;
    }
    for index in 0..args.outputs {
        let values = ctx
            .output(index, TensorType::F32, &[])
            .and_then(|t| t.to_f32_vec())
            .map_err(|e| e.to_string())?;
        let line: Vec<String> = values.iter().map(f32::to_string).collect();
        println!("{}", line.join(" "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("tinyrun: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tinyrun: {e}");
            ExitCode::FAILURE
        }
    }
}
