//! Leader election over a `coordination.k8s.io` Lease, so the operator can
//! run with several replicas: only the lease's holder reconciles, and
//! another takes over when the holder stops renewing.
//!
//! The Lease is taken and renewed with `replace` on its resourceVersion,
//! so two candidates racing for it cannot both win: the loser gets a
//! conflict and stays a follower. A leader that fails to renew within the
//! lease's duration stops leading (the process exits and is restarted),
//! so at most one replica acts on a lease it still believes it holds.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One candidate for the lease `name`.
pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    pub now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    fn spec(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime((self.now)());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Take the lease when it is free, expired or ours, and renew it;
    /// whether this candidate holds it now.
    pub async fn try_acquire(&self) -> kube::Result<bool> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.holder_identity, &spec.renew_time) {
            (Some(h), Some(renewed)) if !h.is_empty() => {
                let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
                renewed.0.as_second() + secs <= (self.now)().as_second()
            }
            _ => true,
        };
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(if ours { spec.acquire_time } else { None }, transitions));
        // `replace` sends the resourceVersion read above: a candidate that
        // raced us to it gets a conflict.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait for the lease, then run `work` while renewing it. Returns when
    /// `work` does, or with an error once the lease is lost (another
    /// replica may lead by then: the caller must stop acting).
    pub async fn lead<F: Future<Output = anyhow::Result<()>>>(
        &self,
        work: F,
    ) -> anyhow::Result<()> {
        let retry = (self.duration / 3).max(Duration::from_millis(10));
        loop {
            match self.try_acquire().await {
                Ok(true) => break,
                Ok(false) => tracing::info!("waiting for the leader lease {}", self.name),
                Err(e) => tracing::warn!("leader lease {}: {e}", self.name),
            }
            tokio::time::sleep(retry).await;
        }
        tracing::info!("leading as {} (lease {})", self.identity, self.name);
        tokio::pin!(work);
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                r = &mut work => return r,
                () = tokio::time::sleep(retry) => {}
            }
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    anyhow::bail!("lost the leader lease {} to another replica", self.name)
                }
                Err(e) => {
                    tracing::warn!("renewing the leader lease {}: {e}", self.name);
                    if last_renewed.elapsed() + retry >= self.duration {
                        anyhow::bail!(
                            "could not renew the leader lease {} within {:?}",
                            self.name,
                            self.duration
                        );
                    }
                }
            }
        }
    }
}
