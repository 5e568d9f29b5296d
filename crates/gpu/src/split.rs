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
//! axis). Everything else is refused with the reason, and stays on the CPU.
//!
//! Pure: no device. The planner supplies the limits and the lowering.

use crate::lower::{Bind, Lowered, Spec};
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
        let batch = batched(op.pool_spec.data_format) == Some(true);
        if batch && axis == 0 {
            return Ok(vec![Some(0), None, None]);
        }
        // Output channels: rows of the kernel (OIHW) and of a per-channel
        // bias, against the whole input.
        let channels = if batch { 1 } else { 0 };
        if axis == channels && op.group == 1 {
            let bias = match ins[2].iter().product::<usize>() {
                0 | 1 => None,
                n if n == out[axis] && ins[2].len() == 1 => Some(0),
                _ => return Err("a convolution bias of another shape".into()),
            };
            return Ok(vec![None, Some(0), bias]);
        }
        return Err(format!(
            "a convolution is cut only along its batch or (ungrouped) output channels, not axis {axis}"
        ));
    }
    if let Some(op) = op.downcast_ref::<Deconv>() {
        if batched(op.pool_spec.data_format) == Some(true) && axis == 0 {
            return Ok(vec![Some(0), None, None]);
        }
        return Err("a transposed convolution is cut only along its batch".into());
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

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// Cut a node with inputs `ins` and output `out` (elements of `elem`
/// bytes) into parts within `limits`, each lowered by `lower`.
pub(crate) fn split(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    elem: usize,
    limits: Limits,
    lower: impl Fn(&[Vec<usize>], &[usize]) -> Result<Lowered, String>,
) -> Result<Split, String> {
    let over = |why: String| {
        format!(
            "{why}: over this adapter's {} byte binding limit, and it cannot be cut into parts that fit",
            limits.binding
        )
    };
    let Some(axis) = out.iter().position(|&d| d > 1) else {
        return Err(over("a one-element output".into()));
    };
    let follows = follow(op, ins, out, axis).map_err(over)?;
    let bytes = |dims: &[usize]| (dims.iter().product::<usize>() * elem) as u64;
    // Bytes per index along the cut axis, for the output and each sliced
    // input; a slice is contiguous only when every axis before it is 1.
    let out_row = bytes(&out[axis + 1..]);
    let mut in_rows: Vec<Option<u64>> = Vec::with_capacity(ins.len());
    for (shape, f) in ins.iter().zip(&follows) {
        match *f {
            Some(a) => {
                if shape[..a].iter().any(|&d| d > 1) || shape[a] != out[axis] {
                    return Err(over(format!(
                        "a {shape:?} input is not contiguous along the cut"
                    )));
                }
                in_rows.push(Some(bytes(&shape[a + 1..])));
            }
            None if bytes(shape) > limits.binding => {
                return Err(over(format!(
                    "a {shape:?} input every part needs whole is {} bytes",
                    bytes(shape)
                )));
            }
            None => in_rows.push(None),
        }
    }
    let rows: Vec<u64> = std::iter::once(out_row)
        .chain(in_rows.iter().flatten().copied())
        .collect();
    let align = limits.align.max(4);
    // Every part's offset must be aligned: a multiple of `step` indices.
    let step = rows
        .iter()
        .filter(|&&r| r > 0)
        .fold(1, |s, &r| lcm(s, align / gcd(r, align)));
    let widest = rows.iter().copied().max().unwrap_or(0).max(1);
    let fit = (limits.binding / widest) / step * step;
    if fit == 0 {
        return Err(over(format!(
            "a slice of {widest} bytes along axis {axis} (in steps of {step} for {align} byte alignment)"
        )));
    }
    let extent = out[axis];
    let chunk = (fit as usize).min(extent);
    let parts = extent.div_ceil(chunk);
    if parts > MAX_PARTS {
        return Err(over(format!(
            "{parts} parts along axis {axis}, more than {MAX_PARTS}"
        )));
    }
    let mut specs = Vec::new();
    for p in 0..parts {
        let start = p * chunk;
        let len = chunk.min(extent - start);
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
            for b in &mut spec.binds {
                *b = match *b {
                    Bind::Input(i) => match windows.get(i).copied().flatten() {
                        Some((offset, size)) => Bind::InputPart(i, offset, size),
                        None => Bind::Input(i),
                    },
                    Bind::Output => Bind::OutputPart(output.0, output.1),
                    other => other,
                };
            }
            specs.push(spec);
        }
    }
    Ok(Split { specs, parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower;
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
        // A row wider than the limit.
        let e = cut(&abs(), &[vec![2, 2048]], &[2, 2048]).unwrap_err();
        assert!(e.contains("a slice of 8192 bytes along axis 0"), "{e}");
        let op = add();
        let e = cut(&op, &[vec![2, 2048], vec![2048]], &[2, 2048]).unwrap_err();
        assert!(e.contains("needs whole"), "{e}");
        // Too many parts.
        let e = cut(&abs(), &[vec![MAX_PARTS * 2048]], &[MAX_PARTS * 2048]).unwrap_err();
        assert!(e.contains("parts along axis 0"), "{e}");
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
}
