//! Splitting a node whose tensors exceed the device's binding limit.
//!
//! A kernel binds each tensor as one storage-buffer range, and adapters cap
//! that range (`max_storage_buffer_binding_size`: 128 MiB on many mobile
//! GPUs, 4 GiB on desktop ones) below the largest buffer they can allocate.
//! A node over the cap is cut along its output's outermost axis of extent
//! above one into parts whose slices fit: each part is the same node lowered
//! again for the part's shapes, binding byte ranges of the sliced tensors
//! (offsets aligned as the adapter requires) and the rest whole.
//!
//! Only operators whose output slices along that axis depend on the same
//! slices of their inputs are cut (element-wise and broadcast ops, GEMMs
//! along a batch or `m` axis, convolutions along the batch or output
//! channels, reductions and softmax over other axes, copies that keep the
//! axis).
//!
//! A node that lowers to one GEMM and cannot be cut that way (weights over
//! the limit, a batch-1 convolution with a large input) is cut as a GEMM
//! instead: along any of m, n and k, each part binding the strided window
//! of every operand it touches, and the parts of a cut along k adding into
//! the output. A convolution's gathered input is cut by whole channels and
//! by the input rows under a range of output rows (their halo included)
//! (`gemm`). Poolings and depthwise convolutions are cut by channel and
//! output rows the same way, transposed convolutions by output channels,
//! output rows and input channels (`spatial`), reductions along the
//! reduced axis (`reduce`). Everything else is refused with the reason, and
//! stays on the CPU.
//!
//! Pure: no device. The planner supplies the limits and the lowering.

mod gemm;
mod reduce;
mod spatial;

use crate::kernels::Kernel;
use crate::lower::{Bind, Lowered, Spec};
use gemm::{cut_gemm, gemm};
use reduce::cut_reduce;
use spatial::{cut_deconv, cut_planes};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{MultiBroadcastTo, Pad, Slice, TypedConcat};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, MaxPool, PoolSpec, SumPool};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::resize::NearestUpsample;
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, RmsNorm, Softmax};

/// Most parts one node is cut into: beyond this the node is refused (its
/// per-part parameter buffers and bind groups would outweigh the work).
pub(crate) const MAX_PARTS: usize = 4096;

/// The device limits a split respects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest binding, in bytes.
    pub binding: u64,
    /// Alignment of a binding's offset, in bytes.
    pub align: u64,
}

/// A node cut into parts: every part's dispatches, in order (each part
/// has as many).
#[derive(Debug)]
pub(crate) struct Split {
    pub specs: Vec<Spec>,
    pub parts: usize,
}

/// The broadcast rule: an input right-aligned with the output follows its
/// axis `axis` when it has that axis at full extent; with extent one or
/// without it, it is bound whole.
fn broadcast(shape: &[usize], out: &[usize], axis: usize) -> Option<usize> {
    let lead = out.len().checked_sub(shape.len())?;
    let own = axis.checked_sub(lead)?;
    (shape[own] == out[axis] && out[axis] > 1).then_some(own)
}

fn batched(format: DataFormat) -> Option<bool> {
    match format {
        DataFormat::NCHW => Some(true),
        DataFormat::CHW => Some(false),
        _ => None,
    }
}

/// Pooling works per channel: the batch and channel axes (in NCHW or CHW)
/// can be cut.
fn pool_axes(spec: &PoolSpec, axis: usize) -> Result<Vec<Option<usize>>, String> {
    let channels = match batched(spec.data_format) {
        Some(true) => 2,
        Some(false) => 1,
        None => return Err(format!("data format {:?}", spec.data_format)),
    };
    if axis < channels {
        Ok(vec![Some(axis)])
    } else {
        Err("a pooling cannot be cut along a spatial axis".into())
    }
}

/// Which axis of each input follows output axis `axis` (`None`: the input
/// is bound whole in every part), or why `op` cannot be cut along it.
///
/// `ins` may hold one more shape than the op has inputs: a bias fused into
/// a GEMM, which broadcasts to the output.
pub(crate) fn follow(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    axis: usize,
) -> Result<Vec<Option<usize>>, String> {
    let same = || Ok(vec![Some(axis); ins.len()]);
    let kept = |cut: bool| {
        if cut {
            Err(format!("{} works along axis {axis}", op.name()))
        } else {
            same()
        }
    };
    if op.is::<ElementWiseOp>() {
        return same();
    }
    if op.is::<TypedBinOp>() || op.is::<MultiBroadcastTo>() {
        return Ok(ins.iter().map(|s| broadcast(s, out, axis)).collect());
    }
    if let Some(op) = op.downcast_ref::<AxisOp>() {
        if let AxisOp::Move(from, to) = op {
            // Output axis `axis` is input axis `perm[axis]`.
            let mut perm: Vec<usize> = (0..ins[0].len()).collect();
            let moved = perm.remove(*from);
            perm.insert(*to, moved);
            return Ok(vec![Some(perm[axis])]);
        }
        return same();
    }
    if let Some(op) = op.downcast_ref::<Slice>() {
        return kept(op.axis == axis);
    }
    if let Some(op) = op.downcast_ref::<TypedConcat>() {
        return kept(op.axis == axis);
    }
    if let Some(op) = op.downcast_ref::<NearestUpsample>() {
        return kept(op.scales.get(axis) != Some(&1));
    }
    if let Some(op) = op.downcast_ref::<Pad>() {
        return kept(op.pads.get(axis) != Some(&(0, 0)));
    }
    if let Some(op) = op.downcast_ref::<Reduce>() {
        return kept(op.axes.contains(&axis));
    }
    if let Some(op) = op.downcast_ref::<Softmax>() {
        return kept(op.axes.contains(&axis));
    }
    if let Some(op) = op.downcast_ref::<RmsNorm>() {
        return kept(op.axis == axis);
    }
    if let Some(op) = op.downcast_ref::<MaxPool>() {
        return pool_axes(&op.pool_spec, axis);
    }
    if let Some(op) = op.downcast_ref::<SumPool>() {
        return pool_axes(&op.pool_spec, axis);
    }
    if let Some(op) = op.downcast_ref::<Conv>() {
        return conv_axes(&op.pool_spec, op.group, ins, out, axis, "a convolution");
    }
    if let Some(op) = op.downcast_ref::<Deconv>() {
        return conv_axes(
            &op.pool_spec,
            op.group,
            ins,
            out,
            axis,
            "a transposed convolution",
        );
    }
    if let Some(op) = op.downcast_ref::<EinSum>() {
        let letter = op
            .axes
            .iter_all_axes()
            .find(|a| a.outputs.first().is_some_and(|p| p.contains(&axis)))
            .ok_or_else(|| format!("EinSum output axis {axis} has no mapping"))?;
        let operands = letter.inputs.len();
        return ins
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                if i >= operands {
                    return Ok(broadcast(shape, out, axis));
                }
                match letter.inputs[i].as_slice() {
                    [] => Ok(None),
                    [p] if shape[*p] == out[axis] => Ok(Some(*p)),
                    [_] => Ok(None),
                    _ => Err("an axis repeated within one operand".to_string()),
                }
            })
            .collect();
    }
    Err(format!("{} cannot be cut into parts", op.name()))
}

