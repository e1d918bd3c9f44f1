//! Metrics, written once with the `metrics` macros and read three ways (the edge serves
//! them on `GET /metrics`): OpenMetrics 1.0 with exemplars or the
//! Prometheus text format for a scrape, and a small JSON summary for `curl` (the lab's keys).
//!
//! The process recorder is a fan-out: every increment goes to the Prometheus exporter and to
//! a [`Tally`], which keeps plain totals the JSON view can read back (the exporter cannot).
//! Histogram buckets carry exemplars (see [`crate::observe::metrics::exemplars`]).
//!
//! The HTTP series follow the OpenTelemetry semantic conventions as Prometheus exposes them
//! (`http.server.request.duration` becomes `http_server_request_duration_seconds` with
//! `http_request_method`, `http_route`, `http_response_status_code`, `url_scheme` and, on
//! failures, `error_type`); `process_*`, `build_info` and `target_info` describe the
//! process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;

use crate::observe::export::losses::Losses;
use crate::observe::metrics::exemplars::{ExemplarHistogram, Exemplars, to_openmetrics};

/// Content type of the Prometheus text exposition format (Prometheus 3 refuses a scrape
/// without a valid one).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets in seconds, shared by every latency histogram: fine-grained below a
/// millisecond, where healthy loopback calls land; the OpenTelemetry HTTP advice (…, 0.5,
/// 0.75, 1, 2.5, 5, 7.5, 10 s); and 1.25, 1.5 and 2 s around B's 1 s timeout, so a p99 of
/// calls that ended near it reads what the logs show. Each service adds a boundary at and
/// just above each of its own timeouts ([`timeout_bounds`]), so "timed out at 1 s" reads
/// as about 1 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0,
];

/// How far above a timeout its upper bucket boundary lies: a timed-out call ends a little
/// after the timeout (scheduling, the connection's close).
const TIMEOUT_MARGIN: f64 = 1.05;

/// Bucket boundaries for `timeouts`: each one, and 5% above it.
pub fn timeout_bounds(timeouts: &[Duration]) -> Vec<f64> {
    timeouts
        .iter()
        .flat_map(|t| {
            let seconds = t.as_secs_f64();
            [
                seconds,
                (seconds * TIMEOUT_MARGIN * 1000.0).round() / 1000.0,
            ]
        })
        .collect()
}

/// [`LATENCY_BUCKETS`] with `extra` boundaries, sorted, without duplicates.
pub fn buckets(extra: &[f64]) -> Vec<f64> {
    let mut all: Vec<f64> = LATENCY_BUCKETS
        .iter()
        .chain(extra)
        .copied()
        .filter(|b| b.is_finite() && *b > 0.0)
        .collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    all
}

/// The running build: 1, with its version as labels.
pub const BUILD_INFO: &str = "build_info";
/// The OpenTelemetry resource of the process: 1, with its attributes as labels.
pub const TARGET_INFO: &str = "target_info";
/// HTTP requests served, by method, route and status (the lab's counter).
pub const SERVER_REQUESTS: &str = "http_requests_total";
/// The histogram of server request durations (OpenTelemetry `http.server.request.duration`).
pub const SERVER_DURATION: &str = "http_server_request_duration_seconds";
/// Requests being handled (OpenTelemetry `http.server.active_requests`).
pub const SERVER_ACTIVE: &str = "http_server_active_requests";
/// The histogram of outbound call durations (OpenTelemetry `http.client.request.duration`).
pub const CLIENT_DURATION: &str = "http_client_request_duration_seconds";

/// How often the exporter's histograms are compacted (it does not do this on its own).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Series a service writes itself into the Prometheus text, because the recorder cannot
/// hold them: their set changes at run time, and series that are gone must go (the `metrics`
/// crate can add a series, never remove one). B's per-endpoint series are these.
pub trait Exposition: Send + Sync + 'static {
    /// Appends whole metric families (`# HELP`, `# TYPE`, samples, a blank line) in the
    /// Prometheus text format; counters' names end in `_total`.
    fn render(&self, out: &mut String);
}

