//! `weft.toml`: what `weft build DIR` packages into one artifact.
//!
//! ```toml
//! [module]
//! name = "ocr"
//! version = "1.0.0"
//! file = "ocr.wasm"
//! args = ["--dict", "/models/ppocr_keys.txt"]
//!
//! [[model]]
//! name = "ppocr-det"            # preload name
//! file = "det.onnx"             # host path, relative to DIR
//! path = "models/det.onnx"      # path inside the artifact [default: file]
//! encoding = "onnx"
//! target = "cpu"
//!
//! [[file]]
//! file = "keys.txt"
//! path = "models/ppocr_keys.txt"
//! kind = "config"               # config or doc
//! ```
//!
//! A package may train its model as it is built (`[train]`): `weft build`
//! runs the training module on the data and writes the trained model to
//! the `[[model]]` entry's file before packaging it.
//!
//! ```toml
//! [module]
//! name = "digits"
//! version = "2"                 # no `file`: the bundled predictor serves `model`
//!
//! [[model]]
//! name = "model"
//! file = "digits.onnx"          # written by the training
//!
//! [train]
//! model = "model"               # which [[model]] [default: the only one]
//! data = "data"                 # directory, relative to DIR
//! epochs = 20
//! args = ["--input-shape", "1,8,8", "--layers", "conv:8:3,relu,maxpool:2,flatten,dense:64,relu"]
//! # module = "train.wasm"       # [default: the bundled trainer]
//! # base_model = "base.onnx"    # fine-tune this model
//! # target = "cpu"              # cpu, gpu or auto
//! ```
//!
//! [`WeftToml::parse`] checks everything that needs no file: the syntax,
//! unknown keys, artifact paths (inside the artifact, none used twice) and
//! model names (none used twice). The CLI then reads the files.

use crate::artifact::{FileKind, check_filepath};
use crate::error::OciError;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A parsed, checked `weft.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeftToml {
    pub module: ModuleSection,
    #[serde(default)]
    pub model: Vec<ModelEntry>,
    #[serde(default)]
    pub file: Vec<FileEntry>,
    pub train: Option<TrainSection>,
}

/// `[train]`: train the model while building the package.
#[derive(Debug, Clone, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// The `[[model]]` entry the trained model becomes.
    pub model: Option<String>,
    /// The data directory, relative to the package directory.
    pub data: PathBuf,
    #[serde(default = "ten")]
    pub epochs: u64,
    /// A training module, relative to the package directory [default:
    /// the bundled trainer].
    pub module: Option<PathBuf>,
    /// An ONNX model to fine-tune, relative to the package directory.
    pub base_model: Option<PathBuf>,
    #[serde(default = "cpu")]
    pub target: String,
    /// Arguments for the training module.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[module]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSection {
    pub name: String,
    #[serde(default = "latest")]
    pub version: String,
    /// The wasm file, relative to the package directory [default: the
    /// bundled predictor, which serves the `[[model]]` named `model`].
    pub file: Option<PathBuf>,
    pub description: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
}

/// One `[[model]]`: a weights file preloaded under `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub file: PathBuf,
    pub path: Option<String>,
    #[serde(default = "onnx")]
    pub encoding: String,
    #[serde(default = "cpu")]
    pub target: String,
}

/// One `[[file]]`: any other file of the artifact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub file: PathBuf,
    pub path: Option<String>,
    #[serde(default)]
    pub kind: Kind,
}

/// What a `[[file]]` is.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Config,
    Doc,
}

impl From<Kind> for FileKind {
    fn from(k: Kind) -> FileKind {
        match k {
            Kind::Config => FileKind::Config,
            Kind::Doc => FileKind::Doc,
        }
    }
}

