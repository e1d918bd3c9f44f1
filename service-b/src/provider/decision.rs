//! What B does after a failed attempt: retry after a wait, or stop and say why. A pure
//! function of what B knows at that moment, so every rule is a line of a table here and its
//! invariants are properties tested over generated situations; the loop in
//! [`super::Provider::issue_token`] only sends, asks and records.

use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::{AttemptOutcome, StopReason};

/// What B knows when an attempt has just failed.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// Attempts the call may make (`--provider-attempts`).
    pub max_attempts: u32,
    /// Now.
    pub now: Instant,
    /// When the whole call must be over (`--provider-deadline-ms` after it began).
    pub deadline: Instant,
    /// The wait before the next attempt the backoff policy asks for (`None`: it allows no
    /// more).
    pub backoff: Option<Duration>,
    /// Whether the circuit breaker is open now (other calls' failures opened it).
    pub breaker_open: bool,
}

/// The next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait this long, then attempt again.
    RetryAfter(Duration),
    /// Make no further attempt, for this reason.
    Stop(StopReason),
}

/// The next step after a failed attempt. The retry budget is asked last, and only when
/// everything else allows a retry: asking takes a retry from it.
pub fn next_step(situation: &Situation, take_from_budget: impl FnOnce() -> bool) -> Step {
    let Situation {
        outcome,
        attempts,
        max_attempts,
        now,
        deadline,
        backoff,
        breaker_open,
    } = *situation;
    if !outcome.is_retryable() {
        return Step::Stop(StopReason::NotRetryable);
    }
    if attempts >= max_attempts {
        return Step::Stop(StopReason::AttemptsSpent);
    }
    let Some(wait) = backoff else {
        return Step::Stop(StopReason::AttemptsSpent);
    };
    if now + wait >= deadline {
        return Step::Stop(StopReason::Deadline);
    }
    if breaker_open {
        return Step::Stop(StopReason::CircuitOpen);
    }
    if !take_from_budget() {
        return Step::Stop(StopReason::BudgetSpent);
    }
    Step::RetryAfter(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn situation(outcome: AttemptOutcome) -> Situation {
        let now = Instant::now();
        Situation {
            outcome,
            attempts: 1,
            max_attempts: 2,
            now,
            deadline: now + 2050 * MS,
            backoff: Some(10 * MS),
            breaker_open: false,
        }
    }

    #[test]
    fn every_stop_reason_and_the_retry() {
        use AttemptOutcome::*;
        let base = situation(Timeout);
        let cases: Vec<(&str, Situation, bool, Step)> = vec![
            (
                "a timeout, all allowed",
                base,
                true,
                Step::RetryAfter(10 * MS),
            ),
            (
                "a broken connection",
                Situation {
                    outcome: ConnectionError,
                    ..base
                },
                true,
                Step::RetryAfter(10 * MS),
            ),
            (
                "a 5xx",
                Situation {
                    outcome: BadStatus,
                    ..base
                },
                true,
                Step::RetryAfter(10 * MS),
            ),
            (
                "an answer that is not HTTP",
                Situation {
                    outcome: ProtocolError,
                    ..base
                },
                true,
                Step::Stop(StopReason::NotRetryable),
            ),
            (
                "A's 401 (never a failure, never retried)",
                Situation {
                    outcome: Rejected,
                    ..base
                },
                true,
                Step::Stop(StopReason::NotRetryable),
            ),
            (
                "the last attempt",
                Situation {
                    attempts: 2,
                    ..base
                },
                true,
                Step::Stop(StopReason::AttemptsSpent),
            ),
            (
                "the policy allows no more",
                Situation {
                    backoff: None,
                    ..base
                },
                true,
                Step::Stop(StopReason::AttemptsSpent),
            ),
            (
                "the wait would reach the deadline",
                Situation {
                    deadline: base.now + 10 * MS,
                    ..base
                },
                true,
                Step::Stop(StopReason::Deadline),
            ),
            (
                "the breaker opened meanwhile",
                Situation {
                    breaker_open: true,
                    ..base
                },
                true,
                Step::Stop(StopReason::CircuitOpen),
            ),
            (
                "the budget is spent",
                base,
                false,
                Step::Stop(StopReason::BudgetSpent),
            ),
        ];
        for (name, situation, budget, expected) in cases {
            assert_eq!(next_step(&situation, || budget), expected, "{name}");
        }
    }

    #[test]
    fn the_budget_is_asked_only_when_a_retry_would_follow() {
        let mut asked = false;
        let stop = Situation {
            attempts: 2,
            ..situation(AttemptOutcome::Timeout)
        };
        let _ = next_step(&stop, || {
            asked = true;
            true
        });
        assert!(
            !asked,
            "nothing taken from the budget for a call that stops"
        );
    }

    fn outcome() -> impl Strategy<Value = AttemptOutcome> {
        proptest::sample::select(AttemptOutcome::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn never_more_attempts_never_past_the_deadline_never_after_a_final_answer(
            outcome in outcome(),
            attempts in 1u32..12,
            max_attempts in 1u32..11,
            left_ms in 0u64..5000,
            backoff_ms in proptest::option::of(0u64..3000),
            breaker_open in any::<bool>(),
            budget in any::<bool>(),
        ) {
            let now = Instant::now();
            let situation = Situation {
                outcome,
                attempts,
                max_attempts,
                now,
                deadline: now + Duration::from_millis(left_ms),
                backoff: backoff_ms.map(Duration::from_millis),
                breaker_open,
            };
            if let Step::RetryAfter(wait) = next_step(&situation, || budget) {
                prop_assert!(attempts < max_attempts, "a retry beyond the attempts allowed");
                prop_assert!(now + wait < situation.deadline, "a retry at or past the deadline");
                prop_assert!(outcome.is_retryable(), "a retry after {outcome:?}");
                prop_assert!(!breaker_open, "a retry while the breaker is open");
                prop_assert!(budget, "a retry the budget refused");
                prop_assert_eq!(Some(wait), situation.backoff, "the policy's wait");
            }
        }
    }
}
