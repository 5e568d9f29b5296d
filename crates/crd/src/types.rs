//! The custom resources of `weft.dev/v1alpha1`: [`ModelDeployment`] (what
//! should run where) and [`EdgeDevice`] (a device running `weft agent`).
//! `crdgen` prints their CustomResourceDefinitions into `deploy/crds.yaml`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A model module placed across cloud nodes and edge devices, with a
/// canary rollout gated on its health.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "md",
    printcolumn = r#"{"name":"Artifact","type":"string","jsonPath":".spec.artifact"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.stableDigest","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Canary%","type":"integer","jsonPath":".status.canary.percent"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model-module artifact: `registry/repo:tag` (resolved to a digest,
    /// recorded in the status, and followed) or `registry/repo@sha256:...`.
    pub artifact: String,
    /// Where replicas run: each placement is a tier (cloud nodes or edge
    /// devices) with its own replica count and rules.
    pub placements: Vec<Placement>,
    /// The REST port the module serves (the Open Inference Protocol).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The served model name (`/v2/models/{name}`); defaults to the
    /// deployment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<UpdateStrategy>,
    /// The sample inference edge agents check a version with before they
    /// serve it (`weft agent` health), as V2 JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

fn default_port() -> u16 {
    8000
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// A name unique in this deployment (`cloud`, `edge-eu`, ...).
    pub name: String,
    pub tier: Tier,
    pub replicas: u32,
    /// Labels a node or device must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// `amd64`, `arm64`, ...: only targets of this architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<AcceleratorRule>,
    /// At most one replica per node or device.
    #[serde(default)]
    pub spread: bool,
    /// Taints the cloud pods tolerate (as in a pod spec). A required
    /// accelerator adds a toleration for its own kind's taint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// A pod toleration, as in `spec.tolerations` of a pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    /// Kubernetes nodes with the weft runtime: a Deployment and a Service
    /// with `runtimeClassName: weft`.
    #[default]
    Cloud,
    /// Devices running `weft agent` (EdgeDevice objects): the assignment is
    /// written into the device's spec, which its agent follows.
    Edge,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorRule {
    /// The extended resource or device kind, e.g. `nvidia.com/gpu`.
    pub kind: String,
    /// Required: only targets that have it. Otherwise preferred.
    #[serde(default)]
    pub required: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU request and limit, a Kubernetes quantity (`500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory limit, a Kubernetes quantity (`256Mi`): the container's limit
    /// and, less the models, the module's memory cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// Roll a new digest out step by step while its health holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Percent of each placement's replicas on the new digest, step by
    /// step, rising to 100 (e.g. `[10, 50, 100]`).
    pub steps: Vec<u32>,
    pub gate: HealthGate,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// Lowest share of successful inference requests, 0 to 1.
    pub min_success_rate: f64,
    /// Highest 99th-percentile latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_latency_ms: Option<u64>,
    /// How long each step must hold before the next.
    pub window_seconds: u64,
    /// Requests needed in the window before the gate decides.
    #[serde(default)]
    pub min_requests: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub request: String,
    pub expect: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The digest `spec.artifact` resolves to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_digest: Option<String>,
    /// The digest every replica runs outside a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Digests rolled back, with the reason: not tried again while the
    /// artifact resolves to them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlacementStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    pub digest: String,
    /// Index into `spec.strategy.canary.steps`.
    pub step: u32,
    pub percent: u32,
    /// When the current step began (RFC 3339).
    pub step_started: String,
    /// Counters of the canary's replicas when the step began, so the gate
    /// reads only the step's own traffic.
    #[serde(default)]
    pub baseline_requests: u64,
    #[serde(default)]
    pub baseline_failures: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    pub name: String,
    pub tier: Tier,
    pub desired: u32,
    /// Replicas placed (on nodes the scheduler may use, or on devices).
    pub scheduled: u32,
    pub ready: u32,
    /// Replicas per digest, as observed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, u32>,
    /// Devices that carry an assignment (edge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Why some replicas have nowhere to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<String>,
}

/// A Kubernetes-style condition.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Default for Condition {
    fn default() -> Self {
        Condition {
            type_: String::new(),
            status: "Unknown".into(),
            reason: String::new(),
            message: String::new(),
            last_transition_time: String::new(),
            observed_generation: None,
        }
    }
}

/// A device running `weft agent`, registered by the agent itself. Its
/// heartbeat is the `Lease` `weft-edge-<name>` in the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "EdgeDevice",
    namespaced,
    status = "EdgeDeviceStatus",
    shortname = "ed",
    printcolumn = r#"{"name":"Arch","type":"string","jsonPath":".status.architecture"}"#,
    printcolumn = r#"{"name":"Modules","type":"integer","jsonPath":".status.runningModules"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.lastHeartbeat"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EdgeDeviceSpec {
    /// What runs here, keyed by `<deployment>-<placement>`; written by the
    /// operator, followed by the device's agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assignments: BTreeMap<String, Assignment>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// `registry/repo@sha256:...`: always a digest.
    pub artifact: String,
    pub port: u16,
    pub model_name: String,
    /// The `ModelDeployment` that wrote it (in the device's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// A Kubernetes quantity: the module's memory cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeDeviceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Accelerator kinds and counts (`nvidia.com/gpu: 1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accelerators: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<DeviceCapacity>,
    /// What the agent runs, per assignment key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modules: BTreeMap<String, ModuleReport>,
    #[serde(default)]
    pub running_modules: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The agent's last report (RFC 3339); the Lease is the heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCapacity {
    pub memory_bytes: u64,
    pub cpus: u32,
    /// Modules it may run at once.
    pub modules: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `ok`, `failing: ...`, `unknown`.
    pub health: String,
    pub state: String,
    /// Inference requests served and failed, so a canary gate can read an
    /// edge replica as it reads a pod.
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub failures: u64,
}
