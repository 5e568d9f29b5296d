//! Lowering: one node of tract's decluttered, concretely shaped graph to
//! GPU dispatches, or the reason it stays on the CPU.
//!
//! Everything here is pure (no device): it turns an op and its input and
//! output shapes into kernels, parameter words and launch grids.

use crate::kernels::Kernel;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{MultiBroadcastTo, Pad, PadMode, Slice, TypedConcat};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat, MaxPool, PoolSpec, SumPool};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::resize::NearestUpsample;
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, Reducer, RmsNorm, Softmax, SoftmaxKind};

/// Highest rank the strided kernels address.
pub(crate) const MAX_RANK: usize = 6;
/// Most workgroups along one dispatch dimension (WebGPU's guaranteed limit).
const MAX_GROUPS: u32 = 65535;

/// What a kernel binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    Input(usize),
    Output,
    /// A 4-byte placeholder for an unused binding (a GEMM without bias).
    Dummy,
    /// Bytes `offset..offset + size` of an input: one part of a node cut
    /// to fit the binding limit (see `split`).
    InputPart(usize, u64, u64),
    /// Bytes `offset..offset + size` of the output, likewise.
    OutputPart(u64, u64),
}

/// One dispatch: a kernel, its parameter words, its bindings (after the
/// parameters) and its grid.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub kernel: Kernel,
    pub params: Vec<u32>,
    pub binds: Vec<Bind>,
    pub groups: [u32; 3],
}

/// A lowered node.
#[derive(Debug, Clone)]
pub(crate) enum Lowered {
    /// The output is the input's buffer seen with another shape (Reshape,
    /// AddAxis, RmAxis): no data moves.
    View,
    Kernels(Vec<Spec>),
}

/// Fused epilogue of a GEMM or direct convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Activation {
    pub op: u32,
    pub a: f32,
    pub b: f32,
}

impl Activation {
    pub const NONE: Activation = Activation {
        op: 0,
        a: 0.0,
        b: 0.0,
    };
}

pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn u(x: usize) -> Result<u32, String> {
    u32::try_from(x)
        .map_err(|_| format!("a size of {x} exceeds the 32-bit indexing of the GPU kernels"))
}

/// Left-pad to six dimensions (shape 1, stride 0).
fn pad6(v: &[usize], fill: usize) -> Result<Vec<u32>, String> {
    if v.len() > MAX_RANK {
        return Err(format!(
            "rank {} exceeds the GPU kernels' {MAX_RANK}",
            v.len()
        ));
    }
    let mut out = vec![fill as u32; MAX_RANK - v.len()];
    for &x in v {
        out.push(u(x)?);
    }
    Ok(out)
}

/// A 1-D launch of `n` invocations as a 2-D grid of 256-wide workgroups.
pub(crate) fn grid(n: usize) -> Result<[u32; 3], String> {
    rows_grid(n.div_ceil(256).max(1))
}

/// `rows` workgroups laid out on a 2-D grid.
fn rows_grid(rows: usize) -> Result<[u32; 3], String> {
    let rows = u(rows.max(1))?;
    let x = rows.min(MAX_GROUPS);
    let y = rows.div_ceil(x);
    if y > MAX_GROUPS {
        return Err(format!(
            "{rows} workgroups exceed the device's dispatch grid"
        ));
    }
    Ok([x, y, 1])
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

pub(crate) fn unary_spec(n: usize, op: u32, a: f32, b: f32) -> Result<Spec, String> {
    Ok(Spec {
        kernel: Kernel::Unary { half: false },
        params: vec![u(n)?, op, f(a), f(b), 0, 0],
        binds: vec![Bind::Input(0), Bind::Output],
        groups: grid(n)?,
    })
}

/// A strided copy of `shape` elements from input `input` (at `src_offset`,
/// with `src`, `div` per dimension) into the output (at `dst_offset`, `dst`).
fn copy_spec(
    input: usize,
    shape: &[usize],
    src_offset: usize,
    src: &[usize],
    dst_offset: usize,
    dst: &[usize],
    div: Option<&[usize]>,
) -> Result<Spec, String> {
    let n: usize = shape.iter().product();
    let ones = vec![1; shape.len()];
    let div = div.unwrap_or(&ones);
    let (shape, mut strides) =
        collapse(shape, &[src.to_vec(), dst.to_vec(), div.to_vec()], Some(2));
    let div = strides.pop().expect("three");
    let mut params = vec![u(n)?, u(src_offset)?, u(dst_offset)?];
    params.extend(pad6(&shape, 1)?);
    params.extend(pad6(&strides[0], 0)?);
    params.extend(pad6(&strides[1], 0)?);
    params.extend(pad6(&div, 1)?);
    params.push(shape.len() as u32);
    Ok(Spec {
        kernel: Kernel::Copy { half: false },
        params,
        binds: vec![Bind::Input(input), Bind::Output],
        groups: grid(n)?,
    })
}

/// Drop dimensions of size 1 and merge each dimension into the next inner
/// one wherever every operand's strides allow it, so a kernel decomposes an
/// index over as few dimensions as possible (a contiguous add of a scalar
/// becomes one dimension). Each entry of `strides` is one operand's strides
/// in `shape`'s order; the entry at `divisors` (if any) holds per-dimension
/// divisors, and a dimension with a divisor other than 1 is never merged.
fn collapse(
    shape: &[usize],
    strides: &[Vec<usize>],
    divisors: Option<usize>,
) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && strides.iter().enumerate().all(|(k, s)| {
                let last = *out[k].last().expect("same length");
                if Some(k) == divisors {
                    last == 1 && s[d] == 1
                } else {
                    last == s[d] * shape[d]
                }
            });
        if mergeable {
            *out_shape.last_mut().expect("checked") *= shape[d];
            for (k, s) in strides.iter().enumerate() {
                *out[k].last_mut().expect("checked") = s[d];
            }
        } else {
            out_shape.push(shape[d]);
            for (k, s) in strides.iter().enumerate() {
                out[k].push(s[d]);
            }
        }
    }
    (out_shape, out)
}

