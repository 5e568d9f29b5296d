//! `weft-ort`: onnxruntime's CPU engine for Weft's wasi-nn backends,
//! loaded at run time.
//!
//! Nothing of onnxruntime is linked or downloaded at build time: the first
//! model loaded with this engine finds `libonnxruntime` ([`library`]: an
//! explicit path, a system install, or the `onnxruntime` Python wheel),
//! loads it once per process ([`init`]) and checks that it is new enough
//! for the C API version the `ort` crate binds. `weft-nn` chooses this
//! engine over tract when asked to (`--cpu-engine onnxruntime`); the wasm
//! guest and the artifact do not change, only who runs the graph.
//!
//! Where to start: [`OrtModel::load`] and [`OrtModel::run`]; tensors travel
//! as wasi-nn carries them ([`TensorRef`] in, [`Tensor`] out: packed bytes,
//! a shape and an [`ElementType`]).
//!
//! ```no_run
//! use weft_ort::{ElementType, OrtModel, TensorRef};
//! let model = OrtModel::load(&std::fs::read("tiny.onnx")?, 1)?;
//! let x: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let outputs = model.run(&[TensorRef { ty: ElementType::F32, shape: &[1, 4], data: &x }])?;
//! let y = outputs.tensor(0)?;
//! assert_eq!(y.shape, [1, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: like `weft-nn`, this crate turns model bytes and
//! tensors into tensors; it knows nothing of wasm, OCI or serving.

mod error;
mod locate;
mod model;
mod tensor;

pub use error::OrtError;
pub use locate::{library, wheel_library};
pub use model::{OrtModel, Outputs, Port};
pub use tensor::{ElementType, Tensor, TensorRef};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The onnxruntime library this process loaded.
pub struct Library {
    path: PathBuf,
    version: String,
    environment: ort::environment::Environment,
}

impl Library {
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its version, `1.32.0` (or its build description when it names none).
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

static LIBRARY: OnceLock<Result<Library, OrtError>> = OnceLock::new();

/// Load onnxruntime from where [`library`] finds it, once per process; the
/// outcome, failure included, is kept for every later call.
pub fn init() -> Result<&'static Library, OrtError> {
    init_from(None)
}

/// Load onnxruntime from `path` (or where [`library`] finds it when
/// `None`), once per process: a process holds one onnxruntime, so after
/// the first call the path is ignored and the first outcome returned.
pub fn init_from(path: Option<&Path>) -> Result<&'static Library, OrtError> {
    LIBRARY
        .get_or_init(|| open(path))
        .as_ref()
        .map_err(Clone::clone)
}

/// The library loaded, if one was; loads nothing.
pub fn loaded() -> Option<&'static Library> {
    LIBRARY.get().and_then(|r| r.as_ref().ok())
}

fn open(path: Option<&Path>) -> Result<Library, OrtError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => library()?,
    };
    let builder = ort::init_from(&path).map_err(|e| match e {
        ort::LoadDynamicError::BadVersion { version_str, path } => OrtError::TooOld {
            path,
            version: version_str,
            minimum: ort::MINOR_VERSION,
        },
        other => OrtError::Load {
            path: path.clone(),
            message: other.to_string(),
        },
    })?;
    let environment = builder
        .with_name("weft")
        .with_telemetry(false)
        .build()
        .map_err(|e| OrtError::Environment {
            message: e.to_string(),
        })?;
    let build = ort::info();
    let version = version(build, &path);
    tracing::info!(
        library = %path.display(),
        version = %version,
        "onnxruntime loaded for the onnxruntime CPU engine"
    );
    tracing::debug!(build, "onnxruntime build");
    Ok(Library {
        path,
        version,
        environment,
    })
}

/// The version a build description (`ORT Build Info: git-branch=rel-1.32.0,
/// ...`) or else the file name (`libonnxruntime.so.1.32.0`) states; else
/// the build description itself.
fn version(build: &str, path: &Path) -> String {
    let from_build = build
        .split("git-branch=rel-")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .filter(|v| !v.is_empty());
    let from_name = || {
        let name = path.file_name()?.to_str()?;
        let v = name.strip_prefix("libonnxruntime.so.")?;
        v.split('.')
            .all(|p| p.parse::<u32>().is_ok())
            .then(|| v.to_owned())
    };
    from_build
        .map(str::to_owned)
        .or_else(from_name)
        .unwrap_or_else(|| build.to_owned())
}

#[cfg(test)]
mod tests;
