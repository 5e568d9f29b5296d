//! The kubelet's path: the CRI plugin with the `weft` runtime handler (what
//! a RuntimeClass sets), a CNI bridge pod network, container logs in CRI
//! format, and images imported (classic, containerd 1.6.20) or pulled from
//! a registry (the artifact itself, containerd 1.7.24).

use super::*;
use std::collections::HashMap;
use std::time::Duration;
use weft_tests::TestRegistry;
use weft_tests::containerd::{
    Cri, ImageFile, PAUSE_IMAGE, container_config, cri as api, cri_log, http, image_tar,
    pod_config, wait_http_ok,
};

const MIB: i64 = 1 << 20;

/// A CRI containerd with the pause image imported, or `None` (skipped).
fn cri_containerd(release: Release) -> Option<(Containerd, Cri)> {
    let c = containerd(release, true)?;
    c.import_pause();
    let mut cri = c.cri();
    cri.wait_image(PAUSE_IMAGE);
    Some((c, cri))
}

/// Serve `image` in a fresh weft pod; returns the pod, the container and
/// `IP:8000`.
fn serve_in_pod(
    c: &Containerd,
    cri: &mut Cri,
    pod_name: &str,
    image: &str,
) -> (String, String, String, api::PodSandboxConfig) {
    let pod = pod_config(pod_name, &c.dir().join("logs").join(pod_name));
    let (pod_id, ip) = cri
        .run_pod(&pod, "weft")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));
    assert!(!ip.is_empty(), "the pod got no IP from CNI");
    let id = cri
        .start_container(
            &pod_id,
            container_config("model", image, &[("WEFT_MODEL_NAME", "tiny")], 256 * MIB),
            &pod,
        )
        .unwrap_or_else(|(_, e)| panic!("starting the container: {e}\n{}", c.log()));
    (pod_id, id, format!("{ip}:8000"), pod)
}

fn assert_serves_tiny(addr: &str, c: &Containerd) {
    let answer = wait_http_ok(
        addr,
        "POST",
        "/v2/models/tiny/infer",
        TINY_BODY,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|| panic!("the pod never answered on {addr}\n{}", c.log()));
    assert!(answer.contains("[3.0,5.0,7.0,9.0]"), "{answer}");
}

