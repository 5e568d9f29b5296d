//! One module's life on the device: bring the committed version up, follow
//! the source, take a new version only through its checks, roll back, keep
//! earlier versions for later.
//!
//! A new version goes: fetch (resumable, verified, rate-limited) → pin in
//! the store → verify every blob again → start it next to the running one
//! → health check → `pending` on disk → switch (the server serves it from
//! the next request; the old one stays warm) → probation (health checks
//! every `check_every` for `probation`) → commit (`current` on disk) →
//! retention. A failure before the switch refuses the version; one during
//! probation switches back. Nothing on disk names a version as current
//! before it passed, so a restart at any point runs a version that did.

use crate::config::{AgentSettings, Health, Kind, ModuleConfig};
use crate::error::{UpdateError, chain};
use crate::metrics::{Metrics, ModuleLabel};
use crate::source::{Desired, Source};
use crate::state::{ModuleState, Run, State, StateFile, TransitionKind};
use crate::status::Status;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_oci::Store;
use weft_runtime::Runtime;
use weft_serve::{PoolConfig, Prepared, Server};

/// What every worker shares.
pub struct Shared {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub state: Mutex<State>,
    pub state_file: StateFile,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Change the committed state and write it (whole) to disk.
    pub fn commit<R>(&self, module: &str, f: impl FnOnce(&mut ModuleState) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(state.modules.entry(module.to_owned()).or_default());
        if let Err(e) = self.state_file.save(&state) {
            tracing::error!(
                module,
                "cannot write {}: {e}",
                self.state_file.path().display()
            );
            self.status.module(module, |m| {
                m.error = Some(format!("cannot write the agent's state: {e}"));
            });
        }
        r
    }

    pub fn module_state(&self, module: &str) -> ModuleState {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .modules
            .get(module)
            .cloned()
            .unwrap_or_default()
    }

    /// Untag the versions no module keeps (current, previous, pending),
    /// then collect their blobs. Only the agent's own tags are touched.
    pub fn retain(&self) {
        let keep: HashSet<String> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .modules
                .values()
                .flat_map(|m| {
                    m.current
                        .iter()
                        .chain(&m.previous)
                        .chain(m.pending.as_ref().map(|p| &p.digest))
                        .cloned()
                })
                .collect()
        };
        let Ok(tags) = self.store.list() else { return };
        for (tag, desc) in tags {
            let ours = tag.starts_with(PIN_HOST) || tag.contains('@');
            if ours && !keep.contains(&desc.digest().to_string()) {
                let _ = self.store.untag(&tag);
            }
        }
        match self.store.gc() {
            Ok(r) => tracing::debug!(?r, "store collected"),
            Err(e) => tracing::warn!("collecting the store: {}", chain(&e)),
        }
    }
}

const PIN_HOST: &str = "weft-agent.local/";

/// The store tag that keeps a module's version (`gc` keeps tagged ones).
pub fn pin(module: &str, digest: &str) -> String {
    format!(
        "{PIN_HOST}{module}:sha256-{}",
        digest.trim_start_matches("sha256:")
    )
}

/// Crash here when `WEFT_AGENT_FAILPOINT` names this point: the tests use
/// it to kill the agent at every step of an update.
pub fn failpoint(name: &str) {
    if std::env::var("WEFT_AGENT_FAILPOINT").is_ok_and(|f| f == name) {
        eprintln!("weft agent: failpoint {name}: aborting");
        std::process::abort();
    }
}

fn describe(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(d, why)| format!("{}: {why}", short(d)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Error backoff: 1 s doubling to 5 min.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_secs(1))
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(300));
        d
    }

    fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

pub struct Worker {
    pub cfg: ModuleConfig,
    pub settings: AgentSettings,
    pub shared: Arc<Shared>,
    pub source: Box<dyn Source>,
    pub stop: watch::Receiver<bool>,
}

/// A running service: the server behind the module's port, and the
/// version it serves.
struct Live {
    server: Arc<Server>,
    serving: Option<(String, Prepared)>,
}

impl Worker {
    fn status(&self, f: impl FnOnce(&mut crate::status::ModuleStatus)) {
        self.shared.status.module(&self.cfg.name, f);
    }