/// The process's metrics: the Prometheus renderer, the totals behind the JSON view, the
/// exemplars, and the series a service writes itself.
#[derive(Clone)]
pub struct Metrics {
    prometheus: PrometheusHandle,
    tally: Tally,
    exemplars: Exemplars,
    expositions: Arc<RwLock<Vec<Arc<dyn Exposition>>>>,
    /// What telemetry lost, published on every rendering.
    losses: &'static Losses,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Installs the process-wide recorder, with `timeouts` given their own bucket boundaries
    /// and the resource's identity in `target_info`, and the counts of what telemetry loses
    /// registered in it ([`Self::losses`]). Fails if one is already installed.
    pub fn install(
        timeouts: &[Duration],
        resource: &opentelemetry_sdk::Resource,
    ) -> Result<Self, String> {
        let (mut metrics, recorder) = Self::build(&timeout_bounds(timeouts), Losses::leaked())?;
        metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
        metrics.losses = Losses::registered();
        describe_shared();
        describe_process(resource);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let handle = metrics.prometheus.clone();
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            });
        }
        Ok(metrics)
    }

    /// The recorder without installing it: for tests (`metrics::with_local_recorder`), and
    /// for a service run inside a test process, whose handles then record nothing (the
    /// process's one recorder is not this one) while its routes still answer.
    pub fn build(
        extra_bounds: &[f64],
        losses: &'static Losses,
    ) -> Result<(Self, impl Recorder + Sync + 'static), String> {
        let bounds = buckets(extra_bounds);
        let exporter = PrometheusBuilder::new()
            .set_buckets(&bounds)
            .map_err(|e| e.to_string())?
            .build_recorder();
        let tally = Tally::default();
        let metrics = Self {
            prometheus: exporter.handle(),
            tally: tally.clone(),
            exemplars: Exemplars::new(&bounds),
            expositions: Arc::default(),
            losses,
        };
        let recorder = FanoutBuilder::default()
            .add_recorder(exporter)
            .add_recorder(tally)
            .build();
        Ok((metrics, recorder))
    }

    /// Adds series the service writes itself (see [`Exposition`]) to every rendering.
    pub fn expose(&self, exposition: Arc<dyn Exposition>) {
        self.expositions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(exposition);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        crate::observe::export::losses::publish(self.losses);
        let mut text = self.prometheus.render();
        crate::observe::metrics::process::render(&mut text);
        for exposition in self
            .expositions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            exposition.render(&mut text);
        }
        text
    }

    /// The OpenMetrics exposition of every metric, with exemplars.
    pub fn render_openmetrics(&self) -> String {
        to_openmetrics(&self.render_prometheus(), &self.exemplars)
    }

    /// Counter totals, for the JSON view.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Registers histogram `name` with `labels`, its buckets keeping exemplars in this
    /// store (see [`ExemplarHistogram`]).
    pub fn exemplar_histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, String)],
    ) -> ExemplarHistogram {
        ExemplarHistogram::register(&self.exemplars, name, labels)
    }

    /// Where histograms registered for this service keep their exemplars.
    pub(crate) fn exemplars(&self) -> &Exemplars {
        &self.exemplars
    }

    /// What telemetry lost, counted by the sinks of this service's telemetry.
    pub fn losses(&self) -> &'static Losses {
        self.losses
    }
}

/// `build_info` and `target_info` (the resource, as OpenTelemetry's Prometheus exporters
/// expose it), each a constant 1 whose labels say what runs.
fn describe_process(resource: &opentelemetry_sdk::Resource) {
    let attribute = |key: &'static str| {
        resource
            .get(&opentelemetry::Key::new(key))
            .map(|v| v.as_str().into_owned())
            .unwrap_or_default()
    };
    let service = attribute("service.name");
    metrics::describe_gauge!(
        BUILD_INFO,
        "The running build: 1, with its version as labels"
    );
    metrics::gauge!(
        BUILD_INFO,
        "service" => service.clone(),
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
    metrics::describe_gauge!(TARGET_INFO, "The OpenTelemetry resource of this process: 1");
    // Every resource attribute as a label, its name as Prometheus allows it (the
    // OpenTelemetry–Prometheus compatibility rule): OTEL_RESOURCE_ATTRIBUTES shows here too.
    let mut labels: Vec<(String, String)> = resource
        .iter()
        .map(|(key, value)| (label_name(key.as_str()), value.as_str().into_owned()))
        .collect();
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    let labels: Vec<metrics::Label> = labels
        .into_iter()
        .map(|(k, v)| metrics::Label::new(k, v))
        .collect();
    metrics::gauge!(TARGET_INFO, labels).set(1.0);
}

