//! Cooperative matrices (tensor cores) for f16 GEMMs: whether an adapter
//! offers what [`Kernel::CoopGemm`] needs, and whether the kernel computes
//! the right thing on the opened device.
//!
//! wgpu marks the feature experimental, drivers differ in what they accept,
//! and the CI's Vulkan device (lavapipe) has none, so the kernel is never
//! trusted blind: the first plan on a device runs [`probe`], a GEMM with
//! ragged edges, a bias and a ReLU, against a CPU reference, and only a
//! passing device gets the kernel. Anything else keeps the tiled f16 kernel
//! and says why (`weft info`, the log).

use crate::device::Gpu;
use crate::kernels::Kernel;
use crate::lower::Spec;
use crate::plan::{GpuContext, GpuPlan, Place};
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops;
use tract_onnx::tract_core::ops::einsum::EinSum;

/// The features the kernel needs from the device.
pub(crate) const FEATURES: wgpu::Features =
    wgpu::Features::SUBGROUP.union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// Smallest GEMM sides worth a 128 x 128 tensor-core tile.
const MIN_SIDE: u32 = 64;

/// The subgroup size to build the kernel for, when the adapter offers 16 x
/// 16 x 16 f16 multiplies into f32 on a fixed subgroup size; why not
/// otherwise.
pub(crate) fn offered(adapter: &wgpu::Adapter) -> Result<u32, String> {
    if !adapter.features().contains(FEATURES) {
        return Err("the adapter offers no cooperative matrices (with subgroups)".into());
    }
    let props = adapter.cooperative_matrix_properties();
    let wanted = props.iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !wanted {
        let offered: Vec<String> = props
            .iter()
            .map(|p| {
                format!(
                    "{}x{}x{} {:?}->{:?}",
                    p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
                )
            })
            .collect();
        return Err(format!(
            "no 16x16x16 f16 x f16 + f32 configuration (offered: {})",
            offered.join(", ")
        ));
    }
    let info = adapter.get_info();
    let size = info.subgroup_min_size;
    if size != info.subgroup_max_size || !(8..=128).contains(&size) {
        return Err(format!(
            "subgroup size varies ({}..{}); the kernel is built for one",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    if 8 * size > adapter.limits().max_compute_invocations_per_workgroup {
        return Err(format!(
            "eight subgroups of {size} exceed the workgroup limit"
        ));
    }
    Ok(size)
}

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

/// Deterministic values in [-1, 1), exact in f16.
fn values(n: usize, seed: u64) -> Vec<f16> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f16::from_f32((x >> 53) as f32 / 1024.0 - 1.0)
        })
        .collect()
}

/// Run `coop` on a GEMM that crosses tile edges in every dimension, with a
/// fused bias and ReLU, and compare with an f32 reference on the CPU.
pub(crate) fn probe(gpu: Arc<Gpu>, coop: Kernel) -> Result<(), String> {
    let (m, k, n) = (200usize, 72usize, 160usize);
    let a = values(m * k, 1);
    let b = values(k * n, 2);
    let bias = values(n, 3);
    let model = (|| -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let x = model.add_source("a", f16::fact([m, k]))?;
        let w = model.add_const("b", Tensor::from_shape(&[k, n], &b)?)?;
        let mm = model.wire_node(
            "mm",
            EinSum {
                axes: "mk,kn->mn".parse()?,
                operating_dt: f16::datum_type(),
                q_params: None,
            },
            &[x, w],
        )?;
        let bias = model.add_const("bias", Tensor::from_shape(&[1, n], &bias)?)?;
        let add = model.wire_node("bias_add", ops::math::add(), &[mm[0], bias])?;
        let zero = model.add_const("zero", Tensor::from_shape(&[1, 1], &[f16::ZERO])?)?;
        let relu = model.wire_node("relu", ops::math::max(), &[add[0], zero])?;
        model.select_output_outlets(&relu)?;
        Ok(model)
    })()
    .map_err(|e| format!("building the check's model: {e}"))?;
    let plan = GpuPlan::build_with(gpu, &model, Some(coop))
        .map_err(|e| format!("the kernel does not build on this device: {e}"))?;
    let placed = plan
        .report()
        .nodes
        .iter()
        .any(|node| matches!(&node.place, Place::Gpu(k) if k.contains(&coop.name())));
    if !placed {
        return Err(format!(
            "the check's GEMM was not lowered:\n{}",
            plan.report()
        ));
    }
    let mut ctx = GpuContext::new(Arc::new(plan)).map_err(|e| e.to_string())?;
    let input = Tensor::from_shape(&[m, k], &a).map_err(|e| e.to_string())?;
    ctx.run(vec![Arc::new(input)])
        .map_err(|e| format!("the kernel failed on this device: {e}"))?;
    let got = ctx.output(0).map_err(|e| e.to_string())?;
    let got = got
        .to_plain_array_view::<f16>()
        .map_err(|e| e.to_string())?;
    let got: Vec<f16> = got.iter().copied().collect();
    let mut worst = (0.0f32, 0usize);
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias[j].to_f32();
            for l in 0..k {
                acc += a[i * k + l].to_f32() * b[l * n + j].to_f32();
            }
            let want = acc.max(0.0);
            let err = (got[i * n + j].to_f32() - want).abs() / (4e-3 + 4e-3 * want.abs());
            if err > worst.0 || err.is_nan() {
                worst = (if err.is_nan() { f32::INFINITY } else { err }, i * n + j);
            }
        }
    }
    if worst.0 > 1.0 {
        let (i, j) = (worst.1 / n, worst.1 % n);
        return Err(format!(
            "wrong results on this device: element ({i}, {j}) of a {m}x{k}x{n} GEMM is {} (tolerance exceeded {:.1}x)",
            got[worst.1], worst.0
        ));
    }
    Ok(())
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

    /// The check itself, run here with kernels lavapipe has: the tiled f16
    /// GEMM at 128 x 128 (right, so it passes) and the implicit-GEMM
    /// gather with no convolution behind it (garbage, so it must fail).
    #[test]
    fn the_device_check_passes_a_right_kernel_and_rejects_a_wrong_one() {
        let gpu = match crate::shared() {
            Ok(g) if g.has_f16() => g,
            other => {
                let why = format!("no adapter with shader-f16: {:?}", other.err());
                assert!(std::env::var_os("CI").is_none(), "CI needs it: {why}");
                eprintln!("SKIPPED: {why}");
                return;
            }
        };
        let right = Kernel::Gemm {
            wide: true,
            im2col: false,
            half: true,
        };
        probe(gpu.clone(), right).unwrap();
        let wrong = Kernel::Gemm {
            wide: true,
            im2col: true,
            half: true,
        };
        let err = probe(gpu.clone(), wrong).unwrap_err();
        assert!(err.starts_with("wrong results on this device"), "{err}");
        // lavapipe offers no cooperative matrices: the verdict says why.
        if !gpu.features().contains(&"cooperative-matrix") {
            let why = gpu.cooperative_matrix().unwrap_err();
            assert!(why.contains("no cooperative matrices"), "{why}");
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
