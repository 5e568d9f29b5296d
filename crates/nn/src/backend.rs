//! The wasi-nn backend traits implemented on tract.

use crate::error::NnError;
use crate::model::{ModelFormat, OnnxModel, Plan};
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

/// Which engine runs ONNX graphs on the CPU. TFLite and TensorFlow graphs,
/// and graphs on the GPU, stay on tract (and weft-gpu) either way; the
/// guest cannot tell the engines apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuEngine {
    /// tract: pure Rust, in every build and on every node.
    #[default]
    Tract,
    /// onnxruntime, loaded at run time (`weft_ort::library` says where it
    /// is looked for); a load fails with that search's error where it is
    /// missing. `threads`: intra-op threads per run, 0 for onnxruntime's
    /// default (one per physical core).
    Onnxruntime { threads: usize },
}

/// Options shared by all graphs a backend loads.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendOptions {
    pub gpu: GpuPolicy,
    pub cpu: CpuEngine,
}

impl BackendOptions {
    /// The onnxruntime threads per run when a model of `format` on `device`
    /// runs on onnxruntime under these options; `None`: tract runs it.
    pub(crate) fn onnxruntime_threads(&self, device: Device, format: ModelFormat) -> Option<usize> {
        match (device, format, self.cpu) {
            (Device::Cpu, ModelFormat::Onnx, CpuEngine::Onnxruntime { threads }) => Some(threads),
            _ => None,
        }
    }
}

/// Where a graph runs once its target is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// tract on this CPU.
    Cpu,
    /// The wgpu executor on the process's GPU, unsupported nodes on tract.
    Gpu,
}

/// An execution target as asked for: wasi-nn's three and WasmEdge's `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cpu,
    Gpu,
    Tpu,
    /// The GPU when a hardware adapter is usable, else the CPU.
    Auto,
}

impl From<ExecutionTarget> for Target {
    fn from(t: ExecutionTarget) -> Target {
        match t {
            ExecutionTarget::Cpu => Target::Cpu,
            ExecutionTarget::Gpu => Target::Gpu,
            ExecutionTarget::Tpu => Target::Tpu,
        }
    }
}

/// Resolve a target to a device by the documented policy:
/// - `cpu` is the CPU;
/// - `gpu` is the GPU when one opens (lavapipe included); without one it
///   fails, or runs on the CPU with a warning under [`GpuPolicy::FallbackToCpu`];
/// - `auto` is the GPU when a hardware adapter (or one chosen explicitly
///   with `--nn-gpu-adapter`) opens, else the CPU, logged either way;
/// - `tpu` fails.
pub fn resolve(target: Target, options: BackendOptions) -> Result<Device, NnError> {
    match target {
        Target::Cpu => Ok(Device::Cpu),
        Target::Tpu => Err(NnError::TargetUnavailable {
            target: "tpu".into(),
            reason: "no TPU backend exists; use target cpu, gpu or auto".into(),
        }),
        Target::Auto => {
            if weft_gpu::usable_for_auto() {
                match weft_gpu::shared() {
                    Ok(gpu) => {
                        tracing::info!(
                            adapter = gpu.adapter_name(),
                            "target auto: running on the GPU"
                        );
                        return Ok(Device::Gpu);
                    }
                    Err(e) => tracing::info!(error = %e, "target auto: running on the CPU"),
                }
            } else {
                tracing::info!("target auto: no hardware GPU adapter; running on the CPU");
            }
            Ok(Device::Cpu)
        }
        Target::Gpu => match (weft_gpu::shared(), options.gpu) {
            (Ok(_), _) => Ok(Device::Gpu),
            (Err(e), GpuPolicy::FallbackToCpu) => {
                tracing::warn!(error = %e, "no usable GPU; running the graph on the CPU as the gpu policy allows");
                Ok(Device::Cpu)
            }
            (Err(e), GpuPolicy::Fail) => Err(NnError::TargetUnavailable {
                target: "gpu".into(),
                reason: format!("{e}; or allow the CPU as a fallback for target gpu"),
            }),
        },
    }
}

/// The CPU backend: ONNX, TensorFlow Lite and TensorFlow on tract (ONNX
/// on onnxruntime instead under [`CpuEngine::Onnxruntime`]). One
/// instance serves one graph encoding (wasmtime-wasi-nn keys backends by
/// encoding), so a context gets one per encoding; all share the
/// process-wide model cache.
#[derive(Debug, Clone)]
pub struct TractBackend {
    encoding: GraphEncoding,
    options: BackendOptions,
}

impl TractBackend {
    pub fn new(encoding: GraphEncoding, options: BackendOptions) -> Self {
        Self { encoding, options }
    }

