//! `weft-bench`: the runtime's figures, measured side by side in one run.
//!
//! On the PP-OCRv4 detection model with one fixed input it times native
//! tract in-process and the same model through a wasm guest (set_input +
//! compute + get_output per iteration); then, on the detection and the
//! recognition model at 1 and 2 threads, onnxruntime from Python against
//! Weft's onnxruntime engine (`--cpu-engine onnxruntime`, the same library
//! through the same wasm guest and wasi-nn tensors) and tract; then
//! instantiation, two contexts of one model on two threads (tract, and the
//! onnxruntime engine), and the cold start of `weft run` as a process with
//! a warm compile cache. Medians and ratios are the figures: the machine
//! is noisy.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use weft_nn::{BackendOptions, CpuEngine, Models, OnnxModel, Preload};
use weft_runtime::{MemoryOutputPipe, RunOptions, Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(
    about = "Measure native tract vs the wasm guest vs onnxruntime, instantiation and cold start"
)]
struct Args {
    /// Directory with the fetched models (scripts/fetch-models.sh).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// The benchmark guest (built from modules/nnbench).
    #[arg(
        long,
        default_value = "modules/target/wasm32-wasip1/release/nnbench.wasm"
    )]
    module: PathBuf,
    /// The `weft` binary for the cold-start figure.
    #[arg(long, default_value = "target/release/weft")]
    weft: PathBuf,
    /// Timed iterations per contender and round.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Rounds of (native, wasm), interleaved so machine noise hits both.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip onnxruntime: the Python reference and Weft's onnxruntime
    /// engine (they need python with onnxruntime).
    #[arg(long)]
    no_ort: bool,
    /// The Python whose onnxruntime is the reference; Weft's onnxruntime
    /// engine loads the library of the same wheel (else it searches as
    /// `weft --cpu-engine onnxruntime` does).
    #[arg(long, env = "WEFT_PYTHON", default_value = "python3")]
    python: PathBuf,
}

const DET: &str = "ch_PP-OCRv4_det_infer.onnx";
const DIMS: [usize; 4] = [1, 3, 640, 640];
const REC: &str = "ch_PP-OCRv4_rec_infer.onnx";
const REC_DIMS: [usize; 4] = [1, 3, 48, 320];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn parse_iters(text: &str, key: &str) -> Vec<Duration> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .filter_map(|n| n.trim().parse().ok())
        .map(Duration::from_nanos)
        .collect()
}

/// Deterministic pseudo-random input in [0, 1), shared by all contenders.
fn input(dims: &[usize]) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..dims.iter().product::<usize>())
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn native(model: &Arc<OnnxModel>, x: &[f32], iters: usize) -> anyhow::Result<Vec<Duration>> {
    native_at(model, x, &DIMS, iters)
}