/// A (transposed) convolution, `what`, cut along its batch (the input's
/// batch with it) or its output channels ([`channel_axes`]).
fn conv_axes(
    spec: &PoolSpec,
    group: usize,
    ins: &[Vec<usize>],
    out: &[usize],
    axis: usize,
    what: &str,
) -> Result<Vec<Option<usize>>, String> {
    let batch = batched(spec.data_format) == Some(true);
    if batch && axis == 0 {
        return Ok(vec![Some(0), None, None]);
    }
    if axis == usize::from(batch) {
        return channel_axes(group, ins, out, axis);
    }
    Err(format!(
        "{what} is cut only along its batch or output channels, not axis {axis}"
    ))
}

/// A (transposed) convolution cut along its output channels `axis`: rows
/// of the kernel (OIHW) and of a per-channel bias, against the whole input;
/// in `group` groups with as many input as output channels each
/// (depthwise), whole groups with their own input channels.
fn channel_axes(
    group: usize,
    ins: &[Vec<usize>],
    out: &[usize],
    axis: usize,
) -> Result<Vec<Option<usize>>, String> {
    let bias = match ins[2].iter().product::<usize>() {
        0 | 1 => None,
        n if n == out[axis] && ins[2].len() == 1 => Some(0),
        _ => return Err("a convolution bias of another shape".into()),
    };
    if group == 1 {
        Ok(vec![None, Some(0), bias])
    } else if ins[0][axis] == out[axis] {
        Ok(vec![Some(axis), Some(0), bias])
    } else {
        Err(format!(
            "a convolution in {group} groups with other than as many input as output channels each"
        ))
    }
}

