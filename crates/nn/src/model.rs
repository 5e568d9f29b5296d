//! Models on tract: parsing (ONNX, TensorFlow Lite, TensorFlow frozen
//! graphs), interface, and a cache of optimized plans.
//!
//! A model is parsed once per process (keyed by the SHA-256 of its bytes) and
//! shared by every graph handle that loads it. tract plans are compiled per
//! concrete set of input shapes, because a symbolic dimension costs tract up
//! to 8x at run time; each plan is shared (`Arc`) and every execution context
//! spawns its own state from it, so concurrent runs never serialize.

use crate::error::NnError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// A compiled, optimized tract plan for one set of input shapes.
pub type Plan = Arc<TypedRunnableModel>;

/// How many shape-specific plans (distinct input-shape sets) one model
/// compiles, on the CPU and on the GPU each. Each CPU plan holds its own
/// packed weights, so this bounds the model's memory to this many copies
/// (plus one shape-generic plan); plans are never evicted, so a client
/// cycling through shapes cannot make the host rebuild them either. Shapes
/// past the limit run on the shape-generic plan.
pub const MAX_PLANS_PER_MODEL: usize = 16;

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A named dynamic dimension, such as a batch size `N`.
    Symbol(String),
    /// Dynamic and unnamed.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The V2 datatype of a tract type; none for one Weft does not serve.
fn datatype(dt: DatumType) -> Option<weft_abi::DataType> {
    use weft_abi::DataType as D;
    Some(match dt {
        DatumType::Bool => D::Bool,
        DatumType::U8 => D::Uint8,
        DatumType::U16 => D::Uint16,
        DatumType::U32 => D::Uint32,
        DatumType::U64 => D::Uint64,
        DatumType::I8 => D::Int8,
        DatumType::I16 => D::Int16,
        DatumType::I32 => D::Int32,
        DatumType::I64 | DatumType::TDim => D::Int64,
        DatumType::F16 => D::Fp16,
        DatumType::F32 => D::Fp32,
        DatumType::F64 => D::Fp64,
        DatumType::String => D::Bytes,
        _ => return None,
    })
}

/// A model input or output as tract sees it (its own element types, for
/// planning); [`TensorInfo::spec`] and [`OnnxModel::signature`] give the
/// interface type the other crates share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// `None` when the model does not declare it.
    pub datum_type: Option<DatumType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

impl TensorInfo {
    /// The shape as text, `[N,3,?,?]`, or `any` when the rank is unknown.
    pub fn shape_string(&self) -> String {
        self.spec().shape_string()
    }

    /// The interface type other crates share: the V2 datatype (none for a
    /// type Weft does not serve) and the shape with its names.
    pub fn spec(&self) -> weft_abi::TensorSpec {
        weft_abi::TensorSpec {
            name: self.name.clone(),
            datatype: self.datum_type.and_then(datatype),
            shape: self.shape.as_ref().map(|dims| {
                dims.iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => weft_abi::Dim::Fixed(*n as u64),
                        Dim::Symbol(s) => weft_abi::Dim::Named(s.clone()),
                        Dim::Unknown => weft_abi::Dim::any(),
                    })
                    .collect()
            }),
        }
    }

    /// The type as a lower-case name, `f32`, or `any`.
    pub fn type_string(&self) -> String {
        self.datum_type
            .map(|dt| format!("{dt:?}").to_lowercase())
            .unwrap_or_else(|| "any".into())
    }

    /// The shape when every dimension is fixed.
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.shape
            .as_ref()?
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn accepts_shape(&self, shape: &[usize]) -> bool {
        match &self.shape {
            None => true,
            Some(dims) => {
                dims.len() == shape.len()
                    && dims
                        .iter()
                        .zip(shape)
                        .all(|(d, &s)| !matches!(d, Dim::Fixed(n) if *n != s))
            }
        }
    }
}

type PlanCell = Arc<OnceLock<Result<Plan, String>>>;

/// What a CPU plan is specialised to: the input shapes and, for a plan
/// that needed them, the values of small integer inputs.
pub type PlanKey = (Vec<Vec<usize>>, Option<Pins>);

/// The values of a plan's small integer inputs, `None` for the others.
pub type Pins = Vec<Option<Vec<i64>>>;

type PinnedKey = (Vec<Vec<usize>>, Pins);

/// Integer inputs of at most this many elements may be pinned (their
/// values made part of the plan) when the model cannot be planned without
/// them: ONNX graphs that take reduction axes, a target shape or split
/// sizes as inputs, which tract needs as constants.
const MAX_PINNED_ELEMENTS: usize = 16;

/// One input-shape set's GPU plan, built under its own lock (so a build
/// holds up only callers of the same shapes) and replaced when the device
/// it was built on is lost.
type GpuPlanCell = Arc<Mutex<Option<Arc<weft_gpu::GpuPlan>>>>;

