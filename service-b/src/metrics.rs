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
//! - `provider_circuit_state` (0 closed, 1 open, 2 half-open) and
//!   `provider_circuit_transitions_total{to}`.
//! - `provider_retry_budget_exhausted_total`, `provider_deadline_exceeded_total`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use serde_json::{Value, json};
use telemetry::observe::Tally;

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

/// The circuit breaker's state: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_STATE: &str = "provider_circuit_state";
/// Circuit breaker state changes, by the state entered.
pub const CIRCUIT_TRANSITIONS: &str = "provider_circuit_transitions_total";
/// Retries not made because the retry budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "provider_retry_budget_exhausted_total";
/// Calls cut short by the overall deadline.
pub const DEADLINE_EXCEEDED: &str = "provider_deadline_exceeded_total";

/// The `kind` label of a call refused by the open breaker.
const CIRCUIT_OPEN: &str = "circuit_open";

/// Describes the series and registers each at zero, so dashboards and `rate()` see them
/// before the first failure.
pub fn register() {
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
    for outcome in AttemptOutcome::ALL {
        metrics::counter!(PROVIDER_ATTEMPTS, "outcome" => outcome.label()).absolute(0);
    }
    for kind in AttemptOutcome::ALL
        .into_iter()
        .filter(|o| o.is_failure())
        .map(AttemptOutcome::label)
        .chain([CIRCUIT_OPEN])
    {
        metrics::counter!(PROVIDER_FAILURES, "kind" => kind).absolute(0);
    }
    for reason in StopReason::ALL {
        metrics::counter!(PROVIDER_GAVE_UP, "reason" => reason.label()).absolute(0);
    }
    metrics::describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open"
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
    for to in [
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::Closed,
    ] {
        metrics::counter!(CIRCUIT_TRANSITIONS, "to" => to.label()).absolute(0);
    }
    metrics::gauge!(CIRCUIT_STATE).set(gauge_value(CircuitState::Closed));
    metrics::counter!(RETRY_BUDGET_EXHAUSTED).absolute(0);
    metrics::counter!(DEADLINE_EXCEEDED).absolute(0);
    // Each outcome's attempt histogram exists (all buckets at zero) from the first scrape.
    let _ = attempt_handles();
}

/// One pair of handles per outcome, looked up in the recorder once (at start-up, after it
/// is installed): finding a labelled series on every attempt cost more than recording
/// into it.
fn attempt_handles() -> &'static [(Counter, Histogram); AttemptOutcome::ALL.len()] {
    static HANDLES: OnceLock<[(Counter, Histogram); AttemptOutcome::ALL.len()]> = OnceLock::new();
    HANDLES.get_or_init(|| {
        AttemptOutcome::ALL.map(|o| {
            (
                metrics::counter!(PROVIDER_ATTEMPTS, "outcome" => o.label()),
                metrics::histogram!(PROVIDER_ATTEMPT_DURATION, "outcome" => o.label()),
            )
        })
    })
}

/// Counts one attempt and its duration.
pub fn attempt(outcome: AttemptOutcome, took: Duration) {
    let index = AttemptOutcome::ALL.iter().position(|o| *o == outcome);
    if let Some((attempts, duration)) = index.and_then(|i| attempt_handles().get(i)) {
        attempts.increment(1);
        duration.record(took.as_secs_f64());
    }
}

/// Counts a call answered 503 after its attempts failed, by the last failure's kind, and
/// why B stopped.
pub fn gave_up(last: AttemptOutcome, reason: StopReason) {
    metrics::counter!(PROVIDER_FAILURES, "kind" => last.label()).increment(1);
    metrics::counter!(PROVIDER_GAVE_UP, "reason" => reason.label()).increment(1);
    match reason {
        StopReason::BudgetSpent => metrics::counter!(RETRY_BUDGET_EXHAUSTED).increment(1),
        StopReason::Deadline => metrics::counter!(DEADLINE_EXCEEDED).increment(1),
        StopReason::AttemptsSpent | StopReason::NotRetryable | StopReason::CircuitOpen => {}
    }
}

/// Counts a call the open breaker refused.
pub fn circuit_refused() {
    metrics::counter!(PROVIDER_FAILURES, "kind" => CIRCUIT_OPEN).increment(1);
}

/// Counts and exports a breaker state change.
pub fn circuit_transition(to: CircuitState) {
    metrics::counter!(CIRCUIT_TRANSITIONS, "to" => to.label()).increment(1);
    metrics::gauge!(CIRCUIT_STATE).set(gauge_value(to));
}

fn gauge_value(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::Open => 1.0,
        CircuitState::HalfOpen => 2.0,
    }
}

/// The JSON body of `GET /metrics`: the lab's counters, then the breakdowns.
pub fn json_view(tally: &Tally) -> Value {
    json!({
        "requests_total": tally.sum("http_requests_total", &[]),
        "protected_action_requests": tally.sum(
            "http_requests_total",
            &[("route", "/protected-action"), ("method", "POST")],
        ),
        "provider_attempts": tally.sum(PROVIDER_ATTEMPTS, &[]),
        "provider_attempts_by_outcome": tally.by_label(PROVIDER_ATTEMPTS, "outcome"),
        "provider_failures": tally.sum(PROVIDER_FAILURES, &[]),
        "provider_failures_by_kind": tally.by_label(PROVIDER_FAILURES, "kind"),
        "retry_budget_exhausted": tally.sum(RETRY_BUDGET_EXHAUSTED, &[]),
        "deadline_exceeded": tally.sum(DEADLINE_EXCEEDED, &[]),
        "circuit_transitions": tally.by_label(CIRCUIT_TRANSITIONS, "to"),
        "requests_by_status": tally.by_label("http_requests_total", "status"),
    })
}
