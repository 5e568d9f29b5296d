//! The REST binding of the Open Inference Protocol, as in KServe's
//! `required_api.md`, plus Triton's binary tensor data extension: a request
//! whose `Inference-Header-Content-Length` header is N carries N bytes of
//! JSON followed by the raw bytes of every input that has a
//! `binary_data_size` parameter, in input order; outputs asked for with
//! `binary_data: true` (or request-level `binary_data_output: true`) come
//! back the same way.

use crate::codec;
use crate::error::{ApiError, Kind};
use crate::{EXTENSIONS, Protocol, SERVER_NAME, SERVER_VERSION, Served, Server};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;
use weft_abi::Tensor;

/// Triton's header naming the length of the JSON part of a binary request
/// or response.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The REST API: `/v2/...` and `/metrics`.
pub fn router(server: Arc<Server>) -> Router {
    let limit = server.limits().max_body;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(server)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Kind::NotFound,
        format!(
            "no such endpoint: {}; see /v2 and /v2/models/{{name}}",
            uri.path()
        ),
    )
}

async fn server_metadata() -> Response {
    axum::Json(serde_json::json!({
        "name": SERVER_NAME,
        "version": SERVER_VERSION,
        "extensions": EXTENSIONS,
    }))
    .into_response()
}

// The status code is the answer (200 true, 4xx false), as the protocol
// says; the small JSON body is what the kserve SDK reads.
async fn live() -> Response {
    axum::Json(serde_json::json!({ "live": true })).into_response()
}

fn readiness(ready: bool, body: Value) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, axum::Json(body)).into_response()
}

async fn ready(State(s): State<Arc<Server>>) -> Response {
    readiness(s.is_ready(), serde_json::json!({ "ready": s.is_ready() }))
}

async fn model_ready(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_ready(&s, &name, None)
}

async fn model_ready_v(
    State(s): State<Arc<Server>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_ready(&s, &name, Some(&version))
}

fn check_ready(s: &Server, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let m = s.model(name, version)?;
    Ok(readiness(
        s.is_ready(),
        serde_json::json!({ "name": m.name, "ready": s.is_ready() }),
    ))
}

#[derive(Serialize)]
struct TensorMetadata<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: Vec<i64>,
}

fn tensors(ts: &[weft_abi::TensorSpec]) -> Vec<TensorMetadata<'_>> {
    ts.iter()
        .map(|t| TensorMetadata {
            name: &t.name,
            datatype: t.datatype_name(),
            shape: t.wire_shape(),
        })
        .collect()
}

fn metadata_json(m: &Served) -> Value {
    serde_json::json!({
        "name": m.name,
        "versions": [m.version],
        "platform": m.platform,
        "inputs": tensors(&m.interface.inputs),
        "outputs": tensors(&m.interface.outputs),
    })
}

async fn model_metadata(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let m = s.model(&name, None)?;
    Ok(axum::Json(metadata_json(&m)).into_response())
}

async fn model_metadata_v(
    State(s): State<Arc<Server>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let m = s.model(&name, Some(&version))?;
    Ok(axum::Json(metadata_json(&m)).into_response())
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics().encode(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, deserialize_with = "bounded::tensors")]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default, deserialize_with = "bounded::some_tensors")]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InputTensor<'a> {
    name: String,
    #[serde(deserialize_with = "bounded::shape")]
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    /// The raw JSON text, decoded once the datatype and shape are known
    /// (they may come after it), straight into tensor bytes.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// Lists capped while they are decoded, so a request cannot make the
/// server hold (or compare) more tensors or dimensions than the serving
/// contract carries.
mod bounded {
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
    use std::marker::PhantomData;
    use weft_abi::{MAX_RANK, MAX_TENSORS};

    struct Capped<T> {
        max: usize,
        what: &'static str,
        item: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {} {}", self.max, self.what)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element()? {
                if out.len() == self.max {
                    return Err(A::Error::custom(format!(
                        "more than {} {}; at most {} are accepted",
                        self.max, self.what, self.max
                    )));
                }
                out.push(v);
            }
            Ok(out)
        }
    }

    fn capped<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
        max: usize,
        what: &'static str,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(Capped {
            max,
            what,
            item: PhantomData,
        })
    }

    pub fn tensors<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        capped(d, MAX_TENSORS as usize, "tensors")
    }

    pub fn some_tensors<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Vec<T>>, D::Error> {
        struct Opt<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Opt<T> {
            type Value = Option<Vec<T>>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "null or a list of at most {MAX_TENSORS} tensors")
            }
            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                tensors(d).map(Some)
            }
        }
        d.deserialize_option(Opt(PhantomData))
    }

    pub fn shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        capped(d, usize::from(MAX_RANK), "dimensions")
    }
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<codec::JsonData>,
}

fn flag(params: &Option<Map<String, Value>>, key: &str) -> bool {
    params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

async fn infer(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&s, &name, None, &headers, body).await
}

async fn infer_v(
    State(s): State<Arc<Server>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&s, &name, Some(&version), &headers, body).await
}

/// Decode a V2 JSON inference request (no binary part) as the REST
/// endpoint does: its inputs and the outputs it asks for.
pub fn decode_json_request(body: &[u8]) -> Result<(Vec<Tensor>, Vec<String>), ApiError> {
    decode_request(None, body)
}

