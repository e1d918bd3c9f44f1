//! Service B's own metrics, and the JSON summary `GET /metrics` shows to curl.
//!
//! Prometheus series (besides the shared HTTP, process and build series of
//! `telemetry::observe`, and `http_client_request_duration_seconds`, recorded per attempt
//! by `provider`):
//! - `provider_attempts_total{outcome}`: every attempt to call A, by outcome `ok`,
//!   `rejected` (A answered 4xx), `timeout`, `connection_error`, `bad_status` or
//!   `protocol_error` (an answer that is not readable HTTP).
//! - `provider_attempt_duration_seconds{outcome}`: how long each attempt took.
//! - `provider_failures_total{kind}`: calls that ended in 503, by the kind of the last
//!   failure, or `circuit_open` when the breaker refused the call.
//! - `provider_gave_up_total{reason}`: why B stopped retrying: `attempts_spent`,
//!   `retry_budget_exhausted`, `deadline_exceeded` or `not_retryable`.
//! - `provider_circuit_state{state}`: 1 for the state the breaker is in (`closed`, `open`,
//!   `half_open`), 0 for the others (one series per state, the Prometheus idiom for an
//!   enum), and `provider_circuit_transitions_total{to}`.
//! - `provider_retry_budget_exhausted_total`, `provider_deadline_exceeded_total`.

use std::time::Duration;

use metrics::{Counter, Gauge};
use serde_json::{Value, json};
use telemetry::observe::{ExemplarHistogram, SERVER_REQUESTS, SpanIds, Tally};

use crate::outcome::{AttemptOutcome, StopReason};
use crate::resilience::CircuitState;

/// Attempts to call A, by outcome.
pub const PROVIDER_ATTEMPTS: &str = "provider_attempts_total";
/// Duration of each attempt, by outcome.
pub const PROVIDER_ATTEMPT_DURATION: &str = "provider_attempt_duration_seconds";
/// Calls to A that ended without a usable answer (503), by the last failure's kind, or
/// `circuit_open` when the breaker refused the call.
pub const PROVIDER_FAILURES: &str = "provider_failures_total";
/// Calls B stopped retrying, by why.
pub const PROVIDER_GAVE_UP: &str = "provider_gave_up_total";

/// The circuit breaker's state: 1 for the state it is in, per state.
pub const CIRCUIT_STATE: &str = "provider_circuit_state";
/// Circuit breaker state changes, by the state entered.
pub const CIRCUIT_TRANSITIONS: &str = "provider_circuit_transitions_total";
/// Retries not made because the retry budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "provider_retry_budget_exhausted_total";
/// Calls cut short by the overall deadline.
pub const DEADLINE_EXCEEDED: &str = "provider_deadline_exceeded_total";

/// The `kind` label of a call refused by the open breaker.
const CIRCUIT_OPEN: &str = "circuit_open";

/// B's series, registered once at start-up (all at zero, so dashboards and `rate()` see
/// them before the first failure) and kept by the client for A, which records into them.
#[derive(Debug)]
pub struct ProviderMetrics {
    /// Attempts and their durations, per outcome.
    attempts: [(Counter, ExemplarHistogram); AttemptOutcome::ALL.len()],
    /// Calls answered 503, per last failure: each failure outcome's.
    failures: Vec<(AttemptOutcome, Counter)>,
    /// Calls the open breaker refused (`kind="circuit_open"`).
    circuit_refused: Counter,
    /// Why B stopped, per reason.
    gave_up: [Counter; StopReason::ALL.len()],
    retry_budget_exhausted: Counter,
    deadline_exceeded: Counter,
    /// State changes, per state entered.
    transitions: [Counter; CircuitState::ALL.len()],
    /// 1 for the state the breaker is in, per state.
    circuit_state: [Gauge; CircuitState::ALL.len()],
}

impl ProviderMetrics {
    /// Describes and registers B's series (after the recorder is installed), the attempt
    /// histograms' exemplars kept in `exemplars`.
    pub fn register(exemplars: &telemetry::observe::Metrics) -> Self {
        describe_series();
        let metrics = Self {
            attempts: AttemptOutcome::ALL.map(|o| {
                (
                    metrics::counter!(PROVIDER_ATTEMPTS, "outcome" => o.label()),
                    exemplars.exemplar_histogram(
                        PROVIDER_ATTEMPT_DURATION,
                        &[("outcome", o.label().to_owned())],
                    ),
                )
            }),
            failures: AttemptOutcome::ALL
                .into_iter()
                .filter(|o| o.is_failure())
                .map(|o| (o, metrics::counter!(PROVIDER_FAILURES, "kind" => o.label())))
                .collect(),
            circuit_refused: metrics::counter!(PROVIDER_FAILURES, "kind" => CIRCUIT_OPEN),
            gave_up: StopReason::ALL
                .map(|r| metrics::counter!(PROVIDER_GAVE_UP, "reason" => r.label())),
            retry_budget_exhausted: metrics::counter!(RETRY_BUDGET_EXHAUSTED),
            deadline_exceeded: metrics::counter!(DEADLINE_EXCEEDED),
            transitions: CircuitState::ALL
                .map(|to| metrics::counter!(CIRCUIT_TRANSITIONS, "to" => to.label())),
            circuit_state: CircuitState::ALL
                .map(|state| metrics::gauge!(CIRCUIT_STATE, "state" => state.label())),
        };
        for counter in metrics
            .attempts
            .iter()
            .map(|(c, _)| c)
            .chain(metrics.failures.iter().map(|(_, c)| c))
            .chain([&metrics.circuit_refused])
            .chain(&metrics.gave_up)
            .chain(&metrics.transitions)
            .chain([&metrics.retry_budget_exhausted, &metrics.deadline_exceeded])
        {
            counter.increment(0);
        }
        metrics.show_circuit(CircuitState::Closed);
        metrics
    }

