//! The shim on a real containerd (private root, state, socket and network
//! under a temporary directory; needs root): `ctr run` with the shim as the
//! runtime, and the CRI plugin driven as the kubelet drives it.

mod cri;
mod ctr;

use std::path::{Path, PathBuf};
use std::process::Command;
use weft_tests::containerd::{Containerd, Options, Release, text};
use weft_tests::{Guest, data, module, skip_or_fail};

fn shim() -> &'static str {
    env!("CARGO_BIN_EXE_containerd-shim-weft-v1")
}

fn shim_dir() -> PathBuf {
    Path::new(shim()).parent().unwrap().to_path_buf()
}

/// The `weft` binary of the same build (cargo builds every workspace binary
/// before `cargo test --workspace` runs tests).
fn weft() -> Option<PathBuf> {
    let p = Path::new(shim()).with_file_name("weft");
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail("the weft binary is not built next to the shim: cargo build -p weft-cli");
        None
    }
}

fn containerd(release: Release, cri: bool) -> Option<Containerd> {
    Containerd::start(&Options {
        release,
        cri,
        shim_dir: shim_dir(),
    })
}

/// `weft ARGS --store STORE`, which must succeed.
fn weft_ok(weft: &Path, store: &Path, args: &[&str]) -> String {
    let o = Command::new(weft)
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    assert!(o.status.success(), "weft {args:?}: {}", text(&o));
    text(&o)
}

/// A package directory for `weft build`: `module` (a guest from
/// `modules/`) with tiny.onnx preloaded as `model_name`.
fn package(
    dir: &Path,
    name: &str,
    version: &str,
    (module_name, model_name): (&str, &str),
    args: &[&str],
) -> PathBuf {
    let pkg = dir.join(format!("pkg-{}", name.replace(['/', ':', '.'], "-")));
    std::fs::create_dir_all(pkg.join("models")).unwrap();
    std::fs::copy(module(Guest::P1, module_name), pkg.join("module.wasm")).unwrap();
    std::fs::copy(data("tiny.onnx"), pkg.join("models/tiny.onnx")).unwrap();
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        pkg.join("weft.toml"),
        format!(
            "[module]\nname = \"{name}\"\nversion = \"{version}\"\nfile = \"module.wasm\"\nargs = [{}]\n\n\
             [[model]]\nname = \"{model_name}\"\nfile = \"models/tiny.onnx\"\n",
            args.join(", ")
        ),
    )
    .unwrap();
    pkg
}

/// Build the classic image of a model module and return an OCI layout
/// tarball holding only it (`NAME:1-classic`).
fn classic_image(
    weft: &Path,
    dir: &Path,
    name: &str,
    modules: (&str, &str),
    args: &[&str],
) -> PathBuf {
    let pkg = package(dir, name, "1", modules, args);
    weft_tests::containerd::classic_image_tar(weft, &pkg, &format!("{name}:1")).unwrap()
}

/// Build the classic image of `modules` into `c` under a fresh temporary
/// directory: the image's name (`NAME:1-classic`).
fn import_classic(
    c: &Containerd,
    weft: &Path,
    name: &str,
    modules: (&str, &str),
    args: &[&str],
) -> String {
    let dir = c.dir().join("packages");
    std::fs::create_dir_all(&dir).unwrap();
    c.import(
        &classic_image(weft, &dir, name, modules, args),
        "wasip1/wasm",
    );
    format!("{name}:1-classic")
}

const TINY_BODY: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
