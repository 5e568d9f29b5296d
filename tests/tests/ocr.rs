//! The flagship example end to end: PP-OCRv4 in a wasm guest (both ABIs)
//! must read the bundled sample exactly as rapidocr itself does
//! (`modules/ocr/testdata/expected.txt`, recorded with rapidocr-onnxruntime
//! 1.4.4 on onnxruntime).

use std::path::Path;
use std::sync::Arc;
use weft_nn::{Models, Preload};
use weft_runtime::{DirGrant, MemoryOutputPipe, RunOptions, Runtime, RuntimeConfig};
use weft_tests::{Guest, models_dir, module, repo_root, skip_or_fail};

fn ocr_models(dir: &Path) -> Arc<Models> {
    ocr_models_on(dir, "cpu")
}

fn ocr_models_on(dir: &Path, target: &str) -> Arc<Models> {
    let preloads: Vec<Preload> = [
        ("ppocr-det", "ch_PP-OCRv4_det_infer.onnx"),
        ("ppocr-rec", "ch_PP-OCRv4_rec_infer.onnx"),
    ]
    .iter()
    .map(|(name, file)| {
        format!("{name}:onnx:{target}:{}", dir.join(file).display())
            .parse()
            .unwrap()
    })
    .collect();
    Arc::new(Models::load(&preloads, Default::default()).unwrap())
}

fn run_ocr(guest: Guest, models: Arc<Models>, dir: &Path, image: &str) -> (i32, String) {
    run_ocr_within(guest, models, dir, image, weft_runtime::Limits::default())
}

fn run_ocr_within(
    guest: Guest,
    models: Arc<Models>,
    dir: &Path,
    image: &str,
    limits: weft_runtime::Limits,
) -> (i32, String) {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let program = rt.load_file(&module(guest, "ocr")).unwrap();
    let out = MemoryOutputPipe::new(1 << 20);
    let code = rt
        .run(
            &program,
            RunOptions {
                args: vec![image.into()],
                dirs: vec![
                    DirGrant {
                        host: dir.into(),
                        guest: "/models".into(),
                        read_only: true,
                    },
                    DirGrant {
                        host: repo_root().join("modules/ocr/testdata"),
                        guest: "/input".into(),
                        read_only: true,
                    },
                ],
                models,
                stdout: Some(out.clone()),
                limits,
                ..Default::default()
            },
        )
        .unwrap();
    (code, String::from_utf8_lossy(&out.contents()).into_owned())
}

#[test]
fn ocr_reads_the_sample_like_rapidocr_in_both_guest_kinds() {
    let Some(dir) = models_dir() else {
        skip_or_fail("OCR models not fetched; run scripts/fetch-models.sh");
        return;
    };
    let expected =
        std::fs::read_to_string(repo_root().join("modules/ocr/testdata/expected.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
    let models = ocr_models(&dir);
    for guest in [Guest::P1, Guest::P2] {
        let (code, out) = run_ocr(guest, models.clone(), &dir, "/input/sample.png");
        assert_eq!(code, 0, "{guest:?}: {out}");
        // Each line: box corners, score, text (tab separated).
        let lines: Vec<(&str, f32)> = out
            .lines()
            .map(|l| {
                let cols: Vec<&str> = l.splitn(3, '\t').collect();
                assert_eq!(cols.len(), 3, "{guest:?}: malformed line {l:?}");
                (cols[2], cols[1].parse().unwrap())
            })
            .collect();
        let texts: Vec<&str> = lines.iter().map(|(t, _)| *t).collect();
        assert_eq!(texts, expected, "{guest:?}");
        assert!(
            lines.iter().all(|(_, score)| *score > 0.9),
            "{guest:?}: {out}"
        );
    }
}

/// The same module and models through the GPU backend (lavapipe in CI):
/// the same text, and the models really ran there.
#[test]
fn ocr_reads_the_sample_on_the_gpu() {
    let Some(dir) = models_dir() else {
        skip_or_fail("OCR models not fetched; run scripts/fetch-models.sh");
        return;
    };
    if let Err(e) = weft_nn::gpu::shared() {
        skip_or_fail(&format!(
            "no GPU adapter (apt-get install mesa-vulkan-drivers): {e}"
        ));
        return;
    }
    let expected =
        std::fs::read_to_string(repo_root().join("modules/ocr/testdata/expected.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
    let models = ocr_models_on(&dir, "gpu");
    assert_eq!(models.device("ppocr-det"), Some(weft_nn::Device::Gpu));
    assert_eq!(models.device("ppocr-rec"), Some(weft_nn::Device::Gpu));
    // Lavapipe's speed varies several-fold between CPUs (43 s on one
    // 2-core machine, past 300 s on another for the same run), and the
    // guest's wall-clock limit is not what this test checks: give it an
    // hour rather than the 300 s default.
    let limits = weft_runtime::Limits {
        timeout: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let (code, out) = run_ocr_within(Guest::P1, models.clone(), &dir, "/input/sample.png", limits);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<(&str, f32)> = out
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.splitn(3, '\t').collect();
            (cols[2], cols[1].parse().unwrap())
        })
        .collect();
    let texts: Vec<&str> = lines.iter().map(|(t, _)| *t).collect();
    assert_eq!(texts, expected);
    assert!(lines.iter().all(|(_, score)| *score > 0.9), "{out}");
}

#[test]
fn ocr_says_what_is_wrong_with_bad_input() {
    let Some(dir) = models_dir() else {
        skip_or_fail("OCR models not fetched; run scripts/fetch-models.sh");
        return;
    };
    // An image that does not decode.
    let (code, _) = run_ocr(Guest::P1, ocr_models(&dir), &dir, "/input/expected.txt");
    assert_ne!(code, 0);
    // Models not preloaded: the guest is told `not_found` and exits non-zero.
    let (code, _) = run_ocr(
        Guest::P1,
        Arc::new(Models::default()),
        &dir,
        "/input/sample.png",
    );
    assert_ne!(code, 0);
}
