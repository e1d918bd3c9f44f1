//! Service A's own metrics, and the JSON summary `GET /metrics` shows to curl.
//!
//! Prometheus series (besides the shared HTTP, process and build series of
//! `telemetry::observe`): `token_requests_total{outcome}` with outcome `issued`,
//! `invalid_credentials`, `invalid_request` (a bad `delay_ms` or `fail_status`), `throttled`
//! (too many failed logins), `deadline_exceeded` (the caller's deadline passed and the work
//! was abandoned) or `injected_failure`; and `token_delay_seconds`, the delays callers asked
//! for.

use serde_json::{Value, json};
use telemetry::observe::{ExemplarHistogram, SERVER_REQUESTS, Tally};

/// Token requests by how they ended.
pub const TOKEN_REQUESTS: &str = "token_requests_total";
/// Requested `delay_ms`, as a histogram in seconds.
pub const TOKEN_DELAY: &str = "token_delay_seconds";

/// How a well-formed `POST /token` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    /// 200 with a token.
    Issued,
    /// 401.
    InvalidCredentials,
    /// 400, `delay_ms` or `fail_status` out of range.
    InvalidRequest,
    /// 429, too many failed logins for the username.
    Throttled,
    /// 504, the caller's deadline passed: the work was abandoned.
    DeadlineExceeded,
    /// A failure injected on purpose.
    InjectedFailure,
}

impl TokenOutcome {
    const ALL: [Self; 6] = [
        Self::Issued,
        Self::InvalidCredentials,
        Self::InvalidRequest,
        Self::Throttled,
        Self::DeadlineExceeded,
        Self::InjectedFailure,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidRequest => "invalid_request",
            Self::Throttled => "throttled",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::InjectedFailure => "injected_failure",
        }
    }
}

/// A's series, registered once at start-up (all at zero, so dashboards and `rate()` see
/// them before the first request) and kept by whoever records into them.
#[derive(Debug)]
pub struct TokenMetrics {
    outcomes: [metrics::Counter; TokenOutcome::ALL.len()],
    delay: ExemplarHistogram,
}

impl TokenMetrics {
    /// Describes and registers A's series (after the recorder is installed), the delay
    /// histogram's exemplars kept in `metrics`.
    pub fn register(metrics: &telemetry::observe::Metrics) -> Self {
        metrics::describe_counter!(TOKEN_REQUESTS, "POST /token requests by outcome");
        metrics::describe_histogram!(
            TOKEN_DELAY,
            metrics::Unit::Seconds,
            "Simulated delay requested with delay_ms"
        );
        let outcomes =
            TokenOutcome::ALL.map(|o| metrics::counter!(TOKEN_REQUESTS, "outcome" => o.label()));
        for counter in &outcomes {
            counter.increment(0);
        }
        Self {
            outcomes,
            // The histogram exists (all buckets at zero) before anyone asks for a delay: a
            // restarted A never blanks the panel that reads it.
            delay: metrics.exemplar_histogram(TOKEN_DELAY, &[]),
        }
    }

    /// Counts one token request.
    pub fn token_request(&self, outcome: TokenOutcome) {
        let index = TokenOutcome::ALL.iter().position(|o| *o == outcome);
        if let Some(counter) = index.and_then(|i| self.outcomes.get(i)) {
            counter.increment(1);
        }
    }

    /// Records a requested delay; a sampled request is its bucket's exemplar.
    pub fn delay_requested(&self, delay_ms: u64) {
        self.delay
            .record(delay_ms as f64 / 1000.0, &telemetry::observe::current_ids());
    }
}

/// The JSON body of `GET /metrics`: the lab's two keys, then the breakdown.
pub fn json_view(tally: &Tally) -> Value {
    json!({
        "requests_total": tally.sum(SERVER_REQUESTS, &[]),
        "token_requests": tally.sum(SERVER_REQUESTS, &[("route", "/token"), ("method", "POST")]),
        "token_requests_by_outcome": tally.by_label(TOKEN_REQUESTS, "outcome"),
        "requests_by_status": tally.by_label(SERVER_REQUESTS, "status"),
    })
}
