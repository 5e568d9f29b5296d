//! Artifact references to digests.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an artifact did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotModule(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Invalid(String),
}

impl ResolveError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::NotFound(_) => "ArtifactNotFound",
            ResolveError::NotModule(_) => "NotAModelModule",
            ResolveError::Unreachable(_) => "RegistryUnreachable",
            ResolveError::Invalid(_) => "InvalidArtifact",
        }
    }
}

/// `registry/repo:tag` or `registry/repo@sha256:...` to the digest it
/// names now.
pub trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, artifact: &'a str) -> BoxFuture<'a, Result<String, ResolveError>>;
}

/// The real one: asks the registry (credentials from the docker config of
/// the operator's user; loopback registries over plain HTTP).
pub struct RegistryResolver {
    /// Plain HTTP to registries (loopback ones always may).
    pub plain_http: bool,
    /// Accept any TLS certificate.
    pub skip_tls_verify: bool,
}

impl Resolver for RegistryResolver {
    fn resolve<'a>(&'a self, artifact: &'a str) -> BoxFuture<'a, Result<String, ResolveError>> {
        Box::pin(async move {
            let reference = weft_oci::parse_reference(artifact)
                .map_err(|e| ResolveError::Invalid(e.to_string()))?;
            if let Some(d) = reference.digest() {
                return Ok(d.to_string());
            }
            let remote = weft_oci::Remote::new(
                &reference,
                weft_oci::RemoteOptions {
                    plain_http: self.plain_http,
                    skip_tls_verify: self.skip_tls_verify,
                    auth: weft_oci::docker_auth(reference.resolve_registry()),
                    ..Default::default()
                },
            )
            .map_err(|e| ResolveError::Invalid(e.to_string()))?;
            match remote.inspect(&reference).await {
                Ok((digest, _, _)) => Ok(digest),
                Err(e @ weft_oci::OciError::NotWeftArtifact { .. }) => {
                    Err(ResolveError::NotModule(e.to_string()))
                }
                Err(e) => {
                    let text = format!("{e}");
                    let lower = text.to_ascii_lowercase();
                    if ["unknown", "not found", "404"]
                        .iter()
                        .any(|w| lower.contains(w))
                    {
                        Err(ResolveError::NotFound(format!(
                            "{artifact} does not exist: {text}"
                        )))
                    } else {
                        Err(ResolveError::Unreachable(text))
                    }
                }
            }
        })
    }
}

/// The artifact's repository at a digest: what pods and devices pull.
pub fn pinned(artifact: &str, digest: &str) -> String {
    let repo = match artifact.rsplit_once('@') {
        Some((r, _)) => r,
        None => {
            // `host:port/repo:tag`: the tag is after the last '/'.
            match artifact.rsplit_once('/') {
                Some((head, last)) => {
                    return format!("{head}/{}@{digest}", last.split(':').next().unwrap_or(last));
                }
                None => artifact.split(':').next().unwrap_or(artifact),
            }
        }
    };
    format!("{repo}@{digest}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_keeps_the_registry_port() {
        let d = "sha256:abc";
        assert_eq!(
            super::pinned("reg.io:5000/team/ocr:stable", d),
            "reg.io:5000/team/ocr@sha256:abc"
        );
        assert_eq!(
            super::pinned("reg.io/ocr@sha256:old", d),
            "reg.io/ocr@sha256:abc"
        );
        assert_eq!(super::pinned("ocr:1", d), "ocr@sha256:abc");
    }
}
