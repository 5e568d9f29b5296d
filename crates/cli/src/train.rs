//! `weft train`: run a training module in the sandbox and follow its
//! metrics.

use crate::run::{GpuArgs, resolve_module, runtime_config};
use crate::store::StoreArgs;
use anyhow::Context as _;
use clap::Args;
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_runtime::{DirGrant, Launch, Limits, Purpose, Resolved, Runtime};

/// The generic trainer bundled into `weft` (`modules/trainer`).
pub const TRAINER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trainer.wasm"));

/// Train a model inside the sandbox. The training step is an ONNX graph
/// the module builds and runs through wasi-nn, on the CPU or the GPU. The
/// bundled trainer fits an MLP or a CNN classifier to CSV data (features,
/// then the class label): DATA/train.csv, and DATA/test.csv for accuracy;
/// or fine-tunes an existing ONNX classifier (--base-model).
#[derive(Args)]
#[command(
    after_help = "Files: the module sees DATA as /data (read only), OUT as /out (metrics.jsonl, model.onnx) and the checkpoint directory as /checkpoints (checkpoint.safetensors).\n\nExample:\n  weft train --data digits --epochs 20 --out digits-run -- --hidden 64 --lr 0.005\n  weft train --data digits --epochs 20 --out digits-cnn -- --input-shape 1,8,8 --layers conv:8:3,relu,maxpool:2,flatten,dense:64,relu\n  weft serve digits-run/model.onnx\n  weft train --data digits --base-model classifier.onnx --out tuned -- --trainable 'fc2.*'"
)]
pub struct TrainArgs {
    /// A training module (.wasm, or a reference in the local store)
    /// [default: the bundled trainer].
    #[arg(value_name = "MODULE|REF")]
    pub module: Option<String>,

    /// The data directory (train.csv, test.csv for the bundled trainer).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,

    /// Where the training step runs.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu", "auto"])]
    pub target: String,

    /// Where the metrics and the trained model go (created).
    #[arg(long, value_name = "DIR", default_value = "weft-train")]
    pub out: PathBuf,

    /// An ONNX classifier to fine-tune instead of a new network: the
    /// module sees a copy as /base/model.onnx (and the bundled trainer gets
    /// `--base-model /base/model.onnx`); its --trainable NAMES train, the
    /// rest stays frozen, and OUT/model.onnx is the same model with the
    /// trained values.
    #[arg(long, value_name = "FILE")]
    pub base_model: Option<PathBuf>,

    /// Where checkpoints go (created) [default: OUT/checkpoints].
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Continue from the checkpoint in the checkpoint directory; the result
    /// is the one an uninterrupted run gives.
    #[arg(long)]
    pub resume: bool,

    /// Print every metrics record as a JSON line on stdout, no progress bar.
    #[arg(long)]
    pub json: bool,

    /// Package the trained model as a model module (the bundled predictor
    /// serving OUT/model.onnx) tagged REF in the local store, and push it
    /// when REF names a registry (REGISTRY/REPOSITORY:TAG).
    #[arg(long, value_name = "REF")]
    pub push: Option<String>,

    /// Cap on what the module holds on the host (e.g. 2GiB).
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = crate::parse::size)]
    pub max_memory: usize,

    /// Wall-clock deadline (e.g. 2h) or `none`.
    #[arg(long, value_name = "DURATION", default_value = "none", value_parser = crate::parse::timeout)]
    pub timeout: Duration,

    #[command(flatten)]
    pub gpu: GpuArgs,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,

    /// Arguments for the training module (after `--`); the bundled
    /// trainer's: --hidden 64,32 | --layers conv:OUT:K[:STRIDE[:PAD]],
    /// maxpool:K, avgpool:K, dense:N, layernorm, relu, tanh, sigmoid,
    /// flatten, dropout:RATE (a dense layer to the classes ends them)
    /// --input-shape C,H,W --classes K --optimizer adam|sgd --lr X
    /// --clip-norm X --batch N --seed N --checkpoint-every STEPS
    /// --trainable NAME,PREFIX* (with --base-model).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Grant `host` (given with `flag`) as `guest`, creating it when writable.