/// Strides of `shape` broadcast to `out` (0 where broadcast), rank-aligned
/// on the right.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Result<Vec<usize>, String> {
    if shape.len() > out.len() {
        return Err("input rank above output rank".into());
    }
    let mut padded = vec![1; out.len() - shape.len()];
    padded.extend_from_slice(shape);
    let s = strides(&padded);
    padded
        .iter()
        .zip(out)
        .zip(s)
        .map(|((&d, &o), st)| match (d, o) {
            (d, o) if d == o => Ok(st),
            (1, _) => Ok(0),
            _ => Err(format!("cannot broadcast {shape:?} to {out:?}")),
        })
        .collect()
}

/// The unary kernel's code for a tract element-wise mini op, with its
/// parameters.
fn unary_code(op: &ElementWiseOp) -> Option<(u32, f32, f32)> {
    let name = op.0.name();
    let code = match name.as_ref() {
        "Sigmoid" => 4,
        "HardSwish" => 3,
        "Silu" => 7,
        "Tanh" => 100,
        "Exp" => 101,
        "Ln" => 102,
        "Abs" => 103,
        "Neg" => 104,
        "Sqrt" => 105,
        "Rsqrt" => 106,
        "Recip" => 107,
        "Erf" => 108,
        "Floor" => 109,
        "Ceil" => 110,
        "Sin" => 111,
        "Cos" => 112,
        "Square" => 113,
        "RoundHalfToEven" => 114,
        "Sign" => 115,
        "GeluExact" => 117,
        "LeakyRelu" => {
            let alpha =
                op.0.downcast_ref::<tract_onnx::tract_core::ops::nn::LeakyRelu>()?
                    .alpha;
            return Some((5, alpha, 0.0));
        }
        _ => return None,
    };
    Some((code, 0.0, 0.0))
}

fn binary_code(op: &TypedBinOp) -> Option<u32> {
    Some(match op.0.name() {
        "Add" => 0,
        "Sub" => 1,
        "Mul" => 2,
        "Div" => 3,
        "Max" => 4,
        "Min" => 5,
        "Pow" => 6,
        _ => return None,
    })
}

/// The activation a unary node applies, when it can fuse into an epilogue.
pub(crate) fn activation_of(op: &dyn TypedOp) -> Option<Activation> {
    let ew = op.downcast_ref::<ElementWiseOp>()?;
    let (code, a, b) = unary_code(ew)?;
    (code < 100).then_some(Activation { op: code, a, b })
}

