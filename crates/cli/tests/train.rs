//! `weft train` with the bundled trainer, end to end: it learns, a resumed
//! run (after a clean stop or `kill -9`) ends with the same bytes, the
//! model it exports serves, and bad input names what is wrong.

use std::path::Path;
use std::process::{Command, Output};

fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn train(args: &[&str], cwd: &Path) -> Output {
    Command::new(weft_bin())
        .arg("train")
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("weft runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Three noisy clusters in four dimensions, one per class, as CSV with a
/// header (deterministic).
fn clusters(dir: &Path, rows: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut unit = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let centers = [
        [0.0, 0.0, 2.0, 1.0],
        [2.0, 2.0, 0.0, 0.0],
        [-2.0, 1.0, -1.0, 2.0],
    ];
    for (name, n) in [("train.csv", rows), ("test.csv", rows / 4)] {
        let mut text = String::from("a,b,c,d,label\n");
        for _ in 0..n {
            let k = (unit() * 3.0) as usize % 3;
            let row: Vec<String> = centers[k]
                .iter()
                .map(|c| format!("{:.4}", c + (unit() - 0.5) * 2.4))
                .collect();
            text += &format!("{},{k}\n", row.join(","));
        }
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The tensor bytes of a run's checkpoint: parameters and optimizer state
/// (safetensors: an 8-byte header length, the JSON header, then the data;
/// the header's metadata is a map whose key order is not fixed).
fn checkpoint(out: &Path) -> Vec<u8> {
    let bytes = std::fs::read(out.join("checkpoints/checkpoint.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..].to_vec()
}

/// Ask a served model about one row; its output values.
fn infer(server: &weft_tests::ServeProcess, model: &str, row: &[f64]) -> Vec<f64> {
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, row.len()],
        "datatype": "FP32", "data": row}]});
    let (status, answer) = weft_tests::containerd::http(
        server.rest.trim_start_matches("http://"),
        "POST",
        &format!("/v2/models/{model}/infer"),
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn training_learns_resumes_exactly_and_its_model_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clusters(&dir.join("data"), 600, 1);

    let o = train(&["--data", "data", "--epochs", "4", "--out", "a"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = records(&dir.join("a"));
    let acc = recs
        .iter()
        .rev()
        .find_map(|r| r["accuracy"].as_f64())
        .expect("an accuracy record");
    assert!(acc >= 0.9, "test accuracy {acc}");
    let losses: Vec<f64> = recs.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 4 * (600 / 32));
    assert!(recs.last().unwrap()["done"] == true, "{:?}", recs.last());

    // Two epochs, then two more with --resume: the same bytes.
    let o = train(&["--data", "data", "--epochs", "2", "--out", "b"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(
        &["--data", "data", "--epochs", "4", "--out", "b", "--resume"],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        checkpoint(&dir.join("a")) == checkpoint(&dir.join("b")),
        "a resumed run ended with other parameters"
    );
    assert_eq!(
        std::fs::read(dir.join("a/model.onnx")).unwrap(),
        std::fs::read(dir.join("b/model.onnx")).unwrap()
    );

    // The exported model serves as it is, and classifies.
    let model = format!("m={}", dir.join("a/model.onnx").display());
    let server = weft_tests::ServeProcess::start(weft_bin(), &[model.as_str(), "--no-grpc"]);
    let p = infer(&server, "m", &[2.0, 2.0, 0.0, 0.0]);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[1] > 0.9, "the middle cluster's center is class 1: {p:?}");
}

/// Residency: by default the parameters and optimizer state stay on the
/// host between steps (each `NAME.next` output bound to input `NAME`);
/// `--copy-params` copies them through guest memory every step. Both give
/// the same losses and the same bytes, for a CNN with dropout and a resume
/// in between too.
#[test]
fn keeping_parameters_on_the_host_changes_no_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clusters(&dir.join("data"), 200, 4);
    let cnn = [
        "--input-shape",
        "1,2,2",
        "--layers",
        "conv:3:2:1:1,relu,maxpool:2,flatten,dropout:0.2,dense:8,relu",
        "--checkpoint-every",
        "5",
    ];
    let run = |out: &str, epochs: &str, extra: &[&str]| {
        let mut args = vec!["--data", "data", "--epochs", epochs, "--out", out];
        args.extend(extra);
        args.push("--");
        args.extend(cnn);
        let o = train(&args, dir);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run("held", "3", &[]);
    // `--copy-params` goes after `--`: it is the trainer's.
    let o = train(
        &[
            &["--data", "data", "--epochs", "3", "--out", "copied2", "--"][..],
            &cnn[..],
            &["--copy-params"],
        ]
        .concat(),
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    run("resumed", "1", &[]);
    run("resumed", "3", &["--resume"]);
    let losses = |out: &str| -> Vec<f64> {
        records(&dir.join(out))
            .iter()
            .filter_map(|r| r["loss"].as_f64())
            .collect()
    };
    assert!(!losses("held").is_empty());
    assert_eq!(losses("held"), losses("copied2"));
    for other in ["copied2", "resumed"] {
        assert!(
            checkpoint(&dir.join("held")) == checkpoint(&dir.join(other)),
            "{other}: other parameters"
        );
        assert_eq!(
            std::fs::read(dir.join("held/model.onnx")).unwrap(),
            std::fs::read(dir.join(other).join("model.onnx")).unwrap(),
            "{other}"
        );
    }
    // Every step record says how long the step took.
    assert!(
        records(&dir.join("held"))
            .iter()
            .filter(|r| r["loss"].is_f64())
            .all(|r| r["step_us"].is_u64())
    );
}

fn build(args: &[&str], cwd: &Path) -> Output {
    Command::new(weft_bin())
        .arg("build")
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("weft runs")
}

/// `weft build` of a package whose weft.toml has a `[train]` section trains
/// the model, writes it to its `[[model]]` file and packages it with the
/// bundled predictor; a rebuild with nothing changed trains no step, and a
/// change to the data trains afresh. The module serves by reference.
#[test]
fn a_train_section_trains_while_building() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pkg = dir.join("pkg");
    clusters(&pkg.join("data"), 300, 6);
    std::fs::write(
        pkg.join("weft.toml"),
        "[module]\nname = \"clusters\"\nversion = \"2\"\n\n[[model]]\nname = \"model\"\nfile = \"clusters.onnx\"\n\n[train]\ndata = \"data\"\nepochs = 3\nargs = [\"--hidden\", \"16\", \"--lr\", \"0.02\"]\n",
    )
    .unwrap();
    let o = build(&["pkg", "--store", "s"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(line.starts_with("clusters:2 sha256:"), "{line}");
    let trained = std::fs::read(pkg.join("clusters.onnx")).unwrap();
    let runs: Vec<_> = std::fs::read_dir(pkg.join(".weft-train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let steps = |run: &Path| records(run).iter().filter(|r| r["loss"].is_f64()).count();
    assert_eq!(steps(&runs[0]), 3 * (300 / 32));

    // Nothing changed: no step trains, the same model is packaged.
    let o = build(&["pkg", "--store", "s"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert_eq!(steps(&runs[0]), 3 * (300 / 32));
    assert_eq!(std::fs::read(pkg.join("clusters.onnx")).unwrap(), trained);

    // The packaged module serves the trained model.
    let fresh = dir.join("s").display().to_string();
    let server = weft_tests::ServeProcess::start(
        weft_bin(),
        &["c=clusters:2", "--store", &fresh, "--no-grpc"],
    );
    let p = infer(&server, "c", &[2.0, 2.0, 0.0, 0.0]);
    assert!(p[1] > 0.9, "the middle cluster's center is class 1: {p:?}");
    drop(server);

    // New data: a new run, trained from the start.
    clusters(&pkg.join("data"), 300, 7);
    let o = build(&["pkg", "--store", "s"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(pkg.join(".weft-train")).unwrap().count(),
        2
    );
    assert_ne!(std::fs::read(pkg.join("clusters.onnx")).unwrap(), trained);

    // A [train] section that names no [[model]] is refused before training.
    std::fs::write(
        pkg.join("weft.toml"),
        "[module]\nname = \"clusters\"\n\n[[model]]\nname = \"model\"\nfile = \"clusters.onnx\"\n\n[train]\nmodel = \"other\"\ndata = \"data\"\n",
    )
    .unwrap();
    let o = build(&["pkg", "--store", "s"], dir);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("[train] model `other` is not a [[model]] entry (there are: `model`)"),
        "{}",
        stderr(&o)
    );
    // Without a module file the bundled predictor serves `model`.
    std::fs::write(
        pkg.join("weft.toml"),
        "[module]\nname = \"clusters\"\n\n[[model]]\nname = \"clusters\"\nfile = \"clusters.onnx\"\n",
    )
    .unwrap();
    let o = build(&["pkg", "--store", "s"], dir);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("serves the [[model]] named `model`"),
        "{}",
        stderr(&o)
    );
}

/// A greyscale PNG, written by hand (stored deflate blocks, CRC-32 and
/// Adler-32), so the test needs no image library.
fn png_grey(w: u32, h: u32, pixels: &[u8]) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc(&body).to_be_bytes());
    };
    let mut raw = Vec::new();
    for row in pixels.chunks(w as usize) {
        raw.push(0); // no filter
        raw.extend(row);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let mut z = vec![0x78, 0x01, 1];
    z.extend((raw.len() as u16).to_le_bytes());
    z.extend((!(raw.len() as u16)).to_le_bytes());
    z.extend(&raw);
    z.extend(((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The digits CSV as rows of 64 pixels in [0, 1] and labels.
fn digits(name: &str, limit: usize) -> Vec<(Vec<f32>, u8)> {
    std::fs::read_to_string(weft_tests::data("digits").join(name))
        .unwrap()
        .lines()
        .skip(1)
        .take(limit)
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|c| c.parse().unwrap()).collect();
            (v[..64].to_vec(), v[64] as u8)
        })
        .collect()
}

fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

/// Image folders (one per class, PNG) and NPY files train the digits CNN
/// with no `--input-shape` (the files tell it), augmentation included; a
/// corrupt image, an image of another size and labels that do not fit
/// are errors naming the file.
#[test]
fn image_folders_and_npy_files_train_and_bad_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train_rows = digits("train.csv", 1347);
    let test_rows = digits("test.csv", 450);
    for (split, rows) in [("train", &train_rows), ("test", &test_rows)] {
        for (i, (px, label)) in rows.iter().enumerate() {
            let folder = dir.join(format!("images/{split}/digit{label}"));
            std::fs::create_dir_all(&folder).unwrap();
            let bytes: Vec<u8> = px.iter().map(|v| (v * 255.0).round() as u8).collect();
            std::fs::write(folder.join(format!("{i}.png")), png_grey(8, 8, &bytes)).unwrap();
        }
    }
    let cnn = [
        "--layers",
        "conv:8:3,relu,maxpool:2,flatten,dense:64,relu",
        "--lr",
        "0.005",
    ];
    let accuracy = |out: &str| {
        records(&dir.join(out))
            .iter()
            .rev()
            .find_map(|r| r["accuracy"].as_f64())
            .unwrap()
    };
    let mut args = vec!["--data", "images", "--epochs", "8", "--out", "img", "--"];
    args.extend(cnn);
    args.extend(["--augment", "shift:1"]);
    let o = train(&args, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = accuracy("img");
    assert!(acc >= 0.93, "image folders: {acc}");

    // The same digits as NPY: float32 images [N, 1, 8, 8], int64 labels.
    std::fs::create_dir_all(dir.join("npy")).unwrap();
    for (split, rows) in [("train", &train_rows), ("test", &test_rows)] {
        let x: Vec<u8> = rows
            .iter()
            .flat_map(|(p, _)| p.iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        let y: Vec<u8> = rows
            .iter()
            .flat_map(|(_, l)| i64::from(*l).to_le_bytes())
            .collect();
        std::fs::write(
            dir.join(format!("npy/{split}_x.npy")),
            npy("<f4", &[rows.len(), 1, 8, 8], &x),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("npy/{split}_y.npy")),
            npy("<i8", &[rows.len()], &y),
        )
        .unwrap();
    }
    let mut args = vec!["--data", "npy", "--epochs", "8", "--out", "n", "--"];
    args.extend(cnn);
    let o = train(&args, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = accuracy("n");
    assert!(acc >= 0.95, "NPY: {acc}");

    let fails = |data: &str| {
        let o = train(&["--data", data, "--epochs", "1", "--out", "bad"], dir);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        stderr(&o)
    };
    std::fs::write(
        dir.join("images/train/digit3/5.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let e = fails("images");
    assert!(
        e.contains("/data/train/digit3/5.png: not a readable image"),
        "{e}"
    );
    std::fs::write(
        dir.join("images/train/digit3/5.png"),
        png_grey(4, 8, &[0; 32]),
    )
    .unwrap();
    let e = fails("images");
    assert!(
        e.contains("/data/train/digit3/5.png: 4x8 pixels, the images are 8x8"),
        "{e}"
    );
    std::fs::write(dir.join("npy/train_y.npy"), npy("<i8", &[3], &[0; 24])).unwrap();
    let e = fails("npy");
    assert!(
        e.contains("/data/train_y.npy: shape [3], but /data/train_x.npy has 1347 rows"),
        "{e}"
    );
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let e = fails("empty");
    assert!(e.contains("no training data"), "{e}");
}

/// One tensor of a run's checkpoint, by name.
fn checkpoint_tensor(out: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(out.join("checkpoints/checkpoint.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let range = header[name]["data_offsets"].as_array().unwrap();
    let (a, b) = (
        range[0].as_u64().unwrap() as usize,
        range[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + a..8 + n + b]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Batch norm: trains with the batch's statistics and keeps running ones
/// for evaluation and export. A batch norm on the raw pixels ends with
/// running means and variances that are the training data's own, and a
/// CNN with batch norm after its convolution and dense layer learns the
/// digits, its held-out accuracy (running statistics) high.
#[test]
fn batch_norm_trains_on_batches_and_serves_with_running_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = weft_tests::data("digits");
    let data = data.to_str().unwrap();
    let o = train(
        &[
            "--data",
            data,
            "--epochs",
            "6",
            "--out",
            "bn",
            "--",
            "--layers",
            "batchnorm,dense:64,relu",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = digits("train.csv", 2000);
    let count = rows.len() as f64;
    let mean0 = checkpoint_tensor(&dir.join("bn"), "mean0");
    let var0 = checkpoint_tensor(&dir.join("bn"), "var0");
    assert_eq!(mean0.len(), 64);
    for f in 0..64 {
        let m = rows.iter().map(|(p, _)| f64::from(p[f])).sum::<f64>() / count;
        let v = rows
            .iter()
            .map(|(p, _)| (f64::from(p[f]) - m).powi(2))
            .sum::<f64>()
            / (count - 1.0);
        assert!(
            (f64::from(mean0[f]) - m).abs() < 0.05,
            "pixel {f}: running mean {} vs {m}",
            mean0[f]
        );
        assert!(
            (f64::from(var0[f]) - v).abs() < 0.25 * v + 0.01,
            "pixel {f}: running variance {} vs {v}",
            var0[f]
        );
    }
    let o = train(
        &[
            "--data",
            data,
            "--epochs",
            "10",
            "--out",
            "cnn",
            "--",
            "--input-shape",
            "1,8,8",
            "--layers",
            "conv:8:3,batchnorm,relu,maxpool:2,flatten,dense:64,batchnorm,relu",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = records(&dir.join("cnn"))
        .iter()
        .rev()
        .find_map(|r| r["accuracy"].as_f64())
        .unwrap();
    assert!(
        acc >= 0.95,
        "held-out accuracy with running statistics {acc}"
    );
    // The exported model (running statistics as constants) serves.
    let model = format!("m={}", dir.join("cnn/model.onnx").display());
    let server = weft_tests::ServeProcess::start(weft_bin(), &[model.as_str(), "--no-grpc"]);
    let (pixels, label) = &digits("test.csv", 1)[0];
    let row: Vec<f64> = pixels.iter().map(|&v| f64::from(v)).collect();
    let p = infer(&server, "m", &row);
    let best = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    assert_eq!(best, usize::from(*label), "{p:?}");
}

/// The run's TensorBoard event files, read by TensorBoard's own reader,
/// hold every loss and accuracy of `metrics.jsonl` (a resumed run adds a
/// file; the reader joins them), and `plot.png` is a PNG.
#[test]
fn tensorboard_reads_the_run_and_a_plot_is_drawn() {
    let Some(py) = weft_tests::python_with(&["tensorboard"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clusters(&dir.join("data"), 300, 6);
    let o = train(&["--data", "data", "--epochs", "2", "--out", "r"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(
        &["--data", "data", "--epochs", "3", "--out", "r", "--resume"],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = Command::new(&py)
        .arg(weft_tests::repo_root().join("tests/clients/read_tensorboard.py"))
        .arg(dir.join("r"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = |tag: &str| -> Vec<(u64, f32)> {
        seen[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {seen}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect()
    };
    let recs = records(&dir.join("r"));
    let want = |key: &str| -> Vec<(u64, f32)> {
        recs.iter()
            .filter_map(|r| Some((r["step"].as_u64()?, r[key].as_f64()? as f32)))
            .collect()
    };
    assert_eq!(series("train/loss"), want("loss"));
    assert_eq!(want("loss").len(), 3 * (300 / 32));
    assert_eq!(series("test/accuracy"), want("accuracy"));
    assert_eq!(
        series("train/examples_per_second").len(),
        want("loss").len()
    );
    let png = std::fs::read(dir.join("r/plot.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// `kill -9` at any moment: the checkpoint on disk is whole, and resuming
/// from it ends where an uninterrupted run ends.
#[test]
fn a_run_killed_anywhere_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clusters(&dir.join("data"), 2000, 3);
    let args = ["--data", "data", "--epochs", "12"];
    let extra = ["--", "--batch", "16", "--checkpoint-every", "7"];
    let full: Vec<&str> = args
        .iter()
        .chain(&["--out", "straight"])
        .chain(&extra)
        .copied()
        .collect();
    let o = train(&full, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let steps = records(&dir.join("straight"))
        .iter()
        .filter(|r| r.get("step").is_some() && r.get("done").is_none())
        .count();
    assert!(steps > 100, "a run of {steps} steps is too short to cut");

    for (i, fraction) in [0.3, 0.7].into_iter().enumerate() {
        let out = format!("killed{i}");
        let run: Vec<&str> = args
            .iter()
            .chain(&["--out", out.as_str()])
            .chain(&extra)
            .copied()
            .collect();
        let mut child = Command::new(weft_bin())
            .arg("train")
            .args(&run)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Cut at a step count, not after a time: how fast a run goes
        // depends on the machine and on what the compile cache holds.
        let cut = (steps as f64 * fraction) as usize;
        let log = dir.join(&out).join("metrics.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
            < cut
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no step {cut} within 2 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let seen =
            std::fs::read_to_string(dir.join(&out).join("metrics.jsonl")).unwrap_or_default();
        assert!(
            !seen.contains("\"done\""),
            "killed at {fraction} of the run, it had already finished"
        );
        let resumed: Vec<&str> = run
            .iter()
            .take(6)
            .chain(&["--resume"])
            .chain(&extra)
            .copied()
            .collect();
        let o = train(&resumed, dir);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            checkpoint(&dir.join("straight")) == checkpoint(&dir.join(&out)),
            "killed at {fraction} of the run, the resumed run ended elsewhere"
        );
    }
}

#[test]
fn bad_data_and_foreign_checkpoints_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("ragged")).unwrap();
    std::fs::write(
        dir.join("ragged/train.csv"),
        "a,b,label\n1,2,0\n3,4,1\n5,6\n7,8,1\n",
    )
    .unwrap();
    let o = train(&["--data", "ragged", "--out", "r"], dir);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("/data/train.csv:4: 2 columns, but the first row has 3"),
        "{e}"
    );

    std::fs::create_dir_all(dir.join("labels")).unwrap();
    std::fs::write(dir.join("labels/train.csv"), "1,2,0\n3,4,7\n").unwrap();
    let o = train(
        &["--data", "labels", "--out", "l", "--", "--classes", "3"],
        dir,
    );
    let e = stderr(&o);
    assert!(
        e.contains("/data/train.csv:2: label 7 is not a class (0 to 2)"),
        "{e}"
    );

    let o = train(&["--data", "nowhere", "--out", "n"], dir);
    assert!(stderr(&o).contains("--data nowhere"), "{}", stderr(&o));

    clusters(&dir.join("data"), 200, 2);
    let o = train(&["--data", "data", "--epochs", "1", "--out", "c"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = checkpoint(&dir.join("c"));
    let o = train(
        &[
            "--data", "data", "--epochs", "2", "--out", "c", "--resume", "--", "--hidden", "8",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("a checkpoint of another training"), "{e}");
    assert_eq!(before, checkpoint(&dir.join("c")), "the checkpoint changed");
}

/// The flagship: a CNN on scikit-learn's 8x8 digits (exported by
/// `scripts/export-digits.py`), trained in wasm to at least 97% on the
/// held-out quarter, pushed to a real registry as a model module, served
/// by reference from a fresh store, and queried with tritonclient over
/// HTTP and gRPC for every held-out digit.
#[test]
fn a_digits_cnn_reaches_97_percent_and_tritonclient_reads_the_served_one() {
    let Some(reg) = weft_tests::TestRegistry::start(None) else {
        return;
    };
    let Some(py) = weft_tests::python_with(&["tritonclient.http", "tritonclient.grpc", "numpy"])
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = weft_tests::data("digits");
    let data = data.to_str().unwrap();
    let reference = format!("{}/digits-cnn:1", reg.addr);
    let o = train(
        &[
            "--data",
            data,
            "--epochs",
            "20",
            "--out",
            "d",
            "--store",
            "s",
            "--push",
            &reference,
            "--",
            "--input-shape",
            "1,8,8",
            "--layers",
            "conv:8:3,relu,maxpool:2,flatten,dense:64,relu",
            "--lr",
            "0.005",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = records(&tmp.path().join("d"))
        .iter()
        .rev()
        .find_map(|r| r["accuracy"].as_f64())
        .unwrap();
    assert!(acc >= 0.97, "held-out accuracy {acc}");

    let fresh = tmp.path().join("fresh").display().to_string();
    let model = format!("digits={reference}");
    let server = weft_tests::ServeProcess::start(weft_bin(), &[model.as_str(), "--store", &fresh]);
    let grpc = server.grpc.clone().expect("gRPC address");
    let out = Command::new(&py)
        .arg(weft_tests::repo_root().join("tests/clients/digits_query.py"))
        .args([
            server.rest.as_str(),
            grpc.as_str(),
            weft_tests::data("digits/test.csv").to_str().unwrap(),
            "0.97",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("checks passed"),
        "tritonclient:\n{text}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// The fine-tuning example: an existing ONNX classifier, trained with JAX
/// on the digits 0 to 4 only (`tests/data/make_classifier.py`), gets its
/// head (`fc2.*`) retrained on all ten digits with the rest frozen. ONNX's
/// reference evaluator checks the result independently (frozen
/// initializers bit-identical, graph unchanged, accuracy before and
/// after); the tuned model is pushed, served by reference and read by
/// tritonclient with the model's own input.
#[test]
fn fine_tuning_retrains_only_the_head_of_an_existing_classifier() {
    let Some(reg) = weft_tests::TestRegistry::start(None) else {
        return;
    };
    let Some(py) = weft_tests::python_with(&[
        "onnx.reference",
        "tritonclient.http",
        "tritonclient.grpc",
        "numpy",
    ]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = weft_tests::data("digits");
    let base = weft_tests::data("digits_0to4_classifier.onnx");
    let reference = format!("{}/digits-tuned:1", reg.addr);
    let o = train(
        &[
            "--data",
            data.to_str().unwrap(),
            "--base-model",
            base.to_str().unwrap(),
            "--epochs",
            "10",
            "--out",
            "t",
            "--store",
            "s",
            "--push",
            &reference,
            "--",
            "--trainable",
            "fc2.*",
            "--lr",
            "0.01",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = records(&tmp.path().join("t"))
        .iter()
        .rev()
        .find_map(|r| r["accuracy"].as_f64())
        .unwrap();
    let check = Command::new(&py)
        .arg(weft_tests::repo_root().join("tests/clients/finetune_check.py"))
        .args([base.as_path(), &tmp.path().join("t/model.onnx")])
        .arg(weft_tests::data("digits/test.csv"))
        .arg("fc2.")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains("checks passed"),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let read = |what: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(what))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let (before, after) = (read("base accuracy"), read("tuned accuracy"));
    // The base model never saw 5-9: about half the held-out digits.
    assert!(before < 0.6, "base accuracy {before}");
    assert!(after >= 0.9, "tuned accuracy {after} (trainer said {acc})");
    assert!(
        (after - acc).abs() < 1e-3,
        "ONNX says {after}, the trainer {acc}"
    );

    let fresh = tmp.path().join("fresh").display().to_string();
    let model = format!("digits={reference}");
    let server = weft_tests::ServeProcess::start(weft_bin(), &[model.as_str(), "--store", &fresh]);
    let grpc = server.grpc.clone().expect("gRPC address");
    let out = Command::new(&py)
        .arg(weft_tests::repo_root().join("tests/clients/digits_query.py"))
        .args([server.rest.as_str(), grpc.as_str()])
        .arg(weft_tests::data("digits/test.csv"))
        .args(["0.9", "image", "1,1,8,8"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("checks passed"),
        "tritonclient:\n{text}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// What cannot be fine-tuned is refused before training, by name.
#[test]
fn fine_tuning_refuses_what_it_cannot_train() {
    let tmp = tempfile::tempdir().unwrap();
    let data = weft_tests::data("digits");
    let data = data.to_str().unwrap();
    let base = weft_tests::data("digits_0to4_classifier.onnx");
    let base = base.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--data", data, "--base-model", base, "--out", "x", "--"];
        args.extend(extra);
        let o = train(&args, tmp.path());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        stderr(&o)
    };
    // The convolution's gradient would have to pass the ReLU6 (`Clip`).
    let e = run(&["--trainable", "conv1.weight"]);
    assert!(
        e.contains("operator Clip (node relu6) has no gradient rule"),
        "{e}"
    );
    let e = run(&["--trainable", "head.*"]);
    assert!(
        e.contains("`head.*`") && e.contains("fc2.weight [10, 64]"),
        "{e}"
    );
    let e = run(&[]);
    assert!(e.contains("--base-model needs --trainable"), "{e}");
    let e = run(&["--trainable", "fc2.*", "--layers", "dense:8,relu"]);
    assert!(e.contains("--layers shapes a new network"), "{e}");
    assert!(
        !tmp.path().join("x/metrics.jsonl").exists()
            || std::fs::read_to_string(tmp.path().join("x/metrics.jsonl"))
                .unwrap()
                .is_empty(),
        "a refused run trained"
    );

    // A checkpoint made with other trainable parameters is not resumed.
    let ok = |extra: &[&str]| {
        let mut args = vec![
            "--data",
            data,
            "--base-model",
            base,
            "--epochs",
            "1",
            "--out",
            "c",
        ];
        args.extend(extra);
        train(&args, tmp.path())
    };
    let o = ok(&["--", "--trainable", "fc2.*"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = checkpoint(&tmp.path().join("c"));
    let o = ok(&["--resume", "--", "--trainable", "fc2.*,fc1.*"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a checkpoint of another training"),
        "{}",
        stderr(&o)
    );
    assert_eq!(before, checkpoint(&tmp.path().join("c")));
}

/// The same training steps on the GPU backend (Mesa's lavapipe in CI)
/// follow the CPU run's losses: the MLP and the flagship CNN.
#[test]
fn the_gpu_backend_follows_the_cpu_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let info = Command::new(weft_bin()).arg("info").output().unwrap();
    if String::from_utf8_lossy(&info.stdout).contains("gpu adapters: none") {
        weft_tests::skip_or_fail("no GPU adapter (apt-get install mesa-vulkan-drivers)");
        return;
    }
    let data = weft_tests::data("digits");
    let data = data.to_str().unwrap();
    let cnn = [
        "--input-shape",
        "1,8,8",
        "--layers",
        "conv:8:3,relu,maxpool:2,flatten,dense:64,relu",
    ];
    for (net, epochs, extra) in [("mlp", "2", &[][..]), ("cnn", "1", &cnn[..])] {
        let mut runs = Vec::new();
        for target in ["cpu", "gpu"] {
            let out = format!("{net}-{target}");
            let mut args = vec![
                "--data", data, "--epochs", epochs, "--target", target, "--out", &out, "--",
            ];
            args.extend(extra);
            let o = train(&args, tmp.path());
            assert!(o.status.success(), "{net} {target}: {}", stderr(&o));
            let losses: Vec<f64> = records(&tmp.path().join(&out))
                .iter()
                .filter_map(|r| r["loss"].as_f64())
                .collect();
            runs.push(losses);
        }
        assert_eq!(runs[0].len(), runs[1].len());
        for (step, (c, g)) in runs[0].iter().zip(&runs[1]).enumerate() {
            assert!(
                (c - g).abs() <= 1e-3 * c.abs().max(1e-2),
                "{net} step {}: CPU loss {c}, GPU loss {g}",
                step + 1
            );
        }
    }
}

/// `--push` packages the trained model with the bundled predictor as a new
/// model-module version, pushes it to a real registry, and a fresh store
/// serves it by reference.
#[test]
fn a_trained_model_is_published_and_served_by_reference() {
    let Some(reg) = weft_tests::TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clusters(&dir.join("data"), 300, 4);
    let reference = format!("{}/clusters:2", reg.addr);
    let o = train(
        &[
            "--data", "data", "--epochs", "3", "--out", "run", "--store", "mine", "--push",
            &reference,
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let pushed = String::from_utf8_lossy(&o.stdout);
    assert!(pushed.contains("pushed"), "{pushed}");

    let other = dir.join("other").display().to_string();
    let server = weft_tests::ServeProcess::start(
        weft_bin(),
        &[reference.as_str(), "--store", &other, "--no-grpc"],
    );
    let p = infer(&server, "clusters", &[-2.0, 1.0, -1.0, 2.0]);
    assert!(p[2] > 0.9, "the third cluster is class 2: {p:?}");
}

/// A loss that blows up stops the run at that step, and the checkpoint on
/// disk is the last good one.
#[test]
fn a_non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clusters(&dir.join("data"), 300, 5);
    let o = train(
        &[
            "--data",
            "data",
            "--epochs",
            "5",
            "--out",
            "nan",
            "--",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--checkpoint-every",
            "1",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("the loss is") && e.contains("at step"), "{e}");
    let saved: u64 = e
        .split("last good checkpoint (step ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{e}"));
    let steps = records(&dir.join("nan"))
        .iter()
        .filter(|r| r["loss"].is_number())
        .count() as u64;
    assert_eq!(saved, steps, "every good step was checkpointed: {e}");
    assert!(!checkpoint(&dir.join("nan")).is_empty());
}