/// The indices along output axis `axis` that must stay in one part: the
/// output channels of one group of a grouped (transposed) convolution.
fn granule(op: &dyn TypedOp, out: &[usize], axis: usize) -> usize {
    let group = op
        .downcast_ref::<Conv>()
        .map(|c| c.group)
        .or_else(|| op.downcast_ref::<Deconv>().map(|d| d.group))
        .unwrap_or(1);
    if group > 1 && out[axis].is_multiple_of(group) {
        out[axis] / group
    } else {
        1
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// Bind operand `slot` of `part` (a dispatch of a kernel with base
/// parameters) to elements `first..=last` of its tensor, of `elem` bytes:
/// from the aligned offset before `first`, the kernel's base parameter
/// for the slot saying where `first` is inside the binding.
fn bind_window(
    part: &mut Spec,
    slot: usize,
    (first, last): (u64, u64),
    elem: u64,
    limits: Limits,
) -> Result<(), String> {
    let align = limits.align.max(4);
    let word =
        (part.kernel.base(slot)).ok_or_else(|| format!("{:?} takes no base", part.kernel))?;
    let offset = first * elem / align * align;
    part.params[word] = u32::try_from(first - offset / elem)
        .map_err(|_| format!("element {first} is past the kernels' 32-bit indexing"))?;
    let size = (last + 1) * elem - offset;
    if size > limits.binding {
        return Err(format!("a part would bind {size} bytes of one operand"));
    }
    part.binds[slot] = match part.binds[slot] {
        Bind::Input(i) => Bind::InputPart(i, offset, size),
        Bind::Output => Bind::OutputPart(offset, size),
        other => return Err(format!("an operand bound as {other:?}")),
    };
    Ok(())
}

/// Cut a node with inputs `ins` and output `out` (elements of `elem`
/// bytes) into parts within `limits`, each lowered by `lower`.
///
/// Along the output's outermost axis first; a node that lowers to one
/// GEMM and cannot be cut that way is cut as a GEMM ([`cut_gemm`]).
pub(crate) fn split(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    elem: usize,
    limits: Limits,
    lower: impl Fn(&[Vec<usize>], &[usize]) -> Result<Lowered, String>,
) -> Result<Split, String> {
    split_with(op, ins, out, elem, limits, &lower)
}

/// How a node is lowered for the shapes of a part.
type Lower<'a> = &'a dyn Fn(&[Vec<usize>], &[usize]) -> Result<Lowered, String>;

fn split_with(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    elem: usize,
    limits: Limits,
    lower: Lower<'_>,
) -> Result<Split, String> {
    let outer = outermost(op, ins, out, elem, limits, lower);
    let Err(why) = outer else {
        return outer;
    };
    let why = match lower(ins, out) {
        Ok(Lowered::Kernels(list)) if list.len() == 1 && gemm(&list[0]).is_some() => {
            match cut_gemm(&list[0], elem, limits) {
                Ok(cut) => return Ok(cut),
                Err(g) => format!("{why}; {g}"),
            }
        }
        Ok(Lowered::Kernels(list))
            if list.len() == 1
                && matches!(list[0].kernel, Kernel::Conv { .. } | Kernel::Pool { .. }) =>
        {
            match cut_planes(&list[0], elem, limits) {
                Ok(cut) => return Ok(cut),
                Err(g) => format!("{why}; along its rows, {g}"),
            }
        }
        Ok(Lowered::Kernels(list))
            if list.len() == 1 && matches!(list[0].kernel, Kernel::Deconv { .. }) =>
        {
            match cut_deconv(&list[0], elem, limits) {
                Ok(cut) => return Ok(cut),
                Err(g) => format!("{why}; {g}"),
            }
        }
        Ok(Lowered::Kernels(list))
            if list.len() == 1 && matches!(list[0].kernel, Kernel::Reduce { .. }) =>
        {
            match cut_reduce(&list[0], elem, limits) {
                Ok(cut) => return Ok(cut),
                Err(g) => format!("{why}; {g}"),
            }
        }
        Ok(Lowered::Kernels(list)) if let Some(concat) = op.downcast_ref::<TypedConcat>() => {
            match concat_parts(concat.axis, out, list, elem, limits) {
                Ok(cut) => return Ok(cut),
                Err(g) => format!("{why}; {g}"),
            }
        }
        _ => why,
    };
    let why = match per_index(op, ins, out, elem, limits, lower) {
        Ok(cut) => return Ok(cut),
        Err(Refusal::Inapplicable) => why,
        Err(Refusal::Because(e)) => format!("{why}; one index at a time, {e}"),
    };
    Err(format!(
        "{why}: over this adapter's {} byte binding limit, and it cannot be cut into parts that fit",
        limits.binding
    ))
}

/// Why [`per_index`] made no cut.
enum Refusal {
    /// It does not apply (nothing of extent above one after the outermost
    /// axis, or the op cannot be cut along that axis at all): the other
    /// cuts' reasons say it.
    Inapplicable,
    Because(String),
}

/// A node one index of whose outermost axis is already over the limit
/// (a batch of images, each too large for one binding) cut into one part
/// per index, each split as a node of its own ([`split_with`]: along its
/// next axis, as a GEMM, spatially...) and moved to its index: the
/// windows of the output and of the inputs that follow the axis shift by
/// a slice each, an input bound whole in the part binds its slice.
fn per_index(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    elem: usize,
    limits: Limits,
    lower: Lower<'_>,
) -> Result<Split, Refusal> {
    use Refusal::{Because, Inapplicable};
    let axis = out.iter().position(|&d| d > 1).ok_or(Inapplicable)?;
    if out[axis + 1..].iter().all(|&d| d == 1) {
        return Err(Inapplicable);
    }
    let follows = follow(op, ins, out, axis).map_err(|_| Inapplicable)?;
    let bytes = |dims: &[usize]| (dims.iter().product::<usize>() * elem) as u64;
    let mut sub_ins = ins.to_vec();
    let mut in_rows: Vec<Option<u64>> = Vec::with_capacity(ins.len());
    for (shape, f) in sub_ins.iter_mut().zip(&follows) {
        match *f {
            Some(a) if shape[..a].iter().all(|&d| d == 1) && shape[a] == out[axis] => {
                in_rows.push(Some(bytes(&shape[a + 1..])));
                shape[a] = 1;
            }
            Some(_) => {
                return Err(Because(format!(
                    "a {shape:?} input is not contiguous along axis {axis}"
                )));
            }
            None => in_rows.push(None),
        }
    }
    let mut sub_out = out.to_vec();
    sub_out[axis] = 1;
    let out_row = bytes(&out[axis + 1..]);
    // A part that fits is the node lowered for one index; one that does not
    // is cut further.
    let fits = (sub_ins.iter().map(Vec::as_slice))
        .chain([sub_out.as_slice()])
        .all(|s| bytes(s) <= limits.binding);
    let sub = match lower(&sub_ins, &sub_out) {
        Ok(Lowered::Kernels(specs)) if fits => Split { specs, parts: 1 },
        _ => split_with(op, &sub_ins, &sub_out, elem, limits, lower).map_err(Because)?,
    };
    let extent = out[axis];
    if extent * sub.parts > MAX_PARTS {
        return Err(Because(format!(
            "more than {MAX_PARTS} parts ({extent} along axis {axis}, {} each)",
            sub.parts
        )));
    }
    let align = limits.align.max(4);
    let elem = elem as u64;
    let mut specs = Vec::with_capacity(extent * sub.specs.len());
    for i in 0..extent as u64 {
        for part in &sub.specs {
            let mut spec = part.clone();
            for slot in 0..spec.binds.len() {
                // (the whole tensor's bind, the part's window, its shift)
                let (offset, size, row) = match spec.binds[slot] {
                    Bind::Input(k) => match in_rows[k] {
                        Some(row) => (0, row, row),
                        None => continue,
                    },
                    Bind::InputPart(k, offset, size) => match in_rows[k] {
                        Some(row) => (offset, size, row),
                        None => continue,
                    },
                    Bind::Output => (0, out_row, out_row),
                    Bind::OutputPart(offset, size) => (offset, size, out_row),
                    Bind::Dummy => continue,
                };
                let at = offset + i * row;
                let (offset, size) = match spec.kernel.base(slot) {
                    Some(word) => {
                        let start = at / align * align;
                        spec.params[word] += u32::try_from((at - start) / elem)
                            .map_err(|e| Because(e.to_string()))?;
                        (start, size + at - start)
                    }
                    None if at % align == 0 => (at, size),
                    None => {
                        return Err(Because(format!(
                            "a part's binding at byte {at} is not {align}-byte aligned"
                        )));
                    }
                };
                if size > limits.binding {
                    return Err(Because(format!(
                        "a part would bind {size} bytes of one operand"
                    )));
                }
                spec.binds[slot] = match spec.binds[slot] {
                    Bind::Input(k) | Bind::InputPart(k, ..) => Bind::InputPart(k, offset, size),
                    _ => Bind::OutputPart(offset, size),
                };
            }
            specs.push(spec);
        }
    }
    Ok(Split {
        specs,
        parts: extent * sub.parts,
    })
}

/// The cut along the output's outermost axis of extent above one, or why
/// there is none.
fn outermost(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    elem: usize,
    limits: Limits,
    lower: Lower<'_>,
) -> Result<Split, String> {
    let Some(axis) = out.iter().position(|&d| d > 1) else {
        return Err("a one-element output".into());
    };
    let follows = follow(op, ins, out, axis)?;
    let bytes = |dims: &[usize]| (dims.iter().product::<usize>() * elem) as u64;
    // Bytes per index along the cut axis, for the output and each sliced
    // input; a slice is contiguous only when every axis before it is 1.
    let out_row = bytes(&out[axis + 1..]);
    let mut in_rows: Vec<Option<u64>> = Vec::with_capacity(ins.len());
    for (shape, f) in ins.iter().zip(&follows) {
        match *f {
            Some(a) => {
                if shape[..a].iter().any(|&d| d > 1) || shape[a] != out[axis] {
                    return Err(format!("a {shape:?} input is not contiguous along the cut"));
                }
                in_rows.push(Some(bytes(&shape[a + 1..])));
            }
            None if bytes(shape) > limits.binding => {
                return Err(format!(
                    "a {shape:?} input every part needs whole is {} bytes",
                    bytes(shape)
                ));
            }
            None => in_rows.push(None),
        }
    }
    // Operands whose kernels take a base offset in every dispatch bind
    // from the aligned offset before their slice (a window up to
    // `align - 4` bytes longer); only the others' slices must start
    // aligned.
    let whole = lower(ins, out).ok();
    let based = |bind: Bind| match &whole {
        Some(Lowered::Kernels(list)) => list.iter().all(|s| {
            (s.binds.iter().enumerate())
                .all(|(slot, b)| *b != bind || s.kernel.base(slot).is_some())
        }),
        _ => false,
    };
    let align = limits.align.max(4);
    // (bytes per index, starts anywhere) of the output and each sliced input.
    let rows: Vec<(u64, bool)> = std::iter::once((out_row, based(Bind::Output)))
        .chain(
            in_rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.map(|r| (r, based(Bind::Input(i))))),
        )
        .collect();
    // Every unbased part's offset must be aligned: a multiple of `step`
    // indices.
    let step = rows
        .iter()
        .filter(|&&(r, based)| r > 0 && !based)
        .fold(granule(op, out, axis) as u64, |s, &(r, _)| {
            lcm(s, align / gcd(r, align))
        });
    // Parts as long as fit from where each starts: a based window carries
    // the bytes from the aligned offset before its slice.
    let extent = out[axis] as u64;
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut start = 0u64;
    while start < extent {
        let fit = rows
            .iter()
            .filter(|&&(r, _)| r > 0)
            .map(|&(r, based)| {
                let slack = if based { start * r % align } else { 0 };
                limits.binding.saturating_sub(slack) / r
            })
            .min()
            .unwrap_or(u64::MAX)
            / step
            * step;
        if fit == 0 {
            let widest = rows.iter().map(|r| r.0).max().unwrap_or(0);
            return Err(format!(
                "a slice of {widest} bytes along axis {axis} (in steps of {step} for {align} byte alignment)"
            ));
        }
        if cuts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts along axis {axis}"));
        }
        let len = fit.min(extent - start);
        cuts.push((start as usize, len as usize));
        start += len;
    }
    let parts = cuts.len();
    let mut specs = Vec::new();
    for &(start, len) in &cuts {
        let range = |row: u64| (start as u64 * row, len as u64 * row);
        let mut part_out = out.to_vec();
        part_out[axis] = len;
        let mut part_ins = ins.to_vec();
        let windows: Vec<Option<(u64, u64)>> = part_ins
            .iter_mut()
            .zip(&follows)
            .zip(&in_rows)
            .map(|((shape, f), row)| {
                let (a, row) = ((*f)?, (*row)?);
                shape[a] = len;
                Some(range(row))
            })
            .collect();
        let output = range(out_row);
        let Lowered::Kernels(list) = lower(&part_ins, &part_out)? else {
            return Err(format!("{} has no kernels to cut", op.name()));
        };
        for mut spec in list {
            for slot in 0..spec.binds.len() {
                let (bind, (offset, size)) = match spec.binds[slot] {
                    Bind::Input(i) => match windows.get(i).copied().flatten() {
                        Some(w) => (Bind::InputPart(i, 0, 0), w),
                        None => continue,
                    },
                    Bind::Output => (Bind::OutputPart(0, 0), output),
                    _ => continue,
                };
                // From the aligned offset before, where the kernel can
                // start inside the binding.
                let (offset, size) = match spec.kernel.base(slot) {
                    Some(word) => {
                        let start = offset / align * align;
                        let skip = u32::try_from((offset - start) / elem as u64)
                            .map_err(|e| e.to_string())?;
                        spec.params[word] += skip;
                        (start, size + offset - start)
                    }
                    None if offset % align == 0 => (offset, size),
                    None => {
                        return Err(format!(
                            "{}: a part's binding at byte {offset} is not {align}-byte aligned",
                            op.name()
                        ));
                    }
                };
                spec.binds[slot] = match bind {
                    Bind::InputPart(i, ..) => Bind::InputPart(i, offset, size),
                    _ => Bind::OutputPart(offset, size),
                };
            }
            specs.push(spec);
        }
    }
    Ok(Split { specs, parts })
}

