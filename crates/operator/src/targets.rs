//! What the cluster offers: Kubernetes nodes with the weft runtime, and the
//! namespace's edge devices (online while their Lease is fresh), as
//! placement targets.

use crate::placement::Target;
use crate::quantity;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use weft_crd::{EdgeDevice, Tier};

/// The label the node installer sets once the shim works there (the
/// RuntimeClass schedules only onto such nodes).
pub const RUNTIME_READY: &str = "weft.dev/runtime";
/// `edge` on a Kubernetes node (k3s at a site, with the shim) makes it a
/// target of edge placements instead of cloud ones.
pub const TIER: &str = "weft.dev/tier";

/// A node, if it carries the weft runtime.
pub fn node_target(n: &Node) -> Option<Target> {
    let labels = n.metadata.labels.clone().unwrap_or_default();
    if labels.get(RUNTIME_READY).map(String::as_str) != Some("ready") {
        return None;
    }
    let status = n.status.as_ref();
    let alloc = status
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let accelerators = alloc
        .iter()
        .filter(|(k, _)| k.contains('/'))
        .filter_map(|(k, v)| {
            v.0.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| (k.clone(), n))
        })
        .collect();
    // k3s and other edge nodes with the shim take edge placements.
    let tier = if labels.get(TIER).map(String::as_str) == Some("edge") {
        Tier::Edge
    } else {
        Tier::Cloud
    };
    Some(Target {
        name: n.metadata.name.clone().unwrap_or_default(),
        tier,
        node: true,
        architecture: labels
            .get("kubernetes.io/arch")
            .cloned()
            .unwrap_or_else(|| "amd64".into()),
        labels,
        accelerators,
        memory: alloc
            .get("memory")
            .and_then(|q| quantity::bytes(&q.0))
            .unwrap_or(0),
        slots: alloc
            .get("pods")
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(110),
        online: ready,
    })
}

/// Whether a device's Lease says it is alive at `now`.
pub fn lease_fresh(lease: Option<&Lease>, now: Timestamp) -> bool {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return false;
    };
    let Some(renewed) = spec.renew_time.as_ref() else {
        return false;
    };
    let secs = i64::from(
        spec.lease_duration_seconds
            .unwrap_or(weft_crd::LEASE_SECONDS),
    );
    renewed.0.as_second() + secs > now.as_second()
}

/// A device as a target, its capacity less what other deployments'
/// assignments take (`exclude` names this deployment's assignment keys).
pub fn device_target(d: &EdgeDevice, online: bool, exclude: &dyn Fn(&str) -> bool) -> Target {
    let status = d.status.clone().unwrap_or_default();
    let cap = status.capacity.clone().unwrap_or_default();
    let others: Vec<_> = d
        .spec
        .assignments
        .iter()
        .filter(|(k, _)| !exclude(k))
        .collect();
    let used: u64 = others
        .iter()
        .map(|(_, a)| {
            a.memory
                .as_deref()
                .and_then(quantity::bytes)
                .unwrap_or(crate::DEFAULT_MEMORY)
        })
        .sum();
    Target {
        name: d.metadata.name.clone().unwrap_or_default(),
        tier: Tier::Edge,
        labels: d.metadata.labels.clone().unwrap_or_default(),
        architecture: status
            .architecture
            .clone()
            .unwrap_or_else(|| "amd64".into()),
        accelerators: status.accelerators.clone(),
        memory: cap.memory_bytes.saturating_sub(used),
        slots: cap.modules.saturating_sub(others.len() as u32),
        online,
        node: false,
    }
}

/// Leases by name.
pub fn leases_by_name(leases: Vec<Lease>) -> BTreeMap<String, Lease> {
    leases
        .into_iter()
        .filter_map(|l| Some((l.metadata.name.clone()?, l)))
        .collect()
}
