//! Nodes whose tensors exceed the adapter's binding limit.
//!
//! This binary opens its device with the binding limit capped at 64 KiB
//! (`GpuConfig::binding_limit`, which the device enforces: wgpu rejects
//! any binding past it), so tensors of a few hundred KiB stand for the
//! multi-GiB ones of a real model on a 128 MiB-limit GPU. Each case must be
//! cut into parts (the report says how many), run on the GPU, and match
//! tract; what cannot be cut must stay on the CPU and say why.

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops;
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, Softmax, SoftmaxKind};
use weft_gpu::{Place, Report};

mod common;
use common::*;

const LIMIT: u64 = 64 << 10;

/// The capped device (every test calls this before anything opens it).
fn capped() -> Option<Arc<weft_gpu::Gpu>> {
    weft_gpu::configure(weft_gpu::GpuConfig {
        binding_limit: Some(LIMIT),
        ..Default::default()
    });
    let gpu = gpu()?;
    assert_eq!(gpu.max_binding(), LIMIT, "the cap was not applied");
    Some(gpu)
}

/// Parts of node `name`, which must be on the GPU.
fn parts(report: &Report, name: &str) -> usize {
    let node = report.nodes.iter().find(|n| n.name == name).unwrap();
    assert!(
        matches!(node.place, Place::Gpu(_)),
        "{name} is not on the GPU:\n{report}"
    );
    node.parts
}

#[test]
fn broadcast_binary_ops_are_cut_into_parts() {
    if capped().is_none() {
        return;
    }
    // [300, 100] f32 is 120,000 bytes; the [1, 100] operand is bound whole.
    let mut model = TypedModel::default();
    let a = source(&mut model, "a", &[300, 100]);
    let c = konst(&mut model, "c", tensor(&[1, 100], 2));
    let out = model.wire_node("add", ops::math::add(), &[a, c]).unwrap();
    let out = model.wire_node("tanh", ops::math::tanh(), &out).unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model.clone(), vec![tensor(&[300, 100], 1)], &["add"]).unwrap();
    assert!(parts(&report, "add") >= 2, "{report}");
    assert!(parts(&report, "tanh") >= 2, "{report}");
    assert!(report.to_string().contains("parts (binding limit)"));
    // f16, 200-byte rows: parts of an odd length whose bindings round up.
    let mut model = TypedModel::default();
    let a = source(&mut model, "a", &[333, 111]);
    let c = konst(&mut model, "c", tensor(&[1, 111], 2));
    let out = model.wire_node("add", ops::math::add(), &[a, c]).unwrap();
    model.select_output_outlets(&out).unwrap();
    if let Some(report) = check_f16(model, vec![tensor(&[333, 111], 3)], &["add"]) {
        assert!(parts(&report, "add") >= 2, "{report}");
    }
}

#[test]
fn a_gemm_with_its_fused_epilogue_is_cut_along_m() {
    if capped().is_none() {
        return;
    }
    // A [1000, 32] and C [1000, 48]: 128 and 192 KB; B and the bias whole.
    let mut model = TypedModel::default();
    let relu = gemm_bias_relu(&mut model, 1000, 32, 48);
    // A softmax over rows after it, cut as well: 192 KB.
    let out = model
        .wire_node(
            "softmax",
            Softmax::new(tvec![1], None, SoftmaxKind::Softmax),
            &relu,
        )
        .unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(&[1000, 32], 6)], &["mm", "softmax"]).unwrap();
    let fused: Vec<_> = report
        .nodes
        .iter()
        .filter(|n| n.place == Place::Fused)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(fused, ["bias_add", "relu"], "{report}");
    let gemm = parts(&report, "mm");
    assert!(gemm >= 3, "{report}");
    assert!(parts(&report, "softmax") >= 3, "{report}");
    // One dispatch a part, all in one submission.
    assert_eq!(
        report.dispatches,
        gemm + parts(&report, "softmax"),
        "{report}"
    );
    assert_eq!(report.submissions, 1, "{report}");
}