    fn set_health(&self, result: &Result<(), String>) {
        let name = &self.cfg.name;
        let (label, value) = match result {
            Ok(()) => ("ok", 1),
            Err(_) => ("failed", 0),
        };
        self.shared
            .metrics
            .count(&self.shared.metrics.health_checks, name, label);
        self.shared
            .metrics
            .healthy
            .get_or_create(&ModuleLabel {
                module: name.clone(),
            })
            .set(value);
        self.status(|m| {
            m.health = match result {
                Ok(()) => "ok".into(),
                Err(e) => format!("failing: {e}"),
            }
        });
    }

    /// Run until told to stop.
    pub async fn run(mut self) {
        let name = self.cfg.name.clone();
        self.status(|m| {
            m.kind = match self.cfg.kind {
                Kind::Service => "service".into(),
                Kind::Job => "job".into(),
            };
            m.source = self.cfg.source.clone();
            m.bind = self.cfg.bind.map(|b| b.to_string());
            m.state = "starting".into();
            m.health = "unknown".into();
        });
        let mut live = match self.cfg.kind {
            Kind::Service => match self.listen().await {
                Some(l) => Some(l),
                None => return,
            },
            Kind::Job => None,
        };
        self.bring_up(live.as_mut()).await;

        let mut poll = Backoff::new();
        let mut retry = Backoff::new();
        let mut next_poll = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut next_check = Instant::now() + self.settings.check_every;
        let mut next_run = self.cfg.every.map(|e| Instant::now() + e);
        let mut desired: Option<Desired> = None;
        loop {
            let wake = [Some(next_poll), Some(next_check), retry_at, next_run]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                _ = self.stop.changed() => break,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if now >= next_poll {
                let ask = desired.is_none() || self.source.watches();
                if ask {
                    match self.source.resolve().await {
                        Ok(d) => {
                            poll.reset();
                            if desired.as_ref() != Some(&d) {
                                tracing::info!(module = %name, digest = %d.digest, "source wants {}", short(&d.digest));
                                retry_at = None;
                                retry.reset();
                            }
                            self.status(|m| {
                                m.desired = Some(d.digest.clone());
                                if m.error.as_deref().is_some_and(|e| e.starts_with("source")) {
                                    m.error = None;
                                }
                            });
                            desired = Some(d);
                            next_poll = now + self.settings.poll;
                        }
                        Err(e) => {
                            let wait = poll.next();
                            self.shared
                                .metrics
                                .source_errors
                                .get_or_create(&ModuleLabel {
                                    module: name.clone(),
                                })
                                .inc();
                            tracing::warn!(module = %name, "source {}: {}; retrying in {wait:?}", self.cfg.source, e.message);
                            let what = if e.unreachable { " unreachable" } else { "" };
                            self.status(|m| {
                                m.error = Some(format!(
                                    "source {}{what}: {} (still running what it has; retry in {}s)",
                                    self.cfg.source,
                                    e.message,
                                    wait.as_secs()
                                ))
                            });
                            next_poll = now + wait;
                        }
                    }
                } else {
                    next_poll = now + self.settings.poll;
                }
            }
            if let Some(d) = desired.clone()
                && retry_at.is_none_or(|t| now >= t)
                && self.wants(&d)
            {
                match self.update(&d, live.as_mut()).await {
                    Ok(()) => {
                        retry_at = None;
                        retry.reset();
                    }
                    Err(e) if e.is_transient() => {
                        let wait = retry.next();
                        let reason = chain(&e);
                        tracing::warn!(module = %name, "update to {} failed: {reason}; retrying in {wait:?}", short(&d.digest));
                        self.shared.metrics.count(
                            &self.shared.metrics.updates,
                            &name,
                            "download_failed",
                        );
                        self.status(|m| {
                            m.error = Some(format!("{reason} (retry in {}s)", wait.as_secs()));
                            m.state = if m.running.is_some() {
                                "running".into()
                            } else {
                                "waiting".into()
                            };
                        });
                        retry_at = Some(now + wait);
                    }
                    Err(e) => self.refuse(&d.digest, &chain(&e)),
                }
            }
            if now >= next_check {
                next_check = now + self.settings.check_every;
                if let Some(l) = &live
                    && let Some((_, p)) = &l.serving
                {
                    let r = check_service(&l.server, p, &self.cfg.health).await;
                    self.set_health(&r);
                }
            }
            if let (Some(t), Some(every)) = (next_run, self.cfg.every)
                && now >= t
            {
                next_run = Some(now + every);
                if let Some(current) = self.shared.module_state(&name).current {
                    let _ = self.run_job(&current).await;
                }
            }
        }
        if let Some(l) = live {
            l.server.begin_shutdown();
        }
        self.status(|m| m.state = "stopped".into());
    }

