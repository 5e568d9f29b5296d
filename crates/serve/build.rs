//! Two build steps:
//! 1. compile `proto/grpc_predict_v2.proto` with a vendored `protoc` (no
//!    system protobuf compiler needed);
//! 2. build the bundled generic serving module (`modules/predictor`, as a
//!    wasm32-wasip2 component) so `weft serve model.onnx` works with nothing
//!    but the binary. `WEFT_PREDICTOR_WASM=path` uses a prebuilt one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    tonic_prost_build::configure()
        .build_client(true)
        // Counts inputs, outputs and dimensions on the wire before prost
        // builds any struct (src/wire.rs).
        .codec_path("crate::wire::BoundedCodec")
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])
        .expect("compiling grpc_predict_v2.proto");

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("predictor.wasm");
    println!("cargo:rerun-if-env-changed=WEFT_PREDICTOR_WASM");
    let built = match std::env::var_os("WEFT_PREDICTOR_WASM") {
        Some(path) => PathBuf::from(path),
        None => build_predictor(),
    };
    std::fs::copy(&built, &out)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), out.display()));
}

fn build_predictor() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let modules = root.join("modules");
    let target = modules.join("target");
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "serve",
        "predictor",
        "../runtime/wit",
        "../crates/abi/src",
    ] {
        println!("cargo:rerun-if-changed={}", modules.join(entry).display());
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&modules)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "predictor",
        ])
        .arg("--target-dir")
        .arg(&target);
    // The host build's settings (clippy's wrapper, flags, target dir) must
    // not leak into the guest build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for modules/predictor");
    assert!(
        status.success(),
        "building modules/predictor for wasm32-wasip2 failed; run `cargo build --release --target wasm32-wasip2 -p predictor` in modules/ to see why"
    );
    target.join("wasm32-wasip2/release/predictor.wasm")
}
