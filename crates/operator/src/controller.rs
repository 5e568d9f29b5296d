//! The `ModelDeployment` reconciler.
//!
//! Each pass: check the spec; resolve the artifact to a digest; see what the
//! cluster offers (nodes with the weft runtime, online edge devices);
//! place every placement's replicas; decide the rollout's next move; then
//! write the result (server-side apply of Deployments and Services for
//! cloud placements, merge patches of device assignments for edge ones)
//! and the status, whose conditions say why anything is not ready. Nothing
//! is written for a deployment whose spec is invalid or whose artifact does
//! not resolve, and a cloud placement with nowhere to run gets no
//! Deployment: there is no partial rollout.

use crate::children::{self, Track};
use crate::error::{Error, Result};
use crate::health::{Counts, HealthSource};
use crate::metrics::Metrics;
use crate::placement::{self, Demand};
use crate::quantity;
use crate::resolve::{Resolver, pinned};
use crate::rollout::{self, Decision, GateReading, InFlight};
use crate::targets;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weft_crd::{
    CanaryStatus, Condition, EdgeDevice, ModelDeployment, ModelDeploymentStatus, PlacementStatus,
    Tier, assignment_key,
};

pub const FINALIZER: &str = "weft.dev/cleanup";
const MANAGER: &str = "weft-operator";

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub resolver: Arc<dyn Resolver>,
    pub health: Arc<dyn HealthSource>,
    pub metrics: Arc<Metrics>,
    /// The time, replaceable in tests.
    pub now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Events for `kubectl describe` (the `events.k8s.io` API).
    pub recorder: kube::runtime::events::Recorder,
}

/// The reporter of the operator's events.
pub fn reporter() -> kube::runtime::events::Reporter {
    kube::runtime::events::Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

#[tracing::instrument(skip_all, fields(md = %md.name_any(), ns = md.namespace().unwrap_or_default()))]
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = md.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, md, |event| async {
        match event {
            Event::Apply(md) => apply(&md, &ctx).await,
            Event::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(md = %md.name_any(), "reconcile failed: {}", crate::error::chain(error));
    ctx.metrics.reconcile_failed(error);
    Action::requeue(Duration::from_secs(30))
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now.into(),
        observed_generation: generation,
    }
}

/// Keep a condition's transition time when its status did not change.
fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = o.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Problems with a spec, worded for `kubectl describe`.
pub fn validate(md: &ModelDeployment) -> std::result::Result<(), String> {
    let s = &md.spec;
    if s.placements.is_empty() {
        return Err("spec.placements is empty: say where replicas run".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &s.placements {
        if !names.insert(&p.name) {
            return Err(format!("two placements are named {:?}", p.name));
        }
        let ok = !p.name.is_empty()
            && p.name.len() <= 30
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "placement name {:?} must be 1-30 lowercase letters, digits and '-'",
                p.name
            ));
        }
    }
    if weft_oci::parse_reference(&s.artifact).is_err() {
        return Err(format!(
            "spec.artifact {:?} is not a registry reference (registry/repo:tag or registry/repo@sha256:...)",
            s.artifact
        ));
    }
    if let Some(m) = s.resources.as_ref().and_then(|r| r.memory.as_ref())
        && quantity::bytes(m).is_none()
    {
        return Err(format!(
            "spec.resources.memory {m:?} is not a quantity such as 256Mi"
        ));
    }
    if let Some(c) = s.strategy.as_ref().and_then(|st| st.canary.as_ref()) {
        rollout::validate(c)?;
    }
    Ok(())
}