fn grant(flag: &str, host: &Path, guest: &str, read_only: bool) -> anyhow::Result<DirGrant> {
    if !read_only {
        std::fs::create_dir_all(host)
            .with_context(|| format!("{flag} {}: cannot create it", host.display()))?;
    }
    let host = host
        .canonicalize()
        .with_context(|| format!("{flag} {}", host.display()))?;
    Ok(DirGrant {
        host,
        guest: guest.into(),
        read_only,
    })
}

pub fn exec(a: TrainArgs) -> anyhow::Result<i32> {
    a.gpu.apply();
    let runtime = Runtime::new(runtime_config(a.gpu.nn_gpu_fallback, false, None, false))?;
    let resolved = match &a.module {
        None => Resolved::module("trainer.wasm", TRAINER_WASM.to_vec()),
        Some(m) => resolve_module(m, &a.store, &a.remote, a.json)?,
    };
    let checkpoints = a
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| a.out.join("checkpoints"));
    let mut dirs = vec![
        grant("--data", &a.data, "/data", true)?,
        grant("--out", &a.out, "/out", false)?,
        grant("--checkpoint-dir", &checkpoints, "/checkpoints", false)?,
    ];
    // The base model alone, not the directory around it.
    let base = tempfile::tempdir().context("a directory for --base-model")?;
    if let Some(model) = &a.base_model {
        std::fs::copy(model, base.path().join("model.onnx"))
            .with_context(|| format!("--base-model {}", model.display()))?;
        dirs.push(grant("--base-model", base.path(), "/base", true)?);
    }
    let metrics = a.out.join("metrics.jsonl");
    if !a.resume {
        // A fresh run starts fresh records (a resumed one appends).
        let _ = std::fs::remove_file(&metrics);
    }
    let mut args = vec![
        "--epochs".to_string(),
        a.epochs.to_string(),
        "--target".into(),
        a.target.clone(),
    ];
    if a.resume {
        args.push("--resume".into());
    }
    if a.base_model.is_some() {
        args.extend(["--base-model".into(), "/base/model.onnx".into()]);
    }
    args.extend(a.args.iter().cloned());
    let prepared = runtime.prepare(
        resolved,
        Purpose::Run,
        Launch {
            dirs,
            args,
            limits: Limits {
                max_memory: a.max_memory,
                timeout: (!a.timeout.is_zero()).then_some(a.timeout),
                fuel: None,
            },
            ..Default::default()
        },
    )?;
    if let Some(reference) = &a.push {
        // Refuse a bad reference before training, not after.
        weft_oci::parse_reference(reference).with_context(|| format!("--push {reference}"))?;
    }
    let started = Instant::now();
    let follow = Follow::new(&metrics, a.json);
    let done = std::sync::atomic::AtomicBool::new(false);
    let code = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut follow = follow;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                follow.poll();
                std::thread::sleep(Duration::from_millis(200));
            }
            follow.poll();
            follow
        });
        let code = prepared.run(&runtime);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut follow = watcher.join().expect("the metrics follower");
        follow.finish(code.as_ref().is_ok_and(|c| *c == 0));
        code
    })?;
    if code == 0 && !a.json {
        let model = a.out.join("model.onnx");
        eprintln!(
            "weft: trained in {:.1}s; checkpoint {}",
            started.elapsed().as_secs_f64(),
            checkpoints.join("checkpoint.safetensors").display()
        );
        if model.exists() {
            eprintln!(
                "weft: model {} (serve it: weft serve {})",
                model.display(),
                model.display()
            );
        }
    }
    if code == 0
        && let Some(reference) = &a.push
    {
        publish(&a, reference)?;
    }
    Ok(code)
}