/// relu(a x w + bias) whose weights alone exceed the limit, on the GPU in
/// f32 and in f16 (f16 parts start at offsets that are not aligned).
fn weights_over_the_limit(axes: &str, m: usize, k: usize, n: usize) -> usize {
    let model = || {
        let mut model = TypedModel::default();
        let out = gemm_bias_relu_as(&mut model, axes, m, k, n);
        model.select_output_outlets(&out).unwrap();
        model
    };
    let report = check(model(), vec![tensor(&[m, k], 12)], &["mm"]).unwrap();
    let fused = report
        .nodes
        .iter()
        .filter(|n| n.place == Place::Fused)
        .count();
    assert_eq!(fused, 2, "the bias and ReLU must stay fused:\n{report}");
    let cut = parts(&report, "mm");
    if let Some(report) = check_f16(model(), vec![tensor(&[m, k], 12)], &["mm"]) {
        assert!(parts(&report, "mm") >= 2, "{report}");
    }
    cut
}

#[test]
fn k_major_weights_over_the_limit_are_cut_along_k() {
    if capped().is_none() {
        return;
    }
    // w [1024, 64] is 256 KiB: five slices of its rows, each part adding
    // into C, the last with the bias and the ReLU.
    assert!(weights_over_the_limit("mk,kn->mn", 8, 1024, 64) >= 4);
}

#[test]
fn n_major_weights_over_the_limit_are_cut_along_n() {
    if capped().is_none() {
        return;
    }
    // w [n, k] = [64, 1024] is 256 KiB: slices of its 4 KiB rows, each
    // part writing its columns of C, which start between aligned offsets.
    assert!(weights_over_the_limit("mk,nk->mn", 8, 1024, 64) >= 4);
}

/// A `kernel` x `kernel` convolution (node `conv`) with a bias, checked
/// against tract; `on_gpu` says whether it must run on the GPU.
fn conv(input: [usize; 4], co: usize, kernel: usize, pad: usize, on_gpu: bool) -> Option<Report> {
    grouped(input, co, 1, kernel, pad, on_gpu)
}

/// [`conv`] in `group` groups.
fn grouped(
    input: [usize; 4],
    co: usize,
    group: usize,
    kernel: usize,
    pad: usize,
    on_gpu: bool,
) -> Option<Report> {
    let model = conv_model(input, co, group, kernel, pad);
    let expect: &[&str] = if on_gpu { &["conv"] } else { &[] };
    check(model, vec![tensor(&input, 9)], expect)
}

