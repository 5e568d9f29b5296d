//! The `ModelDeployment` reconciler against the in-memory API server
//! (`weft_tests::apiserver`, kube-rs's `tower_test` mock pattern): the
//! requests it sends, the objects that result and the status it writes.
//! The artifact resolver, the canary's health counters and the clock are
//! the test's own, so rollouts can be driven step by step.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_crd::{Condition, ModelDeployment, ModelDeploymentStatus};
use weft_operator::controller::{self, Context, FINALIZER};
use weft_operator::health::{Counts, HealthSource};
use weft_operator::metrics::Metrics;
use weft_operator::resolve::{BoxFuture, ResolveError, Resolver};
use weft_tests::apiserver::FakeApi;

const NS: &str = "weft-models";
const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ARTIFACT: &str = "registry.test:5000/examples/tiny:stable";

#[derive(Default)]
struct Tags(Mutex<BTreeMap<String, Result<String, ResolveError>>>);

impl Resolver for Tags {
    fn resolve<'a>(&'a self, artifact: &'a str) -> BoxFuture<'a, Result<String, ResolveError>> {
        let r = self
            .0
            .lock()
            .unwrap()
            .get(artifact)
            .cloned()
            .unwrap_or_else(|| {
                Err(ResolveError::NotFound(format!(
                    "{artifact} does not exist: manifest unknown"
                )))
            });
        Box::pin(async move { r })
    }
}

/// Request and failure counters per digest, as the replicas would report.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, Counts>>);

impl HealthSource for Counters {
    fn counts<'a>(
        &'a self,
        _: &'a kube::Client,
        _: &'a ModelDeployment,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Counts, String>> {
        let c = self
            .0
            .lock()
            .unwrap()
            .get(digest)
            .copied()
            .unwrap_or_default();
        Box::pin(async move { Ok(c) })
    }
}

struct World {
    api: FakeApi,
    tags: Arc<Tags>,
    counters: Arc<Counters>,
    clock: Arc<Mutex<Timestamp>>,
    ctx: Arc<Context>,
}

fn md_path(name: &str) -> String {
    format!("/apis/weft.dev/v1alpha1/namespaces/{NS}/modeldeployments/{name}")
}
fn device_path(name: &str) -> String {
    format!("/apis/weft.dev/v1alpha1/namespaces/{NS}/edgedevices/{name}")
}
fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}
fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}

impl World {
    fn new() -> World {
        let (client, api) = FakeApi::start();
        let tags = Arc::new(Tags::default());
        let counters = Arc::new(Counters::default());
        let clock = Arc::new(Mutex::new(
            "2026-12-01T12:00:00Z".parse::<Timestamp>().unwrap(),
        ));
        let c = clock.clone();
        let ctx = Arc::new(Context {
            recorder: kube::runtime::events::Recorder::new(client.clone(), controller::reporter()),
            client,
            resolver: tags.clone(),
            health: counters.clone(),
            metrics: Arc::new(Metrics::default()),
            now: Arc::new(move || *c.lock().unwrap()),
        });
        World {
            api,
            tags,
            counters,
            clock,
            ctx,
        }
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn advance(&self, secs: i64) {
        let mut c = self.clock.lock().unwrap();
        *c = c.checked_add(SignedDuration::from_secs(secs)).unwrap();
    }

    /// Time passes with every device's agent renewing its lease.
    fn tick(&self, secs: i64) {
        self.advance(secs);
        for (path, _) in self.api.list(&format!(
            "/apis/weft.dev/v1alpha1/namespaces/{NS}/edgedevices/"
        )) {
            self.heartbeat(path.rsplit('/').next().unwrap());
        }
    }

    fn tag(&self, artifact: &str, digest: &str) {
        self.tags
            .0
            .lock()
            .unwrap()
            .insert(artifact.into(), Ok(digest.into()));
    }

    fn count(&self, digest: &str, requests: u64, failures: u64) {
        let mut m = self.counters.0.lock().unwrap();
        let c = m.entry(digest.into()).or_default();
        c.requests += requests;
        c.failures += failures;
    }

    /// A node with the weft runtime (or, `runtime: false`, without).
    fn node(&self, name: &str, runtime: bool, allocatable: Value) {
        let mut labels = json!({"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name});
        if runtime {
            labels["weft.dev/runtime"] = json!("ready");
        }
        let mut alloc = json!({"memory": "16Gi", "pods": "110", "cpu": "8"});
        json_patch::merge(&mut alloc, &allocatable);
        self.api.put(
            &format!("/api/v1/nodes/{name}"),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": name, "labels": labels},
                   "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }

    /// An edge device as its agent registers it, with a fresh lease.
    fn device(&self, name: &str, arch: &str, labels: Value) {
        self.api.put(
            &device_path(name),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "EdgeDevice",
                   "metadata": {"name": name, "namespace": NS, "labels": labels},
                   "spec": {},
                   "status": {"architecture": arch, "capacity": {"memoryBytes": 2u64 << 30, "cpus": 4, "modules": 4},
                              "runningModules": 0}}),
        );
        self.heartbeat(name);
    }

    fn heartbeat(&self, device: &str) {
        let lease = weft_crd::lease_name(device);
        self.api.put(
            &format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{lease}"),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": lease, "namespace": NS},
                   "spec": {"holderIdentity": device, "leaseDurationSeconds": weft_crd::LEASE_SECONDS,
                            "renewTime": self.now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}}),
        );
    }

