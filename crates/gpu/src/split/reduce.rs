//! A reduction one of whose reduced runs is over the binding limit, cut
//! along its outermost reduced axis (and its outermost kept one): each part
//! reduces a range of the reduced axis, and the parts after the first fold
//! their results into what the output holds ([`cut_reduce`]).

use super::gemm::{K, M, choose};
use super::{Limits, MAX_PARTS, Split, bind_window};
use crate::kernels::Kernel;
use crate::lower::Spec;

/// reduce.wgsl's parameter words: output count, reduced count, then six
/// output extents, six input strides and six reduced extents; the combine
/// flag.
const N_OUT: usize = 0;
const N_RED: usize = 2;
const OUT_SHAPE: usize = 3;
const STRIDES: usize = 9;
const RED_SHAPE: usize = 15;
const COMBINE: usize = 23;

/// Cut a reduction (`spec`, one reduce.wgsl dispatch) along its outermost
/// reduced axis of extent above one and its outermost kept one, as
/// [`choose`] finds fewest parts: every part binds the strided window of
/// the input it reads and the contiguous run of outputs it writes.
pub(super) fn cut_reduce(spec: &Spec, elem: usize, limits: Limits) -> Result<Split, String> {
    if !matches!(spec.kernel, Kernel::Reduce { .. }) {
        return Err("not a reduction".into());
    }
    let p = &spec.params;
    let w = |i: usize| u64::from(p[i]);
    let out: Vec<u64> = (0..6).map(|d| w(OUT_SHAPE + d)).collect();
    let red: Vec<u64> = (0..6).map(|d| w(RED_SHAPE + d)).collect();
    let stride: Vec<u64> = (0..6).map(|d| w(STRIDES + d)).collect();
    let Some(ra) = (0..6).find(|&d| red[d] > 1) else {
        return Err("a reduction over nothing".into());
    };
    // The kept axis cut, if any: the outermost of extent above one, so the
    // outputs of a range along it are one run.
    let ka = (0..6).find(|&d| out[d] > 1);
    let kept = ka.map_or(1, |a| out[a]);
    let run = ka.map_or(1, |a| out[a + 1..].iter().product());
    // Elements a window of `lk` kept by `lr` reduced indices spans.
    let reach = |d: usize, extent: u64| (extent - 1) * stride[d];
    let span = |lk: u64, lr: u64| -> u64 {
        let rest: u64 = (0..6)
            .filter(|&d| d != ra && Some(d) != ka)
            .map(|d| reach(d, out[d] * red[d]))
            .sum();
        rest + reach(ra, lr) + ka.map_or(0, |a| reach(a, lk)) + 1
    };
    let (elem, align) = (elem as u64, limits.align.max(4));
    let room = |n: u64| n * elem + align - elem <= limits.binding;
    let fits = |[lk, _, lr]: [u64; 3]| room(span(lk, lr)) && room(lk * run);
    let dims = [kept, 1, red[ra]];
    let Some((lens, parts)) = choose(dims, [1; 3], [1; 3], fits) else {
        return Err(format!(
            "no cut along its reduced axis keeps a part within it (a run of {} input elements a part at least)",
            span(1, 1)
        ));
    };
    if parts > MAX_PARTS as u64 {
        return Err(format!("{parts} parts, more than {MAX_PARTS}"));
    }
    let (n_out, n_red) = (w(N_OUT), w(N_RED));
    let mut specs = Vec::with_capacity(parts as usize);
    for k0 in (0..kept).step_by(lens[M] as usize) {
        let lk = lens[M].min(kept - k0);
        for (ri, r0) in (0..red[ra]).step_by(lens[K] as usize).enumerate() {
            let lr = lens[K].min(red[ra] - r0);
            let mut part = spec.clone();
            let q = &mut part.params;
            let u = |x: u64| {
                u32::try_from(x).map_err(|_| format!("{x} exceeds a u32 kernel parameter"))
            };
            q[N_OUT] = u(n_out / kept * lk)?;
            q[N_RED] = u(n_red / red[ra] * lr)?;
            q[RED_SHAPE + ra] = u(lr)?;
            if let Some(a) = ka {
                q[OUT_SHAPE + a] = u(lk)?;
            }
            q[COMBINE] = u32::from(ri > 0);
            let first = r0 * stride[ra] + ka.map_or(0, |a| k0 * stride[a]);
            bind_window(
                &mut part,
                0,
                (first, first + span(lk, lr) - 1),
                elem,
                limits,
            )?;
            bind_window(&mut part, 1, (k0 * run, (k0 + lk) * run - 1), elem, limits)?;
            part.groups = crate::lower::grid((n_out / kept * lk) as usize)?;
            specs.push(part);
        }
    }
    Ok(Split {
        specs,
        parts: parts as usize,
    })
}
