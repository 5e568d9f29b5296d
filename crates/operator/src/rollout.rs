//! A canary rollout as a pure state machine: from the digest the artifact
//! resolves to, what runs now, the canary's step and what its health gate
//! reads, to the next move.

use weft_crd::{Canary, HealthGate};

/// What the canary's replicas did since its step began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateReading {
    pub requests: u64,
    pub failures: u64,
    /// 99th-percentile latency, when known.
    pub p99_ms: Option<f64>,
}

impl GateReading {
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            1.0 - self.failures as f64 / self.requests as f64
        }
    }
}

/// The canary in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    pub digest: String,
    pub step: usize,
    /// Seconds since the step began.
    pub elapsed: u64,
}

/// The next move.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Every replica runs `digest`.
    Steady { digest: String },
    /// Start a canary of `digest` at step 0.
    Start { digest: String },
    /// Keep the canary where it is.
    Hold { reason: String },
    /// Move the canary to `step`.
    Advance { step: usize },
    /// The canary becomes the stable version everywhere.
    Promote,
    /// Take the canary out; the stable version runs everywhere again.
    RollBack { reason: String },
}

/// Decide. `stable` is what runs outside the canary (none before the first
/// rollout); `refused` says whether `resolved` was rolled back before.
pub fn decide(
    resolved: &str,
    stable: Option<&str>,
    canary: Option<&InFlight>,
    refused: bool,
    strategy: Option<&Canary>,
    reading: Option<GateReading>,
) -> Decision {
    let steady = |d: &str| Decision::Steady { digest: d.into() };
    let Some(stable) = stable else {
        // The first version has nothing to be compared with.
        return steady(resolved);
    };
    match (canary, strategy) {
        // The artifact moved on (or back) while a canary ran: that canary
        // is over; a new one starts from the next reconcile.
        (Some(c), _) if c.digest != resolved => Decision::RollBack {
            reason: format!(
                "the artifact now resolves to {}, not the canary {}",
                short(resolved),
                short(&c.digest)
            ),
        },
        (Some(_), None) => Decision::Promote,
        (Some(c), Some(s)) => gate(c, s, reading),
        (None, _) if resolved == stable || refused => steady(stable),
        (None, None) => steady(resolved),
        (None, Some(_)) => Decision::Start {
            digest: resolved.into(),
        },
    }
}

fn gate(c: &InFlight, s: &Canary, reading: Option<GateReading>) -> Decision {
    let g: &HealthGate = &s.gate;
    if let Some(r) = reading
        && r.requests >= g.min_requests.max(1)
    {
        let rate = r.success_rate();
        if rate < g.min_success_rate {
            return Decision::RollBack {
                reason: format!(
                    "success rate {:.3} is below {} ({} of {} requests failed at {}%)",
                    rate,
                    g.min_success_rate,
                    r.failures,
                    r.requests,
                    s.steps.get(c.step).copied().unwrap_or(100)
                ),
            };
        }
        if let (Some(max), Some(p99)) = (g.max_p99_latency_ms, r.p99_ms)
            && p99 > max as f64
        {
            return Decision::RollBack {
                reason: format!("p99 latency {p99:.1} ms is above {max} ms"),
            };
        }
    }
    if c.elapsed < g.window_seconds {
        return Decision::Hold {
            reason: format!(
                "step {} ({}%) holds for {}s more",
                c.step + 1,
                s.steps.get(c.step).copied().unwrap_or(100),
                g.window_seconds - c.elapsed
            ),
        };
    }
    let requests = reading.map_or(0, |r| r.requests);
    if requests < g.min_requests {
        return Decision::Hold {
            reason: format!(
                "waiting for traffic: {requests} of {} requests in the window",
                g.min_requests
            ),
        };
    }
    if c.step + 1 >= s.steps.len() {
        Decision::Promote
    } else {
        Decision::Advance { step: c.step + 1 }
    }
}

/// Replicas of `total` on the canary at `percent`: rounded up, at least one
/// while a canary runs, at most all.
pub fn canary_replicas(total: u32, percent: u32) -> u32 {
    if total == 0 {
        return 0;
    }
    (u64::from(total) * u64::from(percent.min(100)))
        .div_ceil(100)
        .clamp(1, u64::from(total)) as u32
}

/// Problems with a canary specification.
pub fn validate(c: &Canary) -> Result<(), String> {
    if c.steps.is_empty() {
        return Err("strategy.canary.steps is empty; give rising percentages ending at 100, e.g. [10, 50, 100]".into());
    }
    if c.steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "strategy.canary.steps {:?} must rise strictly",
            c.steps
        ));
    }
    if c.steps[0] == 0 || *c.steps.last().unwrap_or(&0) != 100 {
        return Err(format!(
            "strategy.canary.steps {:?} must be between 1 and 100 and end at 100",
            c.steps
        ));
    }
    let rate = c.gate.min_success_rate;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "strategy.canary.gate.minSuccessRate {rate} must be between 0 and 1"
        ));
    }
    if c.gate.window_seconds == 0 {
        return Err("strategy.canary.gate.windowSeconds must be at least 1".into());
    }
    Ok(())
}