    /// A device's agent reporting what it runs.
    fn report(&self, device: &str, key: &str, digest: &str, health: &str) {
        let mut d = self.api.get(&device_path(device)).unwrap();
        d["status"]["modules"][key] =
            json!({"digest": digest, "health": health, "state": "serving"});
        self.api.put(&device_path(device), d);
    }

    fn create(&self, name: &str, spec: Value) {
        self.api.put(
            &md_path(name),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ModelDeployment",
                   "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        );
    }

    async fn reconcile(&self, name: &str) -> Action {
        let obj = self
            .api
            .get(&md_path(name))
            .expect("the ModelDeployment exists");
        let md: ModelDeployment = serde_json::from_value(obj).expect("a ModelDeployment");
        controller::reconcile(Arc::new(md), self.ctx.clone())
            .await
            .expect("reconcile succeeds")
    }

    /// The first pass adds the finalizer; the second does the work.
    async fn settle(&self, name: &str) -> Action {
        self.reconcile(name).await;
        self.reconcile(name).await
    }

    fn status(&self, name: &str) -> ModelDeploymentStatus {
        let obj = self.api.get(&md_path(name)).unwrap();
        serde_json::from_value(obj["status"].clone()).expect("a status")
    }

    fn condition(&self, name: &str, type_: &str) -> Condition {
        self.status(name)
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", self.status(name)))
    }

    fn replicas(&self, deployment: &str) -> Option<i64> {
        self.api
            .get(&deployment_path(deployment))
            .map(|d| d["spec"]["replicas"].as_i64().unwrap())
    }

    fn image(&self, deployment: &str) -> String {
        let d = self.api.get(&deployment_path(deployment)).unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn assignment(&self, device: &str, key: &str) -> Option<Value> {
        let d = self.api.get(&device_path(device)).unwrap();
        let a = &d["spec"]["assignments"][key];
        (!a.is_null()).then(|| a.clone())
    }

    fn set_ready(&self, deployment: &str, ready: i64) {
        let mut d = self.api.get(&deployment_path(deployment)).unwrap();
        d["status"] = json!({"readyReplicas": ready, "replicas": ready});
        self.api.put(&deployment_path(deployment), d);
    }

    /// How often an Event (type, reason) was published: kube's recorder
    /// folds repeats into one Event's `series`.
    fn event_count(&self, type_: &str, reason: &str) -> u64 {
        self.api
            .list(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/"))
            .into_iter()
            .filter(|(_, e)| e["type"] == type_ && e["reason"] == reason)
            .map(|(_, e)| e["series"]["count"].as_u64().unwrap_or(1))
            .sum()
    }

    /// The Events the operator published: (type, reason, note).
    fn events(&self) -> Vec<(String, String, String)> {
        self.api
            .list(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/"))
            .into_iter()
            .map(|(_, e)| {
                assert_eq!(e["regarding"]["kind"], "ModelDeployment");
                assert_eq!(e["reportingController"], "weft-operator");
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("reason"), s("note"))
            })
            .collect()
    }

    fn has_event(&self, type_: &str, reason: &str) -> bool {
        self.events()
            .iter()
            .any(|(t, r, _)| t == type_ && r == reason)
    }

    /// Requests that changed anything (not GETs).
    fn writes(&self) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method != http::Method::GET)
            .map(|r| format!("{} {}", r.method, r.uri))
            .collect()
    }
}

fn pinned(digest: &str) -> String {
    format!("registry.test:5000/examples/tiny@{digest}")
}

fn cloud_and_edge() -> Value {
    json!({
        "artifact": ARTIFACT,
        "port": 8000,
        "modelName": "tiny",
        "resources": {"cpu": "500m", "memory": "256Mi"},
        "placements": [
            {"name": "cloud", "tier": "cloud", "replicas": 2, "spread": true,
             "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]},
            {"name": "edge", "tier": "edge", "replicas": 2, "nodeSelector": {"site": "factory-1"}, "architecture": "arm64"}
        ]
    })
}

fn canary(spec: &mut Value) {
    spec["strategy"] = json!({"canary": {"steps": [25, 50, 100],
        "gate": {"minSuccessRate": 0.95, "maxP99LatencyMs": 200, "windowSeconds": 60, "minRequests": 20}}});
}

#[tokio::test]
async fn places_cloud_pods_and_edge_assignments_and_reports_readiness() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    w.node("n1", true, json!({}));
    w.node("n2", true, json!({}));
    w.node("plain", false, json!({}));
    w.device("d1", "arm64", json!({"site": "factory-1"}));
    w.device("d2", "arm64", json!({"site": "factory-1"}));
    w.device("d3", "amd64", json!({"site": "factory-1"}));
    w.device("d4", "arm64", json!({"site": "elsewhere"}));
    w.create("tiny", cloud_and_edge());

    // The first pass only adds the finalizer.
    w.reconcile("tiny").await;
    let md = w.api.get(&md_path("tiny")).unwrap();
    assert_eq!(md["metadata"]["finalizers"], json!([FINALIZER]));
    assert!(w.api.get(&deployment_path("tiny-cloud")).is_none());

    let action = w.reconcile("tiny").await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(20)),
        "edge placements requeue to follow heartbeats"
    );

    // Cloud: one Deployment by server-side apply, owned by the ModelDeployment.
    let applies: Vec<_> = w
        .api
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/deployments/tiny-cloud?"))
        .collect();
    assert_eq!(applies.len(), 1, "{applies:?}");
    assert_eq!(applies[0].method, http::Method::PATCH);
    assert!(
        applies[0].content_type.contains("application/apply-patch"),
        "{}",
        applies[0].content_type
    );
    assert!(
        applies[0].uri.contains("fieldManager=weft-operator")
            && applies[0].uri.contains("force=true")
    );
    let d = w.api.get(&deployment_path("tiny-cloud")).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let owner = &d["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["controller"].as_bool()
        ),
        (Some("ModelDeployment"), Some("tiny"), Some(true))
    );
    assert_eq!(owner["uid"], md["metadata"]["uid"]);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], "weft");
    assert_eq!(pod["containers"][0]["image"], pinned(A));
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        "256Mi"
    );
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(w.api.get(&deployment_path("tiny-cloud-canary")).is_none());
    let svc = w.api.get(&service_path("tiny-cloud")).expect("a Service");
    assert_eq!(svc["spec"]["selector"]["weft.dev/deployment"], "tiny");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8000);

    // Edge: the two arm64 devices at the site, never the others.
    for d in ["d1", "d2"] {
        let a = w
            .assignment(d, "tiny-edge")
            .unwrap_or_else(|| panic!("{d} has no assignment"));
        assert_eq!(a["artifact"], pinned(A));
        assert_eq!(
            (
                a["port"].as_u64(),
                a["modelName"].as_str(),
                a["memory"].as_str()
            ),
            (Some(8000), Some("tiny"), Some("256Mi"))
        );
    }
    assert!(w.assignment("d3", "tiny-edge").is_none(), "d3 is amd64");
    assert!(
        w.assignment("d4", "tiny-edge").is_none(),
        "d4 is at another site"
    );

    let s = w.status("tiny");
    assert_eq!(
        (s.resolved_digest.as_deref(), s.stable_digest.as_deref()),
        (Some(A), Some(A))
    );
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.placements[1].targets, vec!["d1", "d2"]);
    assert_eq!(w.condition("tiny", "ArtifactResolved").status, "True");
    assert_eq!(w.condition("tiny", "Scheduled").status, "True");
    let ready = w.condition("tiny", "Ready");
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        ("False", "Waiting", "0 of 4 replica(s) ready")
    );

    // The pods become ready and the agents report the digest healthy.
    w.set_ready("tiny-cloud", 2);
    w.report("d1", "tiny-edge", A, "ok");
    w.report("d2", "tiny-edge", A, "failing: expected 3, got 4");
    w.reconcile("tiny").await;
    assert_eq!(
        w.condition("tiny", "Ready").message,
        "3 of 4 replica(s) ready"
    );
    w.report("d2", "tiny-edge", A, "ok");
    w.reconcile("tiny").await;
    let ready = w.condition("tiny", "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Ready")
    );
    assert_eq!(w.status("tiny").placements[0].digests.get(A), Some(&2));

    // A steady state rewrites nothing on the devices.
    w.api.clear_requests();
    w.reconcile("tiny").await;
    let device_writes: Vec<_> = w
        .writes()
        .into_iter()
        .filter(|r| r.contains("edgedevices"))
        .collect();
    assert!(device_writes.is_empty(), "{device_writes:?}");
    let event_writes: Vec<_> = w
        .writes()
        .into_iter()
        .filter(|r| r.contains("/events"))
        .collect();
    assert!(
        event_writes.is_empty(),
        "a steady state announces nothing: {event_writes:?}"
    );
    assert!(w.has_event("Normal", "Ready"), "{:?}", w.events());
}

