//! TensorFlow Lite and TensorFlow models, end to end: `weft build` records
//! their interface, `weft serve` serves them (packaged, or given directly),
//! a guest runs one through `--nn-preload`, and every answer matches what
//! the framework itself computes (LiteRT's interpreter, TensorFlow), read
//! through tritonclient. The optional onnxruntime engine answers a guest
//! as tract does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use weft_tests::{Guest, module};

fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn weft(args: &[&str], cwd: &Path) -> Output {
    Command::new(weft_bin())
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("weft runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// MediaPipe's TFLite models (`scripts/fetch-models.sh`), or `None`.
fn tflite_dir() -> Option<PathBuf> {
    let dir = weft_tests::repo_root().join("models/tflite");
    if dir.join("face_detection_short_range.tflite").exists() {
        Some(dir)
    } else {
        weft_tests::skip_or_fail("MediaPipe's TFLite models missing; run scripts/fetch-models.sh");
        None
    }
}

/// Run `tests/clients/reference_check.py` and require its "checks passed".
fn reference_check(py: &Path, args: &[&str], server: &weft_tests::ServeProcess) {
    let out = Command::new(py)
        .arg(weft_tests::repo_root().join("tests/clients/reference_check.py"))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("checks passed"),
        "{args:?}:\n{text}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// Four published MediaPipe models (float16 weights behind DEQUANTIZE,
/// PRELU, resize, fully connected, mean) are packaged with `[[model]]
/// encoding = "tensorflowlite"` and the bundled predictor; the artifact
/// records each model's own interface; served by reference, every output
/// matches LiteRT's on the same input.
#[test]
fn mediapipe_tflite_models_build_serve_and_match_litert() {
    let Some(dir) = tflite_dir() else { return };
    let Some(py) = weft_tests::python_with(&["tritonclient.http", "numpy", "ai_edge_litert"])
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s").display().to_string();
    let models = [
        (
            "face",
            "face_detection_short_range",
            "input",
            [1, 128, 128, 3],
        ),
        ("palm", "palm_detection_lite", "input_1", [1, 192, 192, 3]),
        ("hand", "hand_landmark_lite", "input_1", [1, 224, 224, 3]),
        ("iris", "iris_landmark", "input_1", [1, 64, 64, 3]),
    ];
    let mut serve_args = Vec::new();
    for (name, file, input, shape) in models {
        let pkg = tmp.path().join(name);
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::copy(
            dir.join(format!("{file}.tflite")),
            pkg.join(format!("{file}.tflite")),
        )
        .unwrap();
        std::fs::write(
            pkg.join("weft.toml"),
            format!(
                "[module]\nname = \"mp-{name}\"\nversion = \"1\"\n\n[[model]]\nname = \"model\"\n\
                 file = \"{file}.tflite\"\nencoding = \"tensorflowlite\"\n"
            ),
        )
        .unwrap();
        let o = weft(
            &["build", pkg.to_str().unwrap(), "--store", &store],
            tmp.path(),
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let o = weft(
            &[
                "inspect",
                "--store",
                &store,
                "--json",
                &format!("mp-{name}:1"),
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let model = &json["config"]["weft"]["models"][0];
        assert_eq!(model["encoding"], "tensorflowlite", "{name}");
        assert_eq!(model["inputs"][0]["name"], input, "{name}");
        assert_eq!(
            model["inputs"][0]["shape"],
            serde_json::json!(shape),
            "{name}"
        );
        serve_args.push(format!("{name}=mp-{name}:1"));
    }
    let mut args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    args.extend(["--store", &store, "--no-grpc"]);
    let server = weft_tests::ServeProcess::start(weft_bin(), &args);
    for (name, file, _, _) in models {
        let path = dir.join(format!("{file}.tflite"));
        reference_check(
            &py,
            &["tflite", &server.rest, name, path.to_str().unwrap()],
            &server,
        );
    }
}

/// A frozen TensorFlow graph written by TensorFlow itself (a small Keras
/// CNN with batch norm, depthwise conv, pooling, dense, softmax) served
/// directly as a `.pb` file matches TensorFlow's own run; a guest runs a
/// TFLite model through `--nn-preload NAME:tensorflowlite:cpu:PATH`.
#[test]
fn a_tensorflow_frozen_graph_serves_like_tensorflow_and_guests_preload_tflite() {
    let Some(py) = weft_tests::python_with(&["tritonclient.http", "numpy", "tensorflow"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .arg(weft_tests::repo_root().join("tests/clients/reference_check.py"))
        .args(["make-tf", tmp.path().to_str().unwrap()])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pb = tmp.path().join("cnn.pb");
    let model = format!("cnn={}", pb.display());
    let server = weft_tests::ServeProcess::start(weft_bin(), &[model.as_str(), "--no-grpc"]);
    reference_check(
        &py,
        &["tf", &server.rest, "cnn", pb.to_str().unwrap()],
        &server,
    );
    drop(server);

    let Some(dir) = tflite_dir() else { return };
    let iris = dir.join("iris_landmark.tflite");
    let preload = format!("iris:tensorflowlite:cpu:{}", iris.display());
    let tinyrun = module(Guest::P1, "tinyrun").display().to_string();
    let mut args = vec![
        "run",
        "--nn-preload",
        &preload,
        &tinyrun,
        "--",
        "iris",
        "--dims",
        "1,64,64,3",
        "--outputs",
        "2",
    ];
    let values = vec!["0.5"; 64 * 64 * 3];
    args.extend(values.iter().copied());
    let o = weft(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<Vec<f32>> = text
        .lines()
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    // output_eyes_contours_and_brows [1,213], output_iris [1,15]
    assert_eq!(
        lines.iter().map(Vec::len).collect::<Vec<_>>(),
        [213, 15],
        "{text}"
    );
    assert!(lines.iter().flatten().all(|v| v.is_finite()));
    // A TFLite file preloaded as ONNX is named as what it is not.
    let wrong = format!("iris:onnx:cpu:{}", iris.display());
    let o = weft(
        &["run", "--nn-preload", &wrong, &tinyrun, "--", "iris"],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("iris"), "{}", stderr(&o));
}

/// `--cpu-engine onnxruntime` runs a guest's ONNX graph on onnxruntime,
/// found in the test venv's `onnxruntime` wheel, with the same answer as
/// tract; a library that is not there is an error naming where it looked,
/// with the way back to tract as the hint.
#[test]
fn the_onnxruntime_engine_gives_the_guest_the_same_answer() {
    let Some(py) = weft_tests::python_with(&["onnxruntime"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tiny = weft_tests::data("tiny.onnx");
    let preload = format!("tiny:onnx:cpu:{}", tiny.display());
    let tinyrun = module(Guest::P2, "tinyrun").display().to_string();
    let run = |engine: &str, env: &[(&str, &str)]| {
        Command::new(weft_bin())
            .args(["run", "--cpu-engine", engine, "--nn-preload", &preload])
            .args([tinyrun.as_str(), "--", "tiny", "1", "2", "3", "4"])
            .env("WEFT_PYTHON", &py)
            .envs(env.iter().copied())
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let tract = run("tract", &[]);
    let ort = run("onnxruntime", &[]);
    assert!(tract.status.success(), "{}", stderr(&tract));
    assert!(ort.status.success(), "{}", stderr(&ort));
    assert_eq!(String::from_utf8_lossy(&tract.stdout).trim(), "3 5 7 9");
    assert_eq!(tract.stdout, ort.stdout);
    let missing = run(
        "onnxruntime",
        &[("WEFT_ONNXRUNTIME", "/nonexistent/libonnxruntime.so")],
    );
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("--cpu-engine tract"),
        "{err}"
    );
}