pub fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        Canary {
            steps: vec![10, 50, 100],
            gate: HealthGate {
                min_success_rate: 0.99,
                max_p99_latency_ms: Some(100),
                window_seconds: 60,
                min_requests: 10,
            },
        }
    }

    fn at(step: usize, elapsed: u64) -> InFlight {
        InFlight {
            digest: "new".into(),
            step,
            elapsed,
        }
    }

    fn read(requests: u64, failures: u64, p99: f64) -> Option<GateReading> {
        Some(GateReading {
            requests,
            failures,
            p99_ms: Some(p99),
        })
    }

    #[test]
    fn a_canary_walks_its_steps_while_the_gate_holds() {
        let c = canary();
        assert_eq!(
            decide("v1", None, None, false, Some(&c), None),
            Decision::Steady {
                digest: "v1".into()
            }
        );
        assert_eq!(
            decide("v1", Some("v1"), None, false, Some(&c), None),
            Decision::Steady {
                digest: "v1".into()
            }
        );
        assert_eq!(
            decide("new", Some("v1"), None, false, Some(&c), None),
            Decision::Start {
                digest: "new".into()
            }
        );
        assert!(matches!(
            decide(
                "new",
                Some("v1"),
                Some(&at(0, 10)),
                false,
                Some(&c),
                read(50, 0, 20.0)
            ),
            Decision::Hold { .. }
        ));
        assert_eq!(
            decide(
                "new",
                Some("v1"),
                Some(&at(0, 61)),
                false,
                Some(&c),
                read(50, 0, 20.0)
            ),
            Decision::Advance { step: 1 }
        );
        assert_eq!(
            decide(
                "new",
                Some("v1"),
                Some(&at(2, 61)),
                false,
                Some(&c),
                read(50, 0, 20.0)
            ),
            Decision::Promote
        );
        // Without traffic the gate cannot decide.
        let d = decide(
            "new",
            Some("v1"),
            Some(&at(1, 61)),
            false,
            Some(&c),
            read(3, 0, 20.0),
        );
        assert!(
            matches!(&d, Decision::Hold { reason } if reason.contains("3 of 10")),
            "{d:?}"
        );
        // No strategy: straight to the new digest.
        assert_eq!(
            decide("new", Some("v1"), None, false, None, None),
            Decision::Steady {
                digest: "new".into()
            }
        );
    }

    #[test]
    fn a_failing_gate_rolls_back_at_once_and_the_digest_stays_refused() {
        let c = canary();
        let d = decide(
            "new",
            Some("v1"),
            Some(&at(0, 5)),
            false,
            Some(&c),
            read(100, 5, 20.0),
        );
        assert!(
            matches!(&d, Decision::RollBack { reason } if reason.contains("0.950") && reason.contains("5 of 100")),
            "{d:?}"
        );
        let d = decide(
            "new",
            Some("v1"),
            Some(&at(1, 70)),
            false,
            Some(&c),
            read(100, 0, 250.0),
        );
        assert!(
            matches!(&d, Decision::RollBack { reason } if reason.contains("250.0 ms")),
            "{d:?}"
        );
        assert_eq!(
            decide("new", Some("v1"), None, true, Some(&c), None),
            Decision::Steady {
                digest: "v1".into()
            }
        );
        // The artifact moved while the canary ran.
        assert!(matches!(
            decide("newer", Some("v1"), Some(&at(1, 5)), false, Some(&c), None),
            Decision::RollBack { .. }
        ));
    }

    #[test]
    fn replica_split_and_validation() {
        assert_eq!(canary_replicas(4, 10), 1);
        assert_eq!(canary_replicas(4, 50), 2);
        assert_eq!(canary_replicas(4, 100), 4);
        assert_eq!(canary_replicas(3, 1), 1);
        assert_eq!(canary_replicas(0, 50), 0);
        assert!(validate(&canary()).is_ok());
        let mut c = canary();
        c.steps = vec![50, 10, 100];
        assert!(validate(&c).unwrap_err().contains("rise"));
        c.steps = vec![10, 50];
        assert!(validate(&c).unwrap_err().contains("end at 100"));
        c.steps = vec![];
        assert!(validate(&c).unwrap_err().contains("empty"));
        let mut c = canary();
        c.gate.min_success_rate = 1.5;
        assert!(validate(&c).unwrap_err().contains("minSuccessRate"));
    }
}
