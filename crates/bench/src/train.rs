//! `weft-train-bench`: the step time of training graphs built by
//! weft-autodiff, run on Weft's CPU backend (the tract plan wasi-nn
//! computes with, parameters and optimizer state copied in and out every
//! step as the bundled trainer does), against the same model and optimizer
//! in JAX (jit, CPU), both on one core (`taskset`, XLA single-threaded).
//! Prints medians and the ratio from one run.
//!
//! Models: the digits MLP (64-64-10) and the flagship digits CNN (conv
//! 8x3x3, ReLU, 2x2 max pool, dense 64, ReLU, dense 10), Adam, batch 32.
//!
//! Then the same two models trained by the bundled trainer module itself
//! (wasm32-wasip2, in-process through the runtime, on the same core), with
//! the parameters kept on the host between steps (residency: each
//! `NAME.next` output bound to input `NAME`) and with `--copy-params`
//! (every parameter and state tensor through guest memory each step): the
//! median of the trainer's own per-step times (`step_us`).

use anyhow::{Context, Result};
use clap::Parser;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_autodiff::optim::{Optimizer, training_step};
use weft_autodiff::{DType, Graph, T};
use weft_nn::{Device, Id, OnnxModel, TractContext};

#[derive(Parser)]
struct Args {
    /// Timed steps per model (after 20 warm-up steps).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Trainer steps timed on the GPU backend (0: skip).
    #[arg(long, default_value_t = 42)]
    gpu_rounds: usize,
    /// The Python with jax (the test venv's by default).
    #[arg(long)]
    python: Option<String>,
}

const JAX: &str = r#"
import json, os, sys, time
import jax
jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp
from jax import lax
model, batch, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
k = jax.random.PRNGKey(0)
def rnd(*s):
    global k
    k, sub = jax.random.split(k)
    return jax.random.uniform(sub, s, jnp.float32, -0.1, 0.1)
if model == "mlp":
    p = {"w0": rnd(64, 64), "b0": rnd(64), "w1": rnd(64, 10), "b1": rnd(10)}
else:
    p = {"w0": rnd(8, 1, 3, 3), "b0": rnd(8), "w1": rnd(128, 64), "b1": rnd(64),
         "w2": rnd(64, 10), "b2": rnd(10)}
def logits(p, x):
    if model == "mlp":
        return jax.nn.relu(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]
    h = lax.conv_general_dilated(x.reshape(batch, 1, 8, 8), p["w0"], (1, 1), [(1, 1), (1, 1)],
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
    h = jax.nn.relu(h + p["b0"].reshape(1, -1, 1, 1))
    h = h.reshape(batch, 8, 4, 2, 4, 2).max(axis=(3, 5)).reshape(batch, -1)
    h = jax.nn.relu(h @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]
def loss(p, x, y):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits(p, x), axis=1) * y, axis=1))
@jax.jit
def step(p, m, v, t, x, y):
    l, g = jax.value_and_grad(loss)(p, x, y)
    m = {q: 0.9 * m[q] + 0.1 * g[q] for q in p}
    v = {q: 0.999 * v[q] + 0.001 * g[q] * g[q] for q in p}
    p = {q: p[q] - 0.001 * (m[q] / (1 - 0.9 ** t)) / (jnp.sqrt(v[q] / (1 - 0.999 ** t)) + 1e-8) for q in p}
    return p, m, v, l
m = {q: jnp.zeros_like(p[q]) for q in p}
v = {q: jnp.zeros_like(p[q]) for q in p}
x = rnd(batch, 64)
y = jax.nn.one_hot(jnp.arange(batch) % 10, 10)
times = []
for t in range(1, rounds + 21):
    s = time.perf_counter()
    p, m, v, l = step(p, m, v, jnp.float32(t), x, y)
    l.block_until_ready()
    if t > 20:
        times.append(time.perf_counter() - s)
