//! Shared helpers for Weft's end-to-end tests: where things are, and how a
//! test that needs an absent component behaves (skip locally, fail in CI).

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A committed test model under `tests/data`.
pub fn data(name: &str) -> PathBuf {
    repo_root().join("tests/data").join(name)
}

/// Skip a test whose prerequisite is missing, unless `CI` is set: there a
/// missing prerequisite is a broken pipeline, not a reason to pass.
pub fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("required test prerequisite missing in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Which guest ABI a test module is built for.
#[derive(Debug, Clone, Copy)]
pub enum Guest {
    /// `wasm32-wasip1` core module.
    P1,
    /// `wasm32-wasip2` component.
    P2,
}

/// A guest module built from `modules/` by this crate's build script.
pub fn module(guest: Guest, name: &str) -> PathBuf {
    let triple = match guest {
        Guest::P1 => "wasm32-wasip1",
        Guest::P2 => "wasm32-wasip2",
    };
    let path = Path::new(env!("WEFT_MODULES_TARGET"))
        .join(triple)
        .join("release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: the build script builds it unless WEFT_SKIP_MODULE_BUILD is set",
        path.display()
    );
    path
}

/// The real models fetched by `scripts/fetch-models.sh`, if present.
pub fn models_dir() -> Option<PathBuf> {
    let dir = repo_root().join("models");
    dir.join("ch_PP-OCRv4_det_infer.onnx")
        .exists()
        .then_some(dir)
}