fn native_at(
    model: &Arc<OnnxModel>,
    x: &[f32],
    dims: &[usize],
    iters: usize,
) -> anyhow::Result<Vec<Duration>> {
    let plan = model.plan(&[dims.to_vec()], &[DatumType::F32])?;
    let tensor = tract_ndarray::ArrayD::from_shape_vec(dims.to_vec(), x.to_vec())?.into_tensor();
    let mut state = plan.spawn()?;
    let mut times = Vec::new();
    for i in 0..iters + 2 {
        let t = Instant::now();
        let out = state.run(tvec!(tensor.clone().into_tvalue()))?;
        let e = t.elapsed();
        anyhow::ensure!(!out.is_empty());
        if i >= 2 {
            times.push(e);
        }
    }
    Ok(times)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let det = a.models.join(DET);
    if !det.exists() {
        bail!(
            "{} is missing: run scripts/fetch-models.sh first",
            det.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let x = input(&DIMS);
    let raw: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(tmp.path().join("input.bin"), &raw)?;
    let dims = DIMS.map(|d| d.to_string()).join(",");
    println!(
        "weft-bench: PP-OCRv4 detection, input {dims}; native and wasm: {} rounds x {} timed iterations, interleaved; medians",
        a.rounds, a.iters
    );

    // 1 and 2, interleaved in rounds so drift on a noisy machine hits both:
    // native tract in process, then the same model through the wasm guest.
    let model = OnnxModel::load(&std::fs::read(&det)?)?;
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(tmp.path().join("cache")),
        ..RuntimeConfig::default()
    })?;
    let program = rt.load_file(&a.module).with_context(|| {
        format!(
            "build it: cd modules && cargo build --release --target wasm32-wasip1 -p nnbench ({})",
            a.module.display()
        )
    })?;
    let preload: Preload = format!("det:onnx:cpu:{}", det.display()).parse()?;
    let models = Arc::new(Models::load(&[preload], Default::default())?);
    let (mut native_all, mut wasm_all) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        native_all.extend(native(&model, &x, a.iters)?);
        let stdout = MemoryOutputPipe::new(1 << 20);
        let code = rt.run(
            &program,
            RunOptions {
                args: vec![
                    "det".into(),
                    dims.clone(),
                    a.iters.to_string(),
                    "/in/input.bin".into(),
                ],
                dirs: vec![weft_runtime::DirGrant {
                    host: tmp.path().into(),
                    guest: "/in".into(),
                    read_only: true,
                }],
                models: models.clone(),
                stdout: Some(stdout.clone()),
                ..Default::default()
            },
        )?;
        anyhow::ensure!(code == 0, "nnbench exited with {code}");
        wasm_all.extend(parse_iters(
            &String::from_utf8_lossy(&stdout.contents()),
            "iter_ns",
        ));
    }
    let (native_t, wasm_t) = (median(native_all), median(wasm_all));

    println!("  native tract (in process)      {:8.2} ms", ms(native_t));
    println!(
        "  wasm guest via wasi-nn         {:8.2} ms   wasm/native = {:.3}x  (goal <= 1.05x)",
        ms(wasm_t),
        wasm_t.as_secs_f64() / native_t.as_secs_f64()
    );

    // 3. onnxruntime: its Python against Weft's onnxruntime engine (the
    // same library, through the wasm guest and wasi-nn), and tract.
    if !a.no_ort {
        onnxruntime(&a, &rt, &program, tmp.path(), native_t)?;
    }

    // 4. Two contexts of one model on two threads: plans are shared, states
    // are not, so this should approach 2x the single-thread rate.
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| native(&model, &x, a.iters.max(2)).map(drop));
        }
    });
    let two = started.elapsed();
    // Both threads also run 2 warm-ups; compare like with like.
    let started_one = Instant::now();
    native(&model, &x, a.iters.max(2))?;
    let one = started_one.elapsed();
    let n = (a.iters.max(2) + 2) as f64;
    let one_rate = n / one.as_secs_f64();
    let two_rate = 2.0 * n / two.as_secs_f64();
    println!(
        "  2 contexts on 2 threads        {:8.1} inf/s vs {:.1} inf/s on one: {:.2}x",
        two_rate,
        one_rate,
        two_rate / one_rate
    );

    if !a.no_ort {
        ort_two_contexts(&a, &x)?;
    }

    // 5. Instantiation: a fresh store, WASI context and instance per run.
    let empty = rt.load(
        "empty.wasm",
        &wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)?,
    )?;
    let mut inst = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        rt.run(&empty, RunOptions::default())?;
        inst.push(t.elapsed());
    }
    println!(
        "  instantiate + run empty module {:8.3} ms",
        ms(median(inst))
    );

    // 6. Cold start of the CLI with a warm compile cache.
    cold_start(&a, tmp.path(), &det)?;
    Ok(())
}

