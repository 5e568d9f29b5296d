//! On-disk cache of compiled (Cranelift) modules and components.
//!
//! The key is the SHA-256 of the wasm bytes plus a hash of every engine
//! setting that affects code generation (wasmtime's
//! `precompile_compatibility_hash`), so a module compiled with fuel metering
//! is never loaded by an engine without it. Entries are written to a
//! temporary file, fsynced and renamed into place: a reader sees a whole
//! entry or none.

use crate::error::RuntimeError;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;

#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// What the cache did for one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded compiled code from disk; Cranelift did not run.
    Hit,
    /// Compiled and stored.
    Miss,
    /// Caching is off.
    Disabled,
}

impl ModuleCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The platform's default: `$XDG_CACHE_HOME/weft/compiled` or similar.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("weft").join("compiled"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file for a module digest under this engine's settings.
    pub fn path(&self, engine: &Engine, wasm_digest: &str) -> PathBuf {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{wasm_digest}-{:016x}.cwasm", h.finish()))
    }

    /// Mark an entry as just used (its modification time), so
    /// [`prune`](Self::prune) keeps the entries in use.
    pub fn touch(&self, path: &Path) {
        if let Ok(f) = std::fs::File::options().write(true).open(path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Delete the least recently used entries until the cache holds at most
    /// `max_bytes`; returns how many bytes were freed. Files that are not
    /// cache entries are left alone.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<u64> {
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| {
                let e = e.ok()?;
                let path = e.path();
                if path.extension()? != "cwasm" {
                    return None;
                }
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), path))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.0);
        let mut freed = 0;
        for (_, size, path) in entries {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::debug!(path = %path.display(), size, "pruned compile-cache entry");
                total -= size;
                freed += size;
            }
        }
        Ok(freed)
    }

    /// Store compiled bytes atomically.
    pub fn store(&self, path: &Path, compiled: &[u8]) -> Result<(), RuntimeError> {
        let io = |source| RuntimeError::Cache {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(compiled).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn prune_drops_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::new(dir.path());
        let now = SystemTime::now();
        for (name, age) in [("old", 30), ("mid", 20), ("new", 10)] {
            let p = dir.path().join(format!("{name}.cwasm"));
            cache.store(&p, &[0u8; 100]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), [0u8; 500]).unwrap();
        // Using "old" makes it the most recent.
        cache.touch(&dir.path().join("old.cwasm"));
        assert_eq!(cache.prune(250).unwrap(), 100);
        let left = |n: &str| dir.path().join(n).exists();
        assert!(!left("mid.cwasm") && left("new.cwasm") && left("old.cwasm"));
        assert!(left("notes.txt"), "not a cache entry");
        assert_eq!(cache.prune(1000).unwrap(), 0);
    }
}
