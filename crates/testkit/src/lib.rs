//! `weft-testkit`: light test support for Weft's tests and benchmarks:
//! where things are, how a test that needs an absent component behaves
//! (skip locally, fail in CI), and real servers on 127.0.0.1 with temporary
//! state (a `docker-registry`, containerd with its CRI, `weft serve`). It
//! builds no guest module and depends on no Weft crate but the node
//! installer (containerd's configuration block), so a benchmark can use it
//! without the test harness (`weft-tests`, which builds every guest module
//! and re-exports all of this).

use std::path::{Path, PathBuf};

pub mod containerd;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels down")
        .to_path_buf()
}

/// A committed test model under `tests/data`.
pub fn data(name: &str) -> PathBuf {
    repo_root().join("tests/data").join(name)
}

/// Skip a test whose prerequisite is missing, unless `CI` is set: there a
/// missing prerequisite is a broken pipeline, not a reason to pass.
pub fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("required test prerequisite missing in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// The real models fetched by `scripts/fetch-models.sh`, if present.
pub fn models_dir() -> Option<PathBuf> {
    let dir = repo_root().join("models");
    dir.join("ch_PP-OCRv4_det_infer.onnx")
        .exists()
        .then_some(dir)
}

/// A private Debian `docker-registry` (CNCF distribution) on 127.0.0.1 with
/// temporary storage, optionally behind htpasswd basic auth. Killed on drop.
pub struct TestRegistry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    bin: &'static str,
    netns: Option<String>,
}

impl TestRegistry {
    /// Start one; `None` (after `skip_or_fail`) when the binary is missing.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Option<TestRegistry> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_at(format!("127.0.0.1:{port}"), None, basic_auth)
    }

    /// Start one listening on `addr`, inside the network namespace `netns`
    /// when given (`ip netns exec`).
    pub fn start_at(
        addr: String,
        netns: Option<&str>,
        basic_auth: Option<(&str, &str)>,
    ) -> Option<TestRegistry> {
        let bin = ["/usr/bin/docker-registry", "/usr/local/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            skip_or_fail("docker-registry is not installed (apt-get install docker-registry)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = basic_auth {
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apt-get install apache2-utils)");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: weft-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = TestRegistry {
            addr,
            dir,
            child: None,
            bin,
            netns: netns.map(str::to_owned),
        };
        registry.restart();
        Some(registry)
    }

    /// Stop the registry process (its storage stays): the network is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same address with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, self.bin]);
                c
            }
            None => std::process::Command::new(self.bin),
        };
        let child = cmd
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not start on {}", self.addr);
    }

    /// The registry's on-disk data file of a blob.
    pub fn blob_file(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A package directory for `weft build`: `module` as `m.wasm` with `model`
/// preloaded as `model`, named `name` version 1 (the benchmarks' module).
pub fn serving_package(
    dir: &Path,
    name: &str,
    module: &Path,
    model: &Path,
) -> std::io::Result<PathBuf> {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg)?;
    std::fs::copy(module, pkg.join("m.wasm"))?;
    std::fs::copy(model, pkg.join("model.onnx"))?;
    std::fs::write(
        pkg.join("weft.toml"),
        format!(
            "[module]\nname = \"{name}\"\nversion = \"1\"\nfile = \"m.wasm\"\n\n[[model]]\nname = \"model\"\nfile = \"model.onnx\"\n"
        ),
    )?;
    Ok(pkg)
}

/// Write `mib` MiB of incompressible (xorshift) bytes: big layers for
/// transfer tests that compression or deduplication cannot shortcut.
pub fn big_file(path: &Path, mib: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// The Python of the test venv (`target/py`, made by `scripts/test.sh`)
/// when it can import every module in `modules`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let py = repo_root().join("target/py/bin/python3");
    let imports = modules.join(", ");
    // find_spec, not import: some client packages (tritonclient.grpc and
    // kserve) cannot be imported into one process together.
    let check = format!(
        "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in {modules:?}))"
    );
    let ok = std::process::Command::new(&py)
        .args(["-c", &check])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        skip_or_fail(&format!(
            "{} cannot import {imports}; run scripts/test.sh once to make the venv",
            py.display()
        ));
        None
    }
}

/// A `weft serve` process on ephemeral loopback ports, killed on drop.
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub rest: String,
    /// `127.0.0.1:PORT`, unless started with `--no-grpc`.
    pub grpc: Option<String>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    /// Start `bin serve ARGS --bind 127.0.0.1:0 --grpc-bind 127.0.0.1:0`
    /// and wait until it says where it listens.
    pub fn start(bin: &str, args: &[&str]) -> ServeProcess {
        Self::start_with_log(bin, args, "warn")
    }

    /// [`start`](Self::start) with another `RUST_LOG` filter.
    pub fn start_with_log(bin: &str, args: &[&str], filter: &str) -> ServeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--grpc-bind", "127.0.0.1:0"])
            .env("RUST_LOG", filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting weft serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("weft: serving") {
                    let _ = tx.send(line.clone());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let line = match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "weft serve did not start; its output:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        // "weft: serving a, b on http://ADDR (REST) and ADDR (gRPC)"
        let after = |marker: &str| {
            line.split(marker)
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .map(str::to_owned)
        };
        let rest = format!("http://{}", after("http://").expect("REST address"));
        let grpc = after(" and ");
        ServeProcess {
            child,
            rest,
            grpc,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Send SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("waiting for weft serve")
    }

    /// Resident memory of the server, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