/// Write `status` over `old` as a JSON merge patch that also clears what
/// `status` no longer has (a finished canary, a resolved digest).
async fn write_status(
    api: &Api<ModelDeployment>,
    name: &str,
    old: &ModelDeploymentStatus,
    status: &ModelDeploymentStatus,
) -> Result<()> {
    let old = serde_json::to_value(old).map_err(Error::Json)?;
    let new = serde_json::to_value(status).map_err(Error::Json)?;
    let patch = json!({ "status": merge_patch(&old, &new) });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// An Event for each condition that changed (what `kubectl describe`
/// lists), warnings for what needs someone's attention. A failure to
/// publish is logged, never fatal.
async fn announce(ctx: &Context, md: &ModelDeployment, old: &[Condition], new: &[Condition]) {
    use kube::runtime::events::{Event as KEvent, EventType};
    const QUIET: [&str; 3] = ["CanaryHolding", "Waiting", "Placed"];
    for c in new {
        let same = old.iter().any(|o| {
            o.type_ == c.type_
                && o.status == c.status
                && o.reason == c.reason
                && (c.type_ != "Progressing" || o.message == c.message)
        });
        if same
            || QUIET.contains(&c.reason.as_str())
            || (c.type_ == "ArtifactResolved" && c.status == "True")
        {
            continue;
        }
        let warning = c.reason == "RolledBack" || (c.status == "False" && c.type_ != "Progressing");
        let event = KEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: c.reason.clone(),
            note: Some(c.message.chars().take(1000).collect()),
            action: c.type_.clone(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
            tracing::warn!("publishing the event {}: {e}", c.reason);
        }
    }
}

/// The RFC 7386 merge patch that turns `old` into `new`.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        out.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    let name = md.name_any();
    let ns = md.namespace().unwrap_or_else(|| "default".into());
    let generation = md.metadata.generation;
    let now = (ctx.now)();
    let now_s = now.to_string();
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let old = md.status.clone().unwrap_or_default();
    let mut status = ModelDeploymentStatus {
        observed_generation: generation,
        ..old.clone()
    };

    // 1. The spec.
    if let Err(why) = validate(md) {
        status.conditions = merge_conditions(
            &old.conditions,
            vec![condition(
                "Ready",
                false,
                "InvalidSpec",
                why,
                generation,
                &now_s,
            )],
        );
        write_status(&api, &name, &old, &status).await?;
        announce(ctx, md, &old.conditions, &status.conditions).await;
        return Ok(Action::await_change());
    }

    // 2. The artifact.
    let resolved = match ctx.resolver.resolve(&md.spec.artifact).await {
        Ok(d) => d,
        Err(e) => {
            let reason = e.reason();
            status.conditions = merge_conditions(
                &old.conditions,
                vec![
                    condition(
                        "ArtifactResolved",
                        false,
                        reason,
                        e.to_string(),
                        generation,
                        &now_s,
                    ),
                    condition(
                        "Ready",
                        old.stable_digest.is_some(),
                        reason,
                        format!("{e}; nothing changes until it resolves"),
                        generation,
                        &now_s,
                    ),
                ],
            );
            write_status(&api, &name, &old, &status).await?;
            announce(ctx, md, &old.conditions, &status.conditions).await;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };
    status.resolved_digest = Some(resolved.clone());

    // 3. What the cluster offers.
    let devices_api: Api<EdgeDevice> = Api::namespaced(ctx.client.clone(), &ns);
    let (all_targets, devices) = offered(ctx, md, &ns, now).await?;

    // 4. Placement.
    let outcomes = placement::place(&demands(md, &devices), &all_targets);

    // 5. The rollout.
    let progressing = roll_out(ctx, md, &resolved, now, &mut status).await;

    // 6. Write what runs.
    let (placements, unschedulable) =
        write_children(ctx, md, &ns, &outcomes, &devices, &status).await?;
    status.placements = placements;
    let keys: Vec<String> = md
        .spec
        .placements
        .iter()
        .map(|p| assignment_key(&name, &p.name))
        .collect();
    remove_assignments(&devices_api, &devices, md, &keys).await?;

    // 7. Conditions.
    let desired: u32 = md.spec.placements.iter().map(|p| p.replicas).sum();
    let ready: u32 = status.placements.iter().map(|p| p.ready).sum();
    let conds = closing_conditions(
        md,
        &resolved,
        &unschedulable,
        ready,
        progressing,
        generation,
        &now_s,
    );
    status.conditions = merge_conditions(&old.conditions, conds);
    write_status(&api, &name, &old, &status).await?;
    announce(ctx, md, &old.conditions, &status.conditions).await;
    ctx.metrics.replicas(&name, ready, desired);
    Ok(Action::requeue(requeue_after(md, &status)))
}

/// What the cluster offers: nodes with the weft runtime ready, and every
/// edge device (online or not, by its lease). The devices, for their
/// assignments.
async fn offered(
    ctx: &Context,
    md: &ModelDeployment,
    ns: &str,
    now: Timestamp,
) -> Result<(Vec<placement::Target>, Vec<EdgeDevice>)> {
    let name = md.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let nodes = nodes
        .list(&ListParams::default().labels(&format!("{}=ready", targets::RUNTIME_READY)))
        .await
        .map_err(Error::Kube)?;
    let devices_api: Api<EdgeDevice> = Api::namespaced(ctx.client.clone(), ns);
    let devices = devices_api
        .list(&ListParams::default())
        .await
        .map_err(Error::Kube)?;
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let leases = targets::leases_by_name(
        leases
            .list(&ListParams::default())
            .await
            .map_err(Error::Kube)?
            .items,
    );
    let ours = |key: &str| {
        md.spec
            .placements
            .iter()
            .any(|p| key == assignment_key(&name, &p.name))
    };
    let mut all: Vec<placement::Target> = nodes
        .items
        .iter()
        .filter_map(targets::node_target)
        .collect();
    for d in &devices.items {
        let lease = leases.get(&weft_crd::lease_name(&d.name_any()));
        all.push(targets::device_target(
            d,
            targets::lease_fresh(lease, now),
            &ours,
        ));
    }
    Ok((all, devices.items))
}

/// Each placement's demand: its replicas, tier, selectors, accelerator,
/// memory, and the devices that run it now (kept where they still fit).
fn demands(md: &ModelDeployment, devices: &[EdgeDevice]) -> Vec<Demand> {
    let name = md.name_any();
    let memory = md
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.memory.as_deref())
        .and_then(quantity::bytes)
        .unwrap_or(crate::DEFAULT_MEMORY);
    md.spec
        .placements
        .iter()
        .map(|p| Demand {
            placement: p.name.clone(),
            tier: p.tier,
            replicas: p.replicas,
            selector: p.node_selector.clone(),
            architecture: p.architecture.clone(),
            accelerator: p.accelerator.as_ref().map(|a| (a.kind.clone(), a.required)),
            memory,
            // One module per device: a device's agent runs an assignment once.
            spread: p.spread || p.tier == Tier::Edge,
            current: devices
                .iter()
                .filter(|d| {
                    d.spec
                        .assignments
                        .contains_key(&assignment_key(&name, &p.name))
                })
                .map(|d| d.name_any())
                .collect(),
        })
        .collect()
}

