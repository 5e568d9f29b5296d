//! `ctr run --runtime <shim>`: Debian's containerd 1.6.20 with classic
//! images (it refuses non-tar layers).

use super::*;
use std::time::{Duration, Instant};
use weft_tests::containerd::{free_port, http};

#[test]
fn ctr_runs_a_classic_model_module_with_its_models_and_exit_code() {
    let Some(weft) = weft() else { return };
    let Some(c) = containerd(Release::Debian, false) else {
        return;
    };
    let image = import_classic(
        &c,
        &weft,
        "weft.local/test/tiny",
        ("tinyrun", "tiny"),
        &["tiny", "--dims", "1,4"],
    );
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
    // The compiled module is now in the node's cache.
    let cached = std::fs::read_dir(c.compile_cache())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        cached,
        1,
        "one compiled module in {}",
        c.compile_cache().display()
    );

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
    let Some(c) = containerd(Release::Debian, false) else {
        return;
    };
    let image = import_classic(&c, &weft, "weft.local/test/spin", ("tinyrun", "tiny"), &[]);
    // A module busy for hours: a hundred million inferences.
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

#[test]
fn a_serving_module_serves_v2_in_the_container_network_namespace() {
    let Some(weft) = weft() else { return };
    let Some(c) = containerd(Release::Debian, false) else {
        return;
    };
    let image = import_classic(
        &c,
        &weft,
        "weft.local/test/predictor",
        ("predictor", "model"),
        &[],
    );
    let (rest, grpc) = (free_port(), free_port());
    // --net-host: the test reaches the container's network namespace, as a
    // Service reaches a pod's (the CRI tests use a real pod network).
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
    let addr = format!("127.0.0.1:{rest}");
    let started = Instant::now();
    let answer = loop {
        if let Ok((200, body)) = http(&addr, "POST", "/v2/models/tiny/infer", TINY_BODY) {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the served module never answered\n{}",
            text(&c.ctr(&["task", "ls"]))
        );
        std::thread::sleep(Duration::from_millis(50));
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
