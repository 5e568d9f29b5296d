//! `weft-oci-bench`: push and pull of a 1 GiB model module over loopback,
//! Weft against `skopeo copy` of the same artifact, in one run; plus Weft's
//! peak RSS. Starts its own Debian `docker-registry` on 127.0.0.1.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Weft push/pull vs skopeo copy of a large artifact over loopback")]
struct Args {
    /// The `weft` binary.
    #[arg(long, default_value = "target/release/weft")]
    weft: PathBuf,
    /// Any wasm module to package (the artifact's module layer).
    #[arg(
        long,
        default_value = "modules/target/wasm32-wasip1/release/tinyrun.wasm"
    )]
    module: PathBuf,
    /// Size of the big layer in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Rounds of each transfer (fresh stores and repositories each time).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Run a command, returning its wall time and (for weft) peak RSS in KiB,
/// sampled from /proc while it runs.
fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_file)
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            let elapsed = started.elapsed();
            if !status.success() {
                let mut err = String::new();
                use std::io::Read as _;
                child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                bail!("{cmd:?} failed: {err}");
            }
            return Ok((elapsed, peak));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn big_file(path: &Path, mib: usize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    Ok(())
}

/// A Debian docker-registry on 127.0.0.1 with fresh storage, so no blob is
/// already there (skopeo would otherwise mount it and skip the upload).
struct Registry {
    addr: String,
    child: std::process::Child,
}

impl Registry {
    fn start(dir: &Path) -> anyhow::Result<Registry> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Registry { addr, child })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for (what, p) in [("weft", &a.weft), ("module", &a.module)] {
        if !p.exists() {
            bail!(
                "{what} {} is missing; build it first (see README)",
                p.display()
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let tmp = tmp.path();
    let dir = tmp.join("module");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&a.module, dir.join("module.wasm"))?;
    big_file(&dir.join("big.bin"), a.mib)?;
    std::fs::write(
        dir.join("weft.toml"),
        "[module]\nname = \"big\"\nversion = \"1\"\nfile = \"module.wasm\"\n\n[[file]]\nfile = \"big.bin\"\npath = \"data/big.bin\"\n",
    )?;
    let store = tmp.join("store");
    let weft = |args: &[&str]| {
        let mut c = Command::new(&a.weft);
        c.args(args).env("RUST_LOG", "error");
        c
    };
    timed(&mut weft(&[
        "build",
        "--store",
        store.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]))?;
    let bytes = (a.mib as f64) * 1024.0 * 1024.0;
    let mbps = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    let (mut wpush, mut wpull, mut spush, mut spull) = (vec![], vec![], vec![], vec![]);
    let mut peak = 0u64;
    for round in 0..a.rounds {
        // Weft pushes into an empty registry; both clients pull from it.
        let reg = Registry::start(&tmp.join(format!("reg-w{round}")))?;
        let wref = format!("{}/big:1", reg.addr);
        let (t, rss) = timed(&mut weft(&[
            "push",
            "--store",
            store.to_str().unwrap(),
            "big:1",
            &wref,
        ]))?;
        wpush.push(t);
        peak = peak.max(rss);
        let fresh = tmp.join(format!("pull{round}"));
        let (t, rss) = timed(&mut weft(&[
            "pull",
            "--store",
            fresh.to_str().unwrap(),
            &wref,
        ]))?;
        wpull.push(t);
        peak = peak.max(rss);
        std::fs::remove_dir_all(&fresh)?;
        let layout = tmp.join(format!("skopeo{round}"));
        let (t, _) = timed(
            Command::new("skopeo")
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{wref}"))
                .arg(format!("oci:{}:big:1", layout.display())),
        )?;
        spull.push(t);
        std::fs::remove_dir_all(&layout)?;
        drop(reg);
        // skopeo pushes the same layout (Weft's store) into another empty one.
        let reg = Registry::start(&tmp.join(format!("reg-s{round}")))?;
        let (t, _) = timed(
            Command::new("skopeo")
                .args(["copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:big:1", store.display()))
                .arg(format!("docker://{}/big:1", reg.addr)),
        )?;
        spush.push(t);
        drop(reg);
        std::fs::remove_dir_all(tmp.join(format!("reg-w{round}")))?;
        std::fs::remove_dir_all(tmp.join(format!("reg-s{round}")))?;
    }
    let (wpush, wpull, spush, spull) = (median(wpush), median(wpull), median(spush), median(spull));
    println!(
        "weft-oci-bench: {} MiB layer over loopback, {} rounds, medians (weft {})",
        a.mib,
        a.rounds,
        a.weft.display()
    );
    println!(
        "  push: weft {:7.1} MB/s   skopeo {:7.1} MB/s   weft/skopeo = {:.2}x",
        mbps(wpush),
        mbps(spush),
        spush.as_secs_f64() / wpush.as_secs_f64()
    );
    println!(
        "  pull: weft {:7.1} MB/s   skopeo {:7.1} MB/s   weft/skopeo = {:.2}x  (goal >= 1.5x)",
        mbps(wpull),
        mbps(spull),
        spull.as_secs_f64() / wpull.as_secs_f64()
    );
    println!(
        "  weft peak RSS (push or pull): {:.1} MiB  (goal < 64 MiB)",
        peak as f64 / 1024.0
    );
    Ok(())
}