/// Read the canary's counters, decide the rollout's next move, record it in
/// `status` ([`transition`]) and count it; the `Progressing` condition.
async fn roll_out(
    ctx: &Context,
    md: &ModelDeployment,
    resolved: &str,
    now: Timestamp,
    status: &mut ModelDeploymentStatus,
) -> Condition {
    let name = md.name_any();
    let old = md.status.clone().unwrap_or_default();
    let now_s = now.to_string();
    let generation = md.metadata.generation;
    let strategy = md.spec.strategy.as_ref().and_then(|s| s.canary.as_ref());
    let in_flight = old.canary.as_ref().map(|c| InFlight {
        digest: c.digest.clone(),
        step: c.step as usize,
        elapsed: seconds_since(&c.step_started, now),
    });
    let reading = match &old.canary {
        Some(c) => {
            let counts = ctx
                .health
                .counts(&ctx.client, md, &c.digest)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!("reading the canary's health: {e}");
                    Counts::default()
                });
            Some(since(counts, c))
        }
        None => None,
    };
    let refused = old.refused.contains_key(resolved);
    let decision = rollout::decide(
        resolved,
        old.stable_digest.as_deref(),
        in_flight.as_ref(),
        refused,
        strategy,
        reading,
    );
    tracing::info!(?decision, "rollout");
    // The canary's baseline counters, for a canary that starts or moves.
    let baseline = match (&decision, &old.canary) {
        (Decision::Start { digest }, _)
        | (Decision::Advance { .. }, Some(CanaryStatus { digest, .. })) => ctx
            .health
            .counts(&ctx.client, md, digest)
            .await
            .unwrap_or_default(),
        _ => Counts::default(),
    };
    let progressing = transition(
        &decision,
        &Facts {
            resolved,
            old: &old,
            strategy,
            baseline,
            generation,
            now: &now_s,
        },
        status,
    );
    let outcome = match &decision {
        Decision::Start { .. } => Some("started"),
        Decision::Advance { .. } => Some("advanced"),
        Decision::Promote => Some("promoted"),
        Decision::RollBack { reason } => {
            tracing::warn!(
                "rolled back {}: {reason}",
                old.canary
                    .as_ref()
                    .map_or_else(|| "?".to_string(), |c| rollout::short(&c.digest))
            );
            Some("rolled_back")
        }
        _ => None,
    };
    if let Some(outcome) = outcome {
        ctx.metrics.rollout(&name, outcome);
    }

    progressing
}

