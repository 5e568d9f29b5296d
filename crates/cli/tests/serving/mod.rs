//! `weft serve` as a real process: real V2 clients (tritonclient, the
//! kserve SDK, curl), both guest kinds, store references, load and
//! overload with wrk, and graceful shutdown.

use super::{weft, weft_bin};
use std::process::Command;
use std::time::{Duration, Instant};
use weft_tests::{Guest, ServeProcess, data, module, python_with, repo_root, skip_or_fail};

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

/// `curl` a URL: (status, body). `body` makes it a POST.
fn curl(url: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "30", "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args([
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            b,
        ]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

const TINY_JSON: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

#[test]
fn tritonclient_and_kserve_sdk_against_weft_serve() {
    let Some(py) = python_with(&["tritonclient.http", "tritonclient.grpc", "kserve", "onnx"])
    else {
        return;
    };
    let s = ServeProcess::start(
        weft_bin(),
        &[
            &format!("mlp={}", path(data("mlp_dynamic_batch.onnx"))),
            &format!("two={}", path(data("two_inputs.onnx"))),
            "--no-cache",
        ],
    );
    let grpc = s.grpc.clone().expect("gRPC address");
    for family in ["triton", "kserve"] {
        let out = Command::new(&py)
            .arg(repo_root().join("tests/clients/v2_clients.py"))
            .args([
                family,
                &s.rest,
                &grpc,
                &path(repo_root().join("tests/data")),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("checks passed"),
            "{family} clients failed:\n{text}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
    }
}

#[test]
fn curl_json_both_guest_kinds_and_a_store_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // Package the wasip2 predictor with tiny.onnx as a model module.
    let dir = tmp.path().join("pkg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(module(Guest::P2, "predictor"), dir.join("predictor.wasm")).unwrap();
    std::fs::copy(data("tiny.onnx"), dir.join("tiny.onnx")).unwrap();
    std::fs::write(
        dir.join("weft.toml"),
        "[module]\nname = \"tiny-svc\"\nversion = \"3\"\nfile = \"predictor.wasm\"\n\n[[model]]\nname = \"model\"\nfile = \"tiny.onnx\"\n",
    )
    .unwrap();
    let store_s = path(store.clone());
    let o = weft(
        &["build", &path(dir.clone()), "--store", &store_s],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let s = ServeProcess::start(
        weft_bin(),
        &[
            &format!("p1={}", path(module(Guest::P1, "predictor"))),
            "--nn-preload",
            &format!("model:onnx:cpu:{}", path(data("tiny.onnx"))),
            "ref=tiny-svc:3",
            "--store",
            &store_s,
            "--no-grpc",
        ],
    );
    assert!(s.grpc.is_none());
    for model in ["p1", "ref"] {
        let (code, body) = curl(
            &format!("{}/v2/models/{model}/infer", s.rest),
            Some(TINY_JSON),
        );
        assert_eq!(code, 200, "{model}: {body}\n{}", s.log());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["outputs"][0]["name"], "y", "{body}");
        assert_eq!(
            v["outputs"][0]["data"],
            serde_json::json!([3.0, 5.0, 7.0, 9.0])
        );
    }
    let (_, md) = curl(&format!("{}/v2/models/ref", s.rest), None);
    let md: serde_json::Value = serde_json::from_str(&md).unwrap();
    assert_eq!(
        md["versions"],
        serde_json::json!(["3"]),
        "the artifact's version"
    );
    assert_eq!(md["inputs"][0]["shape"], serde_json::json!([1, 4]));

    let (code, body) = curl(
        &format!("{}/v2/models/p1/infer", s.rest),
        Some("{\"inputs\": ["),
    );
    assert_eq!(code, 400);
    assert!(body.contains("malformed inference request JSON"), "{body}");
    let (code, body) = curl(&format!("{}/v2/models/zz/infer", s.rest), Some(TINY_JSON));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("unknown model 'zz'"));
}

#[test]
fn a_command_module_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let o = weft(
        &["serve", &path(module(Guest::P1, "tinyrun")), "--no-cache"],
        tmp.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a serving module") && err.contains("cdylib"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A core serving module whose `infer` burns ~`iterations` loop turns, then
/// answers with zero outputs.
fn slow_module(dir: &std::path::Path, iterations: u64) -> String {
    let wat = format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "WFT1\00\00\00\00")
  (func (export "weft_serve_v1_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_serve_v1_response_ptr") (result i32) (i32.const 0))
  (func (export "weft_serve_v1_response_len") (result i32) (i32.const 8))
  (func (export "weft_serve_v1_infer") (param i32 i32) (result i32) (local $n i64)
    (local.set $n (i64.const {iterations}))
    (loop $l (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $l (i64.gt_s (local.get $n) (i64.const 0))))
    (i32.const 0)))"#
    );
    let p = dir.join("slow.wasm");
    std::fs::write(&p, wat::parse_str(wat).unwrap()).unwrap();
    path(p)
}