/// The serialized model formats tract reads, one per wasi-nn encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// ONNX `ModelProto` (encoding `onnx`).
    Onnx,
    /// A TensorFlow Lite flatbuffer (encoding `tensorflowlite`).
    TensorFlowLite,
    /// A frozen TensorFlow `GraphDef` (encoding `tensorflow`): variables
    /// folded into constants, as `convert_variables_to_constants_v2` writes.
    TensorFlow,
}

impl ModelFormat {
    /// The format of model bytes, for the `autodetect` encoding: a TFLite
    /// flatbuffer carries the identifier `TFL3` at offset 4; a `GraphDef`
    /// starts with its repeated `node` field (field 1, length-delimited,
    /// tag byte 0x0a), which an ONNX `ModelProto` never does (its field 1
    /// is the `ir_version` varint); anything else is read as ONNX.
    pub fn detect(bytes: &[u8]) -> ModelFormat {
        if bytes.get(4..8) == Some(b"TFL3") {
            ModelFormat::TensorFlowLite
        } else if bytes.first() == Some(&0x0a) {
            ModelFormat::TensorFlow
        } else {
            ModelFormat::Onnx
        }
    }

    /// The wasi-nn encoding's name.
    pub fn encoding(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::TensorFlowLite => "tensorflowlite",
            ModelFormat::TensorFlow => "tensorflow",
        }
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelFormat::Onnx => "ONNX",
            ModelFormat::TensorFlowLite => "TensorFlow Lite",
            ModelFormat::TensorFlow => "TensorFlow",
        })
    }
}

/// The parsed graph plans are made from: ONNX and TensorFlow parse to an
/// inference model (types and shapes still open), TFLite to a typed one
/// (its shapes are static).
#[derive(Clone)]
enum Source {
    Inference(InferenceModel),
    Typed(TypedModel),
}

impl Source {
    /// The graph typed for these input shapes and types, decluttered.
    fn typed(&self, shapes: &[Vec<usize>], types: &[DatumType]) -> TractResult<TypedModel> {
        match self {
            Source::Inference(m) => {
                let mut m = m.clone();
                for (ix, (shape, dt)) in shapes.iter().zip(types).enumerate() {
                    m.set_input_fact(ix, InferenceFact::dt_shape(*dt, shape.as_slice()))?;
                }
                m.into_typed()?.into_decluttered()
            }
            // Inputs were checked against the static interface.
            Source::Typed(m) => m.clone().into_decluttered(),
        }
    }
}

/// A parsed model (ONNX, TensorFlow Lite or TensorFlow; the name is
/// historical) with its plan cache.
pub struct OnnxModel {
    digest: String,
    format: ModelFormat,
    source: Source,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    plans: Mutex<PlanCache>,
    /// Plans specialised to small integer input values (see [`PlanKey`]),
    /// at most [`MAX_PLANS_PER_MODEL`].
    pinned: Mutex<HashMap<PinnedKey, PlanCell>>,
    /// Whether any plan of `pinned` was built: until then no run looks
    /// for pins.
    any_pinned: std::sync::atomic::AtomicBool,
    /// GPU plans per input-shape set; a plan of a lost device is rebuilt.
    gpu_plans: Mutex<HashMap<Vec<Vec<usize>>, GpuPlanCell>>,
    /// The constants those plans hold on the device, uploaded once for
    /// all shapes.
    gpu_weights: weft_gpu::Weights,
}

#[derive(Default)]
struct PlanCache {
    cells: HashMap<Vec<Vec<usize>>, PlanCell>,
    /// One plan with the model's dynamic dimensions left symbolic, built
    /// once for every shape set past [`MAX_PLANS_PER_MODEL`].
    generic: PlanCell,
    /// Plans compiled so far (shape-specific and generic).
    builds: usize,
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("digest", &self.digest)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

fn onnx() -> &'static tract_onnx::Onnx {
    static ONNX: OnceLock<tract_onnx::Onnx> = OnceLock::new();
    ONNX.get_or_init(tract_onnx::onnx)
}

fn tflite() -> &'static tract_tflite::Tflite {
    static TFLITE: OnceLock<tract_tflite::Tflite> = OnceLock::new();
    TFLITE.get_or_init(tract_tflite::tflite)
}

fn tensorflow() -> &'static tract_tensorflow::Tensorflow {
    static TF: OnceLock<tract_tensorflow::Tensorflow> = OnceLock::new();
    TF.get_or_init(tract_tensorflow::tensorflow)
}

fn models() -> &'static Mutex<HashMap<String, Weak<OnnxModel>>> {
    static MODELS: OnceLock<Mutex<HashMap<String, Weak<OnnxModel>>>> = OnceLock::new();
    MODELS.get_or_init(Default::default)
}

/// Run tract code that may panic on hostile input; a panic becomes an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(format!(
            "tract panicked while {what}: {}",
            panic_message(panic.as_ref())
        )),
    }
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