/// Server-side apply the Deployments and Services of cloud placements and
/// merge-patch the assignments of edge devices; delete what no placement
/// wants any more. Each placement's status, and why replicas cannot run.
async fn write_children(
    ctx: &Context,
    md: &ModelDeployment,
    ns: &str,
    outcomes: &[placement::Outcome],
    devices: &[EdgeDevice],
    status: &ModelDeploymentStatus,
) -> Result<(Vec<PlacementStatus>, Vec<String>)> {
    let name = md.name_any();
    let resolved = status.resolved_digest.clone().unwrap_or_default();
    let devices_api: Api<EdgeDevice> = Api::namespaced(ctx.client.clone(), ns);
    let stable = status
        .stable_digest
        .clone()
        .unwrap_or_else(|| resolved.clone());
    let canary = status.canary.clone();
    let owner = md.controller_owner_ref(&()).ok_or(Error::NoOwner)?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams::apply(MANAGER).force();
    let owned = ListParams::default().labels(&format!("{}={name}", children::LABEL_DEPLOYMENT));
    let mut stale_deployments = names(&deployments, &owned).await?;
    let mut stale_services = names(&services, &owned).await?;
    let mut placements = Vec::new();
    let mut unschedulable = Vec::new();
    for (p, o) in md.spec.placements.iter().zip(outcomes) {
        let key = assignment_key(&name, &p.name);
        let scheduled = o.scheduled();
        // The canary's share, of the pods and of the devices separately.
        let share = |n: u32| {
            canary
                .as_ref()
                .map_or(0, |c| rollout::canary_replicas(n, c.percent))
        };
        let (pods, pods_canary) = (o.on_nodes, share(o.on_nodes));
        let devices_canary = share(o.devices.len() as u32);
        if let Some(r) = &o.reason {
            unschedulable.push(format!(
                "{}: {} of {} replica(s) cannot run: {r}",
                p.name, o.unscheduled, p.replicas
            ));
        }
        let mut ps = PlacementStatus {
            name: p.name.clone(),
            tier: p.tier,
            desired: p.replicas,
            scheduled,
            unschedulable: o.reason.clone(),
            ..Default::default()
        };

        // Pods, on cloud nodes or on edge nodes with the shim.
        let stable_name = children::deployment_name(&name, &p.name, Track::Stable);
        let canary_name = children::deployment_name(&name, &p.name, Track::Canary);
        if scheduled == 0 && p.replicas > 0 {
            // No partial rollout: nothing to run on, nothing new written;
            // what already runs stays (its nodes may be back soon, and the
            // scheduler owns pods).
            stale_deployments.remove(&stable_name);
            stale_deployments.remove(&canary_name);
            stale_services.remove(&stable_name);
        } else if pods > 0 {
            for (track, digest, replicas) in [
                (Track::Stable, stable.as_str(), pods - pods_canary),
                (
                    Track::Canary,
                    canary.as_ref().map_or("", |c| c.digest.as_str()),
                    pods_canary,
                ),
            ] {
                if track == Track::Canary && pods_canary == 0 {
                    // Deleted below if it exists.
                    continue;
                }
                let dname = children::deployment_name(&name, &p.name, track);
                stale_deployments.remove(&dname);
                let image = pinned(&md.spec.artifact, digest);
                let d = children::deployment(md, &owner, p, track, &image, digest, replicas);
                let applied = deployments
                    .patch(&dname, &params, &Patch::Apply(&d))
                    .await
                    .map_err(Error::Kube)?;
                let ready = applied
                    .status
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    .max(0) as u32;
                ps.ready += ready;
                if ready > 0 {
                    *ps.digests.entry(digest.to_string()).or_default() += ready;
                }
            }
            let svc = children::service(md, &owner, p);
            stale_services.remove(&stable_name);
            services
                .patch(&stable_name, &params, &Patch::Apply(&svc))
                .await
                .map_err(Error::Kube)?;
        }

        // Assignments, on agent-only devices; the first by name carry the
        // canary.
        for d in devices {
            let dn = d.name_any();
            let pos = o.devices.iter().position(|c| c == &dn);
            let want = pos.map(|i| {
                let digest = match &canary {
                    Some(c) if (i as u32) < devices_canary => c.digest.clone(),
                    _ => stable.clone(),
                };
                children::assignment(md, &pinned(&md.spec.artifact, &digest))
            });
            let have = d.spec.assignments.get(&key);
            if want.as_ref() != have && (want.is_some() || have.is_some()) {
                let value = match &want {
                    Some(a) => serde_json::to_value(a).map_err(Error::Json)?,
                    None => serde_json::Value::Null,
                };
                devices_api
                    .patch(
                        &dn,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"assignments": {&key: value}}})),
                    )
                    .await
                    .map_err(Error::Kube)?;
            }
            if let Some(a) = &want {
                ps.targets.push(dn.clone());
                let digest = a
                    .artifact
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_string())
                    .unwrap_or_default();
                let report = d.status.as_ref().and_then(|s| s.modules.get(&key));
                if report.is_some_and(|r| r.digest.as_deref() == Some(&digest) && r.health == "ok")
                {
                    ps.ready += 1;
                    *ps.digests.entry(digest).or_default() += 1;
                }
            }
        }
        placements.push(ps);
    }
    // What no placement wants any more: a finished canary, a placement
    // taken out of the spec, one that has nowhere to run.
    for d in &stale_deployments {
        delete(&deployments, d).await?;
    }
    for s in &stale_services {
        delete(&services, s).await?;
    }

    Ok((placements, unschedulable))
}