/// Lower `op` given its input and output shapes (all f32).
pub(crate) fn lower(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
) -> Result<Lowered, String> {
    let n: usize = out.iter().product();
    if let Some(op) = op.downcast_ref::<ElementWiseOp>() {
        let (code, a, b) = unary_code(op)
            .ok_or_else(|| format!("no GPU kernel for element-wise {}", op.0.name()))?;
        return Ok(Lowered::Kernels(vec![unary_spec(n, code, a, b)?]));
    }
    if let Some(op) = op.downcast_ref::<TypedBinOp>() {
        let code = binary_code(op).ok_or_else(|| format!("no GPU kernel for {}", op.0.name()))?;
        let (shape, strides) = collapse(
            out,
            &[
                broadcast_strides(&ins[0], out)?,
                broadcast_strides(&ins[1], out)?,
            ],
            None,
        );
        let mut params = vec![u(n)?, code];
        params.extend(pad6(&shape, 1)?);
        params.extend(pad6(&strides[0], 0)?);
        params.extend(pad6(&strides[1], 0)?);
        params.push(shape.len() as u32);
        params.extend([0; 3]);
        return Ok(Lowered::Kernels(vec![Spec {
            kernel: Kernel::Binary { half: false },
            params,
            binds: vec![Bind::Input(0), Bind::Input(1), Bind::Output],
            groups: grid(n)?,
        }]));
    }
    if let Some(op) = op.downcast_ref::<AxisOp>() {
        return match op {
            AxisOp::Move(from, to) => {
                // out[perm] = in: walk the output, read the input's strides.
                let mut perm: Vec<usize> = (0..ins[0].len()).collect();
                let axis = perm.remove(*from);
                perm.insert(*to, axis);
                let s = strides(&ins[0]);
                let src: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
                Ok(Lowered::Kernels(vec![copy_spec(
                    0,
                    out,
                    0,
                    &src,
                    0,
                    &strides(out),
                    None,
                )?]))
            }
            _ => Ok(Lowered::View),
        };
    }
    if let Some(op) = op.downcast_ref::<Slice>() {
        let start = op.start.to_i64().map_err(|e| e.to_string())? as usize;
        let s = strides(&ins[0]);
        return Ok(Lowered::Kernels(vec![copy_spec(
            0,
            out,
            start * s[op.axis],
            &s,
            0,
            &strides(out),
            None,
        )?]));
    }
    if let Some(op) = op.downcast_ref::<TypedConcat>() {
        let dst = strides(out);
        let mut offset = 0;
        let mut specs = Vec::new();
        for (i, shape) in ins.iter().enumerate() {
            if shape.iter().product::<usize>() > 0 {
                specs.push(copy_spec(
                    i,
                    shape,
                    0,
                    &strides(shape),
                    offset * dst[op.axis],
                    &dst,
                    None,
                )?);
            }
            offset += shape[op.axis];
        }
        return Ok(Lowered::Kernels(specs));
    }
    if op.downcast_ref::<MultiBroadcastTo>().is_some() {
        let src = broadcast_strides(&ins[0], out)?;
        return Ok(Lowered::Kernels(vec![copy_spec(
            0,
            out,
            0,
            &src,
            0,
            &strides(out),
            None,
        )?]));
    }
    if let Some(op) = op.downcast_ref::<NearestUpsample>() {
        return Ok(Lowered::Kernels(vec![copy_spec(
            0,
            out,
            0,
            &strides(&ins[0]),
            0,
            &strides(out),
            Some(&op.scales),
        )?]));
    }
    if let Some(op) = op.downcast_ref::<Pad>() {
        let PadMode::Constant(value) = &op.mode else {
            return Err("only constant padding runs on the GPU".into());
        };
        let value = value
            .cast_to_scalar::<f32>()
            .map_err(|e| format!("pad value: {e}"))?;
        let dst = strides(out);
        let offset: usize = op.pads.iter().zip(&dst).map(|((b, _), s)| b * s).sum();
        return Ok(Lowered::Kernels(vec![
            // Fill the whole output, then copy the input inside it.
            Spec {
                binds: vec![Bind::Dummy, Bind::Output],
                ..unary_spec(n, 116, value, 0.0)?
            },
            copy_spec(0, &ins[0], 0, &strides(&ins[0]), offset, &dst, None)?,
        ]));
    }
    if let Some(op) = op.downcast_ref::<Reduce>() {
        let code = match op.reducer {
            Reducer::Sum => 0,
            Reducer::Max => 1,
            Reducer::Min => 2,
            Reducer::Prod => 3,
            Reducer::MeanOfSquares => 4,
            ref r => return Err(format!("no GPU kernel for Reduce<{r:?}>")),
        };
        let shape = &ins[0];
        let mut red = vec![1; shape.len()];
        for &a in &op.axes {
            red[a] = shape[a];
        }
        let n_red: usize = red.iter().product();
        let mut params = vec![u(n)?, code, u(n_red)?];
        params.extend(pad6(out, 1)?);
        params.extend(pad6(&strides(shape), 0)?);
        params.extend(pad6(&red, 1)?);
        // Bases; written, not combined; the means' divisor.
        params.extend([0, 0, 0, u(n_red)?]);
        return Ok(Lowered::Kernels(vec![Spec {
            kernel: Kernel::Reduce { half: false },
            params,
            binds: vec![Bind::Input(0), Bind::Output],
            groups: grid(n)?,
        }]));
    }
    if let Some(op) = op.downcast_ref::<Softmax>() {
        if op.quant_output_dt.is_some() || op.axes.len() != 1 {
            return Err("only single-axis float softmax runs on the GPU".into());
        }
        let mode = match op.kind {
            SoftmaxKind::Softmax => 0,
            SoftmaxKind::LogSoftmax => 1,
        };
        return row_kernel(&ins[0], op.axes[0], mode, 0.0);
    }
    if let Some(op) = op.downcast_ref::<RmsNorm>() {
        let eps = op
            .eps
            .cast_to_scalar::<f32>()
            .map_err(|e| format!("RmsNorm eps: {e}"))?;
        return row_kernel(&ins[0], op.axis, 2, eps);
    }
    if let Some(op) = op.downcast_ref::<MaxPool>() {
        if op.with_index_outputs.is_some() {
            return Err("MaxPool with indices stays on the CPU".into());
        }
        return pool(&op.pool_spec, &ins[0], out, 0, false);
    }
    if let Some(op) = op.downcast_ref::<SumPool>() {
        if !op.normalize {
            return Err("unnormalized SumPool stays on the CPU".into());
        }
        return pool(&op.pool_spec, &ins[0], out, 1, op.count_include_pad);
    }
    if let Some(op) = op.downcast_ref::<EinSum>() {
        return einsum(op, ins, out, None, Activation::NONE);
    }
    if let Some(op) = op.downcast_ref::<Conv>() {
        return conv(op, ins, out, Activation::NONE);
    }
    if let Some(op) = op.downcast_ref::<Deconv>() {
        return deconv(op, ins, out);
    }
    Err(format!("no GPU kernel for {}", op.name()))
}

