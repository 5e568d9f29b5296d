//! `weft build DIR`: package a module directory into the local store.

use crate::store::StoreArgs;
use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use weft_nn::{Dim, OnnxModel, Preload, TensorInfo};
use weft_oci::artifact::{self, FileKind, ModelSpec, PackFile, Package, TensorSpec};

/// Package a model module (module, models, files, interface) described by
/// DIR/weft.toml into the local store, tagged NAME:VERSION. The models are
/// parsed to record their interface and to fail now, not on a device.
#[derive(Args)]
#[command(
    after_help = "weft.toml:\n  [module]\n  name = \"ocr\"\n  version = \"1.0.0\"\n  file = \"ocr.wasm\"\n  args = [\"--dict\", \"/models/ppocr_keys.txt\"]\n\n  [[model]]\n  name = \"ppocr-det\"            # preload name\n  file = \"det.onnx\"             # host path, relative to DIR\n  path = \"models/det.onnx\"      # path inside the artifact [default: file]\n  encoding = \"onnx\"\n  target = \"cpu\"\n\n  [[file]]\n  file = \"keys.txt\"\n  path = \"models/ppocr_keys.txt\"\n  kind = \"config\"               # config or doc\n\nSee docs/artifact-format.md."
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeftToml {
    module: ModuleSection,
    #[serde(default)]
    model: Vec<ModelEntry>,
    #[serde(default)]
    file: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleSection {
    name: String,
    #[serde(default = "latest")]
    version: String,
    file: PathBuf,
    description: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    name: String,
    file: PathBuf,
    path: Option<String>,
    #[serde(default = "onnx")]
    encoding: String,
    #[serde(default = "cpu")]
    target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    file: PathBuf,
    path: Option<String>,
    #[serde(default)]
    kind: Kind,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Config,
    Doc,
}

fn latest() -> String {
    "latest".into()
}
fn onnx() -> String {
    "onnx".into()
}
fn cpu() -> String {
    "cpu".into()
}

/// The artifact path of a file: explicit, or the host path if it is relative
/// and stays inside DIR.
fn artifact_path(explicit: &Option<String>, file: &Path) -> anyhow::Result<String> {
    let path = match explicit {
        Some(p) => p.clone(),
        None => file.to_string_lossy().replace('\\', "/"),
    };
    artifact::check_filepath(&path).with_context(|| {
        format!(
            "{}: give it a `path` inside the artifact, e.g. path = \"models/{}\"",
            file.display(),
            file.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    })?;
    Ok(path)
}

fn spec(t: &TensorInfo) -> TensorSpec {
    TensorSpec {
        name: t.name.clone(),
        ty: t.type_string(),
        shape: t.shape.as_ref().map(|dims| {
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => artifact::Dim::Fixed(*n as u64),
                    Dim::Symbol(s) => artifact::Dim::Named(s.clone()),
                    Dim::Unknown => artifact::Dim::Named("?".into()),
                })
                .collect()
        }),
    }
}

pub fn exec(a: BuildArgs) -> anyhow::Result<i32> {
    let manifest_path = a.dir.join("weft.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let toml: WeftToml = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid weft.toml", manifest_path.display()))?;
    let store = a.store.open()?;
    let module = a.dir.join(&toml.module.file);
    let sources: Vec<PathBuf> = toml
        .model
        .iter()
        .map(|m| a.dir.join(&m.file))
        .chain(toml.file.iter().map(|f| a.dir.join(&f.file)))
        .collect();
    let mut files = Vec::new();
    let mut models = Vec::new();
    for (m, source) in toml.model.iter().zip(&sources) {
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
        let parsed = OnnxModel::load(&bytes)
            .with_context(|| format!("model `{}` ({})", m.name, preload.path.display()))?;
        let path = artifact_path(&m.path, &m.file)?;
        if models.iter().any(|x: &ModelSpec| x.name == m.name) {
            bail!("two [[model]] entries are named `{}`", m.name);
        }
        models.push(ModelSpec {
            name: m.name.clone(),
            path: path.clone(),
            encoding: m.encoding.to_ascii_lowercase(),
            target: m.target.to_ascii_lowercase(),
            digest: String::new(),
            inputs: parsed.inputs().iter().map(spec).collect(),
            outputs: parsed.outputs().iter().map(spec).collect(),
        });
        files.push((path, FileKind::Weights, Some(m.name.clone())));
    }
    for f in &toml.file {
        let kind = match f.kind {
            Kind::Config => FileKind::Config,
            Kind::Doc => FileKind::Doc,
        };
        files.push((artifact_path(&f.path, &f.file)?, kind, None));
    }
    let mut seen = std::collections::HashSet::new();
    for (path, _, _) in &files {
        if !seen.insert(path.clone()) {
            bail!("two entries put a file at `{path}` in the artifact");
        }
    }
    let pack_files = files
        .into_iter()
        .zip(&sources)
        .map(|((path, kind, preload), source)| PackFile {
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
