//! The gRPC binding: `inference.GRPCInferenceService` from
//! `proto/grpc_predict_v2.proto`. Inputs may use typed `contents` or
//! `raw_input_contents`; outputs always come back as `raw_output_contents`
//! (what tritonclient and the kserve SDK read by default).

use crate::codec;
use crate::error::ApiError;
use crate::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::proto::*;
use crate::{EXTENSIONS, Protocol, SERVER_NAME, SERVER_VERSION, Server};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use weft_abi::Tensor;

/// The tonic service, with message size limits from the server's limits.
pub fn service(server: Arc<Server>) -> GrpcInferenceServiceServer<Grpc> {
    let max = server.limits().max_body;
    GrpcInferenceServiceServer::new(Grpc { server })
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX)
}

pub struct Grpc {
    pub(crate) server: Arc<Server>,
}

fn some(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn metadata(t: &weft_abi::TensorSpec) -> model_metadata_response::TensorMetadata {
    model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype_name().into(),
        shape: t.wire_shape(),
    }
}

/// Decode a `ModelInferRequest`'s wire bytes as the service does: the
/// counts checked on the wire ([`crate::wire`]), then prost, then the
/// inputs converted. Returns the inputs and the outputs asked for. Never
/// panics, whatever the bytes (the fuzz target `v2_grpc` holds it to that).
pub fn decode_request(bytes: &[u8]) -> Result<(Vec<Tensor>, Vec<String>), ApiError> {
    use prost::Message as _;
    crate::wire::check_infer_request(bytes)
        .map_err(|e| ApiError::bad(format!("refusing the request: {}", e.0)))?;
    let mut req = ModelInferRequest::decode(bytes)
        .map_err(|e| ApiError::bad(format!("malformed ModelInferRequest: {e}")))?;
    let inputs = decode_inputs(&mut req)?;
    Ok((inputs, req.outputs.iter().map(|o| o.name.clone()).collect()))
}

fn decode_inputs(req: &mut ModelInferRequest) -> Result<Vec<Tensor>, ApiError> {
    let raw = std::mem::take(&mut req.raw_input_contents);
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(ApiError::bad(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order",
            raw.len(),
            req.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut out = Vec::with_capacity(req.inputs.len());
    for input in &mut req.inputs {
        let name = &input.name;
        let dt = codec::datatype(name, &input.datatype)?;
        let dims = codec::shape(name, &input.shape)?;
        let data = match (raw.next(), &input.contents) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(format!(
                    "input '{name}' has both contents and raw_input_contents; send one"
                )));
            }
            (Some(bytes), None) => {
                codec::check_raw(name, dt, &dims, &bytes)?;
                bytes
            }
            (None, Some(c)) => codec::from_contents(name, dt, &dims, c)?,
            (None, None) => {
                return Err(ApiError::bad(format!(
                    "input '{name}' has no contents and there is no raw_input_contents"
                )));
            }
        };
        out.push(Tensor::new(std::mem::take(&mut input.name), dt, dims, data));
    }
    Ok(out)
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.server.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        self.server.model(&r.name, some(&r.version))?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.server.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: SERVER_VERSION.into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).into()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let m = self.server.model(&r.name, some(&r.version))?;
        Ok(Response::new(ModelMetadataResponse {
            name: m.name.clone(),
            versions: vec![m.version.clone()],
            platform: m.platform.clone(),
            inputs: m.interface.inputs.iter().map(metadata).collect(),
            outputs: m.interface.outputs.iter().map(metadata).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let mut r = req.into_inner();
        self.server.model(&r.model_name, some(&r.model_version))?;
        let inputs = decode_inputs(&mut r)?;
        let requested: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
        let done = self
            .server
            .infer(
                Protocol::Grpc,
                &r.model_name,
                some(&r.model_version),
                inputs,
                &requested,
            )
            .await?;
        let mut outputs = Vec::with_capacity(done.outputs.len());
        let mut raw = Vec::with_capacity(done.outputs.len());
        for t in done.outputs {
            outputs.push(model_infer_response::InferOutputTensor {
                name: t.name,
                datatype: t.datatype.name().into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            });
            raw.push(t.data);
        }
        Ok(Response::new(ModelInferResponse {
            model_name: done.model,
            model_version: done.version,
            id: r.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: raw,
        }))
    }
}
