//! Golden files: every `golden/*.in.toml` (real configs of plain
//! containerd 1.6 with both schemas, k3s, MicroK8s) installs to its
//! `*.out.toml`, installing twice changes nothing, and uninstalling gives
//! back the input byte for byte (a missing final newline stays added). `WEFT_BLESS=1` rewrites the outputs.

use std::path::Path;
use weft_node_installer::{install, uninstall};

#[test]
fn every_layout_installs_to_its_golden_file_idempotently_and_uninstalls_exactly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".in.toml"))
        else {
            continue;
        };
        cases += 1;
        let input = std::fs::read_to_string(&path).unwrap();
        let out = install(&input).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let golden = dir.join(format!("{stem}.out.toml"));
        if std::env::var_os("WEFT_BLESS").is_some() {
            std::fs::write(&golden, &out).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (WEFT_BLESS=1 writes it)", golden.display()));
        assert_eq!(out, want, "{stem}: install differs from its golden file");
        assert_eq!(
            install(&out).unwrap(),
            out,
            "{stem}: second install changed it"
        );
        // Exact, except that a missing final newline stays added.
        let mut expected = input.clone();
        if !expected.ends_with('\n') {
            expected.push('\n');
        }
        assert_eq!(uninstall(&out), expected, "{stem}: uninstall is not exact");
    }
    assert!(cases >= 5, "only {cases} golden cases found");
}

/// The real containerd (Debian's 1.6) reads every non-v3 output and has the
/// weft runtime in its effective configuration (v1 configs migrated to v2).
#[test]
fn containerd_itself_reads_the_installed_configs() {
    if std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        weft_tests::skip_or_fail("containerd is not installed (apt-get install containerd)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".out.toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if weft_node_installer::Schema::of(&text).unwrap() == weft_node_installer::Schema::V3 {
            continue; // containerd 2.x only
        }
        let out = std::process::Command::new("containerd")
            .arg("--config")
            .arg(&path)
            .args(["config", "dump"])
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table = dump
            .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.weft]")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no weft runtime in containerd's view:\n{dump}"));
        let table = table.split("\n\n").next().unwrap_or("");
        assert!(
            table.contains("runtime_type = \"io.containerd.weft.v1\""),
            "{name}: {table}"
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} configs checked");
}

/// The binary on a fake host root: dry run, install, rerun, uninstall, and
/// k3s's template seeded from its generated config.
#[test]
fn installer_binary_on_a_host_root() {
    let bin = env!("CARGO_BIN_EXE_weft-node-installer");
    let root = std::env::temp_dir().join(format!("weft-installer-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let original = std::fs::read_to_string(golden.join("containerd-v2.in.toml")).unwrap();
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    std::fs::write(root.join("etc/containerd/config.toml"), &original).unwrap();
    let shim = root.join("shim-binary");
    std::fs::write(&shim, b"#!/bin/sh\n").unwrap();
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(bin)
            .arg("--host-root")
            .arg(&root)
            .arg("--shim")
            .arg(&shim)
            .args(extra)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{extra:?}: {out}");
        out
    };
    let config = || std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap();
    let out = run(&["--dry-run"]);
    assert!(out.contains("io.containerd.weft.v1"), "{out}");
    assert_eq!(config(), original, "dry run changed the config");
    run(&[]);
    assert_eq!(config(), install(&original).unwrap());
    assert!(root.join("usr/local/bin/containerd-shim-weft-v1").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/containerd/config.weft-backup")).unwrap(),
        original
    );
    assert!(run(&[]).contains("already up to date"));
    run(&["--uninstall"]);
    assert_eq!(config(), original);
    assert!(!root.join("usr/local/bin/containerd-shim-weft-v1").exists());

    // k3s: the template does not exist yet; it starts from the generated config.
    let k3s = root.join("var/lib/rancher/k3s/agent/etc/containerd");
    std::fs::create_dir_all(&k3s).unwrap();
    let generated = std::fs::read_to_string(golden.join("k3s-v1.in.toml")).unwrap();
    std::fs::write(k3s.join("config.toml"), &generated).unwrap();
    let out = run(&[]);
    assert!(out.contains("k3s"), "{out}");
    assert_eq!(
        std::fs::read_to_string(k3s.join("config.toml.tmpl")).unwrap(),
        install(&generated).unwrap()
    );
    let bad = std::process::Command::new(bin)
        .args(["--distro", "nomad"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown distro \"nomad\""));
    std::fs::remove_dir_all(&root).unwrap();
}

/// `--verify`: refuses a config without the block and a shim that does not
/// run in the host's root; passes once both hold.
#[test]
fn verify_checks_the_config_and_runs_the_shim_in_the_host_root() {
    let root_ok = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let cc = std::process::Command::new("cc")
        .arg("--version")
        .output()
        .is_ok();
    if !root_ok || !cc {
        weft_skip("verify needs root (chroot) and a C compiler for a static stand-in shim");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_weft-node-installer");
    let root = std::env::temp_dir().join(format!("weft-installer-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    std::fs::write(root.join("etc/containerd/config.toml"), "version = 2\n").unwrap();
    // A static stand-in that answers `-v` as the shim does, so it runs in a
    // root without libraries; and a script that cannot run there.
    let good = root.join("good-shim");
    let src = root.join("shim.c");
    std::fs::write(&src, "#include <stdio.h>\nint main(void){puts(\"containerd-shim-weft-v1:\\n  Runtime: weft\\n  Version: 0.1.0\");return 0;}\n").unwrap();
    let o = std::process::Command::new("cc")
        .args(["-static", "-o"])
        .arg(&good)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = root.join("bad-shim");
    std::fs::write(&bad, "#!/bin/sh\necho Runtime: weft\n").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = |shim: &Path, extra: &[&str]| {
        let o = std::process::Command::new(bin)
            .arg("--host-root")
            .arg(&root)
            .arg("--shim")
            .arg(shim)
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, out) = run(&good, &["--verify"]);
    assert!(
        !ok && out.contains("lacks Weft's current runtime block"),
        "{out}"
    );
    assert!(run(&bad, &[]).0);
    let (ok, out) = run(&bad, &["--verify"]);
    assert!(!ok && out.contains("does not run on this node"), "{out}");
    assert!(run(&good, &[]).0);
    let (ok, out) = run(&good, &["--verify"]);
    assert!(ok && out.contains("verified"), "{out}");
    std::fs::remove_dir_all(&root).unwrap();
}

fn weft_skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("required test prerequisite missing in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}