    /// Load a model for a target, applying the GPU policy and, on the CPU,
    /// the engine choice for ONNX graphs.
    pub fn load_model(&self, bytes: &[u8], target: ExecutionTarget) -> Result<Graph, NnError> {
        let device = resolve(target.into(), self.options)?;
        let format = format_of(self.encoding, bytes)?;
        if let Some(threads) = self.options.onnxruntime_threads(device, format) {
            return Ok(crate::onnxruntime::graph(crate::onnxruntime::load(
                bytes, threads,
            )?));
        }
        let model = OnnxModel::load_as(bytes, format)?;
        if device == Device::Gpu {
            model.prepare_gpu()?;
        }
        Ok(graph_on(model, device))
    }
}

/// The model format an encoding names; `autodetect` looks at the bytes.
pub fn format_of(encoding: GraphEncoding, bytes: &[u8]) -> Result<ModelFormat, NnError> {
    Ok(match encoding {
        GraphEncoding::Onnx => ModelFormat::Onnx,
        GraphEncoding::Tensorflowlite => ModelFormat::TensorFlowLite,
        GraphEncoding::Tensorflow => ModelFormat::TensorFlow,
        GraphEncoding::Autodetect => ModelFormat::detect(bytes),
        other => {
            return Err(NnError::UnsupportedEncoding {
                encoding: format!("{other:?}").to_lowercase(),
            });
        }
    })
}

/// Wrap a loaded model as a wasi-nn graph on the CPU.
pub fn graph(model: Arc<OnnxModel>) -> Graph {
    graph_on(model, Device::Cpu)
}

/// Wrap a loaded model as a wasi-nn graph on a device.
pub fn graph_on(model: Arc<OnnxModel>, device: Device) -> Graph {
    let graph: Box<dyn BackendGraph> = Box::new(TractGraph { model, device });
    Graph::from(graph)
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
    device: Device,
}

impl BackendGraph for TractGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> =
            Box::new(TractContext::on(self.model.clone(), self.device));
        Ok(ExecutionContext::from(ctx))
    }
}

/// Per-context state: the inputs set so far, the last outputs, and a tract
/// state spawned from the shared plan for the current shapes (or, on the
/// GPU, this context's device buffers for the shared GPU plan).
pub struct TractContext {
    model: Arc<OnnxModel>,
    device: Device,
    inputs: Vec<Option<tract_onnx::prelude::Tensor>>,
    outputs: Vec<TValue>,
    /// Whether the last GPU run succeeded (its outputs are on the device
    /// until asked for).
    gpu_ran: bool,
    gpu: Mutex<Option<(Vec<Vec<usize>>, weft_gpu::GpuContext)>>,
    /// tract's run state is `Send` but not `Sync`, and wasi-nn contexts must
    /// be both; the mutex is only ever reached through `get_mut`, so it
    /// costs nothing and never blocks.
    state: Mutex<Option<(crate::model::PlanKey, TypedSimpleState)>>,
}

impl TractContext {
    /// A context on the CPU.
    pub fn new(model: Arc<OnnxModel>) -> Self {
        Self::on(model, Device::Cpu)
    }

