//! A model compiled for one device and one set of input shapes, and the
//! per-context state that runs it.
//!
//! [`GpuPlan::build`] walks tract's decluttered graph in evaluation order.
//! Each node is lowered to GPU dispatches when a kernel covers it, or kept
//! on the CPU as a one-node optimized tract plan; values crossing between
//! the two get explicit `Upload` / `Download` steps. Constants are uploaded
//! once, into the plan. Intermediate GPU values live in per-context slots
//! that are reused once a value's last reader has run.
//!
//! A run records every GPU step up to the next CPU step into one command
//! buffer; a model that lowers fully is one submission. Outputs stay on the
//! device until [`GpuContext::output`] asks for one.

use crate::device::{Gpu, Reservation};
use crate::error::GpuError;
use crate::kernels::Kernel;
use crate::lower::{self, Bind, Lowered, Spec};
use crate::split;
use crate::weights::{Resident, Weights, device_bytes};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

/// Where a node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// GPU kernels (their names).
    Gpu(Vec<&'static str>),
    /// A view of its input on the GPU (no data moves).
    View,
    /// Folded into the producer's epilogue.
    Fused,
    /// On the CPU (tract), with the reason.
    Cpu(String),
}

/// One node of the placement report.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub name: String,
    pub op: String,
    pub place: Place,
    /// Multiply-accumulates tract counts for this node.
    pub flops: f64,
    /// Parts the node was cut into to fit the binding limit (1: uncut);
    /// `place` then names one part's kernels.
    pub parts: usize,
}

/// Which nodes run where, printed at load time.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub adapter: String,
    pub nodes: Vec<NodeReport>,
    pub uploads: usize,
    pub downloads: usize,
    pub dispatches: usize,
    /// Command-buffer submissions per run (before output reads).
    pub submissions: usize,
    /// Bytes of constants on the device that this plan binds.
    pub weight_bytes: u64,
    /// Of those, bytes an earlier plan of the same model uploaded (and
    /// this one binds without uploading them again).
    pub shared_weight_bytes: u64,
}

impl Report {
    fn flops(&self, gpu: bool) -> f64 {
        self.nodes
            .iter()
            .filter(|n| gpu == !matches!(n.place, Place::Cpu(_)))
            .map(|n| n.flops)
            .fold(0.0, |a, b| a + b)
    }

    /// Fraction of the model's multiply-accumulates that run on the GPU.
    pub fn gpu_flops_fraction(&self) -> f64 {
        let gpu = self.flops(true);
        let total = gpu + self.flops(false);
        if total == 0.0 { 1.0 } else { gpu / total }
    }

    /// Nodes on the CPU, with their reasons.
    pub fn cpu_nodes(&self) -> impl Iterator<Item = &NodeReport> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.place, Place::Cpu(_)))
    }

    /// One line: counts and the FLOP fraction.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Place) -> bool| self.nodes.iter().filter(|n| f(&n.place)).count();
        format!(
            "{} nodes on the GPU ({}), {} views, {} fused, {} on the CPU; {:.1}% of FLOPs on the GPU; {} uploads, {} downloads, {} dispatches in {} submission(s) per run; {:.1} MiB of weights resident{}",
            count(|p| matches!(p, Place::Gpu(_))),
            self.adapter,
            count(|p| matches!(p, Place::View)),
            count(|p| matches!(p, Place::Fused)),
            count(|p| matches!(p, Place::Cpu(_))),
            100.0 * self.gpu_flops_fraction(),
            self.uploads,
            self.downloads,
            self.dispatches,
            self.submissions,
            self.weight_bytes as f64 / (1024.0 * 1024.0),
            if self.shared_weight_bytes > 0 {
                format!(
                    " ({:.1} MiB shared with other shapes' plans)",
                    self.shared_weight_bytes as f64 / (1024.0 * 1024.0)
                )
            } else {
                String::new()
            },
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for n in &self.nodes {
            let place = match &n.place {
                Place::Gpu(k) if n.parts > 1 => {
                    format!("gpu  {} in {} parts (binding limit)", k.join("+"), n.parts)
                }
                Place::Gpu(k) => format!("gpu  {}", k.join("+")),
                Place::View => "view".into(),
                Place::Fused => "fused".into(),
                Place::Cpu(why) => format!("cpu  {why}"),
            };
            writeln!(f, "  {:<40} {:<16} {place}", n.name, n.op)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    Slot(usize),
    Const(usize),
}

struct Value {
    shape: Vec<usize>,
    dt: DatumType,
    bytes: u64,
    gpu: Option<Home>,
    konst: Option<Arc<Tensor>>,
}

enum Binding {
    Value(usize),
    /// Bytes `offset..offset + size` of a value.
    Part(usize, u64, u64),
    Dummy,
}

struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    binds: Vec<Binding>,
    groups: [u32; 3],
}

enum Step {
    Upload(usize),
    Gpu(String, Vec<Dispatch>),
    Download(Vec<usize>),
    Cpu {
        plan: Arc<TypedRunnableModel>,
        inputs: Vec<usize>,
        outputs: Vec<usize>,
    },
}

/// A step before buffers and pipelines exist.
enum Pending {
    Upload(usize),
    Gpu(String, Vec<Spec>, Vec<usize>, usize),
    Download(Vec<usize>),
    Cpu(Step),
}

/// A model lowered for one device and one set of input shapes. Shared by
/// every context that runs those shapes.
pub struct GpuPlan {
    gpu: Arc<Gpu>,
    values: Vec<Value>,
    steps: Vec<Step>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    slot_bytes: Vec<u64>,
    consts: Vec<Arc<Resident>>,
    dummy: wgpu::Buffer,
    report: Report,
}

impl fmt::Debug for GpuPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuPlan")
            .field("gpu", &self.gpu)
            .field("summary", &self.report.summary())
            .finish_non_exhaustive()
    }
}

