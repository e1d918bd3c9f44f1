//! The labs: eight ways the pair of services goes wrong, each a real fault switched on
//! through the services' own fault endpoints (`--fault-listen`) plus generated traffic, and
//! for each the question a student answers, where the evidence is, and how to tell it from
//! the others: seven on one A ([`SCENARIOS`]), one on three replicas of A
//! ([`REPLICA_LABS`]), whose answer names the replica too. The `lab` binary runs them; the
//! system tests check that each one's symptom shows in the metrics, the alerts and the
//! logs, and that a healthy system shows none of them.
//!
//! The rest of the crate is what a class needs around them: [`key`] (which lab a mystery
//! seed hides, known only with the class secret), [`results`] (the chained record of every
//! start, check and stop, and `lab report`'s table), [`alerts`] (what an earlier lab left
//! firing), [`services`] (where the services are), [`spans`] (a loopback span collector and
//! `lab trace`'s waterfall), [`paths`] (per-user files) and [`out`] (output that survives a
//! closed pipe).

pub mod alerts;
pub mod key;
pub mod out;
pub mod paths;
pub mod results;
pub mod services;
pub mod spans;

use serde_json::{Value, json};

/// One dashboard panel and the PromQL query behind it: what `lab check` shows.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    /// The panel of the dashboard *Service A and B* (`dashboards/services.json`).
    pub panel: &'static str,
    /// The query, over the last minute (five, for what happens once a minute or so).
    pub promql: &'static str,
    /// For a quantile, the same latency as an average (`_sum` over `_count`): exact, where
    /// `histogram_quantile` can only place a value inside its bucket (requests of 300 ms
    /// read as a p99 near 0.5 s, the bucket's upper bound).
    pub average: Option<&'static str>,
}

/// An alert a lab fires (pending at once, firing after its `for:`), and its runbook.
#[derive(Debug, Clone, Copy)]
pub struct Alert {
    /// The alert's name in `deploy/prometheus/rules/`.
    pub name: &'static str,
    /// Its `slo` label, for the SLO alerts.
    pub slo: Option<&'static str>,
    /// Its runbook, in this repository.
    pub runbook: &'static str,
}

/// One lab.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name, and the answer `lab check` expects.
    pub name: &'static str,
    /// What is broken, in a few words (hidden in a mystery lab).
    pub title: &'static str,
    /// The question the student answers.
    pub question: &'static str,
    /// What service A's fault endpoint switches on (`PUT /faults`), if anything: at every
    /// replica of A.
    pub a_fault: Option<fn() -> Value>,
    /// What one replica of A switches on, chosen at random when the lab starts, sealed so
    /// that nothing shows which (the others get a sealed fault that changes nothing): a lab
    /// of [`REPLICA_LABS`], whose answer names that replica.
    pub replica_fault: Option<fn() -> Value>,
    /// What service B's fault endpoint switches on, if anything.
    pub b_fault: Option<fn() -> Value>,
    /// The traffic generator's arguments (besides the target).
    pub traffic: &'static [&'static str],
    /// What `lab check`'s example request asks of B, like the traffic does (default: the
    /// demo user's plain login).
    pub request: Option<fn() -> Value>,
    /// The panels that show it, the telling one first.
    pub evidence: &'static [Evidence],
    /// A PromQL expression that returns a series only while the symptom is there: what the
    /// self-tests wait for, and what a healthy system must never show.
    pub symptom: &'static str,
    /// The log line that shows it.
    pub log: &'static str,
    /// The alerts it fires (the system tests check each one goes pending); none for a lab
    /// whose fault B hides from its users.
    pub alerts: &'static [Alert],
}

impl Scenario {
    /// Whether the answer names a replica of A too (`lab check <name> --replica N`).
    pub fn names_a_replica(&self) -> bool {
        self.replica_fault.is_some()
    }
}

/// How many replicas of A a lab of [`REPLICA_LABS`] needs: `./deploy/run-local.sh
/// --a-replicas 3`.
pub const REPLICAS_NEEDED: usize = 3;

const BURN_FAST: &str = "deploy/runbooks/SLOErrorBudgetBurnFast.md";

