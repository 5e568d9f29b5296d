//! `weft-agent-bench`: the edge agent's footprint, printed in one run.
//!
//! - the idle agent (no modules): resident memory, and CPU over a window;
//! - one served module, then more copies of the same artifact (each its
//!   own module and port): memory per extra copy;
//! - one module with one instance, then with more: memory per extra
//!   instance.
//!
//! Each configuration is a fresh `weft agent` process whose modules come
//! from its own store (no registry), measured once every module serves.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_testkit::containerd::{free_port, http};

#[derive(Parser)]
#[command(
    about = "Footprint of weft agent: idle RSS and CPU, memory per extra module copy and instance"
)]
struct Args {
    /// The `weft` binary.
    #[arg(long, default_value = "target/release/weft")]
    weft: PathBuf,
    /// The serving module each copy runs.
    #[arg(
        long,
        default_value = "modules/target/wasm32-wasip1/release/predictor.wasm"
    )]
    module: PathBuf,
    /// Its model, preloaded as `model`.
    #[arg(long, default_value = "tests/data/mlp_dynamic_batch.onnx")]
    model: PathBuf,
    /// Copies (and instances) in the larger configuration.
    #[arg(long, default_value_t = 8)]
    copies: usize,
    /// Seconds the idle agent is watched.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

struct Agent {
    child: Child,
    status: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_field(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Start an agent on `dir` serving `copies` modules of `instances` each,
/// and wait until every module runs.
fn agent(weft: &Path, dir: &Path, copies: usize, instances: usize) -> anyhow::Result<Agent> {
    let status = format!("127.0.0.1:{}", free_port());
    let mut config = format!(
        "[agent]\ndir = \"{}\"\nstatus = \"{status}\"\ncheck_every = \"60s\"\nprobation = \"1s\"\n",
        dir.display()
    );
    for i in 0..copies {
        config.push_str(&format!(
            "\n[[module]]\nname = \"m{i}\"\nsource = \"bench/m:1\"\nbind = \"127.0.0.1:{}\"\ninstances = {instances}\nmax_memory = \"64MiB\"\n",
            free_port()
        ));
    }
    let path = dir.with_extension("toml");
    std::fs::write(&path, config)?;
    let child = Command::new(weft)
        .args(["agent", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting weft agent")?;
    let a = Agent { child, status };
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = http(&a.status, "GET", "/status", "") {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let modules = v["modules"].as_object().cloned().unwrap_or_default();
            let all = modules.len() == copies && modules.values().all(|m| m["state"] == "running");
            if all {
                // Let start-up allocations settle.
                std::thread::sleep(Duration::from_secs(2));
                return Ok(a);
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the agent with {copies} module(s) did not settle");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for p in [&a.weft, &a.module, &a.model] {
        if !p.exists() {
            bail!("{} is missing; see README: Benchmark", p.display());
        }
    }
    let work = tempfile::tempdir()?;
    let pkg = weft_testkit::serving_package(work.path(), "bench/m", &a.module, &a.model)?;
    // Each measured agent gets its own directory, with the artifact in its
    // store already (what `weft copy` does for an air-gapped device).
    let mut n = 0;
    let mut fresh = || -> anyhow::Result<PathBuf> {
        n += 1;
        let dir = work.path().join(format!("agent{n}"));
        let o = Command::new(&a.weft)
            .args(["build", pkg.to_str().unwrap(), "--store"])
            .arg(dir.join("store"))
            .output()?;
        if !o.status.success() {
            bail!("weft build: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(dir)
    };

    // Idle: no modules.
    let idle = agent(&a.weft, &fresh()?, 0, 1)?;
    let pid = idle.child.id();
    let t0 = cpu_ticks(pid).context("reading /proc")?;
    let wall = Instant::now();
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let ticks = cpu_ticks(pid).unwrap_or(t0) - t0;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = ticks as f64 / hz / wall.elapsed().as_secs_f64() * 100.0;
    let idle_rss = proc_field(pid, "VmRSS:").unwrap_or(0);
    drop(idle);

    let mut rss = |copies: usize, instances: usize| -> anyhow::Result<u64> {
        let dir = fresh()?;
        let ag = agent(&a.weft, &dir, copies, instances)?;
        Ok(proc_field(ag.child.id(), "VmRSS:").unwrap_or(0))
    };
    let one = rss(1, 1)?;
    let many = rss(a.copies, 1)?;
    let wide = rss(1, a.copies)?;
    let per_copy = (many.saturating_sub(one)) as f64 / (a.copies - 1) as f64;
    let per_instance = (wide.saturating_sub(one)) as f64 / (a.copies - 1) as f64;
    println!(
        "weft-agent-bench: {} with {}, {} copies/instances",
        a.module.display(),
        a.model.display(),
        a.copies
    );
    println!(
        "  idle agent (no modules)          RSS {:6.1} MiB (goal < 30 MiB), CPU {cpu:.2}% of one core over {}s",
        mib(idle_rss),
        a.idle_secs
    );
    println!(
        "  1 module, 1 instance             RSS {:6.1} MiB",
        mib(one)
    );
    println!(
        "  {} copies of it (modules)         RSS {:6.1} MiB: +{:.2} MiB per extra copy (goal < 5 MiB)",
        a.copies,
        mib(many),
        per_copy / 1024.0
    );
    println!(
        "  1 module, {} instances            RSS {:6.1} MiB: +{:.2} MiB per extra instance (goal < 5 MiB)",
        a.copies,
        mib(wide),
        per_instance / 1024.0
    );
    Ok(())
}
