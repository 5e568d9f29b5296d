//! The agent's Prometheus metrics (`/metrics` of the status endpoint).
//! Labels are bounded: module names from the configuration, a fixed set of
//! results, digests only of versions the device keeps.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabel {
    pub module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub module: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunningLabels {
    pub module: String,
    pub digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Version changes by outcome: applied, refused, rolled_back,
    /// download_failed.
    pub updates: Family<ResultLabels, Counter>,
    pub health_checks: Family<ResultLabels, Counter>,
    /// 1 while the running version passes its health check.
    pub healthy: Family<ModuleLabel, Gauge>,
    /// 1 for the digest each module runs.
    pub running: Family<RunningLabels, Gauge>,
    pub source_errors: Family<ModuleLabel, Counter>,
    pub config_reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_agent");
        let m = Metrics {
            updates: Family::default(),
            health_checks: Family::default(),
            healthy: Family::default(),
            running: Family::default(),
            source_errors: Family::default(),
            config_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register("updates", "Version changes by outcome", m.updates.clone());
        registry.register(
            "health_checks",
            "Health checks by result",
            m.health_checks.clone(),
        );
        registry.register(
            "healthy",
            "Whether the running version passes its health check",
            m.healthy.clone(),
        );
        registry.register(
            "running",
            "The version each module runs (value 1)",
            m.running.clone(),
        );
        registry.register(
            "source_errors",
            "Failures to reach a module's source",
            m.source_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            m.config_reloads.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn count(
        &self,
        family: &Family<ResultLabels, Counter>,
        module: &str,
        result: &'static str,
    ) {
        family
            .get_or_create(&ResultLabels {
                module: module.into(),
                result,
            })
            .inc();
    }

    /// `module` now runs `digest` (and no longer what it ran).
    pub fn set_running(&self, module: &str, old: Option<&str>, new: Option<&str>) {
        if let Some(o) = old {
            self.running.remove(&RunningLabels {
                module: module.into(),
                digest: o.into(),
            });
        }
        if let Some(n) = new {
            self.running
                .get_or_create(&RunningLabels {
                    module: module.into(),
                    digest: n.into(),
                })
                .set(1);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
