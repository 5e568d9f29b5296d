//! `weft-shim-bench`: pod-level cold start through the CRI path (what the
//! kubelet does for a pod with `runtimeClassName: weft`) against `weft
//! serve` of the same serving module, in one run, medians over rounds:
//!
//! - `weft serve`: process start to the first successful inference;
//! - CRI, warm compile cache: `RunPodSandbox` (pause container, CNI bridge
//!   network), `CreateContainer`, `StartContainer`, to the first successful
//!   inference at the pod's IP;
//! - the same with the node's compile cache emptied before each round.
//!
//! Needs root, Debian's containerd and CNI plugins, and a release build of
//! `weft` and `containerd-shim-weft-v1` (see README: Benchmark).

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft_testkit::containerd::{
    Containerd, Options, PAUSE_IMAGE, Release, container_config, free_port, http, pod_config,
};

#[derive(Parser)]
#[command(about = "Pod cold start through CRI and the weft shim vs weft serve")]
struct Args {
    /// Directory with release `weft` and `containerd-shim-weft-v1`.
    #[arg(long, default_value = "target/release")]
    bin: PathBuf,
    /// The serving module.
    #[arg(
        long,
        default_value = "modules/target/wasm32-wasip1/release/predictor.wasm"
    )]
    module: PathBuf,
    /// Its model, preloaded as `model`.
    #[arg(long, default_value = "tests/data/mlp_dynamic_batch.onnx")]
    model: PathBuf,
    /// Rounds of each start-up; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const BODY: &str = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Poll until the model answers an inference with 200.
fn first_inference(addr: &str, started: Instant) -> anyhow::Result<Duration> {
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok((200, _)) = http(addr, "POST", "/v2/models/m/infer", BODY) {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    bail!("no successful inference on {addr} within 60 s")
}

fn weft_serve(args: &Args, cache: &std::path::Path) -> anyhow::Result<Duration> {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(args.bin.join("weft"))
        .arg("serve")
        .arg(format!("m={}", args.module.display()))
        .arg("--nn-preload")
        .arg(format!("model:onnx:cpu:{}", args.model.display()))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--grpc-bind",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("WEFT_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting weft serve")?;
    let t = first_inference(&format!("127.0.0.1:{port}"), started);
    let _ = child.kill();
    let _ = child.wait();
    t
}

struct PodTimes {
    run_pod: Duration,
    create: Duration,
    start: Duration,
    to_inference: Duration,
    total: Duration,
}

fn pod_start(c: &Containerd, image: &str, round: usize) -> anyhow::Result<PodTimes> {
    let mut cri = c.cri();
    let name = format!("bench-{round}-{}", Instant::now().elapsed().as_nanos());
    let pod = pod_config(&name, &c.dir().join("logs").join(&name));
    let t0 = Instant::now();
    let (pod_id, ip) = cri.run_pod(&pod, "weft").context("RunPodSandbox")?;
    let run_pod = t0.elapsed();
    let mut rt = cri.runtime.clone();
    let config = container_config(
        "m",
        image,
        &[("WEFT_MODEL_NAME", "m"), ("WEFT_INSTANCES", "1")],
        256 << 20,
    );
    let t1 = Instant::now();
    let id = cri
        .block(
            rt.create_container(weft_testkit::containerd::cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.clone()),
            }),
        )
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    let create = t1.elapsed();
    let t2 = Instant::now();
    cri.block(
        rt.start_container(weft_testkit::containerd::cri::StartContainerRequest {
            container_id: id.clone(),
        }),
    )
    .context("StartContainer")?;
    let start = t2.elapsed();
    let t3 = Instant::now();
    first_inference(&format!("{ip}:8000"), t3)?;
    let to_inference = t3.elapsed();
    let total = t0.elapsed();
    cri.stop_container(&id, 10);
    cri.remove_container(&id);
    cri.remove_pod(&pod_id);
    Ok(PodTimes {
        run_pod,
        create,
        start,
        to_inference,
        total,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for p in [
        args.bin.join("weft"),
        args.bin.join("containerd-shim-weft-v1"),
        args.module.clone(),
        args.model.clone(),
    ] {
        if !p.exists() {
            bail!("{} is missing; see README: Benchmark", p.display());
        }
    }
    let c = Containerd::start(&Options {
        release: Release::Debian,
        cri: true,
        shim_dir: std::fs::canonicalize(&args.bin)?,
    })
    .context("starting containerd (needs root and Debian's containerd)")?;
    c.import_pause();
    let mut cri = c.cri();
    cri.wait_image(PAUSE_IMAGE);

    // The classic image of the same module and model.
    let work = tempfile::tempdir()?;
    let pkg = weft_testkit::serving_package(
        work.path(),
        "weft.local/bench/m",
        &args.module,
        &args.model,
    )?;
    let tar = weft_testkit::containerd::classic_image_tar(
        &args.bin.join("weft"),
        &pkg,
        "weft.local/bench/m:1",
    )?;
    c.import(&tar, "wasip1/wasm");
    let image = "weft.local/bench/m:1-classic";
    cri.wait_image(image);

    let serve_cache = work.path().join("serve-cache");
    weft_serve(&args, &serve_cache)?; // warm weft's own compile cache
    pod_start(&c, image, 0)?; // warm the node's compile cache and page cache

    let (mut serve, mut warm, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Interleaved, so drift on a noisy machine hits all three alike.
        serve.push(weft_serve(&args, &serve_cache)?);
        warm.push(pod_start(&c, image, round * 2 + 1)?);
        let _ = std::fs::remove_dir_all(c.compile_cache());
        cold.push(pod_start(&c, image, round * 2 + 2)?);
    }
    let serve_ms = median(serve.iter().map(|d| ms(*d)).collect());
    let col =
        |v: &[PodTimes], f: fn(&PodTimes) -> Duration| median(v.iter().map(|t| ms(f(t))).collect());
    println!(
        "weft-shim-bench: serving module {} with {}, {} rounds interleaved, medians",
        args.module.display(),
        args.model.display(),
        args.rounds
    );
    println!(
        "  weft serve, process start to first inference   {serve_ms:8.1} ms (warm compile cache)"
    );
    for (label, v) in [
        ("CRI pod, warm compile cache", &warm),
        ("CRI pod, cold compile cache", &cold),
    ] {
        let container = col(v, |t| t.create + t.start + t.to_inference);
        println!(
            "  {label}: RunPodSandbox {:.1} + CreateContainer {:.1} + StartContainer {:.1} + to first inference {:.1} = {:.1} ms",
            col(v, |t| t.run_pod),
            col(v, |t| t.create),
            col(v, |t| t.start),
            col(v, |t| t.to_inference),
            col(v, |t| t.total),
        );
        println!(
            "      container path (create to first inference) {container:.1} ms = weft serve {:+.1} ms ({:.2}x)",
            container - serve_ms,
            container / serve_ms
        );
    }
    let warm_container = col(&warm, |t| t.create + t.start + t.to_inference);
    println!(
        "  shim overhead over weft serve, warm cache: {:+.1} ms (goal < 50 ms); whole pod incl. sandbox and CNI: {:+.1} ms",
        warm_container - serve_ms,
        col(&warm, |t| t.total) - serve_ms
    );
    Ok(())
}
