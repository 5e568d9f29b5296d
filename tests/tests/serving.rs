//! The serving contract at the runtime level: pooled instances of the
//! bundled predictor (both guest kinds) and WAT modules that break the
//! contract on purpose.

use std::sync::Arc;
use std::time::Duration;
use weft_nn::{Models, Preload};
use weft_runtime::{
    DataType, InferError, Instance, RunOptions, Runtime, RuntimeConfig, RuntimeError, Tensor,
};
use weft_tests::{Guest, data, module};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap()
}

fn opts(model: &str) -> RunOptions {
    let preload: Preload = format!("model:onnx:cpu:{}", data(model).display())
        .parse()
        .unwrap();
    RunOptions {
        models: Arc::new(Models::load(&[preload], Default::default()).unwrap()),
        ..Default::default()
    }
}

fn f32s(name: &str, shape: &[u64], v: &[f32]) -> Tensor {
    Tensor::new(
        name,
        DataType::Fp32,
        shape.to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn values(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn predictor(rt: &Runtime, guest: Guest, model: &str) -> Instance {
    let bytes = std::fs::read(module(guest, "predictor")).unwrap();
    let program = rt.load_service("predictor.wasm", &bytes).unwrap();
    rt.instantiate(&program, &opts(model)).unwrap()
}

#[test]
fn predictor_serves_two_inputs_on_both_guest_kinds() {
    let rt = runtime();
    for guest in [Guest::P1, Guest::P2] {
        let mut inst = predictor(&rt, guest, "two_inputs.onnx");
        for round in 0..3 {
            let k = round as f32;
            let out = inst
                .infer(
                    vec![
                        f32s("a", &[3], &[1.0, 2.0, 3.0 + k]),
                        f32s("b", &[3], &[4.0, 5.0, 6.0]),
                    ],
                    Some(Duration::from_secs(10)),
                )
                .unwrap();
            assert_eq!(out.len(), 2, "{guest:?}");
            // wasip2 names outputs; wasip1 numbers them (the server maps
            // numbers to the model's names).
            let want_names = match guest {
                Guest::P1 => ["0", "1"],
                Guest::P2 => ["sum", "prod"],
            };
            assert_eq!(out[0].name, want_names[0]);
            assert_eq!(out[1].name, want_names[1]);
            assert_eq!(out[0].shape, vec![3]);
            assert_eq!(values(&out[0]), vec![5.0, 7.0, 9.0 + k]);
            assert_eq!(values(&out[1]), vec![4.0, 10.0, 18.0 + 6.0 * k]);
        }
    }
}

#[test]
fn a_rejected_request_leaves_the_instance_serving() {
    let rt = runtime();
    for guest in [Guest::P1, Guest::P2] {
        let mut inst = predictor(&rt, guest, "tiny.onnx");
        let bad = Tensor::new("x", DataType::Bool, vec![1, 4], vec![1; 4]);
        match inst.infer(vec![bad], None) {
            Err(InferError::Rejected(why)) => assert!(why.contains("BOOL"), "{why}"),
            other => panic!("{guest:?}: expected a rejection, got {other:?}"),
        }
        let wrong_shape = f32s("x", &[1, 3], &[1.0, 2.0, 3.0]);
        assert!(matches!(
            inst.infer(vec![wrong_shape], None),
            Err(InferError::Rejected(_))
        ));
        assert!(!inst.is_retired());
        let out = inst
            .infer(vec![f32s("x", &[1, 4], &[0.0, 1.0, 2.0, 3.0])], None)
            .unwrap();
        assert_eq!(values(&out[0]), vec![1.0, 3.0, 5.0, 7.0]);
    }
}

#[test]
fn missing_model_fails_at_instantiation_with_the_name() {
    let rt = runtime();
    let bytes = std::fs::read(module(Guest::P2, "predictor")).unwrap();
    let program = rt.load_service("predictor.wasm", &bytes).unwrap();
    let err = rt
        .instantiate(&program, &RunOptions::default())
        .err()
        .expect("no model preloaded");
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::NotServing { .. }), "{msg}");
    assert!(msg.contains("model"), "{msg}");
}

/// A core serving module in WAT: `infer` either spins, traps, or answers
/// with a response pointer of the test's choosing.
fn wat_service(infer_body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (global $rp (mut i32) (i32.const 0))
  (global $rl (mut i32) (i32.const 0))
  (func (export "weft_serve_v1_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_serve_v1_response_ptr") (result i32) (global.get $rp))
  (func (export "weft_serve_v1_response_len") (result i32) (global.get $rl))
  (func (export "weft_serve_v1_infer") (param $p i32) (param $l i32) (result i32)
    {infer_body}))"#
    ))
    .unwrap()
}

