//! `weft-nn`: the wasi-nn backends of Weft.
//!
//! The CPU backend runs ONNX, TensorFlow Lite and frozen TensorFlow models
//! on [tract](https://github.com/sonos/tract) ([`ModelFormat`]); ONNX graphs
//! may instead run, chosen with [`CpuEngine::Onnxruntime`], on an
//! onnxruntime loaded at run time ([`onnxruntime`]);
//! the GPU backend lowers them to wgpu kernels through `weft-gpu` (target
//! `gpu`, or `auto` with a hardware adapter), nodes it cannot lower staying
//! on tract.
//! It implements the backend traits of `wasmtime-wasi-nn`, so the same
//! backend serves both guest ABIs (the witx `wasi_ephemeral_nn` of
//! `wasm32-wasip1` modules and the `wasi:nn` WIT of components).
//!
//! Where to start: [`backends`] builds the per-encoding backend list a
//! wasi-nn context needs; [`Models`] holds preloaded named models;
//! [`OnnxModel`] is the parsed model (any of the three formats) with its
//! plan cache.
//!
//! ```no_run
//! use weft_nn::{BackendOptions, Models, Preload};
//! let preload: Preload = "tiny:onnx:cpu:tiny.onnx".parse()?;
//! let models = Models::load(&[preload], BackendOptions::default())?;
//! assert_eq!(models.names(), ["tiny"]);
//! # Ok::<(), weft_nn::NnError>(())
//! ```
//!
//! Architecture invariant: this crate knows nothing about OCI, serving or
//! Kubernetes; it turns model bytes and tensors into tensors.

mod backend;
mod error;
mod formats;
mod model;
pub mod onnxruntime;
mod registry;
mod tensor;

pub use backend::{
    BackendOptions, CpuEngine, Device, GpuPolicy, Target, TractBackend, TractContext, format_of,
    graph, graph_on, resolve,
};
pub use error::{ErrorKind, NnError, kind_of};
pub use model::{Dim, MAX_PLANS_PER_MODEL, ModelFormat, OnnxModel, Plan, TensorInfo, digest};
pub use registry::{Models, Preload, encoding_name};
pub use tensor::{from_tract, to_tract, type_name, wire_type};
/// Element types as tract (and [`TensorInfo`]) name them.
pub use tract_onnx::prelude::DatumType;
pub use wasmtime_wasi_nn::backend::Id;
pub use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, TensorType};
pub use wasmtime_wasi_nn::{Backend, Graph, Tensor};
/// The interface type (`OnnxModel::signature`).
pub use weft_abi::{Signature, TensorSpec};
/// The GPU executor (adapter choice, memory budget, adapters list).
pub use weft_gpu as gpu;
pub use weft_gpu::{Place, Report as GpuReport};
/// The onnxruntime CPU engine's library and models ([`CpuEngine::Onnxruntime`]).
pub use weft_ort as ort;

/// The backends a wasi-nn context needs: tract for `onnx`,
/// `tensorflowlite`, `tensorflow` and `autodetect`.
pub fn backends(options: BackendOptions) -> Vec<Backend> {
    [
        GraphEncoding::Onnx,
        GraphEncoding::Tensorflowlite,
        GraphEncoding::Tensorflow,
        GraphEncoding::Autodetect,
    ]
    .into_iter()
    .map(|encoding| Backend::from(TractBackend::new(encoding, options)))
    .collect()
}
