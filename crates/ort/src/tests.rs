//! Tests against a real onnxruntime: they run where one is found (the
//! search of [`library`], then the test venv's wheel that `scripts/test.sh`
//! installs) and skip otherwise, failing instead when `CI` is set.

use super::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use weft_abi::{DataType, Dim};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/ort is two levels down")
        .to_path_buf()
}

/// `weft_testkit::skip_or_fail`'s rule, without its dependencies (it
/// brings real servers) for a crate this small: skip locally, fail in CI.
fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("required test prerequisite missing in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn onnxruntime() -> Option<&'static Library> {
    static FOUND: OnceLock<Result<&'static Library, OrtError>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let path = library().or_else(|e| {
            wheel_library(&repo_root().join("target/py/bin/python3")).map_err(|_| e)
        })?;
        init_from(Some(&path))
    });
    match found {
        Ok(library) => Some(library),
        Err(e) => {
            skip_or_fail(&format!("onnxruntime tests: {e}"));
            None
        }
    }
}

fn model(file: &str) -> Option<OrtModel> {
    onnxruntime()?;
    let bytes = std::fs::read(repo_root().join("tests/data").join(file)).unwrap();
    Some(OrtModel::load(&bytes, 1).unwrap())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    assert_eq!(t.ty, ElementType::F32);
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn f32_input<'a>(shape: &'a [usize], data: &'a [u8]) -> TensorRef<'a> {
    TensorRef {
        ty: ElementType::F32,
        shape,
        data,
    }
}

#[test]
fn loads_a_library_and_names_its_version() {
    let Some(library) = onnxruntime() else { return };
    assert!(library.path().exists(), "{library:?}");
    assert!(
        library.version().starts_with("1."),
        "version {:?}",
        library.version()
    );
    assert!(loaded().is_some());
}

#[test]
fn tiny_runs_two_x_plus_one() {
    let Some(m) = model("tiny.onnx") else { return };
    let sig = m.signature();
    assert_eq!(sig.inputs[0].name, "x");
    assert_eq!(sig.inputs[0].datatype, Some(DataType::Fp32));
    assert_eq!(
        sig.inputs[0].shape,
        Some(vec![Dim::Fixed(1), Dim::Fixed(4)])
    );
    assert_eq!(m.outputs()[0].wire_type(), Some(ElementType::F32));
    let x = f32_bytes(&[0.0, 1.0, -2.0, 0.5]);
    let out = m.run(&[f32_input(&[1, 4], &x)]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out.name(0), Some("y"));
    let y = out.tensor(0).unwrap();
    assert_eq!(y.shape, [1, 4]);
    assert_eq!(f32s(&y), [1.0, 3.0, -3.0, 2.0]);
}

#[test]
fn unaligned_input_bytes_are_copied_not_refused() {
    let Some(m) = model("tiny.onnx") else { return };
    let mut buf = vec![0u8];
    buf.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    // One byte in: never aligned for f32, whatever the allocator gave.
    let out = m.run(&[f32_input(&[1, 4], &buf[1..])]).unwrap();
    assert_eq!(f32s(&out.tensor(0).unwrap()), [3.0, 5.0, 7.0, 9.0]);
}

#[test]
fn two_inputs_give_named_outputs() {
    let Some(m) = model("two_inputs.onnx") else {
        return;
    };
    let names: Vec<&str> = m.inputs().iter().map(Port::name).collect();
    assert_eq!(names, ["a", "b"]);
    let (a, b) = (f32_bytes(&[1.0, 2.0, 3.0]), f32_bytes(&[4.0, 5.0, 6.0]));
    let out = m.run(&[f32_input(&[3], &a), f32_input(&[3], &b)]).unwrap();
    assert_eq!(out.name(0), Some("sum"));
    assert_eq!(out.name(1), Some("prod"));
    assert_eq!(f32s(&out.tensor(0).unwrap()), [5.0, 7.0, 9.0]);
    assert_eq!(f32s(&out.tensor(1).unwrap()), [4.0, 10.0, 18.0]);
    assert!(matches!(
        out.tensor(2),
        Err(OrtError::OutputIndex { index: 2, count: 2 })
    ));
}

#[test]
fn every_wasi_nn_type_crosses() {
    if onnxruntime().is_none() {
        return;
    }
    // double_<t>.onnx: y = x + x over a [2, 3] tensor of that type. Not
    // double_u8.onnx: its opset's Add has no uint8 kernel in onnxruntime
    // ("Type 'tensor(uint8)' ... is invalid"), which tract lets pass.
    let cases: [(&str, ElementType, Vec<u8>, Vec<u8>); 5] = [
        (
            "f16",
            ElementType::F16,
            [1.0f32, -2.0, 0.5, 3.0, 0.0, 8.0]
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            [2.0f32, -4.0, 1.0, 6.0, 0.0, 16.0]
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        (
            "f32",
            ElementType::F32,
            f32_bytes(&[1.0, -2.0, 0.5, 3.0, 0.0, 8.0]),
            f32_bytes(&[2.0, -4.0, 1.0, 6.0, 0.0, 16.0]),
        ),
        (
            "f64",
            ElementType::F64,
            [1.0f64, -2.0, 0.5, 3.0, 0.0, 8.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [2.0f64, -4.0, 1.0, 6.0, 0.0, 16.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "i32",
            ElementType::I32,
            [1i32, -2, 3, -4, 5, 1000]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [2i32, -4, 6, -8, 10, 2000]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "i64",
            ElementType::I64,
            [1i64, -2, 3, -4, 5, 1 << 40]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [2i64, -4, 6, -8, 10, 1 << 41]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    ];
    for (name, ty, x, want) in cases {
        let m = model(&format!("double_{name}.onnx")).unwrap();
        assert_eq!(m.inputs()[0].wire_type(), Some(ty), "{name}");
        let out = m
            .run(&[TensorRef {
                ty,
                shape: &[2, 3],
                data: &x,
            }])
            .unwrap();
        let y = out.tensor(0).unwrap();
        assert_eq!((y.ty, y.shape.as_slice()), (ty, &[2, 3][..]), "{name}");
        assert_eq!(y.data, want, "{name}");
    }
}

#[test]
fn symbolic_dimensions_keep_their_names() {
    let Some(m) = model("mlp_dynamic_batch.onnx") else {
        return;
    };
    let spec = m.inputs()[0].spec();
    assert_eq!(
        spec.shape,
        Some(vec![Dim::Named("N".into()), Dim::Fixed(4)])
    );
    for n in [1usize, 5] {
        let x = f32_bytes(&vec![0.5; n * 4]);
        let y = m.run(&[f32_input(&[n, 4], &x)]).unwrap().tensor(0).unwrap();
        assert_eq!(y.shape, [n, 3]);
    }
}

#[test]
fn a_truncated_model_is_an_error_naming_the_problem() {
    if onnxruntime().is_none() {
        return;
    }
    let bytes = std::fs::read(repo_root().join("tests/data/two_inputs.onnx")).unwrap();
    let e = OrtModel::load(&bytes[..bytes.len() / 2], 1).unwrap_err();
    assert!(matches!(e, OrtError::Model { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("onnxruntime cannot load the model: "),
        "{text}"
    );
    assert!(text.to_lowercase().contains("protobuf"), "{text}");
    let e = OrtModel::load(b"not a model", 1).unwrap_err();
    assert!(matches!(e, OrtError::Model { .. }), "{e:?}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let Some(m) = model("tiny.onnx") else { return };
    let x = f32_bytes(&[0.0; 4]);
    let e = m.run(&[f32_input(&[4, 1], &x)]).unwrap_err();
    assert!(
        matches!(&e, OrtError::InputShape { name, .. } if name == "x"),
        "{e:?}"
    );
    assert!(e.to_string().contains("expects shape [1,4]"), "{e}");
    assert!(e.is_bad_input());
    let e = m.run(&[f32_input(&[1, 4], &x[..12])]).unwrap_err();
    assert!(
        matches!(
            e,
            OrtError::DataLength {
                expected: 16,
                got: 12,
                ..
            }
        ),
        "{e:?}"
    );
    let e = m
        .run(&[TensorRef {
            ty: ElementType::I32,
            shape: &[1, 4],
            data: &x,
        }])
        .unwrap_err();
    assert!(e.to_string().contains("expects f32, got i32"), "{e}");
    let e = m.run(&[]).unwrap_err();
    assert!(
        matches!(e, OrtError::InputCount { count: 1, got: 0 }),
        "{e:?}"
    );

    let Some(mlp) = model("mlp_dynamic_batch.onnx") else {
        return;
    };
    // A batch dimension no memory holds: refused before anything is
    // allocated.
    let e = mlp.run(&[f32_input(&[usize::MAX, 4], &x)]).unwrap_err();
    assert!(matches!(e, OrtError::TooLarge { .. }), "{e:?}");
    // An empty batch is valid: an empty result, not a failure.
    let y = mlp
        .run(&[f32_input(&[0, 4], &[])])
        .unwrap()
        .tensor(0)
        .unwrap();
    assert_eq!(y.shape, [0, 3]);
}

#[test]
fn concurrent_runs_of_one_model_all_answer() {
    let Some(m) = model("tiny.onnx") else { return };
    std::thread::scope(|s| {
        for t in 0..4 {
            let m = &m;
            s.spawn(move || {
                for i in 0..20 {
                    let v = (t * 100 + i) as f32;
                    let x = f32_bytes(&[v; 4]);
                    let y = m.run(&[f32_input(&[1, 4], &x)]).unwrap().tensor(0).unwrap();
                    assert_eq!(f32s(&y), [2.0 * v + 1.0; 4]);
                }
            });
        }
    });
}

#[test]
fn versions_come_from_the_build_or_the_file_name() {
    let build = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
    assert_eq!(version(build, Path::new("/x/libonnxruntime.so")), "1.32.0");
    assert_eq!(
        version(
            "ORT Build Info: git-branch=main",
            Path::new("/x/libonnxruntime.so.1.20.1")
        ),
        "1.20.1"
    );
    assert_eq!(
        version("custom", Path::new("/x/libonnxruntime.so")),
        "custom"
    );
}
