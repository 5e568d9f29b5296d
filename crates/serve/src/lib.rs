//! `weft-serve`: the Open Inference Protocol (KServe V2) for Weft model
//! modules, over REST ([`rest::router`], axum) and gRPC ([`grpc::service`],
//! tonic), with Triton's binary tensor extension.
//!
//! A [`Server`] holds the served models. Each model is a serving module (see
//! `weft_runtime::Instance` for the contract) with a pool of pre-initialized
//! instances: one request per instance at a time, a bounded queue in front
//! (full: 503), and a deadline per request. Requests are checked against
//! the model's interface (`weft_abi::Signature`) before they reach the
//! module.
//!
//! ```no_run
//! # async fn f(server: std::sync::Arc<weft_serve::Server>) -> std::io::Result<()> {
//! let rest = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let grpc = tokio::net::TcpListener::bind("127.0.0.1:8001").await?;
//! weft_serve::serve(server, rest, Some(grpc), std::future::pending()).await
//! # }
//! ```

mod codec;
mod error;
pub mod grpc;
mod interface;
mod metrics;
mod pool;
pub mod rest;
pub mod wire;

/// Types generated from `proto/grpc_predict_v2.proto` (package `inference`).
pub mod proto {
    tonic::include_proto!("inference");
}

pub use error::{ApiError, Kind};
pub use metrics::Metrics;
pub use pool::PoolConfig;

use pool::Pool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use weft_abi::Tensor;
use weft_runtime::{Program, RunOptions, Runtime, RuntimeError};

/// Server name and version reported by `GET /v2`.
pub const SERVER_NAME: &str = "weft";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Protocol extensions reported by `GET /v2`.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// Everything needed to serve one model.
pub struct ModelSpec {
    /// The name clients use in `/v2/models/{name}`.
    pub name: String,
    /// The one version served (`"1"` unless the artifact says otherwise).
    pub version: String,
    /// Reported as the model's platform.
    pub platform: String,
    /// Loaded with [`Runtime::load_service`]. A module that declares its own
    /// interface (`describe`) overrides [`ModelSpec::interface`].
    pub program: Arc<Program>,
    /// Preloaded models, environment, directories and limits of each
    /// instance (`limits.timeout` bounds instance start-up).
    pub options: RunOptions,
    pub interface: weft_abi::Signature,
    /// Which backend runs it, for metrics (`cpu`, `gpu`).
    pub backend: &'static str,
    pub pool: PoolConfig,
}

impl ModelSpec {
    /// Serve a prepared serving module (`Runtime::prepare` with
    /// `Purpose::Serve`) as `name`: its version (`"1"` unless the artifact
    /// says otherwise) and the interface of its preloaded graphs.
    pub fn new(
        name: impl Into<String>,
        platform: impl Into<String>,
        prepared: weft_runtime::Prepared,
        pool: PoolConfig,
    ) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            version: prepared.version.unwrap_or_else(|| "1".into()),
            platform: platform.into(),
            program: Arc::new(prepared.program),
            interface: interface::of_preloads(&prepared.options.models),
            options: prepared.options,
            backend: "cpu",
            pool,
        }
    }
}

pub(crate) struct Served {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub interface: weft_abi::Signature,
    pub backend: &'static str,
    pool: Arc<Pool>,
}

/// Server-wide limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (REST) or message (gRPC), in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body: 64 << 20 }
    }
}

/// The served models and the state every protocol shares. Models can be
/// replaced while the server runs ([`Server::prepare`], [`Server::install`]):
/// requests already admitted finish on the model they started on.
pub struct Server {
    models: RwLock<BTreeMap<String, Arc<Served>>>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    limits: Limits,
}

/// Which protocol a request came in on (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
        }
    }
}

/// The result of a successful inference, outputs named and filtered.
pub struct Inferred {
    pub model: String,
    pub version: String,
    pub outputs: Vec<Tensor>,
}

/// A model with its instances started and its interface known, not yet
/// served: check it with [`Server::infer_prepared`], serve it with
/// [`Server::install`].
#[derive(Clone)]
pub struct Prepared(Arc<Served>);