times.sort()
print(json.dumps({"jax": jax.__version__, "median_s": times[len(times) // 2]}))
"#;

/// Named shapes, in the step graph's input order.
type Inputs = Vec<(String, Vec<usize>)>;

/// The step graph of `model` with Adam, and its inputs.
fn step_graph(model: &str, batch: usize) -> Result<(Vec<u8>, Inputs)> {
    let mut g = Graph::new(DType::F32);
    let shapes: Vec<(&str, Vec<usize>)> = if model == "mlp" {
        vec![
            ("w0", vec![64, 64]),
            ("b0", vec![64]),
            ("w1", vec![64, 10]),
            ("b1", vec![10]),
        ]
    } else {
        vec![
            ("w0", vec![8, 1, 3, 3]),
            ("b0", vec![8]),
            ("w1", vec![128, 64]),
            ("b1", vec![64]),
            ("w2", vec![64, 10]),
            ("b2", vec![10]),
        ]
    };
    let p: Vec<T> = shapes.iter().map(|(n, s)| g.param(n, s)).collect();
    let x = g.input("x", &[batch, 64]);
    let y = g.input("labels", &[batch, 10]);
    let logits = if model == "mlp" {
        let h = g.linear(x, p[0], p[1])?;
        let h = g.relu(h)?;
        g.linear(h, p[2], p[3])?
    } else {
        let h = g.reshape(x, &[batch, 1, 8, 8])?;
        let h = g.conv2d(h, p[0], 1, 1)?;
        let b = g.reshape(p[1], &[8, 1, 1])?;
        let h = g.add(h, b)?;
        let h = g.relu(h)?;
        let h = g.max_pool2d(h, 2)?;
        let h = g.flatten(h)?;
        let h = g.linear(h, p[2], p[3])?;
        let h = g.relu(h)?;
        g.linear(h, p[4], p[5])?
    };
    let loss = g.softmax_cross_entropy(logits, y)?;
    let spec = training_step(&mut g, loss, &Optimizer::adam())?;
    let mut inputs = Vec::new();
    for name in &spec.inputs {
        let shape = match name.as_str() {
            "x" => vec![batch, 64],
            "labels" => vec![batch, 10],
            "lr" | "step" => vec![],
            other => {
                let base = other.split('.').next().unwrap_or(other);
                shapes
                    .iter()
                    .find(|(n, _)| *n == base)
                    .map(|(_, s)| s.clone())
                    .context("a step input of no parameter")?
            }
        };
        inputs.push((name.clone(), shape));
    }
    Ok((g.to_onnx()?, inputs))
}

fn tensor(shape: &[usize], value: f32) -> weft_nn::Tensor {
    let n: usize = shape.iter().product();
    weft_nn::Tensor {
        dimensions: shape.iter().map(|&d| d as u32).collect(),
        ty: weft_nn::TensorType::Fp32,
        data: (0..n)
            .flat_map(|i| (value * ((i % 7) as f32 - 3.0)).to_le_bytes())
            .collect(),
    }
}

/// Median step time on the CPU backend: every input set from host memory
/// and every output read back, each step.
fn ours(model: &str, batch: usize, rounds: usize) -> Result<Duration> {
    let (bytes, inputs) = step_graph(model, batch)?;
    let onnx = OnnxModel::load(&bytes)?;
    let mut ctx = TractContext::on(onnx, Device::Cpu);
    let feed: Vec<weft_nn::Tensor> = inputs
        .iter()
        .map(|(name, shape)| {
            let scale = if name.ends_with(".v") { 0.0001 } else { 0.01 };
            tensor(shape, if name == "step" { 1.0 } else { scale })
        })
        .collect();
    let outputs = inputs
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "x" | "labels" | "lr" | "step"))
        .count()
        + 1;
    let mut times = Vec::new();
    for round in 0..rounds + 20 {
        let started = Instant::now();
        for (i, t) in feed.iter().enumerate() {
            ctx.set(Id::Index(i as u32), t)?;
        }
        ctx.run()?;
        for o in 0..outputs {
            ctx.output(&Id::Index(o as u32))?;
        }
        if round >= 20 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn jax(python: &str, model: &str, batch: usize, rounds: usize) -> Result<(Duration, String)> {
    let mut cmd = if Command::new("taskset").arg("-V").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", python]);
        c
    } else {
        Command::new(python)
    };
    let out = cmd
        .args(["-c", JAX, model, &batch.to_string(), &rounds.to_string()])
        .env(
            "XLA_FLAGS",
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        )
        .output()
        .context("running the JAX reference")?;
    anyhow::ensure!(
        out.status.success(),
        "JAX: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let secs = v["median_s"].as_f64().context("no median from JAX")?;
    Ok((
        Duration::from_secs_f64(secs),
        v["jax"].as_str().unwrap_or("?").to_owned(),
    ))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let python = a.python.clone().unwrap_or_else(|| {
        weft_testkit::repo_root()
            .join("target/py/bin/python3")
            .display()
            .to_string()
    });
    println!(
        "training step time, Adam, batch {}, median of {} steps, one core",
        a.batch, a.rounds
    );
    println!("model  weft CPU (tract)   JAX jit (CPU)   weft / JAX");
    for model in ["mlp", "cnn"] {
        // Ours pinned to the core JAX gets, so neither has more threads.
        #[cfg(target_os = "linux")]
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let w = ours(model, a.batch, a.rounds)?;
        let (j, version) = jax(&python, model, a.batch, a.rounds)?;
        println!(
            "{model:<5}  {:>12.1} us   {:>10.1} us   {:>8.2}x   (jax {version})",
            w.as_secs_f64() * 1e6,
            j.as_secs_f64() * 1e6,
            w.as_secs_f64() / j.as_secs_f64()
        );
    }
    println!(
        "(weft's figure sets every parameter and optimizer-state tensor from host memory and reads every output each step)"
    );
    let trainer =
        weft_testkit::repo_root().join("modules/target/wasm32-wasip2/release/trainer.wasm");
    anyhow::ensure!(
        trainer.exists(),
        "{} is not built: cd modules && cargo build --release --target wasm32-wasip2 -p trainer",
        trainer.display()
    );
    println!();
    println!(
        "the bundled trainer module (wasip2) on the CPU backend, median step of {} steps",
        a.rounds
    );
    println!("model  copied each step   kept on the host   kept / copied");
    for model in ["mlp", "cnn"] {
        let copied = trainer_step(&trainer, model, a.batch, a.rounds, true, "cpu")?;
        let kept = trainer_step(&trainer, model, a.batch, a.rounds, false, "cpu")?;
        println!(
            "{model:<5}  {:>13.1} us   {:>13.1} us   {:>11.2}x",
            copied.as_secs_f64() * 1e6,
            kept.as_secs_f64() * 1e6,
            kept.as_secs_f64() / copied.as_secs_f64()
        );
    }
    if a.gpu_rounds == 0 {
        return Ok(());
    }
    println!();
    println!(
        "the same on the GPU backend, median step of {} steps (--gpu-rounds; 0 skips it)",
        a.gpu_rounds
    );
    println!("model  copied each step   kept on the host   kept / copied");
    for model in ["mlp", "cnn"] {
        let copied = trainer_step(&trainer, model, a.batch, a.gpu_rounds, true, "gpu");
        let kept = trainer_step(&trainer, model, a.batch, a.gpu_rounds, false, "gpu");
        match (copied, kept) {
            (Ok(copied), Ok(kept)) => println!(
                "{model:<5}  {:>13.1} us   {:>13.1} us   {:>11.2}x",
                copied.as_secs_f64() * 1e6,
                kept.as_secs_f64() * 1e6,
                kept.as_secs_f64() / copied.as_secs_f64()
            ),
            (Err(e), _) | (_, Err(e)) => println!("{model:<5}  no GPU run: {e:#}"),
        }
    }
    println!(
        "(on Mesa's lavapipe, a CPU rasterizer, these say nothing of a GPU's speed; the kept column still reads back and uploads each tensor on the host side, see docs/training.md)"
    );
    Ok(())
}

/// The bundled trainer's median `step_us` on the digits for at least
/// `rounds` steps, with `--copy-params` or with residency.
fn trainer_step(
    wasm: &std::path::Path,
    model: &str,
    batch: usize,
    rounds: usize,
    copy: bool,
    target: &str,
) -> Result<Duration> {
    use weft_runtime::{DirGrant, RunOptions, Runtime, RuntimeConfig};
    let data = weft_testkit::repo_root().join("tests/data/digits");
    let out = tempfile::tempdir()?;
    let per_epoch = 1347 / batch;
    let epochs = rounds.div_ceil(per_epoch).max(1);
    let mut args: Vec<String> = [
        "--epochs",
        &epochs.to_string(),
        "--batch",
        &batch.to_string(),
        "--target",
        target,
        "--checkpoint-every",
        "1000000",
    ]
    .map(String::from)
    .to_vec();
    let layers: &[&str] = match model {
        "mlp" => &["--hidden", "64"],
        _ => &[
            "--input-shape",
            "1,8,8",
            "--layers",
            "conv:8:3,relu,maxpool:2,flatten,dense:64,relu",
        ],
    };
    args.extend(layers.iter().map(|s| s.to_string()));
    if copy {
        args.push("--copy-params".into());
    }
    let grant = |host: &std::path::Path, guest: &str, read_only| DirGrant {
        host: host.to_path_buf(),
        guest: guest.into(),
        read_only,
    };
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })?;
    let program = rt.load_file(wasm)?;
    let code = rt.run(
        &program,
        RunOptions {
            args,
            dirs: vec![
                grant(&data, "/data", true),
                grant(out.path(), "/out", false),
                grant(out.path(), "/checkpoints", false),
            ],
            ..Default::default()
        },
    )?;
    anyhow::ensure!(code == 0, "the trainer exited with {code}");
    let text = std::fs::read_to_string(out.path().join("metrics.jsonl"))?;
    let mut times: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["step_us"].as_u64())
        .collect();
    anyhow::ensure!(!times.is_empty(), "the trainer recorded no step times");
    times.sort_unstable();
    Ok(Duration::from_micros(times[times.len() / 2]))
}
