//! Run an ONNX model on the GPU executor and on tract, compare outputs.
//! `cargo run -p weft-gpu --example compare -- model.onnx 1,3,640,640 [report]`
//! `PROFILE=1` times each node (the `TOP` slowest, default 12, and a total
//! per kernel).
use std::sync::Arc;
use std::time::Instant;
use tract_onnx::prelude::*;
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let shape: Vec<usize> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let mut m = tract_onnx::onnx().model_for_path(&args[1])?;
    m.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape.clone()))?;
    let typed = m.into_typed()?.into_decluttered()?;
    let n: usize = shape.iter().product();
    let input = Tensor::from_shape(
        &shape,
        &(0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect::<Vec<_>>(),
    )?;
    let cpu = typed.clone().into_optimized()?.into_runnable()?;
    let t = Instant::now();
    let want = cpu.run(tvec!(input.clone().into_tvalue()))?;
    println!("cpu {:?}", t.elapsed());
    let gpu = weft_gpu::shared()?;
    let t = Instant::now();
    let plan = Arc::new(weft_gpu::GpuPlan::build(gpu, &typed)?);
    println!("plan {:?}", t.elapsed());
    if args.len() > 3 {
        println!("{}", plan.report());
    } else {
        println!("{}", plan.report().summary());
    }
    let mut ctx = weft_gpu::GpuContext::new(plan.clone())?;
    if std::env::var_os("PROFILE").is_some() {
        ctx.enable_profiling();
    }
    for round in 0..2 {
        let t = Instant::now();
        ctx.run(vec![Arc::new(input.clone())])?;
        let got = ctx.output(0)?;
        println!("gpu run {round} {:?}", t.elapsed());
        let a: Vec<f32> = want[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        let b: Vec<f32> = got.to_plain_array_view::<f32>()?.iter().copied().collect();
        let mut worst = 0f32;
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
        }
        println!(
            "shape {:?} max abs diff {worst:e} (max |x| {scale:e})",
            got.shape()
        );
    }
    for (name, t) in ctx.profile().iter().take(
        std::env::var("TOP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12),
    ) {
        let node = plan.report().nodes.iter().find(|n| &n.name == name);
        let flops = node.map_or(0.0, |n| 2.0 * n.flops);
        println!(
            "{t:>12.2?} {:>8.2} GFLOP/s {name} {typed_shape} {:?}",
            flops / t.as_secs_f64() / 1e9,
            node.map(|n| (&n.op, &n.place)),
            typed_shape = typed
                .node_by_name(name)
                .ok()
                .and_then(|n| typed.outlet_fact(n.id.into()).ok())
                .map_or(String::new(), |f| format!("{:?}", f.shape)),
        );
    }
    // Time and work per kernel, over every node.
    let mut by_kernel: std::collections::BTreeMap<String, (std::time::Duration, f64)> =
        Default::default();
    for (name, t) in ctx.profile() {
        if let Some(n) = plan.report().nodes.iter().find(|n| n.name == name)
            && let weft_gpu::Place::Gpu(k) = &n.place
        {
            let e = by_kernel.entry(k.join("+")).or_default();
            e.0 += t;
            e.1 += 2.0 * n.flops;
        }
    }
    for (kernel, (t, flops)) in by_kernel {
        println!(
            "{t:>12.2?} {:>8.2} GFLOP/s all {kernel}",
            flops / t.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