/// The model of [`grouped`].
fn conv_model(input: [usize; 4], co: usize, group: usize, kernel: usize, pad: usize) -> TypedModel {
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &input);
    let w = konst(
        &mut model,
        "w",
        tensor(&[co, input[1] / group, kernel, kernel], 7),
    );
    let b = konst(&mut model, "b", tensor(&[co], 8));
    let spec = nchw([kernel; 2], [1, 1], [pad; 2], input[1], co);
    let op = conv_op(spec, group);
    let out = model.wire_node("conv", op, &[x, w, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    model
}

#[test]
fn convolutions_are_cut_along_batch_or_output_channels() {
    if capped().is_none() {
        return;
    }
    // Batch 4 of 25.6 KB inputs into 46 KB outputs: along the batch.
    let report = conv([4, 4, 40, 40], 8, 3, 0, true).unwrap();
    assert!(parts(&report, "conv") >= 3, "{report}");
    // Batch 1, a 16 KB input into 256 KB of 64 channels: along the output
    // channels, slicing the kernel's rows and the bias with them.
    let report = conv([1, 4, 32, 32], 64, 3, 1, true).unwrap();
    assert!(parts(&report, "conv") >= 4, "{report}");
    let report = conv([1, 4, 32, 32], 64, 1, 0, true).unwrap();
    assert!(parts(&report, "conv") >= 4, "{report}");
    // Depthwise, 119 KiB in and out: channels with their own input
    // channels. Groups of three: whole groups a part (parts of 32 channels
    // would fit the limit and the alignment).
    for group in [63, 21] {
        let report = grouped([1, 63, 22, 22], 63, group, 3, 1, true).unwrap();
        assert!(parts(&report, "conv") >= 2, "{report}");
    }
}

#[test]
fn a_batch_one_convolution_over_the_limit_is_cut_along_its_input_channels() {
    if capped().is_none() {
        return;
    }
    // A 144 KiB input [1, 64, 24, 24] into 18 KiB: whole input channels a
    // part (implicit GEMM and 1x1), each part adding into the output.
    for kernel in [3, 1] {
        let report = conv([1, 64, 24, 24], 8, kernel, kernel / 2, true).unwrap();
        assert!(parts(&report, "conv") >= 3, "{report}");
    }
    // And into 144 KiB as well: output channels and input channels at once.
    let report = conv([1, 64, 24, 24], 64, 3, 1, true).unwrap();
    assert!(parts(&report, "conv") >= 6, "{report}");
}

#[test]
fn per_channel_operands_and_concatenations_are_cut_where_alignment_would_not_allow() {
    if capped().is_none() {
        return;
    }
    // Batch-normalization-like scale and shift, a depthwise convolution
    // and a concatenation along channels on [1, 16, 48, 48] (144 KiB,
    // 9 KiB a channel): the [1, 16, 1, 1] operands' 4-byte rows and the
    // kernel's 36-byte ones would need parts to start at aligned channels
    // (8 at 32-byte alignment: 72 KiB), so the kernels start them inside
    // their bindings instead.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[1, 16, 48, 48]);
    let scale = konst(&mut model, "scale", tensor(&[1, 16, 1, 1], 13));
    let shift = konst(&mut model, "shift", tensor(&[1, 16, 1, 1], 14));
    let y = model
        .wire_node("scale_mul", ops::math::mul(), &[x, scale])
        .unwrap();
    let y = model
        .wire_node("shift_add", ops::math::add(), &[y[0], shift])
        .unwrap();
    let w = konst(&mut model, "w", tensor(&[16, 1, 3, 3], 15));
    let b = konst(&mut model, "b", tensor(&[16], 16));
    let dw = conv_op(nchw([3, 3], [1, 1], [1, 1], 16, 16), 16);
    let y = model.wire_node("depthwise", dw, &[y[0], w, b]).unwrap();
    let y = model
        .wire_node("concat", ops::array::TypedConcat { axis: 1 }, &[y[0], x])
        .unwrap();
    model.select_output_outlets(&y).unwrap();
    let names = ["scale_mul", "shift_add", "depthwise", "concat"];
    let report = check(model, vec![tensor(&[1, 16, 48, 48], 17)], &names).unwrap();
    for name in names {
        assert!(parts(&report, name) >= 2, "{report}");
    }
    assert_eq!(report.submissions, 1, "{report}");
}

#[test]
fn rows_and_pools_are_cut_between_aligned_offsets() {
    if capped().is_none() {
        return;
    }
    // [300, 111] f32 has 444-byte rows (aligned starts would take 8 at a
    // time): a softmax and a sum over them.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[300, 111]);
    let soft = model
        .wire_node(
            "softmax",
            Softmax::new(tvec![1], None, SoftmaxKind::Softmax),
            &[x],
        )
        .unwrap();
    let sum = model
        .wire_node(
            "sum",
            Reduce {
                axes: tvec![1],
                reducer: Reducer::Sum,
            },
            &[x],
        )
        .unwrap();
    model.select_output_outlets(&[soft[0], sum[0]]).unwrap();
    let report = check(model, vec![tensor(&[300, 111], 19)], &["softmax", "sum"]).unwrap();
    assert!(parts(&report, "softmax") >= 2, "{report}");
    // A 2x2 max pool over [1, 16, 47, 47]: 8836-byte channels, which
    // aligned starts would take 8 at a time (70 KB).
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[1, 16, 47, 47]);
    let pool = MaxPool {
        pool_spec: nchw([2, 2], [2, 2], [0, 0], 16, 16),
        with_index_outputs: None,
    };
    let out = model.wire_node("pool", pool, &[x]).unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(&[1, 16, 47, 47], 20)], &["pool"]).unwrap();
    assert!(parts(&report, "pool") >= 3, "{report}");
}

