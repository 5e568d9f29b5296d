//! Spatial cuts of the direct kernels: a pooling or depthwise convolution
//! by channel and output rows ([`cut_planes`]), a transposed convolution by
//! output channels, output rows and input channels ([`cut_deconv`]).

use super::gemm::{Gather, K, M, N, choose};
use super::{Limits, MAX_PARTS, Split, bind_window};
use crate::kernels::Kernel;
use crate::lower::Spec;

/// Where a direct convolution's or a pooling's parameter words are
/// (conv.wgsl's and pool.wgsl's layouts), for [`cut_planes`].
struct Window {
    out: usize,
    /// Input channels (a pooling's batch times channels), H, W.
    channels: usize,
    h: usize,
    w: usize,
    /// Output channels (`None`: a pooling, one a plane), OH, OW.
    out_channels: Option<usize>,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sy: usize,
    dy: usize,
    pt: usize,
}

const CONV: Window = Window {
    out: 0,
    channels: 1,
    h: 2,
    w: 3,
    out_channels: Some(4),
    oh: 5,
    ow: 6,
    kh: 7,
    kw: 8,
    sy: 9,
    dy: 11,
    pt: 13,
};
/// A direct convolution's input channels a group, output channels a
/// group, and bias length.
const CONV_CIG: usize = 15;
const CONV_COG: usize = 16;
const CONV_BIAS: usize = 17;

const POOL: Window = Window {
    out: 0,
    channels: 1,
    h: 2,
    w: 3,
    out_channels: None,
    oh: 4,
    ow: 5,
    kh: 6,
    kw: 7,
    sy: 8,
    dy: 12,
    pt: 10,
};

/// Cut a pooling or a depthwise convolution (`spec`, one dispatch) one of
/// whose channels is over the limit into parts of one output channel and
/// a range of its rows each, each binding the input rows under them (their
/// halo included), its kernel row and its bias.
pub(super) fn cut_planes(spec: &Spec, elem: usize, limits: Limits) -> Result<Split, String> {
    let win = match spec.kernel {
        Kernel::Conv { .. } => &CONV,
        Kernel::Pool { .. } => &POOL,
        _ => return Err("not a pooling or direct convolution".into()),
    };
    let p = &spec.params;
    let w = |i: usize| u64::from(p[i]);
    if win.out_channels.is_some() && w(CONV_CIG) != 1 {
        return Err(format!(
            "a convolution with {} input channels a group is not cut along its rows",
            w(CONV_CIG)
        ));
    }
    let g = Gather {
        kk: w(win.kh) * w(win.kw),
        hw: w(win.h) * w(win.w),
        h: w(win.h),
        w: w(win.w),
        ow: w(win.ow),
        kh: w(win.kh),
        sy: w(win.sy),
        dy: w(win.dy),
        pt: w(win.pt),
    };
    let (oh, ow) = (w(win.oh), g.ow);
    // Output planes: (batch, output channel) of a convolution, (batch,
    // channel) of a pooling.
    let co = win.out_channels.map_or(1, w);
    let planes = w(win.out) / (oh * ow).max(1);
    if planes == 0 || g.h == 0 || g.w == 0 {
        return Err("an empty output".into());
    }
    let (elem, align) = (elem as u64, limits.align.max(4));
    let room = |n: u64| n * elem + align - elem <= limits.binding;
    // The longest run of output rows whose input rows (wherever they
    // start) and output rows fit.
    let fits = |ly: u64| {
        let rows = g.h.min((ly - 1) * g.sy + (g.kh - 1) * g.dy + 1);
        room(rows * g.w) && room(ly * ow)
    };
    if !fits(1) || !room(g.kk) {
        return Err(format!(
            "one output row reads a {}-row window of {}-element input rows, over the limit",
            g.h.min((g.kh - 1) * g.dy + 1),
            g.w
        ));
    }
    let (mut lo, mut hi) = (1, oh);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    let ly = lo;
    let parts = planes * oh.div_ceil(ly);
    if parts > MAX_PARTS as u64 {
        return Err(format!(
            "{parts} parts of {ly} rows of {planes} channels, more than {MAX_PARTS}"
        ));
    }
    let u = |x: u64| u32::try_from(x).map_err(|_| format!("{x} exceeds a u32 kernel parameter"));
    let bind = |part: &mut Spec, slot: usize, (first, len): (u64, u64)| {
        bind_window(part, slot, (first, first + len - 1), elem, limits)
    };
    let out_slot = spec.binds.len() - 1;
    let mut specs = Vec::with_capacity(parts as usize);
    for plane in 0..planes {
        // The input plane: a convolution's output channel reads its group's
        // one input channel.
        let (n, c) = (plane / co, plane % co);
        let input = match win.out_channels {
            Some(_) => n * w(win.channels) + c / w(CONV_COG).max(1),
            None => plane,
        };
        for y0 in (0..oh).step_by(ly as usize) {
            let rows = ly.min(oh - y0);
            let (a, b, pt) = g
                .rows(y0, rows)
                .ok_or_else(|| format!("output rows {y0}..{} read padding only", y0 + rows))?;
            let mut part = spec.clone();
            part.params[win.out] = u(rows * ow)?;
            part.params[win.channels] = 1;
            part.params[win.h] = u(b - a)?;
            part.params[win.oh] = u(rows)?;
            part.params[win.pt] = u(pt)?;
            bind(&mut part, 0, (input * g.hw + a * g.w, (b - a) * g.w))?;
            bind(&mut part, out_slot, ((plane * oh + y0) * ow, rows * ow))?;
            if let Some(at) = win.out_channels {
                part.params[at] = 1;
                // Its kernel row and bias element.
                bind(&mut part, 1, (c * g.kk, g.kk))?;
                if w(CONV_BIAS) > 1 {
                    part.params[CONV_BIAS] = 1;
                    bind(&mut part, 2, (c, 1))?;
                } else if w(CONV_BIAS) == 1 {
                    bind(&mut part, 2, (0, 1))?;
                }
            }
            part.groups = crate::lower::grid((rows * ow) as usize)?;
            specs.push(part);
        }
    }
    Ok(Split {
        specs,
        parts: parts as usize,
    })
}

