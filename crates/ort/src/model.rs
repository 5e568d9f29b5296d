//! A model loaded into onnxruntime: its interface, and the sessions that
//! run it.

use crate::tensor::{self, ElementType, Tensor, TensorRef};
use crate::{Library, OrtError};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::value::{DynValue, Outlet, TensorElementType, ValueType};
use std::sync::{Condvar, Mutex, MutexGuard};
use weft_abi::{Dim, TensorSpec};

/// Largest tensor a caller may hand the engine (4 GiB is the whole wasm32
/// address space, so anything bigger is a lie about the shape).
const MAX_TENSOR_BYTES: usize = 4 << 30;

/// One input or output of a model.
#[derive(Debug, Clone)]
pub struct Port {
    spec: TensorSpec,
    /// The ONNX element type; `None` for a sequence, map or optional.
    onnx: Option<TensorElementType>,
    /// What the port's values travel as over wasi-nn; `None` for a type
    /// no wasi-nn type holds.
    wire: Option<ElementType>,
    /// onnxruntime's description of the type, for errors.
    description: String,
}

impl Port {
    fn new(outlet: &Outlet) -> Port {
        let dtype = outlet.dtype();
        let (onnx, shape) = match dtype {
            ValueType::Tensor {
                ty,
                shape,
                dimension_symbols,
            } => {
                let dims = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match u64::try_from(d) {
                        Ok(n) => Dim::Fixed(n),
                        Err(_) => match dimension_symbols.get(i) {
                            Some(name) if !name.is_empty() => Dim::Named(name.clone()),
                            _ => Dim::any(),
                        },
                    })
                    .collect();
                (Some(*ty), Some(dims))
            }
            _ => (None, None),
        };
        Port {
            spec: TensorSpec {
                name: outlet.name().to_owned(),
                datatype: onnx.and_then(tensor::datatype),
                shape,
            },
            onnx,
            wire: onnx.and_then(tensor::wire_type),
            description: dtype.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The port as the serving contract describes it: its V2 datatype and
    /// its shape, named and unknown dimensions included.
    pub fn spec(&self) -> &TensorSpec {
        &self.spec
    }

    /// The wasi-nn type its values travel as (the model's own type, or the
    /// wider integer for bool, i8, i16, u16, u32 and u64); `None` when no
    /// wasi-nn type holds them.
    pub fn wire_type(&self) -> Option<ElementType> {
        self.wire
    }

    /// onnxruntime's description of the type, `Tensor<f32>(1, 3, -1, -1)`.
    pub fn onnx_type(&self) -> &str {
        &self.description
    }
}

/// Sessions of one model: idle ones, how many exist, and how many may.
struct Pool {
    idle: Vec<Session>,
    open: usize,
    limit: usize,
}

/// An ONNX model loaded into onnxruntime.
///
/// `run` takes `&self`, and concurrent runs of one model do not wait for
/// each other while cores are free: the `ort` crate runs a session through
/// `&mut` (onnxruntime's own `Run` is not reliably thread-safe), so each
/// run borrows a session from a pool, which opens another one when all
/// are busy, up to cores / threads per run. The sessions share their
/// prepacked weights; a second session costs its build time and its
/// activations.
pub struct OrtModel {
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    threads: usize,
    max_sessions: usize,
    /// The model bytes, to open further sessions (kept only when more
    /// than one may open).
    bytes: Option<Box<[u8]>>,
    prepacked: Option<PrepackedWeights>,
    library: &'static Library,
    pool: Mutex<Pool>,
    returned: Condvar,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("threads", &self.threads)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// How many sessions of one model may run at once: one per `threads`
/// cores (each run keeps that many busy), at least one.
fn max_sessions(threads: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_run = if threads == 0 { cores } else { threads };
    (cores / per_run).max(1)
}

impl OrtModel {
    /// Load an ONNX model from its bytes, loading onnxruntime first if this
    /// is the process's first model (see [`crate::init`]).
    ///
    /// `threads`: intra-op threads per run, 0 for onnxruntime's default
    /// (one per physical core). Runs are sequential within a graph
    /// (inter-op 1) with every graph optimization on, as onnxruntime's
    /// Python `InferenceSession` does by default.
    pub fn load(bytes: &[u8], threads: usize) -> Result<OrtModel, OrtError> {
        let library = crate::init()?;
        let max_sessions = max_sessions(threads);
        let prepacked = (max_sessions > 1).then(PrepackedWeights::new);
        let session = open(library, bytes, threads, prepacked.as_ref())?;
        let inputs: Vec<Port> = session.inputs().iter().map(Port::new).collect();
        let outputs: Vec<Port> = session.outputs().iter().map(Port::new).collect();
        if let Some(p) = inputs.iter().find(|p| p.wire.is_none()) {
            return Err(OrtError::UnsupportedInput {
                name: p.spec.name.clone(),
                onnx_type: p.description.clone(),
            });
        }
        tracing::debug!(
            inputs = inputs.len(),
            outputs = outputs.len(),
            threads,
            max_sessions,
            "model loaded into onnxruntime"
        );
        Ok(OrtModel {
            inputs,
            outputs,
            threads,
            max_sessions,
            bytes: (max_sessions > 1).then(|| bytes.into()),
            prepacked,
            library,
            pool: Mutex::new(Pool {
                idle: vec![session],
                open: 1,
                limit: max_sessions,
            }),
            returned: Condvar::new(),
        })
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// The model's interface in the serving contract's terms.
    pub fn signature(&self) -> weft_abi::Signature {
        weft_abi::Signature {
            inputs: self.inputs.iter().map(|p| p.spec.clone()).collect(),
            outputs: self.outputs.iter().map(|p| p.spec.clone()).collect(),
        }
    }

    /// Intra-op threads per run (0: onnxruntime's default).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Check one input against the model's declaration: its wasi-nn type,
    /// its shape and its byte length (overflow-safe: shapes come from
    /// untrusted guests).
    pub fn check_input(&self, index: usize, t: &TensorRef<'_>) -> Result<(), OrtError> {
        let port = self.inputs.get(index).ok_or(OrtError::InputCount {
            count: self.inputs.len(),
            got: index + 1,
        })?;
        let expected = port.wire.ok_or_else(|| OrtError::UnsupportedInput {
            name: port.spec.name.clone(),
            onnx_type: port.description.clone(),
        })?;
        if t.ty != expected {
            return Err(OrtError::InputType {
                name: port.spec.name.clone(),
                expected: match port.onnx.map(|t| t.to_string()) {
                    Some(own) if own != expected.name() => {
                        format!("{expected} (carrying the model's {own})")
                    }
                    _ => expected.name().into(),
                },
                got: t.ty.name().into(),
            });
        }
        // onnxruntime reports a tensor of unknown rank with no dimensions,
        // as it does a scalar: a declared rank of 0 is left to it to check.
        if let Some(dims) = port.spec.shape.as_ref().filter(|d| !d.is_empty()) {
            let fits = dims.len() == t.shape.len()
                && dims
                    .iter()
                    .zip(t.shape)
                    .all(|(d, &n)| !matches!(d, Dim::Fixed(m) if *m != n as u64));
            if !fits {
                return Err(OrtError::InputShape {
                    name: port.spec.name.clone(),
                    expected: port.spec.shape_string(),
                    got: t.shape.to_vec(),
                });
            }
        }
        let bytes = t
            .shape
            .iter()
            .try_fold(t.ty.size(), |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_BYTES)
            .ok_or_else(|| OrtError::TooLarge {
                shape: t.shape.to_vec(),
            })?;
        if bytes != t.data.len() {
            return Err(OrtError::DataLength {
                shape: t.shape.to_vec(),
                ty: t.ty.name().into(),
                expected: bytes,
                got: t.data.len(),
            });
        }
        Ok(())
    }

    /// Run the model on one tensor per input, in declaration order.
    pub fn run(&self, inputs: &[TensorRef<'_>]) -> Result<Outputs, OrtError> {
        if inputs.len() != self.inputs.len() {
            return Err(OrtError::InputCount {
                count: self.inputs.len(),
                got: inputs.len(),
            });
        }
        let mut values = Vec::with_capacity(inputs.len());
        for (index, (t, port)) in inputs.iter().zip(&self.inputs).enumerate() {
            self.check_input(index, t)?;
            let onnx = port.onnx.ok_or_else(|| OrtError::UnsupportedInput {
                name: port.spec.name.clone(),
                onnx_type: port.description.clone(),
            })?;
            values.push(tensor::input_value(t, onnx)?);
        }
        let mut session = self.lease()?;
        let mut out = session
            .session()
            .run(values.as_slice())
            .map_err(|e| OrtError::Run {
                message: e.to_string(),
            })?;
        // Owned values, so the session goes back to the pool now; they keep
        // the session's allocator alive themselves.
        let values = self
            .outputs
            .iter()
            .map(|p| {
                out.remove(p.name())
                    .map(|v| (p.spec.name.clone(), v))
                    .ok_or_else(|| OrtError::Run {
                        message: format!("onnxruntime returned no output `{}`", p.name()),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outputs { values })
    }

    /// A session to run: an idle one, a new one while under the limit,
    /// else the next one returned.
    fn lease(&self) -> Result<Lease<'_>, OrtError> {
        let mut pool = self.lock();
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(Lease {
                    model: self,
                    session: Some(session),
                });
            }
            if pool.open < pool.limit
                && let Some(bytes) = &self.bytes
            {
                pool.open += 1;
                drop(pool);
                match open(self.library, bytes, self.threads, self.prepacked.as_ref()) {
                    Ok(session) => {
                        tracing::debug!(
                            max_sessions = self.max_sessions,
                            "concurrent runs: opened another onnxruntime session"
                        );
                        return Ok(Lease {
                            model: self,
                            session: Some(session),
                        });
                    }
                    Err(e) => {
                        // The first session opened, so this is the
                        // machine (memory, say), not the model: run on
                        // the sessions there are, and stop opening more.
                        tracing::warn!(error = %e, "cannot open another onnxruntime session; concurrent runs of this model will wait for each other");
                        pool = self.lock();
                        pool.open -= 1;
                        pool.limit = pool.open;
                        continue;
                    }
                }
            }
            pool = self.returned.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        // The pool is a list of sessions: a panic elsewhere leaves it whole.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session borrowed from a model's pool, returned on drop.
struct Lease<'m> {
    model: &'m OrtModel,
    session: Option<Session>,
}

impl Lease<'_> {
    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("held until drop")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.model.lock().idle.push(session);
            self.model.returned.notify_one();
        }
    }
}

fn open(
    library: &Library,
    bytes: &[u8],
    threads: usize,
    prepacked: Option<&PrepackedWeights>,
) -> Result<Session, OrtError> {
    let options = |e: ort::Error<SessionBuilder>| OrtError::Environment {
        message: format!("session options: {e}"),
    };
    let mut builder = Session::builder(&library.environment)
        .map_err(|e| OrtError::Environment {
            message: format!("session options: {e}"),
        })?
        .with_intra_threads(threads)
        .map_err(options)?
        .with_inter_threads(1)
        .map_err(options)?
        .with_parallel_execution(false)
        .map_err(options)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(options)?;
    if let Some(weights) = prepacked {
        builder = builder.with_prepacked_weights(weights).map_err(options)?;
    }
    builder
        .commit_from_memory(bytes)
        .map_err(|e| OrtError::Model {
            message: e.to_string(),
        })
}

/// The outputs of one run, in declaration order, held as onnxruntime
/// values until asked for.
#[derive(Debug)]
pub struct Outputs {
    values: Vec<(String, DynValue)>,
}

impl Outputs {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The name of output `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.values.get(index).map(|(n, _)| n.as_str())
    }

    /// Output `index` as a wasi-nn tensor (one copy of its bytes), its type
    /// widened where wasi-nn lacks it; an error for a type no wasi-nn type
    /// holds.
    pub fn tensor(&self, index: usize) -> Result<Tensor, OrtError> {
        let (name, value) = self.values.get(index).ok_or(OrtError::OutputIndex {
            index,
            count: self.values.len(),
        })?;
        tensor::output_tensor(name, value)
    }
}