    /// A new version worth trying: not running, not refused, not cut short
    /// three times already.
    fn wants(&self, d: &Desired) -> bool {
        let ms = self.shared.module_state(&self.cfg.name);
        if ms.current.as_deref() == Some(&d.digest) {
            return false;
        }
        if let Some(reason) = ms.refused.get(&d.digest) {
            self.status(|m| {
                m.error = Some(format!(
                    "the source asks for {}, refused earlier: {reason}",
                    short(&d.digest)
                ))
            });
            return false;
        }
        true
    }

    fn refuse(&self, digest: &str, reason: &str) {
        let name = &self.cfg.name;
        tracing::error!(module = %name, "refusing {}: {reason}", short(digest));
        self.shared
            .metrics
            .count(&self.shared.metrics.updates, name, "refused");
        let current = self.shared.commit(name, |m| {
            m.refused.insert(digest.to_owned(), reason.to_owned());
            if m.pending.as_ref().is_some_and(|p| p.digest == digest) {
                m.pending = None;
            }
            m.record(
                TransitionKind::Refused,
                m.current.clone(),
                Some(digest.to_owned()),
                reason,
            );
            m.last().cloned()
        });
        self.status(|m| {
            m.error = Some(format!("refused {}: {reason}", short(digest)));
            m.last_transition = current;
            m.state = if m.running.is_some() {
                "running".into()
            } else {
                "waiting".into()
            };
        });
    }

