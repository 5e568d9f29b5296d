//! Prometheus metrics at `/metrics`. Labels are bounded: model names come
//! from the server's configuration (unknown names count as `_unknown`),
//! never from request ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub protocol: &'static str,
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub model: String,
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~105 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 22))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<ModelLabels, Gauge>,
    pub in_flight: Family<ModelLabels, Gauge>,
    pub instances: Family<ModelLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let requests = Family::<RequestLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        let in_flight = Family::<ModelLabels, Gauge>::default();
        let instances = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "inference_requests",
            "Inference requests received, by model, protocol and backend",
            requests.clone(),
        );
        registry.register(
            "inference_failures",
            "Inference requests that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Time from receiving an inference request to its response, in seconds",
            latency.clone(),
        );
        registry.register(
            "inference_queue_depth",
            "Requests waiting for a free module instance",
            queue_depth.clone(),
        );
        registry.register(
            "inference_in_flight",
            "Requests running in a module instance now",
            in_flight.clone(),
        );
        registry.register(
            "module_instances",
            "Live, initialized module instances in the pool",
            instances.clone(),
        );
        Self {
            registry,
            requests,
            failures,
            latency,
            queue_depth,
            in_flight,
            instances,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