#[test]
fn cri_runs_a_serving_pod_on_the_weft_runtime_handler() {
    let Some(weft) = weft() else { return };
    let Some((c, mut cri)) = cri_containerd(Release::Debian) else {
        return;
    };
    let image = import_classic(
        &c,
        &weft,
        "weft.local/test/predictor",
        ("predictor", "model"),
        &[],
    );
    cri.wait_image(&image);

    let (pod_id, id, addr, pod) = serve_in_pod(&c, &mut cri, "serving", &image);
    // The pod's own address on the bridge network, as a Service reaches it.
    assert_serves_tiny(&addr, &c);
    let (status, meta) = http(&addr, "GET", "/v2/models/tiny", "").unwrap();
    assert_eq!(status, 200, "{meta}");
    let s = cri.container_status(&id);
    assert_eq!(s.state, api::ContainerState::ContainerRunning as i32);

    // What `kubectl logs` reads.
    let log = c.dir().join("logs/serving/model.log");
    let text = cri_log(&log);
    assert!(text.contains("weft: serving tiny"), "log: {text}");

    // The kubelet's stop: SIGTERM, drain, exit 0.
    cri.stop_container(&id, 10);
    let s = cri.wait_exited(&id, Duration::from_secs(15));
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert!(cri_log(&log).contains("drained"), "{}", cri_log(&log));
    cri.remove_container(&id);

    // The compiled module was cached on the node: a second container skips
    // Cranelift (the cache holds one entry, reused).
    let entries = || {
        std::fs::read_dir(c.compile_cache())
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(entries(), 1);
    let id = cri
        .start_container(
            &pod_id,
            container_config("again", &image, &[("WEFT_MODEL_NAME", "tiny")], 256 * MIB),
            &pod,
        )
        .unwrap_or_else(|(_, e)| panic!("second container: {e}"));
    assert_serves_tiny(&addr, &c);
    assert_eq!(entries(), 1);
    cri.stop_container(&id, 10);
    cri.remove_container(&id);
    cri.remove_pod(&pod_id);
}

#[test]
fn cri_pulls_the_artifact_itself_from_a_registry_and_serves_it() {
    let Some(weft) = weft() else { return };
    let Some(registry) = TestRegistry::start(None) else {
        return;
    };
    let Some((c, mut cri)) = cri_containerd(Release::V1_7) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(tmp.path(), "tiny", "3", ("predictor", "model"), &[]);
    let store = tmp.path().join("store");
    weft_ok(&weft, &store, &["build", pkg.to_str().unwrap()]);
    let reference = format!("{}/test/tiny:3", registry.addr);
    weft_ok(&weft, &store, &["push", "tiny:3", &reference]);

    c.trust_registry(&registry.addr);
    cri.pull(&reference)
        .unwrap_or_else(|e| panic!("PullImage: {e}\n{}", c.log()));
    let (pod_id, id, addr, _) = serve_in_pod(&c, &mut cri, "artifact", &reference);
    assert_serves_tiny(&addr, &c);
    // The artifact's version is the served version.
    let (_, meta) = http(&addr, "GET", "/v2/models/tiny", "").unwrap();
    assert!(meta.contains(r#""versions":["3"]"#), "{meta}");
    cri.stop_container(&id, 10);
    assert_eq!(cri.wait_exited(&id, Duration::from_secs(15)).exit_code, 0);
    cri.remove_container(&id);
    cri.remove_pod(&pod_id);
}

/// A wasm image built by hand (not by `weft build`): what bad images look
/// like.
fn wasm_image(c: &Containerd, reference: &str, entry: &str, files: &[ImageFile]) {
    let dir = c.dir().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    c.import(
        &image_tar(&dir, reference, ("wasip1", "wasm"), &[entry], files),
        "wasip1/wasm",
    );
}

#[test]
fn cri_bad_containers_fail_with_reasons_and_the_shim_keeps_serving() {
    let Some(weft) = weft() else { return };
    let Some((c, mut cri)) = cri_containerd(Release::Debian) else {
        return;
    };
    let good = import_classic(
        &c,
        &weft,
        "weft.local/test/predictor",
        ("predictor", "model"),
        &[],
    );
    let trap = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .unwrap();
    wasm_image(
        &c,
        "weft.local/test/trap:1",
        "/trap.wasm",
        &[ImageFile {
            path: "trap.wasm",
            bytes: &trap,
            mode: 0o644,
        }],
    );
    let command =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap();
    let config = br#"{"weft":{"version":1,"module":"m.wasm","models":[{"name":"det","path":"models/det.onnx","encoding":"onnx","target":"cpu"}]}}"#;
    wasm_image(
        &c,
        "weft.local/test/missing:1",
        "/m.wasm",
        &[
            ImageFile {
                path: "m.wasm",
                bytes: &command,
                mode: 0o644,
            },
            ImageFile {
                path: "weft.json",
                bytes: config,
                mode: 0o644,
            },
        ],
    );
    for image in [
        good.as_str(),
        "weft.local/test/trap:1",
        "weft.local/test/missing:1",
    ] {
        cri.wait_image(image);
    }
    let pod = pod_config("bad", &c.dir().join("logs/bad"));
    let (pod_id, ip) = cri
        .run_pod(&pod, "weft")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));

    // Refused at start: the reason is in the error and in the container's
    // status, which is what `kubectl describe pod` shows.
    let mut tty = container_config("tty", &good, &[], 256 * MIB);
    tty.tty = true;
    let refused = [
        (
            container_config("linux", PAUSE_IMAGE, &[], 256 * MIB),
            "/pause is a Linux program, not a Weft model module",
        ),
        (
            container_config("missing", "weft.local/test/missing:1", &[], 256 * MIB),
            "model 'det' (models/det.onnx) is listed in the image's Weft config but missing",
        ),
        (
            container_config("badenv", &good, &[("WEFT_PORT", "http")], 256 * MIB),
            "WEFT_PORT=\"http\" is not a TCP port",
        ),
        (
            container_config("small", &good, &[("WEFT_INSTANCES", "4")], 40 * MIB),
            "raise resources.limits.memory",
        ),
        (tty, "terminal"),
    ];
    for (config, reason) in refused {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let (id, e) = cri.start_container(&pod_id, config, &pod).expect_err(&name);
        assert!(e.message().contains(reason), "{name}: {}", e.message());
        let id = id.expect("created, then refused at start");
        let s = cri.container_status(&id);
        assert!(s.message.contains(reason), "{name}: status {s:?}");
        cri.remove_container(&id);
    }

    // A module that traps: it starts, dies with weft run's exit code, and
    // says why in its log.
    let id = cri
        .start_container(
            &pod_id,
            container_config("trap", "weft.local/test/trap:1", &[], 256 * MIB),
            &pod,
        )
        .unwrap_or_else(|(_, e)| panic!("trap: {e}"));
    let s = cri.wait_exited(&id, Duration::from_secs(30));
    assert_eq!(s.exit_code, 134, "{s:?}");
    let log = cri_log(&c.dir().join("logs/bad/trap.log"));
    assert!(
        log.contains("weft:") && log.contains("unreachable"),
        "log: {log}"
    );
    cri.remove_container(&id);

    // The shim and containerd carry on: the same pod still serves.
    let id = cri
        .start_container(
            &pod_id,
            container_config("model", &good, &[("WEFT_MODEL_NAME", "tiny")], 256 * MIB),
            &pod,
        )
        .unwrap_or_else(|(_, e)| panic!("good container after the bad ones: {e}\n{}", c.log()));
    assert_serves_tiny(&format!("{ip}:8000"), &c);
    assert!(cri.version().is_ok());
    cri.stop_container(&id, 10);
    cri.remove_container(&id);
    cri.remove_pod(&pod_id);
}

#[test]
fn cri_linux_sidecars_run_only_when_the_pod_allows_them() {
    let Some((c, mut cri)) = cri_containerd(Release::Debian) else {
        return;
    };
    let mut pod = pod_config("sidecar", &c.dir().join("logs/sidecar"));
    pod.annotations = HashMap::from([(
        "weft.dev/allow-linux-containers".to_string(),
        "true".to_string(),
    )]);
    let (pod_id, _) = cri
        .run_pod(&pod, "weft")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));
    let id = cri
        .start_container(
            &pod_id,
            container_config("sidecar", PAUSE_IMAGE, &[], 64 * MIB),
            &pod,
        )
        .unwrap_or_else(|(_, e)| panic!("an allowed Linux sidecar: {e}"));
    assert_eq!(
        cri.container_status(&id).state,
        api::ContainerState::ContainerRunning as i32
    );
    cri.stop_container(&id, 5);
    cri.remove_container(&id);
    cri.remove_pod(&pod_id);
}

