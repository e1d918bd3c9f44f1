//! What a call to A comes to: a grant, or why not. A's answers (2xx or 4xx, read whole)
//! become a [`Grant`] or the matching [`ProviderError`]; a call where no attempt got an
//! answer becomes [`ProviderError::Unavailable`], whose `details` B's 503 carries.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde::Deserialize;

use super::attempt::{AttemptFailure, humanize};
use crate::outcome::{AttemptOutcome, StopReason};
use crate::resilience::Evidence;

/// A's answer to valid credentials.
#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    /// The token A issued.
    pub token: String,
    /// Whom it was issued to.
    pub user: String,
}

/// How a call to A ended when it did not yield a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// A answered 401: the credentials are wrong. Not retried.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A refused the request as invalid (400 or 422), with its reason. Not retried.
    #[error("{0}")]
    InvalidRequest(String),
    /// A answered 429: too many requests. Not retried; `Retry-After` is passed on.
    #[error("provider is throttling requests")]
    Throttled {
        /// A's `Retry-After`, when it sent one.
        retry_after: Option<http::HeaderValue>,
    },
    /// No attempt got a usable answer: the failures, and why B stopped.
    #[error("provider unavailable: {}", .0.details())]
    Unavailable(Failures),
    /// The deadline B's caller set (`x-request-timeout-ms`), shorter than B's own, passed
    /// before A answered: the caller's own hurry, not an outage.
    #[error("deadline exceeded: {}", .0.details())]
    CallerDeadline(Failures),
    /// The circuit breaker is open: A was not called.
    #[error("provider unavailable: circuit open")]
    CircuitOpen {
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
        /// The calls that opened it.
        evidence: Evidence,
    },
    /// A answered, but not with anything B can use (an unexpected 4xx, or a body without a
    /// token): a configuration or version mismatch, not an outage.
    #[error("unusable answer from provider: {0}")]
    BadAnswer(String),
}

/// What went wrong on a call where no attempt got a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures {
    /// Each failed attempt, in order.
    pub attempts: Vec<AttemptFailure>,
    /// Why B made no further attempt.
    pub stopped: StopReason,
    /// The call's deadline (said in the details when it is what stopped B).
    pub deadline: Duration,
    /// Why no endpoint of A is known, when none is (said when it is what stopped B).
    pub unresolved: Option<String>,
}

impl Failures {
    /// The 503's `details`: what happened on the attempts, then why B stopped, unless it
    /// simply made every attempt it may.
    pub fn details(&self) -> String {
        let mut details = describe(&self.attempts);
        let note = match self.stopped {
            StopReason::AttemptsSpent => None,
            StopReason::BudgetSpent => Some("not retried: retry budget spent".to_owned()),
            StopReason::Deadline => Some(format!(
                "gave up at the {} deadline",
                humanize(self.deadline)
            )),
            StopReason::CircuitOpen => {
                Some("not retried: the circuit breaker opened meanwhile".to_owned())
            }
            StopReason::NoEndpoint => Some(match &self.unresolved {
                Some(why) => format!("no endpoint of the provider is known: {why}"),
                None => "no endpoint of the provider is known".to_owned(),
            }),
            StopReason::NotRetryable => Some(format!(
                "not retried: a {} would recur",
                self.attempts
                    .last()
                    .map_or("failure", |f| f.kind.label())
                    .replace('_', " ")
            )),
        };
        if let Some(note) = note {
            details.push_str("; ");
            details.push_str(&note);
        }
        details
    }

    /// The last failure's kind (none when no attempt was made).
    pub fn last_kind(&self) -> Option<AttemptOutcome> {
        self.attempts.last().map(|f| f.kind)
    }
}

