//! What the GPU test binaries share: deterministic inputs, graph
//! builders, and the GPU-against-tract comparison.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;
use weft_gpu::{GpuContext, GpuPlan, Place};

/// f32 accumulation order differs between tract and the kernels.
pub const RTOL: f32 = 1e-4;
pub const ATOL: f32 = 1e-5;

pub fn gpu() -> Option<Arc<weft_gpu::Gpu>> {
    match weft_gpu::shared() {
        Ok(g) => Some(g),
        Err(e) => {
            weft_tests_skip(&format!(
                "no GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers): {e}"
            ));
            None
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_shape(shape, &data).unwrap()
}

pub fn konst(model: &mut TypedModel, name: &str, t: Tensor) -> OutletId {
    model.add_const(name, t).unwrap()
}

pub fn source(model: &mut TypedModel, name: &str, shape: &[usize]) -> OutletId {
    model.add_source(name, f32::fact(shape)).unwrap()
}

/// Run on both sides, require `expect_gpu` node names on the GPU, compare.
pub fn check(
    model: TypedModel,
    inputs: Vec<Tensor>,
    expect_gpu: &[&str],
) -> Option<weft_gpu::Report> {
    check_within(model, inputs, expect_gpu, ATOL, RTOL)
}

/// [`check`] on the model translated to f16 (tract's `f32_to_f16`): the
/// expected nodes must run on the f16 variants of their kernels. tract
/// computes in f16 where the kernels compute in f32, hence 1e-2.
pub fn check_f16(
    model: TypedModel,
    inputs: Vec<Tensor>,
    expect_gpu: &[&str],
) -> Option<weft_gpu::Report> {
    let gpu = gpu()?;
    if !gpu.has_f16() {
        weft_tests_skip("adapter has no shader-f16");
        return None;
    }
    let model = tract_onnx::tract_core::transform::get_transform("f32_to_f16")
        .unwrap()
        .unwrap()
        .transform_into(model)
        .unwrap();
    let inputs = inputs
        .into_iter()
        .map(|t| t.cast_to::<f16>().unwrap().into_owned())
        .collect();
    let report = check_within(model, inputs, expect_gpu, 1e-2, 1e-2).unwrap();
    for name in expect_gpu {
        let node = report.nodes.iter().find(|n| n.name == *name).unwrap();
        if let Place::Gpu(kernels) = &node.place {
            assert!(
                kernels.iter().all(|k| k.ends_with("-f16")),
                "{name} is f16 but ran {kernels:?}:\n{report}"
            );
        }
    }
    Some(report)
}

pub fn check_within(
    model: TypedModel,
    inputs: Vec<Tensor>,
    expect_gpu: &[&str],
    atol: f32,
    rtol: f32,
) -> Option<weft_gpu::Report> {
    let gpu = gpu()?;
    let cpu = model
        .clone()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let want = cpu
        .run(inputs.iter().cloned().map(|t| t.into_tvalue()).collect())
        .unwrap();
    let plan = Arc::new(GpuPlan::build(gpu, &model).unwrap());
    let report = plan.report().clone();
    for name in expect_gpu {
        let node = report
            .nodes
            .iter()
            .find(|n| n.name == *name)
            .unwrap_or_else(|| panic!("no node {name} in\n{report}"));
        assert!(
            matches!(node.place, Place::Gpu(_) | Place::Fused | Place::View),
            "{name} did not run on the GPU:\n{report}"
        );
    }
    let mut ctx = GpuContext::new(plan).unwrap();
    // Twice: the second run reuses the context's buffers and bind groups.
    for _ in 0..2 {
        ctx.run(inputs.iter().cloned().map(Arc::new).collect())
            .unwrap();
        for (i, w) in want.iter().enumerate() {
            let got = ctx.output(i).unwrap();
            assert_eq!(got.shape(), w.shape(), "output {i}");
            assert_eq!(got.datum_type(), w.datum_type(), "output {i}");
            let g = got.cast_to::<f32>().unwrap();
            let w = w.cast_to::<f32>().unwrap();
            let g = g.to_plain_array_view::<f32>().unwrap();
            let w = w.to_plain_array_view::<f32>().unwrap();
            for (j, (a, b)) in g.iter().zip(w.iter()).enumerate() {
                assert!(
                    (a - b).abs() <= atol + rtol * b.abs() || (a.is_nan() && b.is_nan()),
                    "output {i} element {j}: gpu {a} cpu {b}\n{report}"
                );
            }
        }
    }
    Some(report)
}

pub fn weft_tests_skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI needs it: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// `relu(a x w + bias)` on a source `a` of [m, k] (nodes `mm`, `bias_add`,
/// `relu`), the pattern the GEMM epilogue fuses; returns the relu outlet.
pub fn gemm_bias_relu(model: &mut TypedModel, m: usize, k: usize, n: usize) -> TVec<OutletId> {
    gemm_bias_relu_as(model, "mk,kn->mn", m, k, n)
}

/// [`gemm_bias_relu`] with the weights laid out as `axes` says: `kn`
/// (k-major, as MatMul stores them) or `nk` (n-major, as Gemm with
/// `transB` and PyTorch's Linear do).
pub fn gemm_bias_relu_as(
    model: &mut TypedModel,
    axes: &str,
    m: usize,
    k: usize,
    n: usize,
) -> TVec<OutletId> {
    let a = source(model, "a", &[m, k]);
    let w_shape: Vec<usize> = axes[3..5]
        .chars()
        .map(|c| if c == 'k' { k } else { n })
        .collect();
    let w = konst(model, "w", tensor(&w_shape, 1));
    let op = EinSum {
        axes: axes.parse().unwrap(),
        operating_dt: f32::datum_type(),
        q_params: None,
    };
    let mm = model.wire_node("mm", op, &[a, w]).unwrap();
    let bias = konst(model, "bias", tensor(&[1, n], 2));
    let add = model
        .wire_node("bias_add", ops::math::add(), &[mm[0], bias])
        .unwrap();
    let zero = konst(model, "zero", Tensor::from_shape(&[1, 1], &[0f32]).unwrap());
    model
        .wire_node("relu", ops::math::max(), &[add[0], zero])
        .unwrap()
}

/// An NCHW spatial spec: `kernel`, `stride` and symmetric `pad` per axis,
/// `ci` channels in and `co` out.
pub fn nchw(
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    ci: usize,
    co: usize,
) -> PoolSpec {
    PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: kernel[..].into(),
        padding: PaddingSpec::Explicit(pad[..].into(), pad[..].into()),
        dilations: None,
        strides: Some(stride[..].into()),
        input_channels: ci,
        output_channels: co,
    }
}

/// A convolution with an OIHW kernel in `group` groups.
pub fn conv_op(pool_spec: PoolSpec, group: usize) -> Conv {
    Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group,
        q_params: None,
    }
}

/// A transposed convolution with an OIHW kernel and no output adjustment.
pub fn deconv_op(pool_spec: PoolSpec, group: usize) -> Deconv {
    Deconv {
        pool_spec,
        kernel_format: KernelFormat::OIHW,
        adjustments: tvec![0, 0],
        group,
    }
}
