//! Builds the guest modules bundled into `weft`: the generic serving module
//! of `weft serve` (`modules/predictor`) and the generic trainer of `weft
//! train` (`modules/trainer`), both wasm32-wasip2 components, so that `weft
//! serve model.onnx` and `weft train --data DIR` work with nothing but the
//! binary. `WEFT_PREDICTOR_WASM=path` and `WEFT_TRAINER_WASM=path` use
//! prebuilt ones.

use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let guests = weft_guest_build::Guests::at(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let mut built = Vec::new();
    let mut missing = Vec::new();
    for (name, var) in [
        ("predictor", "WEFT_PREDICTOR_WASM"),
        ("trainer", "WEFT_TRAINER_WASM"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        match std::env::var_os(var) {
            Some(path) => built.push((name, PathBuf::from(path))),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        guests.rerun_if_changed(&weft_guest_build::SHARED_INPUTS);
        guests.rerun_if_changed(&missing);
        let dir = guests
            .build("wasm32-wasip2", &missing)
            .unwrap_or_else(|e| panic!("{e}"));
        built.extend(missing.iter().map(|n| (*n, dir.join(format!("{n}.wasm")))));
    }
    for (name, path) in built {
        let to = out.join(format!("{name}.wasm"));
        std::fs::copy(&path, &to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", path.display(), to.display()));
    }
}
