//! Errors of the agent, each naming what is wrong and how to fix it.

use std::path::{Path, PathBuf};

/// A configuration the agent refuses. It keeps running what it ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading the agent config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}not valid TOML for a weft agent config: {message}", shown(path))]
    Syntax {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("{}{}: {message}", shown(path), if module == "agent" { "[agent]".to_string() } else if module.starts_with('[') { module.clone() } else { format!("module '{module}'") })]
    Invalid {
        #[doc(hidden)]
        module: String,
        message: String,
        #[doc(hidden)]
        path: Option<PathBuf>,
    },
}

fn shown(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// The same error, saying which file it is about.
    pub fn in_file(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: Some(file.to_owned()),
                message,
            },
            ConfigError::Invalid {
                module, message, ..
            } => ConfigError::Invalid {
                module,
                message,
                path: Some(file.to_owned()),
            },
            e => e,
        }
    }
}

/// Why a version of a module was not taken, or stopped being served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("downloading {reference}")]
    Download {
        reference: String,
        #[source]
        source: weft_oci::OciError,
    },
    #[error("{reference} is not a Weft model module")]
    NotModule {
        reference: String,
        #[source]
        source: weft_oci::OciError,
    },
    #[error("verifying {digest} in the store")]
    Verify {
        digest: String,
        #[source]
        source: weft_module::ModuleError,
    },
    #[error("version {digest} does not start")]
    Start {
        digest: String,
        #[source]
        source: weft_module::ModuleError,
    },
    #[error("health check failed: {0}")]
    Health(String),
    #[error("the store")]
    Store(#[source] weft_oci::OciError),
}

impl UpdateError {
    /// Worth trying the same version again later (the network or the disk
    /// may recover); otherwise the version is refused for good.
    pub fn is_transient(&self) -> bool {
        matches!(self, UpdateError::Download { .. } | UpdateError::Store(_))
    }
}

/// The error and its causes on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let s = cause.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = cause.source();
    }
    out
}