/// Cut a transposed convolution (`spec`, one deconv.wgsl dispatch, in one
/// group) along its output channels, its output rows and its input
/// channels at once, as [`choose`] finds fewest: each part binds the input
/// rows its output rows gather from, of its input channels, and the parts
/// over input channels add into the output, the last adding the bias.
pub(super) fn cut_deconv(spec: &Spec, elem: usize, limits: Limits) -> Result<Split, String> {
    let p = &spec.params;
    let w = |i: usize| u64::from(p[i]);
    let (ci, h, wd, co, oh, ow) = (w(1), w(2), w(3), w(4), w(5), w(6));
    let (kh, kk, sy, dy, pt) = (w(7), w(7) * w(8), w(9), w(11), w(13));
    if w(15) != ci {
        return Err(format!(
            "a transposed convolution in {} groups is cut only along its batch or output channels",
            ci / w(15).max(1)
        ));
    }
    if [ci, h, wd, co, oh, ow, kh, sy].contains(&0) {
        return Err("an empty transposed convolution".into());
    }
    let batch = w(0) / (co * oh * ow);
    let bias_len = w(17);
    let (hw, ohw) = (h * wd, oh * ow);
    // Input rows `a..b` that output rows `y0..y0 + ly` gather from, and
    // the padding the part sees above them: `a` is rounded down (one spare
    // row) where rounding up would make that padding negative.
    let rows = |y0: u64, ly: u64| {
        let reach = (kh - 1) * dy;
        let lo = match (y0 + pt).checked_sub(reach) {
            Some(t) if t.div_ceil(sy) * sy <= y0 + pt => t.div_ceil(sy),
            Some(t) => t / sy,
            None => 0,
        };
        let a = lo.min(h - 1);
        let b = ((y0 + ly - 1 + pt) / sy + 1).clamp(a + 1, h);
        (a, b, y0 + pt - a * sy)
    };
    // Worst-case elements of each operand for lengths [co, rows, ci].
    let (elem, align) = (elem as u64, limits.align.max(4));
    let room = |n: u64| n * elem + align - elem <= limits.binding;
    let fits = |[lc, ly, lk]: [u64; 3]| {
        let in_rows = h.min((ly - 1 + (kh - 1) * dy) / sy + 2);
        room((lk - 1) * hw + in_rows * wd)
            && room((lc - 1) * ohw + ly * ow)
            && room((lc - 1) * ci * kk + lk * kk)
    };
    let Some((lens, per)) = choose([co, oh, ci], [1; 3], [1; 3], fits) else {
        return Err(
            "no cut along its output channels, output rows or input channels keeps every operand's part within it"
                .into(),
        );
    };
    let parts = per * batch;
    if parts > MAX_PARTS as u64 {
        return Err(format!("{parts} parts, more than {MAX_PARTS}"));
    }
    let u = |x: u64| u32::try_from(x).map_err(|_| format!("{x} exceeds a u32 kernel parameter"));
    let bind = |part: &mut Spec, slot: usize, window: (u64, u64)| {
        bind_window(part, slot, window, elem, limits)
    };
    let starts = |a: usize, dim: u64| (0..dim).step_by(lens[a] as usize);
    let kparts = ci.div_ceil(lens[K]);
    let mut specs = Vec::with_capacity(parts as usize);
    for n in 0..batch {
        for o0 in starts(M, co) {
            let o1 = co.min(o0 + lens[M]);
            for y0 in starts(N, oh) {
                let y1 = oh.min(y0 + lens[N]);
                let (a, b, pad) = rows(y0, y1 - y0);
                for (ki, c0) in starts(K, ci).enumerate() {
                    let c1 = ci.min(c0 + lens[K]);
                    let last = ki as u64 + 1 == kparts;
                    let mut part = spec.clone();
                    let q = &mut part.params;
                    q[0] = u((o1 - o0) * (y1 - y0) * ow)?;
                    (q[1], q[15]) = (u(c1 - c0)?, u(c1 - c0)?);
                    q[2] = u(b - a)?;
                    (q[4], q[16]) = (u(o1 - o0)?, u(o1 - o0)?);
                    q[5] = u(y1 - y0)?;
                    q[13] = u(pad)?;
                    q[22] = u32::from(ki > 0);
                    if !last {
                        q[17] = 0;
                    }
                    bind(
                        &mut part,
                        0,
                        (
                            (n * ci + c0) * hw + a * wd,
                            (n * ci + c1 - 1) * hw + b * wd - 1,
                        ),
                    )?;
                    bind(
                        &mut part,
                        1,
                        ((o0 * ci + c0) * kk, ((o1 - 1) * ci + c1) * kk - 1),
                    )?;
                    match bias_len {
                        0 => {}
                        1 => bind(&mut part, 2, (0, 0))?,
                        _ => bind(&mut part, 2, (o0, o1 - 1))?,
                    }
                    bind(
                        &mut part,
                        3,
                        (
                            (n * co + o0) * ohw + y0 * ow,
                            (n * co + o1 - 1) * ohw + y1 * ow - 1,
                        ),
                    )?;
                    part.groups = crate::lower::grid(((o1 - o0) * (y1 - y0) * ow) as usize)?;
                    specs.push(part);
                }
            }
        }
    }
    Ok(Split {
        specs,
        parts: parts as usize,
    })
}
