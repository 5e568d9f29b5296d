//! `trainer`: the generic training module `weft train` bundles.
//!
//! Trains a classifier on CSV data (features, then the class label):
//! dense layers (`--hidden 64,32`), or any stack `--layers` describes, such
//! as a CNN over rows read as images (`--input-shape 1,8,8 --layers
//! conv:8:3,relu,maxpool:2,flatten,dense:64,relu`); a dense layer to the
//! classes always ends it. Or it fine-tunes an existing ONNX classifier
//! (`--base-model /base/model.onnx --trainable 'fc2.*'`): the initializers
//! named train, the rest stay frozen, and the result is that model with
//! the trained values. Training runs entirely inside the sandbox: the training step is an ONNX graph built
//! here with weft-autodiff and run through wasi-nn on the host's CPU or GPU
//! backend. Every step copies the parameters in and out through guest
//! memory, unless the host keeps them (`Context::bind_output`).
//!
//! Files (the host grants the directories):
//! - `/data/train.csv`, and `/data/test.csv` when there is one;
//! - `/checkpoints/checkpoint.safetensors`: parameters, optimizer state
//!   and the step, rewritten atomically every `--checkpoint-every` steps;
//! - `/out/metrics.jsonl`: one JSON object per step (`step`, `epoch`,
//!   `loss`, `examples`, `total_steps`), per epoch (`accuracy` on the test
//!   data) and one at the end (`done`, `steps`);
//! - `/out/model.onnx`: the trained model for serving (`input` `[1, F]` →
//!   `probabilities` `[1, K]`).
//!
//! Training is deterministic for a seed and a backend: the data order of
//! each epoch comes from the seed and the epoch, so a run resumed from a
//! checkpoint ends with the same parameters as one never interrupted.

use std::io::Write;
use weft_guest::{Encoding, Graph, Target, Tensor, TensorType};
use weft_train::checkpoint::Checkpoint;
use weft_train::data::{Data, Images, Rng, augment};
use weft_train::model::{Arch, Layer, Net};
use weft_train::tune::Tune;
use weft_train::weft_autodiff::optim::Optimizer;

