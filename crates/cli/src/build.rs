//! `weft build DIR`: package a module directory into the local store.

use crate::store::StoreArgs;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use weft_nn::{OnnxModel, Preload};
use weft_oci::artifact::{self, ModelSpec, PackFile, Package};
use weft_oci::package::WeftToml;

/// Package a model module (module, models, files, interface) described by
/// DIR/weft.toml into the local store, tagged NAME:VERSION. The models are
/// parsed to record their interface and to fail now, not on a device.
#[derive(Args)]
#[command(
    after_help = "weft.toml:\n  [module]\n  name = \"ocr\"\n  version = \"1.0.0\"\n  file = \"ocr.wasm\"             # [default: the bundled predictor]\n  args = [\"--dict\", \"/models/ppocr_keys.txt\"]\n\n  [[model]]\n  name = \"ppocr-det\"            # preload name\n  file = \"det.onnx\"             # host path, relative to DIR\n  path = \"models/det.onnx\"      # path inside the artifact [default: file]\n  encoding = \"onnx\"            # onnx, tensorflowlite, tensorflow, autodetect\n  target = \"cpu\"\n\n  [[file]]\n  file = \"keys.txt\"\n  path = \"models/ppocr_keys.txt\"\n  kind = \"config\"               # config or doc\n\n  [train]                        # train the model while building\n  model = \"ppocr-det\"            # the [[model]] written [default: the only one]\n  data = \"data\"                 # data directory\n  epochs = 20\n  args = [\"--hidden\", \"64\"]       # for the training module\n  module = \"train.wasm\"         # [default: the bundled trainer]\n  base_model = \"base.onnx\"      # fine-tune this model\n  target = \"cpu\"                # cpu, gpu or auto\n\nSee docs/artifact-format.md and docs/training.md."
)]
pub struct BuildArgs {
    /// Directory holding weft.toml.
    pub dir: PathBuf,
    /// Tag as this reference instead of NAME:VERSION.
    #[arg(long, short = 't', value_name = "REF")]
    pub tag: Option<String>,
    /// Also build the classic-image variant (one tar layer) for containerd
    /// older than 1.6.25, tagged REF-classic.
    #[arg(long)]
    pub classic: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// GPU settings for a `[train]` section that trains on the GPU.
    #[command(flatten)]
    pub gpu: crate::run::GpuArgs,
}

pub fn exec(a: BuildArgs) -> anyhow::Result<i32> {
    let manifest_path = a.dir.join("weft.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let toml = WeftToml::parse(&text)
        .with_context(|| format!("{} is not a valid weft.toml", manifest_path.display()))?;
    if toml.module.file.is_none() && !toml.model.iter().any(|m| m.name == "model") {
        anyhow::bail!(
            "{}: [module] has no `file`, so the bundled predictor serves the [[model]] named `model`; name one `model`, or give [module] a file",
            manifest_path.display()
        );
    }
    let store = a.store.open()?;
    if let Some(train) = &toml.train {
        let model = toml.trained_model()?.context("[train] names no model")?;
        crate::train::for_build(&a, train, &a.dir.join(&model.file))
            .with_context(|| format!("[train] in {}", manifest_path.display()))?;
    }
    // No module file: the bundled predictor serves the models.
    let predictor = tempfile::tempdir()?;
    let module = match &toml.module.file {
        Some(file) => a.dir.join(file),
        None => {
            let path = predictor.path().join("predictor.wasm");
            std::fs::write(&path, crate::serve::PREDICTOR_WASM)?;
            path
        }
    };
    let entries = toml.files()?;
    let sources: Vec<PathBuf> = entries.iter().map(|(f, _, _)| a.dir.join(f)).collect();
    let mut models = Vec::new();
    for ((m, (_, path, _)), source) in toml.model.iter().zip(&entries).zip(&sources) {
        // The preload syntax validates the name, encoding and target.
        let preload: Preload = format!(
            "{}:{}:{}:{}",
            m.name,
            m.encoding,
            m.target,
            source.display()
        )
        .parse()
        .with_context(|| format!("[[model]] `{}` in {}", m.name, manifest_path.display()))?;
        let bytes = std::fs::read(&preload.path)
            .with_context(|| format!("cannot read model file {}", preload.path.display()))?;
        let format = weft_nn::format_of(preload.encoding, &bytes)
            .with_context(|| format!("model `{}` ({})", m.name, preload.path.display()))?;
        let parsed = OnnxModel::load_as(&bytes, format)
            .with_context(|| format!("model `{}` ({})", m.name, preload.path.display()))?;
        let signature = parsed.signature();
        models.push(ModelSpec {
            name: m.name.clone(),
            path: path.clone(),
            encoding: weft_nn::encoding_name(preload.encoding).into(),
            target: m.target.to_ascii_lowercase(),
            digest: String::new(),
            inputs: signature.inputs,
            outputs: signature.outputs,
        });
    }
    let preload_names = toml.model.iter().map(|m| Some(m.name.clone()));
    let pack_files = entries
        .into_iter()
        .zip(preload_names.chain(std::iter::repeat(None)))
        .zip(&sources)
        .map(|(((_, path, kind), preload), source)| PackFile {
            source,
            path,
            kind,
            preload,
        })
        .collect();
    let tag = a
        .tag
        .clone()
        .unwrap_or_else(|| format!("{}:{}", toml.module.name, toml.module.version));
    let (name, version) = tag.rsplit_once(':').unwrap_or((&tag, "latest"));
    let desc = artifact::build(
        &store,
        Package {
            name: name.into(),
            version: version.into(),
            description: toml.module.description.clone(),
            created: now_rfc3339(),
            module: &module,
            args: toml.module.args.clone(),
            files: pack_files,
            models,
        },
    )
    .with_context(|| format!("packaging {}", a.dir.display()))?;
    outln!("{tag} {}", desc.digest());
    if a.classic {
        let classic_tag = format!("{tag}-classic");
        let art = weft_oci::Artifact::open(&store, &tag)?;
        let classic = art.build_classic(&store, &classic_tag)?;
        outln!("{classic_tag} {}", classic.digest());
    }
    Ok(0)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
