//! Cutting an encoded GEMM along m, n and k ([`cut_gemm`]), and the
//! choice of part lengths over three axes ([`choose`]) that the spatial
//! cuts share.

use super::{Limits, MAX_PARTS, Split, bind_window};
use crate::kernels::Kernel;
use crate::lower::{Spec, gp};

/// Whether `spec` is a GEMM dispatch, and if so whether it gathers B as
/// an implicit im2col.
pub(super) fn gemm(spec: &Spec) -> Option<bool> {
    match spec.kernel {
        Kernel::Gemm { im2col, .. } => Some(im2col),
        _ => None,
    }
}

/// The GEMM axes, as indices into `[m, n, k]`.
pub(super) const M: usize = 0;
pub(super) const N: usize = 1;
pub(super) const K: usize = 2;

/// One operand of an encoded GEMM: where it is bound and how it is
/// addressed (its first element goes in the kernel's base parameter for
/// the slot, `Kernel::base`).
struct Operand {
    /// Its entry in `Spec::binds`.
    slot: usize,
    /// Element strides along m, n and k.
    strides: [u64; 3],
    /// Element strides along the three batch axes.
    batch: [u64; 3],
    /// An im2col-gathered B, whose windows follow channels and rows.
    gather: Option<Gather>,
}

/// An im2col-gathered B (a convolution's input): k runs over
/// `(channel, ky, kx)` and n over output pixels `(oy, ox)`, so a range of
/// k is whole input channels and a range of n whole output rows, which
/// read the input rows under them, their halo included.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gather {
    /// k indices a channel (`kh * kw`) and elements a channel (`h * w`).
    pub(super) kk: u64,
    pub(super) hw: u64,
    /// Input height and width, output width.
    pub(super) h: u64,
    pub(super) w: u64,
    pub(super) ow: u64,
    /// Kernel height, stride and dilation along it, padding above.
    pub(super) kh: u64,
    pub(super) sy: u64,
    pub(super) dy: u64,
    pub(super) pt: u64,
}

impl Gather {
    fn of(p: &[u32]) -> Gather {
        let w = |i: usize| u64::from(p[i]);
        Gather {
            kk: w(gp::KH) * w(gp::KW),
            hw: w(gp::HW),
            h: w(gp::H),
            w: w(gp::W),
            ow: w(gp::OW),
            kh: w(gp::KH),
            sy: w(gp::SY),
            dy: w(gp::DY),
            pt: w(gp::PT),
        }
    }

    /// The input rows `a..b` that output rows `y0..y0 + ly` read, and the
    /// padding above row `a` they see; `None` when they read padding only.
    pub(super) fn rows(&self, y0: u64, ly: u64) -> Option<(u64, u64, u64)> {
        let (h, pt) = (self.h as i64, self.pt as i64);
        let lo = (y0 * self.sy) as i64 - pt;
        let hi = ((y0 + ly.max(1) - 1) * self.sy + (self.kh - 1) * self.dy + 1) as i64 - pt;
        let (a, b) = (lo.clamp(0, h), hi.clamp(0, h));
        (a < b).then_some((a as u64, b as u64, (-lo).max(0) as u64))
    }

    /// The output rows a part along n covers (n ranges are whole rows).
    pub(super) fn out_rows(&self, (n0, ln): (u64, u64)) -> (u64, u64) {
        (n0 / self.ow, ln.div_ceil(self.ow))
    }
}

impl Operand {
    /// First and last element a part with ranges `r` (start, length along
    /// m, n, k) reads or writes, all batches included.
    fn span(&self, shape: [u64; 3], r: [(u64, u64); 3]) -> (u64, u64) {
        let batches: u64 = (0..3).map(|i| (shape[i] - 1) * self.batch[i]).sum();
        if let Some(g) = self.gather {
            let (k0, lk) = r[K];
            let (c0, c1) = (k0 / g.kk, (k0 + lk).div_ceil(g.kk));
            let (y0, ly) = g.out_rows(r[N]);
            // Rows that read padding only bind one row (and are refused
            // when emitted).
            let (a, b) = g.rows(y0, ly).map_or((0, 1), |(a, b, _)| (a, b));
            return (c0 * g.hw + a * g.w, (c1 - 1) * g.hw + b * g.w - 1 + batches);
        }
        let first: u64 = (0..3).map(|a| r[a].0 * self.strides[a]).sum();
        let extent: u64 = (0..3).map(|a| (r[a].1 - 1) * self.strides[a]).sum();
        (first, first + extent + batches)
    }

