//! The model-module artifact: config, manifest assembly and reading back.

use crate::error::OciError;
use crate::store::Store;
use oci_spec::image::{Descriptor, Digest, ImageManifest, ImageManifestBuilder, MediaType};
use std::collections::HashMap;
use std::path::Path;
use weft_format::media;

pub use weft_format::{
    Dim, ModelSpec, ProcessConfig, TensorSpec, WasmConfig, WeftSection, type_name,
};

/// What kind of file a layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Weights,
    Config,
    Doc,
}

impl FileKind {
    fn media_type(self) -> &'static str {
        match self {
            FileKind::Weights => media::MODEL_WEIGHT,
            FileKind::Config => media::MODEL_CONFIG,
            FileKind::Doc => media::MODEL_DOC,
        }
    }
}

/// A file to package, with its path inside the artifact.
#[derive(Debug, Clone)]
pub struct PackFile<'a> {
    pub source: &'a Path,
    pub path: String,
    pub kind: FileKind,
    /// For weights: the preload name.
    pub preload: Option<String>,
}

/// Everything `weft build` puts into one artifact.
#[derive(Debug, Clone)]
pub struct Package<'a> {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub created: String,
    pub module: &'a Path,
    pub args: Vec<String>,
    pub files: Vec<PackFile<'a>>,
    /// Models' interfaces, by preload name (digest filled in here).
    pub models: Vec<ModelSpec>,
}

/// The blobs a manifest references, each digest once: its config, then its
/// layers. Two layers with the same bytes are one blob, and must move once:
/// two uploads (or downloads) of one digest at a time race, and a registry
/// may answer one of them with a server error.
pub fn blobs(manifest: &ImageManifest) -> impl Iterator<Item = &Descriptor> {
    let mut seen = std::collections::HashSet::new();
    std::iter::once(manifest.config())
        .chain(manifest.layers())
        .filter(move |d| seen.insert(d.digest().to_string()))
}

/// Check a layer file path: relative, `/`-separated, no `..`.
pub fn check_filepath(path: &str) -> Result<(), OciError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(OciError::Malformed {
            what: format!("file path `{path}`"),
            message: "must be relative, `/`-separated, without `.` or `..` components".into(),
        });
    }
    Ok(())
}

/// Check every layer's `org.cncf.model.filepath`: each valid, none used
/// twice, and no file where another needs a directory (`a` and `a/b`).
/// Run on every manifest before its files are written anywhere, so one
/// artifact's layers can never land on the same path.
pub fn check_files(manifest: &ImageManifest) -> Result<(), OciError> {
    let mut seen = std::collections::HashSet::new();
    let paths = manifest.layers().iter().filter_map(|l| {
        l.annotations()
            .as_ref()
            .and_then(|a| a.get(media::FILEPATH))
    });
    for path in paths {
        check_filepath(path)?;
        if !seen.insert(path.as_str()) {
            return Err(OciError::Malformed {
                what: format!("file path `{path}`"),
                message: "two layers of the artifact have this path".into(),
            });
        }
    }
    for path in &seen {
        let mut dir = *path;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if seen.contains(parent) {
                return Err(OciError::Malformed {
                    what: format!("file path `{path}`"),
                    message: format!("`{parent}` is a file of the artifact, not a directory"),
                });
            }
            dir = parent;
        }
    }
    Ok(())
}

fn layer(media_type: &str, digest: Digest, size: u64, ann: Vec<(&str, String)>) -> Descriptor {
    let mut d = Descriptor::new(MediaType::Other(media_type.into()), size, digest);
    d.set_annotations(Some(
        ann.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    ));
    d
}

fn store_file(store: &Store, path: &Path) -> Result<(Digest, u64), OciError> {
    let file = std::fs::File::open(path).map_err(OciError::io(path))?;
    store.put_blob(file, None)
}

fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Store every blob of a package and its manifest; tag it `name:version`.
/// Returns the manifest descriptor.
pub fn build(store: &Store, pkg: Package<'_>) -> Result<Descriptor, OciError> {
    let _writing = store.writer()?;
    let module_bytes = std::fs::read(pkg.module).map_err(OciError::io(pkg.module))?;
    let os = match module_bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => "wasip1",
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => "wasip2",
        _ => {
            return Err(OciError::Malformed {
                what: pkg.module.display().to_string(),
                message: "not a WebAssembly module".into(),
            });
        }
    };
    let module_title = pkg
        .module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.wasm", pkg.name));
    let (mdigest, msize) = store.put_bytes(&module_bytes)?;
    let mut layers = vec![layer(
        media::WASM_LAYER,
        mdigest,
        msize,
        vec![(media::TITLE, module_title.clone())],
    )];
    let mut models = pkg.models.clone();
    let mut paths = std::collections::HashSet::new();
    for f in &pkg.files {
        check_filepath(&f.path)?;
        if !paths.insert(f.path.as_str()) {
            return Err(OciError::Malformed {
                what: format!("file path `{}`", f.path),
                message: "two files of the package have this path".into(),
            });
        }
        let (digest, size) = store_file(store, f.source)?;
        let mut ann = vec![
            (media::TITLE, base_name(&f.path)),
            (media::FILEPATH, f.path.clone()),
        ];
        if let Some(name) = &f.preload {
            ann.push((media::PRELOAD, name.clone()));
            if let Some(m) = models.iter_mut().find(|m| &m.name == name) {
                m.digest = digest.to_string();
                m.path = f.path.clone();
            }
        }
        layers.push(layer(f.kind.media_type(), digest, size, ann));
    }
    let config = WasmConfig {
        created: pkg.created.clone(),
        architecture: "wasm".into(),
        os: os.into(),
        layer_digests: layers.iter().map(|l| l.digest().to_string()).collect(),
        config: Some(ProcessConfig {
            entrypoint: vec![format!("/{module_title}")],
            cmd: pkg.args.clone(),
        }),
        weft: WeftSection {
            version: 1,
            module: module_title,
            args: pkg.args.clone(),
            models,
        },
    };
    let config_bytes = serde_json::to_vec(&config).map_err(|e| OciError::Malformed {
        what: "config".into(),
        message: e.to_string(),
    })?;
    let (cdigest, csize) = store.put_bytes(&config_bytes)?;
    let mut annotations: HashMap<String, String> = [
        (media::TITLE, pkg.name.clone()),
        (media::VERSION, pkg.version.clone()),
        (media::CREATED, pkg.created.clone()),
        (media::ARTIFACT, media::ARTIFACT_V1.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(d) = &pkg.description {
        annotations.insert(media::DESCRIPTION.into(), d.clone());
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::Other(media::WASM_CONFIG.into()),
            csize,
            cdigest,
        ))
        .layers(layers)
        .annotations(annotations)
        .build()
        .map_err(|e| OciError::Malformed {
            what: "manifest".into(),
            message: e.to_string(),
        })?;
    let bytes = serde_json::to_vec(&manifest).map_err(|e| OciError::Malformed {
        what: "manifest".into(),
        message: e.to_string(),
    })?;
    let (digest, size) = store.put_bytes(&bytes)?;
    let desc = Descriptor::new(MediaType::ImageManifest, size, digest);
    store.tag(&format!("{}:{}", pkg.name, pkg.version), &desc)?;
    Ok(desc)
}

/// A model module read back from the store.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: WasmConfig,
}

impl Artifact {
    /// Resolve a reference and check it is a Weft model module.
    pub fn open(store: &Store, reference: &str) -> Result<Artifact, OciError> {
        let desc = store.resolve(reference)?;
        let not_weft = |reason: String| OciError::NotWeftArtifact {
            reference: reference.into(),
            reason,
        };
        if *desc.media_type() != MediaType::ImageManifest {
            return Err(not_weft(format!(
                "it is a {}, not an image manifest",
                desc.media_type()
            )));
        }
        let manifest = store.manifest(&desc)?;
        let config_type = manifest.config().media_type().to_string();
        if config_type != media::WASM_CONFIG {
            return Err(not_weft(format!(
                "its config is {config_type}, not {}",
                media::WASM_CONFIG
            )));
        }
        check_files(&manifest)?;
        let config: WasmConfig =
            serde_json::from_slice(&store.read_metadata(manifest.config().digest())?)
                .map_err(|e| not_weft(format!("its config has no valid `weft` section: {e}")))?;
        Ok(Artifact {
            manifest_digest: desc.digest().clone(),
            manifest,
            config,
        })
    }

