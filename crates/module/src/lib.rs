//! `weft-module`: a model module from the local store, ready for the
//! runtime and the server. `weft run`, `weft serve` and `weft agent` all
//! start a stored artifact the same way, the runtime's recipe
//! (`weft_runtime::Runtime::prepare`): [`from_store`] is its resolve step
//! for a store, giving a [`Resolved`] (module bytes, preloads straight from
//! the weight blobs, the artifact's files as a read-only root, its
//! arguments and version); [`model_spec`] prepares that as a serving module
//! and describes it for `weft-serve`. [`verify`]
//! re-hashes every blob of an artifact, for a program that must not run
//! what its disk corrupted.
//!
//! ```no_run
//! # fn f(store: &weft_oci::Store) -> Result<(), weft_module::ModuleError> {
//! let resolved = weft_module::from_store(store, "ocr:1.0")?;
//! println!("{} {} model(s)", resolved.name, resolved.preloads.len());
//! # Ok(()) }
//! ```

use std::time::Duration;
use weft_nn::Preload;
use weft_oci::{Artifact, Digest, OciError, Store};
use weft_runtime::{Code, DirGrant, Launch, Limits, Purpose, Runtime, RuntimeError};
use weft_serve::{ModelSpec, PoolConfig};

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
    #[error(
        "{reference}: model `{model}` names blob {digest}, which is not one of the artifact's layers"
    )]
    ForeignModel {
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
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A module with what its artifact adds (the runtime's type: the first step
/// of its start-up recipe).
pub use weft_runtime::Resolved;

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
        // A config may only name its own layers: a shared store holds
        // other artifacts' blobs, which are not this module's to read.
        if !art.manifest.layers().iter().any(|l| *l.digest() == digest) {
            return Err(ModuleError::ForeignModel {
                reference: reference.into(),
                model: m.name.clone(),
                digest: m.digest.clone(),
            });
        }
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
                })?
                // Read straight from the store: verified as it is read.
                .verified(digest.to_string()),
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
        code: Code::Wasm(bytes),
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
}

/// Load the models, compile and link the module as a serving module, and
/// describe it for `weft-serve`.
pub fn model_spec(
    runtime: &Runtime,
    resolved: Resolved,
    settings: ServeSettings,
) -> Result<ModelSpec, ModuleError> {
    let prepared = runtime.prepare(
        resolved,
        Purpose::Serve,
        Launch {
            env: settings.env,
            dirs: settings.dirs,
            limits: Limits {
                max_memory: settings.max_memory,
                timeout: Some(settings.startup),
                fuel: None,
            },
            ..Default::default()
        },
    )?;
    Ok(ModelSpec::new(
        settings.name,
        settings.platform,
        prepared,
        settings.pool,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_nn::Models;
    use weft_oci::artifact::{FileKind, ModelSpec as Declared, PackFile, Package};
    use weft_oci::{Descriptor, MediaType};

    fn data(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data")
            .join(name)
    }

    /// Package `model` as `name:1` (a minimal wasm module, one preload).
    fn package(store: &Store, dir: &std::path::Path, name: &str, model: &str) {
        let module = dir.join(format!("{name}.wasm"));
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let source = data(model);
        weft_oci::artifact::build(
            store,
            Package {
                name: name.into(),
                version: "1".into(),
                description: None,
                created: "2026-01-01T00:00:00Z".into(),
                module: &module,
                args: vec![],
                files: vec![PackFile {
                    source: &source,
                    path: "models/m.onnx".into(),
                    kind: FileKind::Weights,
                    preload: Some("model".into()),
                }],
                models: vec![Declared {
                    name: "model".into(),
                    path: "models/m.onnx".into(),
                    encoding: "onnx".into(),
                    target: "cpu".into(),
                    digest: String::new(),
                    inputs: vec![],
                    outputs: vec![],
                }],
            },
        )
        .unwrap();
    }

    /// Issue 21: an artifact's config could name any blob of the shared
    /// store as its model (another artifact's private weights). Now only
    /// its own layers, and their bytes are verified when read.
    #[test]
    fn a_config_may_name_only_its_own_layers_and_they_are_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        package(&store, tmp.path(), "victim", "tiny.onnx");
        package(&store, tmp.path(), "evil", "double_f32.onnx");
        let victim = Artifact::open(&store, "victim:1").unwrap();
        let secret = victim.config.weft.models[0].digest.clone();

        // Point evil's config at the victim's weights.
        let evil = Artifact::open(&store, "evil:1").unwrap();
        let mut config = evil.config.clone();
        config.weft.models[0].digest = secret.clone();
        let (cd, cs) = store
            .put_bytes(&serde_json::to_vec(&config).unwrap())
            .unwrap();
        let mut manifest = evil.manifest.clone();
        manifest.set_config(Descriptor::new(
            MediaType::Other(weft_oci::media::WASM_CONFIG.into()),
            cs,
            cd,
        ));
        let (md, ms) = store
            .put_bytes(&serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        store
            .tag("evil:2", &Descriptor::new(MediaType::ImageManifest, ms, md))
            .unwrap();
        let e = from_store(&store, "evil:2").err().unwrap();
        assert!(matches!(e, ModuleError::ForeignModel { .. }), "{e}");
        assert!(e.to_string().contains(&secret), "{e}");

        // Its own weights load, and are hashed as they are read: a blob
        // changed on disk is refused, not run.
        let resolved = from_store(&store, "victim:1").unwrap();
        Models::load(&resolved.preloads, Default::default()).unwrap();
        let digest: Digest = secret.parse().unwrap();
        std::fs::write(
            store.blob_path(&digest),
            std::fs::read(data("double_f32.onnx")).unwrap(),
        )
        .unwrap();
        let e = Models::load(&resolved.preloads, Default::default())
            .err()
            .unwrap();
        assert!(
            matches!(&e, weft_nn::NnError::Preloaded { error, .. }
                if matches!(**error, weft_nn::NnError::ModelDigest { .. })),
            "{e}"
        );
    }
}