struct Args {
    epochs: u64,
    layers: Vec<Layer>,
    input_shape: Option<Vec<usize>>,
    clip_norm: Option<f64>,
    classes: Option<usize>,
    optimizer: String,
    lr: f32,
    batch: usize,
    seed: u64,
    target: String,
    resume: bool,
    checkpoint_every: Option<u64>,
    /// Fine-tune this ONNX model instead of building one from layers.
    base_model: Option<String>,
    trainable: Vec<String>,
    /// Copy parameters through guest memory every step (no residency).
    copy_params: bool,
    /// Image augmentation: (horizontal flips, largest shift in pixels).
    augment: Option<(bool, usize)>,
    /// The flag that shaped a layer network, if one did.
    shaped_by: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        epochs: 10,
        layers: vec![Layer::Dense(64), Layer::Relu],
        input_shape: None,
        clip_norm: None,
        classes: None,
        optimizer: "adam".into(),
        lr: 0.01,
        batch: 32,
        seed: 1,
        target: "cpu".into(),
        resume: false,
        checkpoint_every: None,
        base_model: None,
        trainable: Vec::new(),
        copy_params: false,
        augment: None,
        shaped_by: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--resume" {
            a.resume = true;
            continue;
        }
        if flag == "--copy-params" {
            a.copy_params = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value}: {what}");
        if ["--hidden", "--layers", "--input-shape"].contains(&flag.as_str()) {
            a.shaped_by = Some(flag.clone());
        }
        match flag.as_str() {
            "--base-model" => a.base_model = Some(value),
            "--augment" => {
                let (mut flip, mut shift) = (false, 0);
                for part in value.split(',').map(str::trim) {
                    match part.split_once(':') {
                        None if part == "flip" => flip = true,
                        Some(("shift", n)) => {
                            shift = n.parse().map_err(|_| bad("shift:PIXELS, e.g. shift:1"))?
                        }
                        _ => return Err(bad("flip and/or shift:PIXELS, e.g. flip,shift:1")),
                    }
                }
                a.augment = Some((flip, shift));
            }
            "--trainable" => {
                a.trainable = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--epochs" => a.epochs = value.parse().map_err(|_| bad("not a number"))?,
            "--hidden" => {
                let widths: Vec<usize> = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("layer widths such as 64,32"))?;
                a.layers = widths
                    .into_iter()
                    .flat_map(|n| [Layer::Dense(n), Layer::Relu])
                    .collect();
            }
            "--layers" => a.layers = Layer::parse_list(&value)?,
            "--input-shape" => {
                a.input_shape = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().parse().ok().filter(|&n: &usize| n > 0))
                        .collect::<Option<_>>()
                        .ok_or_else(|| bad("sizes such as 1,8,8"))?,
                )
            }
            "--clip-norm" => {
                a.clip_norm = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|x: &f64| *x > 0.0 && x.is_finite())
                        .ok_or_else(|| bad("a positive number"))?,
                )
            }
            "--classes" => {
                a.classes = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&k| k > 1)
                        .ok_or_else(|| bad("at least 2"))?,
                )
            }
            "--optimizer" if value == "adam" || value == "sgd" => a.optimizer = value,
            "--optimizer" => return Err(bad("adam or sgd")),
            "--lr" => {
                a.lr = value
                    .parse()
                    .ok()
                    .filter(|x: &f32| *x > 0.0 && x.is_finite())
                    .ok_or_else(|| bad("a positive number"))?
            }
            "--batch" => {
                a.batch = value
                    .parse()
                    .ok()
                    .filter(|&b| b > 0)
                    .ok_or_else(|| bad("a positive number"))?
            }
            "--seed" => a.seed = value.parse().map_err(|_| bad("not a number"))?,
            "--target" if ["cpu", "gpu", "auto"].contains(&value.as_str()) => a.target = value,
            "--target" => return Err(bad("cpu, gpu or auto")),
            "--checkpoint-every" => {
                a.checkpoint_every = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad("a positive number of steps"))?,
                )
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn load(bytes: &[u8], target: &str) -> Result<Graph, String> {
    let on = |t| Graph::load(&[bytes], Encoding::Onnx, t).map_err(|e| e.to_string());
    match target {
        "gpu" => on(Target::Gpu),
        "auto" => on(Target::Gpu).or_else(|_| on(Target::Cpu)),
        _ => on(Target::Cpu),
    }
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn dims(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("trainer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = parse()?;
    let tune = match &a.base_model {
        Some(path) => {
            if let Some(flag) = &a.shaped_by {
                return Err(format!(
                    "{flag} shapes a new network; with --base-model the model's own layers train (choose which with --trainable)"
                ));
            }
            Some(Tune::open(path, &a.trainable)?)
        }
        None if !a.trainable.is_empty() => {
            return Err("--trainable names initializers of a --base-model; give one".into());
        }
        None => None,
    };
    if let (Some(t), Some(k)) = (&tune, a.classes)
        && t.classes() != k
    {
        return Err(format!(
            "--classes {k}, but the base model scores {} classes",
            t.classes()
        ));
    }
    let known = tune.as_ref().map(|t| t.classes()).or(a.classes);
    let image_hint = match a.input_shape.as_deref() {
        Some(&[c, h, w]) => Some([c, h, w]),
        _ => None,
    };
    let (train, test, example) = load_data(known, image_hint)?;
    let classes = known.unwrap_or_else(|| train.labels.iter().max().map_or(2, |m| m + 1).max(2));
    if let Some(t) = &test {
        if t.features != train.features {
            return Err(format!(
                "the test data has {} features per example, the training data {}",
                t.features, train.features
            ));
        }
        if let Some(l) = t.labels.iter().find(|&&l| l >= classes) {
            return Err(format!(
                "the test data has label {l}, not a class of the training data (0 to {})",
                classes - 1
            ));
        }
    }
    let batch = a.batch.min(train.rows());
    let per_epoch = (train.rows() / batch) as u64;
    let total = per_epoch * a.epochs;
    let every = a.checkpoint_every.unwrap_or(per_epoch).max(1);
    let net: Box<dyn Arch> = match tune {
        Some(t) => {
            if t.features() != train.features {
                return Err(format!(
                    "--base-model {}: one example is {} values, the training examples have {} features",
                    a.base_model.as_deref().unwrap_or_default(),
                    t.features(),
                    train.features
                ));
            }
            Box::new(t)
        }
        None => {
            let input = a
                .input_shape
                .clone()
                .or(example)
                .unwrap_or(vec![train.features]);
            if input.iter().product::<usize>() != train.features {
                return Err(format!(
                    "--input-shape {input:?} holds {} values, the training examples have {} features",
                    input.iter().product::<usize>(),
                    train.features
                ));
            }
            let net = Net {
                input,
                layers: a.layers.clone(),
                classes,
            };
            net.check()?;
            Box::new(net)
        }
    };
    let opt = match a.optimizer.as_str() {
        "sgd" => Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        },
        _ => Optimizer::adam(),
    };
    let signature = format!(
        "{}, {}, clip {:?}, batch {batch}, seed {}{}",
        net.signature(),
        a.optimizer,
        a.clip_norm,
        a.seed,
        a.augment.map_or(String::new(), |(f, s)| format!(
            ", augment flip {f} shift {s}"
        ))
    );
    let (step_onnx, spec) = net
        .step(batch, &opt, a.clip_norm)
        .map_err(|e| e.to_string())?;
    let augmentation = match (&a.augment, &net.example_shape()[..]) {
        (None, _) => None,
        (Some((flip, shift)), &[c, h, w]) => Some(([c, h, w], *flip, *shift)),
        (Some(_), other) => {
            return Err(format!(
                "--augment changes images, and the examples here have shape {other:?}; give --input-shape C,H,W"
            ));
        }
    };
    let masks = net.masks();

    // The state every step reads and writes, by graph input name.
    let mut values: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let params = net.params();
    let init = net.init(a.seed);
    for (p, v) in params.iter().zip(init) {
        values.push((p.name.clone(), p.shape.clone(), v));
    }
    for (b, start) in net.buffers() {
        let n = b.shape.iter().product();
        values.push((b.name, b.shape, vec![start; n]));
    }
    for s in &spec.state {
        let base = s.rsplit_once('.').map_or(s.as_str(), |(b, _)| b);
        let shape = params
            .iter()
            .find(|p| p.name == base)
            .map(|p| p.shape.clone())
            .unwrap_or_default();
        let n = shape.iter().product();
        values.push((s.clone(), shape, vec![0.0; n]));
    }
    let ckpt = "/checkpoints/checkpoint.safetensors";
    let mut step: u64 = 0;
    if a.resume && std::fs::metadata(ckpt).is_ok() {
        let c = Checkpoint::read(ckpt, &signature)?;
        for (name, shape, v) in c.tensors {
            let slot = values
                .iter_mut()
                .find(|(n, _, _)| *n == name)
                .ok_or_else(|| format!("{ckpt}: unexpected tensor {name}"))?;
            if slot.1 != shape {
                return Err(format!(
                    "{ckpt}: {name} has shape {shape:?}, this training's is {:?}",
                    slot.1
                ));
            }
            slot.2 = v;
        }
        step = c.step;
    }

    let graph = load(&step_onnx, &a.target)?;
    let mut ctx = graph.context().map_err(|e| e.to_string())?;
    // Residency: each `NAME.next` output feeds input `NAME` of the next
    // step on the host; the guest reads them only to checkpoint, evaluate
    // or export. Where the host cannot (wasip1 without Weft's extension),
    // every step copies them through guest memory instead.
    let resident = !a.copy_params
        && spec.outputs.iter().enumerate().all(|(o, name)| {
            let Some(base) = name.strip_suffix(".next") else {
                return true;
            };
            spec.inputs
                .iter()
                .position(|n| n == base)
                .is_some_and(|i| ctx.bind_output(o as u32, i as u32).is_ok())
        });
    // Whether the host holds the current parameters (after a first step).
    let mut held = false;
    let eval = match &test {
        Some(t) => {
            let rows = t.rows().min(256);
            let (bytes, names) = net.eval(rows).map_err(|e| e.to_string())?;
            Some((load(&bytes, &a.target)?, names, rows))
        }
        None => None,
    };
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/out/metrics.jsonl")
        .map_err(|e| format!("/out/metrics.jsonl: {e}"))?;
    let mut order = Vec::new();
    let mut order_epoch = u64::MAX;
    let mut last_saved = step;
    while step < total {
        let epoch = step / per_epoch;
        if epoch != order_epoch {
            order = Rng::new(a.seed ^ (epoch + 1).wrapping_mul(0x51_7cc1_b727_220a))
                .permutation(train.rows());
            order_epoch = epoch;
        }
        let pos = (step % per_epoch) as usize;
        let rows = &order[pos * batch..(pos + 1) * batch];
        let mut x = Vec::with_capacity(batch * train.features);
        let mut labels = vec![0.0f32; batch * classes];
        for (i, &r) in rows.iter().enumerate() {
            x.extend_from_slice(&train.x[r * train.features..(r + 1) * train.features]);
            labels[i * classes + train.labels[r]] = 1.0;
        }
        if let Some((shape, flip, shift)) = augmentation {
            // Drawn from the seed and the step: a resumed run draws the same.
            let mut rng = Rng::new(a.seed ^ (step + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
            augment(&mut x, shape, &mut rng, flip, shift);
        }
        let started = std::time::Instant::now();
        for (index, name) in spec.inputs.iter().enumerate() {
            if held && values.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            let tensor = match name.as_str() {
                "x" => Tensor::f32(&[batch as u32, train.features as u32], &x),
                "labels" => Tensor::f32(&[batch as u32, classes as u32], &labels),
                "lr" => Tensor::f32(&[], &[a.lr]),
                "step" => Tensor::f32(&[], &[(step + 1) as f32]),
                mask if mask.starts_with("mask") => {
                    let i: usize = mask[4..].parse().unwrap_or(usize::MAX);
                    let (shape, rate) = masks
                        .get(i)
                        .ok_or_else(|| format!("the step graph wants {mask}"))?;
                    let mut dims = vec![batch as u32];
                    dims.extend(shape.iter().map(|&d| d as u32));
                    Tensor::f32(&dims, &dropout_mask(a.seed, step, i, batch, shape, *rate))
                }
                _ => {
                    let (_, shape, v) = values
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .ok_or_else(|| format!("the step graph wants {name}"))?;
                    Tensor::f32(&dims(shape), v)
                }
            }
            .map_err(|e| e.to_string())?;
            ctx.set_input(index as u32, &tensor)
                .map_err(|e| format!("step {}: input {name}: {e}", step + 1))?;
        }
        ctx.compute()
            .map_err(|e| format!("step {}: {e}", step + 1))?;
        held = resident;
        let done = step + 1;
        let wanted = !resident
            || done.is_multiple_of(every)
            || done == total
            || (done.is_multiple_of(per_epoch) && eval.is_some());
        let mut loss = f32::NAN;
        let mut next = Vec::new();
        for (index, name) in spec.outputs.iter().enumerate() {
            if name.ends_with(".next") && !wanted {
                continue;
            }
            let shape = match name.strip_suffix(".next") {
                Some(base) => values
                    .iter()
                    .find(|(n, _, _)| n == base)
                    .map(|(_, s, _)| s.clone())
                    .unwrap_or_default(),
                None => vec![],
            };
            let t = ctx
                .output(index as u32, TensorType::F32, &dims(&shape))
                .map_err(|e| format!("step {}: output {name}: {e}", step + 1))?;
            match name.strip_suffix(".next") {
                Some(base) => next.push((base.to_string(), floats(&t))),
                None => loss = floats(&t).first().copied().unwrap_or(f32::NAN),
            }
        }
        if !loss.is_finite() {
            return Err(format!(
                "the loss is {loss} at step {}; the last good checkpoint (step {last_saved}) is kept in {ckpt}; lower --lr",
                step + 1
            ));
        }
        for (name, v) in next {
            if let Some(slot) = values.iter_mut().find(|(n, _, _)| *n == name) {
                slot.2 = v;
            }
        }
        step += 1;
        writeln!(
            metrics,
            "{{\"step\":{step},\"epoch\":{},\"loss\":{loss},\"examples\":{},\"total_steps\":{total},\"step_us\":{}}}",
            epoch + 1,
            step * batch as u64,
            started.elapsed().as_micros()
        )
        .map_err(|e| format!("/out/metrics.jsonl: {e}"))?;
        if step.is_multiple_of(every) || step == total {
            Checkpoint {
                tensors: values.clone(),
                step,
                signature: signature.clone(),
            }
            .write(ckpt)?;
            last_saved = step;
        }
        if step.is_multiple_of(per_epoch)
            && let (Some((g, names, rows)), Some(t)) = (&eval, &test)
        {
            let acc = accuracy(g, names, *rows, t, net.classes(), &values)?;
            writeln!(
                metrics,
                "{{\"step\":{step},\"epoch\":{},\"accuracy\":{acc}}}",
                epoch + 1
            )
            .map_err(|e| format!("/out/metrics.jsonl: {e}"))?;
        }
    }
    let trained: Vec<Vec<f32>> = params
        .iter()
        .map(|p| {
            values
                .iter()
                .find(|(m, _, _)| *m == p.name)
                .map(|(_, _, v)| v.clone())
                .unwrap_or_default()
        })
        .collect();
    let buffers: Vec<Vec<f32>> = net
        .buffers()
        .iter()
        .map(|(b, _)| {
            values
                .iter()
                .find(|(m, _, _)| *m == b.name)
                .map(|(_, _, v)| v.clone())
                .unwrap_or_default()
        })
        .collect();
    let model = net.export(&trained, &buffers).map_err(|e| e.to_string())?;
    std::fs::write("/out/model.onnx.partial", &model)
        .and_then(|()| std::fs::rename("/out/model.onnx.partial", "/out/model.onnx"))
        .map_err(|e| format!("/out/model.onnx: {e}"))?;
    writeln!(metrics, "{{\"done\":true,\"steps\":{step}}}")
        .map_err(|e| format!("/out/metrics.jsonl: {e}"))?;
    Ok(())
}

/// The training data and the test data, if any, and one example's shape
/// when the files tell it:
/// - `/data/train.csv` (and `test.csv`): features, then the label;
/// - `/data/train_x.npy` + `/data/train_y.npy` (and `test_x`, `test_y`);
/// - `/data/train/CLASS/*.png|jpg` (and `/data/test/CLASS/...`): image
///   folders, one per class, in the order of their sorted names.
type Loaded = (Data, Option<Data>, Option<Vec<usize>>);

fn load_data(classes: Option<usize>, image: Option<[usize; 3]>) -> Result<Loaded, String> {
    let exists = |p: &str| std::fs::metadata(p).is_ok();
    if exists("/data/train.csv") {
        let train = Data::read("/data/train.csv", classes)?;
        let k = classes.or(train.labels.iter().max().map(|m| m + 1));
        let test = match exists("/data/test.csv") {
            true => Some(Data::read("/data/test.csv", k)?),
            false => None,
        };
        return Ok((train, test, None));
    }
    if exists("/data/train_x.npy") {
        let (train, shape) = Data::read_npy("/data/train_x.npy", "/data/train_y.npy", classes)?;
        let test = match exists("/data/test_x.npy") {
            true => Some(Data::read_npy("/data/test_x.npy", "/data/test_y.npy", None)?.0),
            false => None,
        };
        return Ok((train, test, Some(shape)));
    }
    if std::fs::metadata("/data/train").is_ok_and(|m| m.is_dir()) {
        let train = Images::read("/data/train", image, None)?;
        if let Some(k) = classes
            && k != train.classes.len()
        {
            return Err(format!(
                "/data/train has {} class folders ({}); the model has {k} classes",
                train.classes.len(),
                train.classes.join(", ")
            ));
        }
        let test = match std::fs::metadata("/data/test").is_ok_and(|m| m.is_dir()) {
            true => Some(Images::read("/data/test", Some(train.shape), Some(&train.classes))?.data),
            false => None,
        };
        return Ok((train.data, test, Some(train.shape.to_vec())));
    }
    Err("no training data: give /data/train.csv (features, then the label), /data/train_x.npy with /data/train_y.npy, or /data/train/ with one folder of images per class".into())
}

/// Dropout layer `layer`'s mask at `step`: `0` or `1/(1-rate)` per value,
/// drawn from the seed, the step and the layer, so a resumed run draws the
/// masks an uninterrupted one did.
fn dropout_mask(
    seed: u64,
    step: u64,
    layer: usize,
    batch: usize,
    shape: &[usize],
    rate: f32,
) -> Vec<f32> {
    let n = batch * shape.iter().product::<usize>();
    let mut rng =
        Rng::new(seed ^ (step + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (layer as u64 + 1) << 48);
    let keep = 1.0 / (1.0 - rate);
    (0..n)
        .map(|_| if rng.unit() < rate { 0.0 } else { keep })
        .collect()
}

/// The share of `data` the network classifies right: `graph` takes the
/// inputs `names` (parameters by name, `x` the rows) and gives logits.
fn accuracy(
    graph: &Graph,
    names: &[String],
    rows: usize,
    data: &Data,
    classes: usize,
    values: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<f32, String> {
    let mut ctx = graph.context().map_err(|e| e.to_string())?;
    let mut x_at = None;
    for (i, name) in names.iter().enumerate() {
        if name == "x" {
            x_at = Some(i as u32);
            continue;
        }
        let (_, shape, v) = values
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| format!("no parameter {name}"))?;
        let t = Tensor::f32(&dims(shape), v).map_err(|e| e.to_string())?;
        ctx.set_input(i as u32, &t).map_err(|e| e.to_string())?;
    }
    let x_at = x_at.ok_or("the evaluation graph takes no x")?;
    let f = data.features;
    let mut right = 0;
    for start in (0..data.rows()).step_by(rows) {
        let n = rows.min(data.rows() - start);
        let mut x = data.x[start * f..(start + n) * f].to_vec();
        x.resize(rows * f, 0.0);
        let t = Tensor::f32(&[rows as u32, f as u32], &x).map_err(|e| e.to_string())?;
        ctx.set_input(x_at, &t).map_err(|e| e.to_string())?;
        ctx.compute().map_err(|e| e.to_string())?;
        let logits = floats(
            &ctx.output(0, TensorType::F32, &[rows as u32, classes as u32])
                .map_err(|e| e.to_string())?,
        );
        for i in 0..n {
            let row = &logits[i * classes..(i + 1) * classes];
            let best = (0..classes)
                .max_by(|&p, &q| row[p].total_cmp(&row[q]))
                .unwrap_or(0);
            if best == data.labels[start + i] {
                right += 1;
            }
        }
    }
    Ok(right as f32 / data.rows() as f32)
}