#[test]
fn a_transposed_convolution_is_cut_along_its_output_channels() {
    if capped().is_none() {
        return;
    }
    // [1, 16, 24, 24] up by two into [1, 16, 48, 48]: 144 KiB out.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[1, 16, 24, 24]);
    let w = konst(&mut model, "w", tensor(&[16, 16, 2, 2], 21));
    let b = konst(&mut model, "b", tensor(&[16], 22));
    let op = deconv_op(nchw([2, 2], [2, 2], [0, 0], 16, 16), 1);
    let out = model.wire_node("deconv", op, &[x, w, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(&[1, 16, 24, 24], 23)], &["deconv"]).unwrap();
    assert!(parts(&report, "deconv") >= 3, "{report}");
}

/// A transposed convolution from `input` into `co` channels (node
/// `deconv`), checked against tract: `kernel`, `stride`, symmetric `pad`.
fn deconv(input: [usize; 4], co: usize, kernel: usize, stride: usize, pad: usize) -> Report {
    let model = deconv_model(input, co, kernel, stride, pad);
    check(model, vec![tensor(&input, 30)], &["deconv"]).unwrap()
}

/// The model of [`deconv`].
fn deconv_model(
    input: [usize; 4],
    co: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> TypedModel {
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &input);
    let w = konst(&mut model, "w", tensor(&[co, input[1], kernel, kernel], 28));
    let b = konst(&mut model, "b", tensor(&[co], 29));
    let spec = nchw([kernel; 2], [stride; 2], [pad; 2], input[1], co);
    let op = deconv_op(spec, 1);
    let out = model.wire_node("deconv", op, &[x, w, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    model
}

#[test]
fn a_transposed_convolution_over_the_limit_everywhere_is_cut_along_rows_and_input_channels() {
    if capped().is_none() {
        return;
    }
    // A 100 KB input every output channel needs: its input channels a
    // part, the parts adding into the output.
    let report = deconv([1, 16, 40, 40], 4, 2, 2, 0);
    assert!(parts(&report, "deconv") >= 2, "{report}");
    // Into one 100 KB channel: its rows, from the input rows under them.
    let report = deconv([1, 8, 80, 80], 1, 2, 2, 0);
    assert!(parts(&report, "deconv") >= 4, "{report}");
    // Overlapping 3x3 taps at stride 2 with padding, batch 2: rows whose
    // input windows overlap.
    let report = deconv([2, 8, 60, 60], 2, 3, 2, 1);
    assert!(parts(&report, "deconv") >= 4, "{report}");
    // In f16, the partial sums over input channels added in f16.
    let input = [1, 16, 60, 60];
    let model = deconv_model(input, 2, 2, 2, 0);
    if let Some(report) = check_f16(model, vec![tensor(&input, 30)], &["deconv"]) {
        assert!(parts(&report, "deconv") >= 2, "{report}");
    }
}

#[test]
fn reductions_are_cut_along_kept_axes() {
    if capped().is_none() {
        return;
    }
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[300, 100]);
    let out = model
        .wire_node(
            "sum",
            Reduce {
                axes: tvec![1],
                reducer: Reducer::Sum,
            },
            &[x],
        )
        .unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(&[300, 100], 10)], &["sum"]).unwrap();
    assert!(parts(&report, "sum") >= 2, "{report}");
}