/// Logical buffer lifetimes before slots are assigned.
struct Logical {
    bytes: u64,
    first: usize,
    last: usize,
    pinned: bool,
}

fn lowering(e: impl fmt::Display) -> GpuError {
    GpuError::Lowering {
        message: e.to_string(),
    }
}

fn flops_of(model: &TypedModel, node: &TypedNode) -> f64 {
    let inputs: Vec<&TypedFact> = node
        .inputs
        .iter()
        .filter_map(|o| model.outlet_fact(*o).ok())
        .collect();
    node.op
        .cost(&inputs)
        .unwrap_or_default()
        .iter()
        .filter(|(c, _)| matches!(c, Cost::FMA(_)))
        .map(|(_, d)| d.to_i64().unwrap_or(0) as f64)
        .sum()
}

/// Whether a node is `Max(x, 0)` with a constant zero: a ReLU.
fn is_relu(model: &TypedModel, node: &TypedNode) -> bool {
    let Some(bin) = node.op.downcast_ref::<TypedBinOp>() else {
        return false;
    };
    bin.0.name() == "Max"
        && node.inputs.len() == 2
        && model
            .outlet_fact(node.inputs[1])
            .ok()
            .and_then(|f| f.konst.clone())
            .is_some_and(|k| k.len() == 1 && k.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0))
}

/// The constant an `Add` node adds to its other input, when it can be a
/// GEMM's bias: of the output's type (f32, or f16 after an f16 GEMM),
/// already known, within the output's shape.
fn bias_of(
    model: &TypedModel,
    ids: &HashMap<OutletId, usize>,
    values: &[Value],
    add: InletId,
) -> Option<(usize, Vec<usize>)> {
    let node = model.node(add.node);
    let bin = node.op.downcast_ref::<TypedBinOp>()?;
    if bin.0.name() != "Add" || node.inputs.len() != 2 {
        return None;
    }
    let other = node.inputs[1 - add.slot];
    let v = *ids.get(&other)?;
    let k = values[v].konst.as_ref()?;
    let out = node.outputs[0].fact.shape.as_concrete()?;
    let produced = model.outlet_fact(node.inputs[add.slot]).ok()?;
    (produced.shape.as_concrete() == Some(out)
        && k.datum_type() == produced.datum_type
        && node.outputs[0].fact.datum_type == produced.datum_type
        && k.rank() <= out.len()
        && k.shape()
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&b, &o)| b == o || b == 1))
    .then(|| (v, k.shape().to_vec()))
}

impl GpuPlan {
    /// Lower a decluttered model whose input shapes are all concrete.
    pub fn build(gpu: Arc<Gpu>, model: &TypedModel) -> Result<GpuPlan, GpuError> {
        Self::build_sharing(gpu, model, &Weights::new())
    }

    /// [`GpuPlan::build`], binding the constants earlier plans of the same
    /// model left in `weights` rather than uploading them again (one
    /// [`Weights`] per model, shared by the plans of all its shapes).
    pub fn build_sharing(
        gpu: Arc<Gpu>,
        model: &TypedModel,
        weights: &Weights,
    ) -> Result<GpuPlan, GpuError> {
        let coop = gpu.cooperative_matrix().ok();
        Self::lower(gpu, model, coop, weights)
    }

    /// [`GpuPlan::build`] with f16 GEMMs on `coop` (a
    /// [`Kernel::CoopGemm`]) when given, checked on this device or not, and
    /// on the tiled f16 kernel with `None` (benchmarks compare the two).
    pub fn build_with(
        gpu: Arc<Gpu>,
        model: &TypedModel,
        coop: Option<Kernel>,
    ) -> Result<GpuPlan, GpuError> {
        Self::lower(gpu, model, coop, &Weights::new())
    }

    /// Lower `model` in passes: [`walk`] places every node (GPU kernels,
    /// a view, fused into its producer, or a CPU step) in evaluation order;
    /// [`assign_slots`] gives activations buffers by liveness;
    /// [`bind_constants`] binds or uploads the weights; [`resolve_homes`]
    /// says where each value lives; [`encode`] makes the dispatches.
    fn lower(
        gpu: Arc<Gpu>,
        model: &TypedModel,
        coop: Option<Kernel>,
        weights: &Weights,
    ) -> Result<GpuPlan, GpuError> {
        let Walk {
            mut values,
            ids,
            logical,
            value_logical,
            pending,
            mut report,
            alias,
            outputs_set,
        } = walk(&gpu, model, coop)?;
        let (slot_bytes, slot_of) = assign_slots(&logical, pending.len());
        let (consts, const_index, dummy) = bind_constants(&gpu, weights, &values, &mut report)?;
        resolve_homes(&mut values, &const_index, &alias, &slot_of, &value_logical);
        let (steps, submissions) = encode(&gpu, pending, &mut report)?;
        report.submissions = submissions;
        let inputs = model
            .input_outlets()
            .map_err(lowering)?
            .iter()
            .map(|o| ids[o])
            .collect();
        let outputs = outputs_set.iter().map(|o| ids[o]).collect();
        Ok(GpuPlan {
            gpu,
            values,
            steps,
            inputs,
            outputs,
            slot_bytes,
            consts,
            dummy,
            report,
        })
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Bytes each context allocates for its intermediate values.
    pub fn context_bytes(&self) -> u64 {
        self.slot_bytes.iter().sum()
    }
}

/// What the walk over the graph leaves for the later passes.
struct Walk {
    values: Vec<Value>,
    ids: HashMap<OutletId, usize>,
    logical: Vec<Logical>,
    value_logical: HashMap<usize, usize>,
    pending: Vec<Pending>,
    report: Report,
    alias: HashMap<usize, usize>,
    outputs_set: Vec<OutletId>,
}

/// The walk's state between nodes.
struct Walker<'a> {
    gpu: &'a Gpu,
    model: &'a TypedModel,
    coop: Option<Kernel>,
    limits: crate::split::Limits,
    max_buffer: u64,
    /// Whether each value is (also) on the CPU.
    on_cpu: Vec<bool>,
    /// Nodes folded into an earlier node's kernel epilogue.
    fused: HashSet<usize>,
    out: Walk,
}

