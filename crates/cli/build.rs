//! Builds the generic serving module bundled into `weft serve`
//! (`modules/predictor`, a wasm32-wasip2 component) so that `weft serve
//! model.onnx` works with nothing but the binary. `WEFT_PREDICTOR_WASM=path`
//! uses a prebuilt one.

use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("predictor.wasm");
    println!("cargo:rerun-if-env-changed=WEFT_PREDICTOR_WASM");
    let built = match std::env::var_os("WEFT_PREDICTOR_WASM") {
        Some(path) => PathBuf::from(path),
        None => {
            let guests =
                weft_guest_build::Guests::at(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
            guests.rerun_if_changed(&weft_guest_build::SHARED_INPUTS);
            guests.rerun_if_changed(&["predictor"]);
            guests
                .build("wasm32-wasip2", &["predictor"])
                .unwrap_or_else(|e| panic!("{e}"))
                .join("predictor.wasm")
        }
    };
    std::fs::copy(&built, &out)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), out.display()));
}
