//! The local content store: an OCI image layout directory.
//!
//! Blobs are written to a temporary file inside `blobs/`, hashed while
//! written, fsynced, checked against the expected digest and renamed into
//! place; `index.json` is replaced the same way under an exclusive file
//! lock. A reader never sees a partial blob or index, and a failed or
//! interrupted write leaves only a temporary file that `gc` removes.

use crate::error::OciError;
use crate::media;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An OCI image layout directory used as Weft's content store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while blobs are written that are not tagged yet (a build, a pull):
/// `gc` waits for every such writer, so it never collects their blobs.
pub struct WriteGuard {
    _lock: File,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

const LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const TMP_PREFIX: &str = ".tmp-";
/// Largest manifest or config read, from the store or a registry (real
/// ones are a few KiB; containerd's own limit is 4 MiB).
pub const MAX_METADATA: u64 = 4 << 20;

/// `NAME` becomes `NAME:latest`; a reference keeps its tag or digest.
pub fn normalize_reference(reference: &str) -> Result<String, OciError> {
    let r = reference.trim();
    let valid = !r.is_empty()
        && !r.contains(char::is_whitespace)
        && !r.starts_with([':', '@', '/'])
        && !r.ends_with([':', '@', '/']);
    if !valid {
        return Err(OciError::BadReference(reference.into()));
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    Ok(if last.contains(':') || last.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    })
}

fn sha256_digest(hex: &str) -> Result<Digest, OciError> {
    Digest::from_str(&format!("sha256:{hex}")).map_err(|_| OciError::BadDigest(hex.into()))
}

impl Store {
    /// `$XDG_DATA_HOME/weft/store` or the platform's equivalent.
    pub fn default_root() -> Option<PathBuf> {
        dirs::data_dir().map(|d| d.join("weft").join("store"))
    }

