//! Every GPU kernel against tract's CPU result on the same graph.
//!
//! Each case builds a small tract graph, runs it optimized on the CPU and
//! lowered on the GPU (lavapipe in CI), requires the node under test to be
//! placed on the GPU (so a silent fallback fails the test), and compares
//! within a stated tolerance: |gpu - cpu| <= ATOL + RTOL * |cpu|.
//! Without an adapter these tests skip, unless `CI` is set.

use proptest::prelude::*;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PoolSpec, SumPool};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm, Softmax, SoftmaxKind};
use weft_gpu::{GpuContext, GpuPlan, Place};

mod common;
use common::*;

fn matmul(m: usize, k: usize, n: usize, transposed_b: bool, batch: usize) {
    let mut model = TypedModel::default();
    let (a_shape, b_shape, expr) = match (batch, transposed_b) {
        (1, false) => (vec![m, k], vec![k, n], "mk,kn->mn"),
        (1, true) => (vec![m, k], vec![n, k], "mk,nk->mn"),
        (_, false) => (vec![batch, m, k], vec![batch, k, n], "bmk,bkn->bmn"),
        (_, true) => (vec![batch, m, k], vec![batch, n, k], "bmk,bnk->bmn"),
    };
    let a = source(&mut model, "a", &a_shape);
    let b = konst(&mut model, "b", tensor(&b_shape, 7));
    let op = EinSum {
        axes: expr.parse().unwrap(),
        operating_dt: f32::datum_type(),
        q_params: None,
    };
    let out = model.wire_node("mm", op, &[a, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    check(model, vec![tensor(&a_shape, 3)], &["mm"]);
}

#[test]
fn gemm_edges_transposes_and_batches() {
    for (m, k, n) in [
        (1, 1, 1),
        (3, 5, 7),
        (64, 16, 64),
        (65, 17, 63),
        (130, 70, 129),
    ] {
        matmul(m, k, n, false, 1);
        matmul(m, k, n, true, 1);
    }
    matmul(33, 40, 20, false, 3);
    matmul(20, 9, 33, true, 2);
}

#[test]
fn gemm_wide_tiles() {
    // m, n >= 256 pick the 128x128 tile with 8x8 register blocks.
    matmul(300, 96, 257, false, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn gemm_matches_tract_for_any_small_shape(m in 1usize..80, k in 1usize..80, n in 1usize..80, t in any::<bool>()) {
        matmul(m, k, n, t, 1);
    }
}

/// The f16 GEMM (`shader-f16`: f16 storage, f32 accumulation) against
/// tract's f16 matmul. f16 has 11 significant bits: tolerance 1e-2.
#[test]
fn gemm_f16() {
    let Some(gpu) = gpu() else { return };
    if !gpu.has_f16() {
        weft_tests_skip("adapter has no shader-f16");
        return;
    }
    for (m, k, n) in [(7, 9, 5), (65, 40, 70), (300, 33, 260)] {
        let mut model = TypedModel::default();
        let a = model.add_source("a", f16::fact([m, k])).unwrap();
        let w = tensor(&[k, n], 3).cast_to::<f16>().unwrap().into_owned();
        let b = konst(&mut model, "b", w);
        let op = EinSum {
            axes: "mk,kn->mn".parse().unwrap(),
            operating_dt: f16::datum_type(),
            q_params: None,
        };
        let out = model.wire_node("mm", op, &[a, b]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let x = tensor(&[m, k], 4).cast_to::<f16>().unwrap().into_owned();
        let cpu = model
            .clone()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let want = cpu.run(tvec!(x.clone().into_tvalue())).unwrap();
        let plan = Arc::new(GpuPlan::build(gpu.clone(), &model).unwrap());
        let report = plan.report().clone();
        assert!(
            matches!(&report.nodes[0].place, Place::Gpu(k) if k[0].ends_with("-f16")),
            "{report}"
        );
        let mut ctx = GpuContext::new(plan).unwrap();
        ctx.run(vec![Arc::new(x)]).unwrap();
        let got = ctx.output(0).unwrap();
        assert_eq!(got.datum_type(), f16::datum_type());
        let g = got.cast_to::<f32>().unwrap();
        let w = want[0].cast_to::<f32>().unwrap();
        for (a, b) in g
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .zip(w.to_plain_array_view::<f32>().unwrap().iter())
        {
            assert!(
                (a - b).abs() <= 1e-2 + 1e-2 * b.abs(),
                "{m}x{k}x{n}: gpu {a} cpu {b}"
            );
        }
    }
}

#[test]
fn gemm_fuses_bias_and_relu() {
    let mut model = TypedModel::default();
    let relu = gemm_bias_relu(&mut model, 5, 12, 9);
    model.select_output_outlets(&relu).unwrap();
    // In f32, and in f16 (the f16 GEMM's epilogue).
    let reports = [
        check(model.clone(), vec![tensor(&[5, 12], 4)], &["mm"]),
        check_f16(model, vec![tensor(&[5, 12], 4)], &["mm"]),
    ];
    for report in reports.into_iter().flatten() {
        let fused: Vec<&str> = report
            .nodes
            .iter()
            .filter(|n| n.place == Place::Fused)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(fused, ["bias_add", "relu"], "{report}");
        assert_eq!(report.dispatches, 1, "{report}");
    }
}

fn conv(
    input: [usize; 4],
    co: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
    group: usize,
) {
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &input);
    let ci = input[1];
    let w = konst(
        &mut model,
        "w",
        tensor(&[co, ci / group, kernel[0], kernel[1]], 5),
    );
    let b = konst(&mut model, "b", tensor(&[co], 6));
    let spec = PoolSpec {
        dilations: Some(dilation[..].into()),
        ..nchw(kernel, stride, pad, ci, co)
    };
    let op = conv_op(spec, group);
    let out = model.wire_node("conv", op, &[x, w, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    check(model.clone(), vec![tensor(&input, 8)], &["conv"]);
    check_f16(model, vec![tensor(&input, 8)], &["conv"]);
}

#[test]
fn conv_as_gemm_implicit_gemm_and_direct() {
    // 1x1: a plain GEMM over pixels.
    conv([1, 8, 9, 7], 16, [1, 1], [1, 1], [1, 1], [0, 0], 1);
    // 3x3 with padding, stride, dilation: implicit GEMM.
    conv([2, 5, 11, 13], 7, [3, 3], [1, 1], [1, 1], [1, 1], 1);
    conv([1, 3, 17, 15], 8, [3, 3], [2, 2], [1, 1], [1, 1], 1);
    conv([1, 4, 12, 12], 6, [3, 3], [1, 1], [2, 2], [2, 2], 1);
    conv([1, 3, 9, 9], 5, [5, 5], [1, 1], [1, 1], [2, 2], 1);
    // Depthwise and grouped: the direct kernel.
    conv([1, 12, 10, 10], 12, [3, 3], [1, 1], [1, 1], [1, 1], 12);
    conv([1, 8, 9, 9], 16, [5, 5], [2, 2], [1, 1], [2, 2], 4);
}

#[test]
fn batched_pointwise_convs_decluttered_to_einsum_stay_one_gemm() {
    // tract writes a 1x1 convolution as EinSum `NCHW,OC->NOHW`: its `m`
    // axes N and HW are not adjacent (the channels lie between), so N is a
    // batch axis the weights broadcast along.
    for (input, co) in [([3, 8, 9, 7], 16), ([16, 5, 4, 40], 12)] {
        let mut model = TypedModel::default();
        let x = source(&mut model, "x", &input);
        let w = konst(&mut model, "w", tensor(&[co, input[1], 1, 1], 5));
        let b = konst(&mut model, "b", tensor(&[co], 6));
        let op = conv_op(nchw([1, 1], [1, 1], [0, 0], input[1], co), 1);
        let out = model.wire_node("conv", op, &[x, w, b]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let model = model.into_decluttered().unwrap();
        let einsum: Vec<String> = model
            .nodes()
            .iter()
            .filter(|n| n.op_is::<EinSum>())
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(einsum.len(), 1, "{model}");
        let names: Vec<&str> = einsum.iter().map(String::as_str).collect();
        let report = check(model.clone(), vec![tensor(&input, 8)], &names).unwrap();
        assert_eq!(report.cpu_nodes().count(), 0, "{report}");
        check_f16(model, vec![tensor(&input, 8)], &names);
    }
}

#[test]
fn deconv_stride_two() {
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[1, 6, 5, 4]);
    let w = konst(&mut model, "w", tensor(&[3, 6, 2, 2], 9));
    let b = konst(&mut model, "b", tensor(&[3], 10));
    let op = deconv_op(nchw([2, 2], [2, 2], [0, 0], 6, 3), 1);
    let out = model.wire_node("deconv", op, &[x, w, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    check(model.clone(), vec![tensor(&[1, 6, 5, 4], 11)], &["deconv"]);
    check_f16(model, vec![tensor(&[1, 6, 5, 4], 11)], &["deconv"]);
}

#[test]
fn broadcast_binary_and_unary() {
    let mut model = TypedModel::default();
    let a = source(&mut model, "a", &[2, 3, 5]);
    // Each binary op against its own broadcast constant, each its own
    // output (a max or min would hide an error before it).
    let mut outputs = Vec::new();
    for (i, (name, op, shape)) in [
        ("add", ops::math::add(), [1, 3, 1]),
        ("mul", ops::math::mul(), [2, 1, 5]),
        ("sub", ops::math::sub(), [1, 1, 5]),
        ("max", ops::math::max(), [2, 3, 5]),
        ("min", ops::math::min(), [1, 3, 5]),
        ("div", ops::math::div(), [1, 1, 1]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = tensor(&shape, 12 + i as u64);
        if name == "div" {
            c = Tensor::from_shape(&shape, &[1.7f32]).unwrap();
        }
        let c = konst(&mut model, &format!("{name}.c"), c);
        outputs.push(model.wire_node(name, op, &[a, c]).unwrap()[0]);
    }
    let unary: Vec<(&str, Box<dyn TypedOp>)> = vec![
        ("sigmoid", Box::new(ops::nn::sigmoid())),
        ("tanh", Box::new(ops::math::tanh())),
        ("exp", Box::new(ops::math::exp())),
        ("abs", Box::new(ops::math::abs())),
        ("neg", Box::new(ops::math::neg())),
        ("square", Box::new(ops::math::square())),
        ("hard_swish", Box::new(ops::nn::hard_swish())),
        ("silu", Box::new(ops::nn::silu::silu())),
        ("erf", Box::new(ops::math::erf())),
    ];
    // Each unary op on the input itself, each its own output, so no op's
    // error is hidden by a saturating one after it.
    let mut names = vec!["add", "mul", "sub", "max", "min", "div"];
    for (name, op) in unary {
        outputs.push(model.wire_node(name, op, &[a]).unwrap()[0]);
        names.push(name);
    }
    model.select_output_outlets(&outputs).unwrap();
    check(model.clone(), vec![tensor(&[2, 3, 5], 13)], &names);
    check_f16(model, vec![tensor(&[2, 3, 5], 13)], &names);
}

fn single(shape: &[usize], name: &str, op: impl Into<Box<dyn TypedOp>>) {
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", shape);
    let out = model.wire_node(name, op, &[x]).unwrap();
    model.select_output_outlets(&out).unwrap();
    check(model.clone(), vec![tensor(shape, 21)], &[name]);
    check_f16(model, vec![tensor(shape, 21)], &[name]);
}

#[test]
fn reductions_softmax_and_norms() {
    for (axes, reducer) in [
        (tvec![1], Reducer::Sum),
        (tvec![0, 2], Reducer::Max),
        (tvec![2], Reducer::Min),
        (tvec![1], Reducer::MeanOfSquares),
    ] {
        single(&[3, 70, 5], "reduce", Reduce { axes, reducer });
    }
    // Along the last axis (inner 1) and a middle one (inner > 1), with rows
    // longer than a workgroup.
    single(
        &[4, 600],
        "softmax",
        Softmax::new(tvec![1], None, SoftmaxKind::Softmax),
    );
    single(
        &[3, 7, 5],
        "softmax",
        Softmax::new(tvec![1], None, SoftmaxKind::LogSoftmax),
    );
    single(
        &[6, 40],
        "rms",
        RmsNorm {
            axis: 1,
            eps: Arc::new(tensor0(1e-5f32)),
        },
    );
}

fn pool_spec(kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> PoolSpec {
    nchw(kernel, stride, pad, 3, 3)
}

#[test]
fn pooling() {
    single(
        &[2, 3, 9, 8],
        "maxpool",
        MaxPool {
            pool_spec: pool_spec([3, 3], [2, 2], [1, 1]),
            with_index_outputs: None,
        },
    );
    for count_include_pad in [false, true] {
        single(
            &[1, 3, 7, 7],
            "avgpool",
            SumPool {
                pool_spec: pool_spec([3, 2], [1, 2], [1, 0]),
                count_include_pad,
                normalize: true,
            },
        );
    }
}

#[test]
fn views_and_copies() {
    single(
        &[2, 3, 4, 5],
        "transpose",
        ops::change_axes::AxisOp::Move(1, 3),
    );
    single(&[4, 6, 5], "slice", ops::array::Slice::new(1, 2, 5));
    single(
        &[1, 3, 4, 5],
        "upsample",
        ops::nn::resize::NearestUpsample {
            scales: tvec![1, 1, 2, 3],
        },
    );
    single(
        &[2, 3, 4],
        "pad",
        ops::array::Pad {
            pads: vec![(0, 1), (2, 0), (1, 1)],
            mode: ops::array::PadMode::Constant(Arc::new(tensor0(0.5f32))),
        },
    );
    let mut model = TypedModel::default();
    let a = source(&mut model, "a", &[2, 3, 4]);
    let b = konst(&mut model, "b", tensor(&[2, 5, 4], 30));
    let cat = model
        .wire_node("concat", ops::array::TypedConcat { axis: 1 }, &[a, b])
        .unwrap();
    // A reshape of a GPU value is a view: no data moves.
    let r = model
        .wire_node(
            "reshape",
            ops::change_axes::AxisOp::Reshape(0, tvec![2.to_dim(), 8.to_dim()], tvec![16.to_dim()]),
            &cat,
        )
        .unwrap();
    let e = model.wire_node("exp", ops::math::exp(), &r).unwrap();
    model.select_output_outlets(&e).unwrap();
    if let Some(report) = check(
        model,
        vec![tensor(&[2, 3, 4], 31)],
        &["concat", "reshape", "exp"],
    ) {
        let reshape = report.nodes.iter().find(|n| n.name == "reshape").unwrap();
        assert_eq!(reshape.place, Place::View, "{report}");
    }
}

#[test]
fn unsupported_nodes_run_on_the_cpu_with_explicit_transfers() {
    // CumSum has no GPU kernel: the graph splits into GPU, CPU, GPU.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[4, 8]);
    let e = model.wire_node("exp", ops::math::exp(), &[x]).unwrap();
    let c = model
        .wire_node(
            "cumsum",
            ops::array::CumSum {
                axis: 1,
                reverse: false,
                exclusive: false,
            },
            &[e[0]],
        )
        .unwrap();
    let t = model.wire_node("tanh", ops::math::tanh(), &c).unwrap();
    model.select_output_outlets(&t).unwrap();
    if let Some(report) = check(model, vec![tensor(&[4, 8], 40)], &["exp", "tanh"]) {
        let cumsum = report.nodes.iter().find(|n| n.name == "cumsum").unwrap();
        assert!(
            matches!(&cumsum.place, Place::Cpu(why) if why.contains("no GPU kernel")),
            "{report}"
        );
        assert_eq!((report.uploads, report.downloads), (2, 1), "{report}");
        assert!(report.gpu_flops_fraction() <= 1.0);
    }
}

/// The GPU's result of `model` on `x` through `plan` against the CPU's.
fn agrees(model: &TypedModel, plan: &Arc<GpuPlan>, x: &Tensor) {
    let cpu = model
        .clone()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let want = cpu.run(tvec!(x.clone().into_tvalue())).unwrap();
    let mut ctx = GpuContext::new(plan.clone()).unwrap();
    ctx.run(vec![Arc::new(x.clone())]).unwrap();
    let got = ctx.output(0).unwrap();
    let got = got.to_plain_array_view::<f32>().unwrap();
    let want = want[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(got.shape(), want.shape());
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() <= ATOL + RTOL * b.abs(), "gpu {a} cpu {b}");
    }
}

#[test]
fn plans_of_one_model_at_two_shapes_upload_its_weights_once() {
    let Some(gpu) = gpu() else { return };
    let at = |m: usize| {
        let mut model = TypedModel::default();
        let relu = gemm_bias_relu(&mut model, m, 48, 40);
        model.select_output_outlets(&relu).unwrap();
        model
    };
    let weights = weft_gpu::Weights::new();
    let (small, large) = (at(3), at(17));
    let first = Arc::new(GpuPlan::build_sharing(gpu.clone(), &small, &weights).unwrap());
    let resident = weights.resident_bytes();
    // The weights [48, 40] and bias [1, 40] (the relu's zero is fused).
    assert_eq!(first.report().weight_bytes, (48 * 40 + 40) * 4);
    assert_eq!(resident, first.report().weight_bytes);
    assert_eq!(first.report().shared_weight_bytes, 0);
    let second = Arc::new(GpuPlan::build_sharing(gpu.clone(), &large, &weights).unwrap());
    let report = second.report();
    assert_eq!(report.shared_weight_bytes, report.weight_bytes, "{report}");
    assert!(
        report.summary().contains("shared with other shapes"),
        "{report}"
    );
    assert_eq!(weights.resident_bytes(), resident, "uploaded again");
    // A plan built without the store uploads its own.
    let alone = GpuPlan::build(gpu.clone(), &large).unwrap();
    assert_eq!(alone.report().shared_weight_bytes, 0);
    assert_eq!(weights.resident_bytes(), resident);
    drop(alone);

    // Both compute right, and the shared buffers outlive the plan that
    // uploaded them.
    let x3 = tensor(&[3, 48], 5);
    let x17 = tensor(&[17, 48], 6);
    for (model, plan, x) in [(&small, &first, &x3), (&large, &second, &x17)] {
        agrees(model, plan, x);
    }
    drop(first);
    assert_eq!(weights.resident_bytes(), resident);
    agrees(&large, &second, &x17);
    drop(second);
    assert_eq!(weights.resident_bytes(), 0, "freed with the last plan");

    // Weights of equal shape and other values are not mistaken for them.
    let mut other = TypedModel::default();
    let a = source(&mut other, "a", &[3, 48]);
    let w = konst(&mut other, "w", tensor(&[48, 40], 9));
    let op = EinSum {
        axes: "mk,kn->mn".parse().unwrap(),
        operating_dt: f32::datum_type(),
        q_params: None,
    };
    let mm = other.wire_node("mm", op, &[a, w]).unwrap();
    other.select_output_outlets(&mm).unwrap();
    let kept = Arc::new(GpuPlan::build_sharing(gpu.clone(), &small, &weights).unwrap());
    let plan = Arc::new(GpuPlan::build_sharing(gpu, &other, &weights).unwrap());
    assert_eq!(plan.report().shared_weight_bytes, 0);
    agrees(&other, &plan, &x3);
    drop(kept);
}