/// The labs on one A, in the order a class would take them. A mystery is one of these: a
/// code's lab is its place here (`key`), so their order never changes, and a code starts a
/// lab that runs on any machine.
pub const SCENARIOS: [Scenario; 7] = [
    Scenario {
        name: "a-slow",
        title: "A is slow, but answers within B's timeout",
        question: "Users say B is slow, yet nothing fails. Is it B, A, or the network?",
        a_fault: Some(|| json!({"scenario": "a-slow", "extra_latency_ms": 300})),
        replica_fault: None,
        b_fault: None,
        traffic: &["--rate", "10", "--mix", "success=1"],
        request: None,
        evidence: &[
            Evidence {
                panel: "A: p99 latency of POST /token",
                promql: r#"histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="service-a", http_route="/token"}[1m])))"#,
                average: Some(
                    r#"sum(rate(http_server_request_duration_seconds_sum{job="service-a", http_route="/token"}[1m])) / sum(rate(http_server_request_duration_seconds_count{job="service-a", http_route="/token"}[1m]))"#,
                ),
            },
            Evidence {
                panel: "Latency p50 / p95 / p99 (B's POST /protected-action, p99)",
                promql: r#"histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="service-b", http_route="/protected-action"}[1m])))"#,
                average: Some(
                    r#"sum(rate(http_server_request_duration_seconds_sum{job="service-b", http_route="/protected-action"}[1m])) / sum(rate(http_server_request_duration_seconds_count{job="service-b", http_route="/protected-action"}[1m]))"#,
                ),
            },
        ],
        symptom: r#"histogram_quantile(0.5, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="service-a", http_route="/token"}[30s]))) > 0.25 and on() (sum(rate(provider_attempts_total{job="service-b", outcome="timeout"}[30s])) == 0)"#,
        log: r#"A's request lines of POST /token with "latency_ms" above 300, and B's with about the same: the time is spent in A"#,
        alerts: &[Alert {
            name: "SLOErrorBudgetBurnFast",
            slo: Some("b-latency"),
            runbook: BURN_FAST,
        }],
    },
    Scenario {
        name: "a-timeouts",
        title: "A is slower than B's timeout on a share of requests",
        question: "Some calls to B take two seconds and end in 503; most are fine. Why?",
        a_fault: Some(|| json!({"scenario": "a-timeouts", "slow_share": 0.3, "slow_ms": 1500})),
        replica_fault: None,
        b_fault: None,
        traffic: &["--rate", "10", "--mix", "success=1"],
        request: None,
        evidence: &[
            Evidence {
                panel: "B's attempts to call A, by outcome",
                promql: r#"sum by (outcome) (rate(provider_attempts_total{job="service-b"}[1m]))"#,
                average: None,
            },
            Evidence {
                panel: "A's abandoned requests (499)",
                promql: r#"sum(rate(http_requests_total{job="service-a", status="499"}[1m]))"#,
                average: None,
            },
        ],
        symptom: r#"sum(rate(provider_attempts_total{job="service-b", outcome="timeout"}[30s])) > 0 and on() (histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="service-a", http_route="/token"}[30s]))) > 0.5)"#,
        log: r#"B: "event":"provider_call_failed","error":"timeout" (a retry after each); A: the same request ids with "status":499"#,
        alerts: &[
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("b-availability"),
                runbook: BURN_FAST,
            },
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("b-latency"),
                runbook: BURN_FAST,
            },
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("a-availability"),
                runbook: BURN_FAST,
            },
        ],
    },
    Scenario {
        name: "a-down",
        title: "A is down: its port closes every connection unanswered (its process runs on)",
        question: "B answers 503 to everything, at once. What happened?",
        a_fault: Some(|| json!({"scenario": "a-down", "down": true})),
        replica_fault: None,
        b_fault: None,
        traffic: &["--rate", "10", "--mix", "success=1"],
        request: None,
        evidence: &[
            Evidence {
                panel: "Is each service up?",
                promql: r#"up{job="service-a"}"#,
                average: None,
            },
            Evidence {
                panel: "B's 503 rate, by the last failure's kind",
                promql: r#"sum by (kind) (rate(provider_failures_total{job="service-b"}[1m]))"#,
                average: None,
            },
        ],
        symptom: r#"up{job="service-a"} == 0"#,
        log: r#"B: "error":"connection_error" on both attempts, then "event":"circuit_opened"; A: nothing at all (its process still runs: `ps` shows it, its port answers nothing)"#,
        alerts: &[
            Alert {
                name: "ServiceTargetDown",
                slo: None,
                runbook: "deploy/runbooks/ServiceTargetDown.md",
            },
            Alert {
                name: "ProviderCircuitOpen",
                slo: None,
                runbook: "deploy/runbooks/ProviderCircuitOpen.md",
            },
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("b-availability"),
                runbook: BURN_FAST,
            },
        ],
    },
    Scenario {
        name: "a-flaky",
        title: "A fails a share of requests (5xx)",
        question: "Almost every call to B succeeds, but A's error counters climb. What is B doing about it?",
        a_fault: Some(|| json!({"scenario": "a-flaky", "failure_rate": 0.2})),
        replica_fault: None,
        b_fault: None,
        traffic: &["--rate", "10", "--mix", "success=1"],
        request: None,
        evidence: &[
            Evidence {
                panel: "Attempts per B request",
                promql: r#"sum(rate(provider_attempts_total{job="service-b"}[1m])) / sum(rate(http_server_request_duration_seconds_count{job="service-b", http_route="/protected-action"}[1m]))"#,
                average: None,
            },
            Evidence {
                panel: "B's attempts to call A, by outcome",
                promql: r#"sum by (outcome) (rate(provider_attempts_total{job="service-b"}[1m]))"#,
                average: None,
            },
        ],
        symptom: r#"sum(rate(provider_attempts_total{job="service-b", outcome="bad_status"}[30s])) > 0 and on() (sum(rate(http_server_request_duration_seconds_count{job="service-b", http_route="/protected-action", http_response_status_code="200"}[30s])) > 0)"#,
        log: r#"B: "event":"provider_call_failed","error":"bad_status" followed by a 200 request line for the same request id: a recovered call"#,
        alerts: &[Alert {
            name: "SLOErrorBudgetBurnFast",
            slo: Some("a-availability"),
            runbook: BURN_FAST,
        }],
    },
    Scenario {
        name: "retry-storm",
        title: "A fails most requests under heavy load: retries would double it",
        question: "Traffic is high and A is failing. Does B make it worse by retrying?",
        a_fault: Some(|| json!({"scenario": "retry-storm", "failure_rate": 0.6})),
        replica_fault: None,
        b_fault: None,
        traffic: &["--rate", "60", "--mix", "success=1"],
        request: None,
        evidence: &[
            Evidence {
                panel: "Attempts per B request (held near 1.2 by the budget)",
                promql: r#"sum(rate(provider_attempts_total{job="service-b"}[1m])) / sum(rate(http_server_request_duration_seconds_count{job="service-b", http_route="/protected-action"}[1m]))"#,
                average: None,
            },
            Evidence {
                panel: "B's 503 rate, by the last failure's kind (and why B gave up)",
                promql: r#"sum by (reason) (rate(provider_gave_up_total{job="service-b"}[1m]))"#,
                average: None,
            },
        ],
        symptom: r#"sum(rate(provider_gave_up_total{job="service-b", reason="retry_budget_exhausted"}[30s])) > 0"#,
        log: r#"B: "event":"provider_gave_up","reason":"retry_budget_exhausted""#,
        alerts: &[
            Alert {
                name: "ProviderRetryBudgetExhausted",
                slo: None,
                runbook: "deploy/runbooks/ProviderRetryBudgetExhausted.md",
            },
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("b-availability"),
                runbook: BURN_FAST,
            },
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("a-availability"),
                runbook: BURN_FAST,
            },
        ],
    },
    Scenario {
        name: "brute-force",
        title: "Someone is guessing one user's password",
        question: "divya cannot log in any more, although her password is right. Why?",
        a_fault: None,
        replica_fault: None,
        b_fault: None,
        traffic: &[
            "--rate",
            "10",
            "--mix",
            "success=1,wrong_password=1",
            "--guess-user",
            "divya",
        ],
        request: None,
        evidence: &[Evidence {
            panel: "A's token requests, by outcome",
            promql: r#"sum by (outcome) (rate(token_requests_total{job="service-a"}[1m]))"#,
            average: None,
        }],
        symptom: r#"sum(rate(token_requests_total{job="service-a", outcome="throttled"}[30s])) > 0"#,
        log: r#"A: POST /token lines with "status":429; B passes them on: its request lines with "status":429 and no provider_call_failed"#,
        alerts: &[Alert {
            name: "LoginThrottlingInBulk",
            slo: None,
            runbook: "deploy/runbooks/LoginThrottlingInBulk.md",
        }],
    },
    Scenario {
        name: "b-misconfigured",
        title: "B's timeout is below A's normal latency",
        question: "A's own signals are clean (up, no errors, quick answers), yet every call to B fails and the a-availability page blames A. Where is the fault?",
        a_fault: None,
        replica_fault: None,
        b_fault: Some(|| json!({"scenario": "b-misconfigured", "provider_timeout_ms": 15})),
        // A's normal latency for these calls: 100 ms (the callers ask for it). B gives up
        // after 15 ms, which the histogram's 25 ms boundary tells apart from A's 100 ms.
        traffic: &["--rate", "10", "--mix", "slow=1", "--slow-ms", "100"],
        request: Some(|| json!({"username": "divya", "password": "pass123", "delay_ms": 100})),
        evidence: &[
            Evidence {
                panel: "Attempt duration p95, by outcome (timeouts under 25 ms, not B's 1 s)",
                promql: r#"histogram_quantile(0.95, sum by (le) (rate(provider_attempt_duration_seconds_bucket{job="service-b", outcome="timeout"}[1m])))"#,
                average: Some(
                    r#"sum(rate(provider_attempt_duration_seconds_sum{job="service-b", outcome="timeout"}[1m])) / sum(rate(provider_attempt_duration_seconds_count{job="service-b", outcome="timeout"}[1m]))"#,
                ),
            },
            Evidence {
                panel: "A's requested delay (the callers ask for 100 ms)",
                promql: r#"histogram_quantile(0.99, sum by (le) (rate(token_delay_seconds_bucket{job="service-a"}[1m])))"#,
                average: None,
            },
            Evidence {
                panel: "A's abandoned requests (499): B hangs up on every one",
                promql: r#"sum(rate(http_requests_total{job="service-a", status="499"}[1m]))"#,
                average: None,
            },
        ],
        symptom: r#"histogram_quantile(0.95, sum by (le) (rate(provider_attempt_duration_seconds_bucket{job="service-b", outcome="timeout"}[30s]))) < 0.1"#,
        log: r#"B: "event":"provider_call_failed","error":"timeout","timeout_secs":0.015; A: the same request ids answered 499 after about 15 ms"#,
        alerts: &[
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("b-availability"),
                runbook: BURN_FAST,
            },
            Alert {
                name: "SLOErrorBudgetBurnFast",
                slo: Some("a-availability"),
                runbook: BURN_FAST,
            },
            Alert {
                name: "ProviderRetryBudgetExhausted",
                slo: None,
                runbook: "deploy/runbooks/ProviderRetryBudgetExhausted.md",
            },
        ],
    },
];

