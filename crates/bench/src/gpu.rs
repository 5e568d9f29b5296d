//! `weft-gpu-bench`: the GPU backend measured side by side in one run.
//!
//! 1. fp32 and f16 GEMM throughput of the lowered matmul kernels (N x N x N,
//!    weights resident, one submission per run, timed to device completion)
//!    against cuBLAS through PyTorch on the same GPU (`torch.matmul`, TF32
//!    off; and fp16), when `python3 -c "import torch"` works. f16 runs on the
//!    tiled kernel and, where the device passed its check, on the
//!    cooperative-matrix (tensor core) kernel, each line naming its kernel.
//! 2. End-to-end latency of the example model (PP-OCRv4 recognition, batch
//!    16) on the GPU backend, the CPU backend, and onnxruntime when its
//!    Python package is importable.
//!
//! Medians of `--rounds` runs after one warm-up. Ratios are printed, not
//! judged: the machine is noisy and this binary is the record.
//!
//! `cargo run --release -p weft-bench --bin weft-gpu-bench -- --sizes 4096,8192`

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use weft_gpu::{GpuContext, GpuPlan};
use weft_nn::{Device, Id, OnnxModel, TractContext};

#[derive(Parser)]
struct Args {
    /// GEMM sizes (N for N x N x N).
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,8192")]
    sizes: Vec<usize>,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Batch size of the end-to-end model.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Directory with ch_PP-OCRv4_rec_infer.onnx (scripts/fetch-models.sh).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Python with torch / onnxruntime for the reference columns.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(rounds: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed());
    }
    Ok(median(t))
}

/// Throughput of one N x N x N GEMM and the kernel that ran it; f16 GEMMs
/// on `coop` (tensor cores) when given, else the tiled kernel.
fn gemm_tflops(
    n: usize,
    rounds: usize,
    half: bool,
    coop: Option<weft_gpu::Kernel>,
) -> Result<(f64, String)> {
    let dt = if half {
        f16::datum_type()
    } else {
        f32::datum_type()
    };
    let mut model = TypedModel::default();
    let a = model.add_source("a", dt.fact([n, n]))?;
    let w = Tensor::from_shape(&[n, n], &vec![0.001f32; n * n])?
        .cast_to_dt(dt)?
        .into_owned();
    let b = model.add_const("b", w)?;
    let op = tract_onnx::tract_core::ops::einsum::EinSum {
        axes: "mk,kn->mn".parse()?,
        operating_dt: dt,
        q_params: None,
    };
    let c = model.wire_node("mm", op, &[a, b])?;
    model.select_output_outlets(&c)?;
    let plan = Arc::new(GpuPlan::build_with(weft_gpu::shared()?, &model, coop)?);
    let kernel = match &plan.report().nodes[0].place {
        weft_gpu::Place::Gpu(k) => k.join("+"),
        other => anyhow::bail!("the {n}^3 GEMM did not run on the GPU: {other:?}"),
    };
    let mut ctx = GpuContext::new(plan)?;
    let input = Arc::new(
        Tensor::from_shape(&[n, n], &vec![1f32; n * n])?
            .cast_to_dt(dt)?
            .into_owned(),
    );
    let t = time(rounds, || {
        ctx.run(vec![input.clone()])?;
        ctx.finish()?;
        Ok(())
    })?;
    Ok((2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e12, kernel))
}