/// One node as the walk sees it.
struct NodeIo {
    id: usize,
    facts: Vec<TypedFact>,
    inputs: Vec<usize>,
    outs: Vec<usize>,
    in_shapes: Vec<Vec<usize>>,
    out_shape: Vec<usize>,
    /// All tensors f16 on a device with `shader-f16`.
    half: bool,
    /// A tensor over the binding limit: the node is cut into parts.
    oversize: bool,
}

/// The first pass: every node in evaluation order, placed on the GPU (its
/// kernels, cut into parts where a tensor is over the binding limit, with a
/// following bias and activation fused), as a view, or on the CPU with the
/// reason; uploads and downloads inserted where a value changes sides, and
/// each GPU value's live range recorded as a logical buffer.
fn walk(gpu: &Arc<Gpu>, model: &TypedModel, coop: Option<Kernel>) -> Result<Walk, GpuError> {
    let order = model.eval_order().map_err(lowering)?;
    let mut w = Walker {
        gpu,
        model,
        coop,
        limits: crate::split::Limits {
            binding: gpu.max_binding(),
            align: gpu.offset_alignment(),
        },
        max_buffer: gpu.max_buffer(),
        on_cpu: Vec::new(),
        fused: HashSet::new(),
        out: Walk {
            values: Vec::new(),
            ids: HashMap::new(),
            logical: Vec::new(),
            value_logical: HashMap::new(),
            pending: Vec::new(),
            report: Report {
                adapter: gpu.adapter_name().to_string(),
                ..Report::default()
            },
            alias: HashMap::new(),
            outputs_set: model.output_outlets().map_err(lowering)?.to_vec(),
        },
    };
    // Every source and constant, used or not (an input the outputs do
    // not depend on is still an input), before the walk: a fused bias can
    // refer to a constant ordered later.
    for node in model.nodes() {
        if node.op_is::<TypedSource>() || node.op_is::<Const>() {
            for (slot, o) in node.outputs.iter().enumerate() {
                let v = w.new_value(&o.fact);
                w.on_cpu[v] = true;
                w.out.ids.insert(OutletId::new(node.id, slot), v);
            }
        }
    }
    for &id in &order {
        let node = model.node(id);
        if !(node.op_is::<TypedSource>() || node.op_is::<Const>()) {
            w.node(node)?;
        }
    }
    Ok(w.out)
}