fn ten() -> u64 {
    10
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

fn invalid(message: String) -> OciError {
    OciError::Malformed {
        what: "weft.toml".into(),
        message,
    }
}

/// The artifact path of a file: explicit, or the host path if it is
/// relative and stays inside the package directory.
fn artifact_path(explicit: &Option<String>, file: &Path) -> Result<String, OciError> {
    let path = match explicit {
        Some(p) => p.clone(),
        None => file.to_string_lossy().replace('\\', "/"),
    };
    check_filepath(&path).map_err(|e| {
        invalid(format!(
            "{}: {e}; give it a `path` inside the artifact, e.g. path = \"models/{}\"",
            file.display(),
            file.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ))
    })?;
    Ok(path)
}

impl WeftToml {
    /// Parse and check a `weft.toml` text.
    pub fn parse(text: &str) -> Result<WeftToml, OciError> {
        let toml: WeftToml = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if toml.module.name.is_empty() {
            return Err(invalid("[module] name is empty".into()));
        }
        let mut names = HashSet::new();
        for m in &toml.model {
            if m.name.is_empty() || m.name.contains(':') {
                return Err(invalid(format!(
                    "[[model]] name `{}` must be non-empty and without ':'",
                    m.name
                )));
            }
            if !names.insert(m.name.as_str()) {
                return Err(invalid(format!(
                    "two [[model]] entries are named `{}`",
                    m.name
                )));
            }
        }
        if let Some(t) = &toml.train {
            toml.trained_model()?;
            if t.epochs == 0 {
                return Err(invalid("[train] epochs must be at least 1".into()));
            }
            if !["cpu", "gpu", "auto"].contains(&t.target.as_str()) {
                return Err(invalid(format!(
                    "[train] target `{}`: cpu, gpu or auto",
                    t.target
                )));
            }
        }
        let mut paths = HashSet::new();
        for (_, path, _) in toml.files()? {
            if !paths.insert(path.clone()) {
                return Err(invalid(format!(
                    "two entries put a file at `{path}` in the artifact"
                )));
            }
        }
        Ok(toml)
    }

    /// The `[[model]]` entry `[train]` writes: the one it names, or the
    /// only one. `None` without `[train]`.
    pub fn trained_model(&self) -> Result<Option<&ModelEntry>, OciError> {
        let Some(t) = &self.train else {
            return Ok(None);
        };
        let names = || {
            self.model
                .iter()
                .map(|m| format!("`{}`", m.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (&t.model, &self.model[..]) {
            (Some(name), models) => models.iter().find(|m| &m.name == name).map(Some).ok_or_else(|| {
                invalid(format!(
                    "[train] model `{name}` is not a [[model]] entry (there are: {})",
                    names()
                ))
            }),
            (None, [only]) => Ok(Some(only)),
            (None, []) => Err(invalid(
                "[train] needs a [[model]] entry to write the trained model to, e.g. [[model]] name = \"model\" file = \"model.onnx\"".into(),
            )),
            (None, _) => Err(invalid(format!(
                "[train] must say which [[model]] it trains (model = ...): there are {}",
                names()
            ))),
        }
    }

    /// Every file to package: (host path relative to the package
    /// directory, artifact path, kind), models first.
    pub fn files(&self) -> Result<Vec<(PathBuf, String, FileKind)>, OciError> {
        let mut out = Vec::new();
        for m in &self.model {
            out.push((
                m.file.clone(),
                artifact_path(&m.path, &m.file)?,
                FileKind::Weights,
            ));
        }
        for f in &self.file {
            out.push((
                f.file.clone(),
                artifact_path(&f.path, &f.file)?,
                f.kind.into(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_section_names_its_model() {
        let base = "[module]\nname = \"m\"\n\n[[model]]\nname = \"a\"\nfile = \"a.onnx\"\n";
        let t = WeftToml::parse(&format!("{base}\n[train]\ndata = \"d\"\n")).unwrap();
        assert_eq!(t.trained_model().unwrap().unwrap().name, "a");
        assert_eq!(t.train.as_ref().unwrap().epochs, 10);
        assert!(t.module.file.is_none());
        let two = format!("{base}\n[[model]]\nname = \"b\"\nfile = \"b.onnx\"\n");
        let e = WeftToml::parse(&format!("{two}\n[train]\ndata = \"d\"\n")).unwrap_err();
        assert!(e.to_string().contains("which [[model]]"), "{e}");
        let t = WeftToml::parse(&format!("{two}\n[train]\nmodel = \"b\"\ndata = \"d\"\n")).unwrap();
        assert_eq!(t.trained_model().unwrap().unwrap().name, "b");
        let e = WeftToml::parse("[module]\nname = \"m\"\n[train]\ndata = \"d\"\n").unwrap_err();
        assert!(e.to_string().contains("needs a [[model]] entry"), "{e}");
        let e =
            WeftToml::parse(&format!("{base}\n[train]\ndata = \"d\"\nepochs = 0\n")).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = WeftToml::parse(&format!(
            "{base}\n[train]\ndata = \"d\"\ntarget = \"tpu\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("cpu, gpu or auto"), "{e}");
        let e =
            WeftToml::parse(&format!("{base}\n[train]\ndata = \"d\"\nepoch = 3\n")).unwrap_err();
        assert!(e.to_string().contains("epoch"), "{e}");
    }

    #[test]
    fn a_package_parses_and_lists_its_files() {
        let t = WeftToml::parse(
            "[module]\nname = \"ocr\"\nfile = \"ocr.wasm\"\n\n[[model]]\nname = \"det\"\nfile = \"det.onnx\"\npath = \"models/det.onnx\"\n\n[[file]]\nfile = \"keys.txt\"\nkind = \"doc\"\n",
        )
        .unwrap();
        assert_eq!(t.module.version, "latest");
        let files = t.files().unwrap();
        assert_eq!(files[0].1, "models/det.onnx");
        assert_eq!(
            files[1],
            ("keys.txt".into(), "keys.txt".into(), FileKind::Doc)
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = |t: &str| WeftToml::parse(t).unwrap_err().to_string();
        let base = "[module]\nname = \"m\"\nfile = \"m.wasm\"\n";
        assert!(e(&format!("{base}colour = 1\n")).contains("colour"));
        let twice = format!(
            "{base}[[model]]\nname = \"a\"\nfile = \"a.onnx\"\n[[model]]\nname = \"a\"\nfile = \"b.onnx\"\n"
        );
        assert!(e(&twice).contains("two [[model]]"));
        let same_path = format!(
            "{base}[[model]]\nname = \"a\"\nfile = \"a.onnx\"\n[[file]]\nfile = \"x\"\npath = \"a.onnx\"\n"
        );
        assert!(e(&same_path).contains("two entries put a file at `a.onnx`"));
        let outside = format!("{base}[[file]]\nfile = \"../secret\"\n");
        assert!(e(&outside).contains("inside the artifact"));
    }
}