const TORCH: &str = r#"
import sys, json, torch
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
out = {}
for n in [int(x) for x in sys.argv[1].split(',')]:
    for dt, name in [(torch.float32, 'fp32'), (torch.float16, 'fp16')]:
        a = torch.ones(n, n, device='cuda', dtype=dt); b = torch.ones(n, n, device='cuda', dtype=dt)
        torch.matmul(a, b); torch.cuda.synchronize()
        ts = []
        for _ in range(int(sys.argv[2])):
            s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
            s.record(); torch.matmul(a, b); e.record(); torch.cuda.synchronize()
            ts.append(s.elapsed_time(e) / 1e3)
        ts.sort()
        out[f'{name}-{n}'] = 2 * n ** 3 / ts[len(ts) // 2] / 1e12
print(json.dumps(out))
"#;

const ORT: &str = r#"
import sys, time, numpy as np, onnxruntime as ort
p = ['CUDAExecutionProvider', 'CPUExecutionProvider']
s = ort.InferenceSession(sys.argv[1], providers=p)
x = np.ones((int(sys.argv[2]), 3, 48, 320), dtype=np.float32)
name = s.get_inputs()[0].name
s.run(None, {name: x})
ts = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); s.run(None, {name: x}); ts.append(time.perf_counter() - t)
ts.sort()
print(s.get_providers()[0], ts[len(ts) // 2])
"#;

fn python(py: &str, script: &str, args: &[String]) -> Option<String> {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "  (reference unavailable: {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn model_latency(
    model: &Arc<OnnxModel>,
    device: Device,
    batch: usize,
    rounds: usize,
) -> Result<Duration> {
    let mut ctx = TractContext::on(model.clone(), device);
    let n = batch * 3 * 48 * 320;
    let x = weft_nn::Tensor {
        dimensions: vec![batch as u32, 3, 48, 320],
        ty: weft_nn::TensorType::Fp32,
        data: (0..n)
            .flat_map(|i| ((i % 255) as f32 / 255.0).to_le_bytes())
            .collect(),
    };
    time(rounds, || {
        ctx.set(Id::Index(0), &x)?;
        ctx.run()?;
        ctx.output(&Id::Index(0))?;
        Ok(())
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    let gpu = weft_gpu::shared().context("no GPU adapter")?;
    println!(
        "adapter: {} ({}), features: {}",
        gpu.adapter_name(),
        gpu.backend(),
        gpu.features().join(", ")
    );
    println!("\n== GEMM, N x N x N, median of {} ==", a.rounds);
    let sizes: Vec<String> = a.sizes.iter().map(|n| n.to_string()).collect();
    let torch: Option<serde_json::Value> =
        python(&a.python, TORCH, &[sizes.join(","), a.rounds.to_string()])
            .and_then(|s| serde_json::from_str(&s).ok());
    let coop = gpu.cooperative_matrix();
    println!(
        "f16 GEMM on tensor cores: {}",
        match &coop {
            Ok(k) => format!("{} (checked against the CPU on this device)", k.name()),
            Err(why) => format!("no ({why})"),
        }
    );
    let pct = |o: Option<f64>, c: Option<f64>| {
        o.zip(c)
            .map_or("n/a".to_string(), |(o, c)| format!("{:.0}%", 100.0 * o / c))
    };
    let tflops = |t: Option<f64>| {
        t.map_or("n/a".to_string(), |t| match t {
            t if t < 0.1 => format!("{:8.2} GFLOP/s", t * 1e3),
            t => format!("{t:8.3} TFLOP/s"),
        })
    };
    for &n in &a.sizes {
        let (ours, kernel) = gemm_tflops(n, a.rounds, false, None)?;
        let cublas = torch.as_ref().and_then(|t| t[format!("fp32-{n}")].as_f64());
        let cublas16 = torch.as_ref().and_then(|t| t[format!("fp16-{n}")].as_f64());
        println!(
            "N={n:>5}: fp32 {kernel} {} | cuBLAS fp32 {} | ratio {}",
            tflops(Some(ours)),
            tflops(cublas),
            pct(Some(ours), cublas),
        );
        // The same kernel compiled with wgpu's shader runtime checks (index
        // clamps, loop counters), which Vulkan and DX12 runs leave out.
        let unchecked = weft_gpu::config();
        weft_gpu::configure(weft_gpu::GpuConfig {
            shader_checks: true,
            ..unchecked.clone()
        });
        let checked = gemm_tflops(n, a.rounds, false, None);
        weft_gpu::configure(unchecked);
        let (checked, _) = checked?;
        println!(
            "N={n:>5}: fp32 {kernel} with wgpu's runtime checks {} | without/with {:.2}x",
            tflops(Some(checked)),
            ours / checked,
        );
        if !gpu.has_f16() {
            println!("N={n:>5}: f16 n/a (no shader-f16)");
            continue;
        }
        let mut runs = vec![gemm_tflops(n, a.rounds, true, None)?];
        if let Ok(k) = coop {
            runs.push(gemm_tflops(n, a.rounds, true, Some(k))?);
        }
        for (t, kernel) in runs {
            println!(
                "N={n:>5}: f16 {kernel} {} | cuBLAS fp16 {} | ratio {}",
                tflops(Some(t)),
                tflops(cublas16),
                pct(Some(t), cublas16),
            );
        }
    }
    let path = a.models.join("ch_PP-OCRv4_rec_infer.onnx");
    println!(
        "\n== PP-OCRv4 recognition, batch {}, median of {} ==",
        a.batch, a.rounds
    );
    let model = OnnxModel::load(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let g = model_latency(&model, Device::Gpu, a.batch, a.rounds)?;
    // Where it ran: a node left on the CPU shows up in the ratio.
    let plan = model.gpu_plan(&[vec![a.batch, 3, 48, 320]], &[weft_nn::DatumType::F32])?;
    println!("placement: {}", plan.report().summary());
    for node in plan.report().cpu_nodes() {
        println!("  on the CPU: {} ({})", node.name, node.op);
    }
    let c = model_latency(&model, Device::Cpu, a.batch, a.rounds)?;
    println!(
        "weft gpu {:>9.2?} | weft cpu {:>9.2?} | cpu/gpu {:.1}x",
        g,
        c,
        c.as_secs_f64() / g.as_secs_f64()
    );
    if let Some(line) = python(
        &a.python,
        ORT,
        &[
            path.display().to_string(),
            a.batch.to_string(),
            a.rounds.to_string(),
        ],
    ) {
        let mut parts = line.split_whitespace();
        let (provider, secs) = (
            parts.next().unwrap_or("?"),
            parts.next().and_then(|s| s.parse::<f64>().ok()),
        );
        if let Some(secs) = secs {
            println!(
                "onnxruntime ({provider}) {:.2} ms | weft gpu / onnxruntime {:.2}x",
                secs * 1e3,
                g.as_secs_f64() / secs
            );
        }
    }
    Ok(())
}