impl Walker<'_> {
    fn new_value(&mut self, fact: &TypedFact) -> usize {
        let shape = fact
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let bytes = (shape.iter().product::<usize>() * fact.datum_type.size_of()) as u64;
        self.out.values.push(Value {
            shape,
            dt: fact.datum_type,
            bytes,
            gpu: None,
            konst: fact.konst.clone(),
        });
        self.on_cpu.push(false);
        self.out.values.len() - 1
    }

    /// Place one node and record what it needs.
    fn node(&mut self, node: &TypedNode) -> Result<(), GpuError> {
        let id = node.id;
        let facts: Vec<TypedFact> = node.outputs.iter().map(|o| o.fact.clone()).collect();
        let inputs: Vec<usize> = node.inputs.iter().map(|o| self.out.ids[o]).collect();
        let outs: Vec<usize> = facts.iter().map(|f| self.new_value(f)).collect();
        for (slot, &v) in outs.iter().enumerate() {
            self.out.ids.insert(OutletId::new(id, slot), v);
        }
        let values = &self.out.values;
        let io = NodeIo {
            id,
            half: self.gpu.has_f16() && facts.iter().all(|f| f.datum_type == f16::datum_type()),
            oversize: inputs
                .iter()
                .chain(&outs)
                .any(|&v| values[v].bytes > self.limits.binding),
            in_shapes: inputs.iter().map(|&v| values[v].shape.clone()).collect(),
            out_shape: values[outs[0]].shape.clone(),
            facts,
            inputs,
            outs,
        };
        let (lowered, parts, inputs) = self.lower(node, &io)?;
        let flops = flops_of(self.model, node);
        let (name, op) = (node.name.clone(), node.op.name().to_string());
        let place = match lowered {
            Ok(Lowered::View) => self.view(&io),
            Ok(Lowered::Kernels(list)) => self.kernels(node, &io, list, inputs, parts),
            Err(reason) => self.cpu(node, &io, reason)?,
        };
        let parts = if matches!(place, Place::Gpu(_)) {
            parts
        } else {
            1
        };
        self.out.report.nodes.push(NodeReport {
            name,
            op,
            place,
            flops,
            parts,
        });
        Ok(())
    }

    /// The node's lowering (a view, kernels, or why it stays on the CPU),
    /// into how many parts it is cut, and the values its kernels read (a
    /// fused bias is the last).
    #[allow(clippy::type_complexity)]
    fn lower(
        &mut self,
        node: &TypedNode,
        io: &NodeIo,
    ) -> Result<(Result<Lowered, String>, usize, Vec<usize>), GpuError> {
        let in_facts: Vec<&TypedFact> = node
            .inputs
            .iter()
            .map(|o| self.model.outlet_fact(*o))
            .collect::<TractResult<_>>()
            .map_err(lowering)?;
        let values = &self.out.values;
        let eligible = (|| -> Result<(), String> {
            if io.facts.len() != 1 {
                return Err("more than one output".into());
            }
            let wanted = if io.half {
                f16::datum_type()
            } else {
                f32::datum_type()
            };
            for f in in_facts.iter().copied().chain(&io.facts) {
                if f.datum_type != wanted {
                    return Err(format!("{:?} tensors stay on the CPU", f.datum_type));
                }
                if f.shape.as_concrete().is_none() {
                    return Err("symbolic shape".into());
                }
            }
            for &v in io.inputs.iter().chain(&io.outs) {
                if values[v].bytes > self.max_buffer {
                    return Err(format!(
                        "a {} byte tensor exceeds this adapter's {} byte largest buffer",
                        values[v].bytes, self.max_buffer
                    ));
                }
            }
            Ok(())
        })();
        let elem = io.facts[0].datum_type.size_of();
        let mut parts = 1;
        let op = node.op.as_ref();
        let mut lowered = if self.fused.contains(&io.id) {
            Ok(Lowered::View)
        } else {
            eligible.and_then(|()| match lower::lower(op, &io.in_shapes, &io.out_shape) {
                // A view binds nothing, whatever its size.
                Ok(Lowered::View) => Ok(Lowered::View),
                whole if !io.oversize => whole,
                _ => split::split(
                    op,
                    &io.in_shapes,
                    &io.out_shape,
                    elem,
                    self.limits,
                    |i, o| lower::lower(op, i, o),
                )
                .map(|cut| {
                    parts = cut.parts;
                    Lowered::Kernels(cut.specs)
                }),
            })
        };
        // A view of a CPU value stays on the CPU with it.
        if matches!(lowered, Ok(Lowered::View))
            && !self.fused.contains(&io.id)
            && values[io.inputs[0]].gpu.is_none()
        {
            lowered = Err("view of a CPU value".into());
        }
        let mut inputs = io.inputs.clone();
        if let Ok(Lowered::Kernels(_)) = &lowered
            && let Some((fused, fused_parts, bias)) = self.fuse_epilogue(node, io, elem)
        {
            lowered = Ok(fused);
            parts = fused_parts;
            inputs.extend(bias);
        }
        // The kernels' variants: f16 for f16 tensors, then tensor cores
        // for f16 GEMMs where the device passed the check.
        if let Ok(Lowered::Kernels(list)) = &mut lowered {
            for spec in list {
                if io.half {
                    spec.kernel = spec.kernel.in_f16();
                }
                if let Some(coop) = self.coop {
                    crate::coop::upgrade(spec, coop);
                }
            }
        }
        Ok((lowered, parts, inputs))
    }

    /// Fold a following bias (after an EinSum) and activation into the
    /// GEMM/conv epilogue: the fused kernels, their parts, and the bias
    /// value to bind. The folded nodes become views.
    fn fuse_epilogue(
        &mut self,
        node: &TypedNode,
        io: &NodeIo,
        elem: usize,
    ) -> Option<(Lowered, usize, Option<usize>)> {
        let (model, outputs_set) = (self.model, &self.out.outputs_set);
        if outputs_set.contains(&OutletId::new(io.id, 0)) {
            return None;
        }
        let single = |outlet: OutletId| match model.outlet_successors(outlet) {
            [only] if !outputs_set.contains(&outlet) => Some(*only),
            _ => None,
        };
        let mut tail = OutletId::new(io.id, 0);
        let mut chain = Vec::new();
        let mut bias: Option<(usize, Vec<usize>)> = None;
        if node.op_is::<tract_onnx::tract_core::ops::einsum::EinSum>()
            && let Some(next) = single(tail)
            && let Some((v, shape)) = bias_of(model, &self.out.ids, &self.out.values, next)
        {
            bias = Some((v, shape));
            chain.push(next.node);
            tail = OutletId::new(next.node, 0);
        }
        let mut act = lower::Activation::NONE;
        if let Some(next) = single(tail) {
            let n = model.node(next.node);
            let found = lower::activation_of(n.op.as_ref()).or_else(|| {
                (is_relu(model, n) && next.slot == 0).then_some(lower::Activation {
                    op: 1,
                    a: 0.0,
                    b: 0.0,
                })
            });
            if let Some(found) = found
                && n.outputs[0].fact.datum_type == io.facts[0].datum_type
            {
                act = found;
                chain.push(next.node);
            }
        }
        if chain.is_empty() {
            return None;
        }
        let op = node.op.as_ref();
        let fuse = |ins: &[Vec<usize>], out: &[usize]| {
            let (ins, bias) = match bias {
                Some(_) => (&ins[..ins.len() - 1], ins.last().map(|b| b.as_slice())),
                None => (ins, None),
            };
            lower::lower_fused(op, ins, out, bias, act)
                .ok_or_else(|| "no fused lowering".to_string())
        };
        // The fused bias is the last operand (bound as an input).
        let mut ins = io.in_shapes.clone();
        ins.extend(bias.as_ref().map(|(_, s)| s.clone()));
        let (lowered, parts) = if io.oversize {
            split::split(op, &ins, &io.out_shape, elem, self.limits, fuse)
                .ok()
                .map(|cut| (Lowered::Kernels(cut.specs), cut.parts))?
        } else {
            (fuse(&ins, &io.out_shape).ok()?, 1)
        };
        self.fused.extend(chain);
        Some((lowered, parts, bias.map(|(v, _)| v)))
    }

    /// A view: the output is its input's buffer.
    fn view(&mut self, io: &NodeIo) -> Place {
        let w = &mut self.out;
        let (src, out) = (io.inputs[0], io.outs[0]);
        w.values[out].gpu = w.values[src].gpu;
        w.alias.insert(out, src);
        if let Some(&l) = w.value_logical.get(&src) {
            w.value_logical.insert(out, l);
            if w.outputs_set.contains(&OutletId::new(io.id, 0)) {
                w.logical[l].pinned = true;
            }
        }
        if self.fused.contains(&io.id) {
            Place::Fused
        } else {
            Place::View
        }
    }

    /// GPU kernels: upload what the GPU lacks, extend the live ranges of
    /// what they read, and give the output a logical buffer.
    fn kernels(
        &mut self,
        node: &TypedNode,
        io: &NodeIo,
        list: Vec<Spec>,
        inputs: Vec<usize>,
        parts: usize,
    ) -> Place {
        let w = &mut self.out;
        let step_index = w.pending.len();
        let mut uniq = inputs.clone();
        uniq.sort_unstable();
        uniq.dedup();
        let mut uploads = 0;
        for &v in &uniq {
            if w.values[v].gpu.is_some() {
                continue;
            }
            if w.values[v].konst.is_some() {
                w.values[v].gpu = Some(Home::Const(usize::MAX));
            } else {
                w.logical.push(Logical {
                    bytes: w.values[v].bytes,
                    first: step_index + uploads,
                    last: usize::MAX,
                    pinned: true,
                });
                w.value_logical.insert(v, w.logical.len() - 1);
                w.values[v].gpu = Some(Home::Slot(usize::MAX));
                w.pending.push(Pending::Upload(v));
                uploads += 1;
            }
        }
        let gpu_step = w.pending.len();
        for &v in &uniq {
            if let Some(&l) = w.value_logical.get(&v) {
                let lg = &mut w.logical[l];
                if !lg.pinned {
                    lg.last = lg.last.max(gpu_step);
                }
            }
        }
        let out = io.outs[0];
        w.logical.push(Logical {
            bytes: w.values[out].bytes.max(4),
            first: gpu_step,
            last: gpu_step,
            pinned: w.outputs_set.contains(&OutletId::new(io.id, 0)),
        });
        w.value_logical.insert(out, w.logical.len() - 1);
        w.values[out].gpu = Some(Home::Slot(usize::MAX));
        // One part's kernels (every part has the same).
        let kernels: Vec<&'static str> = list
            .iter()
            .take(list.len() / parts)
            .map(|s| s.kernel.name())
            .collect();
        w.pending
            .push(Pending::Gpu(node.name.clone(), list, inputs, out));
        Place::Gpu(kernels)
    }

    /// The CPU: download what it lacks (in one step), then a one-node tract
    /// plan.
    fn cpu(&mut self, node: &TypedNode, io: &NodeIo, reason: String) -> Result<Place, GpuError> {
        let w = &mut self.out;
        let need: Vec<usize> = io
            .inputs
            .iter()
            .copied()
            .filter(|&v| !self.on_cpu[v] && w.values[v].konst.is_none())
            .collect();
        if !need.is_empty() {
            let s = w.pending.len();
            w.pending.push(Pending::Download(need.clone()));
            for &v in &need {
                self.on_cpu[v] = true;
                if let Some(&l) = w.value_logical.get(&v) {
                    let lg = &mut w.logical[l];
                    if !lg.pinned {
                        lg.last = lg.last.max(s);
                    }
                }
            }
        }
        let plan = cpu_plan(self.model, node).map_err(|e| GpuError::Lowering {
            message: format!("node {}: {e:#}", node.name),
        })?;
        let fed: Vec<usize> = io
            .inputs
            .iter()
            .copied()
            .filter(|&v| w.values[v].konst.is_none())
            .collect();
        for &v in &io.outs {
            self.on_cpu[v] = true;
        }
        w.pending.push(Pending::Cpu(Step::Cpu {
            plan,
            inputs: fed,
            outputs: io.outs.clone(),
        }));
        Ok(Place::Cpu(reason))
    }
}