#[tokio::test]
async fn a_missing_artifact_gets_a_precise_reason_and_nothing_is_written() {
    let w = World::new();
    w.node("n1", true, json!({}));
    w.device("d1", "arm64", json!({"site": "factory-1"}));
    w.create("tiny", cloud_and_edge());
    let action = w.settle("tiny").await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "it tries again later"
    );

    let c = w.condition("tiny", "ArtifactResolved");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ArtifactNotFound")
    );
    assert!(c.message.contains(ARTIFACT), "{}", c.message);
    assert_eq!(w.condition("tiny", "Ready").reason, "ArtifactNotFound");
    assert!(
        w.api
            .list(&format!("/apis/apps/v1/namespaces/{NS}/deployments"))
            .is_empty()
    );
    assert!(
        w.api
            .list(&format!("/api/v1/namespaces/{NS}/services"))
            .is_empty()
    );
    assert!(w.assignment("d1", "tiny-edge").is_none());
    assert!(
        w.has_event("Warning", "ArtifactNotFound"),
        "{:?}",
        w.events()
    );
    let writes: Vec<String> = w
        .writes()
        .into_iter()
        .filter(|r| !r.contains("/events"))
        .collect();
    assert!(
        writes.iter().all(|r| r.contains("/modeldeployments/tiny")),
        "only the ModelDeployment (finalizer, status) is written: {writes:?}"
    );

    // Once it is pushed, the next pass rolls it out.
    w.tag(ARTIFACT, A);
    w.reconcile("tiny").await;
    assert_eq!(w.condition("tiny", "ArtifactResolved").status, "True");
    assert_eq!(
        w.replicas("tiny-cloud"),
        Some(1),
        "one node with the runtime, one replica placed"
    );
}

