//! `weft-module`: a model module from the local store, ready for the
//! runtime and the server. `weft run`, `weft serve` and `weft agent` all
//! start a stored artifact the same way: [`from_store`] turns it into a
//! [`Resolved`] (module bytes, preloads straight from the weight blobs, the
//! artifact's files as a read-only root, its arguments and version);
//! [`model_spec`] turns that into what `weft-serve` serves. [`verify`]
//! re-hashes every blob of an artifact, for a program that must not run
//! what its disk corrupted.
//!
//! ```no_run
//! # fn f(store: &weft_oci::Store) -> Result<(), weft_module::ModuleError> {
//! let resolved = weft_module::from_store(store, "ocr:1.0")?;
//! println!("{} {} model(s)", resolved.name, resolved.preloads.len());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;
use weft_nn::{BackendOptions, Models, Preload};
use weft_oci::{Artifact, Digest, OciError, Store};
use weft_runtime::{DirGrant, Limits, RunOptions, Runtime, RuntimeError};
use weft_serve::{Interface, ModelSpec, PoolConfig};

/// Why a stored module cannot be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{reference}: model `{model}` has no valid digest ({digest:?})")]
    ModelDigest {
        reference: String,
        model: String,
        digest: String,
    },
    #[error("{reference}: model `{model}`")]
    Preload {
        reference: String,
        model: String,
        #[source]
        source: Box<weft_nn::NnError>,
    },
    #[error("preloading models")]
    Models(#[source] Box<weft_nn::NnError>),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A module with what its artifact adds: preloads, a read-only root of its
/// files, leading arguments, its version.
pub struct Resolved {
    pub name: String,
    pub bytes: Vec<u8>,
    pub preloads: Vec<Preload>,
    pub dirs: Vec<DirGrant>,
    pub args: Vec<String>,
    /// The artifact's `org.opencontainers.image.version`.
    pub version: Option<String>,
    /// `sha256:` of the manifest, when it came from the store.
    pub digest: Option<String>,
}

/// Resolve a model-module artifact in the store.
pub fn from_store(store: &Store, reference: &str) -> Result<Resolved, ModuleError> {
    let art = Artifact::open(store, reference)?;
    let bytes = store.read_blob(art.module_layer()?.digest())?;
    let mut preloads = Vec::new();
    for m in &art.config.weft.models {
        let digest: Digest = m.digest.parse().map_err(|_| ModuleError::ModelDigest {
            reference: reference.into(),
            model: m.name.clone(),
            digest: m.digest.clone(),
        })?;
        let spec = format!(
            "{}:{}:{}:{}",
            m.name,
            m.encoding,
            m.target,
            store.blob_path(&digest).display()
        );
        preloads.push(
            spec.parse::<Preload>()
                .map_err(|source| ModuleError::Preload {
                    reference: reference.into(),
                    model: m.name.clone(),
                    source: Box::new(source),
                })?,
        );
    }
    let mut dirs = Vec::new();
    if art.files().next().is_some() {
        dirs.push(DirGrant {
            host: art.materialize(store)?,
            guest: "/".into(),
            read_only: true,
        });
    }
    let version = art
        .manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(weft_oci::media::VERSION).cloned());
    Ok(Resolved {
        name: art.config.weft.module.clone(),
        bytes,
        preloads,
        dirs,
        args: art.config.weft.args.clone(),
        version,
        digest: Some(art.manifest_digest.to_string()),
    })
}

/// Hash the manifest, the config and every layer of a stored artifact
/// again; the bytes checked.
pub fn verify(store: &Store, reference: &str) -> Result<u64, ModuleError> {
    let art = Artifact::open(store, reference)?;
    let mut n = store.verify_blob(&art.manifest_digest)?;
    n += store.verify_blob(art.manifest.config().digest())?;
    for layer in art.manifest.layers() {
        n += store.verify_blob(layer.digest())?;
    }
    Ok(n)
}

/// How a resolved module is served.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The name clients use in `/v2/models/{name}`.
    pub name: String,
    /// `weft-onnx` for an ONNX file on the bundled predictor, else
    /// `weft-wasm`.
    pub platform: String,
    pub env: Vec<(String, String)>,
    /// Directories granted before the artifact's own files.
    pub dirs: Vec<DirGrant>,
    pub max_memory: usize,
    /// Bounds each instance's start-up.
    pub startup: Duration,
    pub pool: PoolConfig,
    pub nn: BackendOptions,
}

/// Load the models, compile and link the module as a serving module, and
/// describe it for `weft-serve`.
pub fn model_spec(
    runtime: &Runtime,
    resolved: Resolved,
    settings: ServeSettings,
) -> Result<ModelSpec, ModuleError> {
    let models = Models::load(&resolved.preloads, settings.nn)
        .map_err(|e| ModuleError::Models(Box::new(e)))?;
    let interface = Interface::of_preloads(&models);
    let program = runtime.load_service(&resolved.name, &resolved.bytes)?;
    let mut dirs = settings.dirs;
    dirs.extend(resolved.dirs);
    Ok(ModelSpec {
        name: settings.name,
        version: resolved.version.unwrap_or_else(|| "1".into()),
        platform: settings.platform,
        program: Arc::new(program),
        options: RunOptions {
            args: resolved.args,
            program_name: None,
            env: settings.env,
            dirs,
            limits: Limits {
                max_memory: settings.max_memory,
                timeout: Some(settings.startup),
                fuel: None,
            },
            models: Arc::new(models),
            stdout: None,
        },
        interface,
        backend: "cpu",
        pool: settings.pool,
    })
}