#[test]
fn deadline_and_trap_fail_one_call_and_retire_the_instance() {
    let rt = runtime();
    let spin = rt
        .load_service("spin.wasm", &wat_service("(loop $l (br $l)) (i32.const 0)"))
        .unwrap();
    let mut inst = rt.instantiate(&spin, &RunOptions::default()).unwrap();
    let started = std::time::Instant::now();
    let err = inst
        .infer(vec![], Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(err, InferError::Failed(RuntimeError::Timeout { .. })),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(inst.is_retired());

    let trap = rt
        .load_service("trap.wasm", &wat_service("unreachable"))
        .unwrap();
    let mut inst = rt.instantiate(&trap, &RunOptions::default()).unwrap();
    assert!(matches!(
        inst.infer(vec![], None),
        Err(InferError::Failed(RuntimeError::Trap { .. }))
    ));
    assert!(inst.is_retired());
}

#[test]
fn a_response_outside_memory_is_a_contract_error_not_a_crash() {
    let rt = runtime();
    let body =
        "(global.set $rp (i32.const 65000)) (global.set $rl (i32.const 100000)) (i32.const 0)";
    let p = rt.load_service("liar.wasm", &wat_service(body)).unwrap();
    let mut inst = rt.instantiate(&p, &RunOptions::default()).unwrap();
    let err = inst.infer(vec![], None).unwrap_err();
    assert!(matches!(err, InferError::Contract(_)), "{err}");
    assert!(err.to_string().contains("outside"), "{err}");
    // Garbage inside memory is a contract error too.
    let body = "(global.set $rl (i32.const 16)) (i32.const 0)";
    let p = rt.load_service("garbage.wasm", &wat_service(body)).unwrap();
    let mut inst = rt.instantiate(&p, &RunOptions::default()).unwrap();
    let err = inst.infer(vec![], None).unwrap_err();
    assert!(err.to_string().contains("WFT1"), "{err}");
}

#[test]
fn command_modules_are_refused_with_a_hint() {
    let rt = runtime();
    let bytes = std::fs::read(module(Guest::P1, "tinyrun")).unwrap();
    let err = rt.load_service("tinyrun.wasm", &bytes).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("weft_serve_v1_infer") && msg.contains("cdylib"),
        "{msg}"
    );
    let bytes = std::fs::read(module(Guest::P2, "tinyrun")).unwrap();
    let msg = rt
        .load_service("tinyrun.wasm", &bytes)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("weft:serve/predictor"), "{msg}");
}

