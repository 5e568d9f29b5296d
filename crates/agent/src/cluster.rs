//! The cluster as a desired-state source (`[cluster]` in the config).
//!
//! The agent registers its device as an `EdgeDevice` in the namespace,
//! renews the device's `Lease` (its heartbeat), reads the assignments the
//! operator writes into the device's spec and runs them next to the
//! config file's own modules, and reports what runs (digest, health,
//! request and failure counters) in the device's status.
//!
//! Offline first: the assignments last read are kept in
//! `<dir>/cluster-assignments.json`; an agent that starts while the API
//! server is unreachable runs those, and losing the API server never stops
//! what runs. Only a successful read of the device changes the modules.

use crate::config::{ClusterSettings, Health, Kind, ModuleConfig};
use crate::status::Status;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_crd::{
    Assignment, DeviceCapacity, EdgeDevice, EdgeDeviceSpec, EdgeDeviceStatus, ModuleReport,
};

const MANAGER: &str = "weft-agent";

/// A client for the configured cluster.
pub async fn connect(settings: &ClusterSettings) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("[cluster] kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("[cluster] kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "[cluster] has no kubeconfig and none was found (KUBECONFIG, ~/.kube/config, in-cluster)",
        )?,
    };
    kube::Client::try_from(config).context("[cluster] building the Kubernetes client")
}

/// The Kubernetes name of this machine's architecture.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// What the operator assigned, as modules the agent runs. An assignment
/// the agent cannot run is left out with the reason.
pub fn modules(
    assignments: &BTreeMap<String, Assignment>,
    settings: &ClusterSettings,
) -> (Vec<ModuleConfig>, Vec<(String, String)>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (key, a) in assignments {
        match module(key, a, settings) {
            Ok(m) => ok.push(m),
            Err(why) => refused.push((key.clone(), why)),
        }
    }
    (ok, refused)
}

fn module(key: &str, a: &Assignment, settings: &ClusterSettings) -> Result<ModuleConfig, String> {
    let reference = weft_oci::parse_reference(&a.artifact)
        .map_err(|e| format!("artifact {:?}: {e}", a.artifact))?;
    if reference.digest().is_none() {
        return Err(format!(
            "artifact {:?} is not pinned to a digest (the operator always pins one)",
            a.artifact
        ));
    }
    let max_memory = match &a.memory {
        Some(q) => weft_crd::quantity::bytes(q)
            .ok_or_else(|| format!("memory {q:?} is not a quantity such as 256Mi"))?
            as usize,
        None => 256 << 20,
    };
    let health = match &a.health {
        Some(h) => {
            serde_json::from_str::<Value>(&h.request)
                .map_err(|e| format!("health.request is not JSON: {e}"))?;
            let expect: Value = serde_json::from_str(&h.expect)
                .map_err(|e| format!("health.expect is not JSON: {e}"))?;
            Health::Inference {
                request: h.request.clone(),
                expect,
                tolerance: 1e-4,
            }
        }
        None => Health::Probe,
    };
    Ok(ModuleConfig {
        name: key.to_owned(),
        source: a.artifact.clone(),
        kind: Kind::Service,
        bind: Some(std::net::SocketAddr::new(settings.bind, a.port)),
        grpc: None,
        model: a.model_name.clone(),
        instances: 1,
        queue: 16,
        deadline: Duration::from_secs(30),
        max_memory,
        env: Vec::new(),
        args: Vec::new(),
        every: None,
        health,
    })
}

fn cache_path(dir: &Path) -> PathBuf {
    dir.join("cluster-assignments.json")
}