/// Says what happened on the attempts: "timed out after 1s on both attempts" when they all
/// failed the same way, "attempt 1: …; attempt 2: …" otherwise; with the endpoint each went
/// to when B knows several ("… on both attempts (at 10.0.0.7:8080, then 10.0.0.8:8080)",
/// "attempt 1 at 10.0.0.7:8080: …").
pub fn describe(failures: &[AttemptFailure]) -> String {
    let Some(first) = failures.first() else {
        return "no attempt was made".to_owned();
    };
    if failures.iter().all(|f| f.summary == first.summary) {
        let on = match failures.len() {
            1 => "on the only attempt".to_owned(),
            2 => "on both attempts".to_owned(),
            n => format!("on all {n} attempts"),
        };
        let at: Vec<&str> = failures
            .iter()
            .filter_map(|f| f.endpoint.as_deref())
            .collect();
        if at.is_empty() {
            format!("{} {on}", first.summary)
        } else {
            format!("{} {on} (at {})", first.summary, at.join(", then "))
        }
    } else {
        failures
            .iter()
            .map(|f| match &f.endpoint {
                Some(at) => format!("attempt {} at {at}: {}", f.attempt, f.summary),
                None => format!("attempt {}: {}", f.attempt, f.summary),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Turns A's answer (not a failure: 2xx or 4xx) into a grant or the matching error. When A
/// refuses the request for any reason but wrong credentials or throttling, B's log says
/// why (`provider_refused`): the status and A's own words, if it gave any.
pub async fn read_answer(answer: Response) -> Result<Grant, ProviderError> {
    let status = answer.status();
    let retry_after = answer.headers().get(http::header::RETRY_AFTER).cloned();
    // Read whole already (see `attempt::ReadWhole`): this only takes the bytes.
    let body = answer
        .bytes()
        .await
        .map_err(|e| ProviderError::BadAnswer(telemetry::edge::innermost(&e)))?;
    match status {
        status if status.is_success() => serde_json::from_slice::<Grant>(&body)
            .map_err(|e| ProviderError::BadAnswer(format!("token body: {e}"))),
        StatusCode::UNAUTHORIZED => Err(ProviderError::InvalidCredentials),
        StatusCode::TOO_MANY_REQUESTS => Err(ProviderError::Throttled { retry_after }),
        status => {
            let reason = serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .map(|b| b.error);
            telemetry::event!(
                WARN,
                "provider_refused",
                status = i64::from(status.as_u16()),
                reason = reason.as_deref().unwrap_or("(no reason given)"),
            );
            match status {
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                    Err(ProviderError::InvalidRequest(reason.unwrap_or_else(|| {
                        "the provider refused the request".to_owned()
                    })))
                }
                status => Err(ProviderError::BadAnswer(match reason {
                    Some(reason) => format!("provider answered {status}: {reason}"),
                    None => format!("provider answered {status}"),
                })),
            }
        }
    }
}

/// A's error body: `{"error": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(attempt: u32, kind: AttemptOutcome, summary: &str) -> AttemptFailure {
        AttemptFailure {
            attempt,
            kind,
            summary: summary.to_owned(),
            endpoint: None,
            refused: false,
        }
    }

    fn failures(attempts: Vec<AttemptFailure>, stopped: StopReason) -> Failures {
        Failures {
            attempts,
            stopped,
            deadline: Duration::from_millis(1500),
            unresolved: None,
        }
    }

    #[test]
    fn with_several_endpoints_the_details_say_where_each_attempt_went() {
        let at = |f: AttemptFailure, endpoint: &str| f.at(Some(endpoint.to_owned()), false);
        let alike = [
            at(
                failure(1, AttemptOutcome::Timeout, "timed out after 1s"),
                "10.0.0.7:8080",
            ),
            at(
                failure(2, AttemptOutcome::Timeout, "timed out after 1s"),
                "10.0.0.8:8080",
            ),
        ];
        assert_eq!(
            describe(&alike),
            "timed out after 1s on both attempts (at 10.0.0.7:8080, then 10.0.0.8:8080)"
        );
        let mixed = [
            at(
                failure(1, AttemptOutcome::Timeout, "timed out after 1s"),
                "10.0.0.7:8080",
            ),
            at(
                failure(
                    2,
                    AttemptOutcome::BadStatus,
                    "provider answered 503 Service Unavailable",
                ),
                "10.0.0.8:8080",
            ),
        ];
        assert_eq!(
            describe(&mixed),
            "attempt 1 at 10.0.0.7:8080: timed out after 1s; attempt 2 at 10.0.0.8:8080: provider answered 503 Service Unavailable"
        );
        let nowhere = Failures {
            unresolved: Some("service-a: no such name".to_owned()),
            ..failures(Vec::new(), StopReason::NoEndpoint)
        };
        assert_eq!(
            nowhere.details(),
            "no attempt was made; no endpoint of the provider is known: service-a: no such name"
        );
    }

    #[test]
    fn alike_failures_are_summarised_once() {
        let both = [
            failure(1, AttemptOutcome::Timeout, "timed out after 1s"),
            failure(2, AttemptOutcome::Timeout, "timed out after 1s"),
        ];
        assert_eq!(describe(&both), "timed out after 1s on both attempts");
        assert_eq!(
            describe(&both[..1]),
            "timed out after 1s on the only attempt"
        );
        assert_eq!(
            failures(both.to_vec(), StopReason::AttemptsSpent).details(),
            "timed out after 1s on both attempts",
            "the lab's details, when B simply ran out of attempts"
        );
    }

    #[test]
    fn different_failures_are_listed_by_attempt() {
        let mixed = vec![
            failure(1, AttemptOutcome::Timeout, "timed out after 1s"),
            failure(
                2,
                AttemptOutcome::ConnectionError,
                "Connection refused (os error 111)",
            ),
        ];
        assert_eq!(
            describe(&mixed),
            "attempt 1: timed out after 1s; attempt 2: Connection refused (os error 111)"
        );
        assert_eq!(
            failures(mixed, StopReason::AttemptsSpent).last_kind(),
            Some(AttemptOutcome::ConnectionError)
        );
    }

    #[test]
    fn details_say_why_b_stopped_early() {
        let timeout = vec![failure(1, AttemptOutcome::Timeout, "timed out after 1s")];
        assert_eq!(
            failures(timeout, StopReason::Deadline).details(),
            "timed out after 1s on the only attempt; gave up at the 1500ms deadline"
        );
        let refused = vec![failure(
            1,
            AttemptOutcome::BadStatus,
            "provider answered 500",
        )];
        assert_eq!(
            failures(refused, StopReason::BudgetSpent).details(),
            "provider answered 500 on the only attempt; not retried: retry budget spent"
        );
        let garbage = vec![failure(
            1,
            AttemptOutcome::ProtocolError,
            "invalid HTTP version",
        )];
        assert_eq!(
            failures(garbage, StopReason::NotRetryable).details(),
            "invalid HTTP version on the only attempt; not retried: a protocol error would recur"
        );
    }
}
