//! A real network cut to fit a small binding limit: the PP-OCRv4
//! recognition model (`scripts/fetch-models.sh`) on a device opened with a
//! 256 KiB limit (this binary's own process, so no other test sees it).
//! Its convolutions, batch-normalization operands, depthwise convolutions
//! and the 3 MiB classifier GEMM must all be cut, every node must stay on
//! the GPU, and the output must be tract's.

use std::path::PathBuf;
use tract_onnx::prelude::*;
use weft_gpu::Place;

mod common;
use common::*;

#[test]
fn the_ocr_recognizer_runs_whole_on_the_gpu_under_a_256_kib_binding_limit() {
    weft_gpu::set_binding_limit(Some(256 << 10));
    if gpu().is_none() {
        return;
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/ch_PP-OCRv4_rec_infer.onnx");
    if !path.exists() {
        weft_tests_skip("OCR models not fetched; run scripts/fetch-models.sh");
        return;
    }
    let shape = [1, 3, 48, 320];
    let model = tract_onnx::onnx()
        .model_for_path(&path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap();
    let report = check(model, vec![tensor(&shape, 18)], &[]).unwrap();
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
    for op in ["Conv", "EinSum", "Mul", "Add"] {
        assert!(cut.contains(&op), "no {op} was cut:\n{report}");
    }
    assert_eq!(report.submissions, 1, "{report}");
}
