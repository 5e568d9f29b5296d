//! Inference-loop benchmark guest: `nnbench MODEL DIMS ITERS INPUT`.
//!
//! Loads the preloaded model MODEL, reads an f32 input of shape DIMS
//! (comma separated) from the raw little-endian file INPUT, runs two warm-up
//! inferences and then ITERS timed ones (set_input + compute + get_output,
//! everything a real module pays per request), printing one line per
//! iteration: `iter_ns <nanoseconds>`. ITERS 0 runs exactly one inference
//! and prints `first_ns <nanoseconds>` (for the cold-start measurement:
//! process start to first result, minus the inference itself).

use std::time::Instant;
use weft_guest::{Graph, Tensor};

fn main() {
    if let Err(e) = run() {
        eprintln!("nnbench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, dims, iters, input] = args.as_slice() else {
        return Err("usage: nnbench MODEL DIMS ITERS INPUT".into());
    };
    let dims: Vec<u32> = dims
        .split(',')
        .map(|d| d.parse().map_err(|_| format!("bad dimension `{d}`")))
        .collect::<Result<_, _>>()?;
    let iters: usize = iters.parse().map_err(|_| format!("bad ITERS `{iters}`"))?;
    let raw = std::fs::read(input).map_err(|e| format!("reading {input}: {e}"))?;
    let values: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let tensor = Tensor::f32(&dims, &values).map_err(|e| e.to_string())?;
    let graph = Graph::load_by_name(model).map_err(|e| e.to_string())?;
    let mut ctx = graph.context().map_err(|e| e.to_string())?;
    let warmups = if iters == 0 { 1 } else { 2 };
    for i in 0..iters + warmups {
        let started = Instant::now();
        ctx.set_input(0, &tensor).map_err(|e| e.to_string())?;
        ctx.compute().map_err(|e| e.to_string())?;
        let out = ctx.output_bytes(0, 64 << 20).map_err(|e| e.to_string())?;
        let ns = started.elapsed().as_nanos();
        if out.is_empty() {
            return Err("model produced an empty output".into());
        }
        if iters == 0 {
            println!("first_ns {ns}");
        } else if i >= warmups {
            println!("iter_ns {ns}");
        }
    }
    Ok(())
}