impl Prepared {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn version(&self) -> &str {
        &self.0.version
    }
}

impl Server {
    /// Start every model's instance pool (instantiating and initializing
    /// each instance), then report ready.
    pub fn new(
        runtime: Arc<Runtime>,
        specs: Vec<ModelSpec>,
        limits: Limits,
    ) -> Result<Server, RuntimeError> {
        let server = Server {
            models: RwLock::new(BTreeMap::new()),
            metrics: Arc::new(Metrics::default()),
            ready: AtomicBool::new(true),
            limits,
        };
        for spec in specs {
            let prepared = server.prepare(runtime.clone(), spec)?;
            server.install(prepared);
        }
        Ok(server)
    }

    /// Start a model's instances and learn its interface, reporting into
    /// this server's metrics, without serving it yet.
    pub fn prepare(
        &self,
        runtime: Arc<Runtime>,
        spec: ModelSpec,
    ) -> Result<Prepared, RuntimeError> {
        let pool = Pool::new(
            &spec.name,
            runtime,
            spec.program,
            spec.options,
            spec.pool,
            self.metrics.clone(),
        )?;
        // A module that describes itself knows its tensors better than its
        // graph does (its pre/post-processing sits in between).
        let interface = match pool.describe() {
            Ok(Some(sig)) => sig,
            Ok(None) => spec.interface,
            Err(e) => {
                return Err(RuntimeError::NotServing {
                    name: spec.name,
                    message: format!("describing its interface failed: {e}"),
                });
            }
        };
        tracing::info!(
            model = %spec.name,
            version = %spec.version,
            instances = pool.config().instances,
            queue = pool.config().queue,
            "model ready"
        );
        Ok(Prepared(Arc::new(Served {
            name: spec.name,
            version: spec.version,
            platform: spec.platform,
            interface,
            backend: spec.backend,
            pool: Arc::new(pool),
        })))
    }