/// The conditions a pass ends with: the artifact resolved, every replica
/// placed or why not, the rollout's progress, and readiness.
fn closing_conditions(
    md: &ModelDeployment,
    resolved: &str,
    unschedulable: &[String],
    ready: u32,
    progressing: Condition,
    generation: Option<i64>,
    now_s: &str,
) -> Vec<Condition> {
    let desired: u32 = md.spec.placements.iter().map(|p| p.replicas).sum();
    let scheduled_ok = unschedulable.is_empty();
    let all_ready = ready >= desired && scheduled_ok;
    vec![
        condition(
            "ArtifactResolved",
            true,
            "Resolved",
            format!("{} is {}", md.spec.artifact, resolved),
            generation,
            now_s,
        ),
        if scheduled_ok {
            condition(
                "Scheduled",
                true,
                "Placed",
                "every replica has a node or a device",
                generation,
                now_s,
            )
        } else {
            condition(
                "Scheduled",
                false,
                "Unschedulable",
                unschedulable.join("; "),
                generation,
                now_s,
            )
        },
        progressing,
        condition(
            "Ready",
            all_ready,
            if all_ready {
                "Ready"
            } else if scheduled_ok {
                "Waiting"
            } else {
                "Unschedulable"
            },
            format!("{ready} of {desired} replica(s) ready"),
            generation,
            now_s,
        ),
    ]
}

/// How soon to look again: often while a canary runs, then while edge
/// devices report, else once a minute.
fn requeue_after(md: &ModelDeployment, status: &ModelDeploymentStatus) -> Duration {
    let has_edge = md.spec.placements.iter().any(|p| p.tier == Tier::Edge);
    Duration::from_secs(if status.canary.is_some() {
        10
    } else if has_edge {
        20
    } else {
        60
    })
}

/// Take `md`'s assignments off `devices`, but for the keys in `keep`.
/// What the rollout step read: the resolved digest, the status before this
/// pass, the canary strategy, the canary's counters now (its baseline if it
/// starts or moves), and when.
struct Facts<'a> {
    resolved: &'a str,
    old: &'a ModelDeploymentStatus,
    strategy: Option<&'a weft_crd::Canary>,
    baseline: Counts,
    generation: Option<i64>,
    now: &'a str,
}

