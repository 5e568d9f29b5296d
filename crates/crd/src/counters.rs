//! The inference counters a canary gate reads, from the Prometheus text
//! `weft serve` (and the shim, and each agent-run module) exports on
//! `/metrics`: the operator scrapes pods with it, edge agents read their
//! own modules with it and report the totals in their `EdgeDevice`.

use std::collections::BTreeMap;

/// Counters since the replicas started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub failures: u64,
    pub p99_ms: Option<f64>,
}

impl Counts {
    /// Sum of two readings (the worse p99).
    pub fn add(&mut self, c: Counts) {
        self.requests += c.requests;
        self.failures += c.failures;
        self.p99_ms = match (self.p99_ms, c.p99_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
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