fn row_kernel(shape: &[usize], axis: usize, mode: u32, eps: f32) -> Result<Lowered, String> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let rows: usize = shape.iter().product::<usize>() / len.max(1);
    Ok(Lowered::Kernels(vec![Spec {
        kernel: Kernel::Softmax { half: false },
        params: vec![u(rows)?, u(len)?, u(inner)?, mode, f(eps), 0, 0],
        binds: vec![Bind::Input(0), Bind::Output],
        groups: rows_grid(rows)?,
    }]))
}

/// Spatial geometry of a 2-D (or 1-D as 2-D) NCHW/CHW operation.
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sy: usize,
    sx: usize,
    dy: usize,
    dx: usize,
    pt: usize,
    pl: usize,
}

fn geometry(spec: &PoolSpec, input: &[usize], out: &[usize]) -> Result<Geometry, String> {
    let batched = match spec.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        f => return Err(format!("data format {f:?} stays on the CPU")),
    };
    let spatial = if batched { &input[2..] } else { &input[1..] };
    let ospatial = if batched { &out[2..] } else { &out[1..] };
    if spatial.is_empty() || spatial.len() > 2 {
        return Err(format!(
            "{}-D spatial operations stay on the CPU",
            spatial.len()
        ));
    }
    let padding = spec.computed_padding(spatial);
    let dil = spec.dilations();
    let st = spec.strides();
    // A 1-D operation is a 2-D one with height 1.
    let two = |v: &[usize], fill: usize| -> (usize, usize) {
        if v.len() == 1 {
            (fill, v[0])
        } else {
            (v[0], v[1])
        }
    };
    let (h, w) = two(spatial, 1);
    let (oh, ow) = two(ospatial, 1);
    let (kh, kw) = two(&spec.kernel_shape, 1);
    let (sy, sx) = two(&st, 1);
    let (dy, dx) = two(&dil, 1);
    let pads: Vec<usize> = padding.iter().map(|p| p.pad_before).collect();
    let (pt, pl) = two(&pads, 0);
    Ok(Geometry {
        n: if batched { input[0] } else { 1 },
        c: if batched { input[1] } else { input[0] },
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        sy,
        sx,
        dy,
        dx,
        pt,
        pl,
    })
}

fn pool(
    spec: &PoolSpec,
    input: &[usize],
    out: &[usize],
    mode: u32,
    include_pad: bool,
) -> Result<Lowered, String> {
    let g = geometry(spec, input, out)?;
    let n: usize = out.iter().product();
    let params = [
        n,
        g.n * g.c,
        g.h,
        g.w,
        g.oh,
        g.ow,
        g.kh,
        g.kw,
        g.sy,
        g.sx,
        g.pt,
        g.pl,
        g.dy,
        g.dx,
        mode as usize,
        include_pad as usize,
        0,
        0,
    ]
    .iter()
    .map(|&x| u(x))
    .collect::<Result<Vec<u32>, String>>()?;
    Ok(Lowered::Kernels(vec![Spec {
        kernel: Kernel::Pool { half: false },
        params,
        binds: vec![Bind::Input(0), Bind::Output],
        groups: grid(n)?,
    }]))
}