#[tokio::test]
async fn a_gpu_no_node_has_leaves_the_placement_unschedulable_without_a_deployment() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    w.node("n1", true, json!({}));
    w.node("n2", false, json!({"nvidia.com/gpu": "8"}));
    w.create(
        "gpu",
        json!({"artifact": ARTIFACT, "placements": [
            {"name": "cloud", "tier": "cloud", "replicas": 1, "accelerator": {"kind": "nvidia.com/gpu", "required": true}}
        ]}),
    );
    w.settle("gpu").await;
    let c = w.condition("gpu", "Scheduled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Unschedulable")
    );
    assert!(
        c.message.contains("nvidia.com/gpu") && c.message.contains("1 of 1"),
        "{}",
        c.message
    );
    assert_eq!(w.condition("gpu", "Ready").reason, "Unschedulable");
    assert!(
        w.api.get(&deployment_path("gpu-cloud")).is_none(),
        "no partial rollout"
    );
    assert!(w.has_event("Warning", "Unschedulable"), "{:?}", w.events());
    let ps = &w.status("gpu").placements[0];
    assert_eq!((ps.scheduled, ps.unschedulable.is_some()), (0, true));

    // A node with the runtime and a GPU appears: the replica lands there,
    // tolerating the GPU taint.
    w.node("n3", true, json!({"nvidia.com/gpu": "1"}));
    w.reconcile("gpu").await;
    assert_eq!(w.condition("gpu", "Scheduled").status, "True");
    let d = w.api.get(&deployment_path("gpu-cloud")).unwrap();
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(
        d["spec"]["template"]["spec"]["tolerations"][0]["key"],
        "nvidia.com/gpu"
    );
}

#[tokio::test]
async fn an_invalid_canary_is_refused_with_the_reason_and_nothing_runs() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    w.node("n1", true, json!({}));
    for (steps, rate, why) in [
        (json!([50, 10, 100]), 0.99, "must rise strictly"),
        (json!([10, 50]), 0.99, "end at 100"),
        (json!([]), 0.99, "steps is empty"),
        (json!([10, 100]), 1.5, "minSuccessRate"),
    ] {
        let mut spec = cloud_and_edge();
        spec["strategy"] = json!({"canary": {"steps": steps, "gate": {"minSuccessRate": rate, "windowSeconds": 60}}});
        w.create("bad", spec);
        w.settle("bad").await;
        let c = w.condition("bad", "Ready");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(c.message.contains(why), "{why}: {}", c.message);
        assert!(w.api.get(&deployment_path("bad-cloud")).is_none());
    }
    let mut spec = cloud_and_edge();
    spec["placements"][1]["name"] = json!("cloud");
    w.create("twice", spec);
    w.settle("twice").await;
    assert!(
        w.condition("twice", "Ready")
            .message
            .contains("two placements are named \"cloud\"")
    );
    let mut spec = cloud_and_edge();
    spec["artifact"] = json!("not a reference!");
    w.create("ref", spec);
    w.settle("ref").await;
    assert!(
        w.condition("ref", "Ready")
            .message
            .contains("is not a registry reference")
    );
}

