//! What the agent is doing, for people and scripts: `GET /status` (JSON,
//! what `weft agent status` prints), `GET /metrics` (Prometheus), `GET
//! /healthz` on the agent's status address (loopback by default).

use crate::metrics::Metrics;
use crate::state::{Run, Transition};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusDoc {
    pub agent: AgentStatus,
    pub modules: BTreeMap<String, ModuleStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub started: String,
    pub dir: String,
    pub config: String,
    /// Why the configuration file's latest text was refused (the agent runs
    /// the last good one).
    pub config_error: Option<String>,
    /// The cluster source, when `[cluster]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub namespace: String,
    pub device: String,
    /// When the API server last answered.
    pub last_contact: Option<String>,
    /// Why the last round trip failed (the agent keeps running what it has).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModuleStatus {
    pub kind: String,
    pub source: String,
    pub bind: Option<String>,
    /// The digest the source asks for, once known.
    pub desired: Option<String>,
    /// The digest that runs.
    pub running: Option<String>,
    /// The running artifact's version.
    pub version: Option<String>,
    /// starting, waiting, running, downloading, checking, probation,
    /// stopped, failed.
    pub state: String,
    /// ok, failing: REASON, unknown.
    pub health: String,
    /// The latest problem (a source that cannot be reached, a refused
    /// version); cleared when things are fine again.
    pub error: Option<String>,
    pub previous: Vec<String>,
    pub last_transition: Option<Transition>,
    pub last_run: Option<Run>,
}

/// The live status, shared by the workers and the endpoint.
#[derive(Default)]
pub struct Status {
    doc: RwLock<StatusDoc>,
}

impl Status {
    pub fn snapshot(&self) -> StatusDoc {
        self.doc.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn agent(&self, f: impl FnOnce(&mut AgentStatus)) {
        f(&mut self.doc.write().unwrap_or_else(|p| p.into_inner()).agent);
    }

    pub fn module(&self, name: &str, f: impl FnOnce(&mut ModuleStatus)) {
        let mut doc = self.doc.write().unwrap_or_else(|p| p.into_inner());
        f(doc.modules.entry(name.to_owned()).or_default());
    }

    pub fn remove(&self, name: &str) {
        self.doc
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .modules
            .remove(name);
    }
}

#[derive(Clone)]
struct Endpoint {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

pub fn router(status: Arc<Status>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Endpoint { status, metrics })
}

async fn status_json(State(e): State<Endpoint>) -> Response {
    axum::Json(e.status.snapshot()).into_response()
}

async fn metrics_text(State(e): State<Endpoint>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics.encode(),
    )
        .into_response()
}

/// `weft agent status`: one block per module.
pub fn render(doc: &StatusDoc) -> String {
    let short = |d: &Option<String>| {
        d.as_deref()
            .map(|d| d.trim_start_matches("sha256:").chars().take(12).collect())
            .unwrap_or_else(|| "-".to_string())
    };
    let mut out = format!(
        "agent {} (started {}), {}\n",
        doc.agent.version, doc.agent.started, doc.agent.config
    );
    if let Some(e) = &doc.agent.config_error {
        out.push_str(&format!("  config refused: {e}\n"));
    }
    if let Some(c) = &doc.agent.cluster {
        out.push_str(&format!(
            "  cluster: EdgeDevice {}/{}, last contact {}{}\n",
            c.namespace,
            c.device,
            c.last_contact.as_deref().unwrap_or("never"),
            c.error
                .as_deref()
                .map(|e| format!(" (offline: {e})"))
                .unwrap_or_default()
        ));
    }
    for (name, m) in &doc.modules {
        out.push_str(&format!(
            "\n{name} ({}{}) from {}\n  running {} {}  desired {}  state {}  health {}\n",
            m.kind,
            m.bind
                .as_deref()
                .map(|b| format!(" on {b}"))
                .unwrap_or_default(),
            m.source,
            short(&m.running),
            m.version
                .as_deref()
                .map(|v| format!("(version {v})"))
                .unwrap_or_default(),
            short(&m.desired),
            m.state,
            m.health,
        ));
        if let Some(e) = &m.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        if let Some(t) = &m.last_transition {
            out.push_str(&format!(
                "  last: {} {:?} {} -> {}: {}\n",
                t.at,
                t.kind,
                short(&t.from),
                short(&t.to),
                t.reason
            ));
        }
        if let Some(r) = &m.last_run {
            out.push_str(&format!(
                "  last run: {} exit {} {}\n",
                r.at, r.exit_code, r.message
            ));
        }
    }
    out
}