/// The hex SHA-256 of model bytes: the key of the process-wide model cache.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl OnnxModel {
    /// Parse ONNX bytes, or return the already-parsed model with the same
    /// digest. Fails with the names of operators tract cannot run.
    pub fn load(bytes: &[u8]) -> Result<Arc<OnnxModel>, NnError> {
        Self::load_as(bytes, ModelFormat::Onnx)
    }

    /// [`OnnxModel::load`] for a model in `format`.
    pub fn load_as(bytes: &[u8], format: ModelFormat) -> Result<Arc<OnnxModel>, NnError> {
        Self::load_hashed(bytes, digest(bytes), format)
    }

    /// [`OnnxModel::load_as`] for bytes whose [`digest`] the caller computed.
    pub(crate) fn load_hashed(
        bytes: &[u8],
        digest: String,
        format: ModelFormat,
    ) -> Result<Arc<OnnxModel>, NnError> {
        if let Some(model) = models()
            .lock()
            .unwrap()
            .get(&digest)
            .and_then(Weak::upgrade)
            .filter(|m| m.format == format)
        {
            tracing::debug!(model.digest = %digest, "model cache hit");
            return Ok(model);
        }
        let parsed = match format {
            ModelFormat::Onnx => Self::parse(bytes, digest.clone()),
            ModelFormat::TensorFlowLite => Self::parse_tflite(bytes, digest.clone()),
            ModelFormat::TensorFlow => Self::parse_tensorflow(bytes, digest.clone()),
        };
        let model = Arc::new(parsed?);
        let mut cache = models().lock().unwrap();
        cache.retain(|_, m| m.strong_count() > 0);
        // Another thread may have parsed the same bytes meanwhile: keep one.
        if let Some(existing) = cache
            .get(&digest)
            .and_then(Weak::upgrade)
            .filter(|m| m.format == format)
        {
            return Ok(existing);
        }
        cache.insert(digest, Arc::downgrade(&model));
        Ok(model)
    }

    fn parse(bytes: &[u8], digest: String) -> Result<OnnxModel, NnError> {
        let bad = |message: String| NnError::BadModel { message };
        let proto = guarded("decoding the model", || {
            onnx().proto_model_for_read(&mut &*bytes)
        })
        .map_err(bad)?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| bad("the file holds no graph".into()))?;
        // Structure tract's parser assumes (and panics without): caught
        // here with the name of what is wrong.
        check_graph(graph, &std::collections::HashSet::new(), 0).map_err(bad)?;
        let mut missing = Vec::new();
        unsupported_ops(graph, &mut missing);
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(NnError::UnsupportedOperators { ops: missing });
        }
        let parsed = guarded("parsing the model", || onnx().parse(&proto, None)).map_err(bad)?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(bad(format!(
                "graph refers to undefined tensors: {}",
                parsed.unresolved_inputs.join(", ")
            )));
        }
        let inference = parsed.model;
        let metadata = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let inputs = inference
            .input_outlets()
            .map_err(|e| bad(format!("{e:#}")))?
            .iter()
            .map(|o| info(&inference, *o))
            .collect();
        // tract leaves output facts open until the model is typed, so fill
        // what it does not know from the graph's declared outputs.
        let outputs = inference
            .output_outlets()
            .map_err(|e| bad(format!("{e:#}")))?
            .iter()
            .map(|o| {
                let mut i = info(&inference, *o);
                if let Some(declared) = graph.output.iter().find(|v| v.name == i.name) {
                    let (dt, shape) = declared_fact(declared);
                    i.datum_type = i.datum_type.or(dt);
                    i.shape = i.shape.or(shape);
                }
                i
            })
            .collect();
        Self::assemble(
            digest,
            ModelFormat::Onnx,
            Source::Inference(inference),
            inputs,
            outputs,
            metadata,
        )
    }

    /// The model around a parsed graph. A model with fully static inputs is
    /// compiled right away, so a model tract cannot type or optimize fails at
    /// load, not at first compute.
    fn assemble(
        digest: String,
        format: ModelFormat,
        source: Source,
        inputs: Vec<TensorInfo>,
        outputs: Vec<TensorInfo>,
        metadata: BTreeMap<String, String>,
    ) -> Result<OnnxModel, NnError> {
        let model = OnnxModel {
            digest,
            format,
            source,
            inputs,
            outputs,
            metadata,
            plans: Mutex::default(),
            pinned: Mutex::default(),
            any_pinned: Default::default(),
            gpu_plans: Mutex::default(),
            gpu_weights: weft_gpu::Weights::new(),
        };
        if let Some((shapes, types)) = model.static_inputs()
            && let Err(e) = model.plan(&shapes, &types)
        {
            // A plan may still come from the values of small integer
            // inputs, which only a compute supplies.
            let pinnable = matches!(model.source, Source::Inference(_))
                && shapes.iter().zip(&types).any(|(shape, dt)| {
                    matches!(dt, DatumType::I64 | DatumType::I32)
                        && shape.iter().product::<usize>() <= MAX_PINNED_ELEMENTS
                });
            if !pinnable {
                return Err(e);
            }
            tracing::debug!("no plan from shapes alone ({e}); planning per input values");
        }
        Ok(model)
    }

    /// A TensorFlow Lite flatbuffer through tract's TFLite front end (with
    /// Weft's patch: DEQUANTIZE, PRELU). Its tensors' shapes are static.
    fn parse_tflite(bytes: &[u8], digest: String) -> Result<OnnxModel, NnError> {
        let bad = |message: String| NnError::BadFormat {
            format: "TensorFlow Lite",
            message,
        };
        let tflite = tflite();
        let proto = guarded("decoding the TFLite flatbuffer", || {
            tflite.proto_model_for_read(&mut &*bytes)
        })
        .map_err(bad)?;
        let missing = crate::formats::tflite_unsupported(&proto, tflite.registry()).map_err(bad)?;
        if !missing.is_empty() {
            return Err(NnError::UnsupportedOperators { ops: missing });
        }
        let typed = guarded("translating the TFLite model", || {
            tflite.model_for_proto_model(&proto)
        })
        .map_err(bad)?;
        // Interface names are the flatbuffer's tensor names (what LiteRT
        // reports), not the names of the tract nodes computing them.
        let (input_names, output_names) = crate::formats::tflite_io_names(&proto);
        let infos = |outlets: &[OutletId], names: Vec<String>| -> Vec<TensorInfo> {
            outlets
                .iter()
                .zip(names.into_iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(o, name)| {
                    let mut info = typed_info(&typed, *o);
                    if let Some(name) = name.filter(|n| !n.is_empty()) {
                        info.name = name;
                    }
                    info
                })
                .collect()
        };
        let inputs = infos(
            typed.input_outlets().map_err(|e| bad(format!("{e:#}")))?,
            input_names,
        );
        let outputs = infos(
            typed.output_outlets().map_err(|e| bad(format!("{e:#}")))?,
            output_names,
        );
        Self::assemble(
            digest,
            ModelFormat::TensorFlowLite,
            Source::Typed(typed),
            inputs,
            outputs,
            BTreeMap::new(),
        )
    }

    /// A frozen TensorFlow `GraphDef` through tract's TensorFlow front end:
    /// `Placeholder` nodes are the inputs, nodes nothing consumes the
    /// outputs.
    fn parse_tensorflow(bytes: &[u8], digest: String) -> Result<OnnxModel, NnError> {
        let bad = |message: String| NnError::BadFormat {
            format: "TensorFlow",
            message,
        };
        let tf = tensorflow();
        let graph = guarded("decoding the GraphDef", || {
            tf.proto_model_for_read(&mut &*bytes)
        })
        .map_err(bad)?;
        let missing = crate::formats::tensorflow_unsupported(&graph, &tf.op_register);
        if !missing.is_empty() {
            return Err(NnError::UnsupportedOperators { ops: missing });
        }
        // Sinks that compute nothing (`NoOp`, which TensorFlow adds for
        // control dependencies) are not outputs.
        let no_ops: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .filter(|n| n.op == "NoOp")
            .map(|n| n.name.as_str())
            .collect();
        let inference = guarded("parsing the TensorFlow graph", || {
            let mut m = tf.model_for_proto_model(&graph)?;
            let outputs: Vec<OutletId> = m
                .output_outlets()?
                .iter()
                .copied()
                .filter(|o| !no_ops.contains(m.node(o.node).name.as_str()))
                .collect();
            m.select_output_outlets(&outputs)?;
            Ok(m)
        })
        .map_err(bad)?;
        let infos = |outlets: &[OutletId]| -> Vec<TensorInfo> {
            outlets.iter().map(|o| info(&inference, *o)).collect()
        };
        let inputs = infos(
            inference
                .input_outlets()
                .map_err(|e| bad(format!("{e:#}")))?,
        );
        let outputs = infos(
            inference
                .output_outlets()
                .map_err(|e| bad(format!("{e:#}")))?,
        );
        Self::assemble(
            digest,
            ModelFormat::TensorFlow,
            Source::Inference(inference),
            inputs,
            outputs,
            BTreeMap::new(),
        )
    }

    fn static_inputs(&self) -> Option<(Vec<Vec<usize>>, Vec<DatumType>)> {
        let shapes = self
            .inputs
            .iter()
            .map(TensorInfo::concrete)
            .collect::<Option<_>>()?;
        let types = self
            .inputs
            .iter()
            .map(|i| i.datum_type)
            .collect::<Option<_>>()?;
        Some((shapes, types))
    }

    /// For a model with static input shapes, lower it for the GPU now, so
    /// the placement report is logged at load and a lowering failure fails
    /// the load. Models with dynamic shapes are lowered per shape at first
    /// compute.
    pub fn prepare_gpu(&self) -> Result<(), NnError> {
        if let Some((shapes, types)) = self.static_inputs() {
            self.gpu_plan(&shapes, &types)?;
        }
        Ok(())
    }

    /// The GPU plan for these concrete input shapes on the process's
    /// device, lowered once per device (weights uploaded once) and shared by
    /// every context. Concurrent callers of the same shapes wait for the one
    /// build; callers of other shapes do not.
    pub fn gpu_plan(
        &self,
        shapes: &[Vec<usize>],
        types: &[DatumType],
    ) -> Result<Arc<weft_gpu::GpuPlan>, NnError> {
        self.gpu_plan_with(shapes, types, weft_gpu::GpuPlan::build_sharing)
    }

    /// [`OnnxModel::gpu_plan`], lowering with `build` (for tests that must
    /// hold a build in progress).
    #[doc(hidden)]
    pub fn gpu_plan_with(
        &self,
        shapes: &[Vec<usize>],
        types: &[DatumType],
        build: impl FnOnce(
            Arc<weft_gpu::Gpu>,
            &TypedModel,
            &weft_gpu::Weights,
        ) -> Result<weft_gpu::GpuPlan, weft_gpu::GpuError>,
    ) -> Result<Arc<weft_gpu::GpuPlan>, NnError> {
        let gpu = weft_gpu::shared()?;
        let generation = gpu.generation();
        let cell = {
            let mut cache = self.gpu_plans.lock().unwrap_or_else(|e| e.into_inner());
            // Plans of a lost device are of no further use (a cell being
            // built is left to its builder).
            cache.retain(|_, cell| match cell.try_lock() {
                Ok(plan) => plan
                    .as_ref()
                    .is_none_or(|p| p.gpu().generation() == generation),
                Err(_) => true,
            });
            if !cache.contains_key(shapes) && cache.len() >= MAX_PLANS_PER_MODEL {
                // No eviction: a client cycling through shapes would make
                // the device rebuild (and re-upload) plans forever.
                return Err(NnError::ShapeLimit {
                    shapes: format!("{shapes:?}"),
                    limit: MAX_PLANS_PER_MODEL,
                    reason: "the device holds no more plans for this model".into(),
                });
            }
            cache.entry(shapes.to_vec()).or_default().clone()
        };
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = slot.as_ref()
            && plan.gpu().generation() == generation
        {
            return Ok(plan.clone());
        }
        let plan_error = |message: String| NnError::Plan {
            shapes: format!("{shapes:?}"),
            message,
        };
        let typed =
            guarded("typing the model", || self.source.typed(shapes, types)).map_err(plan_error)?;
        let started = std::time::Instant::now();
        let plan = catch_unwind(AssertUnwindSafe(|| build(gpu, &typed, &self.gpu_weights)))
            .map_err(|panic| {
                plan_error(format!(
                    "the GPU lowering panicked: {}",
                    panic_message(panic.as_ref())
                ))
            })??;
        let report = plan.report();
        tracing::info!(
            model.digest = %self.digest,
            shapes = ?shapes,
            elapsed = ?started.elapsed(),
            gpu_flops = format!("{:.1}%", 100.0 * report.gpu_flops_fraction()),
            "GPU plan: {}",
            report.summary()
        );
        for node in report.cpu_nodes() {
            if let crate::Place::Cpu(why) = &node.place {
                tracing::info!(node = %node.name, op = %node.op, "on the CPU: {why}");
            }
        }
        tracing::debug!("GPU placement:\n{report}");
        let plan = Arc::new(plan);
        *slot = Some(plan.clone());
        Ok(plan)
    }

    /// `sha256:<hex>` of the model bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The format the model was read as.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// The model's interface.
    pub fn signature(&self) -> weft_abi::Signature {
        weft_abi::Signature {
            inputs: self.inputs.iter().map(TensorInfo::spec).collect(),
            outputs: self.outputs.iter().map(TensorInfo::spec).collect(),
        }
    }

    /// The ONNX `metadata_props` (for PP-OCR, the `character` dictionary).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Number of shape-specific plans currently cached.
    pub fn plan_count(&self) -> usize {
        self.plans.lock().unwrap().cells.len()
    }

    /// Plans compiled since the model was loaded (shape-specific and
    /// generic): at most [`MAX_PLANS_PER_MODEL`] + 1.
    pub fn plan_builds(&self) -> usize {
        self.plans.lock().unwrap().builds
    }

    /// Check a guest-supplied input against the model's declaration.
    pub fn check_input(&self, index: usize, dt: DatumType, shape: &[usize]) -> Result<(), NnError> {
        let info = &self.inputs[index];
        if let Some(expected) = info.datum_type
            && expected != dt
        {
            return Err(NnError::InputType {
                name: info.name.clone(),
                expected: info.type_string(),
                got: format!("{dt:?}").to_lowercase(),
            });
        }
        if !info.accepts_shape(shape) {
            return Err(NnError::InputShape {
                name: info.name.clone(),
                expected: info.shape_string(),
                got: shape.iter().map(|&d| d as u32).collect(),
            });
        }
        Ok(())
    }

    /// The optimized plan for these concrete input shapes and types,
    /// compiling it once; concurrent callers of the same shapes wait for the
    /// one compilation instead of repeating it. Past [`MAX_PLANS_PER_MODEL`]
    /// shape sets, the shape-generic plan (compiled once) runs them.
    pub fn plan(&self, shapes: &[Vec<usize>], types: &[DatumType]) -> Result<Plan, NnError> {
        let (cell, generic) = {
            let mut cache = self.plans.lock().unwrap();
            match cache.cells.get(shapes) {
                Some(cell) => (cell.clone(), false),
                None if cache.cells.len() < MAX_PLANS_PER_MODEL => {
                    let cell = PlanCell::default();
                    cache.cells.insert(shapes.to_vec(), cell.clone());
                    (cell, false)
                }
                None => (cache.generic.clone(), true),
            }
        };
        let result = cell.get_or_init(|| {
            let span =
                tracing::info_span!("plan", model.digest = %self.digest, shapes = ?shapes, generic);
            let _enter = span.enter();
            let started = std::time::Instant::now();
            self.plans.lock().unwrap().builds += 1;
            let plan = if generic {
                tracing::warn!(
                    limit = MAX_PLANS_PER_MODEL,
                    "the model has plans for as many input shapes as it may hold; \
                     further shapes run on its shape-generic plan"
                );
                match &self.source {
                    Source::Inference(inference) => {
                        self.generic_facts(inference, types).and_then(|facts| {
                            guarded("optimizing the model for any shape", || {
                                let mut m = inference.clone();
                                for (ix, fact) in facts.into_iter().enumerate() {
                                    m.set_input_fact(ix, fact)?;
                                }
                                m.into_optimized()?.into_runnable()
                            })
                        })
                    }
                    Source::Typed(m) => guarded("optimizing the model", || {
                        m.clone().into_optimized()?.into_runnable()
                    }),
                }
            } else {
                guarded("optimizing the model", || {
                    self.source
                        .typed(shapes, types)?
                        .into_optimized()?
                        .into_runnable()
                })
            };
            tracing::debug!(elapsed = ?started.elapsed(), ok = plan.is_ok(), "compiled plan");
            plan
        });
        result.clone().map_err(|message| {
            if generic {
                NnError::ShapeLimit {
                    shapes: format!("{shapes:?}"),
                    limit: MAX_PLANS_PER_MODEL,
                    reason: format!("its shape-generic plan cannot be built: {message}"),
                }
            } else {
                NnError::Plan {
                    shapes: format!("{shapes:?}"),
                    message,
                }
            }
        })
    }

    /// The key of the plan [`OnnxModel::plan_for`] gives these inputs, to
    /// tell whether a context's current plan still fits them.
    pub fn plan_key(&self, values: &[TValue]) -> PlanKey {
        let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
        // Almost every model never needs pins: one atomic load, no lock.
        let pinned = (self.any_pinned.load(std::sync::atomic::Ordering::Acquire)
            && self.shape_plan_failed(&shapes))
        .then(|| pins(values));
        (shapes, pinned)
    }

    /// Whether the plan for these shapes was tried and could not be built.
    fn shape_plan_failed(&self, shapes: &[Vec<usize>]) -> bool {
        let cell = self.plans.lock().unwrap().cells.get(shapes).cloned();
        cell.is_some_and(|c| matches!(c.get(), Some(Err(_))))
    }

    /// The CPU plan for these input tensors: the shape plan, or, when the
    /// model cannot be planned from shapes alone (tract needs some integer
    /// inputs as constants), one specialised to the values of its small
    /// integer inputs, built once per distinct set of values (at most
    /// [`MAX_PLANS_PER_MODEL`]).
    pub fn plan_for(&self, values: &[TValue]) -> Result<(Plan, PlanKey), NnError> {
        let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
        let types: Vec<DatumType> = values.iter().map(|v| v.datum_type()).collect();
        let first = self.plan(&shapes, &types);
        let (Err(NnError::Plan { .. }), Source::Inference(inference)) = (&first, &self.source)
        else {
            return first.map(|p| (p, (shapes, None)));
        };
        let pinned = pins(values);
        if pinned.iter().all(Option::is_none) {
            return first.map(|p| (p, (shapes, None)));
        }
        let key = (shapes.clone(), pinned.clone());
        let cell = {
            let mut cache = self.pinned.lock().unwrap();
            if !cache.contains_key(&key) && cache.len() >= MAX_PLANS_PER_MODEL {
                return Err(NnError::ShapeLimit {
                    shapes: format!("{shapes:?}"),
                    limit: MAX_PLANS_PER_MODEL,
                    reason: "its plans for distinct integer input values are used up".into(),
                });
            }
            cache.entry(key).or_default().clone()
        };
        let result = cell.get_or_init(|| {
            guarded("optimizing the model for these input values", || {
                // Pinned inputs become constants of the plan, which then
                // takes only the others (`unpinned` gives them).
                let mut m = inference.clone();
                let outlets = m.input_outlets()?.to_vec();
                let mut kept = Vec::new();
                for (ix, value) in values.iter().enumerate() {
                    let outlet = outlets[ix];
                    if pinned[ix].is_some() {
                        let konst = tract_onnx::tract_core::ops::konst::Const::new(
                            value.clone().into_tensor().into_arc_tensor(),
                        )?;
                        m.node_mut(outlet.node).op = Box::new(konst);
                        m.set_outlet_fact(
                            outlet,
                            InferenceFact::from(value.clone().into_tensor()),
                        )?;
                    } else {
                        m.set_outlet_fact(
                            outlet,
                            InferenceFact::dt_shape(value.datum_type(), value.shape()),
                        )?;
                        kept.push(outlet);
                    }
                }
                m.set_input_outlets(&kept)?;
                m.into_optimized()?.into_runnable()
            })
        });
        match result {
            Ok(plan) => {
                self.any_pinned
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok((plan.clone(), (shapes, Some(pinned))))
            }
            // The shape plan's error says more about what is wrong.
            Err(_) => first.map(|p| (p, (shapes, None))),
        }
    }

    /// Input facts with every dynamic dimension symbolic: the model's own
    /// symbols where it names them, a fresh one per unnamed dimension.
    fn generic_facts(
        &self,
        inference: &InferenceModel,
        types: &[DatumType],
    ) -> Result<Vec<InferenceFact>, String> {
        let symbols = &inference.symbols;
        self.inputs
            .iter()
            .zip(types)
            .enumerate()
            .map(|(ix, (info, dt))| {
                let dims = info
                    .shape
                    .as_ref()
                    .ok_or_else(|| format!("input `{}` does not declare its rank", info.name))?;
                let dims: TVec<TDim> = dims
                    .iter()
                    .enumerate()
                    .map(|(j, d)| match d {
                        Dim::Fixed(n) => TDim::Val(*n as i64),
                        Dim::Symbol(s) => symbols.sym(s).into(),
                        Dim::Unknown => symbols.sym(&format!("weft_in{ix}_d{j}")).into(),
                    })
                    .collect();
                Ok(InferenceFact::dt_shape(*dt, dims))
            })
            .collect()
    }
}

