//! Real networks cut to fit a small binding limit: the PP-OCRv4 recognition
//! and detection models (`scripts/fetch-models.sh`) on a device opened with
//! a 256 KiB limit (this binary's own process, so no other test sees it).
//! Their convolutions, batch-normalization operands, depthwise
//! convolutions, the recognizer's 3 MiB classifier GEMM and the detector's
//! RGB stem and transposed convolutions must all be cut, every node must
//! stay on the GPU, and the outputs must be tract's.

use std::path::PathBuf;
use tract_onnx::prelude::*;
use weft_gpu::{Place, Report};

mod common;
use common::*;

/// The OCR model `file` for input `shape`, decluttered; `None` (skipped)
/// when there is no adapter or the models are not fetched.
fn model(file: &str, shape: [usize; 4]) -> Option<TypedModel> {
    weft_gpu::configure(weft_gpu::GpuConfig {
        binding_limit: Some(256 << 10),
        ..Default::default()
    });
    gpu()?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file);
    if !path.exists() {
        weft_tests_skip("OCR models not fetched; run scripts/fetch-models.sh");
        return None;
    }
    let model = tract_onnx::onnx()
        .model_for_path(&path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap();
    Some(model)
}

/// Every node of `report` on the GPU in one submission, and nodes of each
/// of `ops` cut into parts.
fn whole_on_the_gpu(report: &Report, ops: &[&str]) {
    let on_cpu: Vec<_> = report
        .nodes
        .iter()
        .filter(|n| matches!(n.place, Place::Cpu(_)))
        .collect();
    assert!(on_cpu.is_empty(), "{report}");
    let cut: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.parts > 1)
        .map(|n| n.op.as_str())
        .collect();
    for op in ops {
        assert!(cut.contains(op), "no {op} was cut:\n{report}");
    }
    assert_eq!(report.submissions, 1, "{report}");
}

#[test]
fn the_ocr_recognizer_runs_whole_on_the_gpu_under_a_256_kib_binding_limit() {
    let shape = [1, 3, 48, 320];
    let Some(model) = model("ch_PP-OCRv4_rec_infer.onnx", shape) else {
        return;
    };
    let report = check(model, vec![tensor(&shape, 18)], &[]).unwrap();
    whole_on_the_gpu(&report, &["Conv", "EinSum", "Mul", "Add"]);
}

#[test]
fn a_batch_of_two_text_lines_each_over_the_limit_runs_whole_on_the_gpu() {
    // One line's largest activations (480 KiB) are over the limit on their
    // own: each node is cut line by line, then within the line; the
    // pointwise convolutions, which tract writes as EinSum with the batch
    // outside the channels, as GEMMs.
    let shape = [2, 3, 48, 320];
    let Some(model) = model("ch_PP-OCRv4_rec_infer.onnx", shape) else {
        return;
    };
    let report = check(model, vec![tensor(&shape, 19)], &[]).unwrap();
    whole_on_the_gpu(&report, &["Conv", "EinSum", "Mul", "Add"]);
}

#[test]
fn the_ocr_detector_runs_whole_on_the_gpu_under_a_256_kib_binding_limit() {
    // 320x320: a 400 KiB RGB input (its channels over the limit), 100 KiB
    // planes of 16 channels at 160x160, and a one-channel 400 KiB output.
    let shape = [1, 3, 320, 320];
    let Some(mut model) = model("ch_PP-OCRv4_det_infer.onnx", shape) else {
        return;
    };
    // Its logits: the sigmoid's probabilities are all but zero on a noise
    // input, which any output would match.
    let last = model.output_outlets().unwrap()[0].node;
    assert_eq!(model.node(last).op.name(), "Sigmoid");
    let logits = model.node(last).inputs[0];
    model.select_output_outlets(&[logits]).unwrap();
    let model = model.into_compact().unwrap();
    let report = check(model, vec![tensor(&shape, 31)], &[]).unwrap();
    whole_on_the_gpu(&report, &["Conv", "EinSum", "Deconv", "Mul"]);
    // The stem, every one of whose input channels is over the limit, is
    // cut along its rows as well as its channels.
    let stem = &report.nodes[report.nodes.iter().position(|n| n.op == "Conv").unwrap()];
    assert!(stem.parts > 3, "{report}");
}
