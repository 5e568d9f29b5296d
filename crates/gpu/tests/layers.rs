//! weft-gpu's modules form layers that depend one way only: each refers
//! (through `crate::`) to modules of lower layers, never to its own layer's
//! neighbours or to a higher one. A reference that breaks the order fails
//! here with the file and the path it names.

use std::path::Path;

/// Bottom to top. `coop` picks the tensor-core kernel and moves dispatches
/// onto it (below `plan`, which uses it); `probe` runs a plan.
const LAYERS: [&str; 9] = [
    "error", "device", "kernels", "lower", "coop", "split", "weights", "plan", "probe",
];

/// `lib.rs`'s re-exports: which module each exported name comes from.
const EXPORTS: [(&str, &str); 14] = [
    ("GpuError", "error"),
    ("Gpu", "device"),
    ("GpuConfig", "device"),
    ("Selector", "device"),
    ("AdapterReport", "device"),
    ("shared", "device"),
    ("config", "device"),
    ("Kernel", "kernels"),
    ("GpuPlan", "plan"),
    ("GpuContext", "plan"),
    ("Place", "plan"),
    ("Report", "plan"),
    ("NodeReport", "plan"),
    ("Weights", "weights"),
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| *l == module)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in LAYERS: add it"))
}

/// Every `crate::NAME` in `text`, outside comments, as the module it names.
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if let Some(module) = LAYERS.iter().find(|l| **l == name) {
                out.push(module.to_string());
            } else if let Some((_, module)) = EXPORTS.iter().find(|(n, _)| *n == name) {
                out.push(module.to_string());
            }
            // Anything else (`crate::memory_in_use`...) is named by the
            // test below if it is not exported from a known module.
            else if !name.is_empty() {
                out.push(format!("?{name}"));
            }
        }
    }
    out
}

/// The module a source file belongs to (`split/gemm.rs` is `split`).
fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).expect("under src");
    let first = rel
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut broken = Vec::new();
    for path in &all {
        let module = module_of(path, &src);
        if module == "lib" {
            continue;
        }
        let own = layer(&module);
        let text = std::fs::read_to_string(path).expect("readable file");
        for target in references(&text) {
            if let Some(name) = target.strip_prefix('?') {
                broken.push(format!(
                    "{}: `crate::{name}` names no module of LAYERS or EXPORTS",
                    path.display()
                ));
                continue;
            }
            if target != module && layer(&target) >= own {
                broken.push(format!(
                    "{}: `{module}` refers to `{target}`, which is not below it",
                    path.display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "layers broken:\n{}", broken.join("\n"));
}

#[test]
fn the_scan_sees_references_and_skips_comments() {
    let text = "use crate::plan::GpuPlan;\n// crate::probe is named in a comment\nlet g = crate::Gpu::x(); crate::memory_in_use()";
    assert_eq!(references(text), ["plan", "device", "?memory_in_use"]);
}