    /// Counts one attempt and its duration; a sampled attempt (its span's `ids`) is its
    /// bucket's exemplar.
    pub fn attempt(&self, outcome: AttemptOutcome, took: Duration, ids: &SpanIds) {
        let index = AttemptOutcome::ALL.iter().position(|o| *o == outcome);
        if let Some((attempts, duration)) = index.and_then(|i| self.attempts.get(i)) {
            attempts.increment(1);
            duration.record(took.as_secs_f64(), ids);
        }
    }

    /// Counts a call B stopped trying, by why, and, when it was answered 503 (`unavailable`:
    /// not a caller's own deadline, answered 504), by the last failure's kind.
    pub fn gave_up(&self, last: Option<AttemptOutcome>, reason: StopReason, unavailable: bool) {
        if let Some((_, counter)) = self
            .failures
            .iter()
            .find(|(kind, _)| Some(*kind) == last)
            .filter(|_| unavailable)
        {
            counter.increment(1);
        }
        if let Some(index) = StopReason::ALL.iter().position(|r| *r == reason) {
            self.gave_up[index].increment(1);
        }
        match reason {
            StopReason::BudgetSpent => self.retry_budget_exhausted.increment(1),
            StopReason::Deadline => self.deadline_exceeded.increment(1),
            StopReason::AttemptsSpent
            | StopReason::NotRetryable
            | StopReason::CircuitOpen
            | StopReason::NoEndpoint => {}
        }
    }

    /// Counts a call the open breaker refused.
    pub fn circuit_refused(&self) {
        self.circuit_refused.increment(1);
    }

    /// Counts and exports a breaker state change.
    pub fn circuit_transition(&self, to: CircuitState) {
        if let Some(index) = CircuitState::ALL.iter().position(|s| *s == to) {
            self.transitions[index].increment(1);
        }
        self.show_circuit(to);
    }

    /// Sets the state gauges: 1 for `now`, 0 for the others.
    fn show_circuit(&self, now: CircuitState) {
        for (state, gauge) in CircuitState::ALL.iter().zip(&self.circuit_state) {
            gauge.set(if *state == now { 1.0 } else { 0.0 });
        }
    }
}

/// Help text for B's series.
fn describe_series() {
    metrics::describe_counter!(PROVIDER_ATTEMPTS, "Attempts to call service A, by outcome");
    metrics::describe_histogram!(
        PROVIDER_ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Duration of each attempt to call service A, by outcome"
    );
    metrics::describe_counter!(
        PROVIDER_FAILURES,
        "Calls to service A that got no usable answer (answered 503), by last failure"
    );
    metrics::describe_counter!(
        PROVIDER_GAVE_UP,
        "Calls to service A that B stopped retrying, by why"
    );
    metrics::describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state: 1 for the state it is in (closed, open, half_open), 0 for the others"
    );
    metrics::describe_counter!(
        CIRCUIT_TRANSITIONS,
        "Circuit breaker state changes, by state entered"
    );
    metrics::describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries not made because the retry budget was spent"
    );
    metrics::describe_counter!(
        DEADLINE_EXCEEDED,
        "Calls to service A cut short by the overall deadline"
    );
}

/// The JSON body of `GET /metrics`: the lab's counters, then the breakdowns.
pub fn json_view(tally: &Tally) -> Value {
    json!({
        "requests_total": tally.sum(SERVER_REQUESTS, &[]),
        "protected_action_requests": tally.sum(
            SERVER_REQUESTS,
            &[("route", "/protected-action"), ("method", "POST")],
        ),
        "provider_attempts": tally.sum(PROVIDER_ATTEMPTS, &[]),
        "provider_attempts_by_outcome": tally.by_label(PROVIDER_ATTEMPTS, "outcome"),
        "provider_failures": tally.sum(PROVIDER_FAILURES, &[]),
        "provider_failures_by_kind": tally.by_label(PROVIDER_FAILURES, "kind"),
        "retry_budget_exhausted": tally.sum(RETRY_BUDGET_EXHAUSTED, &[]),
        "deadline_exceeded": tally.sum(DEADLINE_EXCEEDED, &[]),
        "circuit_transitions": tally.by_label(CIRCUIT_TRANSITIONS, "to"),
        "requests_by_status": tally.by_label(SERVER_REQUESTS, "status"),
    })
}