/// Logical buffers to slots: a slot is reused once the last reader of its
/// previous value has run (`steps` steps in all). Slot sizes and each
/// logical buffer's slot.
fn assign_slots(logical: &[Logical], steps: usize) -> (Vec<u64>, Vec<usize>) {
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut slot_of: Vec<usize> = vec![usize::MAX; logical.len()];
    let mut free: Vec<usize> = Vec::new();
    let mut by_first: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut by_last: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, l) in logical.iter().enumerate() {
        by_first.entry(l.first).or_default().push(i);
        if !l.pinned {
            by_last.entry(l.last).or_default().push(i);
        }
    }
    for s in 0..steps {
        for &l in by_first.get(&s).into_iter().flatten() {
            let need = logical[l].bytes;
            let pick = if logical[l].pinned {
                None
            } else {
                free.iter()
                    .enumerate()
                    .filter(|&(_, &slot)| slot_bytes[slot] >= need)
                    .min_by_key(|&(_, &slot)| slot_bytes[slot])
                    .map(|(i, _)| i)
                    .or_else(|| {
                        // Grow the largest free slot rather than add one.
                        free.iter()
                            .enumerate()
                            .max_by_key(|&(_, &slot)| slot_bytes[slot])
                            .map(|(i, _)| i)
                    })
            };
            let slot = match pick {
                Some(i) => {
                    let slot = free.swap_remove(i);
                    slot_bytes[slot] = slot_bytes[slot].max(need);
                    slot
                }
                None => {
                    slot_bytes.push(need);
                    slot_bytes.len() - 1
                }
            };
            slot_of[l] = slot;
        }
        for &l in by_last.get(&s).into_iter().flatten() {
            free.push(slot_of[l]);
        }
    }

    (slot_bytes, slot_of)
}

/// A plan's constants, each constant value's index among them, and the
/// dummy buffer unused bindings take.
type BoundConstants = (Vec<Arc<Resident>>, HashMap<usize, usize>, wgpu::Buffer);