/// The labs on several replicas of A (`./deploy/run-local.sh --a-replicas 3`): one replica
/// is broken, and the answer names it (`lab check a-replica-slow --replica 2`). No mystery
/// hides one: a code must start the same lab on every machine, and most run one A.
pub const REPLICA_LABS: [Scenario; 1] = [Scenario {
    name: "a-replica-slow",
    title: "One of A's replicas is slower than B's timeout",
    question: "A runs as three replicas. B answers every call, yet now and then one takes a second longer, and no alert fires. Which replica is at fault?",
    a_fault: None,
    replica_fault: Some(|| json!({"scenario": "a-replica-slow", "extra_latency_ms": 1500})),
    b_fault: None,
    traffic: &["--rate", "10", "--mix", "success=1"],
    request: None,
    evidence: &[
        Evidence {
            panel: "Calls per A replica (one replica gets almost none: B routes around it)",
            promql: r#"sum by (endpoint) (rate(provider_endpoint_attempts_total{job="service-b"}[1m]))"#,
            average: None,
        },
        Evidence {
            panel: "Failed attempts per A replica, by outcome (timeouts at one replica only)",
            promql: r#"sum by (endpoint, outcome) (increase(provider_endpoint_attempts_total{job="service-b", outcome!~"ok|rejected"}[5m])) > 0"#,
            average: None,
        },
        Evidence {
            panel: "A's abandoned requests (499), per replica: B hangs up on that one (from its second, a minute or so in)",
            promql: r#"sum by (instance) (increase(http_requests_total{job="service-a", status="499"}[5m])) > 0"#,
            average: None,
        },
    ],
    symptom: r#"sum by (endpoint) (increase(provider_endpoint_attempts_total{job="service-b", outcome="timeout"}[2m])) > 0"#,
    log: r#"B: "event":"provider_call_failed","error":"timeout" naming the replica ("network.peer.address", "network.peer.port"), then the same request answered 200 by another; that replica: POST /token lines with "status":499 for those request ids"#,
    alerts: &[],
}];