fn cold_start(a: &Args, tmp: &Path, det: &Path) -> anyhow::Result<()> {
    if !a.weft.exists() {
        println!(
            "  cold start: skipped ({} missing; cargo build --release -p weft-cli)",
            a.weft.display()
        );
        return Ok(());
    }
    let tiny = Path::new("tests/data/tiny.onnx");
    std::fs::write(tmp.join("tiny.bin"), [0u8; 16])?;
    for (label, name, path, dims) in [
        ("tiny model", "tiny", tiny, "1,4"),
        (
            "OCR det model",
            "det",
            det,
            &*DIMS.map(|d| d.to_string()).join(","),
        ),
    ] {
        let input = if name == "tiny" {
            "/in/tiny.bin"
        } else {
            "/in/input.bin"
        };
        let mut runs = Vec::new();
        let mut preload_ms = Vec::new();
        let mut first_inference = Vec::new();
        for i in 0..6 {
            let t = Instant::now();
            let out = Command::new(&a.weft)
                .args(["run", "--timings", "--cache-dir"])
                .arg(tmp.join("cli-cache"))
                .arg("--nn-preload")
                .arg(format!("{name}:onnx:cpu:{}", path.display()))
                .arg("--dir")
                .arg(format!("{}::/in:ro", tmp.display()))
                .arg(&a.module)
                .args(["--", name, dims, "0", input])
                .output()?;
            let e = t.elapsed();
            anyhow::ensure!(
                out.status.success(),
                "weft run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let first = parse_iters(&String::from_utf8_lossy(&out.stdout), "first_ns");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let preload = stderr
                .split("preload ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            if i > 0 {
                // The first run fills the compile cache.
                runs.push(e);
                preload_ms.push(Duration::from_secs_f64(preload / 1e3));
                first_inference.push(first.first().copied().unwrap_or_default());
            }
        }
        let (wall, load, infer) = (median(runs), median(preload_ms), median(first_inference));
        println!(
            "  cold start, {label:<14}   {:8.1} ms process start to first result = model load {:.1} ms + first inference {:.1} ms + start-up {:.1} ms (goal: start-up < 50 ms)",
            ms(wall),
            ms(load),
            ms(infer),
            ms(wall.saturating_sub(load + infer))
        );
    }
    Ok(())
}

/// The Python reference (scripts/bench_ort.py): per-iteration times, or why
/// it could not run.
fn python_ort(
    a: &Args,
    model: &Path,
    input: &Path,
    dims: &str,
    threads: usize,
) -> Result<Vec<Duration>, String> {
    let out = Command::new(&a.python)
        .arg("scripts/bench_ort.py")
        .arg(model)
        .arg(input)
        .args([dims, &a.iters.to_string(), &threads.to_string()])
        .output()
        .map_err(|e| format!("{}: {e}", a.python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_owned());
    }
    Ok(parse_iters(
        &String::from_utf8_lossy(&out.stdout),
        "iter_ns",
    ))
}

/// Load onnxruntime for the engine from the reference's own wheel, so both
/// sides run one build; else from the engine's usual search.
fn ort_library(a: &Args) -> anyhow::Result<&'static weft_nn::ort::Library> {
    let path = weft_nn::ort::wheel_library(&a.python).or_else(|_| weft_nn::ort::library())?;
    Ok(weft_nn::ort::init_from(Some(&path))?)
}

/// The guest's per-iteration times: `args` are nnbench's (MODEL DIMS
/// ITERS INPUT), `dir` is granted as `/in`.
fn guest(
    rt: &Runtime,
    program: &weft_runtime::Program,
    models: &Arc<Models>,
    args: Vec<String>,
    dir: &Path,
) -> anyhow::Result<Vec<Duration>> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let code = rt.run(
        program,
        RunOptions {
            args,
            dirs: vec![weft_runtime::DirGrant {
                host: dir.into(),
                guest: "/in".into(),
                read_only: true,
            }],
            models: models.clone(),
            stdout: Some(stdout.clone()),
            ..Default::default()
        },
    )?;
    anyhow::ensure!(code == 0, "nnbench exited with {code}");
    Ok(parse_iters(
        &String::from_utf8_lossy(&stdout.contents()),
        "iter_ns",
    ))
}