/// Constants to the device, once per model: those an earlier plan of this
/// model's `weights` holds are bound, the rest uploaded within the memory
/// budget (checked for all of them before any upload). The plan's
/// constants, each constant value's index among them, and the dummy buffer
/// unused bindings take.
fn bind_constants(
    gpu: &Arc<Gpu>,
    weights: &Weights,
    values: &[Value],
    report: &mut Report,
) -> Result<BoundConstants, GpuError> {
    let mut consts: Vec<Arc<Resident>> = Vec::new();
    let mut const_index: HashMap<usize, usize> = HashMap::new();
    let dummy;
    {
        use wgpu::util::DeviceExt;
        let mut store = weights.lock(gpu.generation());
        let mut missing: Vec<usize> = Vec::new();
        for (v, value) in values.iter().enumerate() {
            if value.gpu == Some(Home::Const(usize::MAX)) {
                let k = value.konst.as_ref().expect("constant value");
                report.weight_bytes += device_bytes(k);
                match store.find(k) {
                    Some(resident) => {
                        report.shared_weight_bytes += device_bytes(k);
                        consts.push(resident);
                        const_index.insert(v, consts.len() - 1);
                    }
                    None => missing.push(v),
                }
            }
        }
        let new_bytes = missing
            .iter()
            .map(|&v| device_bytes(values[v].konst.as_ref().expect("constant value")))
            .sum();
        let mut memory = Reservation::take(new_bytes)?;
        let device = &gpu.device;
        let built = gpu.scoped(|| {
            for &v in &missing {
                let k = values[v].konst.as_ref().expect("constant value");
                // Two plans of one shape set could share a constant
                // twice over; upload it once.
                if let Some(resident) = store.find(k) {
                    consts.push(resident);
                } else {
                    let bytes = if k.len() == 0 {
                        &[0u8; 4][..]
                    } else {
                        k.as_bytes()
                    };
                    let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("weft weights"),
                        contents: bytes,
                        usage: wgpu::BufferUsages::STORAGE,
                    });
                    let held = memory.split(device_bytes(k));
                    consts.push(store.insert(k.clone(), buffer, held));
                }
                const_index.insert(v, consts.len() - 1);
            }
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("weft dummy"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })?;
        dummy = built;
    }
    Ok((consts, const_index, dummy))
}

/// Where each value lives: a constant's buffer (views of constants share
/// it) or an activation slot.
fn resolve_homes(
    values: &mut [Value],
    const_index: &HashMap<usize, usize>,
    alias: &HashMap<usize, usize>,
    slot_of: &[usize],
    value_logical: &HashMap<usize, usize>,
) {
    for (v, value) in values.iter_mut().enumerate() {
        match value.gpu {
            Some(Home::Const(_)) => {
                // Views of constants share the constant's buffer.
                let mut root = v;
                while !const_index.contains_key(&root) {
                    root = alias[&root];
                }
                value.gpu = Some(Home::Const(const_index[&root]));
            }
            Some(Home::Slot(_)) => value.gpu = Some(Home::Slot(slot_of[value_logical[&v]])),
            None => {}
        }
    }
}

/// The last pass: dispatches with their parameter buffers and pipelines,
/// and the steps a run takes; how many submissions a run makes.
fn encode(
    gpu: &Arc<Gpu>,
    pending: Vec<Pending>,
    report: &mut Report,
) -> Result<(Vec<Step>, usize), GpuError> {
    let mut steps = Vec::with_capacity(pending.len());
    let mut submissions = 0;
    let mut open = false;
    for p in pending {
        match p {
            Pending::Upload(v) => {
                report.uploads += 1;
                steps.push(Step::Upload(v));
            }
            Pending::Gpu(name, list, inputs, out) => {
                let mut dispatches = Vec::new();
                for spec in list {
                    let pipeline = crate::kernels::pipeline(gpu, spec.kernel)?;
                    let params = gpu.scoped(|| {
                        use wgpu::util::DeviceExt;
                        gpu.device
                            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                label: Some(spec.kernel.name()),
                                contents: bytemuck::cast_slice(&spec.params),
                                usage: wgpu::BufferUsages::STORAGE,
                            })
                    })?;
                    let binds = spec
                        .binds
                        .iter()
                        .map(|b| match b {
                            Bind::Input(i) => Binding::Value(inputs[*i]),
                            Bind::Output => Binding::Value(out),
                            Bind::InputPart(i, offset, size) => {
                                Binding::Part(inputs[*i], *offset, *size)
                            }
                            Bind::OutputPart(offset, size) => Binding::Part(out, *offset, *size),
                            Bind::Dummy => Binding::Dummy,
                        })
                        .collect();
                    dispatches.push(Dispatch {
                        pipeline,
                        params,
                        binds,
                        groups: spec.groups,
                    });
                }
                report.dispatches += dispatches.len();
                if !open {
                    submissions += 1;
                    open = true;
                }
                steps.push(Step::Gpu(name, dispatches));
            }
            Pending::Download(values) => {
                report.downloads += values.len();
                open = false;
                steps.push(Step::Download(values));
            }
            Pending::Cpu(step) => steps.push(step),
        }
    }
    Ok((steps, submissions))
}

/// A one-node tract plan for a node that stays on the CPU: constant inputs
/// are baked in (so tract can pack weights), the rest are plan inputs.
fn cpu_plan(model: &TypedModel, node: &TypedNode) -> TractResult<Arc<TypedRunnableModel>> {
    let mut sub = TypedModel::default();
    let mut wires = TVec::new();
    for (i, inlet) in node.inputs.iter().enumerate() {
        let fact = model.outlet_fact(*inlet)?;
        let wire = match &fact.konst {
            Some(k) => sub.add_const(format!("const{i}"), k.clone())?,
            None => sub.add_source(format!("input{i}"), fact.without_value())?,
        };
        wires.push(wire);
    }
    let outs = sub.wire_node(&node.name, node.op.clone(), &wires)?;
    sub.select_output_outlets(&outs)?;
    // Optimizing one node alone can fail (or trip an assertion inside
    // tract); the plain typed node still runs.
    let optimized = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sub.clone().into_optimized()
    }));
    match optimized {
        Ok(Ok(m)) => m.into_runnable(),
        _ => sub.into_runnable(),
    }
}

