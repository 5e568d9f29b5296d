//! `weft` as a user runs it: a real process, real files, exit codes and the
//! one-line errors. (The CLI's one integration-test binary.)

mod serving;

use std::path::Path;
use std::process::{Command, Output};
use weft_tests::{Guest, data, module};

fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn weft(args: &[&str], cwd: &Path) -> Output {
    weft_env(args, cwd, &[("RUST_LOG", "warn")])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Write a WAT program as a .wasm file.
fn wat_file(dir: &Path, name: &str, wat: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path.display().to_string()
}

/// Exits with the number of environment variables it can see.
const ENV_COUNT: &str = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (call $exit (i32.load (i32.const 0)))))"#;

#[test]
fn help_documents_every_run_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let top = weft(&["--help"], tmp.path());
    assert!(top.status.success());
    assert!(stdout(&top).contains("run"), "{}", stdout(&top));
    let run = stdout(&weft(&["run", "--help"], tmp.path()));
    for flag in [
        "--nn-preload",
        "--dir",
        "--env",
        "--max-memory",
        "--timeout",
        "--fuel",
        "--cache-dir",
        "--no-cache",
        "--nn-gpu-fallback",
        "--timings",
        "NAME:ENCODING:TARGET:PATH",
    ] {
        assert!(run.contains(flag), "`weft run --help` lacks {flag}:\n{run}");
    }
}

/// Each bad input: non-zero exit, one `weft: ...` line naming the problem,
/// and nothing written outside the compile cache.
#[test]
fn bad_input_gets_one_clear_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("notes.txt"), "just text").unwrap();
    let lib = wat_file(dir, "lib.wasm", r#"(module (func (export "add")))"#);
    let ok = wat_file(
        dir,
        "ok.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    );
    let tiny = data("tiny.onnx").display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["missing.wasm".into()],
            "cannot read module missing.wasm",
        ),
        (vec!["notes.txt".into()], "is not a WebAssembly module"),
        (vec![lib], "exports no `_start` function"),
        (
            vec![
                "--nn-preload".into(),
                format!("m:onxx:cpu:{tiny}"),
                ok.clone(),
            ],
            "unknown encoding `onxx`",
        ),
        (
            vec!["--nn-preload".into(), "m:onnx:cpu".into(), ok.clone()],
            "NAME:ENCODING:TARGET:PATH",
        ),
        (
            vec![
                "--nn-preload".into(),
                "m:onnx:cpu:nowhere.onnx".into(),
                ok.clone(),
            ],
            "cannot read model file nowhere.onnx",
        ),
        (
            vec![
                "--nn-preload".into(),
                format!("m:onnx:cpu:{}", dir.join("notes.txt").display()),
                ok.clone(),
            ],
            "not a valid ONNX model",
        ),
        (
            vec!["--max-memory".into(), "12 parsecs".into(), ok.clone()],
            "unknown unit",
        ),
        (
            vec!["--dir".into(), "/no/such/dir::/data".into(), ok.clone()],
            "/no/such/dir",
        ),
    ];
    for (args, expected) in cases {
        let cache = dir.join("cache");
        let mut full = vec![
            "run".to_string(),
            "--cache-dir".into(),
            cache.display().to_string(),
        ];
        full.extend(args.iter().cloned());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let before: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let out = weft(&refs, dir);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in:\n{err}"
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 || err.starts_with("error:"),
            "{args:?}: expected one line, got:\n{err}"
        );
        let after: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "cache")
            .collect();
        assert_eq!(before.len(), after.len(), "{args:?} wrote files: {after:?}");
        let _ = std::fs::remove_dir_all(&cache);
    }
}