    /// The most elements a part of lengths `lens` spans, wherever it
    /// starts: a strided window is the same anywhere, a gathered one is
    /// widest away from the padding.
    fn widest(&self, shape: [u64; 3], lens: [u64; 3]) -> u64 {
        let Some(g) = self.gather else {
            let (first, last) = self.span(shape, lens.map(|l| (0, l)));
            return last - first + 1;
        };
        let batches: u64 = (0..3).map(|i| (shape[i] - 1) * self.batch[i]).sum();
        let channels = lens[K].div_ceil(g.kk);
        let (_, ly) = g.out_rows((0, lens[N]));
        let rows = g.h.min((ly.max(1) - 1) * g.sy + (g.kh - 1) * g.dy + 1);
        (channels - 1) * g.hw + rows * g.w + batches
    }
}

/// The part lengths along `[m, n, k]` (two output axes and one summed
/// over, whose parts add up) that `fits` and need the fewest parts, with
/// that count: lengths in multiples of `unit`, rounded down to multiples
/// of `step` where longer.
///
/// Candidates cut no output axis, one, or both (grown in either order),
/// and k or not: k grows first, with the cut output axes at their
/// shortest, then each cut output axis in turn as long as fits.
pub(super) fn choose(
    dims: [u64; 3],
    unit: [u64; 3],
    step: [u64; 3],
    fits: impl Fn([u64; 3]) -> bool,
) -> Option<([u64; 3], u64)> {
    // The longest length along `axis` that fits, the others as in `lens`.
    let longest = |axis: usize, lens: [u64; 3]| -> Option<u64> {
        let u = unit[axis];
        let at = |n: u64| {
            let mut l = lens;
            l[axis] = n * u;
            fits(l)
        };
        let (mut lo, mut hi) = (0, dims[axis] / u);
        if !at(1) {
            return None;
        }
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if at(mid) { lo = mid } else { hi = mid - 1 }
        }
        let (len, step) = (lo * u, step[axis]);
        Some(if len >= step { len / step * step } else { len })
    };
    let outs: [&[usize]; 5] = [&[], &[M], &[N], &[M, N], &[N, M]];
    let mut best: Option<([u64; 3], u64)> = None;
    for out_axes in outs {
        'candidate: for cut_k in [false, true] {
            let mut lens = dims;
            for &a in out_axes {
                lens[a] = unit[a];
            }
            if cut_k {
                let Some(l) = longest(K, lens) else { continue };
                lens[K] = l;
            }
            for &a in out_axes {
                lens[a] = dims[a];
                let Some(l) = longest(a, lens) else {
                    continue 'candidate;
                };
                lens[a] = l;
            }
            if !fits(lens) {
                continue;
            }
            let parts: u64 = (0..3).map(|a| dims[a].div_ceil(lens[a])).product();
            if best.is_none_or(|(_, p)| parts < p) {
                best = Some((lens, parts));
            }
        }
    }
    best
}

