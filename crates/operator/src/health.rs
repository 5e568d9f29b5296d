//! How a version is doing, for the canary gate: the requests and failures
//! its replicas served, read from each pod's `/metrics` (what `weft
//! serve` and the shim export) and from the reports edge agents write into
//! their `EdgeDevice` status.

use crate::resolve::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use weft_crd::{EdgeDevice, ModelDeployment};

/// Counters since the replicas started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub failures: u64,
    pub p99_ms: Option<f64>,
}

/// Failure reasons that count against a version (client mistakes such as
/// a bad request do not).
const SERVER_FAILURES: [&str; 5] = [
    "module_failed",
    "deadline",
    "unavailable",
    "queue_timeout",
    "overloaded",
];

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
                        Ok(text) => add(&mut total, parse(&text, &model)),
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

fn add(total: &mut Counts, c: Counts) {
    total.requests += c.requests;
    total.failures += c.failures;
    total.p99_ms = match (total.p99_ms, c.p99_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
}

/// `GET /metrics` of one replica.
pub async fn scrape(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = std::time::Duration::from_secs(2);
    let mut s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tokio::time::timeout(timeout, s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(text))
}

fn labels(line: &str) -> BTreeMap<String, String> {
    let Some(inner) = line
        .split_once('{')
        .and_then(|(_, r)| r.rsplit_once('}'))
        .map(|(l, _)| l)
    else {
        return BTreeMap::new();
    };
    inner
        .split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

fn value(line: &str) -> Option<f64> {
    line.rsplit_once(' ')?.1.trim().parse().ok()
}

/// Requests, server-side failures and p99 of `model` from a weft
/// `/metrics` text.
pub fn parse(text: &str, model: &str) -> Counts {
    let mut c = Counts::default();
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let mut inf = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let l = labels(line);
        if l.get("model").map(String::as_str) != Some(model) {
            continue;
        }
        let Some(v) = value(line) else { continue };
        if line.starts_with("weft_inference_requests_total") {
            c.requests += v as u64;
        } else if line.starts_with("weft_inference_failures_total")
            && l.get("reason")
                .is_some_and(|r| SERVER_FAILURES.contains(&r.as_str()))
        {
            c.failures += v as u64;
        } else if line.starts_with("weft_inference_duration_seconds_bucket") {
            match l.get("le").map(String::as_str) {
                Some("+Inf") => inf += v,
                Some(le) => {
                    if let Ok(s) = le.parse::<f64>() {
                        *buckets.entry((s * 1e9) as u64).or_default() += v;
                    }
                }
                None => {}
            }
        }
    }
    if inf > 0.0 {
        let want = inf * 0.99;
        c.p99_ms = buckets
            .iter()
            .find(|(_, count)| **count >= want)
            .map(|(ns, _)| *ns as f64 / 1e6);
    }
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_weft_metrics_text() {
        let text = r#"# HELP weft_inference_requests Inference requests received.
weft_inference_requests_total{model="m",protocol="rest",backend="cpu"} 90
weft_inference_requests_total{model="m",protocol="grpc",backend="cpu"} 10
weft_inference_requests_total{model="other",protocol="rest",backend="cpu"} 7
weft_inference_failures_total{model="m",protocol="rest",reason="bad_request"} 5
weft_inference_failures_total{model="m",protocol="rest",reason="module_failed"} 2
weft_inference_duration_seconds_bucket{model="m",protocol="rest",backend="cpu",le="0.001"} 50
weft_inference_duration_seconds_bucket{model="m",protocol="rest",backend="cpu",le="0.01"} 98
weft_inference_duration_seconds_bucket{model="m",protocol="rest",backend="cpu",le="0.1"} 100
weft_inference_duration_seconds_bucket{model="m",protocol="rest",backend="cpu",le="+Inf"} 100
"#;
        let c = super::parse(text, "m");
        assert_eq!((c.requests, c.failures), (100, 2));
        assert_eq!(c.p99_ms, Some(100.0));
    }
}
