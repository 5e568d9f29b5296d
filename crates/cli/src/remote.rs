//! `weft push` and `weft pull`, and the registry options they share.

use crate::store::StoreArgs;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use weft_oci::{Remote, RemoteOptions, Store, TransferReport, parse_reference};

#[derive(Args, Clone, Default)]
pub struct RemoteArgs {
    /// Talk plain HTTP to this registry (loopback registries always may).
    #[arg(long)]
    pub plain_http: bool,
    /// Accept any TLS certificate from this registry (a self-signed test
    /// registry); the connection is still encrypted.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// With --plain-http, also send credentials to a registry on another
    /// host (they cross the network in clear text).
    #[arg(long, requires = "plain_http")]
    pub plain_http_credentials: bool,
    /// Removed: it meant both --plain-http and --insecure-skip-tls-verify.
    #[arg(long, hide = true)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Vec<PathBuf>,
}

use weft_oci::docker_auth as auth_for;

/// Progress bars on a terminal, one per blob in flight; nothing otherwise
/// (then the one-line summary is the structured output).
struct Bars {
    multi: indicatif::MultiProgress,
    bars: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl weft_oci::Progress for Bars {
    fn started(&self, digest: &str, size: u64, done: u64) {
        let bar = self.multi.add(indicatif::ProgressBar::new(size));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:19} [{bar:32}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(digest.chars().take(19).collect::<String>());
        bar.set_position(done);
        self.bars.lock().unwrap().insert(digest.to_string(), bar);
    }

    fn advanced(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().unwrap().get(digest) {
            bar.inc(bytes);
        }
    }

    fn finished(&self, digest: &str) {
        if let Some(bar) = self.bars.lock().unwrap().remove(digest) {
            bar.finish_and_clear();
        }
    }
}

fn progress() -> Option<std::sync::Arc<dyn weft_oci::Progress>> {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal().then(|| {
        std::sync::Arc::new(Bars {
            multi: indicatif::MultiProgress::new(),
            bars: Default::default(),
        }) as std::sync::Arc<dyn weft_oci::Progress>
    })
}

impl RemoteArgs {
    /// The registry options these flags ask for, with `auth`.
    pub fn options(&self, auth: weft_oci::RegistryAuth) -> anyhow::Result<RemoteOptions> {
        if self.insecure {
            anyhow::bail!(
                "--insecure was split in two: use --plain-http for a registry that speaks HTTP, --insecure-skip-tls-verify for one with a certificate this machine does not trust (better: --ca-file)"
            );
        }
        Ok(RemoteOptions {
            plain_http: self.plain_http,
            skip_tls_verify: self.insecure_skip_tls_verify,
            plain_http_credentials: self.plain_http_credentials,
            ca_files: self.ca_file.clone(),
            auth,
            progress: progress(),
            ..RemoteOptions::default()
        })
    }

    pub fn remote(&self, reference: &weft_oci::registry::Reference) -> anyhow::Result<Remote> {
        let options = self.options(auth_for(reference.resolve_registry()))?;
        Remote::new(reference, options).map_err(|e| hint_http_credentials(e.into()))
    }
}

/// Name the flag that allows what the library refused.
pub fn hint_http_credentials(e: anyhow::Error) -> anyhow::Error {
    if format!("{e}").contains("credentials over plain HTTP") {
        e.context("pass --plain-http-credentials to send them anyway")
    } else {
        e
    }
}

/// The async runtime registry and agent commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn summary(
    verb: &str,
    reference: &str,
    r: &TransferReport,
    started: Instant,
    json: bool,
) -> String {
    let secs = started.elapsed().as_secs_f64();
    if json {
        return serde_json::json!({
            "action": verb,
            "reference": reference,
            "report": r,
            "seconds": secs,
        })
        .to_string();
    }
    format!(
        "{verb} {reference} {} ({} blobs moved, {} already there, {} resumed, {} mounted; {:.1} MiB in {:.2}s)",
        r.manifest_digest,
        r.blobs_transferred,
        r.blobs_skipped,
        r.blobs_resumed,
        r.blobs_mounted,
        r.bytes as f64 / (1 << 20) as f64,
        secs
    )
}

/// Push a model module from the local store to a registry.
#[derive(Args)]
pub struct PushArgs {
    /// The module in the local store (e.g. ocr:1.0).
    pub local: String,
    /// Where to push it, REGISTRY/REPOSITORY[:TAG] [default: LOCAL, which
    /// must then name a registry].
    pub target: Option<String>,
    /// Print the result as one JSON object (for scripts) instead of a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn push(a: PushArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    let target = parse_reference(a.target.as_deref().unwrap_or(&a.local))?;
    let remote = a.remote.remote(&target)?;
    let started = Instant::now();
    let report = runtime()?
        .block_on(remote.push(&store, &a.local, &target))
        .with_context(|| format!("pushing {} to {}", a.local, target.whole()))?;
    outln!(
        "{}",
        summary("pushed", &target.whole(), &report, started, a.json)
    );
    Ok(0)
}

/// Pull a model module from a registry into the local store.
#[derive(Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST].
    pub reference: String,
    /// Print the result as one JSON object (for scripts) instead of a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Pull into `store`; returns the local reference it is tagged as.
pub fn pull_into(
    json: bool,
    store: &Store,
    reference: &str,
    remote_args: &RemoteArgs,
) -> anyhow::Result<String> {
    let source = parse_reference(reference)?;
    let remote = remote_args.remote(&source)?;
    let started = Instant::now();
    let report = runtime()?
        .block_on(remote.pull(store, &source))
        .with_context(|| format!("pulling {}", source.whole()))?;
    Ok(summary("pulled", &source.whole(), &report, started, json))
}

pub fn pull(a: PullArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    outln!("{}", pull_into(a.json, &store, &a.reference, &a.remote)?);
    Ok(0)
}

/// Whether a reference names a registry (`host[:port]/repo...`), so a
/// missing local tag can be pulled.
pub use weft_oci::names_registry;