#[tokio::test]
async fn a_canary_moves_step_by_step_while_healthy_then_promotes() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    for n in ["n1", "n2", "n3", "n4"] {
        w.node(n, true, json!({}));
    }
    w.device("d1", "arm64", json!({"site": "factory-1"}));
    w.device("d2", "arm64", json!({"site": "factory-1"}));
    let mut spec = cloud_and_edge();
    spec["placements"][0]["replicas"] = json!(4);
    canary(&mut spec);
    w.create("tiny", spec);
    w.settle("tiny").await;
    assert_eq!(
        w.status("tiny").stable_digest.as_deref(),
        Some(A),
        "the first version has nothing to compare with"
    );
    assert_eq!(w.replicas("tiny-cloud"), Some(4));

    // A new digest is pushed under the tag: 25% of each placement.
    w.tag(ARTIFACT, B);
    w.count(B, 0, 0);
    let action = w.reconcile("tiny").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let s = w.status("tiny");
    let c = s.canary.clone().expect("a canary");
    assert_eq!((c.digest.as_str(), c.step, c.percent), (B, 0, 25));
    assert_eq!(w.condition("tiny", "Progressing").reason, "CanaryStarted");
    assert!(w.has_event("Normal", "CanaryStarted"), "{:?}", w.events());
    assert_eq!(
        (w.replicas("tiny-cloud"), w.replicas("tiny-cloud-canary")),
        (Some(3), Some(1))
    );
    assert_eq!(w.image("tiny-cloud"), pinned(A));
    assert_eq!(w.image("tiny-cloud-canary"), pinned(B));
    let canary_d = w.api.get(&deployment_path("tiny-cloud-canary")).unwrap();
    assert_eq!(
        canary_d["spec"]["template"]["metadata"]["labels"]["weft.dev/track"],
        "canary"
    );
    // One of two devices (25% rounds up to one) runs the canary.
    assert_eq!(
        w.assignment("d1", "tiny-edge").unwrap()["artifact"],
        pinned(B)
    );
    assert_eq!(
        w.assignment("d2", "tiny-edge").unwrap()["artifact"],
        pinned(A)
    );

    // Healthy traffic, but the window has not passed: hold.
    w.count(B, 100, 1);
    w.tick(30);
    w.reconcile("tiny").await;
    let p = w.condition("tiny", "Progressing");
    assert_eq!(p.reason, "CanaryHolding");
    assert!(p.message.contains("30s more"), "{}", p.message);
    assert_eq!(w.status("tiny").canary.unwrap().step, 0);

    // The window passes with the gate holding: 50%.
    w.tick(31);
    w.reconcile("tiny").await;
    let c = w.status("tiny").canary.unwrap();
    assert_eq!(
        (c.step, c.percent, c.baseline_requests),
        (1, 50, 100),
        "the next step counts from here"
    );
    assert_eq!(
        (w.replicas("tiny-cloud"), w.replicas("tiny-cloud-canary")),
        (Some(2), Some(2))
    );

    // Too little traffic in the new window: hold, whatever the time.
    w.count(B, 5, 0);
    w.tick(120);
    w.reconcile("tiny").await;
    assert!(
        w.condition("tiny", "Progressing")
            .message
            .contains("waiting for traffic: 5 of 20")
    );

    // Enough: 100%, then promotion.
    w.count(B, 50, 0);
    w.reconcile("tiny").await;
    assert_eq!(w.status("tiny").canary.unwrap().percent, 100);
    assert_eq!(
        (w.replicas("tiny-cloud"), w.replicas("tiny-cloud-canary")),
        (Some(0), Some(4))
    );
    w.count(B, 40, 0);
    w.tick(61);
    w.reconcile("tiny").await;
    let s = w.status("tiny");
    assert_eq!(
        (s.stable_digest.as_deref(), s.canary.is_none()),
        (Some(B), true)
    );
    assert_eq!(w.condition("tiny", "Progressing").reason, "Complete");
    assert_eq!(w.replicas("tiny-cloud"), Some(4));
    assert_eq!(w.image("tiny-cloud"), pinned(B));
    assert!(
        w.api.get(&deployment_path("tiny-cloud-canary")).is_none(),
        "the canary Deployment is deleted"
    );
    assert_eq!(
        w.event_count("Normal", "CanaryAdvanced"),
        2,
        "50% and 100%: {:?}",
        w.events()
    );
    assert_eq!(
        w.event_count("Normal", "Complete"),
        2,
        "placed, then promoted: {:?}",
        w.events()
    );
    for d in ["d1", "d2"] {
        assert_eq!(w.assignment(d, "tiny-edge").unwrap()["artifact"], pinned(B));
    }
}