/// A resource attribute's name as a Prometheus label name: every character outside
/// `[a-zA-Z0-9_]` becomes `_`, and a leading digit gets a `_` before it.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Help text for the series every service has.
fn describe_shared() {
    metrics::describe_counter!(
        SERVER_REQUESTS,
        "HTTP requests served, by method, route and status (499: the caller went away)"
    );
    metrics::describe_histogram!(
        SERVER_DURATION,
        metrics::Unit::Seconds,
        "Duration of HTTP server requests (OpenTelemetry http.server.request.duration)"
    );
    metrics::describe_gauge!(
        SERVER_ACTIVE,
        "Active HTTP server requests (OpenTelemetry http.server.active_requests)"
    );
    metrics::describe_histogram!(
        CLIENT_DURATION,
        metrics::Unit::Seconds,
        "Duration of outbound HTTP requests, each attempt on its own (OpenTelemetry http.client.request.duration)"
    );
}

/// Plain counter totals by metric name and labels, readable at any time.
///
/// Only counters are kept; gauges and histograms are the exporter's business.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    counters: Arc<RwLock<HashMap<Key, Arc<AtomicU64>>>>,
}

impl Tally {
    /// Sum of every series of counter `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.read()
            .iter()
            .filter(|(key, _)| key.name() == name && has_labels(key, labels))
            .map(|(_, value)| value.load(Ordering::Relaxed))
            .sum()
    }

    /// Totals of counter `name` grouped by the value of its `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut totals = BTreeMap::new();
        for (key, value) in self.read().iter().filter(|(key, _)| key.name() == name) {
            if let Some(l) = key.labels().find(|l| l.key() == label) {
                *totals.entry(l.value().to_owned()).or_default() += value.load(Ordering::Relaxed);
            }
        }
        totals
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<AtomicU64>>> {
        // A panic while holding the lock cannot leave the map inconsistent (inserts are
        // single operations), so a poisoned lock is still safe to read.
        self.counters.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn has_labels(key: &Key, wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl Recorder for Tally {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if let Some(existing) = self.read().get(key) {
            return Counter::from_arc(existing.clone());
        }
        let mut counters = self.counters.write().unwrap_or_else(|p| p.into_inner());
        Counter::from_arc(counters.entry(key.clone()).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_timeout_gets_a_boundary_at_and_just_above_it() {
        let bounds = buckets(&timeout_bounds(&[
            Duration::from_secs(1),
            Duration::from_millis(2050),
        ]));
        for wanted in [0.0001, 1.0, 1.05, 2.05, 2.1525, 10.0] {
            assert!(
                bounds.iter().any(|b| (b - wanted).abs() < 0.001),
                "{wanted} in {bounds:?}"
            );
        }
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
    }

    #[test]
    fn resource_attribute_names_become_label_names() {
        assert_eq!(label_name("service.name"), "service_name");
        assert_eq!(
            label_name("deployment.environment.name"),
            "deployment_environment_name"
        );
        assert_eq!(label_name("k8s.pod-name"), "k8s_pod_name");
        assert_eq!(label_name("1x"), "_1x");
    }

    #[test]
    fn one_increment_reaches_both_views() {
        let (metrics, recorder) = Metrics::build(&[], Losses::leaked()).expect("recorder");
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(SERVER_REQUESTS, "route" => "/token", "status" => "200").increment(2);
            metrics::counter!(SERVER_REQUESTS, "route" => "/token", "status" => "401").increment(1);
            metrics::counter!(SERVER_REQUESTS, "route" => "/health", "status" => "200")
                .increment(1);
        });
        let tally = metrics.tally();
        assert_eq!(tally.sum(SERVER_REQUESTS, &[]), 4);
        assert_eq!(tally.sum(SERVER_REQUESTS, &[("route", "/token")]), 3);
        assert_eq!(
            tally.by_label(SERVER_REQUESTS, "status"),
            BTreeMap::from([("200".into(), 3), ("401".into(), 1)])
        );
        let text = metrics.render_prometheus();
        assert!(
            text.contains(r#"http_requests_total{route="/token",status="200"} 2"#),
            "{text}"
        );
    }
}