/// What a rollout decision does to the status (stable digest, canary,
/// refused digests) and the `Progressing` condition it leaves. Pure: the
/// reconciler reads, decides with [`rollout::decide`], records with this,
/// then writes.
fn transition(decision: &Decision, f: &Facts<'_>, status: &mut ModelDeploymentStatus) -> Condition {
    let progressing = |ok: bool, reason: &str, message: String| {
        condition("Progressing", ok, reason, message, f.generation, f.now)
    };
    let canary_steps = || f.strategy.map(|c| c.steps.as_slice()).unwrap_or(&[]);
    match decision {
        Decision::Steady { digest } => {
            status.stable_digest = Some(digest.clone());
            status.canary = None;
            match f.old.refused.get(f.resolved) {
                Some(why) if digest != f.resolved => progressing(
                    false,
                    "RolledBack",
                    format!("{} was rolled back: {why}", rollout::short(f.resolved)),
                ),
                _ => progressing(
                    false,
                    "Complete",
                    "every replica runs the resolved digest".into(),
                ),
            }
        }
        Decision::Start { digest } => {
            let percent = canary_steps().first().copied().unwrap_or(0);
            status.canary = Some(CanaryStatus {
                digest: digest.clone(),
                step: 0,
                percent,
                step_started: f.now.into(),
                baseline_requests: f.baseline.requests,
                baseline_failures: f.baseline.failures,
            });
            progressing(
                true,
                "CanaryStarted",
                format!("canary {} at {percent}%", rollout::short(digest)),
            )
        }
        Decision::Hold { reason } => progressing(true, "CanaryHolding", reason.clone()),
        Decision::Advance { step } => match f.old.canary.clone() {
            Some(mut c) => {
                c.step = *step as u32;
                c.percent = canary_steps().get(*step).copied().unwrap_or(c.percent);
                c.step_started = f.now.into();
                c.baseline_requests = f.baseline.requests;
                c.baseline_failures = f.baseline.failures;
                let message = format!("canary {} at {}%", rollout::short(&c.digest), c.percent);
                status.canary = Some(c);
                progressing(true, "CanaryAdvanced", message)
            }
            None => progressing(true, "CanaryHolding", "no canary to advance".into()),
        },
        Decision::Promote => match f.old.canary.as_ref() {
            Some(c) => {
                status.stable_digest = Some(c.digest.clone());
                status.canary = None;
                progressing(
                    false,
                    "Complete",
                    format!("{} promoted to every replica", rollout::short(&c.digest)),
                )
            }
            None => progressing(
                false,
                "Complete",
                "every replica runs the resolved digest".into(),
            ),
        },
        Decision::RollBack { reason } => {
            status.canary = None;
            match f.old.canary.as_ref() {
                Some(c) => {
                    status.refused.insert(c.digest.clone(), reason.clone());
                    progressing(
                        false,
                        "RolledBack",
                        format!("{} rolled back: {reason}", rollout::short(&c.digest)),
                    )
                }
                None => progressing(false, "RolledBack", reason.clone()),
            }
        }
    }
}

async fn remove_assignments(
    api: &Api<EdgeDevice>,
    devices: &[EdgeDevice],
    md: &ModelDeployment,
    keep: &[String],
) -> Result<()> {
    let name = md.name_any();
    for d in devices {
        let gone: BTreeMap<String, serde_json::Value> = d
            .spec
            .assignments
            .iter()
            .filter(|(k, a)| {
                let ours = a.deployment.as_deref() == Some(&name)
                    || md
                        .spec
                        .placements
                        .iter()
                        .any(|p| **k == assignment_key(&name, &p.name));
                ours && !keep.contains(k)
            })
            .map(|(k, _)| (k.clone(), serde_json::Value::Null))
            .collect();
        if !gone.is_empty() {
            api.patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"assignments": gone}})),
            )
            .await
            .map_err(Error::Kube)?;
        }
    }
    Ok(())
}

/// The names of the objects `lp` lists.
async fn names<K>(api: &Api<K>, lp: &ListParams) -> Result<std::collections::BTreeSet<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list_metadata(lp)
        .await
        .map_err(Error::Kube)?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect())
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// What happened since a canary step began (counters that went backwards
/// mean the replicas restarted: count from zero).
fn since(now: Counts, c: &CanaryStatus) -> GateReading {
    let (r, f) = if now.requests >= c.baseline_requests {
        (
            now.requests - c.baseline_requests,
            now.failures.saturating_sub(c.baseline_failures),
        )
    } else {
        (now.requests, now.failures)
    };
    GateReading {
        requests: r,
        failures: f,
        p99_ms: now.p99_ms,
    }
}

fn seconds_since(rfc3339: &str, now: Timestamp) -> u64 {
    rfc3339
        .parse::<Timestamp>()
        .map(|t| (now.as_second() - t.as_second()).max(0) as u64)
        .unwrap_or(u64::MAX)
}

/// On delete: take this deployment's assignments off every device (its
/// Deployments and Services go with their owner).
async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    let name = md.name_any();
    let ns = md.namespace().unwrap_or_else(|| "default".into());
    let devices: Api<EdgeDevice> = Api::namespaced(ctx.client.clone(), &ns);
    let list = devices
        .list(&ListParams::default())
        .await
        .map_err(Error::Kube)?;
    remove_assignments(&devices, &list.items, md, &[]).await?;
    tracing::info!("cleaned up {name}");
    Ok(Action::await_change())
}

