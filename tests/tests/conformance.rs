//! The ONNX backend node test suite through the CPU backend.
//!
//! `scripts/onnx-node-tests.py` writes the 1,884 single-operator cases
//! shipped (as generators) in the `onnx` wheel; `.ci/run` does it into
//! `target/onnx-node-tests`. Every case in `tests/conformance/must-pass.txt`
//! must pass; the overall count is printed. Inputs go through the same
//! wasi-nn tensor path a guest uses, so a case with an input type wasi-nn
//! cannot carry (bool, string, int8...) fails here as it would for a guest.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tract_onnx::prelude::{DatumType, Tensor as TractTensor};
use weft_nn::{Device, Id, OnnxModel, Place, TractContext, from_tract, to_tract};

/// The generated cases' directory; `None` (after skipping, or failing in
/// CI) when they were not generated.
fn cases_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WEFT_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| weft_tests::repo_root().join("target/onnx-node-tests"));
    if !dir.is_dir() {
        weft_tests::skip_or_fail(
            "ONNX node tests not generated; run `python3 scripts/onnx-node-tests.py target/onnx-node-tests`",
        );
        return None;
    }
    Some(dir)
}

fn load_pb(path: &Path) -> Result<TractTensor, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = tract_onnx::tensor::proto_from_reader(file).map_err(|e| format!("{e:#}"))?;
    tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::MmapDataResolver, &proto, None)
        .map_err(|e| format!("{e:#}"))
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// numpy's `assert_allclose(rtol=1e-3, atol=1e-7)`, the ONNX runner default,
/// with NaN equal to NaN.
fn close(got: &TractTensor, want: &TractTensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let as_f64 = |t: &TractTensor| -> Result<Vec<f64>, String> {
        let t = t.cast_to_dt(DatumType::F64).map_err(|e| format!("{e:#}"))?;
        let view = t
            .to_plain_array_view::<f64>()
            .map_err(|e| format!("{e:#}"))?;
        Ok(view.iter().copied().collect())
    };
    let (g, w) = (as_f64(got)?, as_f64(want)?);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-7 + 1e-3 * b.abs();
        if !ok {
            return Err(format!("element {i}: {a} != expected {b}"));
        }
    }
    Ok(())
}

fn run_case(dir: &Path) -> Result<(), String> {
    run_case_on(dir, Device::Cpu).map(|_| ())
}

/// Run one case on a device; on the GPU, also say whether any node of it
/// was lowered (rather than falling back to tract).
fn run_case_on(dir: &Path, device: Device) -> Result<bool, String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let model = OnnxModel::load(&bytes).map_err(|e| e.to_string())?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err("no test data".into());
    }
    let mut lowered = false;
    for set in sets {
        let inputs = numbered(&set, "input_");
        if inputs.len() != model.inputs().len() {
            return Err(format!(
                "{} tensor inputs for a model with {} inputs",
                inputs.len(),
                model.inputs().len()
            ));
        }
        let mut ctx = TractContext::on(model.clone(), device);
        let mut shapes = Vec::new();
        let mut types = Vec::new();
        for (k, path) in inputs.iter().enumerate() {
            let t = load_pb(path)?;
            shapes.push(t.shape().to_vec());
            types.push(t.datum_type());
            let tensor = from_tract(&t).map_err(|e| e.to_string())?;
            ctx.set(Id::Index(k as u32), &tensor)
                .map_err(|e| e.to_string())?;
        }
        ctx.run().map_err(|e| e.to_string())?;
        let outputs = numbered(&set, "output_");
        if outputs.is_empty() {
            return Err("no tensor outputs to compare".into());
        }
        for (k, path) in outputs.iter().enumerate() {
            let got = ctx
                .output(&Id::Index(k as u32))
                .map_err(|e| e.to_string())?;
            let got = to_tract(&got).map_err(|e| e.to_string())?;
            close(&got, &load_pb(path)?).map_err(|e| format!("output {k}: {e}"))?;
        }
        // A graph planned per input values has no GPU plan: it ran on the
        // CPU (checked above), with nothing lowered.
        if device == Device::Gpu
            && let Ok(plan) = model.gpu_plan(&shapes, &types)
        {
            lowered |= plan
                .report()
                .nodes
                .iter()
                .any(|n| matches!(n.place, Place::Gpu(_)));
        }
    }
    Ok(lowered)
}

/// The case names `tests/conformance/must-pass.txt` lists.
fn must_pass() -> Vec<String> {
    std::fs::read_to_string(weft_tests::repo_root().join("tests/conformance/must-pass.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Run every case on all cores; a panic is that case's failure. Results
/// are sorted by case name.
fn run_all<T: Send>(
    cases: &[PathBuf],
    run: impl Fn(&Path) -> Result<T, String> + Sync,
) -> Vec<(String, Result<T, String>)> {
    let queue = Mutex::new(cases.iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..std::thread::available_parallelism().map_or(2, |n| n.get()) {
            s.spawn(|| {
                loop {
                    let Some(case) = queue.lock().unwrap().next() else {
                        break;
                    };
                    let name = case.file_name().unwrap().to_string_lossy().into_owned();
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(case)))
                            .unwrap_or_else(|_| Err("panicked".into()));
                    results.lock().unwrap().push((name, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}

#[test]
fn onnx_node_test_suite() {
    let Some(dir) = cases_dir() else { return };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    let results = run_all(&cases, run_case);
    let passed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n.as_str())
        .collect();
    println!(
        "onnx node conformance (CPU backend): {} of {} cases passed",
        passed.len(),
        results.len()
    );
    if let Some(path) = std::env::var_os("WEFT_CONFORMANCE_REPORT") {
        let report: String = results
            .iter()
            .map(|(n, r)| match r {
                Ok(()) => format!("{n}\tpass\n"),
                Err(e) => format!("{n}\tfail\t{}\n", e.replace('\n', " ")),
            })
            .collect();
        std::fs::write(path, report).unwrap();
    }
    let regressions: Vec<String> = must_pass()
        .iter()
        .filter_map(|name| match results.iter().find(|(n, _)| n == name) {
            Some((_, Ok(()))) => None,
            Some((_, Err(e))) => Some(format!("{name}: {e}")),
            None => Some(format!("{name}: case missing from {}", dir.display())),
        })
        .collect();
    assert!(
        regressions.is_empty(),
        "{} must-pass cases failed:\n{}",
        regressions.len(),
        regressions.join("\n")
    );
}

/// Every case that passes on the CPU passes through the GPU backend too:
/// lowered operators against the ONNX reference outputs (lavapipe in CI),
/// the rest through the fallback to tract with its transfers. Prints how
/// many cases had at least one node lowered.
#[test]
fn onnx_node_tests_through_the_gpu_backend() {
    let Some(dir) = cases_dir() else { return };
    if let Err(e) = weft_nn::gpu::shared() {
        weft_tests::skip_or_fail(&format!(
            "no GPU adapter (apt-get install mesa-vulkan-drivers): {e}"
        ));
        return;
    }
    let cases: Vec<PathBuf> = must_pass().iter().map(|n| dir.join(n)).collect();
    let results = run_all(&cases, |case| run_case_on(case, Device::Gpu));
    let lowered = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(true)))
        .count();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    println!(
        "onnx node conformance (GPU backend): {} of {} CPU-passing cases pass, {lowered} with lowered nodes",
        results.len() - failed.len(),
        results.len()
    );
    assert!(
        failed.is_empty(),
        "{} cases fail through the GPU backend:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // The lowered operators are exercised, not just the fallback.
    assert!(lowered >= 300, "only {lowered} cases lowered any node");
}
