//! A model's pool of initialized module instances: bounded concurrency
//! (one request per instance), a bounded wait queue, per-request deadlines.

use crate::error::{ApiError, Kind};
use crate::metrics::{Metrics, ModelLabels};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use weft_abi::Tensor;
use weft_runtime::{InferError, Instance, Program, RunOptions, Runtime, RuntimeError};

/// Sizing of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Instances, which is also how many requests run at once.
    pub instances: usize,
    /// Requests that may wait for an instance; one more is answered 503.
    pub queue: usize,
    /// Longest a request may take, waiting included.
    pub deadline: Duration,
}

pub(crate) struct Pool {
    model: String,
    runtime: Arc<Runtime>,
    program: Arc<Program>,
    options: RunOptions,
    config: PoolConfig,
    idle: Mutex<Vec<Instance>>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    live: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// Build the pool with every instance instantiated and initialized, so
    /// the first requests pay no start-up cost.
    pub fn new(
        model: &str,
        runtime: Arc<Runtime>,
        program: Arc<Program>,
        options: RunOptions,
        config: PoolConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Pool, RuntimeError> {
        let instances = config.instances.max(1);
        let idle = (0..instances)
            .map(|_| runtime.instantiate(&program, &options))
            .collect::<Result<Vec<_>, _>>()?;
        metrics
            .instances
            .get_or_create(&labels(model))
            .set(instances as i64);
        Ok(Pool {
            model: model.into(),
            runtime,
            program,
            options,
            config: PoolConfig {
                instances,
                ..config
            },
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(instances)),
            waiting: AtomicUsize::new(0),
            live: AtomicUsize::new(instances),
            metrics,
        })
    }

    /// The module's own interface, asked of an idle instance.
    pub fn describe(&self) -> Result<Option<weft_abi::Signature>, InferError> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        match idle.first_mut() {
            Some(i) => i.describe(),
            None => Ok(None),
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// Run one request on a free instance, waiting in the queue when all
    /// are busy.
    pub async fn infer(self: &Arc<Self>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ApiError> {
        let started = Instant::now();
        let deadline = self.config.deadline;
        let labels = labels(&self.model);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // A guard, not a decrement after the await: a client that
                // disconnects while queued drops this future mid-wait.
                let queued = Queued::enter(self, &labels);
                if queued.position >= self.config.queue {
                    return Err(ApiError::new(
                        Kind::Overloaded,
                        format!(
                            "model '{}' is at capacity ({} running, {} queued); retry later",
                            self.model, self.config.instances, self.config.queue
                        ),
                    ));
                }
                let got =
                    tokio::time::timeout(deadline, self.permits.clone().acquire_owned()).await;
                drop(queued);
                match got {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => {
                        return Err(ApiError::new(
                            Kind::Unavailable,
                            "the server is shutting down",
                        ));
                    }
                    Err(_) => {
                        return Err(ApiError::new(
                            Kind::QueueTimeout,
                            format!(
                                "request waited its whole deadline of {:?} for model '{}' and was dropped",
                                deadline, self.model
                            ),
                        ));
                    }
                }
            }
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        let pool = Arc::clone(self);
        let in_flight = self.metrics.in_flight.get_or_create(&labels).clone();
        // Everything that must be undone lives in the blocking task, which
        // runs to the end even when the client goes away.
        let result = tokio::task::spawn_blocking(move || {
            in_flight.inc();
            let r = pool.run(inputs, remaining);
            in_flight.dec();
            drop(permit);
            r
        })
        .await;
        result
            .map_err(|e| ApiError::new(Kind::ModuleFailed, format!("inference task failed: {e}")))?
    }

    /// On a blocking thread, holding a permit: take an instance (making a
    /// new one when an earlier failure retired one), run, give it back.
    fn run(&self, inputs: Vec<Tensor>, deadline: Duration) -> Result<Vec<Tensor>, ApiError> {
        let instance = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match instance {
            Some(i) => i,
            None => {
                let i = self
                    .runtime
                    .instantiate(&self.program, &self.options)
                    .map_err(|e| {
                        ApiError::new(
                            Kind::ModuleFailed,
                            format!("cannot start a new instance: {e}"),
                        )
                    })?;
                self.live.fetch_add(1, Ordering::SeqCst);
                self.set_instances_gauge();
                i
            }
        };
        let result = instance.infer(inputs, Some(deadline));
        if instance.is_retired() {
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.set_instances_gauge();
        } else {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(instance);
        }
        result.map_err(|e| match e {
            InferError::Rejected(why) => ApiError::new(Kind::Rejected, why),
            InferError::Failed(RuntimeError::Timeout { limit }) => ApiError::new(
                Kind::Deadline,
                format!(
                    "model '{}' ran past the request deadline ({:?} left of {:?}) and was stopped",
                    self.model, limit, self.config.deadline
                ),
            ),
            other => ApiError::new(
                Kind::ModuleFailed,
                format!("model '{}': {other}", self.model),
            ),
        })
    }

    fn set_instances_gauge(&self) {
        self.metrics
            .instances
            .get_or_create(&labels(&self.model))
            .set(self.live.load(Ordering::SeqCst) as i64);
    }

    /// Stop admitting requests (shutdown); running ones finish.
    pub fn close(&self) {
        self.permits.close();
    }
}

/// A request's place in the wait queue, counted (and shown in the queue
/// depth gauge) exactly as long as it lives.
struct Queued<'a> {
    pool: &'a Pool,
    depth: prometheus_client::metrics::gauge::Gauge,
    /// How many were waiting before this one.
    position: usize,
}

impl<'a> Queued<'a> {
    fn enter(pool: &'a Pool, labels: &ModelLabels) -> Self {
        let position = pool.waiting.fetch_add(1, Ordering::SeqCst);
        let depth = pool.metrics.queue_depth.get_or_create(labels).clone();
        depth.inc();
        Queued {
            pool,
            depth,
            position,
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.pool.waiting.fetch_sub(1, Ordering::SeqCst);
        self.depth.dec();
    }
}

fn labels(model: &str) -> ModelLabels {
    ModelLabels {
        model: model.into(),
    }
}
