//! Cooperative matrices (tensor cores) for f16 GEMMs: which kernel variant
//! a device gets and which GEMM dispatches move onto it. Whether an adapter
//! offers them is the device's business (`device::coop_offered`); whether the
//! kernel computes the right thing there is checked by `probe` before any
//! plan may use it.

use crate::kernels::Kernel;
use crate::lower::Spec;

/// Smallest GEMM sides worth a 128 x 128 tensor-core tile.
const MIN_SIDE: u32 = 64;

/// The kernel variant for a device: K staged 32 at a time where the
/// workgroup memory (24 KiB then) allows, else 16.
pub(crate) fn kernel(subgroup: u32, limits: &wgpu::Limits) -> Kernel {
    let bk = if limits.max_compute_workgroup_storage_size >= 24 * 1024 {
        32
    } else {
        16
    };
    Kernel::CoopGemm { subgroup, bk }
}

/// Move an f16 GEMM dispatch (not an implicit-GEMM convolution) with both
/// sides at least [`MIN_SIDE`] onto `coop`: same parameters, 128 x 128 tiles.
pub(crate) fn upgrade(spec: &mut Spec, coop: Kernel) {
    let Kernel::Gemm {
        im2col: false,
        half: true,
        ..
    } = spec.kernel
    else {
        return;
    };
    let (m, n) = (spec.params[0], spec.params[1]);
    if m < MIN_SIDE || n < MIN_SIDE {
        return;
    }
    let tile = coop.tile();
    spec.kernel = coop;
    spec.groups = [n.div_ceil(tile), m.div_ceil(tile), spec.groups[2]];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::{Activation, Bind, Gemm};

    fn spec(m: usize, n: usize, half: bool, im2col: bool) -> Spec {
        Gemm {
            m,
            n,
            k: 40,
            batch: vec![(3, 0, 0, m * n, 0)],
            a: (40, 1),
            b: (n, 1),
            c: (n, 1),
            bias: None,
            act: Activation::NONE,
            im2col: im2col.then_some([1; 12]),
            half,
        }
        .spec(Bind::Input(0), Bind::Input(1), Bind::Dummy)
        .unwrap()
    }

    #[test]
    fn only_large_enough_f16_gemms_move_to_tensor_cores() {
        let coop = Kernel::CoopGemm {
            subgroup: 32,
            bk: 32,
        };
        let mut s = spec(300, 129, true, false);
        let params = s.params.clone();
        upgrade(&mut s, coop);
        assert_eq!(s.kernel, coop);
        assert_eq!(
            s.groups,
            [2, 3, 3],
            "128 x 128 tiles over 300 x 129, 3 batches"
        );
        assert_eq!(s.params, params, "the parameters are the tiled kernel's");
        for (m, n, half, im2col) in [
            (300, 129, false, false),
            (300, 129, true, true),
            (63, 500, true, false),
            (500, 63, true, false),
        ] {
            let mut s = spec(m, n, half, im2col);
            let before = s.kernel;
            upgrade(&mut s, coop);
            assert_eq!(s.kernel, before, "{m}x{n} half {half} im2col {im2col}");
        }
    }

    #[test]
    fn bigger_k_stages_where_workgroup_memory_allows() {
        let mut limits = wgpu::Limits::default();
        assert_eq!(limits.max_compute_workgroup_storage_size, 16384);
        assert_eq!(
            kernel(32, &limits),
            Kernel::CoopGemm {
                subgroup: 32,
                bk: 16
            }
        );
        limits.max_compute_workgroup_storage_size = 49152;
        assert_eq!(
            kernel(32, &limits),
            Kernel::CoopGemm {
                subgroup: 32,
                bk: 32
            }
        );
    }
}