fn conv(op: &Conv, ins: &[Vec<usize>], out: &[usize], act: Activation) -> Result<Lowered, String> {
    if op.q_params.is_some() {
        return Err("quantized convolution stays on the CPU".into());
    }
    if op.kernel_fmt != KernelFormat::OIHW {
        return Err(format!(
            "kernel format {:?} stays on the CPU",
            op.kernel_fmt
        ));
    }
    let g = geometry(&op.pool_spec, &ins[0], out)?;
    // From the output, not the op: a part of a split convolution computes
    // some of its channels.
    let co = out[usize::from(op.pool_spec.data_format == DataFormat::NCHW)];
    // And the groups from the kernel's shape (OIHW: I is a group's input
    // channels): a part of a cut grouped convolution has fewer groups.
    let cig = ins[1].get(1).copied().unwrap_or(0);
    if cig == 0 || !g.c.is_multiple_of(cig) || !co.is_multiple_of(g.c / cig) {
        return Err(format!(
            "a {:?} kernel does not fit {} input and {co} output channels",
            ins[1], g.c
        ));
    }
    let group = g.c / cig;
    let cog = co / group;
    let bias_len: usize = ins[2].iter().product();
    if group == 1 {
        // Convolution as GEMM: C[co, pixel] = W[co, ci*kh*kw] x patches.
        let k = cig * g.kh * g.kw;
        let pixels = g.oh * g.ow;
        let pointwise = g.kh == 1
            && g.kw == 1
            && g.sy == 1
            && g.sx == 1
            && g.pt == 0
            && g.pl == 0
            && g.oh == g.h
            && g.ow == g.w;
        let geo = Gemm {
            m: co,
            n: pixels,
            k,
            batch: vec![(g.n, 0, g.c * g.h * g.w, co * pixels, 0)],
            a: (k, 1),
            b: (pixels, 1),
            c: (pixels, 1),
            // Per output channel (a row of C), or one scalar.
            bias: match bias_len {
                0 => None,
                1 => Some((0, 0)),
                _ => Some((1, 0)),
            },
            act,
            half: false,
            im2col: (!pointwise).then_some([
                g.h,
                g.w,
                g.kh,
                g.kw,
                g.ow,
                g.sy,
                g.sx,
                g.dy,
                g.dx,
                g.pt,
                g.pl,
                g.h * g.w,
            ]),
        };
        return Ok(Lowered::Kernels(vec![geo.spec(
            Bind::Input(1),
            Bind::Input(0),
            if bias_len > 0 {
                Bind::Input(2)
            } else {
                Bind::Dummy
            },
        )?]));
    }
    let n: usize = out.iter().product();
    let params = [
        n, g.c, g.h, g.w, co, g.oh, g.ow, g.kh, g.kw, g.sy, g.sx, g.dy, g.dx, g.pt, g.pl, cig, cog,
        bias_len,
    ]
    .iter()
    .map(|&x| u(x))
    .chain([Ok(act.op), Ok(f(act.a)), Ok(f(act.b))])
    // Operands start at their bindings' first element.
    .chain(std::iter::repeat_n(Ok(0), 4))
    .collect::<Result<Vec<u32>, String>>()?;
    direct(Kernel::Conv { half: false }, params, n, bias_len)
}

/// A one-invocation-per-output convolution kernel: input, kernel, bias
/// (or a placeholder), output.
fn direct(kernel: Kernel, params: Vec<u32>, n: usize, bias_len: usize) -> Result<Lowered, String> {
    Ok(Lowered::Kernels(vec![Spec {
        kernel,
        params,
        binds: vec![
            Bind::Input(0),
            Bind::Input(1),
            if bias_len > 0 {
                Bind::Input(2)
            } else {
                Bind::Dummy
            },
            Bind::Output,
        ],
        groups: grid(n)?,
    }]))
}

