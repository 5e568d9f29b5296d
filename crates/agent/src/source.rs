//! Where a module's versions come from, and how they get into the store.
//!
//! A [`Source`] answers two questions: which version (manifest digest)
//! should run now, and how to put that version into the agent's store. The
//! agent has two: a registry ([`RegistrySource`]: a tag it watches, or a
//! digest it pins) and its own store ([`StoreSource`]: a reference that
//! `weft copy` put there, for air-gapped devices). The cluster (a
//! `ModelDeployment` assigned to this device) is meant to be a third: it
//! answers the same two questions, and the agent's offline-first
//! behaviour (keep what runs when a source cannot be reached) comes for
//! free because only a source's answer, never its absence, changes what
//! runs.

use crate::error::UpdateError;
use std::future::Future;
use std::pin::Pin;
use weft_oci::registry::Reference;
use weft_oci::{Remote, RemoteOptions, Store};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source gave no answer. What runs is left alone either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub message: String,
    /// The source could not be reached at all (as opposed to answering
    /// "no such version" or "that is not a model module").
    pub unreachable: bool,
}

impl SourceError {
    fn from_oci(e: &weft_oci::OciError) -> SourceError {
        let message = crate::error::chain(e);
        SourceError {
            unreachable: !matches!(e, weft_oci::OciError::NotWeftArtifact { .. })
                && !answered(&message),
            message,
        }
    }
}

/// Whether a registry error's text says the registry answered (no such
/// version, no access) rather than that it could not be reached. Words are
/// matched whole: a port such as `40381` in the reference or URL is not a
/// 403.
fn answered(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|w| w == ["not", "found"])
        || words
            .iter()
            .any(|w| ["unknown", "denied", "unauthorized", "401", "403", "404"].contains(w))
}

/// What a module should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `sha256:` of the manifest.
    pub digest: String,
    /// The artifact's version annotation, when the source knows it.
    pub version: Option<String>,
}

pub trait Source: Send + Sync {
    /// The digest the module should run now. An `Err` leaves what runs
    /// alone; the agent retries with backoff.
    fn resolve(&self) -> BoxFuture<'_, Result<Desired, SourceError>>;
    /// Put `digest` into `store` (a no-op when it is there).
    fn fetch<'a>(
        &'a self,
        store: &'a Store,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<(), UpdateError>>;
    /// Whether the answer of `resolve` can change (a tag, a local
    /// reference), so it is asked again every poll interval.
    fn watches(&self) -> bool;
}

/// A registry: `host/repo:tag` is watched, `host/repo@sha256:...` pinned.
pub struct RegistrySource {
    reference: Reference,
    remote: Remote,
}

impl RegistrySource {
    pub fn new(reference: &str, options: RemoteOptions) -> Result<RegistrySource, String> {
        let reference = weft_oci::parse_reference(reference).map_err(|e| e.to_string())?;
        let remote = Remote::new(&reference, options).map_err(|e| e.to_string())?;
        Ok(RegistrySource { reference, remote })
    }

    fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }
}

impl Source for RegistrySource {
    fn resolve(&self) -> BoxFuture<'_, Result<Desired, SourceError>> {
        Box::pin(async move {
            if let Some(d) = self.reference.digest() {
                return Ok(Desired {
                    digest: d.to_string(),
                    version: None,
                });
            }
            let (digest, manifest, _) = self
                .remote
                .inspect(&self.reference)
                .await
                .map_err(|e| SourceError::from_oci(&e))?;
            Ok(Desired {
                digest,
                version: manifest
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(weft_oci::media::VERSION).cloned()),
            })
        })
    }

    fn fetch<'a>(
        &'a self,
        store: &'a Store,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<(), UpdateError>> {
        Box::pin(async move {
            // By digest: exactly the version resolved, even if the tag moved
            // since.
            let at = self.at(digest);
            match self.remote.pull(store, &at).await {
                Ok(_) => Ok(()),
                Err(e @ weft_oci::OciError::NotWeftArtifact { .. }) => {
                    Err(UpdateError::NotModule {
                        reference: self.reference.whole(),
                        source: e,
                    })
                }
                Err(e) => Err(UpdateError::Download {
                    reference: self.reference.whole(),
                    source: e,
                }),
            }
        })
    }

    fn watches(&self) -> bool {
        self.reference.digest().is_none()
    }
}

/// A reference in the agent's own store (copied there with `weft copy`).
pub struct StoreSource {
    reference: String,
    store: Store,
}

impl StoreSource {
    pub fn new(reference: &str, store: Store) -> StoreSource {
        StoreSource {
            reference: reference.into(),
            store,
        }
    }
}

impl Source for StoreSource {
    fn resolve(&self) -> BoxFuture<'_, Result<Desired, SourceError>> {
        Box::pin(async move {
            let desc = self
                .store
                .resolve(&self.reference)
                .map_err(|e| SourceError {
                    message: crate::error::chain(&e),
                    unreachable: false,
                })?;
            Ok(Desired {
                digest: desc.digest().to_string(),
                version: None,
            })
        })
    }

    fn fetch<'a>(
        &'a self,
        store: &'a Store,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<(), UpdateError>> {
        Box::pin(async move {
            let d: weft_oci::Digest = digest
                .parse()
                .map_err(|_| UpdateError::Store(weft_oci::OciError::BadDigest(digest.into())))?;
            if store.has_blob(&d) {
                Ok(())
            } else {
                Err(UpdateError::Store(weft_oci::OciError::MissingBlob(
                    digest.into(),
                )))
            }
        })
    }

    fn watches(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::answered;

    #[test]
    fn a_refused_connection_is_unreachable_whatever_the_port() {
        // A port with 403 in it once read as "forbidden".
        let refused = "registry request for 127.0.0.1:40381/tiny:stable failed: error sending \
            request for url (http://127.0.0.1:40381/v2/): client error (Connect): tcp connect \
            error: Connection refused (os error 111)";
        assert!(!answered(refused));
        assert!(!answered(
            "registry request for 127.0.0.1:14040/x:1 failed: dns error"
        ));
        for said in [
            "manifest unknown",
            "404 Not Found",
            "HTTP status client error (401 Unauthorized)",
            "status 403",
            "requested access to the resource is denied",
            "tag not found",
        ] {
            assert!(answered(said), "{said}");
        }
    }
}
