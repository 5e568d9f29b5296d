//! Handler tests without a socket: `router().oneshot(request)` for REST,
//! direct service calls for gRPC. Real clients over real sockets are in
//! `crates/cli/tests` (tritonclient, kserve, curl).

use crate::proto::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::*;
use crate::rest::{HEADER_LENGTH, router};
use crate::*;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tower::ServiceExt;
use weft_nn::{Models, Preload};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn runtime() -> Arc<Runtime> {
    Arc::new(
        Runtime::new(weft_runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap(),
    )
}

fn onnx_spec(rt: &Runtime, name: &str, file: &str, pool: PoolConfig) -> ModelSpec {
    let preload: Preload = format!("model:onnx:cpu:{}", data(file).display())
        .parse()
        .unwrap();
    let models = Models::load(&[preload], Default::default()).unwrap();
    let interface = models.model("model").unwrap().signature();
    ModelSpec {
        name: name.into(),
        version: "1".into(),
        platform: "weft-onnx".into(),
        program: Arc::new(rt.load_service("predictor.wasm", &predictor()).unwrap()),
        options: RunOptions {
            models: Arc::new(models),
            ..Default::default()
        },
        interface,
        backend: "cpu",
        pool,
    }
}

/// The generic serving module `weft serve` bundles, as the test harness
/// built it.
fn predictor() -> Vec<u8> {
    std::fs::read(weft_tests::module(weft_tests::Guest::P2, "predictor"))
        .expect("modules/predictor is built by weft-tests' build script")
}

const POOL: PoolConfig = PoolConfig {
    instances: 1,
    queue: 4,
    deadline: Duration::from_secs(20),
};

/// A core serving module that spins forever in `infer`.
const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "weft_serve_v1_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_serve_v1_response_ptr") (result i32) (i32.const 0))
  (func (export "weft_serve_v1_response_len") (result i32) (i32.const 0))
  (func (export "weft_serve_v1_infer") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"#;

fn server(max_body: usize) -> Arc<Server> {
    let rt = runtime();
    let spin = rt
        .load_service("spin.wasm", &wat::parse_str(SPIN).unwrap())
        .unwrap();
    let specs = vec![
        onnx_spec(&rt, "tiny", "tiny.onnx", POOL),
        onnx_spec(&rt, "two", "two_inputs.onnx", POOL),
        onnx_spec(&rt, "mlp", "mlp_dynamic_batch.onnx", POOL),
        ModelSpec {
            name: "spin".into(),
            version: "1".into(),
            platform: "weft-wasm".into(),
            program: Arc::new(spin),
            options: RunOptions::default(),
            interface: Default::default(),
            backend: "cpu",
            pool: PoolConfig {
                instances: 1,
                queue: 0,
                deadline: Duration::from_millis(300),
            },
        },
        ModelSpec {
            name: "spinq".into(),
            version: "1".into(),
            platform: "weft-wasm".into(),
            program: Arc::new(
                rt.load_service("spin.wasm", &wat::parse_str(SPIN).unwrap())
                    .unwrap(),
            ),
            options: RunOptions::default(),
            interface: Default::default(),
            backend: "cpu",
            pool: PoolConfig {
                instances: 1,
                queue: 1,
                deadline: Duration::from_millis(500),
            },
        },
    ];
    Arc::new(Server::new(rt, specs, Limits { max_body }).unwrap())
}

async fn call(s: &Arc<Server>, req: Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let resp = router(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn get(s: &Arc<Server>, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(s, Request::get(path).body(Body::empty()).unwrap()).await;
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (status, v)
}

async fn post(s: &Arc<Server>, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let (status, _, body) = call(s, Request::post(path).body(body.into()).unwrap()).await;
    (status, serde_json::from_slice(&body).unwrap())
}

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

#[tokio::test]
async fn health_and_metadata() {
    let s = server(1 << 20);
    assert_eq!(
        get(&s, "/v2/health/live").await,
        (StatusCode::OK, json!({"live": true}))
    );
    assert_eq!(
        get(&s, "/v2/health/ready").await,
        (StatusCode::OK, json!({"ready": true}))
    );
    assert_eq!(
        get(&s, "/v2/models/tiny/ready").await,
        (StatusCode::OK, json!({"name": "tiny", "ready": true}))
    );
    assert_eq!(
        get(&s, "/v2/models/tiny/versions/1/ready").await.0,
        StatusCode::OK
    );
    let (st, v) = get(&s, "/v2").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["name"], "weft");
    assert_eq!(v["extensions"], json!(["binary_tensor_data"]));
    let (st, v) = get(&s, "/v2/models/mlp").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["versions"], json!(["1"]));
    assert_eq!(v["inputs"][0]["datatype"], "FP32");
    assert_eq!(v["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(v["outputs"][0]["datatype"], "FP32");
    assert_eq!(get(&s, "/v2/models/mlp/versions/1").await.1, v);

    let (st, v) = get(&s, "/v2/models/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(error(&v).contains("unknown model 'nope'") && error(&v).contains("tiny"));
    let (st, v) = get(&s, "/v2/models/tiny/versions/7").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(error(&v).contains("no version '7'"));
    assert_eq!(
        get(&s, "/v2/models/nope/ready").await.0,
        StatusCode::NOT_FOUND
    );
    let (st, v) = get(&s, "/v3/whatever").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(error(&v).contains("/v3/whatever"));

    s.begin_shutdown();
    assert_eq!(get(&s, "/v2/health/ready").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&s, "/v2/health/live").await.0, StatusCode::OK);
}

#[tokio::test]
async fn json_infer_flat_nested_named_and_filtered() {
    let s = server(1 << 20);
    let (st, v) = post(
        &s,
        "/v2/models/tiny/infer",
        json!({"id": "r1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]})
            .to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "r1");
    assert_eq!(v["model_name"], "tiny");
    assert_eq!(v["model_version"], "1");
    assert_eq!(v["outputs"][0]["name"], "y");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 4]));
    assert_eq!(v["outputs"][0]["data"], json!([3.0, 5.0, 7.0, 9.0]));

    let (st, v) = post(
        &s,
        "/v2/models/two/versions/1/infer",
        json!({"inputs": [
            {"name": "b", "shape": [3], "datatype": "FP32", "data": [4, 5, 6]},
            {"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}],
            "outputs": [{"name": "prod"}]})
        .to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["outputs"][0]["name"], "prod");
    assert_eq!(v["outputs"][0]["data"], json!([4.0, 10.0, 18.0]));

    // A dynamic batch: 3 rows through the MLP.
    let (st, v) = post(
        &s,
        "/v2/models/mlp/infer",
        json!({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": vec![0.5; 12]}]}).to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([3, 3]));
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[tokio::test]
async fn binary_extension_in_and_out() {
    let s = server(1 << 20);
    let header = json!({
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let req = Request::post("/v2/models/tiny/infer")
        .header(HEADER_LENGTH, header.len())
        .header("content-type", "application/octet-stream")
        .body(Body::from(body.clone()))
        .unwrap();
    let (st, headers, resp) = call(&s, req).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let n: usize = headers[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
    let v: Value = serde_json::from_slice(&resp[..n]).unwrap();
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(v["outputs"][0].get("data").is_none());
    assert_eq!(&resp[n..], &f32_bytes(&[3.0, 5.0, 7.0, 9.0])[..]);

    // Request-level binary_data_output, as tritonclient sends by default.
    let header = json!({
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "parameters": {"binary_data_output": true}
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(f32_bytes(&[0.0; 4]));
    let req = Request::post("/v2/models/tiny/infer")
        .header(HEADER_LENGTH, header.len())
        .body(Body::from(body))
        .unwrap();
    let (st, headers, resp) = call(&s, req).await;
    assert_eq!(st, StatusCode::OK);
    let n: usize = headers[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
    assert_eq!(&resp[n..], &f32_bytes(&[1.0; 4])[..]);
}

async fn bad(s: &Arc<Server>, path: &str, body: Value) -> (StatusCode, String) {
    let (st, v) = post(s, path, body.to_string()).await;
    (st, error(&v).to_owned())
}

#[tokio::test]
async fn protocol_errors_are_4xx_with_precise_messages() {
    let s = server(4096);
    let x = |shape: Value, dt: &str, data: Value| json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt, "data": data}]});
    let cases: Vec<(Value, &str)> = vec![
        (x(json!([1, 3]), "FP32", json!([1, 2, 3])), "expects [1, 4]"),
        (
            x(json!([1, 4]), "FP64", json!([1, 2, 3, 4])),
            "expects FP32",
        ),
        (
            x(json!([1, 4]), "FLOAT", json!([1, 2, 3, 4])),
            "unknown datatype 'FLOAT'",
        ),
        (
            x(json!([1, 4]), "FP32", json!([1, 2, 3])),
            "needs 4 elements, data has 3",
        ),
        (
            x(json!([1, -4]), "FP32", json!([1, 2, 3, 4])),
            "negative dimension",
        ),
        (
            x(json!([1, 4]), "FP32", json!(["a", 2, 3, 4])),
            "not a number",
        ),
        (
            json!({"inputs": [{"name": "q", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            "no input 'q'",
        ),
        (json!({"inputs": []}), "missing input 'x'"),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}),
            "no `data`",
        ),
        (json!({"input": []}), "malformed inference request JSON"),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                   "outputs": [{"name": "zz"}]}),
            "no output 'zz'",
        ),
    ];
    for (body, want) in cases {
        let (st, msg) = bad(&s, "/v2/models/tiny/infer", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg:?} lacks {want:?}");
    }
    let (st, v) = post(&s, "/v2/models/tiny/infer", "{not json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(error(&v).contains("malformed"));
    let (st, msg) = bad(&s, "/v2/models/nope/infer", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{msg}");

    // Binary: truncated body, lying header, unclaimed bytes.
    let header = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}).to_string();
    let send = |hlen: usize, extra: Vec<u8>| {
        let mut body = header.clone().into_bytes();
        body.extend(extra);
        Request::post("/v2/models/tiny/infer")
            .header(HEADER_LENGTH, hlen)
            .body(Body::from(body))
            .unwrap()
    };
    let (st, _, b) = call(&s, send(header.len(), vec![0; 10])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&b).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (st, _, b) = call(&s, send(header.len() + 100, vec![])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("body has only"));
    let (st, _, b) = call(&s, send(header.len(), vec![0; 20])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("4 bytes of binary data"));

    // Over the body limit: 413 with a JSON error naming the limit.
    let big = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": vec![0; 5000]}]});
    let (st, v) = post(&s, "/v2/models/tiny/infer", big.to_string()).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error(&v).contains("4096 bytes"), "{v}");

    let metrics = s.metrics().encode();
    assert!(
        metrics.contains(
            r#"weft_inference_failures_total{model="tiny",protocol="rest",reason="bad_request"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_503_and_a_runaway_module_is_500_then_serving_resumes() {
    let s = server(1 << 20);
    let body = json!({"inputs": []}).to_string();
    let first = {
        let s = s.clone();
        let body = body.clone();
        tokio::spawn(async move { post(&s, "/v2/models/spin/infer", body).await })
    };
    // Wait until the spinning request holds the only instance.
    let started = std::time::Instant::now();
    while !s
        .metrics()
        .encode()
        .contains(r#"weft_inference_in_flight{model="spin"} 1"#)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "request never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (st, v) = post(&s, "/v2/models/spin/infer", body.clone()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(error(&v).contains("at capacity"), "{v}");

    let (st, v) = first.await.unwrap();
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert!(error(&v).contains("deadline"), "{v}");
    // The retired instance is replaced: the next request runs (and hits
    // the deadline again) instead of failing to find an instance.
    let (st, v) = post(&s, "/v2/models/spin/infer", body).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error(&v).contains("deadline"), "{v}");
    // Other models never noticed.
    let (st, _) = post(
        &s,
        "/v2/models/tiny/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let m = s.metrics().encode();
    assert!(m.contains(r#"reason="overloaded"} 1"#), "{m}");
    assert!(m.contains(r#"reason="deadline"} 2"#), "{m}");
}

#[tokio::test]
async fn grpc_metadata_infer_and_errors() {
    let s = server(1 << 20);
    let g = crate::grpc::Grpc { server: s.clone() };
    assert!(
        g.server_live(tonic::Request::new(ServerLiveRequest {}))
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let md = g
        .model_metadata(tonic::Request::new(ModelMetadataRequest {
            name: "two".into(),
            version: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.inputs.len(), 2);
    assert_eq!(md.outputs[1].name, "prod");

    let input =
        |name: &str, contents: Option<InferTensorContents>| model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![3],
            parameters: Default::default(),
            contents,
        };
    // Raw contents.
    let req = ModelInferRequest {
        model_name: "two".into(),
        id: "g1".into(),
        inputs: vec![input("a", None), input("b", None)],
        raw_input_contents: vec![f32_bytes(&[1.0, 2.0, 3.0]), f32_bytes(&[2.0, 2.0, 2.0])],
        ..Default::default()
    };
    let r = g
        .model_infer(tonic::Request::new(req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.id, "g1");
    assert_eq!(r.outputs[0].name, "sum");
    assert_eq!(r.raw_output_contents[0], f32_bytes(&[3.0, 4.0, 5.0]));
    assert_eq!(r.raw_output_contents[1], f32_bytes(&[2.0, 4.0, 6.0]));
    // Typed contents.
    let fp32 = |v: Vec<f32>| {
        Some(InferTensorContents {
            fp32_contents: v,
            ..Default::default()
        })
    };
    let req = ModelInferRequest {
        model_name: "two".into(),
        inputs: vec![
            input("a", fp32(vec![1.0, 1.0, 1.0])),
            input("b", fp32(vec![5.0, 6.0, 7.0])),
        ],
        outputs: vec![model_infer_request::InferRequestedOutputTensor {
            name: "prod".into(),
            parameters: Default::default(),
        }],
        ..Default::default()
    };
    let r = g
        .model_infer(tonic::Request::new(req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.raw_output_contents[0], f32_bytes(&[5.0, 6.0, 7.0]));

    let err = g
        .model_infer(tonic::Request::new(ModelInferRequest {
            model_name: "two".into(),
            inputs: vec![input("a", fp32(vec![1.0]))],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("needs 3 elements"),
        "{}",
        err.message()
    );
    let err = g
        .model_metadata(tonic::Request::new(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_frees_its_place() {
    let s = server(1 << 20);
    let body = json!({"inputs": []}).to_string();
    let send = |s: &Arc<Server>| {
        let (s, body) = (s.clone(), body.clone());
        tokio::spawn(async move { post(&s, "/v2/models/spinq/infer", body).await })
    };
    let metric = |s: &Arc<Server>, m: &str| s.metrics().encode().contains(m);
    let wait_for = |s: Arc<Server>, m: &'static str| async move {
        let started = std::time::Instant::now();
        while !metric(&s, m) {
            assert!(started.elapsed() < Duration::from_secs(10), "never saw {m}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let running = send(&s);
    wait_for(s.clone(), r#"weft_inference_in_flight{model="spinq"} 1"#).await;
    let queued = send(&s);
    wait_for(s.clone(), r#"weft_inference_queue_depth{model="spinq"} 1"#).await;
    // The queued client disconnects.
    queued.abort();
    wait_for(s.clone(), r#"weft_inference_queue_depth{model="spinq"} 0"#).await;
    // Its place is free again: another request queues instead of a 503.
    let again = send(&s);
    wait_for(s.clone(), r#"weft_inference_queue_depth{model="spinq"} 1"#).await;
    assert_eq!(running.await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);
    // It queued (seen above) and was not refused for capacity; whether it
    // then ran into its deadline or waited it out depends on machine load.
    let (_, v) = again.await.unwrap();
    assert!(!error(&v).contains("at capacity"), "{v}");
    assert!(
        !metric(&s, r#"reason="overloaded""#),
        "a request was refused as if the queue were still occupied"
    );
}

/// A model is replaced while the server runs: a prepared version answers
/// before it is served, requests after `install` reach it, and the model it
/// replaced comes back for a rollback.
#[tokio::test]
async fn models_are_replaced_atomically_and_can_be_put_back() {
    let rt = runtime();
    let s = Arc::new(
        Server::new(
            rt.clone(),
            vec![onnx_spec(&rt, "m", "tiny.onnx", POOL)],
            Limits::default(),
        )
        .unwrap(),
    );
    // Version 1: y = 2x + 1 on [1, 4]; version 2: y = x + x on [2, 3].
    let v1_body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let v2_body =
        r#"{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#;
    let (status, v) = post(&s, "/v2/models/m/infer", v1_body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!([3.0, 5.0, 7.0, 9.0]));

    let mut spec = onnx_spec(&rt, "m", "double_f32.onnx", POOL);
    spec.version = "2".into();
    let v2 = s.prepare(rt.clone(), spec).unwrap();
    assert_eq!((v2.name(), v2.version()), ("m", "2"));
    let x = weft_abi::Tensor {
        name: "x".into(),
        datatype: weft_abi::DataType::Fp32,
        shape: vec![2, 3],
        data: [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect(),
    };
    let checked = s.infer_prepared(&v2, vec![x], &[]).await.unwrap();
    assert_eq!(checked.version, "2");
    assert_eq!(checked.outputs[0].data.len(), 6 * 4);
    // Not served yet.
    assert_eq!(s.version_of("m").as_deref(), Some("1"));
    let (status, _) = post(&s, "/v2/models/m/infer", v1_body).await;
    assert_eq!(status, StatusCode::OK);

    let v1 = s.install(v2).expect("the replaced version");
    assert_eq!(s.version_of("m").as_deref(), Some("2"));
    let (_, meta) = get(&s, "/v2/models/m").await;
    assert_eq!(meta["versions"], json!(["2"]));
    let (status, v) = post(&s, "/v2/models/m/infer", v2_body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["outputs"][0]["data"],
        json!([2.0, 4.0, 6.0, 8.0, 10.0, 12.0])
    );
    // Roll back.
    let v2 = s.install(v1).unwrap();
    assert_eq!(v2.version(), "2");
    let (_, v) = post(&s, "/v2/models/m/infer", v1_body).await;
    assert_eq!(v["outputs"][0]["data"], json!([3.0, 5.0, 7.0, 9.0]));
    assert!(s.remove("m").is_some());
    let (status, _) = post(&s, "/v2/models/m/infer", v1_body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Issue 21: a ~90-byte request claiming `shape: [2^40]` of FP64 made the
/// server reserve 8 TiB before looking at the data; a zero dimension next
/// to huge ones slipped past the element count. Both are 400s now, and the
/// server answers the next request.
#[tokio::test]
async fn claimed_shapes_are_bounded_before_anything_is_allocated() {
    let s = server(1 << 20);
    let body = |shape: Value| json!({"inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "data": [1]}]});
    let (st, e) = bad(&s, "/v2/models/mlp/infer", body(json!([1099511627776u64]))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        e.contains("dimension 1099511627776 is over the limit"),
        "{e}"
    );
    let (st, e) = bad(
        &s,
        "/v2/models/mlp/infer",
        body(json!([0, 4294967295u64, 4294967295u64])),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e.contains("spans more than"), "{e}");
    // A binary body claiming more than it carries is refused the same way.
    let hdr = json!({"inputs": [{"name": "x", "shape": [4294967295u64, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}).to_string();
    let mut raw = hdr.clone().into_bytes();
    raw.extend([0u8; 16]);
    let req = Request::post("/v2/models/mlp/infer")
        .header(HEADER_LENGTH, hdr.len())
        .body(Body::from(raw))
        .unwrap();
    let (st, _, b) = call(&s, req).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (st, _) = post(
        &s,
        "/v2/models/mlp/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

/// Issue 21: inputs and outputs per request are capped while the JSON is
/// decoded, and duplicate names are found with one hash set.
#[tokio::test]
async fn inputs_and_outputs_per_request_are_capped_at_decode() {
    let s = server(8 << 20);
    let input =
        |i: usize| json!({"name": format!("x{i}"), "shape": [1], "datatype": "FP32", "data": [1]});
    let many: Vec<Value> = (0..=weft_abi::MAX_TENSORS as usize).map(input).collect();
    let (st, e) = bad(&s, "/v2/models/mlp/infer", json!({ "inputs": many })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e.contains("more than 4096 tensors"), "{e}");
    let outputs: Vec<Value> = (0..=weft_abi::MAX_TENSORS as usize)
        .map(|i| json!({ "name": format!("y{i}") }))
        .collect();
    let (st, e) = bad(
        &s,
        "/v2/models/mlp/infer",
        json!({ "inputs": [input(0)], "outputs": outputs }),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e.contains("more than 4096 tensors"), "{e}");
    // Exactly at the cap, every name distinct but one: the duplicate is
    // named (and found without comparing every pair).
    let mut at_cap: Vec<Value> = (0..weft_abi::MAX_TENSORS as usize - 1).map(input).collect();
    at_cap.push(input(7));
    let (st, e) = bad(&s, "/v2/models/mlp/infer", json!({ "inputs": at_cap })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e.contains("'x7' is given twice"), "{e}");
    // gRPC: the same caps, checked on the wire before prost builds anything.
    let g = crate::grpc::Grpc { server: s.clone() };
    let req = ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![Default::default(); weft_abi::MAX_TENSORS as usize + 1],
        ..Default::default()
    };
    let e = crate::grpc::decode_request(&prost::Message::encode_to_vec(&req)).unwrap_err();
    assert!(e.message.contains("more than 4096 inputs"), "{e}");
    let r = g.model_infer(tonic::Request::new(ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP64".into(),
            shape: vec![0, 1 << 31, 1 << 31],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![]],
        ..Default::default()
    }));
    let status = r.await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("spans more than"), "{status:?}");
}
