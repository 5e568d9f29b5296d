//! Weft's end-to-end test harness: the guest modules its build script
//! builds from `modules/` ([`module`]), the Kubernetes API mock
//! ([`apiserver`]), and everything of `weft-testkit` (paths, skipping,
//! real servers on 127.0.0.1).

use std::path::{Path, PathBuf};

pub mod apiserver;
pub use weft_testkit::*;

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