/// A tensor's data as the REST endpoint writes it (`data` of an output).
pub fn tensor_json(t: &Tensor) -> Value {
    serde_json::to_value(codec::to_json(t)).unwrap_or(Value::Null)
}

/// Decode a whole REST inference request as the endpoint does: the JSON
/// part (all of `body`, or its first `header_length` bytes, Triton's
/// binary extension) and the binary tensors after it. Returns the inputs
/// and the names of the outputs asked for. Never panics, whatever the bytes
/// (the fuzz target `v2_rest` holds it to that).
pub fn decode_request(
    header_length: Option<&[u8]>,
    body: &[u8],
) -> Result<(Vec<Tensor>, Vec<String>), ApiError> {
    let (json, binary) = split_at_header(header_length, body)?;
    let mut req: InferRequest = serde_json::from_slice(json)
        .map_err(|e| ApiError::bad(format!("malformed inference request JSON: {e}")))?;
    let inputs = decode_inputs(&mut req, binary)?;
    let requested = req
        .outputs
        .iter()
        .flatten()
        .map(|o| o.name.clone())
        .collect();
    Ok((inputs, requested))
}

/// Split a body into its JSON header and binary tail.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    split_at_header(headers.get(HEADER_LENGTH).map(|v| v.as_bytes()), body)
}

fn split_at_header<'a>(
    header: Option<&[u8]>,
    body: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = header else {
        return Ok((body, &[]));
    };
    let n: usize = std::str::from_utf8(v)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad(format!(
                "{HEADER_LENGTH} is not a byte count: {:?}",
                String::from_utf8_lossy(v)
            ))
        })?;
    if n > body.len() {
        return Err(ApiError::bad(format!(
            "{HEADER_LENGTH} says the JSON header is {n} bytes, but the body has only {}",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// Decode the request's inputs: JSON data or binary sections, in order.
fn decode_inputs(req: &mut InferRequest<'_>, mut binary: &[u8]) -> Result<Vec<Tensor>, ApiError> {
    let mut out = Vec::with_capacity(req.inputs.len());
    for input in &mut req.inputs {
        let name = &input.name;
        let dt = codec::datatype(name, &input.datatype)?;
        let dims = codec::shape(name, &input.shape)?;
        let binary_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let data = match (binary_size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(format!(
                    "input '{name}' has both `data` and a `binary_data_size` parameter; send one"
                )));
            }
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "input '{name}': binary_data_size must be a byte count, got {size}"
                        ))
                    })?;
                if size > binary.len() {
                    return Err(ApiError::bad(format!(
                        "input '{name}': binary_data_size is {size} bytes, but only {} binary bytes remain in the body (truncated request?)",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                codec::check_raw(name, dt, &dims, mine)?;
                mine.to_vec()
            }
            (None, Some(data)) => codec::from_json(name, dt, &dims, data.get())?,
            (None, None) => {
                return Err(ApiError::bad(format!(
                    "input '{name}' has no `data` (and no `binary_data_size` parameter)"
                )));
            }
        };
        out.push(Tensor::new(std::mem::take(&mut input.name), dt, dims, data));
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data follow the JSON header but no input claims them (check binary_data_size)",
            binary.len()
        )));
    }
    Ok(out)
}

async fn run_infer(
    s: &Server,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Kind::TooLarge,
                format!(
                    "request body is over the server's limit of {} bytes",
                    s.limits().max_body
                ),
            )
        } else {
            ApiError::bad(format!("cannot read the request body: {e}"))
        }
    })?;
    // Unknown model: 404 before any parsing.
    s.model(name, version)?;
    let (json, binary) = split_body(headers, &body)?;
    let mut req: InferRequest = serde_json::from_slice(json)
        .map_err(|e| ApiError::bad(format!("malformed inference request JSON: {e}")))?;
    let inputs = decode_inputs(&mut req, binary)?;
    let all_binary = flag(&req.parameters, "binary_data_output");
    let requested: Vec<String> = req
        .outputs
        .iter()
        .flatten()
        .map(|o| o.name.clone())
        .collect();
    let binary_out = |out: &str| {
        all_binary
            || req
                .outputs
                .iter()
                .flatten()
                .any(|o| o.name == out && flag(&o.parameters, "binary_data"))
    };
    let done = s
        .infer(Protocol::Rest, name, version, inputs, &requested)
        .await?;
    let mut tail: Vec<&[u8]> = Vec::new();
    let outputs = done
        .outputs
        .iter()
        .map(|t| {
            if binary_out(&t.name) {
                tail.push(&t.data);
                OutputTensor {
                    name: &t.name,
                    datatype: t.datatype.name(),
                    shape: &t.shape,
                    parameters: Some(serde_json::json!({ "binary_data_size": t.data.len() })),
                    data: None,
                }
            } else {
                OutputTensor {
                    name: &t.name,
                    datatype: t.datatype.name(),
                    shape: &t.shape,
                    parameters: None,
                    data: Some(codec::to_json(t)),
                }
            }
        })
        .collect();
    let resp = InferResponse {
        model_name: &done.model,
        model_version: &done.version,
        id: req.id.take(),
        outputs,
    };
    let json = serde_json::to_vec(&resp)
        .map_err(|e| ApiError::new(Kind::ModuleFailed, format!("encoding the response: {e}")))?;
    if tail.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
    let json_len = json.len();
    let mut body = json;
    for t in tail {
        body.extend_from_slice(t);
    }
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(HEADER_LENGTH, HeaderValue::from(json_len));
    Ok(resp)
}
