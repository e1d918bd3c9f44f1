//! A fleet of service A on loopback for B to balance over, and load driven from Rust: each
//! replica a real `service-a` process with its fault endpoint (to make it slow or flaky at
//! run time, keeping its connections), and a driver that calls B from several workers for a
//! while and reports every status and latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Kind, Service, client, send, vacant_addr};

/// One replica of A, with its fault endpoint.
#[derive(Debug)]
pub struct Replica {
    /// The process.
    pub service: Service,
    /// `http://<fault address>/faults`.
    pub faults: String,
}

impl Replica {
    /// A replica listening on `listen` (an `IP:PORT`).
    pub fn start(listen: &str) -> Self {
        let fault_addr = vacant_addr().to_string();
        let service = Service::start(Kind::A, listen, &["--fault-listen", &fault_addr], &[]);
        Self {
            service,
            faults: format!("http://{fault_addr}/faults"),
        }
    }

    /// Its base URL, `http://<addr>`.
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// Answers every token request `ms` later from now on.
    pub async fn slow(&self, ms: u64) {
        self.fault(json!({"scenario": "replica-slow", "extra_latency_ms": ms}))
            .await;
    }

    /// Answers `rate` of token requests with an injected 503 from now on.
    pub async fn flaky(&self, rate: f64) {
        self.fault(json!({"scenario": "replica-flaky", "failure_rate": rate}))
            .await;
    }

    /// Healthy again.
    pub async fn heal(&self) {
        let reply = client().delete(&self.faults).send().await.expect("cleared");
        assert_eq!(reply.status(), 200);
    }

    async fn fault(&self, fault: serde_json::Value) {
        let reply = client()
            .put(&self.faults)
            .json(&fault)
            .send()
            .await
            .expect("switched on");
        assert_eq!(reply.status(), 200, "{fault}");
    }

    /// Token requests it has served so far (its JSON `/metrics`); 0 once it is gone.
    pub async fn token_requests(&self) -> u64 {
        let reply = client()
            .get(self.service.at("/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match reply {
            Ok(reply) => reply
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|m| m["token_requests"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        }
    }
}

/// Every replica's token requests now.
pub async fn served(replicas: &[&Replica]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(replicas.len());
    for replica in replicas {
        counts.push(replica.token_requests().await);
    }
    counts
}

/// Each replica's share (0.0–1.0) of the token requests served between two readings.
pub fn shares(before: &[u64], after: &[u64]) -> Vec<f64> {
    let deltas: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total = deltas.iter().sum::<u64>().max(1) as f64;
    deltas.iter().map(|d| *d as f64 / total).collect()
}

/// What a run of calls to B came to.
#[derive(Debug, Default)]
pub struct Calls {
    /// Calls per status.
    pub statuses: BTreeMap<u16, usize>,
    /// Every call's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Calls {
    /// Calls made.
    pub fn total(&self) -> usize {
        self.latencies.len()
    }

    /// Calls answered anything but 200.
    pub fn failed(&self) -> usize {
        self.total() - self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// The 99th percentile latency.
    pub fn p99(&self) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        self.latencies[(n * 99 / 100).min(n - 1)]
    }
}

/// Calls B's `/protected-action` (the demo user, no delay) from `workers` workers, each one
/// call after another, for `duration`.
pub async fn drive(b: &Service, workers: usize, duration: Duration) -> Calls {
    let url = b.at("/protected-action");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = send(client.post(&url).json(&crate::demo_login())).await;
                    seen.push((reply.status, reply.elapsed));
                }
                seen
            })
        })
        .collect();
    let until = Instant::now() + duration;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut calls = Calls::default();
    for task in tasks {
        for (status, elapsed) in task.await.expect("worker") {
            *calls.statuses.entry(status).or_default() += 1;
            calls.latencies.push(elapsed);
        }
    }
    calls.latencies.sort();
    calls
}
