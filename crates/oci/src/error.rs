use std::path::PathBuf;

/// Errors of the artifact format and the local store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    #[error("store {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("blob has digest {actual}, expected {expected}; nothing was stored")]
    DigestMismatch { expected: String, actual: String },
    #[error("`{0}` is not a valid digest (expected sha256:<64 hex digits>)")]
    BadDigest(String),
    #[error("blob {0} is not in the store")]
    MissingBlob(String),
    #[error("no image tagged `{reference}` in the store; `weft images` lists what is there")]
    UnknownReference { reference: String },
    #[error("`{0}` is not a valid reference; use NAME[:TAG], e.g. ocr:1.0")]
    BadReference(String),
    #[error("{reference} is not a Weft model module: {reason}")]
    NotWeftArtifact { reference: String, reason: String },
    #[error("registry request for {reference} failed: {message}")]
    Registry { reference: String, message: String },
    #[error(
        "{what} runs past the {size} bytes its descriptor says; the download was stopped and nothing was stored"
    )]
    Oversized { what: String, size: u64 },
    #[error("malformed {what}: {message}")]
    Malformed { what: String, message: String },
}

impl OciError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }
}