/// The assignments last read from the cluster, kept for offline starts.
pub fn cached(dir: &Path) -> Option<BTreeMap<String, Assignment>> {
    let text = std::fs::read(cache_path(dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The cluster loop: register, heartbeat, follow assignments, report.
pub struct Cluster {
    /// Connected from the settings' kubeconfig when not given.
    pub client: Option<kube::Client>,
    pub settings: ClusterSettings,
    pub dir: PathBuf,
    pub status: Arc<Status>,
    /// The modules the cluster asks for (sent on every change).
    pub desired: watch::Sender<Vec<ModuleConfig>>,
    pub stop: watch::Receiver<bool>,
    /// Assignments refused last time (their status entries go when they do).
    pub refused: Vec<String>,
}

impl Cluster {
    fn devices(&self, client: &kube::Client) -> Api<EdgeDevice> {
        Api::namespaced(client.clone(), &self.settings.namespace)
    }

    /// Send the modules for `assignments`, noting refusals in the status.
    fn publish(&mut self, assignments: &BTreeMap<String, Assignment>) {
        let (ok, refused) = modules(assignments, &self.settings);
        for gone in self
            .refused
            .iter()
            .filter(|k| !refused.iter().any(|(r, _)| r == *k))
        {
            self.status.remove(gone);
        }
        self.refused = refused.iter().map(|(k, _)| k.clone()).collect();
        for (key, why) in refused {
            tracing::error!(assignment = %key, "cannot run this assignment: {why}");
            self.status.module(&key, |s| {
                s.state = "failed".into();
                s.source = "cluster".into();
                s.error = Some(format!("assignment {key}: {why}"));
            });
        }
        self.desired.send_if_modified(|cur| {
            let changed = *cur != ok;
            *cur = ok;
            changed
        });
    }

    pub async fn run(mut self) {
        let s = &self.settings;
        tracing::info!(
            "cluster source: device {} in namespace {}",
            s.device,
            s.namespace
        );
        let mut last: Option<BTreeMap<String, Assignment>> = cached(&self.dir);
        if let Some(a) = last.clone() {
            tracing::info!(
                "running {} cached cluster assignment(s) until the cluster answers",
                a.len()
            );
            self.publish(&a);
        }
        let mut registered = false;
        loop {
            match self.pass(&mut registered).await {
                Ok(assignments) => {
                    self.status.agent(|a| {
                        let c = a.cluster.get_or_insert_with(Default::default);
                        c.last_contact = Some(crate::state::now());
                        c.error = None;
                    });
                    if last.as_ref() != Some(&assignments) {
                        let bytes = serde_json::to_vec_pretty(&assignments).unwrap_or_default();
                        if let Err(e) = crate::state::write_atomic(&cache_path(&self.dir), &bytes) {
                            tracing::warn!("caching the cluster assignments: {e}");
                        }
                        self.publish(&assignments);
                        last = Some(assignments);
                    }
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::warn!("cluster: {why}; what runs keeps running");
                    self.status.agent(|a| {
                        a.cluster.get_or_insert_with(Default::default).error = Some(why);
                    });
                }
            }
            tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(self.settings.renew) => {}
            }
        }
    }

    /// One round trip; the device's assignments.
    async fn pass(
        &mut self,
        registered: &mut bool,
    ) -> anyhow::Result<BTreeMap<String, Assignment>> {
        use anyhow::Context as _;
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = connect(&self.settings).await?;
                self.client = Some(c.clone());
                c
            }
        };
        let s = &self.settings;
        let devices = self.devices(&client);
        if !*registered {
            self.register(&client).await?;
            *registered = true;
        }
        self.renew(&client)
            .await
            .context("renewing the device's lease")?;
        let device = match devices.get(&s.device).await {
            Ok(d) => d,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // Deleted by someone: register again next time.
                *registered = false;
                anyhow::bail!(
                    "the EdgeDevice {} is gone from {}; registering it again",
                    s.device,
                    s.namespace
                );
            }
            Err(e) => return Err(e).context("reading the EdgeDevice"),
        };
        self.report(&client, &device)
            .await
            .context("reporting status")?;
        Ok(device.spec.assignments)
    }

    /// Create the `EdgeDevice`, or bring its labels up to date.
    async fn register(&self, client: &kube::Client) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let s = &self.settings;
        let devices = self.devices(client);
        let device = EdgeDevice {
            metadata: ObjectMeta {
                name: Some(s.device.clone()),
                namespace: Some(s.namespace.clone()),
                labels: Some(s.labels.clone()),
                ..Default::default()
            },
            spec: EdgeDeviceSpec::default(),
            status: None,
        };
        match devices.create(&PostParams::default(), &device).await {
            Ok(_) => tracing::info!("registered EdgeDevice {}/{}", s.namespace, s.device),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                devices
                    .patch(
                        &s.device,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": s.labels}})),
                    )
                    .await
                    .context("updating the EdgeDevice's labels")?;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "registering EdgeDevice {}/{} (is deploy/crds.yaml applied, and may this agent create edgedevices?)",
                        s.namespace, s.device
                    )
                });
            }
        }
        Ok(())
    }

    async fn renew(&self, client: &kube::Client) -> kube::Result<()> {
        let s = &self.settings;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
        let name = weft_crd::lease_name(&s.device);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(s.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.device.clone()),
                lease_duration_seconds: Some(weft_crd::LEASE_SECONDS),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            }),
        };
        leases
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await?;
        Ok(())
    }

    async fn report(&self, client: &kube::Client, device: &EdgeDevice) -> kube::Result<()> {
        let s = &self.settings;
        let snapshot = self.status.snapshot();
        let mut modules = BTreeMap::new();
        for key in device.spec.assignments.keys() {
            let Some(m) = snapshot.modules.get(key) else {
                continue;
            };
            let model = &device.spec.assignments[key].model_name;
            let counts = match &m.bind {
                Some(bind) => served(bind, model).await,
                None => Default::default(),
            };
            modules.insert(
                key.clone(),
                ModuleReport {
                    digest: m.running.clone(),
                    health: m.health.clone(),
                    state: m.state.clone(),
                    requests: counts.requests,
                    failures: counts.failures,
                },
            );
        }
        let status = EdgeDeviceStatus {
            architecture: Some(architecture().into()),
            accelerators: s.accelerators.clone(),
            capacity: Some(DeviceCapacity {
                memory_bytes: s.memory,
                cpus: s.cpus,
                modules: s.max_modules,
            }),
            running_modules: snapshot
                .modules
                .values()
                .filter(|m| m.running.is_some())
                .count() as u32,
            modules,
            agent_version: Some(env!("CARGO_PKG_VERSION").into()),
            last_heartbeat: Some(crate::state::now()),
        };
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        // Modules no longer reported are removed (a merge patch keeps
        // what it does not mention).
        if let Some(old) = &device.status {
            for key in old
                .modules
                .keys()
                .filter(|k| !status.modules.contains_key(*k))
            {
                value["modules"][key] = Value::Null;
            }
        }
        self.devices(client)
            .patch_status(
                &s.device,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": value })),
            )
            .await?;
        Ok(())
    }
}

/// A module's request and failure counters from its own `/metrics`.
async fn served(bind: &str, model: &str) -> weft_crd::counters::Counts {
    let local = match bind.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        _ => bind.to_owned(),
    };
    match crate::http_get(&local, "/metrics").await {
        Ok((200, text)) => weft_crd::counters::parse(&text, model),
        _ => Default::default(),
    }
}