#[test]
fn exit_code_and_deadline_reach_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let exit7 = wat_file(
        tmp.path(),
        "exit7.wasm",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
           (memory (export "memory") 1) (func (export "_start") (call $e (i32.const 7))))"#,
    );
    let out = weft(&["run", "--no-cache", &exit7], tmp.path());
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let spin = wat_file(
        tmp.path(),
        "spin.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
    );
    let out = weft(
        &["run", "--no-cache", "--timeout", "200ms", &spin],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("deadline of 0.2s"),
        "{}",
        stderr(&out)
    );
    // The runtime says what happened; the CLI names its own flag.
    assert!(
        stderr(&out).contains("hint: raise the deadline with --timeout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environment_is_empty_unless_granted() {
    let tmp = tempfile::tempdir().unwrap();
    let probe = wat_file(tmp.path(), "env.wasm", ENV_COUNT);
    let out = Command::new(weft_bin())
        .args(["run", "--no-cache", &probe])
        .env("WEFT_TEST_SECRET", "must-not-leak")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "host environment leaked into the guest"
    );
    let out = Command::new(weft_bin())
        .args([
            "run",
            "--no-cache",
            "--env",
            "A=1",
            "--env",
            "WEFT_TEST_SECRET",
            &probe,
        ])
        .env("WEFT_TEST_SECRET", "granted")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn second_run_uses_the_compile_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache").display().to_string();
    let tiny = module(Guest::P1, "tinyrun").display().to_string();
    let args = [
        "run",
        "--timings",
        "--cache-dir",
        &cache,
        &tiny,
        "--",
        "--help",
    ];
    let first = weft(&args, tmp.path());
    assert!(
        stderr(&first).contains("compile cache: Miss"),
        "{}",
        stderr(&first)
    );
    let second = weft(&args, tmp.path());
    assert!(
        stderr(&second).contains("compile cache: Hit"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn files_outside_granted_directories_are_invisible() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("secret.png"), b"not really a png").unwrap();
    let ocr = module(Guest::P1, "ocr").display().to_string();
    let path = tmp.path().join("secret.png").display().to_string();
    let out = weft(&["run", "--no-cache", &ocr, "--", &path], tmp.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ocr:"), "{}", stderr(&out));
}

/// A module directory: tinyrun plus the tiny model and a doc file.
fn module_dir(root: &Path, toml_extra: &str) -> std::path::PathBuf {
    let dir = root.join("tinymod");
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::copy(module(Guest::P1, "tinyrun"), dir.join("tinyrun.wasm")).unwrap();
    std::fs::copy(data("tiny.onnx"), dir.join("models/tiny.onnx")).unwrap();
    std::fs::write(dir.join("README.md"), "y = 2x + 1\n").unwrap();
    std::fs::write(
        dir.join("weft.toml"),
        format!(
            r#"[module]
name = "tiny"
version = "1"
file = "tinyrun.wasm"
args = ["tiny", "--dims", "1,4"]

[[model]]
name = "tiny"
file = "models/tiny.onnx"

[[file]]
file = "README.md"
kind = "doc"
{toml_extra}"#
        ),
    )
    .unwrap();
    dir
}

#[test]
fn build_inspect_run_by_reference_rm_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store").display().to_string();
    let dir = module_dir(tmp.path(), "").display().to_string();
    let st = ["--store", store.as_str()];
    // `--store DIR` right after the subcommand, before any `--`.
    let with = |args: &[&str]| -> Vec<String> {
        let (sub, rest) = args.split_first().unwrap();
        std::iter::once(sub)
            .chain(st.iter())
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        weft(&refs, tmp.path())
    };
    let built = run(with(&["build", &dir]));
    assert!(built.status.success(), "{}", stderr(&built));
    assert!(
        stdout(&built).starts_with("tiny:1 sha256:"),
        "{}",
        stdout(&built)
    );

    let images = stdout(&run(with(&["images"])));
    assert!(
        images.contains("tiny:1") && images.contains("wasip1"),
        "{images}"
    );

    let inspect = run(with(&["inspect", "--json", "tiny:1"]));
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let model = &json["config"]["weft"]["models"][0];
    assert_eq!(model["name"], "tiny");
    assert_eq!(model["inputs"][0]["name"], "x");
    assert_eq!(model["inputs"][0]["shape"], serde_json::json!([1, 4]));
    let layers = json["manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(
        layers[1]["mediaType"],
        "application/vnd.cncf.model.weight.v1.raw"
    );
    assert_eq!(
        layers[1]["annotations"]["org.cncf.model.filepath"],
        "models/tiny.onnx"
    );
    assert_eq!(
        layers[2]["mediaType"],
        "application/vnd.cncf.model.doc.v1.raw"
    );
    assert_eq!(json["config"]["os"], "wasip1");

    // Run by reference: the model is preloaded from the store, the
    // artifact's args come first.
    let out = run(with(&["run", "tiny:1", "--", "1", "2", "3", "4"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "3 5 7 9");

    let out = run(with(&["rm", "tiny:1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let gc = stdout(&run(with(&["gc"])));
    assert!(gc.starts_with("removed 5 blobs"), "{gc}");
    let out = run(with(&["run", "tiny:1"]));
    assert!(
        stderr(&out).contains("no image tagged `tiny:1`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_weft_toml_is_named_and_the_store_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let cases = [
        (
            "[[file]]\nfile = \"../secret\"\n",
            "give it a `path` inside the artifact",
        ),
        (
            "[[model]]\nname = \"tiny\"\nfile = \"models/tiny.onnx\"\npath = \"m2.onnx\"\n",
            "two [[model]] entries are named `tiny`",
        ),
        (
            "[[model]]\nname = \"x\"\nfile = \"missing.onnx\"\n",
            "cannot read model file",
        ),
        (
            "[[model]]\nname = \"x\"\nfile = \"README.md\"\npath = \"x.onnx\"\n",
            "not a valid ONNX model",
        ),
        (
            "[[model]]\nname = \"x\"\nfile = \"models/tiny.onnx\"\nencoding = \"onxx\"\npath = \"y.onnx\"\n",
            "unknown encoding `onxx`",
        ),
        ("[extra]\nfield = 1\n", "unknown field `extra`"),
    ];
    for (extra, expected) in cases {
        let dir = module_dir(tmp.path(), extra);
        let out = weft(
            &[
                "build",
                dir.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
            ],
            tmp.path(),
        );
        assert!(!out.status.success(), "{extra}");
        assert!(
            stderr(&out).contains(expected),
            "{extra}: expected `{expected}` in {}",
            stderr(&out)
        );
        let blobs = store.join("blobs/sha256");
        let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(count, 0, "{extra}: a failed build stored blobs");
    }
}

/// `docker login`-style credentials in $DOCKER_CONFIG/config.json are used
/// as they are; without them, or with wrong ones, push and pull fail with
/// the registry's answer named.
#[test]
fn registry_credentials_come_from_the_docker_config() {
    use base64::Engine as _;
    let Some(reg) = weft_tests::TestRegistry::start(Some(("weft", "s3cret"))) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store").display().to_string();
    let dir = module_dir(tmp.path(), "").display().to_string();
    let docker = |user_pass: Option<&str>| {
        let d = tmp
            .path()
            .join(format!("docker-{}", user_pass.unwrap_or("none")));
        std::fs::create_dir_all(&d).unwrap();
        let auths = match user_pass {
            Some(up) => serde_json::json!({
                "auths": { reg.addr.clone(): { "auth": base64::engine::general_purpose::STANDARD.encode(up) } }
            }),
            None => serde_json::json!({ "auths": {} }),
        };
        std::fs::write(d.join("config.json"), auths.to_string()).unwrap();
        d
    };
    let weft_with = |config: &Path, args: &[&str]| {
        Command::new(weft_bin())
            .args(args)
            .current_dir(tmp.path())
            .env("DOCKER_CONFIG", config)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let target = format!("{}/tiny:1", reg.addr);
    let anonymous = docker(None);
    assert!(
        weft_with(&anonymous, &["build", "--store", &store, &dir])
            .status
            .success()
    );
    let out = weft_with(&anonymous, &["push", "--store", &store, "tiny:1", &target]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pushing tiny:1 to {target}")),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );

    let wrong = docker(Some("weft:wrong"));
    let out = weft_with(&wrong, &["push", "--store", &store, "tiny:1", &target]);
    assert!(!out.status.success(), "wrong password accepted");

    // `weft login` checks the password and writes the same config.json.
    let login = |config: &Path, password: &str| {
        let mut child = Command::new(weft_bin())
            .args(["login", &reg.addr, "-u", "weft", "--password-stdin"])
            .env("DOCKER_CONFIG", config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let good = tmp.path().join("docker-login");
    let out = login(&good, "nope");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("credentials refused"),
        "{}",
        stderr(&out)
    );
    assert!(
        !good.join("config.json").exists(),
        "bad credentials were stored"
    );
    let out = login(&good, "s3cret");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = weft_with(&good, &["push", "--store", &store, "tiny:1", &target]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A fresh store pulls it and runs it by reference in one go.
    let other = tmp.path().join("other").display().to_string();
    let out = weft_with(
        &good,
        &["run", "--store", &other, &target, "--", "0", "0", "0", "1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "1 1 1 3",
        "only the module writes stdout"
    );
    assert!(stderr(&out).contains("pulled"), "{}", stderr(&out));
    let out = weft_with(&good, &["logout", &reg.addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = weft_with(&good, &["pull", "--store", &other, &target]);
    assert!(!out.status.success(), "still logged in after logout");
}

/// Air-gapped flow: store -> layout dir -> registry -> registry -> layout
/// dir, digest preserved all the way, runnable at the end.
#[test]
fn copy_between_store_layouts_and_registries_keeps_the_digest() {
    let Some(reg) = weft_tests::TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store").display().to_string();
    let dir = module_dir(tmp.path(), "").display().to_string();
    let run = |args: &[&str]| {
        let out = weft(args, tmp.path());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let built = run(&["build", "--store", &store, &dir]);
    let digest = built.split_whitespace().nth(1).unwrap().to_string();
    let usb = format!("oci:{}/usb:tiny:1", tmp.path().display());
    let a = format!("{}/site/tiny:1", reg.addr);
    let b = format!("{}/mirror/tiny:2", reg.addr);
    let back = format!("oci:{}/back:tiny:3", tmp.path().display());
    for (src, dst) in [("tiny:1", &usb), (&usb, &a), (&a, &b), (&b, &back)] {
        let out = run(&["copy", "--store", &store, src, dst]);
        assert!(out.contains(&digest), "{src} -> {dst}: {out}");
    }
    let back_store = tmp.path().join("back").display().to_string();
    let out = weft(
        &[
            "run",
            "--store",
            &back_store,
            "tiny:3",
            "--",
            "1",
            "1",
            "1",
            "1",
        ],
        tmp.path(),
    );
    assert_eq!(stdout(&out).trim(), "3 3 3 3", "{}", stderr(&out));

    // The classic variant travels the same way, digest preserved.
    let built = run(&["build", "--store", &store, &dir, "--classic"]);
    let classic = built
        .lines()
        .find(|l| l.contains("-classic"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let usb = format!("oci:{}/usb:tiny:1-classic", tmp.path().display());
    let a = format!("{}/site/tiny:1-classic", reg.addr);
    let back = format!("oci:{}/back:tiny:1-classic", tmp.path().display());
    for (src, dst) in [("tiny:1-classic", &usb), (&usb, &a), (&a, &back)] {
        let out = run(&["copy", "--store", &store, src, dst]);
        assert!(out.contains(&classic), "{src} -> {dst}: {out}");
    }
}

/// `kill -9` in the middle of a layer: nothing half-written becomes
/// visible, and the rerun resumes where the dead one stopped.
#[test]
fn pull_killed_mid_layer_resumes_on_rerun() {
    let Some(reg) = weft_tests::TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store").display().to_string();
    let extra = "[[file]]\nfile = \"big.bin\"\npath = \"data/big.bin\"\n";
    let dir = module_dir(tmp.path(), extra);
    weft_tests::big_file(&dir.join("big.bin"), 192);
    let dir = dir.display().to_string();
    assert!(
        weft(&["build", "--store", &store, &dir], tmp.path())
            .status
            .success()
    );
    let target = format!("{}/big:1", reg.addr);
    let out = weft(&["push", "--store", &store, "tiny:1", &target], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));

    let fresh = tmp.path().join("fresh");
    let blobs = fresh.join("blobs/sha256");
    let mut child = Command::new(weft_bin())
        .args(["pull", "--store", fresh.to_str().unwrap(), &target])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a partial download has some bytes, then kill -9.
    let partial_len = || -> u64 {
        std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while partial_len() < (16 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "download never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "pull finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = partial_len();
    assert!(left > 0 && left < 192 << 20, "{left}");
    // Nothing is tagged and no full-size blob appeared for the big layer.
    let listed = weft(&["images", "--store", fresh.to_str().unwrap()], tmp.path());
    assert!(!stdout(&listed).contains("big:1"), "{}", stdout(&listed));

    let out = weft(
        &[
            "pull",
            "--json",
            "--store",
            fresh.to_str().unwrap(),
            &target,
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["report"]["blobs_resumed"], 1, "{json}");
    let out = weft(
        &[
            "run",
            "--store",
            fresh.to_str().unwrap(),
            &target,
            "--",
            "1",
            "2",
            "3",
            "4",
        ],
        tmp.path(),
    );
    assert_eq!(stdout(&out).trim(), "3 5 7 9", "{}", stderr(&out));
}

/// `weft` with extra environment variables (`RUST_LOG` is `info` unless
/// `env` sets it).
fn weft_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(weft_bin());
    cmd.args(args).current_dir(cwd).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn weft")
}

/// A module preloading its model for the GPU computes the same as on the
/// CPU, and the placement report is logged at load.
#[test]
fn gpu_target_runs_the_model_on_the_gpu_and_reports_placement() {
    if weft_nn_gpu_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tiny = data("tiny.onnx").display().to_string();
    let tinyrun = module(Guest::P1, "tinyrun").display().to_string();
    let mut outs = Vec::new();
    for target in ["cpu", "gpu"] {
        let preload = format!("tiny:onnx:{target}:{tiny}");
        let o = weft_env(
            &[
                "run",
                "--nn-preload",
                &preload,
                &tinyrun,
                "--",
                "tiny",
                "0",
                "1",
                "-2",
                "3.5",
            ],
            tmp.path(),
            &[],
        );
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        if target == "gpu" {
            assert!(
                stderr(&o).contains("100.0% of FLOPs on the GPU"),
                "{}",
                stderr(&o)
            );
        }
        outs.push(stdout(&o));
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[1].trim(), "1 3 -3 8");
}

/// Without an adapter, target gpu fails by default with one line naming
/// the fix, runs on the CPU with --nn-gpu-fallback, and auto picks the CPU.
#[test]
fn gpu_policy_without_an_adapter_is_explicit() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = data("tiny.onnx").display().to_string();
    let tinyrun = module(Guest::P1, "tinyrun").display().to_string();
    // `weft run [FLAGS] --nn-preload tiny:onnx:TARGET:tiny.onnx tinyrun tiny 1 2 3 4`
    let run = |flags: &[&str], target: &str, env: &[(&str, &str)]| {
        let preload = format!("tiny:onnx:{target}:{tiny}");
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend([
            "--nn-preload",
            &preload,
            &tinyrun,
            "--",
            "tiny",
            "1",
            "2",
            "3",
            "4",
        ]);
        weft_env(&args, tmp.path(), env)
    };
    let no_gpu = [("WEFT_GPU_ADAPTER", "none")];
    let strict = run(&[], "gpu", &no_gpu);
    assert_eq!(strict.status.code(), Some(1), "{}", stderr(&strict));
    assert!(
        stderr(&strict).contains("--nn-gpu-fallback"),
        "{}",
        stderr(&strict)
    );
    assert!(
        stderr(&strict).contains("execution target gpu is not available"),
        "{}",
        stderr(&strict)
    );
    let lenient = run(&["--nn-gpu-fallback"], "gpu", &no_gpu);
    assert!(lenient.status.success(), "{}", stderr(&lenient));
    assert!(
        stderr(&lenient).contains("running the graph on the CPU"),
        "{}",
        stderr(&lenient)
    );
    assert_eq!(stdout(&lenient).trim(), "3 5 7 9");
    let auto = run(&[], "auto", &no_gpu);
    assert!(auto.status.success(), "{}", stderr(&auto));
    assert!(
        stderr(&auto).contains("running on the CPU"),
        "{}",
        stderr(&auto)
    );
    // An adapter that does not exist is named, with what does.
    let wrong = run(&["--nn-gpu-adapter", "no-such-gpu"], "gpu", &[]);
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("`no-such-gpu`"),
        "{}",
        stderr(&wrong)
    );
}

/// `weft info` lists the adapters and, for a model, where each node runs.
#[test]
fn info_lists_adapters_and_placement() {
    if weft_nn_gpu_missing() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mlp = data("mlp_dynamic_batch.onnx").display().to_string();
    let o = weft_env(
        &["info", "--model", &mlp, "--shape", "3,4"],
        tmp.path(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("gpu adapters:") && out.contains("[vulkan]"),
        "{out}"
    );
    assert!(out.contains("EinSum") && out.contains("gemm-64"), "{out}");
    assert!(out.contains("fused"), "{out}");
    // Each adapter says whether its f16 GEMMs could use tensor cores, and
    // why not; turning them off is honoured before anything is asked of it.
    assert!(out.contains("cooperative matrices: "), "{out}");
    let off = weft_env(
        &["info"],
        tmp.path(),
        &[("WEFT_GPU_COOPERATIVE_MATRIX", "off")],
    );
    assert!(
        stdout(&off).contains(
            "cooperative matrices: not used (turned off by --nn-gpu-cooperative-matrix / WEFT_GPU_COOPERATIVE_MATRIX)"
        ),
        "{}",
        stdout(&off)
    );
    // Under a binding limit smaller than its tensors, the GEMMs are cut
    // into parts rather than sent to the CPU.
    let capped = weft_env(
        &[
            "info",
            "--model",
            &mlp,
            "--shape",
            "5000,4",
            "--nn-gpu-binding-limit",
            "16KiB",
        ],
        tmp.path(),
        &[],
    );
    assert!(capped.status.success(), "{}", stderr(&capped));
    assert!(
        stdout(&capped).contains("parts (binding limit)")
            && stdout(&capped).contains("100.0% of FLOPs on the GPU"),
        "{}",
        stdout(&capped)
    );
    let missing = weft_env(&["info", "--model", &mlp], tmp.path(), &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("--shape"), "{}", stderr(&missing));
}

/// Whether no GPU adapter opens here (skipping, or failing in CI).
fn weft_nn_gpu_missing() -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let o = weft_env(&["info"], tmp.path(), &[]);
    if stdout(&o).contains("gpu adapters: none") {
        weft_tests::skip_or_fail("no GPU adapter (apt-get install mesa-vulkan-drivers)");
        return true;
    }
    false
}

/// Issue 21: `--insecure` meant plain HTTP and unchecked certificates at
/// once. It is refused with the two flags that replace it, and
/// `--plain-http-credentials` is only accepted with `--plain-http`.
#[test]
fn insecure_was_split_in_two() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let o = weft(
        &["pull", "--insecure", "--store", store, "127.0.0.1:9/x:1"],
        tmp.path(),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--plain-http") && e.contains("--insecure-skip-tls-verify"),
        "{e}"
    );
    let o = weft(
        &[
            "pull",
            "--plain-http-credentials",
            "--store",
            store,
            "127.0.0.1:9/x:1",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--plain-http"), "{}", stderr(&o));
    let help = stdout(&weft(&["pull", "--help"], tmp.path()));
    for flag in [
        "--plain-http",
        "--insecure-skip-tls-verify",
        "--plain-http-credentials",
    ] {
        assert!(help.contains(flag), "pull --help lacks {flag}");
    }
    assert!(!help.contains("--insecure\n"), "the removed flag is hidden");
}