#[test]
fn reductions_over_runs_past_the_limit_are_cut_along_the_reduced_axis() {
    if capped().is_none() {
        return;
    }
    // (input, axes, reducer, at least this many parts): an 80 KB sum into
    // one value; the max of three 120 KB rows; the per-channel mean of
    // squares over 160 KB planes; a min over the outer of two reduced axes.
    let cases = [
        (vec![1, 20_000], vec![1], Reducer::Sum, 2),
        (vec![3, 30_000], vec![1], Reducer::Max, 6),
        (vec![1, 3, 200, 200], vec![2, 3], Reducer::MeanOfSquares, 9),
        (vec![50, 400, 3], vec![0, 1], Reducer::Min, 2),
    ];
    for (shape, axes, reducer, at_least) in cases {
        let mut model = TypedModel::default();
        let x = source(&mut model, "x", &shape);
        let op = Reduce {
            axes: axes.into_iter().collect(),
            reducer,
        };
        let out = model.wire_node("reduce", op, &[x]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let report = check(model, vec![tensor(&shape, 37)], &["reduce"]).unwrap();
        assert!(parts(&report, "reduce") >= at_least, "{shape:?}:\n{report}");
    }
}

#[test]
fn what_cannot_be_cut_stays_on_the_cpu_and_says_why() {
    if capped().is_none() {
        return;
    }
    // A softmax over the one long axis of 80 KB.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[20_000]);
    let out = model
        .wire_node(
            "softmax",
            Softmax::new(tvec![0], None, SoftmaxKind::Softmax),
            &[x],
        )
        .unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(&[20_000], 11)], &[]).unwrap();
    let node = report.nodes.iter().find(|n| n.name == "softmax").unwrap();
    match &node.place {
        Place::Cpu(why) => assert!(
            why.contains("65536 byte binding limit") && why.contains("along axis 0"),
            "{why}"
        ),
        other => panic!("softmax over 80 KB ran as {other:?}"),
    }
    // A convolution one of whose output rows is past the limit: no cut
    // along its channels or rows fits.
    let report = conv([1, 1, 3, 20_000], 1, 3, 1, false).unwrap();
    let node = report.nodes.iter().find(|n| n.name == "conv").unwrap();
    match &node.place {
        Place::Cpu(why) => assert!(
            why.contains("as a 1x60000x9 GEMM, no cut") && why.contains("65536 byte"),
            "{why}"
        ),
        other => panic!("80 KB rows ran as {other:?}"),
    }
}

/// A `kernel` x `kernel` max pool with stride `stride` and padding `pad`
/// (node `pool`), checked against tract.
fn max_pool(input: [usize; 4], kernel: usize, stride: usize, pad: usize) -> Report {
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &input);
    let spec = nchw([kernel; 2], [stride; 2], [pad; 2], input[1], input[1]);
    let pool = MaxPool {
        pool_spec: spec,
        with_index_outputs: None,
    };
    let out = model.wire_node("pool", pool, &[x]).unwrap();
    model.select_output_outlets(&out).unwrap();
    check(model, vec![tensor(&input, 24)], &["pool"]).unwrap()
}

#[test]
fn channels_over_the_limit_are_cut_along_their_rows() {
    if capped().is_none() {
        return;
    }
    // One 160 KB channel: parts of output rows, each reading the input
    // rows under them with their halo, the padding only at the edges.
    let report = conv([1, 1, 200, 200], 1, 3, 1, true).unwrap();
    assert!(parts(&report, "conv") >= 3, "{report}");
    // Three 117 KB channels into eight (an RGB stem): rows, input
    // channels and output channels at once, the parts along the input
    // channels adding into the output.
    let report = conv([1, 3, 171, 171], 8, 3, 1, true).unwrap();
    assert!(parts(&report, "conv") >= 3 * 8, "{report}");
    // Strided and dilated: the windows step two rows an output row and
    // reach four rows down.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[1, 2, 190, 190]);
    let w = konst(&mut model, "w", tensor(&[4, 2, 3, 3], 25));
    let b = konst(&mut model, "b", tensor(&[4], 26));
    let mut spec = nchw([3, 3], [2, 2], [2, 2], 2, 4);
    spec.dilations = Some(tvec![2, 2]);
    let out = model
        .wire_node("conv", conv_op(spec, 1), &[x, w, b])
        .unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(&[1, 2, 190, 190], 27)], &["conv"]).unwrap();
    assert!(parts(&report, "conv") >= 4, "{report}");
    // Depthwise, two channels of 141 KB, one with a multiplier of two:
    // one output channel and a run of its rows a part.
    for (co, group) in [(2, 2), (4, 2)] {
        let report = grouped([1, 2, 188, 188], co, group, 3, 1, true).unwrap();
        assert!(parts(&report, "conv") >= 3 * co, "{report}");
    }
    // In f16 (2-byte elements, windows from offsets between the aligned
    // ones): an RGB stem and a depthwise convolution.
    for (input, co, group) in [([1, 3, 240, 240], 8, 1), ([1, 2, 260, 260], 2, 2)] {
        let model = conv_model(input, co, group, 3, 1);
        if let Some(report) = check_f16(model, vec![tensor(&input, 9)], &["conv"]) {
            assert!(parts(&report, "conv") >= 3, "{report}");
        }
    }
    // Pools: 3x3 stride 1 with padding, and 2x2 stride 2.
    let report = max_pool([1, 2, 188, 188], 3, 1, 1);
    assert!(parts(&report, "pool") >= 6, "{report}");
    let report = max_pool([2, 1, 200, 200], 2, 2, 0);
    assert!(parts(&report, "pool") >= 4, "{report}");
}

