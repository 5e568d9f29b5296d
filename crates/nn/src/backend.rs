//! The wasi-nn backend traits implemented on tract.

use crate::error::NnError;
use crate::model::{OnnxModel, Plan};
use crate::tensor::{from_tract, tensor_type, to_tract, wire_type};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

/// What to do when a guest asks for a GPU that this node cannot give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuPolicy {
    /// Fail the `load` with `unsupported-operation` (the default: a module
    /// that asked for a GPU is told, never silently slowed down).
    #[default]
    Fail,
    /// Run on the CPU and log a warning.
    FallbackToCpu,
}

/// Options shared by all graphs a backend loads.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendOptions {
    pub gpu: GpuPolicy,
}

/// The CPU backend: ONNX on tract. One instance serves one graph encoding
/// (wasmtime-wasi-nn keys backends by encoding), so a context gets one for
/// `onnx` and one for `autodetect`; both share the process-wide model cache.
#[derive(Debug, Clone)]
pub struct TractBackend {
    encoding: GraphEncoding,
    options: BackendOptions,
}

impl TractBackend {
    pub fn new(encoding: GraphEncoding, options: BackendOptions) -> Self {
        Self { encoding, options }
    }

    /// Load a model for a target, applying the GPU policy.
    pub fn load_model(&self, bytes: &[u8], target: ExecutionTarget) -> Result<Graph, NnError> {
        check_target(target, self.options)?;
        let model = OnnxModel::load(bytes)?;
        Ok(graph(model))
    }
}

/// Wrap a loaded model as a wasi-nn graph.
pub fn graph(model: Arc<OnnxModel>) -> Graph {
    let graph: Box<dyn BackendGraph> = Box::new(TractGraph { model });
    Graph::from(graph)
}

pub(crate) fn check_target(
    target: ExecutionTarget,
    options: BackendOptions,
) -> Result<(), NnError> {
    match (target, options.gpu) {
        (ExecutionTarget::Cpu, _) => Ok(()),
        (ExecutionTarget::Gpu, GpuPolicy::FallbackToCpu) => {
            tracing::warn!("no GPU backend on this node; running the graph on the CPU as the gpu policy allows");
            Ok(())
        }
        (ExecutionTarget::Gpu, GpuPolicy::Fail) => Err(NnError::TargetUnavailable {
            target: "gpu".into(),
            reason: "this node has no GPU backend; load with target cpu, or run with --nn-gpu-fallback (WEFT_NN_GPU_FALLBACK=cpu) to allow running on the CPU".into(),
        }),
        (ExecutionTarget::Tpu, _) => Err(NnError::TargetUnavailable {
            target: "tpu".into(),
            reason: "no TPU backend exists; use target cpu".into(),
        }),
    }
}

impl BackendInner for TractBackend {
    fn encoding(&self) -> GraphEncoding {
        self.encoding
    }

    fn load(&mut self, builders: &[&[u8]], target: ExecutionTarget) -> Result<Graph, BackendError> {
        match builders {
            [bytes] => Ok(self.load_model(bytes, target)?),
            _ => Err(NnError::BuilderCount {
                count: builders.len(),
            }
            .into()),
        }
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}

struct TractGraph {
    model: Arc<OnnxModel>,
}

impl BackendGraph for TractGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> = Box::new(TractContext::new(self.model.clone()));
        Ok(ExecutionContext::from(ctx))
    }
}

/// Per-context state: the inputs set so far, the last outputs, and a tract
/// state spawned from the shared plan for the current shapes.
pub struct TractContext {
    model: Arc<OnnxModel>,
    inputs: Vec<Option<tract_onnx::prelude::Tensor>>,
    outputs: Vec<TValue>,
    /// tract's run state is `Send` but not `Sync`, and wasi-nn contexts must
    /// be both; the mutex is only ever reached through `get_mut`, so it
    /// costs nothing and never blocks.
    state: Mutex<Option<(Vec<Vec<usize>>, TypedSimpleState)>>,
}

impl TractContext {
    pub fn new(model: Arc<OnnxModel>) -> Self {
        let inputs = vec![None; model.inputs().len()];
        Self {
            model,
            inputs,
            outputs: Vec::new(),
            state: Mutex::new(None),
        }
    }

