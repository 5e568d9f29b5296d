//! Build the guest modules in `modules/` (their own workspace) so the tests
//! can run them, as runwasi does for its test modules. Set
//! `WEFT_SKIP_MODULE_BUILD=1` to use modules built some other way.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guests = weft_guest_build::Guests::at(root);
    println!(
        "cargo:rustc-env=WEFT_MODULES_TARGET={}",
        guests.target_dir.display()
    );
    println!("cargo:rerun-if-env-changed=WEFT_SKIP_MODULE_BUILD");
    guests.rerun_if_changed(&weft_guest_build::SHARED_INPUTS);
    guests.rerun_if_changed(&[
        "predictor",
        "echo",
        "flaky",
        "ocr/src",
        "ocr-serve/src",
        "hostile",
        "classic",
        "tinyrun",
        "nnbench",
    ]);
    if std::env::var_os("WEFT_SKIP_MODULE_BUILD").is_some() {
        return;
    }
    for (target, packages) in [
        ("wasm32-wasip1", &[][..]),
        (
            "wasm32-wasip2",
            &["ocr", "tinyrun", "predictor", "echo", "ocr-serve"][..],
        ),
    ] {
        if let Err(e) = guests.build(target, packages) {
            panic!("{e}");
        }
    }
}