    /// The module layer.
    pub fn module_layer(&self) -> Result<&Descriptor, OciError> {
        self.manifest
            .layers()
            .iter()
            .find(|l| l.media_type().to_string() == media::WASM_LAYER)
            .ok_or_else(|| OciError::NotWeftArtifact {
                reference: self.manifest_digest.to_string(),
                reason: "it has no application/wasm layer".into(),
            })
    }

    /// Layers with a file path, as (path, descriptor).
    pub fn files(&self) -> impl Iterator<Item = (&str, &Descriptor)> {
        self.manifest.layers().iter().filter_map(|l| {
            l.annotations()
                .as_ref()?
                .get(media::FILEPATH)
                .map(|p| (p.as_str(), l))
        })
    }
}

impl Artifact {
    /// A read-only directory holding the artifact's files at their
    /// `org.cncf.model.filepath`, hard-linked from the blobs (copied where
    /// linking fails). Built in a temporary directory and renamed into
    /// `<store>/bundles/<manifest hex>`, so it is complete or absent.
    /// Nothing is ever written through a file that exists: every file is
    /// created new (a path used twice is refused by [`check_files`]
    /// first), so a bundle can never reach into a blob of the store.
    pub fn materialize(&self, store: &Store) -> Result<std::path::PathBuf, OciError> {
        let bundles = store.root().join("bundles");
        let target = bundles.join(self.manifest_digest.digest());
        if target.is_dir() {
            return Ok(target);
        }
        std::fs::create_dir_all(&bundles).map_err(OciError::io(&bundles))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&bundles)
            .map_err(OciError::io(&bundles))?;
        check_files(&self.manifest)?;
        for (path, layer) in self.files() {
            let dest = tmp.path().join(path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(OciError::io(parent))?;
            }
            let blob = store.blob_path(layer.digest());
            if !blob.is_file() {
                return Err(OciError::MissingBlob(layer.digest().to_string()));
            }
            match std::fs::hard_link(&blob, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(OciError::Io {
                        path: dest,
                        source: e,
                    });
                }
                // Another file system, or no links: copy into a new file.
                Err(_) => {
                    let mut from = std::fs::File::open(&blob).map_err(OciError::io(&blob))?;
                    let mut to = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&dest)
                        .map_err(OciError::io(&dest))?;
                    std::io::copy(&mut from, &mut to).map_err(OciError::io(&dest))?;
                }
            }
        }
        let tmp = tmp.keep();
        match std::fs::rename(&tmp, &target) {
            Ok(()) => Ok(target),
            // Another process materialized it first: use theirs.
            Err(_) if target.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(target)
            }
            Err(e) => Err(OciError::Io {
                path: target,
                source: e,
            }),
        }
    }
}

/// Media type of the classic variant's config and layer.
pub const CLASSIC_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const CLASSIC_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// `dev.weft.artifact` of the classic variant.
pub const ARTIFACT_V1_CLASSIC: &str = "module.v1+classic";

/// Write a deterministic tar entry (owner root, mtime 0): the same files
/// always give the same layer digest.
fn tar_file(
    tar: &mut tar::Builder<impl std::io::Write>,
    path: &str,
    size: u64,
    data: impl std::io::Read,
) -> Result<(), OciError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
        .map_err(|e| OciError::Malformed {
            what: format!("tar entry {path}"),
            message: e.to_string(),
        })
}

