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
