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