    /// Bind the module's port(s) and serve whatever is installed; retry a
    /// port that is taken until stopped.
    async fn listen(&mut self) -> Option<Live> {
        let server = Arc::new(
            Server::new(self.shared.runtime.clone(), Vec::new(), Default::default())
                .expect("an empty server always starts"),
        );
        let bind = self.cfg.bind?;
        loop {
            let rest = tokio::net::TcpListener::bind(bind).await;
            let grpc = match self.cfg.grpc {
                Some(g) => Some(tokio::net::TcpListener::bind(g).await.map_err(|e| (g, e))),
                None => None,
            };
            match (rest, grpc.transpose()) {
                (Ok(rest), Ok(grpc)) => {
                    let mut stop = self.stop.clone();
                    let s = server.clone();
                    tokio::spawn(async move {
                        let shutdown = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        if let Err(e) = weft_serve::serve(s, rest, grpc, shutdown).await {
                            tracing::error!("serving: {e}");
                        }
                    });
                    return Some(Live {
                        server,
                        serving: None,
                    });
                }
                (rest, grpc) => {
                    let why = match (rest, grpc) {
                        (Err(e), _) => format!("cannot listen on {bind}: {e}"),
                        (_, Err((g, e))) => format!("cannot listen on {g}: {e}"),
                        _ => unreachable!(),
                    };
                    tracing::error!(module = %self.cfg.name, "{why}; retrying in 5s");
                    self.status(|m| {
                        m.state = "failed".into();
                        m.error = Some(format!("{why} (retry in 5s)"));
                    });
                    tokio::select! {
                        _ = self.stop.changed() => return None,
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        }
    }

    /// Start the committed version, else an earlier good one; report.
    async fn bring_up(&self, live: Option<&mut Live>) {
        let name = self.cfg.name.clone();
        let ms = self.shared.module_state(&name);
        let candidates: Vec<String> = ms.current.iter().chain(&ms.previous).cloned().collect();
        match live {
            Some(live) => {
                let mut failures = Vec::new();
                for digest in &candidates {
                    match self.prepare_service(&live.server, digest).await {
                        Ok(p) => {
                            live.server.install(p.clone());
                            live.serving = Some((digest.clone(), p.clone()));
                            let health = check_service(&live.server, &p, &self.cfg.health).await;
                            self.set_health(&health);
                            if failures.is_empty() {
                                self.started(
                                    digest,
                                    p.version(),
                                    TransitionKind::Start,
                                    "agent start".into(),
                                );
                            } else {
                                self.drop_versions(&failures, Some(digest));
                                self.started(
                                    digest,
                                    p.version(),
                                    TransitionKind::Fallback,
                                    format!(
                                        "the kept version(s) do not start: {}",
                                        describe(&failures)
                                    ),
                                );
                            }
                            return;
                        }
                        Err(e) => {
                            let reason = chain(&e);
                            tracing::error!(module = %name, "version {} does not start: {reason}", short(digest));
                            self.heal(&e);
                            failures.push((digest.clone(), reason));
                        }
                    }
                }
                if !failures.is_empty() {
                    let reason = format!("no kept version starts: {}", describe(&failures));
                    self.drop_versions(&failures, None);
                    let last = self.shared.commit(&name, |m| {
                        m.record(
                            TransitionKind::Fallback,
                            Some(failures[0].0.clone()),
                            None,
                            reason.clone(),
                        );
                        m.last().cloned()
                    });
                    self.status(|m| {
                        m.error = Some(format!("{reason}; waiting for the source"));
                        m.last_transition = last;
                    });
                }
                self.status(|m| m.state = "waiting".into());
            }
            None => {
                // A job: run its current version if it never finished.
                if let Some(current) = &ms.current {
                    self.status(|m| {
                        m.running = Some(current.clone());
                        m.state = "running".into();
                        m.previous = ms.previous.clone();
                        m.last_run = ms.last_run.clone();
                        m.last_transition = ms.last().cloned();
                    });
                    self.shared.metrics.set_running(&name, None, Some(current));
                    if ms.last_run.as_ref().is_none_or(|r| &r.digest != current) {
                        let _ = self.run_job(current).await;
                    }
                } else {
                    self.status(|m| m.state = "waiting".into());
                }
            }
        }
    }

    /// Forget versions that do not start (they are not refused: the source
    /// may hand them over again, whole).
    fn drop_versions(&self, failed: &[(String, String)], instead: Option<&str>) {
        let keep = self.settings.keep;
        self.shared.commit(&self.cfg.name, |m| {
            let bad: Vec<&String> = failed.iter().map(|(d, _)| d).collect();
            m.previous.retain(|d| !bad.contains(&d));
            if m.current.as_ref().is_some_and(|c| bad.contains(&c)) {
                m.current = None;
            }
            if let Some(d) = instead {
                m.previous.retain(|p| p != d);
                m.previous.truncate(keep);
            }
        });
    }

    /// A blob that no longer hashes to its name is deleted, so fetching
    /// the version again can replace it.
    fn heal(&self, e: &UpdateError) {
        if let UpdateError::Verify {
            source:
                weft_module::ModuleError::Oci(weft_oci::OciError::DigestMismatch { expected, .. }),
            ..
        } = e
            && let Ok(d) = expected.parse::<weft_oci::Digest>()
        {
            let path = self.shared.store.blob_path(&d);
            tracing::warn!(module = %self.cfg.name, "removing the corrupt blob {}", path.display());
            let _ = std::fs::remove_file(path);
        }
    }

    /// Record that `digest` runs.
    fn started(&self, digest: &str, version: &str, kind: TransitionKind, reason: String) {
        let name = &self.cfg.name;
        let keep = self.settings.keep;
        let fallback = kind == TransitionKind::Fallback;
        let ms = self.shared.commit(name, |m| {
            let from = m.current.clone();
            if fallback {
                m.promote(digest, keep);
            }
            m.record(kind, from, Some(digest.to_owned()), reason);
            m.clone()
        });
        self.shared.metrics.set_running(name, None, Some(digest));
        self.status(|m| {
            m.running = Some(digest.to_owned());
            m.version = Some(version.to_owned());
            m.state = "running".into();
            m.previous = ms.previous.clone();
            m.last_transition = ms.last().cloned();
        });
    }

    /// Verify a stored version and start it (not yet served).
    async fn prepare_service(
        &self,
        server: &Arc<Server>,
        digest: &str,
    ) -> Result<Prepared, UpdateError> {
        let shared = self.shared.clone();
        let server = server.clone();
        let cfg = self.cfg.clone();
        let digest = digest.to_owned();
        tokio::task::spawn_blocking(move || {
            let reference = pin(&cfg.name, &digest);
            weft_module::verify(&shared.store, &reference).map_err(|source| {
                UpdateError::Verify {
                    digest: digest.clone(),
                    source,
                }
            })?;
            let start = |source| UpdateError::Start {
                digest: digest.clone(),
                source,
            };
            let mut resolved = weft_module::from_store(&shared.store, &reference).map_err(start)?;
            resolved.args.extend(cfg.args.iter().cloned());
            let spec = weft_module::model_spec(
                &shared.runtime,
                resolved,
                weft_module::ServeSettings {
                    name: cfg.model.clone(),
                    platform: "weft-wasm".into(),
                    env: cfg.env.clone(),
                    dirs: Vec::new(),
                    max_memory: cfg.max_memory,
                    startup: Duration::from_secs(120),
                    pool: PoolConfig {
                        instances: cfg.instances,
                        queue: cfg.queue,
                        deadline: cfg.deadline,
                    },
                },
            )
            .map_err(start)?;
            server
                .prepare(shared.runtime.clone(), spec)
                .map_err(|e| start(weft_module::ModuleError::Runtime(e)))
        })
        .await
        .unwrap_or_else(|e| {
            Err(UpdateError::Health(format!(
                "the start-up task failed: {e}"
            )))
        })
    }

    /// Fetch and pin `digest`.
    async fn fetch(&self, digest: &str) -> Result<(), UpdateError> {
        self.status(|m| m.state = "downloading".into());
        self.source.fetch(&self.shared.store, digest).await?;
        failpoint("downloaded");
        let d: weft_oci::Digest = digest
            .parse()
            .map_err(|_| UpdateError::Store(weft_oci::OciError::BadDigest(digest.into())))?;
        let size = std::fs::metadata(self.shared.store.blob_path(&d))
            .map(|m| m.len())
            .map_err(|_| UpdateError::Store(weft_oci::OciError::MissingBlob(digest.into())))?;
        let desc = weft_oci::Descriptor::new(weft_oci::MediaType::ImageManifest, size, d);
        self.shared
            .store
            .tag(&pin(&self.cfg.name, digest), &desc)
            .map_err(UpdateError::Store)?;
        Ok(())
    }

    async fn update(&self, d: &Desired, live: Option<&mut Live>) -> Result<(), UpdateError> {
        match live {
            Some(live) => self.update_service(d, live).await,
            None => self.update_job(d).await,
        }
    }

    /// Mark a switch to `digest` as started; refuse it when earlier ones
    /// were cut short three times.
    fn begin_switch(&self, digest: &str) -> Result<(), UpdateError> {
        let attempts = self.shared.commit(&self.cfg.name, |m| {
            let attempts = match &m.pending {
                Some(p) if p.digest == digest => p.attempts + 1,
                _ => 1,
            };
            m.pending = Some(crate::state::Pending {
                digest: digest.to_owned(),
                attempts,
            });
            attempts
        });
        if attempts > 3 {
            return Err(UpdateError::Health(
                "switching to it was interrupted three times (the agent died during its probation)"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn update_service(&self, d: &Desired, live: &mut Live) -> Result<(), UpdateError> {
        let name = self.cfg.name.clone();
        self.fetch(&d.digest).await?;
        self.status(|m| m.state = "checking".into());
        let prepared = self.prepare_service(&live.server, &d.digest).await?;
        check_service(&live.server, &prepared, &self.cfg.health)
            .await
            .map_err(UpdateError::Health)?;
        self.begin_switch(&d.digest)?;
        failpoint("staged");
        let old = live.server.install(prepared.clone());
        let old_digest = live.serving.as_ref().map(|(d, _)| d.clone());
        live.serving = Some((d.digest.clone(), prepared.clone()));
        failpoint("switched");
        tracing::info!(module = %name, "switched to {}; probation {:?}", short(&d.digest), self.settings.probation);
        self.status(|m| {
            m.state = "probation".into();
            m.running = Some(d.digest.clone());
            m.version = Some(prepared.version().to_owned());
        });
        self.shared
            .metrics
            .set_running(&name, old_digest.as_deref(), Some(&d.digest));

        // Probation: the new version keeps passing, or the old one is back.
        let until = Instant::now() + self.settings.probation;
        let mut checks = 0;
        let mut stop = self.stop.clone();
        let failed = loop {
            let r = check_service(&live.server, &prepared, &self.cfg.health).await;
            checks += 1;
            self.set_health(&r);
            if let Err(e) = r {
                break Some(e);
            }
            if Instant::now() >= until {
                break None;
            }
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = tokio::time::sleep(self.settings.check_every.min(until - Instant::now())) => {}
            }
        };
        if let Some(reason) = failed {
            failpoint("rolling-back");
            let reason = format!("health check failed after the switch: {reason}");
            match old {
                Some(o) => {
                    live.server.install(o.clone());
                    live.serving = old_digest.clone().map(|d| (d, o));
                }
                None => {
                    live.server.remove(&self.cfg.model);
                    live.serving = None;
                }
            }
            tracing::error!(module = %name, "rolled back from {}: {reason}", short(&d.digest));
            self.shared
                .metrics
                .count(&self.shared.metrics.updates, &name, "rolled_back");
            self.shared
                .metrics
                .set_running(&name, Some(&d.digest), old_digest.as_deref());
            let last = self.shared.commit(&name, |m| {
                m.refused.insert(d.digest.clone(), reason.clone());
                m.pending = None;
                m.record(
                    TransitionKind::Rollback,
                    Some(d.digest.clone()),
                    old_digest.clone(),
                    reason.clone(),
                );
                m.last().cloned()
            });
            let version = live.serving.as_ref().map(|(_, p)| p.version().to_owned());
            self.status(|m| {
                m.running = old_digest.clone();
                m.version = version;
                m.state = if old_digest.is_some() {
                    "running".into()
                } else {
                    "waiting".into()
                };
                m.error = Some(format!("rolled back from {}: {reason}", short(&d.digest)));
                m.last_transition = last;
            });
            if let Some((_, p)) = &live.serving {
                let r = check_service(&live.server, p, &self.cfg.health).await;
                self.set_health(&r);
            }
            return Ok(());
        }
        drop(old);
        self.commit_update(
            &d.digest,
            format!(
                "passed its health check ({checks} check(s) over {}s of probation)",
                self.settings.probation.as_secs()
            ),
        );
        Ok(())
    }

    fn commit_update(&self, digest: &str, reason: String) {
        let name = &self.cfg.name;
        let keep = self.settings.keep;
        let ms = self.shared.commit(name, |m| {
            let from = m.current.clone();
            m.promote(digest, keep);
            m.record(
                TransitionKind::Update,
                from,
                Some(digest.to_owned()),
                reason,
            );
            m.clone()
        });
        failpoint("committed");
        tracing::info!(module = %name, "now runs {}", short(digest));
        self.shared
            .metrics
            .count(&self.shared.metrics.updates, name, "applied");
        self.status(|m| {
            m.state = "running".into();
            m.error = None;
            m.previous = ms.previous.clone();
            m.last_transition = ms.last().cloned();
            m.last_run = ms.last_run.clone();
        });
        self.shared.retain();
    }

    async fn update_job(&self, d: &Desired) -> Result<(), UpdateError> {
        self.fetch(&d.digest).await?;
        self.status(|m| m.state = "checking".into());
        self.begin_switch(&d.digest)?;
        failpoint("staged");
        match self.run_job(&d.digest).await {
            Ok(()) => {
                let old = self.shared.module_state(&self.cfg.name).current;
                self.shared
                    .metrics
                    .set_running(&self.cfg.name, old.as_deref(), Some(&d.digest));
                self.status(|m| m.running = Some(d.digest.clone()));
                self.commit_update(&d.digest, "its run succeeded".into());
                Ok(())
            }
            Err(reason) => Err(UpdateError::Health(reason)),
        }
    }

    /// Run a job version once under its limits; record the run.
    async fn run_job(&self, digest: &str) -> Result<(), String> {
        let shared = self.shared.clone();
        let cfg = self.cfg.clone();
        let digest_owned = digest.to_owned();
        self.status(|m| m.state = "running job".into());
        let outcome =
            tokio::task::spawn_blocking(move || run_job_blocking(&shared, &cfg, &digest_owned))
                .await
                .unwrap_or_else(|e| Err((1, format!("the job task failed: {e}"))));
        let (code, ok, message) = match &outcome {
            Ok((code, out)) => (*code, true, out.clone()),
            Err((code, why)) => (*code, false, why.clone()),
        };
        let run = Run {
            digest: digest.to_owned(),
            at: crate::state::now(),
            exit_code: code,
            ok,
            message: message.chars().take(500).collect(),
        };
        let is_current = self.shared.commit(&self.cfg.name, |m| {
            let current = m.current.as_deref() == Some(digest);
            if current || ok {
                m.last_run = Some(run.clone());
            }
            current
        });
        self.set_health(&if ok { Ok(()) } else { Err(message.clone()) });
        self.status(|m| {
            m.last_run = Some(run);
            m.state = if is_current || ok {
                "running".into()
            } else {
                m.state.clone()
            };
        });
        if ok { Ok(()) } else { Err(message) }
    }
}

/// `(exit code, stdout)` of a successful run; `(exit code, why)` otherwise.
fn run_job_blocking(
    shared: &Shared,
    cfg: &ModuleConfig,
    digest: &str,
) -> Result<(i32, String), (i32, String)> {
    let reference = pin(&cfg.name, digest);
    weft_module::verify(&shared.store, &reference)
        .map_err(|e| (1, format!("verifying: {}", chain(&e))))?;
    let resolved =
        weft_module::from_store(&shared.store, &reference).map_err(|e| (1, chain(&e)))?;
    let stdout = weft_runtime::MemoryOutputPipe::new(1 << 20);
    let prepared = shared
        .runtime
        .prepare(
            resolved,
            weft_runtime::Purpose::Run,
            weft_runtime::Launch {
                args: cfg.args.clone(),
                env: cfg.env.clone(),
                limits: weft_runtime::Limits {
                    max_memory: cfg.max_memory,
                    timeout: Some(cfg.deadline),
                    fuel: None,
                },
                stdout: Some(stdout.clone()),
                ..Default::default()
            },
        )
        .map_err(|e| (1, chain(&e)))?;
    let code = prepared
        .run(&shared.runtime)
        .map_err(|e| (e.exit_code(), chain(&e)))?;
    let out = String::from_utf8_lossy(&stdout.contents()).into_owned();
    for line in out.lines() {
        tracing::info!(module = %cfg.name, "job: {line}");
    }
    if code != 0 {
        return Err((code, format!("exited with code {code}")));
    }
    if let Health::Job { stdout: Some(want) } = &cfg.health
        && !out.contains(want.as_str())
    {
        return Err((code, format!("its output lacks {want:?}")));
    }
    Ok((code, out.trim().chars().take(200).collect()))
}

/// A service's health check on a version (live or not yet).
pub async fn check_service(server: &Server, p: &Prepared, health: &Health) -> Result<(), String> {
    match health {
        Health::Inference {
            request,
            expect,
            tolerance,
        } => {
            let (inputs, requested) = weft_serve::rest::decode_json_request(request.as_bytes())
                .map_err(|e| format!("the configured health request is bad: {}", e.message))?;
            let done = server
                .infer_prepared(p, inputs, &requested)
                .await
                .map_err(|e| e.message)?;
            let outputs: Vec<_> = done
                .outputs
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.shape.clone(),
                        weft_serve::rest::tensor_json(t),
                    )
                })
                .collect();
            crate::health::compare(&outputs, expect, *tolerance)
        }
        // It started: its instances initialized and it described itself.
        Health::Probe | Health::Job { .. } => Ok(()),
    }
}