/// Kernel, stride, dilation and padding before and after, per spatial
/// axis, for one pseudo-random case.
#[derive(Debug)]
struct Geometry {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    before: [usize; 2],
    after: [usize; 2],
}

/// A deterministic stream of picks (a fixed seed, so a failure repeats).
struct Picks(u64);

impl Picks {
    fn pick(&mut self, lo: usize, hi: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) as usize % (hi - lo + 1)
    }

    /// Kernels of one to five taps, strides up to `stride`, dilations up to
    /// two, padding up to the kernel's reach on either side.
    fn geometry(&mut self, stride: usize) -> Geometry {
        let kernel = [self.pick(1, 5), self.pick(1, 5)];
        let dilation = [self.pick(1, 2), self.pick(1, 2)];
        let reach = |i: usize| (kernel[i] - 1) * dilation[i];
        Geometry {
            kernel,
            stride: [self.pick(1, stride), self.pick(1, stride)],
            dilation,
            before: [self.pick(0, reach(0)), self.pick(0, reach(1))],
            after: [self.pick(0, reach(0)), self.pick(0, reach(1))],
        }
    }
}

impl Geometry {
    fn spec(&self, ci: usize, co: usize) -> tract_onnx::tract_core::ops::cnn::PoolSpec {
        let mut spec = nchw(self.kernel, self.stride, [0, 0], ci, co);
        spec.dilations = Some(self.dilation[..].into());
        spec.padding =
            ops::cnn::PaddingSpec::Explicit(self.before[..].into(), self.after[..].into());
        spec
    }
}

/// One node `op` on a source of `input`, checked against tract on the GPU,
/// cut into parts.
fn cut_case(
    input: &[usize],
    case: &str,
    wire: impl FnOnce(&mut TypedModel, OutletId) -> TVec<OutletId>,
) {
    eprintln!("case {case} on {input:?}");
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", input);
    let out = wire(&mut model, x);
    model.select_output_outlets(&out).unwrap();
    let report = check(model, vec![tensor(input, 32)], &["op"]).unwrap();
    assert!(parts(&report, "op") >= 2, "{case}:\n{report}");
}