/// `weft serve`'s app with the echo module (both guest kinds) and no
/// declared interface: every V2 datatype must survive JSON and binary.
#[tokio::test]
async fn every_v2_datatype_round_trips_through_the_echo_module() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use serde_json::json;
    use tower::ServiceExt;
    use weft_serve::{ModelSpec, PoolConfig, Server};

    let rt = Arc::new(runtime());
    let specs = [(Guest::P1, "echo1"), (Guest::P2, "echo2")]
        .into_iter()
        .map(|(guest, name)| {
            let bytes = std::fs::read(module(guest, "echo")).unwrap();
            ModelSpec {
                name: name.into(),
                version: "1".into(),
                platform: "weft-wasm".into(),
                program: Arc::new(rt.load_service("echo.wasm", &bytes).unwrap()),
                options: RunOptions::default(),
                interface: Default::default(),
                backend: "cpu",
                pool: PoolConfig {
                    instances: 1,
                    queue: 1,
                    deadline: Duration::from_secs(10),
                },
            }
        })
        .collect();
    let server = Arc::new(Server::new(rt, specs, Default::default()).unwrap());
    let cases = [
        ("BOOL", json!([true, false])),
        ("UINT8", json!([0, 255])),
        ("UINT16", json!([1, 65535])),
        ("UINT32", json!([2, 4294967295u64])),
        ("UINT64", json!([3, u64::MAX])),
        ("INT8", json!([-128, 127])),
        ("INT16", json!([-32768, 32767])),
        ("INT32", json!([-2147483648i64, 2147483647])),
        ("INT64", json!([i64::MIN, i64::MAX])),
        ("FP16", json!([0.5, -2.0])),
        ("FP32", json!([0.25, -65536.5])),
        ("FP64", json!([0.1, 1e300])),
        ("BYTES", json!(["héllo", ""])),
    ];
    for model in ["echo1", "echo2"] {
        let inputs: Vec<_> = cases
            .iter()
            .map(|(dt, data)| json!({"name": dt.to_lowercase(), "shape": [2], "datatype": dt, "data": data}))
            .collect();
        let req = http::Request::post(format!("/v2/models/{model}/infer"))
            .body(Body::from(json!({ "inputs": inputs }).to_string()))
            .unwrap();
        let resp = weft_serve::rest::router(server.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{model}: {v}");
        let outputs = v["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), cases.len());
        for ((dt, data), out) in cases.iter().zip(outputs) {
            assert_eq!(out["name"], format!("echo_{}", dt.to_lowercase()));
            assert_eq!(out["datatype"], *dt, "{model}");
            assert_eq!(out["shape"], json!([2]));
            assert_eq!(out["data"], *data, "{model} {dt}");
        }
    }
}

/// The OCR serving module on both guest kinds: it declares its own
/// interface and reads the sample page from image bytes.
#[test]
fn ocr_module_describes_itself_and_serves_on_both_guest_kinds() {
    let Some(models) = weft_tests::models_dir() else {
        weft_tests::skip_or_fail("models/ is missing: run scripts/fetch-models.sh");
        return;
    };
    let rt = runtime();
    let preloads: Vec<Preload> = [
        "ppocr-det:onnx:cpu:ch_PP-OCRv4_det_infer.onnx",
        "ppocr-rec:onnx:cpu:ch_PP-OCRv4_rec_infer.onnx",
    ]
    .iter()
    .map(|p| {
        let (spec, file) = p.rsplit_once(':').unwrap();
        format!("{spec}:{}", models.join(file).display())
            .parse()
            .unwrap()
    })
    .collect();
    let opts = RunOptions {
        models: Arc::new(Models::load(&preloads, Default::default()).unwrap()),
        dirs: vec![weft_runtime::DirGrant {
            host: models.clone(),
            guest: "/models".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    let png =
        std::fs::read(weft_tests::repo_root().join("modules/ocr/testdata/sample.png")).unwrap();
    let expected =
        std::fs::read_to_string(weft_tests::repo_root().join("modules/ocr/testdata/expected.txt"))
            .unwrap();
    for guest in [Guest::P1, Guest::P2] {
        let bytes = std::fs::read(module(guest, "ocr_serve")).unwrap();
        let program = rt.load_service("ocr_serve.wasm", &bytes).unwrap();
        let mut inst = rt.instantiate(&program, &opts).unwrap();
        let sig = inst
            .describe()
            .unwrap()
            .expect("the OCR module declares its interface");
        assert_eq!(sig.inputs[0].name, "image", "{guest:?}");
        assert_eq!(sig.inputs[0].datatype, Some(DataType::Bytes));
        assert_eq!(sig.outputs.len(), 3);
        assert_eq!(sig.outputs[2].wire_shape(), [-1, 8]);
        let image = Tensor::new("image", DataType::Bytes, vec![1], weft_abi_bytes(&png));
        let out = inst.infer(vec![image], None).unwrap();
        let text: Vec<String> = split_bytes(&out[0].data);
        assert_eq!(text.join("\n"), expected.trim_end(), "{guest:?}");
    }
}

fn weft_abi_bytes(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn split_bytes(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8_lossy(&data[4..4 + n]).into_owned());
        data = &data[4 + n..];
    }
    out
}
