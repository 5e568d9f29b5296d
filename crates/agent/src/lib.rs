//! `weft-agent`: the edge device agent behind `weft agent`. It keeps a
//! device's model modules current from a registry or its own store, works
//! offline, verifies what it runs, and rolls back a version that fails its
//! health check, surviving `kill -9` at any point.
//!
//! Where to start: [`run`] loads the [`config::Config`], opens the agent's
//! directory (an OCI layout store, `state.json`, a compile cache), serves
//! the status endpoint ([`status`]) and starts one [`worker::Worker`] per
//! module; the worker is where versions change. [`state`] is what is
//! committed on disk, [`source`] where versions come from (the extension
//! point for the cluster as a source).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! weft_agent::run("/etc/weft/agent.toml".as_ref(), std::future::pending()).await
//! # }
//! ```

pub mod cluster;
pub mod config;
pub mod error;
pub mod health;
pub mod metrics;
pub mod source;
pub mod state;
pub mod status;
pub mod worker;

use crate::config::{Config, ModuleConfig};
use crate::source::{RegistrySource, Source, StoreSource};
use crate::state::StateFile;
use crate::status::Status;
use crate::worker::{Shared, Worker};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use weft_oci::{RemoteOptions, Store};
use weft_runtime::{Runtime, RuntimeConfig};

/// How often the configuration file is looked at.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// The node's compile cache bound.
const CACHE_MAX: u64 = 1 << 30;

/// The configuration's last accepted text, next to it: what the agent runs
/// when the file is broken at start.
fn last_good(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".last-good");
    PathBuf::from(p)
}

/// Load the configuration, or its last good copy (with the reason the
/// file itself was refused).
fn initial_config(path: &Path) -> anyhow::Result<(Config, String, Option<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the agent config {}", path.display()));
    let parsed = text
        .as_ref()
        .map_err(|e| format!("{e:#}"))
        .and_then(|t| Config::parse(t).map_err(|e| e.in_file(path).to_string()));
    match (parsed, text) {
        (Ok(c), Ok(t)) => Ok((c, t, None)),
        (Err(why), _) => {
            let backup = last_good(path);
            let t = std::fs::read_to_string(&backup).map_err(|_| anyhow::anyhow!("{why}"))?;
            let c = Config::parse(&t).map_err(|_| anyhow::anyhow!("{why}"))?;
            tracing::error!(
                "{why}; running the last good configuration {}",
                backup.display()
            );
            Ok((c, t, Some(why)))
        }
        (Ok(_), Err(e)) => Err(e),
    }
}

fn source_for(m: &ModuleConfig, cfg: &Config, store: &Store) -> Result<Box<dyn Source>, String> {
    if weft_oci::names_registry(&m.source) {
        let registry = weft_oci::parse_reference(&m.source)
            .map(|r| r.resolve_registry().to_string())
            .map_err(|e| e.to_string())?;
        Ok(Box::new(RegistrySource::new(
            &m.source,
            RemoteOptions {
                plain_http: cfg.agent.plain_http,
                skip_tls_verify: cfg.agent.skip_tls_verify,
                plain_http_credentials: cfg.agent.plain_http_credentials,
                auth: weft_oci::docker_auth(&registry),
                max_rate: cfg.agent.max_rate,
                ..Default::default()
            },
        )?))
    } else {
        Ok(Box::new(StoreSource::new(&m.source, store.clone())))
    }
}

struct Running {
    cfg: ModuleConfig,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Run the agent until `shutdown` resolves.
pub async fn run(config_path: &Path, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config_path, shutdown, None).await
}

