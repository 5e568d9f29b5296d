//! Guest-side wasi-nn for Weft modules.
//!
//! One API over both ways a WebAssembly guest can reach wasi-nn:
//!
//! * **`wasm32-wasip1`** core modules call the witx functions of the
//!   `wasi_ephemeral_nn` import module. That ABI hands back output tensors as
//!   bytes only, so reading an output takes the shape the caller expects (see
//!   [`Context::output`]) and tensor names are not available.
//! * **`wasm32-wasip2`** components import `wasi:nn@0.2.0-rc-2024-10-28`
//!   (world `ml`). Outputs carry their real shape and type, and inputs and
//!   outputs can also be addressed by name.
//!
//! On any other target the crate compiles (so code using it can be unit-tested
//! natively) but every call fails with [`ErrorCode::UnsupportedOperation`].
//!
//! ```no_run
//! use weft_guest::{Graph, Tensor, TensorType};
//!
//! # fn main() -> Result<(), weft_guest::Error> {
//! // The host preloads the model, e.g. `--nn-preload tiny:onnx:cpu:tiny.onnx`.
//! let graph = Graph::load_by_name("tiny")?;
//! let mut ctx = graph.context()?;
//! ctx.set_input(0, &Tensor::f32(&[1, 4], &[1.0, 2.0, 3.0, 4.0])?)?;
//! ctx.compute()?;
//! // wasip1 cannot report output shapes, so say what is expected.
//! let y = ctx.output(0, TensorType::F32, &[1, 4])?;
//! println!("{:?}", y.to_f32_vec()?);
//! # Ok(())
//! # }
//! ```
//!
//! Dropping a [`Graph`] or [`Context`] releases it in the host: components drop
//! their resources, and wasip1 modules call Weft's `unload` /
//! `finalize_execution_context` extensions unless the default `drop-handles`
//! feature is turned off (needed on hosts without those imports).

mod error;
#[cfg(any(test, target_os = "wasi"))]
mod shape;
mod tensor;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1"))]
#[path = "wasip1.rs"]
mod sys;
#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2"))]
#[path = "wasip2.rs"]
mod sys;
#[cfg(not(all(
    target_arch = "wasm32",
    target_os = "wasi",
    any(target_env = "p1", target_env = "p2")
)))]
#[path = "unsupported.rs"]
mod sys;

use std::marker::PhantomData;

pub use error::{Error, ErrorCode, Result};
pub use tensor::{Tensor, TensorType};

/// How the bytes given to [`Graph::load`] are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Openvino,
    Onnx,
    Tensorflow,
    Pytorch,
    TensorflowLite,
    /// Let the host work out the format.
    Autodetect,
}

/// Where the host should run a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Cpu,
    Gpu,
    Tpu,
}

/// A model loaded in the host.
pub struct Graph {
    raw: sys::Graph,
}

impl Graph {
    /// Loads a model from its serialized parts (most formats, ONNX included,
    /// use exactly one part).
    pub fn load(builders: &[&[u8]], encoding: Encoding, target: Target) -> Result<Graph> {
        sys::Graph::load(builders, encoding, target).map(|raw| Graph { raw })
    }

    /// Loads a model the host has registered under `name` (for Weft, a
    /// `--nn-preload name:encoding:target:path` flag).
    pub fn load_by_name(name: &str) -> Result<Graph> {
        sys::Graph::load_by_name(name).map(|raw| Graph { raw })
    }

    /// Creates an execution context, which holds inputs and outputs of one
    /// inference at a time. A graph can have many contexts.
    pub fn context(&self) -> Result<Context<'_>> {
        Ok(Context {
            raw: self.raw.context()?,
            _graph: PhantomData,
        })
    }
}

/// An inference session on a [`Graph`]. Inputs stay set across
/// [`compute`](Context::compute) calls until replaced.
pub struct Context<'g> {
    raw: sys::Context,
    _graph: PhantomData<&'g Graph>,
}

impl Context<'_> {
    /// Sets the model input at position `index`.
    ///
    /// On wasip2 the tensor is sent under the name `"{index}"`, which hosts
    /// following wasmtime's convention map back to the input at that position.
    pub fn set_input(&mut self, index: u32, tensor: &Tensor) -> Result<()> {
        self.raw.set_input(index, tensor)
    }

    /// Sets the model input called `name`. wasip2 only: the witx ABI of wasip1
    /// has no names and this fails there with `unsupported_operation`.
    pub fn set_input_named(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        self.raw.set_input_named(name, tensor)
    }

    /// Runs the inference on the inputs set so far.
    pub fn compute(&mut self) -> Result<()> {
        self.raw.compute()
    }

    /// Residency: after every [`compute`](Context::compute), output
    /// `output` becomes input `input` of the next one without passing
    /// through guest memory (a training step's `w.next` feeding `w`). Set
    /// the input once before the first compute; a later
    /// [`set_input`](Context::set_input) of it replaces the carried value
    /// for the next compute. The output stays readable as usual.
    ///
    /// * wasip2 needs nothing of the host: the output tensor resource of
    ///   one compute is handed back as the next one's input (standard
    ///   `wasi:nn`).
    /// * wasip1 calls Weft's `weft_bind_output` extension (feature
    ///   `residency`); built without it, or where the host answers
    ///   `unsupported_operation`, this fails and the caller keeps copying.
    pub fn bind_output(&mut self, output: u32, input: u32) -> Result<()> {
        self.raw.bind_output(output, input)
    }

    /// Reads output `index` as a tensor of type `ty`.
    ///
    /// `dims_hint` is the shape the caller expects; a `0` entry stands for a
    /// size not known in advance, and an empty hint for "no expectation":
    ///
    /// * wasip1 returns bytes only, so the shape is taken from the hint: at most
    ///   one `0` entry is allowed and is worked out from the number of bytes
    ///   the host wrote; an empty hint gives a flat 1-D tensor. The element type
    ///   cannot be checked. A byte count that does not fit the hint is an
    ///   `invalid_argument` error.
    /// * wasip2 returns the real shape and type; they are checked against `ty`
    ///   and the hint (same rank, same known sizes) and the real shape is
    ///   returned.
    pub fn output(&self, index: u32, ty: TensorType, dims_hint: &[u32]) -> Result<Tensor> {
        self.raw.output(index, ty, dims_hint)
    }

    /// Reads the raw bytes of output `index`, failing when they are more than
    /// `max_len` (wasip1 hosts answer that with `missing_memory` or
    /// `too_large`).
    pub fn output_bytes(&self, index: u32, max_len: usize) -> Result<Vec<u8>> {
        self.raw.output_bytes(index, max_len)
    }

    /// Every output of the last [`compute`](Context::compute), with its real
    /// type and shape. Named by the model on wasip2; on wasip1 (through
    /// Weft's `weft_get_output_info` extension, feature `output-info`)
    /// named by position: `"0"`, `"1"`, ...
    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>> {
        self.raw.outputs()
    }

    /// Reads the output called `name` with its real shape and type. wasip2
    /// only; fails with `unsupported_operation` on wasip1.
    pub fn output_named(&self, name: &str) -> Result<Tensor> {
        self.raw.output_named(name)
    }
}