/// `weft build` of a package with a `[train]` section: train as the
/// section says and write the trained model to `model` (in the package
/// directory). The run lives in `DIR/.weft-train/FINGERPRINT`, keyed by
/// everything the result depends on (the section, the module, the base
/// model and the data files' bytes), and resumes from its checkpoint: a
/// rebuild with nothing changed trains no step; an interrupted one goes
/// on where it stopped.
pub fn for_build(
    b: &crate::build::BuildArgs,
    t: &weft_oci::package::TrainSection,
    model: &Path,
) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{t:?}"));
    match &t.module {
        Some(m) => h.update(
            std::fs::read(b.dir.join(m))
                .with_context(|| format!("[train] module {}", m.display()))?,
        ),
        None => h.update(TRAINER_WASM),
    }
    if let Some(base) = &t.base_model {
        h.update(
            std::fs::read(b.dir.join(base))
                .with_context(|| format!("[train] base_model {}", base.display()))?,
        );
    }
    let data = b.dir.join(&t.data);
    let mut files = Vec::new();
    let mut dirs = vec![data.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("[train] data {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in &files {
        h.update(
            f.strip_prefix(&data)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    let fingerprint = hex::encode(&h.finalize()[..8]);
    let out = b.dir.join(".weft-train").join(&fingerprint);
    let resume = out.join("checkpoints/checkpoint.safetensors").exists();
    eprintln!(
        "weft: training {} ({}){}",
        model.display(),
        out.display(),
        if resume { ", resuming" } else { "" }
    );
    let code = exec(TrainArgs {
        module: t
            .module
            .as_ref()
            .map(|m| b.dir.join(m).display().to_string()),
        data,
        epochs: t.epochs,
        target: t.target.clone(),
        out: out.clone(),
        base_model: t.base_model.as_ref().map(|p| b.dir.join(p)),
        checkpoint_dir: None,
        resume,
        json: false,
        push: None,
        max_memory: 2 << 30,
        timeout: Duration::ZERO,
        gpu: b.gpu.clone(),
        store: b.store.clone(),
        remote: Default::default(),
        args: t.args.clone(),
    })?;
    anyhow::ensure!(code == 0, "the training module exited with {code}");
    let trained = out.join("model.onnx");
    anyhow::ensure!(
        trained.exists(),
        "the training module wrote no {}",
        trained.display()
    );
    if let Some(parent) = model.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = model.with_extension("onnx.partial");
    std::fs::copy(&trained, &partial)
        .and_then(|_| std::fs::rename(&partial, model))
        .with_context(|| format!("writing {}", model.display()))?;
    Ok(())
}

/// Package OUT/model.onnx with the bundled predictor as the model module
/// `reference` in the local store, and push it when it names a registry.
fn publish(a: &TrainArgs, reference: &str) -> anyhow::Result<()> {
    let model = a.out.join("model.onnx");
    anyhow::ensure!(
        model.exists(),
        "--push: the training module wrote no {}",
        model.display()
    );
    let pkg = a.out.join("package");
    std::fs::create_dir_all(&pkg).with_context(|| format!("creating {}", pkg.display()))?;
    std::fs::write(pkg.join("predictor.wasm"), crate::serve::PREDICTOR_WASM)?;
    std::fs::copy(&model, pkg.join("model.onnx"))?;
    let repo = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    let name = repo.rsplit('/').next().unwrap_or(repo);
    std::fs::write(
        pkg.join("weft.toml"),
        format!(
            "[module]\nname = {name:?}\nversion = \"1\"\nfile = \"predictor.wasm\"\ndescription = \"trained by weft train\"\n\n[[model]]\nname = \"model\"\nfile = \"model.onnx\"\n"
        ),
    )?;
    crate::build::exec(crate::build::BuildArgs {
        dir: pkg,
        tag: Some(reference.to_owned()),
        classic: false,
        store: a.store.clone(),
        gpu: a.gpu.clone(),
    })?;
    if weft_oci::names_registry(reference) {
        crate::remote::push(crate::remote::PushArgs {
            local: reference.to_owned(),
            target: None,
            json: false,
            remote: a.remote.clone(),
            store: a.store.clone(),
        })?;
    }
    Ok(())
}

/// Follows `metrics.jsonl` as the module appends to it: a progress bar
/// (loss, examples/s, ETA) on a terminal, or each record on stdout; every
/// record also goes to a TensorBoard event file beside it, and the whole
/// run is drawn as `plot.png` at the end.
struct Follow {
    path: PathBuf,
    offset: u64,
    json: bool,
    bar: indicatif::ProgressBar,
    started: Instant,
    first_examples: Option<u64>,
    events: Option<weft_metrics::EventWriter>,
}

impl Follow {
    fn new(path: &Path, json: bool) -> Follow {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        let bar = if json {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps, {msg}, ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let events = weft_metrics::EventWriter::create(dir)
            .inspect_err(|e| tracing::warn!("no TensorBoard events: {e}"))
            .ok();
        Follow {
            path: path.to_owned(),
            offset,
            json,
            bar,
            started: Instant::now(),
            first_examples: None,
            events,
        }
    }

    fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = std::io::BufReader::new(f);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if !line.ends_with('\n') {
                // Half a record: read it whole next time.
                break;
            }
            self.offset += line.len() as u64;
            self.record(line.trim());
            line.clear();
        }
        // What TensorBoard reads while the run goes on.
        if let Some(events) = &mut self.events
            && let Err(e) = events.flush()
        {
            tracing::warn!("TensorBoard events: {e}");
            self.events = None;
        }
    }

    fn record(&mut self, line: &str) {
        let v = serde_json::from_str::<serde_json::Value>(line).ok();
        if let Some(v) = &v {
            self.tensorboard(v);
        }
        if self.json {
            outln!("{line}");
            return;
        }
        let Some(v) = v else {
            return;
        };
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        if let Some(total) = num("total_steps") {
            self.bar.set_length(total as u64);
        }
        if let Some(epoch) = num("epoch") {
            self.bar.set_prefix(format!("{epoch}"));
        }
        if let Some(acc) = num("accuracy") {
            let line = format!(
                "epoch {}: accuracy {:.2}%",
                num("epoch").unwrap_or(0.0),
                acc * 100.0
            );
            if self.bar.is_hidden() {
                eprintln!("weft: {line}");
            } else {
                self.bar.println(line);
            }
            return;
        }
        if let (Some(step), Some(loss), Some(examples)) =
            (num("step"), num("loss"), num("examples"))
        {
            self.bar.set_position(step as u64);
            let rate = self.rate(examples);
            self.bar
                .set_message(format!("loss {loss:.4}, {rate:.0} examples/s"));
        }
    }

    /// Examples per second since the first record this run saw.
    fn rate(&mut self, examples: f64) -> f64 {
        let first = *self.first_examples.get_or_insert(examples as u64);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (examples as u64).saturating_sub(first) as f64 / secs
    }

    /// A record as TensorBoard scalars: `train/loss` and
    /// `train/examples_per_second` per step, `test/accuracy` per epoch.
    fn tensorboard(&mut self, v: &serde_json::Value) {
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let Some(step) = num("step") else {
            return;
        };
        let mut scalars = Vec::new();
        if let Some(acc) = num("accuracy") {
            scalars.push(("test/accuracy", acc));
        } else if let (Some(loss), Some(examples)) = (num("loss"), num("examples")) {
            scalars.push(("train/loss", loss));
            scalars.push(("train/examples_per_second", self.rate(examples)));
        }
        let Some(events) = &mut self.events else {
            return;
        };
        for (tag, value) in scalars {
            if let Err(e) = events.scalar(tag, step as i64, value as f32) {
                tracing::warn!("TensorBoard events: {e}");
                self.events = None;
                return;
            }
        }
    }

    /// Draw the whole run (every record of `metrics.jsonl`, resumed parts
    /// included) as `plot.png` beside it.
    fn plot(&self) -> anyhow::Result<PathBuf> {
        let text = std::fs::read_to_string(&self.path)?;
        let (mut loss, mut accuracy) = (Vec::new(), Vec::new());
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
            match (num("step"), num("epoch"), num("loss"), num("accuracy")) {
                (Some(step), _, Some(l), _) => loss.push((step, l)),
                (_, Some(epoch), _, Some(a)) => accuracy.push((epoch, a)),
                _ => {}
            }
        }
        let out = self.path.with_file_name("plot.png");
        weft_metrics::plot_png(
            &out,
            &[
                weft_metrics::Series {
                    title: "training loss".into(),
                    x_label: "step".into(),
                    points: loss,
                    log_y: true,
                },
                weft_metrics::Series {
                    title: "held-out accuracy".into(),
                    x_label: "epoch".into(),
                    points: accuracy,
                    log_y: false,
                },
            ],
        )?;
        Ok(out)
    }

    fn finish(&mut self, ok: bool) {
        if let Some(events) = &mut self.events
            && let Err(e) = events.flush()
        {
            tracing::warn!("TensorBoard events: {e}");
        }
        if let Err(e) = self.plot() {
            tracing::warn!("no plot.png: {e:#}");
        }
        if ok {
            self.bar.finish();
        } else {
            self.bar.abandon();
        }
    }
}