/// One execution context's device buffers and values.
pub struct GpuContext {
    plan: Arc<GpuPlan>,
    slots: Vec<wgpu::Buffer>,
    groups: Vec<Vec<wgpu::BindGroup>>,
    cpu: Vec<Option<Arc<Tensor>>>,
    /// When profiling, the wall time of each GPU node of the last run.
    profile: Option<Vec<(String, std::time::Duration)>>,
    _memory: Reservation,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Allocate this context's slots and bind groups.
    pub fn new(plan: Arc<GpuPlan>) -> Result<GpuContext, GpuError> {
        let gpu = plan.gpu.clone();
        let memory = Reservation::take(plan.context_bytes())?;
        let slots: Vec<wgpu::Buffer> = gpu.scoped(|| {
            plan.slot_bytes
                .iter()
                .map(|&bytes| {
                    gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("weft activations"),
                        size: bytes.max(4).next_multiple_of(4),
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                })
                .collect()
        })?;
        let groups = gpu.scoped(|| {
            plan.steps
                .iter()
                .map(|step| match step {
                    Step::Gpu(_, dispatches) => dispatches
                        .iter()
                        .map(|d| {
                            let mut entries = vec![wgpu::BindGroupEntry {
                                binding: 0,
                                resource: d.params.as_entire_binding(),
                            }];
                            for (i, b) in d.binds.iter().enumerate() {
                                let resource = match b {
                                    Binding::Dummy => plan.dummy.as_entire_binding(),
                                    Binding::Value(v) | Binding::Part(v, ..) => {
                                        let value = &plan.values[*v];
                                        let buffer = match value.gpu {
                                            Some(Home::Slot(s)) => &slots[s],
                                            Some(Home::Const(c)) => &plan.consts[c].buffer,
                                            None => unreachable!("planned on the GPU"),
                                        };
                                        let (offset, bytes) = match *b {
                                            Binding::Part(_, offset, size) => (offset, size),
                                            _ => (0, value.bytes),
                                        };
                                        // Sizes round up to the 4 bytes a
                                        // binding needs (odd f16 counts).
                                        let size = bytes.max(4).next_multiple_of(4);
                                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                            buffer,
                                            offset,
                                            size: std::num::NonZeroU64::new(
                                                size.min(buffer.size() - offset),
                                            ),
                                        })
                                    }
                                };
                                entries.push(wgpu::BindGroupEntry {
                                    binding: i as u32 + 1,
                                    resource,
                                });
                            }
                            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                                label: None,
                                layout: &d.pipeline.get_bind_group_layout(0),
                                entries: &entries,
                            })
                        })
                        .collect(),
                    _ => Vec::new(),
                })
                .collect()
        })?;
        let cpu = plan.values.iter().map(|v| v.konst.clone()).collect();
        Ok(GpuContext {
            plan,
            slots,
            groups,
            cpu,
            profile: None,
            _memory: memory,
        })
    }

    pub fn plan(&self) -> &Arc<GpuPlan> {
        &self.plan
    }

    /// Time every GPU node separately in later runs (each gets its own
    /// submission, so runs are slower; for finding slow kernels).
    pub fn enable_profiling(&mut self) {
        self.profile = Some(Vec::new());
    }

    /// Per-node wall times of the last profiled run, slowest first.
    pub fn profile(&self) -> Vec<(String, std::time::Duration)> {
        let mut p = self.profile.clone().unwrap_or_default();
        p.sort_by_key(|e| std::cmp::Reverse(e.1));
        p
    }

    fn buffer(&self, v: usize) -> &wgpu::Buffer {
        match self.plan.values[v].gpu {
            Some(Home::Slot(s)) => &self.slots[s],
            Some(Home::Const(c)) => &self.plan.consts[c].buffer,
            None => unreachable!("value not on the GPU"),
        }
    }

    /// Copy values down from the device (recording into `encoder`, which is
    /// submitted with the copies).
    fn download(
        &mut self,
        encoder: Option<wgpu::CommandEncoder>,
        values: &[usize],
    ) -> Result<(), GpuError> {
        let gpu = self.plan.gpu.clone();
        let mut encoder = encoder.unwrap_or_else(|| {
            gpu.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        let mut staging = Vec::new();
        for &v in values {
            let bytes = self.plan.values[v].bytes.max(4).next_multiple_of(4);
            let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("weft readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(self.buffer(v), 0, &buffer, 0, bytes);
            staging.push(buffer);
        }
        gpu.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        for b in &staging {
            let tx = tx.clone();
            b.slice(..)
                .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        }
        gpu.wait(None)?;
        // Map callbacks fire from whichever thread polls the device; keep
        // polling until every one has reported.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut done = 0;
        while done < staging.len() {
            match rx.try_recv() {
                Ok(Ok(())) => done += 1,
                Ok(Err(e)) => {
                    return Err(GpuError::DeviceLost {
                        message: format!("reading a result back failed: {e}"),
                    });
                }
                Err(_) => {
                    if let Some(e) = gpu.lost_error() {
                        return Err(e);
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(GpuError::Timeout {
                            message: "a result read-back never completed".into(),
                        });
                    }
                    let _ = gpu.device.poll(wgpu::PollType::Poll);
                    std::thread::yield_now();
                }
            }
        }
        for (&v, b) in values.iter().zip(&staging) {
            let value = &self.plan.values[v];
            let n: usize = value.shape.iter().product();
            let data = b
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::DeviceLost {
                    message: format!("mapping a result failed: {e}"),
                })?;
            let t = if value.dt == f16::datum_type() {
                let halves: Vec<f16> = data[..n * 2]
                    .chunks_exact(2)
                    .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect();
                Tensor::from_shape(&value.shape, &halves)
            } else {
                Tensor::from_shape(
                    &value.shape,
                    bytemuck::cast_slice::<u8, f32>(&data[..n * 4]),
                )
            }
            .map_err(|e| GpuError::Cpu {
                message: e.to_string(),
            })?;
            drop(data);
            b.unmap();
            self.cpu[v] = Some(Arc::new(t));
        }
        Ok(())
    }

    /// Run the model; outputs stay on the device until asked for.
    pub fn run(&mut self, inputs: Vec<Arc<Tensor>>) -> Result<(), GpuError> {
        let plan = self.plan.clone();
        let gpu = plan.gpu.clone();
        if let Some(e) = gpu.lost_error() {
            return Err(e);
        }
        if inputs.len() != plan.inputs.len() {
            return Err(GpuError::Cpu {
                message: format!(
                    "expected {} inputs, got {}",
                    plan.inputs.len(),
                    inputs.len()
                ),
            });
        }
        for (v, value) in self.cpu.iter_mut().zip(&plan.values) {
            *v = value.konst.clone();
        }
        for (&v, t) in plan.inputs.iter().zip(inputs) {
            self.cpu[v] = Some(t);
        }
        if let Some(p) = &mut self.profile {
            p.clear();
        }
        let result = gpu.scoped(|| -> Result<(), GpuError> {
            let mut encoder: Option<wgpu::CommandEncoder> = None;
            for (i, step) in plan.steps.iter().enumerate() {
                match step {
                    Step::Upload(v) => {
                        let t = self.cpu[*v].as_ref().expect("uploaded value is on the CPU");
                        let bytes = t.as_bytes();
                        if bytes.len().is_multiple_of(4) {
                            gpu.queue.write_buffer(self.buffer(*v), 0, bytes);
                        } else {
                            // Copies are in 4-byte units (an odd number of f16s).
                            let mut padded = bytes.to_vec();
                            padded.resize(bytes.len().next_multiple_of(4), 0);
                            gpu.queue.write_buffer(self.buffer(*v), 0, &padded);
                        }
                    }
                    Step::Gpu(name, dispatches) => {
                        let started = std::time::Instant::now();
                        let enc = encoder.get_or_insert_with(|| {
                            gpu.device
                                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                    label: None,
                                })
                        });
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: None,
                        });
                        for (d, group) in dispatches.iter().zip(&self.groups[i]) {
                            pass.set_pipeline(&d.pipeline);
                            pass.set_bind_group(0, group, &[]);
                            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                        }
                        drop(pass);
                        if let Some(profile) = &mut self.profile {
                            // Profiling: one submission per node, timed.
                            let e = encoder.take().expect("recorded above");
                            gpu.queue.submit([e.finish()]);
                            gpu.wait(None)?;
                            profile.push((name.clone(), started.elapsed()));
                        }
                    }
                    Step::Download(values) => self.download(encoder.take(), values)?,
                    Step::Cpu {
                        plan: cpu,
                        inputs,
                        outputs,
                    } => {
                        let args: TVec<TValue> = inputs
                            .iter()
                            .map(|&v| {
                                TValue::from_const(self.cpu[v].clone().expect("CPU input present"))
                            })
                            .collect();
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            cpu.run(args)
                        }));
                        let outs = match result {
                            Ok(Ok(o)) => o,
                            Ok(Err(e)) => {
                                return Err(GpuError::Cpu {
                                    message: format!("{e:#}"),
                                });
                            }
                            Err(_) => {
                                return Err(GpuError::Cpu {
                                    message: "tract panicked".into(),
                                });
                            }
                        };
                        for (&v, t) in outputs.iter().zip(outs) {
                            self.cpu[v] = Some(t.into_arc_tensor());
                        }
                    }
                }
            }
            if let Some(encoder) = encoder {
                gpu.queue.submit([encoder.finish()]);
            }
            Ok(())
        });
        result.and_then(|r| r)
    }

    /// One output of the last run, read back from the device on first ask.
    pub fn output(&mut self, index: usize) -> Result<Arc<Tensor>, GpuError> {
        let v = self.plan.outputs[index];
        if self.cpu[v].is_none() {
            let gpu = self.plan.gpu.clone();
            gpu.scoped(|| self.download(None, &[v]))??;
        }
        Ok(self.cpu[v].clone().expect("downloaded"))
    }

    /// Number of outputs.
    pub fn output_count(&self) -> usize {
        self.plan.outputs.len()
    }

    /// Wait until the device has finished the last run (benchmarks).
    pub fn finish(&self) -> Result<(), GpuError> {
        self.plan.gpu.wait(None)
    }

    /// Whether output `index` of the last run is still only on the device.
    pub fn output_on_device(&self, index: usize) -> bool {
        self.cpu[self.plan.outputs[index]].is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(bytes: u64, first: usize, last: usize, pinned: bool) -> Logical {
        Logical {
            bytes,
            first,
            last,
            pinned,
        }
    }

    #[test]
    fn slots_are_reused_once_their_last_reader_has_run() {
        // 0: written at step 0, read last at 1; 1: written at 1, read at 2;
        // 2: written at 2 (0's slot is free again by then).
        let logical = [
            buffer(100, 0, 1, false),
            buffer(50, 1, 2, false),
            buffer(80, 2, 3, false),
        ];
        let (slot_bytes, slot_of) = assign_slots(&logical, 4);
        assert_eq!(slot_of, [0, 1, 0]);
        assert_eq!(slot_bytes, [100, 50]);
    }

    #[test]
    fn pinned_buffers_keep_their_slot_and_free_slots_grow_rather_than_multiply() {
        let logical = [
            // A model output: never freed, never shared.
            buffer(10, 0, usize::MAX, true),
            buffer(40, 0, 0, false),
            // Needs more than the free slot holds: that slot grows.
            buffer(64, 1, 1, false),
        ];
        let (slot_bytes, slot_of) = assign_slots(&logical, 2);
        assert_eq!(slot_of, [0, 1, 1]);
        assert_eq!(slot_bytes, [10, 64]);
    }
}
