//! Kernels compiled with all of wgpu's shader runtime checks, the way they
//! run on Metal and GL (CI's Vulkan device leaves the checks out, so the
//! other test binaries cover the unchecked build): the same results as
//! tract. Its own binary, because the setting is process-wide.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

mod common;
use common::*;

#[test]
fn checked_kernels_agree_with_tract() {
    weft_gpu::configure(weft_gpu::GpuConfig {
        shader_checks: true,
        ..weft_gpu::config()
    });
    // The 128 x 128 tile with fused bias and ReLU.
    let mut model = TypedModel::default();
    let out = gemm_bias_relu(&mut model, 260, 40, 300);
    model.select_output_outlets(&out).unwrap();
    check(model, vec![tensor(&[260, 40], 3)], &["mm"]);
    // Implicit GEMM and the direct (depthwise) convolution.
    for (ci, co, group) in [(5, 7, 1), (12, 12, 12)] {
        let mut model = TypedModel::default();
        let x = source(&mut model, "x", &[1, ci, 11, 13]);
        let w = konst(&mut model, "w", tensor(&[co, ci / group, 3, 3], 5));
        let b = konst(&mut model, "b", tensor(&[co], 6));
        let op = conv_op(nchw([3, 3], [1, 1], [1, 1], ci, co), group);
        let out = model.wire_node("conv", op, &[x, w, b]).unwrap();
        model.select_output_outlets(&out).unwrap();
        check(model, vec![tensor(&[1, ci, 11, 13], 8)], &["conv"]);
    }
    // A workgroup reduction.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[7, 300]);
    let op = Softmax::new(tvec![1], None, SoftmaxKind::Softmax);
    let out = model.wire_node("softmax", op, &[x]).unwrap();
    model.select_output_outlets(&out).unwrap();
    check(model, vec![tensor(&[7, 300], 4)], &["softmax"]);
    weft_gpu::configure(weft_gpu::GpuConfig {
        shader_checks: false,
        ..weft_gpu::config()
    });
}