fn deconv(op: &Deconv, ins: &[Vec<usize>], out: &[usize]) -> Result<Lowered, String> {
    if op.kernel_format != KernelFormat::OIHW {
        return Err(format!(
            "kernel format {:?} stays on the CPU",
            op.kernel_format
        ));
    }
    let spec = &op.pool_spec;
    let batched = match spec.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        f => return Err(format!("data format {f:?} stays on the CPU")),
    };
    let input = &ins[0];
    let spatial = if batched { &input[2..] } else { &input[1..] };
    let ospatial = if batched { &out[2..] } else { &out[1..] };
    if spatial.len() != 2 {
        return Err("only 2-D transposed convolution runs on the GPU".into());
    }
    let pads: Vec<usize> = match &spec.padding {
        tract_onnx::tract_core::ops::cnn::PaddingSpec::Explicit(before, _) => before.to_vec(),
        tract_onnx::tract_core::ops::cnn::PaddingSpec::Valid => vec![0, 0],
        p => {
            return Err(format!(
                "transposed convolution padding {p:?} stays on the CPU"
            ));
        }
    };
    let st = spec.strides();
    let dil = spec.dilations();
    let ci = if batched { input[1] } else { input[0] };
    // From the output and the kernel (OIHW: [Co, Ci / group, ..]), as for
    // a convolution: a part of a cut one has fewer channels and groups.
    let co = if batched { out[1] } else { out[0] };
    let cig = ins[1].get(1).copied().unwrap_or(0);
    if cig == 0 || !ci.is_multiple_of(cig) || !co.is_multiple_of(ci / cig) {
        return Err(format!(
            "a {:?} kernel does not fit {ci} input and {co} output channels",
            ins[1]
        ));
    }
    let group = ci / cig;
    let bias_len: usize = ins[2].iter().product();
    let n: usize = out.iter().product();
    let params = [
        n,
        ci,
        spatial[0],
        spatial[1],
        co,
        ospatial[0],
        ospatial[1],
        spec.kernel_shape[0],
        spec.kernel_shape[1],
        st[0],
        st[1],
        dil[0],
        dil[1],
        pads[0],
        pads[1],
        ci / group,
        co / group,
        bias_len,
        // Operands start at their bindings' first element.
        0,
        0,
        0,
        0,
        // Written, not added; dense channels.
        0,
        spatial[0] * spatial[1],
        (ci / group) * spec.kernel_shape[0] * spec.kernel_shape[1],
        ospatial[0] * ospatial[1],
    ]
    .iter()
    .map(|&x| u(x))
    .collect::<Result<Vec<u32>, String>>()?;
    direct(Kernel::Deconv { half: false }, params, n, bias_len)
}

pub(crate) use crate::kernels::gp;

/// One GEMM axis: its size and its strides in A, B, C and the bias.
pub(crate) type Axis = (usize, usize, usize, usize, usize);

/// A batched GEMM's geometry: sizes, per-batch-axis (size, a, b, c, bias)
/// strides, and row/column strides of A (m, k), B (k, n) and C (m, n).
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: Vec<Axis>,
    pub a: (usize, usize),
    pub b: (usize, usize),
    pub c: (usize, usize),
    /// Strides of the bias operand along m and n and the batch axes
    /// (`None`: no bias).
    pub bias: Option<(usize, usize)>,
    pub act: Activation,
    pub im2col: Option<[usize; 12]>,
    /// f16 operands and result (f32 accumulation).
    pub half: bool,
}

