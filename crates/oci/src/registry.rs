//! Push and pull model modules to and from OCI registries.
//!
//! Built on `oci-client`'s streaming calls: blobs move between the registry
//! and the store in chunks (bounded memory), several at once, hashed while
//! written. Blobs the registry already has are skipped (HEAD); a download
//! keeps its partial file and resumes with a Range request on the next try
//! or the next run; transient failures are retried with backoff; a stalled
//! transfer times out. Plain HTTP is used only for loopback registries or
//! when asked (`plain_http`), and credentials travel over it to another
//! host only when that is asked too (`plain_http_credentials`); skipping
//! certificate checks is a separate choice (`skip_tls_verify`). Manifests
//! and configs are read with a size cap ([`crate::MAX_METADATA`]) and a
//! download stops as soon as a blob runs past its descriptor's size.

use crate::artifact::WasmConfig;
use crate::error::OciError;
use crate::media;
use crate::store::Store;
use futures_util::{StreamExt, TryStreamExt, stream};
pub use oci_client::Reference;
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::image::{Descriptor, Digest, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Blobs moved at once.
const PARALLEL: usize = 4;
/// Attempts per blob before giving up.
const ATTEMPTS: u32 = 5;

/// Receives transfer progress, blob by blob (a terminal UI draws bars from
/// it; nothing is reported when none is given).
pub trait Progress: Send + Sync {
    /// A blob transfer starts; `done` bytes are already there (a resume).
    fn started(&self, digest: &str, size: u64, done: u64);
    /// `bytes` more moved.
    fn advanced(&self, digest: &str, bytes: u64);
    /// The blob is complete and verified.
    fn finished(&self, digest: &str);
}

/// How to reach a registry.
#[derive(Clone)]
pub struct RemoteOptions {
    /// Talk plain HTTP to this registry (loopback registries always may).
    pub plain_http: bool,
    /// Accept any TLS certificate (a self-signed test registry).
    pub skip_tls_verify: bool,
    /// Send credentials over plain HTTP to a registry that is not on this
    /// machine (they cross the network in clear text).
    pub plain_http_credentials: bool,
    /// Extra CA certificates (PEM) to trust.
    pub ca_files: Vec<PathBuf>,
    pub auth: RegistryAuth,
    /// A transfer that receives nothing for this long fails (and is retried).
    pub stall_timeout: Duration,
    pub progress: Option<std::sync::Arc<dyn Progress>>,
    /// Cap downloads at this many bytes a second, all blobs together (an
    /// edge device on a metered or shared link); `None`: as fast as it goes.
    pub max_rate: Option<u64>,
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("plain_http", &self.plain_http)
            .field("skip_tls_verify", &self.skip_tls_verify)
            .field("plain_http_credentials", &self.plain_http_credentials)
            .field("ca_files", &self.ca_files)
            .field("stall_timeout", &self.stall_timeout)
            .field("max_rate", &self.max_rate)
            .finish_non_exhaustive()
    }
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            skip_tls_verify: false,
            plain_http_credentials: false,
            ca_files: Vec::new(),
            auth: RegistryAuth::Anonymous,
            stall_timeout: Duration::from_secs(30),
            progress: None,
            max_rate: None,
        }
    }
}

/// What a transfer did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransferReport {
    pub manifest_digest: String,
    /// Blobs moved.
    pub blobs_transferred: usize,
    /// Blobs the other side had already.
    pub blobs_skipped: usize,
    /// Downloads that continued from a partial file.
    pub blobs_resumed: usize,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: usize,
    /// Bytes moved over the network (blob contents only).
    pub bytes: u64,
}

/// Credentials for a registry from the docker configuration
/// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, with credential
/// helpers), so `docker login` credentials just work; anonymous otherwise.
pub fn docker_auth(registry: &str) -> RegistryAuth {
    match docker_credential::get_credential(registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
            RegistryAuth::Basic(u, p)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(t)) => RegistryAuth::Bearer(t),
        Err(e) => {
            tracing::debug!(registry, "no docker credentials ({e}); pulling anonymously");
            RegistryAuth::Anonymous
        }
    }
}