    /// Open a store, creating an empty layout if the directory is new.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, OciError> {
        let root = root.into();
        let layout = root.join("oci-layout");
        if layout.exists() {
            let text = std::fs::read_to_string(&layout).map_err(OciError::io(&layout))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| OciError::NotAStore {
                    path: root.clone(),
                    reason: format!("oci-layout is not JSON: {e}"),
                })?;
            if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                return Err(OciError::NotAStore {
                    path: root,
                    reason: "oci-layout does not say imageLayoutVersion 1.0.0".into(),
                });
            }
        } else if root.exists()
            && std::fs::read_dir(&root)
                .map_err(OciError::io(&root))?
                .next()
                .is_some()
        {
            return Err(OciError::NotAStore {
                path: root,
                reason: "the directory is not empty and has no oci-layout file".into(),
            });
        }
        let store = Store { root };
        std::fs::create_dir_all(store.blobs_dir()).map_err(OciError::io(store.blobs_dir()))?;
        if !layout.exists() {
            store.write_atomic(&layout, LAYOUT.as_bytes())?;
        }
        if !store.index_path().exists() {
            store.write_index(&ImageIndex::default())?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.digest())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stream a blob in, hashing while writing. With `expected`, a content
    /// mismatch stores nothing. Returns the digest and size.
    pub fn put_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), OciError> {
        let dir = self.blobs_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(OciError::io(&dir))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(OciError::io(tmp.path()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(OciError::io(tmp.path()))?;
            size += n as u64;
        }
        let digest = sha256_digest(&hex::encode(hasher.finalize()))?;
        if let Some(expected) = expected
            && expected != &digest
        {
            return Err(OciError::DigestMismatch {
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let target = self.blob_path(&digest);
        if !target.exists() {
            tmp.as_file().sync_all().map_err(OciError::io(tmp.path()))?;
            tmp.persist(&target).map_err(|e| OciError::Io {
                path: target.clone(),
                source: e.error,
            })?;
        }
        Ok((digest, size))
    }

    /// Where an interrupted download of `digest` keeps its bytes, so the next
    /// try can resume with a Range request. Not a visible blob.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir()
            .join(format!("{TMP_PREFIX}partial-{}", digest.digest()))
    }

    /// Make a fully downloaded and verified partial file the blob `digest`
    /// (the caller hashed it while writing).
    pub fn commit_partial(&self, partial: &Path, digest: &Digest) -> Result<(), OciError> {
        File::open(partial)
            .and_then(|f| f.sync_all())
            .map_err(OciError::io(partial))?;
        std::fs::rename(partial, self.blob_path(digest)).map_err(OciError::io(partial))
    }

    /// Store bytes as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), OciError> {
        self.put_blob(bytes, None)
    }

    /// Read a whole (small) blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::MissingBlob(digest.to_string()),
            _ => OciError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != digest.digest() {
            return Err(OciError::DigestMismatch {
                expected: digest.to_string(),
                actual: format!("sha256:{actual}"),
            });
        }
        Ok(bytes)
    }

    /// Read a manifest or config blob: refused unread when it is over
    /// [`MAX_METADATA`] bytes, then verified like [`Store::read_blob`].
    pub fn read_metadata(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.blob_path(digest);
        let size = std::fs::metadata(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => OciError::MissingBlob(digest.to_string()),
                _ => OciError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?
            .len();
        if size > MAX_METADATA {
            return Err(OciError::Malformed {
                what: format!("blob {digest}"),
                message: format!(
                    "it is {size} bytes; manifests and configs over {MAX_METADATA} bytes are refused"
                ),
            });
        }
        self.read_blob(digest)
    }

    /// Hash a blob of any size as it is on disk and compare it with its
    /// name: what an agent does before it runs what it stored.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64, OciError> {
        let path = self.blob_path(digest);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::MissingBlob(digest.to_string()),
            _ => OciError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let mut hasher = Sha256::new();
        let n = std::io::copy(&mut file, &mut hasher).map_err(OciError::io(&path))?;
        let actual = hex::encode(hasher.finalize());
        if actual != digest.digest() {
            return Err(OciError::DigestMismatch {
                expected: digest.to_string(),
                actual: format!("sha256:{actual}"),
            });
        }
        Ok(n)
    }

    /// The manifest a descriptor points to.
    pub fn manifest(&self, desc: &Descriptor) -> Result<ImageManifest, OciError> {
        let bytes = self.read_metadata(desc.digest())?;
        ImageManifest::from_reader(&bytes[..]).map_err(|e| OciError::Malformed {
            what: format!("manifest {}", desc.digest()),
            message: e.to_string(),
        })
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), OciError> {
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.root)
            .map_err(OciError::io(&self.root))?;
        tmp.write_all(bytes).map_err(OciError::io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(OciError::io(tmp.path()))?;
        tmp.persist(path).map_err(|e| OciError::Io {
            path: path.into(),
            source: e.error,
        })?;
        Ok(())
    }

    fn read_index(&self) -> Result<ImageIndex, OciError> {
        let path = self.index_path();
        let file = File::open(&path).map_err(OciError::io(&path))?;
        ImageIndex::from_reader(file).map_err(|e| OciError::Malformed {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), OciError> {
        let text = serde_json::to_vec_pretty(index).map_err(|e| OciError::Malformed {
            what: "index".into(),
            message: e.to_string(),
        })?;
        self.write_atomic(&self.index_path(), &text)
    }

    /// Run `f` on the index under an exclusive lock, then write it back.
    fn update_index<T>(
        &self,
        f: impl FnOnce(&mut Vec<Descriptor>) -> Result<T, OciError>,
    ) -> Result<T, OciError> {
        let lock_path = self.root.join("index.lock");
        let lock = File::create(&lock_path).map_err(OciError::io(&lock_path))?;
        lock.lock().map_err(OciError::io(&lock_path))?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let out = f(&mut manifests)?;
        index.set_manifests(manifests);
        self.write_index(&index)?;
        Ok(out)
    }

    /// Point `reference` at a manifest (stored already), replacing any
    /// previous target of the same reference.
    pub fn tag(&self, reference: &str, manifest: &Descriptor) -> Result<(), OciError> {
        let reference = normalize_reference(reference)?;
        if !self.has_blob(manifest.digest()) {
            return Err(OciError::MissingBlob(manifest.digest().to_string()));
        }
        self.update_index(|entries| {
            entries.retain(|d| ref_name(d) != Some(reference.as_str()));
            let mut d = manifest.clone();
            let mut ann = d.annotations().clone().unwrap_or_default();
            ann.insert(media::REF_NAME.into(), reference.clone());
            d.set_annotations(Some(ann));
            entries.push(d);
            Ok(())
        })
    }

    /// The manifest descriptor tagged `reference`.
    pub fn resolve(&self, reference: &str) -> Result<Descriptor, OciError> {
        let reference = normalize_reference(reference)?;
        self.read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(reference.as_str()))
            .cloned()
            .ok_or(OciError::UnknownReference { reference })
    }

    /// Remove a tag; blobs stay until `gc`.
    pub fn untag(&self, reference: &str) -> Result<Descriptor, OciError> {
        let reference = normalize_reference(reference)?;
        self.update_index(|entries| {
            let pos = entries
                .iter()
                .position(|d| ref_name(d) == Some(reference.as_str()))
                .ok_or_else(|| OciError::UnknownReference {
                    reference: reference.clone(),
                })?;
            Ok(entries.remove(pos))
        })
    }

    /// Every tag and its manifest descriptor, sorted by reference.
    pub fn list(&self) -> Result<Vec<(String, Descriptor)>, OciError> {
        let mut out: Vec<(String, Descriptor)> = self
            .read_index()?
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|r| (r.to_string(), d.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Start a multi-blob write (shared lock): hold the guard until the
    /// result is tagged.
    pub fn writer(&self) -> Result<WriteGuard, OciError> {
        let path = self.root.join("gc.lock");
        let lock = File::create(&path).map_err(OciError::io(&path))?;
        lock.lock_shared().map_err(OciError::io(&path))?;
        Ok(WriteGuard { _lock: lock })
    }

    /// Delete every blob no index entry reaches, and stale temporary files.
    /// Waits for writers in progress (see [`Store::writer`]).
    pub fn gc(&self) -> Result<GcReport, OciError> {
        let gc_path = self.root.join("gc.lock");
        let gc_lock = File::create(&gc_path).map_err(OciError::io(&gc_path))?;
        gc_lock.lock().map_err(OciError::io(&gc_path))?;
        let lock_path = self.root.join("index.lock");
        let lock = File::create(&lock_path).map_err(OciError::io(&lock_path))?;
        lock.lock().map_err(OciError::io(&lock_path))?;
        let mut live: HashSet<String> = HashSet::new();
        for d in self.read_index()?.manifests() {
            live.insert(d.digest().digest().to_string());
            if *d.media_type() == MediaType::ImageManifest {
                let m = self.manifest(d)?;
                live.extend(crate::artifact::blobs(&m).map(|b| b.digest().digest().to_string()));
            }
        }
        let mut report = GcReport::default();
        let dir = self.blobs_dir();
        for entry in std::fs::read_dir(&dir).map_err(OciError::io(&dir))? {
            let entry = entry.map_err(OciError::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if live.contains(&name) {
                continue;
            }
            // A temporary file may belong to a write in progress (writes do
            // not take the lock): only reap ones an hour old.
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if name.starts_with(TMP_PREFIX) && age < std::time::Duration::from_secs(3600) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(entry.path()).map_err(OciError::io(entry.path()))?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
        // Bundles (materialized files) of manifests no longer tagged.
        let bundles = self.root.join("bundles");
        if let Ok(entries) = std::fs::read_dir(&bundles) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    std::fs::remove_dir_all(entry.path()).map_err(OciError::io(entry.path()))?;
                }
            }
        }
        Ok(report)
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a: &HashMap<String, String>| a.get(media::REF_NAME))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn references_get_latest_when_untagged() {
        assert_eq!(normalize_reference("ocr").unwrap(), "ocr:latest");
        assert_eq!(normalize_reference("ocr:1.0").unwrap(), "ocr:1.0");
        assert_eq!(
            normalize_reference("127.0.0.1:5000/team/ocr").unwrap(),
            "127.0.0.1:5000/team/ocr:latest"
        );
        assert!(normalize_reference("bad ref").is_err());
        assert!(normalize_reference("ocr:").is_err());
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let (_d, s) = store();
        let (digest, size) = s.put_bytes(b"hello").unwrap();
        assert_eq!(size, 5);
        assert_eq!(
            digest.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.read_blob(&digest).unwrap(), b"hello");
        // A mismatching expected digest stores nothing.
        let other = sha256_digest(&"0".repeat(64)).unwrap();
        let err = s.put_blob(&b"world"[..], Some(&other)).unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        let names: Vec<_> = std::fs::read_dir(s.blobs_dir())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(
            names.len(),
            1,
            "only the good blob, no temp files: {names:?}"
        );
    }

    /// Issue 21: manifests and configs were read whole whatever their size.
    #[test]
    fn manifests_and_configs_are_read_with_a_cap() {
        let (_d, s) = store();
        let (small, _) = s.put_bytes(b"{}").unwrap();
        assert_eq!(s.read_metadata(&small).unwrap(), b"{}");
        let (big, _) = s.put_bytes(&vec![b' '; MAX_METADATA as usize + 1]).unwrap();
        let e = s.read_metadata(&big).unwrap_err().to_string();
        assert!(e.contains("are refused"), "{e}");
        let desc = Descriptor::new(MediaType::ImageManifest, MAX_METADATA + 1, big);
        assert!(s.manifest(&desc).is_err());
    }

    #[test]
    fn a_corrupted_blob_is_detected_on_read() {
        let (_d, s) = store();
        let (digest, _) = s.put_bytes(b"model weights").unwrap();
        std::fs::write(s.blob_path(&digest), b"model weighTs").unwrap();
        assert!(matches!(
            s.read_blob(&digest).unwrap_err(),
            OciError::DigestMismatch { .. }
        ));
    }

    #[test]
    fn tag_resolve_untag_and_gc() {
        let (_d, s) = store();
        let (config, csize) = s.put_bytes(b"{}").unwrap();
        let (layer, lsize) = s.put_bytes(b"layer").unwrap();
        let (stray, _) = s.put_bytes(b"unreferenced").unwrap();
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::Other(media::WASM_CONFIG.into()),
                csize,
                config,
            ))
            .layers(vec![Descriptor::new(
                MediaType::Other(media::WASM_LAYER.into()),
                lsize,
                layer.clone(),
            )])
            .build()
            .unwrap();
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let (mdigest, msize) = s.put_bytes(&bytes).unwrap();
        let desc = Descriptor::new(MediaType::ImageManifest, msize, mdigest.clone());
        s.tag("ocr", &desc).unwrap();
        s.tag("ocr:1.0", &desc).unwrap();
        assert_eq!(s.resolve("ocr:latest").unwrap().digest(), &mdigest);
        assert_eq!(s.list().unwrap().len(), 2);
        let report = s.gc().unwrap();
        assert_eq!(report.blobs_removed, 1, "only the stray blob");
        assert!(!s.has_blob(&stray));
        assert!(s.has_blob(&layer));
        s.untag("ocr").unwrap();
        s.untag("ocr:1.0").unwrap();
        assert!(matches!(
            s.resolve("ocr").unwrap_err(),
            OciError::UnknownReference { .. }
        ));
        assert_eq!(s.gc().unwrap().blobs_removed, 3);
        // The layout is still a valid, empty store.
        let reopened = Store::open(s.root()).unwrap();
        assert!(reopened.list().unwrap().is_empty());
    }

    #[test]
    fn gc_waits_for_writers_so_untagged_new_blobs_survive() {
        let (_d, s) = store();
        let guard = s.writer().unwrap();
        let (digest, _) = s.put_bytes(b"being built").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        let gc = std::thread::spawn(move || {
            let report = s2.gc().unwrap();
            tx.send(()).unwrap();
            report
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "gc ran while a writer held the store"
        );
        // The writer tags its blob (as a build tags its manifest), then lets go.
        let desc = Descriptor::new(MediaType::ImageConfig, 11, digest.clone());
        s.tag("wip:1", &desc).unwrap();
        drop(guard);
        let report = gc.join().unwrap();
        assert_eq!(report.blobs_removed, 0);
        assert!(s.has_blob(&digest));
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), b"keep me").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, OciError::NotAStore { .. }), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("precious.txt")).unwrap(),
            b"keep me"
        );
    }
}