/// Run the controller until the process ends.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use kube::runtime::{Controller, watcher};
    let client = ctx.client.clone();
    let mds: Api<ModelDeployment> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    mds.list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the ModelDeployment CRD is not installed ({e}); kubectl apply -f deploy/crds.yaml"
            )
        })?;
    // Devices are not watched: deployments with edge placements requeue
    // every 20 s, which is how a device that stopped heartbeating loses
    // its replicas (its Lease expires after 40 s).
    Controller::new(mds.clone(), watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("reconcile: {}", crate::error::chain(&e));
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_crd::{Canary, HealthGate};

    const NEW: &str = "sha256:2222222222222222";
    const OLD: &str = "sha256:1111111111111111";

    fn strategy() -> Canary {
        Canary {
            steps: vec![10, 50, 100],
            gate: HealthGate {
                min_success_rate: 0.99,
                max_p99_latency_ms: None,
                window_seconds: 60,
                min_requests: 10,
            },
        }
    }

    fn canary(step: u32, percent: u32) -> CanaryStatus {
        CanaryStatus {
            digest: NEW.into(),
            step,
            percent,
            step_started: "2026-01-01T00:00:00Z".into(),
            baseline_requests: 5,
            baseline_failures: 1,
        }
    }

    /// Record `decision` on `old`; the new status and its condition.
    fn record(
        decision: Decision,
        old: &ModelDeploymentStatus,
    ) -> (ModelDeploymentStatus, Condition) {
        let strategy = strategy();
        let mut status = old.clone();
        let c = transition(
            &decision,
            &Facts {
                resolved: NEW,
                old,
                strategy: Some(&strategy),
                baseline: Counts {
                    requests: 40,
                    failures: 2,
                    p99_ms: None,
                },
                generation: Some(3),
                now: "2026-01-02T00:00:00Z",
            },
            &mut status,
        );
        (status, c)
    }

    #[test]
    fn a_canary_starts_at_its_first_step_from_the_counters_now() {
        let old = ModelDeploymentStatus {
            stable_digest: Some(OLD.into()),
            ..Default::default()
        };
        let (s, c) = record(Decision::Start { digest: NEW.into() }, &old);
        let canary = s.canary.expect("a canary");
        assert_eq!((canary.step, canary.percent), (0, 10));
        assert_eq!(
            (canary.baseline_requests, canary.baseline_failures),
            (40, 2)
        );
        assert_eq!(canary.step_started, "2026-01-02T00:00:00Z");
        assert_eq!(s.stable_digest.as_deref(), Some(OLD));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "CanaryStarted")
        );
        assert_eq!(c.observed_generation, Some(3));
    }

    #[test]
    fn advancing_moves_the_step_and_takes_a_new_baseline() {
        let old = ModelDeploymentStatus {
            stable_digest: Some(OLD.into()),
            canary: Some(canary(0, 10)),
            ..Default::default()
        };
        let (s, c) = record(Decision::Advance { step: 1 }, &old);
        let canary = s.canary.expect("still a canary");
        assert_eq!((canary.step, canary.percent), (1, 50));
        assert_eq!(canary.baseline_requests, 40);
        assert_eq!(c.reason, "CanaryAdvanced");
        assert!(c.message.contains("50%"), "{}", c.message);
    }

    #[test]
    fn promotion_and_rollback_end_the_canary_each_their_way() {
        let old = ModelDeploymentStatus {
            stable_digest: Some(OLD.into()),
            canary: Some(canary(2, 100)),
            ..Default::default()
        };
        let (promoted, c) = record(Decision::Promote, &old);
        assert_eq!(promoted.stable_digest.as_deref(), Some(NEW));
        assert!(promoted.canary.is_none());
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Complete")
        );

        let (rolled, c) = record(
            Decision::RollBack {
                reason: "success rate 0.5 under 0.99".into(),
            },
            &old,
        );
        assert_eq!(rolled.stable_digest.as_deref(), Some(OLD));
        assert!(rolled.canary.is_none());
        assert_eq!(
            rolled.refused.get(NEW).map(String::as_str),
            Some("success rate 0.5 under 0.99")
        );
        assert_eq!(c.reason, "RolledBack");

        // The next pass finds the resolved digest refused: steady on the
        // old one, and the condition still says why.
        let (steady, c) = record(Decision::Steady { digest: OLD.into() }, &rolled);
        assert_eq!(steady.stable_digest.as_deref(), Some(OLD));
        assert_eq!(c.reason, "RolledBack");
        assert!(c.message.contains("success rate"), "{}", c.message);
    }

    #[test]
    fn holding_changes_nothing_but_the_condition() {
        let old = ModelDeploymentStatus {
            stable_digest: Some(OLD.into()),
            canary: Some(canary(1, 50)),
            ..Default::default()
        };
        let (s, c) = record(
            Decision::Hold {
                reason: "3 of 10 requests".into(),
            },
            &old,
        );
        assert_eq!(s, old);
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("CanaryHolding", "3 of 10 requests")
        );
    }

    fn deployment(spec: serde_json::Value) -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "ocr", "namespace": "default"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn device(name: &str, assignments: &[&str]) -> EdgeDevice {
        let assignments: serde_json::Map<_, _> = assignments
            .iter()
            .map(|k| {
                (
                    k.to_string(),
                    json!({"artifact": "r/ocr@sha256:1", "port": 8000, "modelName": "ocr"}),
                )
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "EdgeDevice",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"assignments": assignments},
        }))
        .unwrap()
    }

    /// Each placement asks for its replicas with the deployment's memory;
    /// edge placements spread (one module per device) and keep the devices
    /// that run them now.
    #[test]
    fn demands_carry_each_placements_rules_and_current_devices() {
        let md = deployment(json!({
            "artifact": "r/ocr:1",
            "resources": {"memory": "256Mi"},
            "placements": [
                {"name": "cloud", "tier": "cloud", "replicas": 2,
                 "accelerator": {"kind": "nvidia.com/gpu", "required": true}},
                {"name": "eu", "tier": "edge", "replicas": 3, "architecture": "arm64"},
            ],
        }));
        let devices = [
            device("pi-1", &["ocr-eu"]),
            device("pi-2", &["other-eu"]),
            device("pi-3", &["ocr-eu", "ocr-cloud"]),
        ];
        let d = demands(&md, &devices);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].memory, 256 << 20);
        assert_eq!(d[0].accelerator, Some(("nvidia.com/gpu".to_string(), true)));
        assert!(!d[0].spread, "a cloud placement spreads only when asked");
        assert_eq!(d[0].current, ["pi-3"]);
        assert_eq!((d[1].replicas, d[1].spread), (3, true));
        assert_eq!(d[1].architecture.as_deref(), Some("arm64"));
        assert_eq!(d[1].current, ["pi-1", "pi-3"]);
        let bare = deployment(json!({"artifact": "r/ocr:1", "placements": [
            {"name": "c", "tier": "cloud", "replicas": 1}]}));
        assert_eq!(demands(&bare, &[])[0].memory, crate::DEFAULT_MEMORY);
    }

    /// A pass ends Ready only when every replica is placed and ready;
    /// otherwise Ready says which of the two is missing.
    #[test]
    fn closing_conditions_say_what_is_missing() {
        let md = deployment(json!({"artifact": "r/ocr:1", "placements": [
            {"name": "c", "tier": "cloud", "replicas": 2},
            {"name": "e", "tier": "edge", "replicas": 1}]}));
        let progressing = condition("Progressing", false, "Steady", "", None, "t");
        let ready = |conds: &[Condition]| {
            let c = conds.iter().find(|c| c.type_ == "Ready").unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let all = closing_conditions(&md, NEW, &[], 3, progressing.clone(), None, "t");
        let types: Vec<&str> = all.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["ArtifactResolved", "Scheduled", "Progressing", "Ready"]
        );
        assert_eq!(ready(&all).0, "True");
        let waiting = closing_conditions(&md, NEW, &[], 2, progressing.clone(), None, "t");
        assert_eq!(
            ready(&waiting),
            (
                "False".into(),
                "Waiting".into(),
                "2 of 3 replica(s) ready".into()
            )
        );
        let stuck = closing_conditions(
            &md,
            NEW,
            &["c: 1 of 2 replica(s) cannot run: no node".into()],
            3,
            progressing,
            None,
            "t",
        );
        assert_eq!(ready(&stuck).1, "Unschedulable");
        let scheduled = stuck.iter().find(|c| c.type_ == "Scheduled").unwrap();
        assert!(scheduled.message.contains("no node"), "{scheduled:?}");
        // Edge placements are looked at more often than cloud-only ones.
        assert_eq!(requeue_after(&md, &Default::default()).as_secs(), 20);
    }
}