    /// A context on a device.
    pub fn on(model: Arc<OnnxModel>, device: Device) -> Self {
        let inputs = vec![None; model.inputs().len()];
        Self {
            model,
            device,
            inputs,
            outputs: Vec::new(),
            gpu_ran: false,
            gpu: Mutex::new(None),
            state: Mutex::new(None),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    fn run_gpu(&mut self, tensors: Vec<Arc<tract_onnx::prelude::Tensor>>) -> Result<(), NnError> {
        self.gpu_ran = false;
        self.outputs.clear();
        let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape().to_vec()).collect();
        let types: Vec<DatumType> = tensors.iter().map(|t| t.datum_type()).collect();
        let slot = self.gpu.get_mut().unwrap_or_else(|e| e.into_inner());
        if slot
            .as_ref()
            .is_none_or(|(s, c)| *s != shapes || c.plan().gpu().is_lost())
        {
            *slot = None;
            let plan = self.model.gpu_plan(&shapes, &types)?;
            *slot = Some((shapes, weft_gpu::GpuContext::new(plan)?));
        }
        let (_, ctx) = slot.as_mut().expect("set above");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.run(tensors)));
        match result {
            Ok(Ok(())) => {
                self.gpu_ran = true;
                Ok(())
            }
            Ok(Err(e)) => {
                // A lost device takes its plans with it: the next run opens
                // the device again and rebuilds.
                if e.device_lost() || ctx.plan().gpu().is_lost() {
                    *slot = None;
                }
                Err(e.into())
            }
            Err(_) => {
                *slot = None;
                Err(NnError::Compute {
                    message: "the GPU executor panicked; the next request starts afresh".into(),
                })
            }
        }
    }

    fn input_index(&self, id: &Id) -> Result<usize, NnError> {
        match id {
            Id::Index(i) if (*i as usize) < self.inputs.len() => Ok(*i as usize),
            Id::Index(i) => Err(NnError::InputIndex {
                index: *i,
                count: self.inputs.len(),
            }),
            Id::Name(name) => find(&names(self.model.inputs()), name),
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
        if let Some(index) = self.inputs.iter().position(Option::is_none) {
            return Err(NnError::MissingInput {
                name: self.model.inputs()[index].name.clone(),
                index,
            });
        }
        if self.device == Device::Gpu {
            let tensors = self
                .inputs
                .iter()
                .flatten()
                .map(|t| Arc::new(t.clone()))
                .collect();
            match self.run_gpu(tensors) {
                // Shapes past the model's GPU plans run on the CPU's
                // shape-generic plan rather than fail.
                Err(NnError::ShapeLimit { .. }) => {
                    tracing::debug!("shape set past the GPU plan limit: running on the CPU");
                }
                // A graph that shapes alone do not determine (integer
                // inputs it needs as constants) is planned per input
                // values, which only the CPU does.
                Err(NnError::Plan { message, .. }) => {
                    tracing::debug!("no GPU plan ({message}): running on the CPU");
                }
                other => return other,
            }
        }
        let values: TVec<TValue> = self
            .inputs
            .iter()
            .flatten()
            .map(|t| t.clone().into_tvalue())
            .collect();
        let key = self.model.plan_key(&values);
        let slot = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(k, _)| *k != key) {
            let (plan, key): (Plan, _) = self.model.plan_for(&values)?;
            let state = plan.spawn().map_err(|e| NnError::Compute {
                message: format!("{e:#}"),
            })?;
            *slot = Some((key, state));
        }
        let (key, state) = slot.as_mut().expect("set above");
        let values = crate::model::unpinned(key, values);
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

    /// One output of the last run (read back from the GPU on first ask).
    pub fn output(&mut self, id: &Id) -> Result<Tensor, NnError> {
        let count = self.model.outputs().len();
        if self.outputs.is_empty() && !self.gpu_ran {
            return Err(NnError::NotComputed);
        }
        let index = match id {
            Id::Index(i) if (*i as usize) < count => *i as usize,
            Id::Index(i) => {
                return Err(NnError::OutputIndex { index: *i, count });
            }
            Id::Name(name) => find(&names(self.model.outputs()), name)?,
        };
        if self.gpu_ran {
            let slot = self.gpu.get_mut().unwrap_or_else(|e| e.into_inner());
            let (_, ctx) = slot.as_mut().ok_or(NnError::NotComputed)?;
            let t = ctx.output(index)?;
            return from_tract(&t);
        }
        from_tract(&self.outputs[index])
    }
}

/// A tensor by name; a name that is a decimal position (`"0"`) is accepted
/// as that position when no tensor has that name, so guests that only know
/// positions (the wasip1 habit) work over the named WIT ABI. Shared by both
/// CPU engines.
pub(crate) fn find(names: &[&str], name: &str) -> Result<usize, NnError> {
    names
        .iter()
        .position(|n| *n == name)
        .or_else(|| name.parse::<usize>().ok().filter(|&i| i < names.len()))
        .ok_or_else(|| NnError::TensorName {
            name: name.into(),
            known: names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The names of a tract model's inputs or outputs, for [`find`].
fn names(infos: &[crate::model::TensorInfo]) -> Vec<&str> {
    infos.iter().map(|i| i.name.as_str()).collect()
}

/// What both CPU engines' execution contexts offer, so the wasi-nn
/// `compute` (the WIT style: named inputs in, every output out by name) is
/// written once.
pub(crate) trait CpuContext {
    fn set(&mut self, id: Id, tensor: &Tensor) -> Result<(), NnError>;
    fn run(&mut self) -> Result<(), NnError>;
    fn output(&mut self, id: &Id) -> Result<Tensor, NnError>;
    fn output_names(&self) -> Vec<String>;
}

/// `BackendExecutionContext::compute` for any [`CpuContext`].
pub(crate) fn compute_named(
    ctx: &mut impl CpuContext,
    inputs: Option<Vec<NamedTensor>>,
) -> Result<Option<Vec<NamedTensor>>, BackendError> {
    let Some(inputs) = inputs else {
        ctx.run()?;
        return Ok(None);
    };
    for NamedTensor { name, tensor } in inputs {
        ctx.set(Id::Name(name), &tensor)?;
    }
    ctx.run()?;
    let outputs = ctx
        .output_names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            Ok(NamedTensor {
                name,
                tensor: ctx.output(&Id::Index(i as u32))?,
            })
        })
        .collect::<Result<Vec<_>, NnError>>()?;
    Ok(Some(outputs))
}

impl CpuContext for TractContext {
    fn set(&mut self, id: Id, tensor: &Tensor) -> Result<(), NnError> {
        TractContext::set(self, id, tensor)
    }
    fn run(&mut self) -> Result<(), NnError> {
        TractContext::run(self)
    }
    fn output(&mut self, id: &Id) -> Result<Tensor, NnError> {
        TractContext::output(self, id)
    }
    fn output_names(&self) -> Vec<String> {
        self.model
            .outputs()
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }
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
        compute_named(self, inputs)
    }
}