/// The inputs a plan of this key takes: all, or those not pinned.
pub fn unpinned(key: &PlanKey, values: TVec<TValue>) -> TVec<TValue> {
    match &key.1 {
        None => values,
        Some(pins) => values
            .into_iter()
            .zip(pins)
            .filter(|(_, p)| p.is_none())
            .map(|(v, _)| v)
            .collect(),
    }
}

/// The values of the small integer inputs (`None` for the others).
fn pins(values: &[TValue]) -> Pins {
    values
        .iter()
        .map(|v| {
            if !matches!(v.datum_type(), DatumType::I64 | DatumType::I32)
                || v.len() > MAX_PINNED_ELEMENTS
            {
                return None;
            }
            let t = v.cast_to_dt(DatumType::I64).ok()?;
            Some(
                t.to_plain_array_view::<i64>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            )
        })
        .collect()
}

fn info(model: &InferenceModel, outlet: OutletId) -> TensorInfo {
    let name = model
        .outlet_label(outlet)
        .map(str::to_owned)
        .unwrap_or_else(|| model.node(outlet.node).name.clone());
    let fact = model.outlet_fact(outlet).ok();
    let datum_type = fact.and_then(|f| f.datum_type.concretize());
    let shape = fact.filter(|f| !f.shape.is_open()).map(|f| {
        f.shape
            .dims()
            .map(|d| match d.concretize() {
                Some(TDim::Val(n)) if n >= 0 => Dim::Fixed(n as usize),
                Some(TDim::Sym(s)) => Dim::Symbol(s.to_string()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    TensorInfo {
        name,
        datum_type,
        shape,
    }
}

/// A typed model's input or output (TFLite: every dimension known).
fn typed_info(model: &TypedModel, outlet: OutletId) -> TensorInfo {
    let name = model
        .outlet_label(outlet)
        .map(str::to_owned)
        .unwrap_or_else(|| model.node(outlet.node).name.clone());
    let fact = model.outlet_fact(outlet).ok();
    TensorInfo {
        name,
        datum_type: fact.map(|f| f.datum_type.unquantized()),
        shape: fact.map(|f| {
            f.shape
                .iter()
                .map(|d| match d.to_i64() {
                    Ok(n) if n >= 0 => Dim::Fixed(n as usize),
                    _ => Dim::Unknown,
                })
                .collect()
        }),
    }
}

/// Type and shape as a graph input/output declares them.
fn declared_fact(v: &pb::ValueInfoProto) -> (Option<DatumType>, Option<Vec<Dim>>) {
    let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return (None, None);
    };
    let dt = match t.elem_type {
        1 => Some(DatumType::F32),
        2 => Some(DatumType::U8),
        3 => Some(DatumType::I8),
        4 => Some(DatumType::U16),
        5 => Some(DatumType::I16),
        6 => Some(DatumType::I32),
        7 => Some(DatumType::I64),
        8 => Some(DatumType::String),
        9 => Some(DatumType::Bool),
        10 => Some(DatumType::F16),
        11 => Some(DatumType::F64),
        12 => Some(DatumType::U32),
        13 => Some(DatumType::U64),
        _ => None,
    };
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => {
                    Dim::Fixed(*n as usize)
                }
                Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                    Dim::Symbol(p.clone())
                }
                _ => Dim::Unknown,
            })
            .collect()
    });
    (dt, shape)
}

