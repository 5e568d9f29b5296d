//! The check a kernel no CI device can run must pass on a device before
//! any plan there uses it: [`Gpu::cooperative_matrix`] runs [`probe`] once
//! per device.
//!
//! wgpu marks cooperative matrices experimental, drivers differ in what they
//! accept, and the CI's Vulkan device (lavapipe) has none, so the kernel is
//! never trusted blind: the first plan on a device runs a GEMM with ragged
//! edges, a bias and a ReLU through it, against a CPU reference, and only a
//! passing device gets the kernel. Anything else keeps the tiled f16 kernel
//! and says why (`weft info`, the log). This is the top layer of the crate:
//! it builds and runs a plan.

use crate::device::Gpu;
use crate::kernels::Kernel;
use crate::plan::{GpuContext, GpuPlan, Place};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops;
use tract_onnx::tract_core::ops::einsum::EinSum;

/// Set when the check lost a device: every later device of this process
/// keeps the tiled f16 kernel.
static COOP_LOST_DEVICE: AtomicBool = AtomicBool::new(false);

impl Gpu {
    /// The cooperative-matrix (tensor core) GEMM kernel, once checked on
    /// this device against a CPU reference (the first call runs the check);
    /// why f16 GEMMs use the tiled kernel otherwise.
    pub fn cooperative_matrix(self: &Arc<Self>) -> Result<Kernel, String> {
        let subgroup = self.coop_subgroup.clone()?;
        let kernel = crate::coop::kernel(subgroup, &self.limits);
        self.coop_verdict
            .get_or_init(|| {
                if COOP_LOST_DEVICE.load(Ordering::Relaxed) {
                    return Err(
                        "its check lost the device earlier in this process; restart to try again"
                            .into(),
                    );
                }
                let verdict = probe(self.clone(), kernel);
                if verdict.is_err() && self.is_lost() {
                    // A reopened device must not run (and lose) it again.
                    COOP_LOST_DEVICE.store(true, Ordering::Relaxed);
                }
                match &verdict {
                    Ok(()) => tracing::info!(
                        adapter = %self.info.name,
                        kernel = kernel.name(),
                        "cooperative-matrix GEMM checked against the CPU: f16 GEMMs use tensor cores"
                    ),
                    Err(why) => tracing::warn!(
                        adapter = %self.info.name,
                        "cooperative-matrix GEMM not used: {why}"
                    ),
                }
                verdict
            })
            .clone()
            .map(|()| kernel)
    }
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
}
