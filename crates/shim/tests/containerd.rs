//! The shim on a real containerd (Debian's 1.6.20, private root, state and
//! socket under a temporary directory; needs root): a classic-image model
//! module imported with `ctr` and run with `--runtime` pointing at the shim.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use weft_tests::{Guest, data, module, skip_or_fail};

fn shim() -> &'static str {
    env!("CARGO_BIN_EXE_containerd-shim-weft-v1")
}

/// The `weft` binary of the same build (cargo builds every workspace binary
/// before `cargo test --workspace` runs tests).
fn weft() -> Option<PathBuf> {
    let p = Path::new(shim()).with_file_name("weft");
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail("the weft binary is not built next to the shim: cargo build -p weft-cli");
        None
    }
}

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        let root = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&root.stdout).trim() != "0" {
            skip_or_fail("containerd tests need root");
            return None;
        }
        if Command::new("containerd")
            .arg("--version")
            .output()
            .is_err()
        {
            skip_or_fail("containerd is not installed (apt-get install containerd)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n",
                d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, child };
        let started = Instant::now();
        while c.ctr(&["version"]).status.code() != Some(0) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(c)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["-n", "weft-test"])
            .args(args)
            .output()
            .expect("ctr")
    }

    /// `ctr images import` an OCI layout tarball of wasip1/wasm images.
    fn import(&self, tar: &Path) {
        let o = self.ctr(&[
            "images",
            "import",
            "--platform",
            "wasip1/wasm",
            tar.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "import: {}", text(&o));
    }

    /// Wait (30 s at most) until task `id` has stopped or is gone.
    fn wait_stopped(&self, id: &str) {
        let started = Instant::now();
        loop {
            let ls = text(&self.ctr(&["task", "ls"]));
            let line = ls.lines().find(|l| l.starts_with(id));
            if line.is_none_or(|l| l.contains("STOPPED")) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "task {id} not stopped: {ls}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leave no mounts behind in the temporary root.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o '{}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Build the classic image of a model module (`module`, with tiny.onnx
/// preloaded as `model_name`) and return the path of an OCI layout tarball
/// holding only it.
fn classic_image(
    weft: &Path,
    dir: &Path,
    name: &str,
    (module_name, model_name): (&str, &str),
    args: &[&str],
) -> PathBuf {
    let pkg = dir.join(format!("pkg-{}", name.replace(['/', ':', '.'], "-")));
    std::fs::create_dir_all(pkg.join("models")).unwrap();
    std::fs::copy(module(Guest::P1, module_name), pkg.join("module.wasm")).unwrap();
    std::fs::copy(data("tiny.onnx"), pkg.join("models/tiny.onnx")).unwrap();
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        pkg.join("weft.toml"),
        format!(
            "[module]\nname = \"{name}\"\nversion = \"1\"\nfile = \"module.wasm\"\nargs = [{}]\n\n\
             [[model]]\nname = \"{model_name}\"\nfile = \"models/tiny.onnx\"\n",
            args.join(", ")
        ),
    )
    .unwrap();
    let store = pkg.join("store");
    let run = |a: &[&str]| {
        let o = Command::new(weft)
            .args(a)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        assert!(o.status.success(), "weft {a:?}: {}", text(&o));
    };
    run(&["build", pkg.to_str().unwrap(), "--classic"]);
    // Keep only the classic variant: containerd 1.6.20 cannot unpack the
    // artifact's non-tar layers.
    run(&["rm", &format!("{name}:1")]);
    run(&["gc"]);
    let tar = pkg.join("image.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&store)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    tar
}

#[test]
fn ctr_runs_a_classic_model_module_with_its_models_and_exit_code() {
    let Some(weft) = weft() else { return };
    let Some(c) = Containerd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = "weft.local/test/tiny";
    let tar = classic_image(
        &weft,
        tmp.path(),
        name,
        ("tinyrun", "tiny"),
        &["tiny", "--dims", "1,4"],
    );
    c.import(&tar);
    let image = format!("{name}:1-classic");
    // Arguments after the image's entrypoint: the numbers to run.
    let o = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        shim(),
        &image,
        "tiny-1",
        "/module.wasm",
        "tiny",
        "--dims",
        "1,4",
        "1",
        "2",
        "3",
        "4",
    ]);
    let out = text(&o);
    assert!(
        o.status.success(),
        "ctr run: {out}\ncontainerd log:\n{}",
        c.log()
    );
    // y = 2x + 1
    assert!(out.contains("3 5 7 9"), "{out}");

    // A bad argument: the module's own error on the container's stderr and
    // its exit code as the task's.
    let o = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        shim(),
        &image,
        "tiny-2",
        "/module.wasm",
        "no-such-model",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no-such-model"), "{}", text(&o));
}

#[test]
fn a_long_running_module_is_killed_by_ctr() {
    let Some(weft) = weft() else { return };
    let Some(c) = Containerd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = "weft.local/test/spin";
    let tar = classic_image(&weft, tmp.path(), name, ("tinyrun", "tiny"), &[]);
    c.import(&tar);
    // A module busy for hours: a hundred million inferences.
    let image = format!("{name}:1-classic");
    let o = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        shim(),
        &image,
        "spin-1",
        "/module.wasm",
        "tiny",
        "--dims",
        "1,4",
        "--repeat",
        "100000000",
        "1",
        "2",
        "3",
        "4",
    ]);
    assert!(o.status.success(), "run -d: {}", text(&o));
    let o = c.ctr(&["task", "kill", "-s", "SIGKILL", "spin-1"]);
    assert!(o.status.success(), "kill: {}", text(&o));
    c.wait_stopped("spin-1");
    let o = c.ctr(&["task", "delete", "spin-1"]);
    assert!(o.status.success(), "delete: {}", text(&o));
    let o = c.ctr(&["container", "delete", "spin-1"]);
    assert!(o.status.success(), "container delete: {}", text(&o));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_serving_module_serves_v2_in_the_container_network_namespace() {
    let Some(weft) = weft() else { return };
    let Some(c) = Containerd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = "weft.local/test/predictor";
    let tar = classic_image(&weft, tmp.path(), name, ("predictor", "model"), &[]);
    c.import(&tar);
    let (rest, grpc) = (free_port(), free_port());
    let image = format!("{name}:1-classic");
    // --net-host: the test reaches the container's network namespace, as a
    // Service reaches a pod's.
    let o = c.ctr(&[
        "run",
        "-d",
        "--net-host",
        "--runtime",
        shim(),
        "--env",
        &format!("WEFT_PORT={rest}"),
        "--env",
        &format!("WEFT_GRPC_PORT={grpc}"),
        "--env",
        "WEFT_MODEL_NAME=tiny",
        &image,
        "svc-1",
    ]);
    assert!(o.status.success(), "run -d: {}", text(&o));
    let url = format!("http://127.0.0.1:{rest}/v2/models/tiny/infer");
    let body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let started = Instant::now();
    let answer = loop {
        let o = Command::new("curl")
            .args(["-s", "-m", "5", "-X", "POST", "--data-binary", body, &url])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if out.contains("outputs") {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the served module never answered: {out}\n{}",
            text(&c.ctr(&["task", "ls"]))
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(answer.contains("[3.0,5.0,7.0,9.0]"), "{answer}");
    // SIGTERM (ctr's default): the server drains and the task exits 0.
    let o = c.ctr(&["task", "kill", "svc-1"]);
    assert!(o.status.success(), "kill: {}", text(&o));
    c.wait_stopped("svc-1");
    let o = c.ctr(&["task", "delete", "svc-1"]);
    assert!(o.status.success(), "delete: {}", text(&o));
    assert!(
        text(&o).contains("status 0") || text(&o).is_empty(),
        "{}",
        text(&o)
    );
}
