//! Build the guest modules in `modules/` (their own workspace) so the tests
//! can run them, as runwasi does for its test modules. Set
//! `WEFT_SKIP_MODULE_BUILD=1` to use modules built some other way.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let modules = root.join("modules");
    let target = modules.join("target");
    println!("cargo:rustc-env=WEFT_MODULES_TARGET={}", target.display());
    println!("cargo:rerun-if-env-changed=WEFT_SKIP_MODULE_BUILD");
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "serve",
        "predictor",
        "echo",
        "flaky",
        "../runtime/wit",
        "../crates/abi/src",
        "ocr/src",
        "ocr-serve/src",
        "hostile",
        "classic",
        "tinyrun",
        "nnbench",
    ] {
        println!("cargo:rerun-if-changed={}", modules.join(entry).display());
    }
    if std::env::var_os("WEFT_SKIP_MODULE_BUILD").is_some() {
        return;
    }
    for (target_triple, packages) in [
        ("wasm32-wasip1", &[][..]),
        (
            "wasm32-wasip2",
            &["ocr", "tinyrun", "predictor", "echo", "ocr-serve"][..],
        ),
    ] {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&modules)
            .args(["build", "--release", "--target", target_triple])
            .arg("--target-dir")
            .arg(&target);
        for p in packages {
            cmd.args(["-p", p]);
        }
        // Don't leak the host build's settings (clippy's wrapper, flags,
        // target dir) into the guest build.
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
        let status = cmd.status().expect("running cargo for the guest modules");
        assert!(
            status.success(),
            "building the guest modules for {target_triple} failed; run `cargo build --release --target {target_triple}` in modules/ to see why"
        );
    }
}