impl Artifact {
    /// Build the classic-image variant (for containerd older than 1.6.25,
    /// which rejects non-tar layers): one uncompressed tar layer holding the
    /// module at `/<module>`, every file at its artifact path and the config
    /// as `/weft.json`; an OCI image config with `os`/`architecture` of the
    /// wasm platform and the module as entrypoint. Tagged `reference`.
    pub fn build_classic(&self, store: &Store, reference: &str) -> Result<Descriptor, OciError> {
        let _writing = store.writer()?;
        let blobs = store.root().join("blobs").join("sha256");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-classic-")
            .tempfile_in(&blobs)
            .map_err(OciError::io(&blobs))?;
        {
            let mut tar = tar::Builder::new(tmp.as_file());
            let module = self.module_layer()?;
            let open = |d: &Descriptor| {
                let p = store.blob_path(d.digest());
                std::fs::File::open(&p).map_err(OciError::io(p))
            };
            tar_file(
                &mut tar,
                &self.config.weft.module,
                module.size(),
                open(module)?,
            )?;
            for (path, layer) in self.files() {
                check_filepath(path)?;
                tar_file(&mut tar, path, layer.size(), open(layer)?)?;
            }
            let config =
                serde_json::to_vec_pretty(&self.config).map_err(|e| OciError::Malformed {
                    what: "config".into(),
                    message: e.to_string(),
                })?;
            tar_file(&mut tar, "weft.json", config.len() as u64, &config[..])?;
            tar.into_inner()
                .and_then(|f| f.sync_all())
                .map_err(OciError::io(tmp.path()))?;
        }
        let file = std::fs::File::open(tmp.path()).map_err(OciError::io(tmp.path()))?;
        let (layer_digest, layer_size) = store.put_blob(file, None)?;
        let entry = format!("/{}", self.config.weft.module);
        let image_config = serde_json::json!({
            "created": self.config.created,
            "architecture": "wasm",
            "os": self.config.os,
            "config": {
                "Entrypoint": [entry],
                "Cmd": self.config.weft.args,
                "Labels": { media::ARTIFACT: ARTIFACT_V1_CLASSIC },
            },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest.to_string()] },
        });
        let (config_digest, config_size) =
            store.put_bytes(&serde_json::to_vec(&image_config).map_err(|e| {
                OciError::Malformed {
                    what: "classic config".into(),
                    message: e.to_string(),
                }
            })?)?;
        let mut layer = Descriptor::new(
            MediaType::Other(CLASSIC_LAYER.into()),
            layer_size,
            layer_digest,
        );
        layer.set_annotations(Some(
            [(media::TITLE.to_string(), "rootfs.tar".to_string())]
                .into_iter()
                .collect(),
        ));
        let mut annotations = self.manifest.annotations().clone().unwrap_or_default();
        annotations.insert(media::ARTIFACT.into(), ARTIFACT_V1_CLASSIC.into());
        annotations.insert("dev.weft.source".into(), self.manifest_digest.to_string());
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::Other(CLASSIC_CONFIG.into()),
                config_size,
                config_digest,
            ))
            .layers(vec![layer])
            .annotations(annotations)
            .build()
            .map_err(|e| OciError::Malformed {
                what: "classic manifest".into(),
                message: e.to_string(),
            })?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| OciError::Malformed {
            what: "classic manifest".into(),
            message: e.to_string(),
        })?;
        let (digest, size) = store.put_bytes(&bytes)?;
        let desc = Descriptor::new(MediaType::ImageManifest, size, digest);
        store.tag(reference, &desc)?;
        Ok(desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_manifest(store: &Store, config_type: &str, config: &[u8], reference: &str) {
        let (cd, cs) = store.put_bytes(config).unwrap();
        let (ld, ls) = store.put_bytes(b"layer").unwrap();
        let m = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::Other(config_type.into()),
                cs,
                cd,
            ))
            .layers(vec![Descriptor::new(MediaType::ImageLayerGzip, ls, ld)])
            .build()
            .unwrap();
        let (md, ms) = store.put_bytes(&serde_json::to_vec(&m).unwrap()).unwrap();
        store
            .tag(
                reference,
                &Descriptor::new(MediaType::ImageManifest, ms, md),
            )
            .unwrap();
    }

    #[test]
    fn a_plain_container_image_is_not_a_weft_module() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        tag_manifest(
            &store,
            "application/vnd.oci.image.config.v1+json",
            br#"{"architecture":"amd64","os":"linux"}"#,
            "nginx:1",
        );
        let err = Artifact::open(&store, "nginx:1").unwrap_err().to_string();
        assert!(err.contains("is not a Weft model module"), "{err}");
        assert!(
            err.contains("application/vnd.oci.image.config.v1+json"),
            "{err}"
        );
        // A wasm image without our section (say, a plain runwasi image).
        tag_manifest(
            &store,
            media::WASM_CONFIG,
            br#"{"architecture":"wasm","os":"wasip1"}"#,
            "hello:1",
        );
        let err = Artifact::open(&store, "hello:1").unwrap_err().to_string();
        assert!(err.contains("no valid `weft` section"), "{err}");
    }

    #[test]
    fn classic_variant_is_one_deterministic_tar_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let weights = dir.path().join("w.onnx");
        std::fs::write(&weights, b"weights").unwrap();
        let pkg = Package {
            name: "m".into(),
            version: "1".into(),
            description: None,
            created: "2026-01-01T00:00:00Z".into(),
            module: &module,
            args: vec!["--x".into()],
            files: vec![PackFile {
                source: &weights,
                path: "models/w.onnx".into(),
                kind: FileKind::Weights,
                preload: Some("w".into()),
            }],
            models: vec![],
        };
        build(&store, pkg).unwrap();
        let art = Artifact::open(&store, "m:1").unwrap();
        let a = art.build_classic(&store, "m:1-classic").unwrap();
        let b = art.build_classic(&store, "m:1-classic").unwrap();
        assert_eq!(a.digest(), b.digest(), "classic build must be reproducible");
        let manifest = store.manifest(&a).unwrap();
        assert_eq!(manifest.config().media_type().to_string(), CLASSIC_CONFIG);
        assert_eq!(manifest.layers().len(), 1);
        let layer = &manifest.layers()[0];
        assert_eq!(layer.media_type().to_string(), CLASSIC_LAYER);
        let config: serde_json::Value =
            serde_json::from_slice(&store.read_blob(manifest.config().digest()).unwrap()).unwrap();
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["config"]["Entrypoint"][0], "/m.wasm");
        assert_eq!(config["config"]["Cmd"][0], "--x");
        assert_eq!(config["rootfs"]["diff_ids"][0], layer.digest().to_string());
        let tar_bytes = store.read_blob(layer.digest()).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["m.wasm", "models/w.onnx", "weft.json"]);
        // The classic variant is not itself a runnable Weft artifact.
        assert!(Artifact::open(&store, "m:1-classic").is_err());
    }

    fn manifest_with(paths: &[&str]) -> ImageManifest {
        let layers: Vec<Descriptor> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let digest: Digest = format!("sha256:{:064x}", i).parse().unwrap();
                layer(
                    media::MODEL_WEIGHT,
                    digest,
                    1,
                    vec![(media::FILEPATH, p.to_string())],
                )
            })
            .collect();
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(Descriptor::new(
                MediaType::Other(media::WASM_CONFIG.into()),
                2,
                format!("sha256:{:064x}", 99).parse::<Digest>().unwrap(),
            ))
            .layers(layers)
            .build()
            .unwrap()
    }

    #[test]
    fn a_path_used_twice_or_as_a_file_and_a_directory_is_refused() {
        check_files(&manifest_with(&["a.onnx", "models/b.onnx", "models/c"])).unwrap();
        let e = check_files(&manifest_with(&["w.onnx", "w.onnx"])).unwrap_err();
        assert!(e.to_string().contains("two layers"), "{e}");
        let e = check_files(&manifest_with(&["m", "m/x.onnx"])).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(check_files(&manifest_with(&["../etc/passwd"])).is_err());
    }

    #[test]
    fn file_paths_must_stay_inside_the_artifact() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b"] {
            assert!(check_filepath(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["model.onnx", "models/det.onnx", "a/b/c.txt"] {
            assert!(check_filepath(good).is_ok(), "{good:?} refused");
        }
    }
}