#[tokio::test]
async fn a_canary_that_fails_its_gate_rolls_back_and_is_not_retried() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    for n in ["n1", "n2", "n3", "n4"] {
        w.node(n, true, json!({}));
    }
    w.device("d1", "arm64", json!({"site": "factory-1"}));
    let mut spec = cloud_and_edge();
    spec["placements"][0]["replicas"] = json!(4);
    spec["placements"][1]["replicas"] = json!(1);
    canary(&mut spec);
    w.create("tiny", spec);
    w.settle("tiny").await;
    w.tag(ARTIFACT, B);
    w.reconcile("tiny").await;
    assert_eq!(
        w.assignment("d1", "tiny-edge").unwrap()["artifact"],
        pinned(B)
    );

    // 10% of the canary's requests fail: the gate (95%) decides at once,
    // without waiting for the window.
    w.count(B, 100, 10);
    w.tick(5);
    w.reconcile("tiny").await;
    let s = w.status("tiny");
    assert!(s.canary.is_none());
    assert_eq!(s.stable_digest.as_deref(), Some(A));
    assert!(
        s.refused
            .get(B)
            .is_some_and(|why| why.contains("below 0.95")),
        "{:?}",
        s.refused
    );
    let p = w.condition("tiny", "Progressing");
    assert_eq!(p.reason, "RolledBack");
    assert!(
        w.events()
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "RolledBack" && n.contains("10 of 100")),
        "{:?}",
        w.events()
    );
    assert!(
        p.message.contains("10 of 100 requests failed"),
        "{}",
        p.message
    );
    assert_eq!(w.replicas("tiny-cloud"), Some(4));
    assert_eq!(w.image("tiny-cloud"), pinned(A));
    assert!(w.api.get(&deployment_path("tiny-cloud-canary")).is_none());
    assert_eq!(
        w.assignment("d1", "tiny-edge").unwrap()["artifact"],
        pinned(A),
        "the device goes back too"
    );

    // The tag still points at the bad digest: it is not tried again.
    w.tick(600);
    w.reconcile("tiny").await;
    assert!(w.status("tiny").canary.is_none());
    assert_eq!(w.condition("tiny", "Progressing").reason, "RolledBack");
    assert!(w.api.get(&deployment_path("tiny-cloud-canary")).is_none());

    // A slow canary also rolls back (p99 over the gate's 200 ms).
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    w.tag(ARTIFACT, C);
    w.reconcile("tiny").await;
    assert_eq!(w.status("tiny").canary.unwrap().digest, C);
    w.counters.0.lock().unwrap().insert(
        C.into(),
        Counts {
            requests: 50,
            failures: 0,
            p99_ms: Some(450.0),
        },
    );
    w.reconcile("tiny").await;
    let s = w.status("tiny");
    assert!(
        s.canary.is_none()
            && s.refused
                .get(C)
                .is_some_and(|r| r.contains("p99 latency 450.0 ms")),
        "{s:?}"
    );
}

#[tokio::test]
async fn a_device_that_stops_heartbeating_loses_its_replica_to_another() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    for d in ["d1", "d2", "d3"] {
        w.device(d, "arm64", json!({"site": "factory-1"}));
    }
    let mut spec = cloud_and_edge();
    spec["placements"].as_array_mut().unwrap().remove(0);
    w.create("tiny", spec);
    w.settle("tiny").await;
    assert!(w.assignment("d1", "tiny-edge").is_some() && w.assignment("d2", "tiny-edge").is_some());
    assert!(w.assignment("d3", "tiny-edge").is_none());

    // Within the lease, a missed renewal changes nothing.
    w.advance(30);
    w.heartbeat("d2");
    w.heartbeat("d3");
    w.reconcile("tiny").await;
    assert!(w.assignment("d1", "tiny-edge").is_some());

    // d1's lease expires (40 s): its replica moves to d3; d2 keeps its own.
    w.advance(15);
    w.heartbeat("d2");
    w.heartbeat("d3");
    w.reconcile("tiny").await;
    assert!(
        w.assignment("d1", "tiny-edge").is_none(),
        "the offline device's assignment is taken off"
    );
    assert!(w.assignment("d2", "tiny-edge").is_some());
    assert!(w.assignment("d3", "tiny-edge").is_some());
    assert_eq!(w.condition("tiny", "Scheduled").status, "True");
    assert_eq!(w.status("tiny").placements[0].targets, vec!["d2", "d3"]);

    // With nowhere left to go, the status says so.
    w.advance(45);
    w.heartbeat("d2");
    w.reconcile("tiny").await;
    let c = w.condition("tiny", "Scheduled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Unschedulable")
    );
    assert!(c.message.contains("edge: 1 of 2"), "{}", c.message);
    assert!(c.message.contains("offline"), "{}", c.message);
    assert_eq!(w.status("tiny").placements[0].targets, vec!["d2"]);
}

#[tokio::test]
async fn deleting_a_deployment_takes_its_assignments_off_every_device() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    w.node("n1", true, json!({}));
    w.device("d1", "arm64", json!({"site": "factory-1"}));
    w.device("d2", "arm64", json!({"site": "factory-1"}));
    w.create("tiny", cloud_and_edge());
    w.settle("tiny").await;
    // Someone else's assignment on the same device stays.
    let mut d1 = w.api.get(&device_path("d1")).unwrap();
    d1["spec"]["assignments"]["other-edge"] =
        json!({"artifact": pinned(B), "port": 8001, "modelName": "other"});
    w.api.put(&device_path("d1"), d1);
    w.api.get(&md_path("tiny")).unwrap();

    // kubectl delete: the API server marks it; the finalizer runs.
    let mut md = w.api.get(&md_path("tiny")).unwrap();
    md["metadata"]["deletionTimestamp"] = json!("2026-12-01T12:05:00Z");
    w.api.put(&md_path("tiny"), md);
    w.reconcile("tiny").await;
    assert!(w.assignment("d1", "tiny-edge").is_none());
    assert!(w.assignment("d2", "tiny-edge").is_none());
    assert!(
        w.assignment("d1", "other-edge").is_some(),
        "other deployments' assignments stay"
    );
    assert!(
        w.api.get(&md_path("tiny")).is_none(),
        "the finalizer is removed, so the object goes"
    );
}