/// [`run`], with the Kubernetes client for `[cluster]` given (tests);
/// otherwise it comes from the configured kubeconfig.
pub async fn run_with(
    config_path: &Path,
    shutdown: impl Future<Output = ()>,
    client: Option<kube::Client>,
) -> anyhow::Result<()> {
    let (mut file_config, text, config_error) = initial_config(config_path)?;
    // What the file held when last read (not what runs: that may be the
    // last good copy).
    let mut seen = std::fs::read_to_string(config_path).ok();
    let dir = file_config.agent.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Store::open(dir.join("store")).context("opening the agent's store")?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.join("compiled")),
        cache_max_bytes: Some(CACHE_MAX),
        ..Default::default()
    })?);
    let state_file = StateFile::new(&dir);
    let state = state_file
        .load()
        .with_context(|| format!("reading {}", state_file.path().display()))?;
    let status = Arc::new(Status::default());
    status.agent(|a| {
        a.version = env!("CARGO_PKG_VERSION").into();
        a.started = state::now();
        a.dir = dir.display().to_string();
        a.config = config_path.display().to_string();
        a.config_error = config_error;
    });
    let metrics = Arc::new(metrics::Metrics::default());
    let shared = Arc::new(Shared {
        store,
        runtime,
        state: Mutex::new(state),
        state_file,
        status: status.clone(),
        metrics: metrics.clone(),
    });
    let listener = tokio::net::TcpListener::bind(file_config.agent.status)
        .await
        .with_context(|| format!("binding the status endpoint {}", file_config.agent.status))?;
    tracing::info!("status on http://{}/status", listener.local_addr()?);
    let app = status::router(status.clone(), metrics.clone());
    let (stop_status, mut status_stopped) = watch::channel(false);
    let status_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = status_stopped.wait_for(|s| *s).await;
            })
            .await;
    });

    // The cluster source, when configured (its settings change on restart).
    let (desired_tx, mut desired) = watch::channel(Vec::new());
    let (stop_cluster, cluster_stopped) = watch::channel(false);
    let cluster_task = file_config.cluster.clone().map(|settings| {
        status.agent(|a| {
            a.cluster = Some(status::ClusterStatus {
                namespace: settings.namespace.clone(),
                device: settings.device.clone(),
                ..Default::default()
            });
        });
        let c = cluster::Cluster {
            client,
            settings,
            dir: dir.clone(),
            status: status.clone(),
            desired: desired_tx,
            stop: cluster_stopped,
            refused: Vec::new(),
        };
        tokio::spawn(c.run())
    });
    let cluster_settings = file_config.cluster.clone();

    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut config = merged(&file_config, &desired.borrow_and_update(), &status);
    apply(&config, &shared, &mut running).await;
    let _ = state::write_atomic(&last_good(config_path), text.as_bytes());

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(CONFIG_POLL) => {}
            Ok(()) = desired.changed(), if cluster_task.is_some() => {}
        }
        if let Ok(text) = std::fs::read_to_string(config_path)
            && seen.as_deref() != Some(text.as_str())
        {
            seen = Some(text.clone());
            match Config::parse(&text) {
                Ok(new) => {
                    if new.agent.dir != file_config.agent.dir
                        || new.agent.status != file_config.agent.status
                        || new.cluster != cluster_settings
                    {
                        tracing::warn!(
                            "the agent's dir, status address and [cluster] change only on restart"
                        );
                    }
                    tracing::info!("configuration changed; applying");
                    metrics
                        .config_reloads
                        .get_or_create(&metrics::ReloadLabels { result: "applied" })
                        .inc();
                    file_config = new;
                    status.agent(|a| a.config_error = None);
                    let _ = state::write_atomic(&last_good(config_path), text.as_bytes());
                }
                Err(e) => {
                    let why = e.in_file(config_path).to_string();
                    tracing::error!("{why}; keeping the running configuration");
                    metrics
                        .config_reloads
                        .get_or_create(&metrics::ReloadLabels { result: "refused" })
                        .inc();
                    status.agent(|a| a.config_error = Some(why));
                }
            }
        }
        let new = merged(&file_config, &desired.borrow_and_update(), &status);
        if new != config {
            if new.agent != config.agent {
                // Workers hold the settings: restart them all.
                stop_all(&mut running).await;
            }
            config = new;
            apply(&config, &shared, &mut running).await;
        }
    }
    tracing::info!("stopping");
    let _ = stop_cluster.send(true);
    if let Some(t) = cluster_task {
        let _ = t.await;
    }
    stop_all(&mut running).await;
    let _ = stop_status.send(true);
    let _ = status_task.await;
    Ok(())
}

/// The file's modules and the cluster's, which may not take a name or an
/// address the file uses (the file wins, and the status says why).
fn merged(file: &Config, cluster: &[ModuleConfig], status: &Status) -> Config {
    let mut out = file.clone();
    for m in cluster {
        let clash = if out.module(&m.name).is_some() {
            Some(format!("the config file has a module named {}", m.name))
        } else {
            out.modules
                .iter()
                .find(|o| o.bind.is_some() && o.bind == m.bind)
                .map(|o| {
                    format!(
                        "{} is taken by module {}",
                        m.bind.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                        o.name
                    )
                })
        };
        match clash {
            Some(why) => status.module(&m.name, |s| {
                s.state = "failed".into();
                s.source = m.source.clone();
                s.error = Some(format!("cluster assignment {} not run: {why}", m.name));
            }),
            None => out.modules.push(m.clone()),
        }
    }
    out
}

/// Start, restart and stop workers to match `config`.
async fn apply(config: &Config, shared: &Arc<Shared>, running: &mut BTreeMap<String, Running>) {
    let names: Vec<String> = running.keys().cloned().collect();
    for name in names {
        let keep = config
            .module(&name)
            .is_some_and(|m| *m == running[&name].cfg);
        if !keep {
            let r = running.remove(&name).expect("listed");
            let _ = r.stop.send(true);
            let _ = r.task.await;
            if config.module(&name).is_none() {
                tracing::info!(module = %name, "removed from the configuration");
                shared.status.remove(&name);
            }
        }
    }
    for m in &config.modules {
        if running.contains_key(&m.name) {
            continue;
        }
        let source = match source_for(m, config, &shared.store) {
            Ok(s) => s,
            Err(e) => {
                shared.status.module(&m.name, |s| {
                    s.state = "failed".into();
                    s.error = Some(format!("source {}: {e}", m.source));
                });
                continue;
            }
        };
        let (stop, rx) = watch::channel(false);
        let worker = Worker {
            cfg: m.clone(),
            settings: config.agent.clone(),
            shared: shared.clone(),
            source,
            stop: rx,
        };
        let task = tokio::spawn(worker.run());
        running.insert(
            m.name.clone(),
            Running {
                cfg: m.clone(),
                stop,
                task,
            },
        );
    }
}

async fn stop_all(running: &mut BTreeMap<String, Running>) {
    for (_, r) in std::mem::take(running) {
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
}

/// `GET /status` of a running agent.
pub async fn fetch_status(addr: &str) -> anyhow::Result<status::StatusDoc> {
    let (code, body) = http_get(addr, "/status")
        .await
        .with_context(|| format!("asking the agent at {addr} (is `weft agent` running there?)"))?;
    anyhow::ensure!(code == 200, "the agent at {addr} answered {code}: {body}");
    serde_json::from_str(&body).with_context(|| format!("the agent at {addr} sent a bad status"))
}

/// `GET http://{addr}{path}`: the status code and the body.
pub(crate) async fn http_get(addr: &str, path: &str) -> reqwest::Result<(u16, String)> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    });
    let response = client.get(format!("http://{addr}{path}")).send().await?;
    let code = response.status().as_u16();
    Ok((code, response.text().await?))
}

pub use error::ConfigError;
pub use status::render;