fn wait_in_flight(s: &ServeProcess, model: &str) {
    let started = Instant::now();
    let want = format!("weft_inference_in_flight{{model=\"{model}\"}} 1");
    while !curl(&format!("{}/metrics", s.rest), None).1.contains(&want) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{model} never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_lets_the_in_flight_request_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = slow_module(tmp.path(), 1_500_000_000);
    let mut s = ServeProcess::start(weft_bin(), &[&format!("slow={slow}"), "--no-cache"]);
    let url = format!("{}/v2/models/slow/infer", s.rest);
    let req = std::thread::spawn(move || curl(&url, Some(r#"{"inputs":[]}"#)));
    wait_in_flight(&s, "slow");
    let status = s.terminate();
    let (code, body) = req.join().unwrap();
    assert_eq!(
        code,
        200,
        "the in-flight request was cut off: {body}\n{}",
        s.log()
    );
    assert!(
        status.success(),
        "weft serve exited with {status}\n{}",
        s.log()
    );
    assert!(s.log().contains("weft: stopped"), "{}", s.log());
}

/// Run wrk against `url` with a POST body; returns (requests, non-2xx).
fn wrk(url: &str, body: &str, connections: u32, seconds: u32) -> Option<(u64, u64)> {
    if Command::new("wrk").arg("--version").output().is_err() {
        skip_or_fail("wrk is not installed (apt-get install wrk)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .unwrap();
    let out = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors = text.lines().any(|l| l.contains("Socket errors"));
    assert!(!socket_errors, "wrk saw socket errors:\n{text}");
    Some((requests, non_2xx))
}

#[test]
fn load_above_the_pool_size_has_no_errors_and_overload_is_503() {
    let s = ServeProcess::start(
        weft_bin(),
        &[
            &format!("tiny={}", path(data("tiny.onnx"))),
            "--instances",
            "2",
            "--no-grpc",
            "--no-cache",
        ],
    );
    // 16 connections on 2 instances: requests queue, none fail.
    let Some((n, bad)) = wrk(
        &format!("{}/v2/models/tiny/infer", s.rest),
        TINY_JSON,
        16,
        3,
    ) else {
        return;
    };
    assert!(n > 100, "only {n} requests in 3 s");
    assert_eq!(
        bad,
        0,
        "{bad} of {n} requests failed under load\n{}",
        s.log()
    );
    drop(s);

    // One slow instance and a queue of one: most of 16 connections get 503.
    let tmp = tempfile::tempdir().unwrap();
    let slow = slow_module(tmp.path(), 20_000_000);
    let s = ServeProcess::start(
        weft_bin(),
        &[
            &format!("slow={slow}"),
            "--instances",
            "1",
            "--queue",
            "1",
            "--no-grpc",
            "--no-cache",
        ],
    );
    let before = s.rss_kib().unwrap_or(0);
    let (n, bad) = wrk(
        &format!("{}/v2/models/slow/infer", s.rest),
        r#"{"inputs":[]}"#,
        16,
        3,
    )
    .expect("wrk was found above");
    assert!(bad > 0 && bad < n, "{bad} of {n} answered non-2xx");
    let (code, _) = curl(&format!("{}/v2/health/ready", s.rest), None);
    assert_eq!(code, 200, "server unhealthy after overload\n{}", s.log());
    let after = s.rss_kib().unwrap_or(0);
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} KiB to {after} KiB under overload"
    );
    let metrics = curl(&format!("{}/metrics", s.rest), None).1;
    assert!(metrics.contains(r#"reason="overloaded""#), "{metrics}");
}

/// The OCR example as a served artifact: the module declares its own
/// interface (image bytes in, text lines out), and a binary request with
/// the sample page reads the page.
#[test]
fn ocr_serving_module_reads_the_sample_page() {
    let Some(_) = weft_tests::models_dir() else {
        skip_or_fail("models/ is missing: run scripts/fetch-models.sh");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = path(tmp.path().join("store"));
    let o = weft(
        &[
            "build",
            &path(repo_root().join("modules/ocr-serve")),
            "--store",
            &store,
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = ServeProcess::start(
        weft_bin(),
        &[
            "ocr=ocr-serve:1.0",
            "--store",
            &store,
            "--instances",
            "1",
            "--no-grpc",
        ],
    );
    let (_, md) = curl(&format!("{}/v2/models/ocr", s.rest), None);
    let md: serde_json::Value = serde_json::from_str(&md).unwrap();
    assert_eq!(
        md["inputs"],
        serde_json::json!([{"name": "image", "datatype": "BYTES", "shape": [1]}]),
        "{md}"
    );
    assert_eq!(md["outputs"][2]["shape"], serde_json::json!([-1, 8]));

    let png = std::fs::read(repo_root().join("modules/ocr/testdata/sample.png")).unwrap();
    let header = serde_json::json!({
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": png.len() + 4}}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend((png.len() as u32).to_le_bytes());
    body.extend(&png);
    let body_file = tmp.path().join("req.bin");
    std::fs::write(&body_file, body).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-m", "120", "-w", "\n%{http_code}", "-X", "POST"])
        .args([
            "-H",
            &format!("Inference-Header-Content-Length: {}", header.len()),
        ])
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(format!("{}/v2/models/ocr/infer", s.rest))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (json, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{json}\n{}", s.log());
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let lines: Vec<&str> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let expected =
        std::fs::read_to_string(repo_root().join("modules/ocr/testdata/expected.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(lines, expected, "{v}");
    assert_eq!(
        v["outputs"][2]["shape"],
        serde_json::json!([expected.len(), 8])
    );

    // A request that is not an image fails that request, with the reason.
    let (code, body) = curl(
        &format!("{}/v2/models/ocr/infer", s.rest),
        Some(
            r#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["not a png"]}]}"#,
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("cannot decode `image`"), "{body}");
}

/// `weft serve model.onnx --nn-target gpu`: the V2 protocol in front of the
/// GPU backend, batches of several sizes (one GPU plan each), answers equal
/// to the CPU target's, and concurrent requests on a pool of instances.
#[test]
fn serving_on_the_gpu_matches_the_cpu() {
    let info = weft(&["info"], std::path::Path::new("."));
    if String::from_utf8_lossy(&info.stdout).contains("gpu adapters: none") {
        skip_or_fail("no GPU adapter (apt-get install mesa-vulkan-drivers)");
        return;
    }
    let mlp = path(data("mlp_dynamic_batch.onnx"));
    let servers: Vec<ServeProcess> = ["cpu", "gpu"]
        .iter()
        .map(|t| {
            ServeProcess::start_with_log(
                weft_bin(),
                &[&mlp, "--nn-target", t, "--instances", "2", "--no-grpc"],
                "info",
            )
        })
        .collect();
    for batch in [1usize, 3, 8] {
        let data: Vec<f32> = (0..batch * 4).map(|i| (i as f32 * 0.7).cos()).collect();
        let body = serde_json::json!({
            "inputs": [{"name": "x", "shape": [batch, 4], "datatype": "FP32", "data": data}]
        })
        .to_string();
        let answers: Vec<Vec<f64>> = servers
            .iter()
            .map(|s| {
                let (code, out) = curl(
                    &format!("{}/v2/models/mlp_dynamic_batch/infer", s.rest),
                    Some(&body),
                );
                assert_eq!(code, 200, "{out}\n{}", s.log());
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["outputs"][0]["shape"], serde_json::json!([batch, 3]));
                v["outputs"][0]["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect();
        for (c, g) in answers[0].iter().zip(&answers[1]) {
            assert!(
                (c - g).abs() <= 1e-5 + 1e-4 * c.abs(),
                "batch {batch}: cpu {c} gpu {g}"
            );
        }
    }
    assert!(
        servers[1].log().contains("100.0% of FLOPs on the GPU"),
        "{}",
        servers[1].log()
    );
    // Concurrent requests share the device; every one is answered.
    let url = format!("{}/v2/models/mlp_dynamic_batch/infer", servers[1].rest);
    let body =
        r#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| curl(&url, Some(body)).0))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 200);
        }
    });
}
