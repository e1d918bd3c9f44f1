//! How one attempt to call A ended, and why B stopped trying: the two facts every other
//! part of B's call records (the log line, the span, the metrics, the 503's `details`).
//! Adding a failure class is one arm in [`AttemptOutcome`]; the compiler shows the rest
//! (its match in `every_outcome_is_in_all` below, and every `match` on it), and what counts
//! outcomes counts [`AttemptOutcome::ALL`].

/// How one attempt ended. Decided once, where the answer (or its absence) arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// A answered 2xx.
    Ok,
    /// A answered 4xx: its final word about this request (never retried).
    Rejected,
    /// No complete answer within the attempt's timeout.
    Timeout,
    /// Could not connect, or the connection broke (refused, reset, closed early).
    ConnectionError,
    /// A answered with a 5xx status.
    BadStatus,
    /// Something answered that is not HTTP B can read: a second try would read the same.
    ProtocolError,
}

impl AttemptOutcome {
    /// Every outcome, for registering metric series.
    pub const ALL: [Self; 6] = [
        Self::Ok,
        Self::Rejected,
        Self::Timeout,
        Self::ConnectionError,
        Self::BadStatus,
        Self::ProtocolError,
    ];

    /// How an attempt that got an answer with `status` ended.
    pub fn of_answer(status: http::StatusCode) -> Self {
        if status.is_success() {
            Self::Ok
        } else if status.is_server_error() {
            Self::BadStatus
        } else {
            Self::Rejected
        }
    }

    /// The name in logs (`error`), metric labels (`outcome`, `kind`) and spans
    /// (`error.type`, for failures without a status code).
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
            Self::BadStatus => "bad_status",
            Self::ProtocolError => "protocol_error",
        }
    }

    /// Whether the attempt failed (A's answer, a 4xx included, is not a failure).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::Rejected)
    }

    /// Whether a second attempt can fix it: a timeout, a broken connection or a 5xx can
    /// be transient; an answer B cannot read will be unreadable again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::ConnectionError | Self::BadStatus
        )
    }
}

/// Why B stopped calling A without a usable answer. Recorded when it happens, never
/// inferred afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Every attempt `--provider-attempts` allows was made.
    AttemptsSpent,
    /// A retry was due, but the retry budget was spent.
    BudgetSpent,
    /// The call's deadline left no time for another attempt.
    Deadline,
    /// The last failure is not worth retrying.
    NotRetryable,
    /// The circuit breaker opened while this call was under way (other calls found A
    /// failing): no further attempt adds to A's load.
    CircuitOpen,
    /// No endpoint of A is known: its name does not resolve (yet).
    NoEndpoint,
}

impl StopReason {
    /// Every reason, for registering metric series.
    pub const ALL: [Self; 6] = [
        Self::AttemptsSpent,
        Self::BudgetSpent,
        Self::Deadline,
        Self::NotRetryable,
        Self::CircuitOpen,
        Self::NoEndpoint,
    ];

    /// The name in logs (`reason`) and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::AttemptsSpent => "attempts_spent",
            Self::BudgetSpent => "retry_budget_exhausted",
            Self::Deadline => "deadline_exceeded",
            Self::NotRetryable => "not_retryable",
            Self::CircuitOpen => "circuit_open",
            Self::NoEndpoint => "no_endpoint",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        let retried: Vec<_> = AttemptOutcome::ALL
            .into_iter()
            .filter(|o| o.is_retryable())
            .collect();
        assert_eq!(
            retried,
            [
                AttemptOutcome::Timeout,
                AttemptOutcome::ConnectionError,
                AttemptOutcome::BadStatus
            ]
        );
        assert!(
            AttemptOutcome::ALL
                .iter()
                .all(|o| !o.is_retryable() || o.is_failure())
        );
    }

    #[test]
    fn every_outcome_is_in_all() {
        // A new variant fails to compile here until it is listed, next to `ALL`.
        let listed = |outcome: AttemptOutcome| match outcome {
            AttemptOutcome::Ok
            | AttemptOutcome::Rejected
            | AttemptOutcome::Timeout
            | AttemptOutcome::ConnectionError
            | AttemptOutcome::BadStatus
            | AttemptOutcome::ProtocolError => outcome,
        };
        for outcome in AttemptOutcome::ALL {
            assert_eq!(listed(outcome), outcome);
        }
        assert_eq!(AttemptOutcome::ALL.len(), 6, "ALL lists every variant once");
        let reasons = |reason: StopReason| match reason {
            StopReason::AttemptsSpent
            | StopReason::BudgetSpent
            | StopReason::Deadline
            | StopReason::NotRetryable
            | StopReason::CircuitOpen
            | StopReason::NoEndpoint => reason,
        };
        assert!(StopReason::ALL.iter().all(|r| reasons(*r) == *r));
        assert_eq!(StopReason::ALL.len(), 6, "ALL lists every reason once");
    }

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = AttemptOutcome::ALL.iter().map(|o| o.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AttemptOutcome::ALL.len());
    }
}