/// A concatenation along `axis` with only axes of extent one before it
/// (`list`: its copies, one per input): each input's copy is then one
/// contiguous run into a contiguous window of the output, cut into pieces
/// that fit, each bound from the aligned offset before it.
fn concat_parts(
    axis: usize,
    out: &[usize],
    list: Vec<Spec>,
    elem: usize,
    limits: Limits,
) -> Result<Split, String> {
    if out[..axis].iter().any(|&d| d > 1) {
        return Err(format!(
            "the concatenation axis {axis} is not the outermost"
        ));
    }
    let align = limits.align.max(4);
    let elem = elem as u64;
    // Elements a piece may copy, its windows starting up to `align - 4`
    // bytes before it.
    let piece = limits.binding.saturating_sub(align - 4) / elem;
    if piece == 0 {
        return Err("no element fits".into());
    }
    // A window of `len` elements from element `first`: (offset, size,
    // elements skipped inside it).
    let window = |first: u64, len: u64| {
        let start = first * elem / align * align;
        (start, (first + len) * elem - start, first - start / elem)
    };
    let u = |x: u64| u32::try_from(x).map_err(|e| e.to_string());
    let mut specs = Vec::new();
    for spec in list {
        // A 1-D contiguous copy: [n, src, dst, shape.., strides.., rank 1].
        let p = &spec.params;
        let contiguous = p.len() == 28 && p[27] == 1 && p[14] == 1 && p[20] == 1;
        let (Kernel::Copy { .. }, [Bind::Input(i), Bind::Output], true) =
            (spec.kernel, &spec.binds[..], contiguous)
        else {
            return Err("a concatenation that is not one contiguous copy per input".into());
        };
        let i = *i;
        let (n, src, dst) = (u64::from(p[0]), u64::from(p[1]), u64::from(p[2]));
        for a in (0..n).step_by(piece as usize) {
            let len = piece.min(n - a);
            let (s_off, s_size, s_skip) = window(src + a, len);
            let (d_off, d_size, d_skip) = window(dst + a, len);
            let mut part = spec.clone();
            part.params[0] = u(len)?;
            part.params[1] = u(s_skip)?;
            part.params[2] = u(d_skip)?;
            part.params[8] = u(len)?;
            part.binds = vec![
                Bind::InputPart(i, s_off, s_size),
                Bind::OutputPart(d_off, d_size),
            ];
            part.groups = crate::lower::grid(len as usize)?;
            specs.push(part);
            if specs.len() > MAX_PARTS {
                return Err(format!("more than {MAX_PARTS} parts"));
            }
        }
    }
    Ok(Split {
        parts: specs.len(),
        specs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower;
    use crate::lower::gp;
    use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec};
    use tract_onnx::tract_core::ops::math::{abs, add};
    use tract_onnx::tract_core::ops::nn::SoftmaxKind;

    const LIMITS: Limits = Limits {
        binding: 4096,
        align: 256,
    };

    fn cut(op: &dyn TypedOp, ins: &[Vec<usize>], out: &[usize]) -> Result<Split, String> {
        split(op, ins, out, 4, LIMITS, |i, o| lower::lower(op, i, o))
    }

    /// (input or output, offset, size) of every part's bindings.
    fn windows(s: &Split) -> Vec<Vec<Bind>> {
        s.specs.iter().map(|spec| spec.binds.clone()).collect()
    }

    #[test]
    fn broadcast_inputs_are_sliced_or_bound_whole() {
        // [64, 32] + [32]: 128-byte rows, 32 rows a part, the bias whole.
        let op = add();
        let s = cut(&op, &[vec![64, 32], vec![32]], &[64, 32]).unwrap();
        assert_eq!((s.parts, s.specs.len()), (2, 2));
        assert_eq!(
            windows(&s),
            vec![
                vec![
                    Bind::InputPart(0, 0, 4096),
                    Bind::Input(1),
                    Bind::OutputPart(0, 4096)
                ],
                vec![
                    Bind::InputPart(0, 4096, 4096),
                    Bind::Input(1),
                    Bind::OutputPart(4096, 4096)
                ],
            ]
        );
        // Each part's parameters describe its own 32 rows.
        assert_eq!(s.specs[1].params[0], 32 * 32);
    }

    #[test]
    fn operands_of_kernels_with_a_base_start_anywhere() {
        // [64, 32] x [64, 1]: aligned slices of the 4-byte rows of the
        // second would need parts of 64 rows, twice the limit; the binary
        // kernel starts it at row 32 inside the 256 bytes from 0.
        let op = tract_onnx::tract_core::ops::math::mul();
        let s = cut(&op, &[vec![64, 32], vec![64, 1]], &[64, 32]).unwrap();
        assert_eq!(s.parts, 2);
        let second = &s.specs[1];
        assert_eq!(second.binds[1], Bind::InputPart(1, 0, 256));
        assert_eq!(second.params[22], 32);
        assert_eq!(second.binds[0], Bind::InputPart(0, 4096, 4096));
        assert_eq!((second.params[21], second.params[23]), (0, 0));
    }

    #[test]
    fn a_concatenation_along_its_outermost_axis_is_one_part_an_input() {
        let op = TypedConcat { axis: 1 };
        let s = cut(&op, &[vec![1, 600], vec![1, 600]], &[1, 1200]).unwrap();
        assert_eq!(s.parts, 2);
        assert_eq!(
            s.specs[0].binds,
            [Bind::InputPart(0, 0, 2400), Bind::OutputPart(0, 2400)]
        );
        // Element 600 is 96 bytes past the boundary at 2304.
        assert_eq!(
            s.specs[1].binds,
            [Bind::InputPart(1, 0, 2400), Bind::OutputPart(2304, 2496)]
        );
        assert_eq!(s.specs[1].params[2], 24);
        // An input over the limit by itself: in pieces of 961 elements
        // (3844 bytes, room for the windows' alignment).
        let s = cut(&op, &[vec![1, 1100], vec![1, 100]], &[1, 1200]).unwrap();
        assert_eq!(s.parts, 3);
        let lens: Vec<u32> = s.specs.iter().map(|s| s.params[0]).collect();
        assert_eq!(lens, [961, 139, 100]);
        // The second piece: input elements 961.. from byte 3840, output
        // likewise.
        assert_eq!(s.specs[1].binds[0], Bind::InputPart(0, 3840, 4400 - 3840));
        assert_eq!((s.specs[1].params[1], s.specs[1].params[2]), (1, 1));
    }

    #[test]
    fn leading_unit_axes_are_skipped_and_the_last_part_is_short() {
        let op = abs();
        // 1 x 70 x 20 f32: 80-byte rows; 256-byte alignment needs steps of
        // 16 rows, so parts of 48, 22.
        let s = cut(&op, &[vec![1, 70, 20]], &[1, 70, 20]).unwrap();
        assert_eq!(s.parts, 2);
        assert_eq!(
            windows(&s)[1],
            vec![
                Bind::InputPart(0, 48 * 80, 22 * 80),
                Bind::OutputPart(48 * 80, 22 * 80)
            ]
        );
    }

    #[test]
    fn a_gemm_is_cut_along_m_with_the_weights_whole() {
        // [256, 16] x [16, 8] -> [256, 8].
        let op = EinSum {
            axes: "mk,kn->mn".parse().unwrap(),
            operating_dt: f32::datum_type(),
            q_params: None,
        };
        let s = cut(&op, &[vec![256, 16], vec![16, 8]], &[256, 8]).unwrap();
        // A's 64-byte rows bind the most: 64 rows a part.
        assert_eq!(s.parts, 4);
        let b = &windows(&s)[3];
        assert_eq!(b[0], Bind::InputPart(0, 192 * 64, 64 * 64));
        assert_eq!(b[1], Bind::Input(1));
        assert_eq!(b[3], Bind::OutputPart(192 * 32, 64 * 32));
        // Its m is the part's.
        assert_eq!(s.specs[3].params[0], 64);
    }

    #[test]
    fn what_cannot_be_cut_says_why() {
        let softmax = Softmax::new(tvec![0], None, SoftmaxKind::Softmax);
        let e = cut(&softmax, &[vec![2048]], &[2048]).unwrap_err();
        assert!(
            e.contains("4096 byte binding limit") && e.contains("axis 0"),
            "{e}"
        );
        // Leading axes of extent one are skipped, so the cut is along 1.
        let rows = Softmax::new(tvec![1], None, SoftmaxKind::Softmax);
        let e = cut(&rows, &[vec![1, 2048]], &[1, 2048]).unwrap_err();
        assert!(e.contains("along axis 1"), "{e}");
        // ... while over an axis of extent one, it is just cut.
        assert_eq!(
            cut(&softmax, &[vec![1, 2048]], &[1, 2048]).unwrap().parts,
            2
        );
        // Rows wider than the limit are cut one at a time, each along its
        // length, a broadcast operand with them.
        let s = cut(&abs(), &[vec![2, 2048]], &[2, 2048]).unwrap();
        assert_eq!(s.parts, 4);
        assert_eq!(s.specs[3].binds[1], Bind::OutputPart(12288, 4096));
        let op = add();
        let s = cut(&op, &[vec![2, 2048], vec![2048]], &[2, 2048]).unwrap();
        assert_eq!(s.parts, 4);
        assert_eq!(s.specs[3].binds[1], Bind::InputPart(1, 4096, 4096));
        // Not so a softmax's rows.
        let e = cut(&rows, &[vec![2, 2048]], &[2, 2048]).unwrap_err();
        assert!(e.contains("one index at a time"), "{e}");
        // Too many parts.
        let e = cut(&abs(), &[vec![MAX_PARTS * 2048]], &[MAX_PARTS * 2048]).unwrap_err();
        assert!(e.contains("parts along axis 0"), "{e}");
    }

    fn einsum(axes: &str) -> EinSum {
        EinSum {
            axes: axes.parse().unwrap(),
            operating_dt: f32::datum_type(),
            q_params: None,
        }
    }

    /// Split `relu(a x b + bias)` fused, as the planner lowers it.
    fn cut_fused(op: &EinSum, ins: &[Vec<usize>], out: &[usize]) -> Result<Split, String> {
        let relu = lower::Activation {
            op: 1,
            a: 0.0,
            b: 0.0,
        };
        split(op, ins, out, 4, LIMITS, |i, o| {
            lower::lower_fused(op, &i[..2], o, Some(&i[2]), relu).ok_or("no fused lowering".into())
        })
    }

    #[test]
    fn k_major_weights_over_the_limit_cut_the_gemm_along_k() {
        // B [64, 32] is 8 KiB; A [4, 64], C [4, 32] and the bias fit.
        let op = einsum("mk,kn->mn");
        let s = cut_fused(&op, &[vec![4, 64], vec![64, 32], vec![1, 32]], &[4, 32]).unwrap();
        // 2048-byte slices of B's rows: 30 rows fit with the alignment
        // slack, 16 (BK) a part.
        assert_eq!(s.parts, 4);
        let p = |i: usize, at: usize| s.specs[i].params[at];
        for (i, spec) in s.specs.iter().enumerate() {
            assert_eq!(p(i, gp::K), 16);
            assert_eq!(spec.binds[1], Bind::InputPart(1, i as u64 * 2048, 2048));
            // A's columns 16i.. are strided: the window runs from the
            // aligned offset before the first to row 3's last.
            let first = 16 * i as u64;
            let offset = first * 4 / 256 * 256;
            assert_eq!(u64::from(p(i, gp::A_BASE)), first - offset / 4);
            assert_eq!(
                spec.binds[0],
                Bind::InputPart(0, offset, (first + 3 * 64 + 16) * 4 - offset)
            );
            assert_eq!(spec.binds[3], Bind::OutputPart(0, 4 * 32 * 4));
        }
        // Write, add, add, add with the bias and the ReLU.
        let modes: Vec<(u32, u32)> = (0..4).map(|i| (p(i, gp::MODE), p(i, gp::ACT))).collect();
        assert_eq!(modes, [(0, 0), (2, 0), (2, 0), (3, 1)]);
    }

    #[test]
    fn n_major_weights_over_the_limit_cut_the_gemm_along_n() {
        // B stored [n, k] = [64, 64] is 16 KiB.
        let op = einsum("mk,nk->mn");
        let s = cut_fused(&op, &[vec![4, 64], vec![64, 64], vec![1, 64]], &[4, 64]).unwrap();
        // 256-byte rows of B: 15 a part, 5 parts, one k step each.
        assert_eq!(s.parts, 5);
        let last = &s.specs[4];
        assert_eq!(last.params[gp::N], 4);
        assert_eq!(last.params[gp::MODE], 1);
        assert_eq!(last.binds[1], Bind::InputPart(1, 60 * 256, 4 * 256));
        // C's columns 60..64 from the 256-byte boundary at column 0 of row
        // 0 (element 60 is at byte 240), through row 3; the bias's from 0.
        assert_eq!(last.params[gp::C_BASE], 60);
        assert_eq!(last.binds[3], Bind::OutputPart(0, (3 * 64 + 64) * 4));
        assert_eq!(last.params[gp::BIAS_BASE], 60);
        assert_eq!(last.binds[2], Bind::InputPart(2, 0, 64 * 4));
        assert_eq!(s.specs[1].params[gp::C_BASE], 15);
        assert_eq!(s.specs[4].groups[0], 1);
    }

    #[test]
    fn a_gemm_over_the_limit_everywhere_is_cut_along_m_and_k() {
        // A, B and C are 16 KiB each: rows of C with columns of A.
        let op = einsum("mk,kn->mn");
        let s = cut(&op, &[vec![64, 64], vec![64, 64]], &[64, 64]).unwrap();
        assert!(s.parts >= 8, "{}", s.parts);
        assert!(s.specs.iter().any(|s| s.params[gp::MODE] == gp::ACCUMULATE));
        assert!(
            s.specs
                .iter()
                .all(|s| s.params[gp::M] < 64 && s.params[gp::K] < 64)
        );
        // One row of C past the limit: along m, n and k at once (B's two
        // 8 KiB rows cannot be bound together).
        let s = cut(&op, &[vec![2, 2], vec![2, 2048]], &[2, 2048]).unwrap();
        assert_eq!(s.parts, 2 * 3 * 2);
        assert!(s.specs.iter().all(|s| s.params[gp::N] <= 960));
        // More parts than allowed: two rows of 2.2 M columns (34375 tiles,
        // within the dispatch grid uncut), 2 x 2292 parts.
        let n = 2_200_000;
        let e = cut(&op, &[vec![2, 1], vec![1, n]], &[2, n]).unwrap_err();
        assert!(
            e.contains(&format!("as a 2x{n}x1 GEMM, 4584 parts, more than 4096")),
            "{e}"
        );
    }

    #[test]
    fn convolutions_follow_batch_or_output_channels() {
        let conv_axes = |axis| {
            let op = Conv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![3, 3],
                    padding: PaddingSpec::Valid,
                    dilations: None,
                    strides: None,
                    input_channels: 4,
                    output_channels: 8,
                },
                kernel_fmt: KernelFormat::OIHW,
                group: 1,
                q_params: None,
            };
            follow(
                &op,
                &[vec![2, 4, 10, 10], vec![8, 4, 3, 3], vec![8]],
                &[2, 8, 8, 8],
                axis,
            )
        };
        assert_eq!(conv_axes(0).unwrap(), vec![Some(0), None, None]);
        assert_eq!(conv_axes(1).unwrap(), vec![None, Some(0), Some(0)]);
        assert!(conv_axes(2).is_err());
    }

    fn conv(ci: usize, co: usize, group: usize) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                dilations: None,
                strides: None,
                input_channels: ci,
                output_channels: co,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        }
    }

    #[test]
    fn a_channel_over_the_limit_is_cut_into_rows_with_their_halo() {
        // One 40x40 channel (6400 bytes) through a 3x3 kernel padded by 1,
        // as an implicit GEMM: 22 output rows read 24 input rows (3840
        // bytes with the alignment slack), so rows 0..22 and 22..40.
        let op = conv(1, 1, 1);
        let s = cut(
            &op,
            &[vec![1, 1, 40, 40], vec![1, 1, 3, 3], vec![1]],
            &[1, 1, 40, 40],
        )
        .unwrap();
        assert_eq!(s.parts, 2);
        let p = |i: usize, at: usize| s.specs[i].params[at];
        // The first reads input rows 0..23 below one row of padding.
        assert_eq!((p(0, gp::N), p(0, gp::H), p(0, gp::PT)), (22 * 40, 23, 1));
        assert_eq!(s.specs[0].binds[1], Bind::InputPart(0, 0, 23 * 160));
        // The second, rows 21..40 with none: from the 256-byte boundary
        // at 3328, element 840 eight elements in.
        assert_eq!((p(1, gp::N), p(1, gp::H), p(1, gp::PT)), (18 * 40, 19, 0));
        assert_eq!(s.specs[1].binds[1], Bind::InputPart(0, 3328, 6400 - 3328));
        assert_eq!(p(1, gp::B_BASE), 8);
        // Its output rows 22..40 from the same boundary.
        assert_eq!(s.specs[1].binds[3], Bind::OutputPart(3328, 6400 - 3328));
        assert_eq!(p(1, gp::C_BASE), 880 - 832);
        // Its channel stride is the whole input's.
        assert_eq!(p(1, gp::HW), 1600);
    }

    #[test]
    fn depthwise_channels_and_pools_over_the_limit_are_cut_into_rows() {
        // Two 40x40 channels, depthwise: an output channel and 22 of its
        // rows a part.
        let op = conv(2, 2, 2);
        let s = cut(
            &op,
            &[vec![1, 2, 40, 40], vec![2, 1, 3, 3], vec![2]],
            &[1, 2, 40, 40],
        )
        .unwrap();
        assert_eq!(s.parts, 4);
        let last = &s.specs[3];
        // conv.wgsl: one channel in and out, 19 input rows, 18 output rows.
        let at = |i: usize| last.params[i];
        assert_eq!(
            (at(0), at(1), at(2), at(4), at(5), at(13)),
            (18 * 40, 1, 19, 1, 18, 0)
        );
        // Channel 1's rows 21.. from the boundary at 9728 (element 2440 is
        // byte 9760), its kernel row (element 9) and its bias.
        assert_eq!(last.binds[0], Bind::InputPart(0, 9728, 12800 - 9728));
        assert_eq!((at(21), at(22), at(23), at(24)), (8, 9, 1, 2480 - 2432));
        assert_eq!(last.binds[1], Bind::InputPart(1, 0, 72));
        assert_eq!(last.binds[2], Bind::InputPart(2, 0, 8));
        assert_eq!(last.binds[3], Bind::OutputPart(9728, 12800 - 9728));
        // A 3x3 max pool padded by 1 likewise.
        let pool = MaxPool {
            pool_spec: op.pool_spec.clone(),
            with_index_outputs: None,
        };
        let s = cut(&pool, &[vec![1, 2, 40, 40]], &[1, 2, 40, 40]).unwrap();
        assert_eq!(s.parts, 4);
        let first = &s.specs[0].params;
        // pool.wgsl: 22 output rows from 23 input rows, padding 1 above.
        assert_eq!(
            (first[0], first[1], first[2], first[4], first[10]),
            (22 * 40, 1, 23, 22, 1)
        );
        // A grouped convolution with two input channels a group is not
        // cut along its rows.
        let op = conv(4, 2, 2);
        let e = cut(
            &op,
            &[vec![1, 4, 40, 40], vec![2, 2, 3, 3], vec![2]],
            &[1, 2, 40, 40],
        )
        .unwrap_err();
        assert!(e.contains("2 input channels a group"), "{e}");
    }

    #[test]
    fn a_transposed_convolution_is_cut_along_rows_and_input_channels() {
        // [1, 8, 16, 16] (8 KiB) up by two into one 32x32 channel (4 KiB).
        let op = Deconv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![2, 2],
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: 8,
                output_channels: 1,
            },
            kernel_format: KernelFormat::OIHW,
            adjustments: tvec![0, 0],
            group: 1,
        };
        let s = cut(
            &op,
            &[vec![1, 8, 16, 16], vec![1, 8, 2, 2], vec![1]],
            &[1, 1, 32, 32],
        )
        .unwrap();
        assert_eq!(s.parts, s.specs.len());
        let mut written = vec![0u32; 32];
        for spec in &s.specs {
            let q = &spec.params;
            // Input rows: two output rows a row, from the one under its
            // first; an odd first row is its input row's second tap, one
            // row of padding as the part sees it.
            let (rows, y0) = (q[5], (q[21] + bound(spec.binds[3]).0 as u32 / 4) / 32);
            assert_eq!(q[2], rows.div_ceil(2), "{q:?}");
            assert_eq!(q[13], y0 % 2, "{q:?}");
            // The first part over the input channels writes, the others
            // add; only the last adds the bias.
            let channels = q[1];
            let c0 = (q[18] + bound(spec.binds[0]).0 as u32 / 4) / 256;
            assert_eq!(q[22], u32::from(c0 > 0));
            assert_eq!(q[17], u32::from(c0 + channels == 8));
            for y in y0..y0 + rows {
                written[y as usize] += channels;
            }
            for b in &spec.binds {
                assert!(bound(*b).1 <= 4096, "{b:?}");
            }
        }
        // Every output row sums all eight input channels once.
        assert_eq!(written, vec![8; 32]);
    }

    /// A part binding's (offset, size).
    fn bound(b: Bind) -> (u64, u64) {
        match b {
            Bind::InputPart(_, o, n) | Bind::OutputPart(o, n) => (o, n),
            _ => (0, 0),
        }
    }

    #[test]
    fn a_reduction_past_the_limit_is_cut_along_its_reduced_axis() {
        // The sum of 2048 values (8 KiB): parts of 961 (3844 bytes with
        // the alignment slack), the later ones folded into the first's.
        let op = Reduce {
            axes: tvec![1],
            reducer: tract_onnx::tract_core::ops::nn::Reducer::Sum,
        };
        let s = cut(&op, &[vec![1, 2048]], &[1, 1]).unwrap();
        assert_eq!(s.parts, 3);
        let p = |i: usize, at: usize| s.specs[i].params[at];
        let counts: Vec<u32> = (0..3).map(|i| p(i, 2)).collect();
        assert_eq!(counts, [961, 961, 126]);
        let combine: Vec<u32> = (0..3).map(|i| p(i, 23)).collect();
        assert_eq!(combine, [0, 1, 1]);
        // The second reads elements 961.. from the boundary at byte 3840.
        assert_eq!(
            s.specs[1].binds[0],
            Bind::InputPart(0, 3840, (961 + 961) * 4 - 3840)
        );
        assert_eq!(p(1, 21), 1);
        assert!(s.specs.iter().all(|s| s.binds[1] == Bind::OutputPart(0, 4)));
    }
}