#[tokio::test]
async fn a_placement_taken_out_of_the_spec_is_taken_down() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    w.node("n1", true, json!({}));
    w.device("d1", "arm64", json!({"site": "factory-1"}));
    w.create("tiny", cloud_and_edge());
    w.settle("tiny").await;
    assert!(w.api.get(&deployment_path("tiny-cloud")).is_some());
    assert!(w.assignment("d1", "tiny-edge").is_some());

    // Only the cloud placement is left, renamed.
    let mut md = w.api.get(&md_path("tiny")).unwrap();
    md["spec"]["placements"] = json!([{"name": "web", "tier": "cloud", "replicas": 1}]);
    md["metadata"]["generation"] = json!(2);
    w.api.put(&md_path("tiny"), md);
    w.reconcile("tiny").await;
    assert!(
        w.api.get(&deployment_path("tiny-cloud")).is_none(),
        "the old placement's Deployment is deleted"
    );
    assert!(
        w.api.get(&service_path("tiny-cloud")).is_none(),
        "and its Service"
    );
    assert!(w.api.get(&deployment_path("tiny-web")).is_some());
    assert!(
        w.assignment("d1", "tiny-edge").is_none(),
        "the edge placement's assignment is taken off"
    );
    assert_eq!(w.status("tiny").observed_generation, Some(2));
}

#[tokio::test]
async fn an_edge_placement_uses_edge_nodes_with_the_shim_and_agent_devices() {
    let w = World::new();
    w.tag(ARTIFACT, A);
    w.node("n1", true, json!({}));
    // A k3s node at the site, with the shim, labelled as an edge node.
    w.node("k3s-1", true, json!({}));
    let path = "/api/v1/nodes/k3s-1";
    let mut n = w.api.get(path).unwrap();
    n["metadata"]["labels"]["weft.dev/tier"] = json!("edge");
    n["metadata"]["labels"]["site"] = json!("factory-1");
    w.api.put(path, n);
    w.device("d1", "amd64", json!({"site": "factory-1"}));
    w.device("d2", "amd64", json!({"site": "factory-1"}));
    let mut spec = cloud_and_edge();
    spec["placements"][1]["replicas"] = json!(3);
    spec["placements"][1]
        .as_object_mut()
        .unwrap()
        .remove("architecture");
    w.create("tiny", spec);
    w.settle("tiny").await;

    // Edge: one pod on the edge node, one assignment on each device.
    let d = w
        .api
        .get(&deployment_path("tiny-edge"))
        .expect("a Deployment for the edge node");
    assert_eq!(d["spec"]["replicas"], 1);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["weft.dev/tier"], "edge");
    assert_eq!(pod["nodeSelector"]["site"], "factory-1");
    assert!(w.assignment("d1", "tiny-edge").is_some() && w.assignment("d2", "tiny-edge").is_some());
    let ps = &w.status("tiny").placements[1];
    assert_eq!(
        (ps.scheduled, ps.targets.clone()),
        (3, vec!["d1".to_string(), "d2".to_string()])
    );

    // Cloud: never on the edge node, so one of two spread replicas has
    // nowhere to go.
    let d = w.api.get(&deployment_path("tiny-cloud")).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    let term = &d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(
        (term["key"].as_str(), term["operator"].as_str()),
        (Some("weft.dev/tier"), Some("NotIn"))
    );
    let c = w.condition("tiny", "Scheduled");
    assert!(c.message.contains("cloud: 1 of 2"), "{}", c.message);
}

/// The schema of a CRD in deploy/crds.yaml, as JSON.
fn schema(kind: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds.yaml"
    ))
    .unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(doc).unwrap();
        if crd["spec"]["names"]["kind"] == kind {
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("no {kind} in deploy/crds.yaml");
}

#[test]
fn the_committed_crds_are_what_the_types_generate() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds.yaml"
    ))
    .unwrap();
    assert!(
        committed == weft_operator::crds_yaml(),
        "deploy/crds.yaml is stale: cargo run -p weft-operator --bin crdgen > deploy/crds.yaml"
    );
}