/// Deepest nesting of subgraphs (`If`/`Loop`/`Scan` bodies) accepted.
const MAX_SUBGRAPH_DEPTH: usize = 32;

/// Check what tract's parser takes for granted: every graph output is
/// produced in its graph (by an input, an initializer or a node) or, for a
/// subgraph, visible from an outer one; subgraphs nest a bounded depth.
fn check_graph(
    graph: &pb::GraphProto,
    outer: &std::collections::HashSet<&str>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_SUBGRAPH_DEPTH {
        return Err(format!(
            "subgraphs nest deeper than {MAX_SUBGRAPH_DEPTH} levels"
        ));
    }
    let mut names: std::collections::HashSet<&str> = outer.clone();
    names.extend(graph.input.iter().map(|v| v.name.as_str()));
    names.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for node in &graph.node {
        names.extend(node.output.iter().map(String::as_str));
    }
    for t in &graph.initializer {
        check_tensor(t)?;
    }
    for node in &graph.node {
        for attr in &node.attribute {
            for t in attr.t.iter().chain(&attr.tensors) {
                check_tensor(t)?;
            }
        }
    }
    for out in &graph.output {
        if !names.contains(out.name.as_str()) {
            return Err(format!(
                "graph `{}` declares output `{}`, which nothing in it produces",
                graph.name, out.name
            ));
        }
    }
    for node in &graph.node {
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                check_graph(g, &names, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Bytes per element of the ONNX data types tract can read from
/// `raw_data` (`TensorProto.DataType` numbers).
fn raw_element_size(data_type: i32) -> Option<usize> {
    Some(match data_type {
        2 | 3 | 9 => 1,   // u8, i8, bool
        4 | 5 | 10 => 2,  // u16, i16, f16
        1 | 6 | 12 => 4,  // f32, i32, u32
        7 | 11 | 13 => 8, // i64, f64, u64
        _ => return None,
    })
}

/// A constant tensor's claimed shape against the data it carries: bounded
/// like every shape, and raw data of a type tract can read, of exactly the
/// size the shape says.
fn check_tensor(t: &pb::TensorProto) -> Result<(), String> {
    let dims: Vec<u64> = t
        .dims
        .iter()
        .map(|&d| u64::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("tensor `{}` has a negative dimension", t.name))?;
    let count = weft_abi::check_shape(&dims).map_err(|e| format!("tensor `{}`: {e}", t.name))?;
    if t.raw_data.is_empty() {
        return Ok(());
    }
    let size = raw_element_size(t.data_type).ok_or_else(|| {
        format!(
            "tensor `{}` stores data type {} as raw bytes, which the CPU backend cannot read",
            t.name, t.data_type
        )
    })?;
    let want = count.checked_mul(size as u64);
    if want != Some(t.raw_data.len() as u64) {
        return Err(format!(
            "tensor `{}` of shape {dims:?} needs {} bytes of raw data, has {}",
            t.name,
            want.map_or_else(|| "too many".into(), |w| w.to_string()),
            t.raw_data.len()
        ));
    }
    Ok(())
}

/// Collect the op types in `graph` (and its subgraphs) that tract lacks.
fn unsupported_ops(graph: &pb::GraphProto, out: &mut Vec<String>) {
    let registry = &onnx().op_register.0;
    for node in &graph.node {
        if !registry.contains_key(&node.op_type) {
            out.push(if node.domain.is_empty() || node.domain == "ai.onnx" {
                node.op_type.clone()
            } else {
                format!("{}.{}", node.domain, node.op_type)
            });
        }
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                unsupported_ops(g, out);
            }
        }
    }
}