/// Whether a reference names a registry (`host.name/…`, `host:port/…`,
/// `localhost/…`) rather than a store-only name such as `ocr:1.0`.
pub fn names_registry(reference: &str) -> bool {
    reference
        .split_once('/')
        .is_some_and(|(host, _)| host.contains('.') || host.contains(':') || host == "localhost")
}

/// Parse `registry/repo[:tag|@digest]`.
pub fn parse_reference(s: &str) -> Result<Reference, OciError> {
    Reference::from_str(s).map_err(|_| OciError::BadReference(s.into()))
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.rsplit_once(':').map_or(registry, |(h, _)| h));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn remote_err(reference: &Reference, e: oci_client::errors::OciDistributionError) -> OciError {
    // The transport's own causes ("connection refused", "dns error") are in
    // the source chain; a user needs them.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    OciError::Registry {
        reference: reference.whole(),
        message,
    }
}

/// A registry client for one registry.
pub struct Remote {
    client: Client,
    /// The same TLS settings, for requests whose bodies must be capped
    /// while they arrive (oci-client reads a manifest whole).
    http: reqwest::Client,
    scheme: &'static str,
    options: RemoteOptions,
    throttle: Option<Throttle>,
}

/// A token bucket shared by every download of one [`Remote`]: bytes may go
/// into debt, and whoever takes them sleeps it off, so the rate holds over
/// any second whatever the chunk sizes.
struct Throttle {
    rate: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl Throttle {
    fn new(rate: u64) -> Throttle {
        Throttle {
            rate: rate.max(1) as f64,
            state: std::sync::Mutex::new((0.0, std::time::Instant::now())),
        }
    }

    /// Account for `n` bytes; wait until the rate allows them.
    async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            // At most one second of unused allowance carries over.
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
            s.1 = now;
            s.0 -= n as f64;
            (s.0 < 0.0).then(|| Duration::from_secs_f64(-s.0 / self.rate))
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

impl Remote {
    /// A client for the registry of `reference`.
    pub fn new(reference: &Reference, options: RemoteOptions) -> Result<Remote, OciError> {
        let registry = reference.resolve_registry().to_string();
        let loopback = is_loopback(&registry);
        let plain = options.plain_http || loopback;
        if plain
            && !loopback
            && !matches!(options.auth, RegistryAuth::Anonymous)
            && !options.plain_http_credentials
        {
            return Err(OciError::Registry {
                reference: registry,
                message: "refusing to send credentials over plain HTTP to a registry on another host (they would cross the network in clear text); use HTTPS, or allow it explicitly".into(),
            });
        }
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let mut certs = Vec::new();
        for path in &options.ca_files {
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: std::fs::read(path).map_err(OciError::io(path))?,
            });
        }
        let mut http = reqwest::Client::builder()
            .danger_accept_invalid_certs(options.skip_tls_verify)
            .connect_timeout(Duration::from_secs(10));
        let mut roots = Vec::new();
        for (path, cert) in options.ca_files.iter().zip(&certs) {
            roots.push(reqwest::Certificate::from_pem(&cert.data).map_err(|e| {
                OciError::Malformed {
                    what: format!("CA certificate {}", path.display()),
                    message: e.to_string(),
                }
            })?);
        }
        if !roots.is_empty() {
            http = http.tls_certs_merge(roots);
        }
        let http = http.build().map_err(|e| OciError::Registry {
            reference: registry.clone(),
            message: format!("setting up the HTTP client: {e}"),
        })?;
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: options.skip_tls_verify,
            use_monolithic_push: true,
            extra_root_certificates: certs,
            max_concurrent_upload: PARALLEL,
            max_concurrent_download: PARALLEL,
            connect_timeout: Some(Duration::from_secs(10)),
            ..ClientConfig::default()
        };
        // `Client::new` would fall back to a default configuration (no extra
        // CA, no certificate choice) on a bad one; say so instead.
        let client = Client::try_from(config).map_err(|e| OciError::Registry {
            reference: registry,
            message: format!("setting up the registry client: {e}"),
        })?;
        Ok(Remote {
            client,
            http,
            scheme: if plain { "http" } else { "https" },
            throttle: options.max_rate.map(Throttle::new),
            options,
        })
    }

    /// GET `url` with the registry's credentials for `r`, reading at most
    /// `max` bytes of the body: a longer body fails as soon as it is.
    async fn get_capped(
        &self,
        r: &Reference,
        url: &str,
        accept: &str,
        max: u64,
    ) -> Result<(bytes::Bytes, Option<String>), OciError> {
        let err = |message: String| OciError::Registry {
            reference: r.whole(),
            message,
        };
        let token = self
            .client
            .auth(r, &self.options.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| remote_err(r, e))?;
        let mut req = self.http.get(url).header(http::header::ACCEPT, accept);
        req = match (&token, &self.options.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        };
        let mut resp = req
            .send()
            .await
            .map_err(|e| err(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let mut text = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.len() > 4096 {
                    break;
                }
            }
            return Err(err(format!("GET {url}: {status}: {}", text.trim())));
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(err(format!(
                "{url} is {} bytes; manifests and configs over {max} bytes are refused",
                resp.content_length().unwrap_or_default()
            )));
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = tokio::time::timeout(self.options.stall_timeout, resp.chunk())
            .await
            .map_err(|_| err(format!("no progress reading {url}")))?
            .map_err(|e| err(format!("reading {url}: {e}")))?
        {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(err(format!(
                    "{url} runs past {max} bytes; manifests and configs over that are refused"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), digest))
    }

    fn manifest_url(&self, r: &Reference) -> String {
        format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            r.resolve_registry(),
            r.repository(),
            r.digest().unwrap_or_else(|| r.tag().unwrap_or("latest"))
        )
    }

    fn blob_url(&self, r: &Reference, digest: &str) -> String {
        format!(
            "{}://{}/v2/{}/blobs/{digest}",
            self.scheme,
            r.resolve_registry(),
            r.repository()
        )
    }

    /// Whether the registry already has a blob in `r`'s repository (HEAD).
    async fn exists(&self, r: &Reference, digest: &str) -> Result<bool, OciError> {
        self.client
            .blob_exists(r, digest)
            .await
            .map_err(|e| remote_err(r, e))
    }

    async fn login(&self, r: &Reference, op: RegistryOperation) -> Result<(), OciError> {
        self.client
            .auth(r, &self.options.auth, op)
            .await
            .map(drop)
            .map_err(|e| remote_err(r, e))
    }

    /// Check the credentials: a manifest request for `probe` must not be
    /// refused as unauthorized (a 404 for the probe repository is fine).
    pub async fn check_credentials(&self, probe: &Reference) -> Result<(), OciError> {
        use oci_client::errors::{OciDistributionError as E, OciErrorCode};
        self.login(probe, RegistryOperation::Pull).await?;
        let answer = self
            .client
            .fetch_manifest_digest(probe, &self.options.auth)
            .await;
        let refused = match &answer {
            Err(E::UnauthorizedError { .. } | E::AuthenticationFailure(_)) => true,
            Err(E::RegistryError { envelope, .. }) => envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
            _ => false,
        };
        match answer {
            Err(e) if refused => Err(OciError::Registry {
                reference: probe.resolve_registry().to_string(),
                message: format!("credentials refused: {e}"),
            }),
            _ => Ok(()),
        }
    }

    /// Push the stored artifact `local` to `target`.
    pub async fn push(
        &self,
        store: &Store,
        local: &str,
        target: &Reference,
    ) -> Result<TransferReport, OciError> {
        // Any stored manifest: a model module or its classic variant.
        let desc = store.resolve(local)?;
        let manifest_bytes = store.read_metadata(desc.digest())?;
        let manifest = store.manifest(&desc)?;
        self.login(target, RegistryOperation::Push).await?;
        let blobs: Vec<Descriptor> = crate::artifact::blobs(&manifest).cloned().collect();
        let skipped = AtomicUsize::new(0);
        let bytes = AtomicU64::new(0);
        stream::iter(blobs.iter().map(Ok))
            .try_for_each_concurrent(PARALLEL, |desc| {
                let (skipped, bytes) = (&skipped, &bytes);
                async move {
                    if self.exists(target, desc.digest().as_ref()).await? {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    self.push_blob(store, target, desc).await?;
                    bytes.fetch_add(desc.size(), Ordering::Relaxed);
                    Ok::<(), OciError>(())
                }
            })
            .await?;
        self.client
            .push_manifest_raw(
                target,
                manifest_bytes,
                http::HeaderValue::from_static(OCI_MANIFEST),
            )
            .await
            .map_err(|e| remote_err(target, e))?;
        let skipped = skipped.into_inner();
        Ok(TransferReport {
            manifest_digest: desc.digest().to_string(),
            blobs_transferred: blobs.len() - skipped,
            blobs_skipped: skipped,
            bytes: bytes.into_inner(),
            ..Default::default()
        })
    }

    async fn push_blob(
        &self,
        store: &Store,
        target: &Reference,
        desc: &Descriptor,
    ) -> Result<(), OciError> {
        let path = store.blob_path(desc.digest());
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
                // A failure may be an expired token (401): authenticate again.
                let _ = self.login(target, RegistryOperation::Push).await;
            }
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(OciError::io(&path))?;
            let digest = desc.digest().to_string();
            if let Some(p) = &self.options.progress {
                p.started(&digest, desc.size(), 0);
            }
            let progress = self.options.progress.clone();
            let chunks = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
                .inspect_ok(move |chunk| {
                    if let Some(p) = &progress {
                        p.advanced(&digest, chunk.len() as u64);
                    }
                })
                .map_err(oci_client::errors::OciDistributionError::from);
            match self
                .client
                .push_blob_stream(target, chunks, desc.digest().as_ref(), Some(desc.size()))
                .await
            {
                Ok(_) => {
                    if let Some(p) = &self.options.progress {
                        p.finished(desc.digest().as_ref());
                    }
                    return Ok(());
                }
                Err(e) if !transient(&e) => return Err(remote_err(target, e)),
                Err(e) => {
                    tracing::warn!(blob = %desc.digest(), attempt, "push failed: {e}");
                    last = Some(e);
                }
            }
        }
        Err(remote_err(target, last.expect("at least one attempt")))
    }

    /// Fetch and check a manifest: its bytes must hash to the digest the
    /// registry names and to the reference's own digest, and it must be a
    /// Weft model module (or its classic variant). Returns the bytes, their
    /// digest, the parsed manifest and whether it is the classic variant.
    async fn fetch_manifest(
        &self,
        source: &Reference,
    ) -> Result<(bytes::Bytes, String, ImageManifest, bool), OciError> {
        self.login(source, RegistryOperation::Pull).await?;
        let url = self.manifest_url(source);
        let (bytes, digest) = self
            .get_capped(source, &url, OCI_MANIFEST, crate::MAX_METADATA)
            .await?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        for expected in [digest.as_deref(), source.digest()].into_iter().flatten() {
            if expected != actual {
                return Err(OciError::DigestMismatch {
                    expected: expected.into(),
                    actual,
                });
            }
        }
        let not_weft = |reason: String| OciError::NotWeftArtifact {
            reference: source.whole(),
            reason,
        };
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| not_weft(format!("its manifest does not parse: {e}")))?;
        // Before any layer moves: paths used twice are refused.
        crate::artifact::check_files(&manifest)?;
        if manifest.config().size() > crate::MAX_METADATA {
            return Err(not_weft(format!(
                "its config is {} bytes; configs over {} bytes are refused",
                manifest.config().size(),
                crate::MAX_METADATA
            )));
        }
        let config_type = manifest.config().media_type().to_string();
        let classic = manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(media::ARTIFACT))
            .is_some_and(|v| v == crate::artifact::ARTIFACT_V1_CLASSIC);
        if config_type != media::WASM_CONFIG && !classic {
            // Refuse before downloading any layer.
            return Err(not_weft(format!(
                "its config is {config_type}, not {}",
                media::WASM_CONFIG
            )));
        }
        Ok((bytes, actual, manifest, classic))
    }

    /// Pull `source` into the store and tag it with its full reference.
    pub async fn pull(
        &self,
        store: &Store,
        source: &Reference,
    ) -> Result<TransferReport, OciError> {
        let _writing = store.writer()?;
        let (bytes, actual, manifest, classic) = self.fetch_manifest(source).await?;
        let not_weft = |reason: String| OciError::NotWeftArtifact {
            reference: source.whole(),
            reason,
        };
        // One download per digest: identical layers must not race on one
        // partial file (`blobs` yields each digest once).
        let blobs: Vec<Descriptor> = crate::artifact::blobs(&manifest).cloned().collect();
        let report = std::sync::Mutex::new(TransferReport {
            manifest_digest: actual.clone(),
            ..Default::default()
        });
        stream::iter(blobs.iter().map(Ok))
            .try_for_each_concurrent(PARALLEL, |desc| {
                let report = &report;
                async move {
                    if store.has_blob(desc.digest()) {
                        report.lock().unwrap().blobs_skipped += 1;
                        return Ok(());
                    }
                    let (moved, resumed) = self.pull_blob(store, source, desc).await?;
                    let mut r = report.lock().unwrap();
                    r.blobs_transferred += 1;
                    r.blobs_resumed += usize::from(resumed);
                    r.bytes += moved;
                    Ok::<(), OciError>(())
                }
            })
            .await?;
        if !classic {
            serde_json::from_slice::<WasmConfig>(&store.read_metadata(manifest.config().digest())?)
                .map_err(|e| not_weft(format!("its config has no valid `weft` section: {e}")))?;
        }
        let manifest_digest =
            Digest::from_str(&actual).map_err(|_| OciError::BadDigest(actual.clone()))?;
        let (stored, size) = store.put_blob(&bytes[..], Some(&manifest_digest))?;
        store.tag(
            &source.whole(),
            &Descriptor::new(MediaType::ImageManifest, size, stored),
        )?;
        Ok(report.into_inner().unwrap())
    }

    /// Read a remote model module's manifest and config without fetching
    /// any layer (what `weft inspect` shows). The config is verified
    /// against its digest.
    pub async fn inspect(
        &self,
        source: &Reference,
    ) -> Result<(String, ImageManifest, WasmConfig), OciError> {
        let (_, digest, manifest, classic) = self.fetch_manifest(source).await?;
        if classic {
            return Err(OciError::NotWeftArtifact {
                reference: source.whole(),
                reason: "it is the classic-image variant; inspect the artifact it was built from"
                    .into(),
            });
        }
        let url = self.blob_url(source, manifest.config().digest().as_ref());
        let (config, _) = self
            .get_capped(source, &url, "*/*", crate::MAX_METADATA)
            .await?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        if actual != manifest.config().digest().to_string() {
            return Err(OciError::DigestMismatch {
                expected: manifest.config().digest().to_string(),
                actual,
            });
        }
        let config: WasmConfig =
            serde_json::from_slice(&config).map_err(|e| OciError::NotWeftArtifact {
                reference: source.whole(),
                reason: format!("its config has no valid `weft` section: {e}"),
            })?;
        Ok((digest, manifest, config))
    }

    /// Copy `source` to `target` on the same registry without moving any
    /// blob through this machine: blobs the target lacks are mounted from
    /// the source repository (cross-repository blob mount).
    pub async fn copy_within(
        &self,
        source: &Reference,
        target: &Reference,
    ) -> Result<TransferReport, OciError> {
        let (bytes, actual, manifest, _) = self.fetch_manifest(source).await?;
        self.login(target, RegistryOperation::Push).await?;
        let mut report = TransferReport {
            manifest_digest: actual,
            ..Default::default()
        };
        for desc in crate::artifact::blobs(&manifest) {
            let digest = desc.digest().to_string();
            if self.exists(target, &digest).await? {
                report.blobs_skipped += 1;
                continue;
            }
            self.client
                .mount_blob(target, source, &digest)
                .await
                .map_err(|e| remote_err(target, e))?;
            report.blobs_mounted += 1;
        }
        self.client
            .push_manifest_raw(target, bytes, http::HeaderValue::from_static(OCI_MANIFEST))
            .await
            .map_err(|e| remote_err(target, e))?;
        Ok(report)
    }

    /// Download one blob into the store, resuming a partial file. Returns
    /// the bytes moved over the network and whether it resumed.
    async fn pull_blob(
        &self,
        store: &Store,
        source: &Reference,
        desc: &Descriptor,
    ) -> Result<(u64, bool), OciError> {
        let digest = desc.digest().to_string();
        let partial = store.partial_path(desc.digest());
        let mut moved = 0u64;
        let mut resumed = false;
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
                // A failure may be an expired token (401): authenticate again.
                let _ = self.login(source, RegistryOperation::Pull).await;
            }
            let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let have = if have >= desc.size() { 0 } else { have };
            let response = if have > 0 {
                self.client
                    .pull_blob_stream_partial(source, digest.as_str(), have, None)
                    .await
            } else {
                self.client
                    .pull_blob_stream(source, digest.as_str())
                    .await
                    .map(BlobResponse::Full)
            };
            let (mut chunks, offset) = match response {
                Ok(BlobResponse::Partial(s)) => (s, have),
                Ok(BlobResponse::Full(s)) => (s, 0),
                Err(e) if !transient(&e) => return Err(remote_err(source, e)),
                Err(e) => {
                    tracing::warn!(blob = %digest, attempt, "download failed: {e}");
                    last = Some(remote_err(source, e));
                    continue;
                }
            };
            resumed |= offset > 0;
            if let Some(p) = &self.options.progress {
                p.started(&digest, desc.size(), offset);
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&partial)
                .map_err(OciError::io(&partial))?;
            file.set_len(offset).map_err(OciError::io(&partial))?;
            // Hash what is already there, then keep hashing while writing.
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut left = offset;
            while left > 0 {
                let n = file.read(&mut buf).map_err(OciError::io(&partial))?;
                if n == 0 {
                    break;
                }
                let n = n.min(left as usize);
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            file.seek(std::io::SeekFrom::Start(offset))
                .map_err(OciError::io(&partial))?;
            let mut moved_now = 0u64;
            let outcome: Result<(), OciError> = async {
                loop {
                    let next = tokio::time::timeout(self.options.stall_timeout, chunks.next())
                        .await
                        .map_err(|_| OciError::Registry {
                            reference: source.whole(),
                            message: format!(
                                "no progress on blob {digest} for {}s",
                                self.options.stall_timeout.as_secs()
                            ),
                        })?;
                    match next {
                        None => return Ok(()),
                        Some(Ok(bytes)) => {
                            if offset + moved_now + bytes.len() as u64 > desc.size() {
                                return Err(OciError::Oversized {
                                    what: format!("blob {digest} from {}", source.whole()),
                                    size: desc.size(),
                                });
                            }
                            moved_now += bytes.len() as u64;
                            hasher.update(&bytes);
                            file.write_all(&bytes).map_err(OciError::io(&partial))?;
                            moved += bytes.len() as u64;
                            if let Some(p) = &self.options.progress {
                                p.advanced(&digest, bytes.len() as u64);
                            }
                            if let Some(t) = &self.throttle {
                                t.take(bytes.len()).await;
                            }
                        }
                        Some(Err(e)) => {
                            return Err(OciError::Registry {
                                reference: source.whole(),
                                message: format!("reading blob {digest}: {e}"),
                            });
                        }
                    }
                }
            }
            .await;
            let complete = file.stream_position().is_ok_and(|p| p == desc.size());
            if let Err(e @ OciError::Io { .. }) = outcome {
                // A local write failed (a full disk, say): retrying will not
                // help. The partial file stays for a later resume.
                return Err(e);
            }
            if let Err(e @ OciError::Oversized { .. }) = outcome {
                // The registry sent more than the blob holds: what is in
                // the partial file cannot be trusted either.
                drop(file);
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            if let Err(e) = outcome
                && !complete
            {
                // Keep the partial file: the next attempt resumes from it.
                tracing::warn!(blob = %digest, attempt, "download interrupted: {e}");
                last = Some(e);
                continue;
            }
            // Every byte arrived (the client's own check may have failed the
            // stream at its end): our hash decides.
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                let _ = std::fs::remove_file(&partial);
                return Err(OciError::DigestMismatch {
                    expected: digest,
                    actual,
                });
            }
            store.commit_partial(&partial, desc.digest())?;
            if let Some(p) = &self.options.progress {
                p.finished(&digest);
            }
            return Ok((moved, resumed));
        }
        Err(last.expect("at least one attempt"))
    }
}

/// Worth retrying: network failures, 5xx, 408, 429, and 401 (an expired
/// token, refreshed before the retry). Other 4xx answers will not change.
fn transient(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RegistryError { .. } | E::ImageManifestNotFoundError(_) => false,
        E::ServerError { code, .. } => *code >= 500 || *code == 408 || *code == 429,
        _ => true,
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognized() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["registry.example:5000", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