#[test]
fn the_example_and_the_operators_own_objects_match_the_crd_schemas() {
    let md_schema = jsonschema::validator_for(&schema("ModelDeployment")).expect("a valid schema");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/example-modeldeployment.yaml"
    ))
    .unwrap();
    let example: Value = serde_yaml::from_str(&example).unwrap();
    let errors: Vec<String> = md_schema
        .iter_errors(&example)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "deploy/example-modeldeployment.yaml: {errors:?}"
    );
    let typed: ModelDeployment =
        serde_json::from_value(example.clone()).expect("the example parses as a ModelDeployment");
    controller::validate(&typed).expect("the example passes the operator's own checks");

    // The schema catches what kubectl would refuse.
    for (path, bad) in [
        ("/spec/placements/0/tier", json!("moon")),
        ("/spec/placements/0/replicas", json!(-1)),
        ("/spec/port", json!("eighty")),
    ] {
        let mut e = example.clone();
        *e.pointer_mut(path).unwrap() = bad;
        assert!(!md_schema.is_valid(&e), "{path} should be refused");
    }
    let mut e = example.clone();
    e["spec"].as_object_mut().unwrap().remove("artifact");
    assert!(
        !md_schema.is_valid(&e),
        "a missing artifact should be refused"
    );

    // What the operator writes as status, and what an agent registers,
    // match the schemas too.
    let status = ModelDeploymentStatus {
        resolved_digest: Some(A.into()),
        stable_digest: Some(A.into()),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Ready".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut with_status = example.clone();
    with_status["status"] = serde_json::to_value(&status).unwrap();
    let errors: Vec<String> = md_schema
        .iter_errors(&with_status)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let ed_schema = jsonschema::validator_for(&schema("EdgeDevice")).unwrap();
    let device = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "EdgeDevice", "metadata": {"name": "d1"},
        "spec": {"assignments": {"tiny-edge": {"artifact": pinned(A), "port": 8000, "modelName": "tiny"}}},
        "status": {"architecture": "arm64", "capacity": {"memoryBytes": 1u64 << 31, "cpus": 4, "modules": 4},
                   "modules": {"tiny-edge": {"digest": A, "health": "ok", "state": "serving", "requests": 3, "failures": 0}},
                   "runningModules": 1}});
    let errors: Vec<String> = ed_schema
        .iter_errors(&device)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = device.clone();
    bad["spec"]["assignments"]["tiny-edge"]["port"] = json!(70000);
    assert!(
        !ed_schema.is_valid(&bad),
        "a port over 65535 should be refused"
    );
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_when_it_stops_renewing() {
    use weft_operator::leader::Elector;
    let (client, api) = FakeApi::start();
    let clock = Arc::new(Mutex::new(
        "2026-12-01T12:00:00Z".parse::<Timestamp>().unwrap(),
    ));
    let elector = |id: &str| {
        let c = clock.clone();
        Elector {
            api: kube::Api::namespaced(client.clone(), "weft-system"),
            name: "weft-operator".into(),
            identity: id.into(),
            duration: Duration::from_secs(15),
            now: Arc::new(move || *c.lock().unwrap()),
        }
    };
    let advance = |secs: i64| {
        let mut c = clock.lock().unwrap();
        *c = c.checked_add(SignedDuration::from_secs(secs)).unwrap();
    };
    let lease = "/apis/coordination.k8s.io/v1/namespaces/weft-system/leases/weft-operator";
    let (a, b) = (elector("a"), elector("b"));
    assert!(a.try_acquire().await.unwrap(), "a free lease is taken");
    assert!(!b.try_acquire().await.unwrap(), "a held lease is not");
    advance(10);
    assert!(a.try_acquire().await.unwrap(), "the holder renews");
    advance(10);
    assert!(
        !b.try_acquire().await.unwrap(),
        "renewed 10 s ago: still held"
    );
    let l = api.get(lease).unwrap();
    assert_eq!(
        (
            l["spec"]["holderIdentity"].as_str(),
            l["spec"]["leaseTransitions"].as_i64()
        ),
        (Some("a"), Some(0))
    );

    // a stops renewing: after 15 s, b takes over.
    advance(6);
    assert!(b.try_acquire().await.unwrap());
    let l = api.get(lease).unwrap();
    assert_eq!(
        (
            l["spec"]["holderIdentity"].as_str(),
            l["spec"]["leaseTransitions"].as_i64()
        ),
        (Some("b"), Some(1))
    );
    assert!(
        !a.try_acquire().await.unwrap(),
        "a comes back as a follower"
    );

    // A leader whose lease is taken stops leading.
    let c = Elector {
        api: kube::Api::namespaced(client.clone(), "weft-system"),
        name: "weft-operator-2".into(),
        identity: "c".into(),
        duration: Duration::from_millis(900),
        now: Arc::new(Timestamp::now),
    };
    let intruder = api.clone();
    let led = tokio::spawn(async move { c.lead(std::future::pending()).await });
    let path = "/apis/coordination.k8s.io/v1/namespaces/weft-system/leases/weft-operator-2";
    let started = std::time::Instant::now();
    while api.get(path).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "c never took its lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut l = intruder.get(path).unwrap();
    l["spec"]["holderIdentity"] = json!("d");
    l["spec"]["renewTime"] = json!(
        Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    );
    l["spec"]["leaseDurationSeconds"] = json!(60);
    intruder.put(path, l);
    let err = tokio::time::timeout(Duration::from_secs(10), led)
        .await
        .expect("c stops")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("lost the leader lease"), "{err}");
}