/// PP-OCRv4 det and rec at 1 and 2 threads: onnxruntime's Python, Weft's
/// onnxruntime engine through the wasm guest, and tract in process,
/// interleaved in rounds.
fn onnxruntime(
    a: &Args,
    rt: &Runtime,
    program: &weft_runtime::Program,
    tmp: &Path,
    det_native: Duration,
) -> anyhow::Result<()> {
    let library = match ort_library(a) {
        Ok(l) => l,
        Err(e) => {
            println!("  onnxruntime: skipped ({e:#})");
            return Ok(());
        }
    };
    println!(
        "  onnxruntime {} ({}); {} rounds x {} timed iterations, interleaved; per-call intra-op threads, inter-op 1",
        library.version(),
        library.path().display(),
        a.rounds,
        a.iters
    );
    let rec_x = input(&REC_DIMS);
    std::fs::write(
        tmp.join("rec.bin"),
        rec_x
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )?;
    let rec_path = a.models.join(REC);
    let rec_native = OnnxModel::load(&std::fs::read(&rec_path)?)?;
    struct Case {
        label: &'static str,
        name: &'static str,
        path: PathBuf,
        dims: String,
        input: &'static str,
        threads: usize,
        models: Arc<Models>,
        ort: Vec<Duration>,
        weft: Vec<Duration>,
        error: Option<String>,
    }
    let mut cases = Vec::new();
    for (label, name, file, dims, input) in [
        ("det", "det", DET, DIMS, "input.bin"),
        ("rec", "rec", REC, REC_DIMS, "rec.bin"),
    ] {
        let path = a.models.join(file);
        for threads in [1, 2] {
            let preload: Preload = format!("{name}:onnx:cpu:{}", path.display()).parse()?;
            let options = BackendOptions {
                cpu: CpuEngine::Onnxruntime { threads },
                ..Default::default()
            };
            cases.push(Case {
                label,
                name,
                path: path.clone(),
                dims: dims.map(|d| d.to_string()).join(","),
                input,
                threads,
                models: Arc::new(Models::load(&[preload], options)?),
                ort: Vec::new(),
                weft: Vec::new(),
                error: None,
            });
        }
    }
    let mut rec_tract = Vec::new();
    for _ in 0..a.rounds {
        for c in &mut cases {
            match python_ort(a, &c.path, &tmp.join(c.input), &c.dims, c.threads) {
                Ok(t) => c.ort.extend(t),
                Err(e) => c.error = Some(e),
            }
            let args = vec![
                c.name.into(),
                c.dims.clone(),
                a.iters.to_string(),
                format!("/in/{}", c.input),
            ];
            c.weft.extend(guest(rt, program, &c.models, args, tmp)?);
        }
        rec_tract.extend(native_at(&rec_native, &rec_x, &REC_DIMS, a.iters)?);
    }
    let rec_tract = median(rec_tract);
    for c in cases {
        let weft = median(c.weft);
        let tract = if c.label == "det" {
            det_native
        } else {
            rec_tract
        };
        let ratio = |t: Duration, of: Duration| t.as_secs_f64() / of.as_secs_f64();
        match c.error {
            Some(e) if c.ort.is_empty() => println!(
                "  {} {} thread(s): weft onnxruntime engine (wasm guest) {:8.2} ms; onnxruntime (Python) skipped ({e})",
                c.label,
                c.threads,
                ms(weft)
            ),
            _ => {
                let ort = median(c.ort);
                println!(
                    "  {} {} thread(s): onnxruntime (Python) {:8.2} ms | weft onnxruntime engine (wasm guest) {:8.2} ms = {:.3}x ort (goal <= 1.2x) | tract (native, 1 thread) {:8.2} ms = {:.2}x ort",
                    c.label,
                    c.threads,
                    ms(ort),
                    ms(weft),
                    ratio(weft, ort),
                    ms(tract),
                    ratio(tract, ort)
                );
            }
        }
    }
    Ok(())
}

/// Two contexts of one model on two threads on the onnxruntime engine (one
/// intra-op thread each): the model's session pool opens a second session
/// instead of serializing the runs.
fn ort_two_contexts(a: &Args, x: &[f32]) -> anyhow::Result<()> {
    use weft_nn::{Id, Tensor, TensorType};
    if weft_nn::ort::loaded().is_none() {
        return Ok(());
    }
    let model = weft_nn::onnxruntime::load(&std::fs::read(a.models.join(DET))?, 1)?;
    let graph = weft_nn::onnxruntime::graph(model);
    let tensor = Tensor {
        dimensions: DIMS.map(|d| d as u32).to_vec(),
        ty: TensorType::Fp32,
        data: x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let n = a.iters.max(2) + 2;
    let run = || -> anyhow::Result<()> {
        let mut ctx = graph.init_execution_context()?;
        for _ in 0..n {
            ctx.set_input(Id::Index(0), &tensor)?;
            ctx.compute()?;
            ctx.get_output(Id::Index(0))?;
        }
        Ok(())
    };
    run()?; // opens nothing new: warms the first session
    let started_one = Instant::now();
    run()?;
    let one = started_one.elapsed();
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(run)).collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("bench thread panicked"))
    })?;
    let two = started.elapsed();
    let one_rate = n as f64 / one.as_secs_f64();
    let two_rate = 2.0 * n as f64 / two.as_secs_f64();
    println!(
        "  2 contexts on 2 threads, onnxruntime engine (1 thread per run) {:8.1} inf/s vs {:.1} inf/s on one: {:.2}x",
        two_rate,
        one_rate,
        two_rate / one_rate
    );
    Ok(())
}
