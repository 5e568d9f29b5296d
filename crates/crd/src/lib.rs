//! `weft-crd`: Weft's Kubernetes custom resources, `weft.dev/v1alpha1`.
//!
//! - [`ModelDeployment`]: a model module placed across cloud nodes and
//!   edge devices, with a canary rollout gated on health. The operator
//!   (`weft-operator`) reconciles it.
//! - [`EdgeDevice`]: a device running `weft agent`, registered by the agent
//!   itself; the operator writes its assignments, the agent follows them
//!   and reports back. Its heartbeat is a `Lease` ([`lease_name`]).
//!
//! `weft-operator`'s `crdgen` prints the CustomResourceDefinitions
//! (`deploy/crds.yaml`).

pub mod counters;
pub mod quantity;
mod types;

pub use types::*;

/// The API group.
pub const GROUP: &str = "weft.dev";

/// The heartbeat `Lease` of an edge device, in the device's namespace.
pub fn lease_name(device: &str) -> String {
    format!("weft-edge-{device}")
}

/// How long a device may miss its heartbeat before it counts as offline.
pub const LEASE_SECONDS: i32 = 40;
/// How often an agent renews its lease.
pub const RENEW_SECONDS: u64 = 10;

/// The key of a deployment's placement in a device's assignments.
pub fn assignment_key(deployment: &str, placement: &str) -> String {
    format!("{deployment}-{placement}")
}
