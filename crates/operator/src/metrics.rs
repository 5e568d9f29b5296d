//! The operator's Prometheus metrics (`/metrics`). Labels: deployment
//! names from the cluster's objects, a fixed set of results.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub deployment: String,
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    pub deployment: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub rollouts: Family<RolloutLabels, Counter>,
    pub ready: Family<DeploymentLabel, Gauge>,
    pub desired: Family<DeploymentLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_operator");
        let m = Metrics {
            registry: Registry::default(),
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            rollouts: Family::default(),
            ready: Family::default(),
            desired: Family::default(),
        };
        registry.register("reconciles", "Reconciles started", m.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error",
            m.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            m.duration.clone(),
        );
        registry.register(
            "rollout_events",
            "Canary events: started, advanced, promoted, rolled_back",
            m.rollouts.clone(),
        );
        registry.register(
            "ready_replicas",
            "Replicas ready per deployment",
            m.ready.clone(),
        );
        registry.register(
            "desired_replicas",
            "Replicas asked for per deployment",
            m.desired.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct Timer<'a>(&'a Histogram, std::time::Instant);

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn reconcile_started(&self) -> Timer<'_> {
        self.reconciles.inc();
        Timer(&self.duration, std::time::Instant::now())
    }

    pub fn reconcile_failed(&self, e: &crate::Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: e.metric_label(),
            })
            .inc();
    }

    pub fn rollout(&self, deployment: &str, event: &'static str) {
        self.rollouts
            .get_or_create(&RolloutLabels {
                deployment: deployment.into(),
                event,
            })
            .inc();
    }

    pub fn replicas(&self, deployment: &str, ready: u32, desired: u32) {
        let l = DeploymentLabel {
            deployment: deployment.into(),
        };
        self.ready.get_or_create(&l).set(i64::from(ready));
        self.desired.get_or_create(&l).set(i64::from(desired));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