#[test]
fn spatial_cuts_match_tract_over_varied_geometries() {
    if capped().is_none() {
        return;
    }
    let mut picks = Picks(0x5eed);
    // Convolutions, plain and depthwise, on channels of 66 to 160 KB.
    for i in 0..20 {
        let g = picks.geometry(3);
        let (h, w) = (picks.pick(130, 200), picks.pick(130, 200));
        let depthwise = i % 2 == 1;
        let ci = picks.pick(1, 3);
        let co = if depthwise { ci } else { picks.pick(1, 4) };
        let group = if depthwise { ci } else { 1 };
        let case = format!("conv {ci}->{co} in {group} groups, {g:?}");
        cut_case(&[1, ci, h, w], &case, |model, x| {
            let k = konst(
                model,
                "w",
                tensor(&[co, ci / group, g.kernel[0], g.kernel[1]], 33),
            );
            let b = konst(model, "b", tensor(&[co], 34));
            let op = conv_op(g.spec(ci, co), group);
            model.wire_node("op", op, &[x, k, b]).unwrap()
        });
    }
    // Max and average pools (padding counted or not).
    for i in 0..12 {
        let g = picks.geometry(3);
        let (h, w) = (picks.pick(130, 200), picks.pick(130, 200));
        let c = picks.pick(1, 2);
        let case = format!("pool {i} on {c} channels, {g:?}");
        cut_case(&[1, c, h, w], &case, |model, x| {
            let spec = g.spec(c, c);
            if i % 2 == 0 {
                let op = ops::cnn::MaxPool {
                    pool_spec: spec,
                    with_index_outputs: None,
                };
                model.wire_node("op", op, &[x]).unwrap()
            } else {
                let op = ops::cnn::SumPool {
                    pool_spec: spec,
                    count_include_pad: i % 4 == 1,
                    normalize: true,
                };
                model.wire_node("op", op, &[x]).unwrap()
            }
        });
    }
    // Transposed convolutions from 72 KB and more of input.
    for _ in 0..16 {
        let g = picks.geometry(3);
        let (h, w) = (picks.pick(60, 90), picks.pick(60, 90));
        let (ci, co) = (picks.pick(5, 8), picks.pick(1, 3));
        let case = format!("deconv {ci}->{co}, {g:?}");
        cut_case(&[1, ci, h, w], &case, |model, x| {
            let k = konst(model, "w", tensor(&[co, ci, g.kernel[0], g.kernel[1]], 35));
            let b = konst(model, "b", tensor(&[co], 36));
            let op = deconv_op(g.spec(ci, co), 1);
            model.wire_node("op", op, &[x, k, b]).unwrap()
        });
    }
}

#[test]
fn batches_each_of_whose_items_is_over_the_limit_are_cut_within_each_item() {
    if capped().is_none() {
        return;
    }
    // Three 80 KB images [4, 50, 100]: a per-channel scale (broadcast
    // along the channels) and a ReLU, cut by image and then by channels.
    let mut model = TypedModel::default();
    let x = source(&mut model, "x", &[3, 4, 50, 100]);
    let s = konst(&mut model, "s", tensor(&[1, 4, 1, 1], 3));
    let y = model.wire_node("scale", ops::math::mul(), &[x, s]).unwrap();
    let zero = konst(
        &mut model,
        "zero",
        Tensor::from_shape(&[1, 1, 1, 1], &[0f32]).unwrap(),
    );
    let y = model
        .wire_node("relu", ops::math::max(), &[y[0], zero])
        .unwrap();
    model.select_output_outlets(&y).unwrap();
    let report = check(model.clone(), vec![tensor(&[3, 4, 50, 100], 4)], &["scale"]).unwrap();
    assert!(parts(&report, "scale") >= 6, "{report}");
    if let Some(report) = check_f16(model, vec![tensor(&[3, 4, 50, 100], 4)], &["scale"]) {
        assert!(parts(&report, "scale") >= 3, "{report}");
    }
    // A batched 1x1 convolution as tract declutters it (EinSum with the
    // batch a broadcast axis of the weights): each 96 KB image cut as a
    // GEMM; and a 3x3 one, each image along rows or channels.
    for (kernel, pad) in [(1, 0), (3, 1)] {
        let model = conv_model([3, 6, 40, 100], 6, 1, kernel, pad)
            .into_decluttered()
            .unwrap();
        let names: Vec<String> = model
            .nodes()
            .iter()
            .filter(|n| n.op_is::<ops::einsum::EinSum>() || n.op_is::<ops::cnn::Conv>())
            .map(|n| n.name.clone())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let report = check(model, vec![tensor(&[3, 6, 40, 100], 5)], &names).unwrap();
        assert_eq!(report.cpu_nodes().count(), 0, "{report}");
        assert!(parts(&report, names[0]) >= 6, "{report}");
    }
}