impl Gemm {
    pub(crate) fn spec(&self, a: Bind, b: Bind, bias: Bind) -> Result<Spec, String> {
        let batch: Vec<_> = self.batch.iter().filter(|b| b.0 > 1).collect();
        if batch.len() > 3 {
            return Err("more than three batch axes stay on the CPU".into());
        }
        let mut shape = [1usize; 3];
        let mut sa = [0usize; 3];
        let mut sb = [0usize; 3];
        let mut sc = [0usize; 3];
        let off = 3 - batch.len();
        let mut sbias = [0usize; 3];
        for (i, &&(size, x, y, z, w)) in batch.iter().enumerate() {
            shape[off + i] = size;
            sa[off + i] = x;
            sb[off + i] = y;
            sc[off + i] = z;
            sbias[off + i] = w;
        }
        let count: usize = shape.iter().product();
        // Wide tiles only pay off when both sides fill them.
        let wide = self.m >= 256 && self.n >= 256;
        let kernel = Kernel::Gemm {
            wide,
            im2col: self.im2col.is_some(),
            half: self.half,
        };
        let tile = kernel.tile() as usize;
        let gx = u(self.n.div_ceil(tile).max(1))?;
        let gy = u(self.m.div_ceil(tile).max(1))?;
        let gz = u(count)?;
        if gx > MAX_GROUPS || gy > MAX_GROUPS || gz > MAX_GROUPS {
            return Err(format!(
                "a {}x{}x{} GEMM in {count} batches exceeds the dispatch grid",
                self.m, self.n, self.k
            ));
        }
        let mut params: Vec<u32> = [self.m, self.n, self.k, count]
            .iter()
            .chain(&shape)
            .chain(&sa)
            .chain(&sb)
            .chain(&sc)
            .chain(&[self.a.0, self.a.1, self.b.0, self.b.1, self.c.0, self.c.1])
            .map(|&x| u(x))
            .collect::<Result<_, _>>()?;
        params.extend([
            u32::from(self.bias.is_some()),
            self.act.op,
            f(self.act.a),
            f(self.act.b),
        ]);
        params.extend(
            self.im2col
                .unwrap_or_default()
                .iter()
                .map(|&x| u(x))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let (brs, bcs) = self.bias.unwrap_or((0, 0));
        params.extend([u(brs)?, u(bcs)?]);
        params.extend(sbias.iter().map(|&x| u(x)).collect::<Result<Vec<_>, _>>()?);
        // Operands start at their bindings' first element.
        params.extend([0; 4]);
        debug_assert_eq!(params.len(), gp::LEN);
        Ok(Spec {
            kernel,
            params,
            binds: vec![a, b, bias, Bind::Output],
            groups: [gx, gy, gz],
        })
    }
}

/// EinSum as a batched GEMM: axes in both inputs and the output are batch
/// axes, in A and C only `m`, in B and C only `n`, in A and B only `k`.
/// Axes of size 1 are ignored wherever they are; anything else (two `k`
/// axes, an axis summed over one input) stays on the CPU.
pub(crate) fn einsum(
    op: &EinSum,
    ins: &[Vec<usize>],
    out: &[usize],
    bias: Option<&[usize]>,
    act: Activation,
) -> Result<Lowered, String> {
    let half = op.operating_dt == f16::datum_type();
    if op.q_params.is_some() || ins.len() != 2 || !(half || op.operating_dt == f32::datum_type()) {
        return Err("only two-input f32 or f16 EinSum runs on the GPU".into());
    }
    let sa = strides(&ins[0]);
    let sb = strides(&ins[1]);
    let sc = strides(out);
    // A fused bias is a fourth operand, broadcast to the output's shape.
    let sbias = match bias {
        Some(shape) => broadcast_strides(shape, out)?,
        None => vec![0; out.len()],
    };
    let (mut m, mut n, mut k) = (Vec::new(), Vec::new(), Vec::new());
    let mut batch = Vec::new();
    for axis in op.axes.iter_all_axes() {
        let pos = |v: &TVec<TVec<usize>>, i: usize| -> Result<Option<usize>, String> {
            match v.get(i).map(|p| p.len()).unwrap_or(0) {
                0 => Ok(None),
                1 => Ok(Some(v[i][0])),
                _ => Err("an axis repeated within one operand stays on the CPU".to_string()),
            }
        };
        let (pa, pb, pc) = (
            pos(&axis.inputs, 0)?,
            pos(&axis.inputs, 1)?,
            pos(&axis.outputs, 0)?,
        );
        let size = pa
            .map(|p| ins[0][p])
            .or(pb.map(|p| ins[1][p]))
            .or(pc.map(|p| out[p]))
            .unwrap_or(1);
        let size_c = pc.map(|p| out[p]).unwrap_or(1);
        if size == 1 && size_c == 1 {
            continue;
        }
        let stride = |p: Option<usize>, s: &[usize], shape: &[usize]| {
            p.filter(|&p| shape[p] > 1).map(|p| s[p]).unwrap_or(0)
        };
        let (xa, xb, xc) = (
            stride(pa, &sa, &ins[0]),
            stride(pb, &sb, &ins[1]),
            stride(pc, &sc, out),
        );
        let xd = pc.map(|p| sbias[p]).unwrap_or(0);
        match (pa.is_some(), pb.is_some(), pc.is_some()) {
            (true, true, true) => batch.push((size_c, xa, xb, xc, xd)),
            (true, false, true) => m.push((size, xa, xb, xc, xd)),
            (false, true, true) => n.push((size, xa, xb, xc, xd)),
            (true, true, false) => k.push((size, xa, xb, xc, xd)),
            _ => {
                return Err(format!(
                    "EinSum axis `{}` of size {size} is summed over one operand; stays on the CPU",
                    axis.repr
                ));
            }
        }
    }
    // An `m` or `n` axis that does not merge with the innermost ones (the
    // batch of a batched 1x1 convolution, outside its channels) is a batch
    // axis that one operand broadcasts along.
    let (m, n, k) = (merge_axes(m), merge_axes(n), merge_axes(k));
    if k.len() > 1 {
        return Err("EinSum with two non-adjacent summed axes stays on the CPU".into());
    }
    batch.extend(m.iter().skip(1).copied());
    batch.extend(n.iter().skip(1).copied());
    let (m, n, k) = (m.first().copied(), n.first().copied(), k.first().copied());
    let (mm, ma, _, mc, md) = m.unwrap_or((1, 0, 0, 0, 0));
    let (nn, _, nb, nc, nd) = n.unwrap_or((1, 0, 0, 0, 0));
    let (kk, ka, kb, _, _) = k.unwrap_or((1, 0, 0, 0, 0));
    let bias_bind = if bias.is_some() {
        Bind::Input(2)
    } else {
        Bind::Dummy
    };
    let geo = Gemm {
        m: mm,
        n: nn,
        k: kk,
        batch,
        a: (ma, ka),
        b: (kb, nb),
        c: (mc, nc),
        bias: bias.map(|_| (md, nd)),
        act,
        im2col: None,
        half,
    };
    Ok(Lowered::Kernels(vec![geo.spec(
        Bind::Input(0),
        Bind::Input(1),
        bias_bind,
    )?]))
}

/// Several axes of one GEMM role become one where they are adjacent in
/// memory in every operand (the `H` and `W` of a 1x1 convolution written as
/// EinSum). Returns the merged groups, innermost first: more than one when
/// some are not adjacent (the `N` and `HW` of a batched one, with the
/// channels between them).
fn merge_axes(mut axes: Vec<Axis>) -> Vec<Axis> {
    // Innermost last: the smallest largest stride in any operand.
    axes.sort_by_key(|a| std::cmp::Reverse(a.1.max(a.2).max(a.3)));
    let mut groups: Vec<Axis> = Vec::new();
    while let Some(outer) = axes.pop() {
        let fits = |o: usize, i: usize, size: usize| o == i * size;
        match groups.last_mut() {
            Some(g)
                if fits(outer.1, g.1, g.0)
                    && fits(outer.2, g.2, g.0)
                    && fits(outer.3, g.3, g.0)
                    && fits(outer.4, g.4, g.0) =>
            {
                *g = (g.0 * outer.0, g.1, g.2, g.3, g.4);
            }
            _ => groups.push(outer),
        }
    }
    groups
}

/// Lower a convolution or EinSum with a fused activation (the planner
/// calls this when the only consumer of its output is that activation).
///
/// `bias` (EinSum only) is the shape of a constant added to the output,
/// bound as the step's third input.
pub(crate) fn lower_fused(
    op: &dyn TypedOp,
    ins: &[Vec<usize>],
    out: &[usize],
    bias: Option<&[usize]>,
    act: Activation,
) -> Option<Lowered> {
    if let Some(op) = op.downcast_ref::<Conv>() {
        return bias
            .is_none()
            .then(|| conv(op, ins, out, act).ok())
            .flatten();
    }
    if let Some(op) = op.downcast_ref::<EinSum>() {
        return einsum(op, ins, out, bias, act).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn broadcasting_zeroes_strides() {
        assert_eq!(
            broadcast_strides(&[3, 1], &[2, 3, 4]).unwrap(),
            vec![0, 1, 0]
        );
        assert!(broadcast_strides(&[3, 2], &[3, 4]).is_err());
    }

    #[test]
    fn collapsing_merges_what_strides_allow() {
        // A contiguous tensor plus a scalar: one dimension.
        let (shape, s) = collapse(&[2, 3, 4], &[vec![12, 4, 1], vec![0, 0, 0]], None);
        assert_eq!((shape, s), (vec![24], vec![vec![1], vec![0]]));
        // A per-channel bias [C,1,1] on [N,C,H,W]: N stays, H*W merges.
        let (shape, s) = collapse(&[2, 3, 4, 5], &[vec![60, 20, 5, 1], vec![0, 1, 0, 0]], None);
        assert_eq!(shape, vec![2, 3, 20]);
        assert_eq!(s, vec![vec![60, 20, 1], vec![0, 1, 0]]);
        // Upsampled dimensions never merge.
        let (shape, _) = collapse(
            &[3, 4, 6],
            &[vec![8, 2, 1], vec![24, 6, 1], vec![1, 2, 2]],
            Some(2),
        );
        assert_eq!(shape, vec![3, 4, 6]);
    }

    #[test]
    fn large_launches_use_two_dimensions() {
        assert_eq!(grid(256).unwrap(), [1, 1, 1]);
        let [x, y, _] = grid(256 * 70_000).unwrap();
        assert!(x <= MAX_GROUPS && x * y >= 70_000);
    }
}