/// Reads `/data/in.txt` (a volume) and writes it to stdout (the log).
const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "data/in.txt")
  (func (export "_start")
    (if (call $open (i32.const 3) (i32.const 1) (i32.const 0) (i32.const 11) (i32.const 0)
                    (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100))
      (then (call $exit (i32.const 2))))
    (i32.store (i32.const 200) (i32.const 1024))
    (i32.store (i32.const 204) (i32.const 4096))
    (if (call $read (i32.load (i32.const 100)) (i32.const 200) (i32.const 1) (i32.const 300))
      (then (call $exit (i32.const 3))))
    (i32.store (i32.const 204) (i32.load (i32.const 300)))
    (drop (call $write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 300)))))"#;

#[test]
fn cri_volumes_logs_and_the_memory_limit_reach_the_module() {
    let Some((c, mut cri)) = cri_containerd(Release::Debian) else {
        return;
    };
    let cat = wat::parse_str(CAT).unwrap();
    wasm_image(
        &c,
        "weft.local/test/cat:1",
        "/cat.wasm",
        &[ImageFile {
            path: "cat.wasm",
            bytes: &cat,
            mode: 0o644,
        }],
    );
    // 600 pages = 37.5 MiB, more than a 64 MiB container leaves the module
    // (64 - 32 MiB reserve).
    let grow = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start") (drop (memory.grow (i32.const 600)))))"#).unwrap();
    wasm_image(
        &c,
        "weft.local/test/grow:1",
        "/grow.wasm",
        &[ImageFile {
            path: "grow.wasm",
            bytes: &grow,
            mode: 0o644,
        }],
    );
    for image in ["weft.local/test/cat:1", "weft.local/test/grow:1"] {
        cri.wait_image(image);
    }
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("in.txt"), "hello from a volume\n").unwrap();
    let pod = pod_config("io", &c.dir().join("logs/io"));
    let (pod_id, _) = cri
        .run_pod(&pod, "weft")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));

    let mut config = container_config("cat", "weft.local/test/cat:1", &[], 64 * MIB);
    config.mounts = vec![api::Mount {
        container_path: "/data".into(),
        host_path: volume.path().display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let id = cri
        .start_container(&pod_id, config, &pod)
        .unwrap_or_else(|(_, e)| panic!("cat: {e}"));
    let s = cri.wait_exited(&id, Duration::from_secs(30));
    let log = cri_log(&c.dir().join("logs/io/cat.log"));
    assert_eq!(s.exit_code, 0, "{s:?}\nlog: {log}");
    assert!(log.contains("hello from a volume"), "log: {log}");

    let id = cri
        .start_container(
            &pod_id,
            container_config("grow", "weft.local/test/grow:1", &[], 64 * MIB),
            &pod,
        )
        .unwrap_or_else(|(_, e)| panic!("grow: {e}"));
    let s = cri.wait_exited(&id, Duration::from_secs(30));
    let log = cri_log(&c.dir().join("logs/io/grow.log"));
    assert_eq!(s.exit_code, 134, "{s:?}\nlog: {log}");
    assert!(
        log.contains("past its limit") && log.contains("resources.limits.memory"),
        "log: {log}"
    );
    cri.remove_pod(&pod_id);
}