    /// Serve `prepared` under its name from the next request on; returns
    /// the model it replaces (still finishing its admitted requests).
    pub fn install(&self, prepared: Prepared) -> Option<Prepared> {
        let name = prepared.0.name.clone();
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, prepared.0)
            .map(Prepared)
    }

    /// Stop serving `name`; returns the model.
    pub fn remove(&self, name: &str) -> Option<Prepared> {
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .map(Prepared)
    }

    /// Run one request on a prepared model, with the checks a served one
    /// gets, outside the metrics (health checks of a model not yet live).
    pub async fn infer_prepared(
        &self,
        prepared: &Prepared,
        inputs: Vec<Tensor>,
        requested: &[String],
    ) -> Result<Inferred, ApiError> {
        Self::run_on(&prepared.0, inputs, requested).await
    }

    /// The version `name` serves now.
    pub fn version_of(&self, name: &str) -> Option<String> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|m| m.version.clone())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Names of the served models.
    pub fn model_names(&self) -> Vec<String> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Stop admitting inference requests (readiness turns false); requests
    /// already admitted finish.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::SeqCst);
        for m in self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            m.pool.close();
        }
    }

    pub(crate) fn model(&self, name: &str, version: Option<&str>) -> Result<Arc<Served>, ApiError> {
        let found = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let m = found.ok_or_else(|| {
            let known = self.model_names();
            ApiError::new(
                Kind::NotFound,
                format!(
                    "unknown model '{name}'; this server has {}",
                    if known.is_empty() {
                        "no models".into()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
        match version {
            Some(v) if !v.is_empty() && v != m.version => Err(ApiError::new(
                Kind::NotFound,
                format!(
                    "model '{name}' has no version '{v}'; it serves version '{}'",
                    m.version
                ),
            )),
            _ => Ok(m),
        }
    }

    /// Check, queue and run one request; record metrics. `requested`
    /// filters outputs (empty: all).
    pub async fn infer(
        &self,
        protocol: Protocol,
        model: &str,
        version: Option<&str>,
        inputs: Vec<Tensor>,
        requested: &[String],
    ) -> Result<Inferred, ApiError> {
        let started = Instant::now();
        let span = tracing::info_span!("infer", model = %model, protocol = protocol.label());
        let result = tracing::Instrument::instrument(
            self.infer_inner(model, version, inputs, requested),
            span,
        )
        .await;
        let known = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .map(|m| (m.name.clone(), m.backend));
        let (label, backend) = known.unwrap_or_else(|| ("_unknown".to_owned(), "none"));
        let labels = metrics::RequestLabels {
            model: label.clone(),
            protocol: protocol.label(),
            backend,
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::debug!(error = %e, "inference failed");
            self.metrics
                .failures
                .get_or_create(&metrics::FailureLabels {
                    model: label,
                    protocol: protocol.label(),
                    reason: e.kind.reason(),
                })
                .inc();
        }
        result
    }

    async fn infer_inner(
        &self,
        model: &str,
        version: Option<&str>,
        inputs: Vec<Tensor>,
        requested: &[String],
    ) -> Result<Inferred, ApiError> {
        let m = self.model(model, version)?;
        if !self.is_ready() {
            return Err(ApiError::new(
                Kind::Unavailable,
                "the server is shutting down",
            ));
        }
        Self::run_on(&m, inputs, requested).await
    }

    async fn run_on(
        m: &Served,
        inputs: Vec<Tensor>,
        requested: &[String],
    ) -> Result<Inferred, ApiError> {
        let model = m.name.as_str();
        if !m.interface.outputs.is_empty() {
            let declared: HashSet<&str> = m
                .interface
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            if let Some(r) = requested.iter().find(|r| !declared.contains(r.as_str())) {
                return Err(ApiError::bad(format!(
                    "model '{model}' has no output '{r}'; its outputs are {}",
                    m.interface
                        .outputs
                        .iter()
                        .map(|o| format!("'{}'", o.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let inputs = interface::order_inputs(&m.interface, model, inputs)?;
        let mut outputs = m.pool.infer(inputs).await?;
        interface::name_outputs(&m.interface, &mut outputs);
        for t in &outputs {
            t.check().map_err(|e| {
                ApiError::new(
                    Kind::ModuleFailed,
                    format!("model '{model}' returned a bad tensor: {e}"),
                )
            })?;
        }
        if !requested.is_empty() {
            // Requested order, first mention wins; linear in both lists.
            let mut at: HashMap<&str, usize> = HashMap::with_capacity(requested.len());
            for (i, r) in requested.iter().enumerate() {
                at.entry(r.as_str()).or_insert(i);
            }
            let produced: HashSet<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            if let Some(r) = requested.iter().find(|r| !produced.contains(r.as_str())) {
                return Err(ApiError::new(
                    Kind::ModuleFailed,
                    format!("model '{model}' did not produce the requested output '{r}'"),
                ));
            }
            let mut kept: Vec<(usize, Tensor)> = outputs
                .into_iter()
                .filter_map(|o| at.get(o.name.as_str()).map(|&i| (i, o)))
                .collect();
            kept.sort_by_key(|(i, _)| *i);
            kept.dedup_by_key(|(i, _)| *i);
            outputs = kept.into_iter().map(|(_, o)| o).collect();
        }
        Ok(Inferred {
            model: m.name.clone(),
            version: m.version.clone(),
            outputs,
        })
    }
}

/// Serve REST on `rest` and, when given, gRPC on `grpc` until `shutdown`
/// resolves; then stop accepting, let admitted requests finish, and return.
pub async fn serve(
    server: Arc<Server>,
    rest: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let notify = {
        let server = server.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            server.begin_shutdown();
            let _ = tx.send(true);
        }
    };
    tokio::spawn(notify);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let app = rest::router(server.clone());
    let rest_task = axum::serve(rest, app).with_graceful_shutdown(wait(rx.clone()));
    match grpc {
        None => rest_task.await,
        Some(listener) => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let grpc_task = tonic::transport::Server::builder()
                .add_service(grpc::service(server.clone()))
                .serve_with_incoming_shutdown(incoming, wait(rx));
            let (a, b) = tokio::join!(rest_task, grpc_task);
            a?;
            b.map_err(std::io::Error::other)
        }
    }
}
#[cfg(test)]
mod tests;