    fn input_index(&self, id: &Id) -> Result<usize, NnError> {
        match id {
            Id::Index(i) if (*i as usize) < self.inputs.len() => Ok(*i as usize),
            Id::Index(i) => Err(NnError::InputIndex {
                index: *i,
                count: self.inputs.len(),
            }),
            Id::Name(name) => find(self.model.inputs(), name),
        }
    }

    /// Validate and store one input.
    pub fn set(&mut self, id: Id, tensor: &Tensor) -> Result<(), NnError> {
        let index = self.input_index(&id)?;
        let mut t = to_tract(tensor)?;
        // A model input of a type wasi-nn cannot carry (bool, i8, u16...)
        // accepts its widened wire type and is narrowed back here.
        if let Some(expected) = self.model.inputs()[index].datum_type
            && expected != t.datum_type()
            && tensor_type(expected).is_none()
            && wire_type(expected) == Some(t.datum_type())
        {
            t = t
                .cast_to_dt(expected)
                .map_err(|e| NnError::Compute {
                    message: format!("{e:#}"),
                })?
                .into_owned();
        }
        self.model.check_input(index, t.datum_type(), t.shape())?;
        self.inputs[index] = Some(t);
        Ok(())
    }

    /// Run the model on the inputs set so far.
    pub fn run(&mut self) -> Result<(), NnError> {
        let mut values = TVec::with_capacity(self.inputs.len());
        for (index, input) in self.inputs.iter().enumerate() {
            let t = input.as_ref().ok_or_else(|| NnError::MissingInput {
                name: self.model.inputs()[index].name.clone(),
                index,
            })?;
            values.push(t.clone().into_tvalue());
        }
        let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
        let slot = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(s, _)| *s != shapes) {
            let types: Vec<DatumType> = values.iter().map(|v| v.datum_type()).collect();
            let plan: Plan = self.model.plan(&shapes, &types)?;
            let state = plan.spawn().map_err(|e| NnError::Compute {
                message: format!("{e:#}"),
            })?;
            *slot = Some((shapes, state));
        }
        let (_, state) = slot.as_mut().expect("set above");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.run(values)));
        self.outputs = match result {
            Ok(Ok(outputs)) => outputs.into_vec(),
            Ok(Err(e)) => {
                return Err(NnError::Compute {
                    message: format!("{e:#}"),
                });
            }
            Err(_) => {
                // The state may be half-updated after a panic: drop it.
                *slot = None;
                return Err(NnError::Compute {
                    message: "tract panicked while running the model".into(),
                });
            }
        };
        Ok(())
    }

    /// One output of the last run.
    pub fn output(&self, id: &Id) -> Result<Tensor, NnError> {
        if self.outputs.is_empty() {
            return Err(NnError::NotComputed);
        }
        let index = match id {
            Id::Index(i) if (*i as usize) < self.outputs.len() => *i as usize,
            Id::Index(i) => {
                return Err(NnError::OutputIndex {
                    index: *i,
                    count: self.outputs.len(),
                });
            }
            Id::Name(name) => find(self.model.outputs(), name)?,
        };
        from_tract(&self.outputs[index])
    }
}

/// A tensor by name; a name that is a decimal position (`"0"`) is accepted
/// as that position when no tensor has that name, so guests that only know
/// positions (the wasip1 habit) work over the named WIT ABI.
fn find(infos: &[crate::model::TensorInfo], name: &str) -> Result<usize, NnError> {
    infos
        .iter()
        .position(|i| i.name == name)
        .or_else(|| name.parse::<usize>().ok().filter(|&i| i < infos.len()))
        .ok_or_else(|| NnError::TensorName {
            name: name.into(),
            known: infos
                .iter()
                .map(|i| format!("`{}`", i.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl BackendExecutionContext for TractContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        Ok(self.set(id, tensor)?)
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        Ok(self.output(&id)?)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let Some(inputs) = inputs else {
            self.run()?;
            return Ok(None);
        };
        // WIT style: named inputs in, every output out by name.
        for NamedTensor { name, tensor } in inputs {
            self.set(Id::Name(name), &tensor)?;
        }
        self.run()?;
        let outputs = self
            .model
            .outputs()
            .iter()
            .enumerate()
            .map(|(i, info)| {
                Ok(NamedTensor {
                    name: info.name.clone(),
                    tensor: self.output(&Id::Index(i as u32))?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        Ok(Some(outputs))
    }
}