/// Cut an encoded GEMM (`spec`, elements of `elem` bytes) into parts that
/// bind within `limits`: along any of m, n and k at once, whichever cut
/// needs the fewest parts.
///
/// Every operand is bound as the byte window its part touches (from an
/// aligned offset; the kernel starts at `gp::*_BASE` within it), so a part
/// may read strided rows or columns: a GEMM whose weights exceed the limit
/// is cut along n when they are stored n-major, along k when k-major. The
/// parts of a cut along k add into C in order; only the last adds the bias
/// and applies the activation. An im2col B (a convolution's input) is cut
/// along k by whole input channels and along n by whole output rows, each
/// part binding the input rows under its own (a spatial cut, with halo).
pub(super) fn cut_gemm(spec: &Spec, elem: usize, limits: Limits) -> Result<Split, String> {
    let im2col = gemm(spec).ok_or("not a GEMM")?;
    let p = &spec.params;
    let w = |i: usize| u64::from(p[i]);
    let dims = [w(gp::M), w(gp::N), w(gp::K)];
    let shape = [w(gp::BATCH), w(gp::BATCH + 1), w(gp::BATCH + 2)];
    if dims.contains(&0) || shape.contains(&0) {
        return Err("an empty GEMM".into());
    }
    let batch = |at: usize| [w(at), w(at + 1), w(at + 2)];
    let gather = im2col.then(|| Gather::of(p));
    let mut operands = vec![
        Operand {
            slot: 0,
            strides: [w(gp::A_RS), 0, w(gp::A_CS)],
            batch: batch(gp::A_BATCH),
            gather: None,
        },
        Operand {
            slot: 1,
            strides: [0, w(gp::B_CS), w(gp::B_RS)],
            batch: batch(gp::B_BATCH),
            gather,
        },
        Operand {
            slot: 3,
            strides: [w(gp::C_RS), w(gp::C_CS), 0],
            batch: batch(gp::C_BATCH),
            gather: None,
        },
    ];
    let mode = p[gp::MODE];
    if mode & gp::ADD_BIAS != 0 {
        operands.push(Operand {
            slot: 2,
            strides: [w(gp::BIAS_RS), w(gp::BIAS_CS), 0],
            batch: batch(gp::BIAS_BATCH),
            gather: None,
        });
    }
    let (elem, align) = (elem as u64, limits.align.max(4));
    // A window starts at most `align - elem` bytes before its first element.
    let whole = |lens: [u64; 3]| {
        (operands.iter()).all(|o| o.widest(shape, lens) * elem + align - elem <= limits.binding)
    };
    // Along k, whole input channels for an im2col B, and along n whole
    // output rows; tile-sized steps along m and n (and BK along k) keep
    // the parts' tiles full.
    let tile = u64::from(spec.kernel.tile());
    let (unit, step) = match gather {
        Some(g) => ([1, g.ow, g.kk], [tile, g.ow, g.kk]),
        None => ([1, 1, 1], [tile, tile, 16]),
    };
    let best = choose(dims, unit, step, whole);
    let gemm_over = |why: String| format!("as a {}x{}x{} GEMM, {why}", dims[M], dims[N], dims[K]);
    let Some((lens, parts)) = best else {
        return Err(gemm_over(
            "no cut along m, n or k keeps every operand's part within it".into(),
        ));
    };
    if parts > MAX_PARTS as u64 {
        return Err(gemm_over(format!("{parts} parts, more than {MAX_PARTS}")));
    }
    let starts = |a: usize| (0..dims[a]).step_by(lens[a] as usize);
    let u = |x: u64| u32::try_from(x).map_err(|_| format!("{x} exceeds a u32 kernel parameter"));
    let mut specs = Vec::with_capacity(parts as usize);
    for m0 in starts(M) {
        for n0 in starts(N) {
            let kparts = dims[K].div_ceil(lens[K]);
            for (ki, k0) in starts(K).enumerate() {
                let r = [M, N, K].map(|a| {
                    let s = [m0, n0, k0][a];
                    (s, lens[a].min(dims[a] - s))
                });
                let mut part = spec.clone();
                for a in [M, N, K] {
                    part.params[[gp::M, gp::N, gp::K][a]] = u(r[a].1)?;
                }
                // A gathered B's part sees only the input rows it reads:
                // as high as they are, with the padding above them.
                if let Some(g) = gather {
                    let (y0, ly) = g.out_rows(r[N]);
                    let (a, b, pt) = g.rows(y0, ly).ok_or_else(|| {
                        gemm_over(format!("output rows {y0}..{} read padding only", y0 + ly))
                    })?;
                    part.params[gp::H] = u(b - a)?;
                    part.params[gp::PT] = u(pt)?;
                }
                for o in &operands {
                    bind_window(&mut part, o.slot, o.span(shape, r), elem, limits)
                        .map_err(gemm_over)?;
                }
                // Along k: the first part writes, the others add; the
                // epilogue belongs to the last.
                if kparts > 1 {
                    let last = ki as u64 + 1 == kparts;
                    let add = if ki > 0 { gp::ACCUMULATE } else { 0 };
                    part.params[gp::MODE] = add | if last { mode } else { 0 };
                    if !last {
                        part.params[gp::ACT] = 0;
                    }
                }
                part.groups[0] = u(r[N].1.div_ceil(tile).max(1))?;
                part.groups[1] = u(r[M].1.div_ceil(tile).max(1))?;
                specs.push(part);
            }
        }
    }
    Ok(Split {
        specs,
        parts: parts as usize,
    })
}