/// Every lab: those on one A, then those on several replicas of A.
pub fn all() -> impl Iterator<Item = &'static Scenario> {
    SCENARIOS.iter().chain(REPLICA_LABS.iter())
}

/// The lab named `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    all().find(|s| s.name == name)
}

/// Every lab's name, comma-separated.
pub fn names() -> String {
    all().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// Every lab a mystery can be, by name, for a mystery's answer list.
pub fn mystery_names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a mystery lab switches on in a service: the lab's fault there, sealed, or a sealed
/// fault that changes nothing. Both services always get one, so that which service logs a
/// `fault_injected` line says nothing about the lab.
pub fn sealed(fault: Option<fn() -> Value>) -> Value {
    let mut sealed = fault.map_or_else(|| json!({}), |f| f());
    sealed["scenario"] = "sealed".into();
    sealed["sealed"] = true.into();
    sealed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_faults_are_named_after_them() {
        let every: Vec<&Scenario> = all().collect();
        for (i, s) in every.iter().enumerate() {
            assert!(every[..i].iter().all(|o| o.name != s.name), "{}", s.name);
            for fault in [s.a_fault, s.replica_fault, s.b_fault]
                .into_iter()
                .flatten()
            {
                assert_eq!(fault()["scenario"], s.name);
            }
            assert!(s.question.ends_with('?'), "{}", s.name);
            assert!(!s.evidence.is_empty(), "{}", s.name);
            // Every lab on one A fires an alert; one of A's replicas B can route around.
            assert_eq!(s.alerts.is_empty(), s.names_a_replica(), "{}", s.name);
            assert!(
                !(s.a_fault.is_some() && s.replica_fault.is_some()),
                "{}",
                s.name
            );
            for shown in s.evidence {
                // A quantile's average reads the same series' _sum and _count.
                if let Some(average) = shown.average {
                    let bucket = shown.promql.split("_bucket").next().unwrap_or_default();
                    let series = bucket.rsplit('(').next().unwrap_or_default();
                    assert!(average.contains(&format!("{series}_sum")), "{average}");
                    assert!(average.contains(&format!("{series}_count")), "{average}");
                }
            }
        }
        assert!(scenario("a-down").is_some());
        assert!(scenario("a-replica-slow").is_some_and(Scenario::names_a_replica));
        assert!(SCENARIOS.iter().all(|s| !s.names_a_replica()));
        assert!(scenario("nothing").is_none());
    }

    #[test]
    fn a_sealed_fault_keeps_the_settings_and_hides_the_name() {
        let a = sealed(scenario("a-slow").and_then(|s| s.a_fault));
        assert_eq!(
            a,
            json!({"scenario": "sealed", "sealed": true, "extra_latency_ms": 300})
        );
        assert_eq!(sealed(None), json!({"scenario": "sealed", "sealed": true}));
    }
}
