//! How a version is doing, for the canary gate: the requests and failures
//! its replicas served, read from each pod's `/metrics` (what `weft
//! serve` and the shim export) and from the reports edge agents write into
//! their `EdgeDevice` status.

use crate::resolve::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
pub use weft_crd::counters::Counts;
use weft_crd::{EdgeDevice, ModelDeployment};

pub trait HealthSource: Send + Sync {
    /// Totals over every replica of `md` that runs `digest`.
    fn counts<'a>(
        &'a self,
        client: &'a kube::Client,
        md: &'a ModelDeployment,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Counts, String>>;
}

/// The real one: scrapes pods, reads edge reports.
pub struct Observed;

impl HealthSource for Observed {
    fn counts<'a>(
        &'a self,
        client: &'a kube::Client,
        md: &'a ModelDeployment,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Counts, String>> {
        Box::pin(async move {
            let name = md.metadata.name.clone().unwrap_or_default();
            let ns = md
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let model = md.spec.model_name.clone().unwrap_or_else(|| name.clone());
            let mut total = Counts::default();
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let list = pods
                .list(
                    &ListParams::default()
                        .labels(&format!("{}={name}", crate::children::LABEL_DEPLOYMENT)),
                )
                .await
                .map_err(|e| format!("listing pods: {e}"))?;
            for p in list.items {
                let on_digest = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::children::ANNOTATION_DIGEST))
                    .is_some_and(|d| d == digest);
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                if let (true, Some(ip)) = (on_digest, ip) {
                    let addr = format!("{ip}:{}", md.spec.port);
                    match scrape(&addr).await {
                        Ok(text) => total.add(weft_crd::counters::parse(&text, &model)),
                        Err(e) => tracing::debug!(pod = ?p.metadata.name, "scraping {addr}: {e}"),
                    }
                }
            }
            let devices: Api<EdgeDevice> = Api::namespaced(client.clone(), &ns);
            let list = devices
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing edge devices: {e}"))?;
            for d in list.items {
                for (key, report) in d.status.map(|s| s.modules).unwrap_or_default() {
                    let ours = key.starts_with(&format!("{name}-"));
                    if ours && report.digest.as_deref() == Some(digest) {
                        total.requests += report.requests;
                        total.failures += report.failures;
                    }
                }
            }
            Ok(total)
        })
    }
}

/// `GET /metrics` of one replica.
pub async fn scrape(addr: &str) -> reqwest::Result<String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap_or_default()
    });
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}
