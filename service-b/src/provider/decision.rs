//! What B decides about a call to A, as pure functions of what it knows at that moment, so
//! every rule is a line of a table here and its invariants are properties tested over
//! generated situations; the loop in [`super::Provider::issue_token`] only sends, asks and
//! records:
//!
//! - [`Pace::of`]: whose the call's slowness is. A caller may ask A to wait (`delay_ms`) or
//!   say it will wait less than B would (`x-request-timeout-ms`): what such a call meets, it
//!   asked for. [`heard_by_breaker`] keeps it away from the breaker, whether it fails or
//!   succeeds, and [`next_step`] takes its retries from a share of the budget of its own, so
//!   no field or header a caller sends can open the breaker or spend the retries others need.
//! - [`next_step`]: after a failed attempt, retry after a wait (none when the connection
//!   was refused and another endpoint of A is in the choice), or stop and say why.

use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::{AttemptOutcome, StopReason};

/// Whose a call's slowness is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pace {
    /// B's own settings alone: how the call goes says something about A.
    Ours,
    /// The caller asked A to wait, or cut B's deadline short: how the call goes says
    /// nothing about A.
    Callers,
}

impl Pace {
    /// The pace of a call that asks A to wait `delay_ms` and must end within
    /// `caller_deadline`, where B's own deadline is `own_deadline`.
    pub fn of(
        delay_ms: Option<u64>,
        caller_deadline: Option<Duration>,
        own_deadline: Duration,
    ) -> Self {
        let asked_a_to_wait = delay_ms.is_some_and(|ms| ms > 0);
        let cut_short = caller_deadline.is_some_and(|d| d < own_deadline);
        if asked_a_to_wait || cut_short {
            Self::Callers
        } else {
            Self::Ours
        }
    }
}

/// Whether the circuit breaker hears how a call of `pace` went (and whether it may be the
/// probe of an open breaker): only calls paced by B alone. A caller's asked-for slowness
/// must not open the breaker for everyone, nor its successes keep a failing A's breaker
/// closed, nor its slow call hold the one probe.
pub fn heard_by_breaker(pace: Pace) -> bool {
    pace == Pace::Ours
}

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
    /// Whose the call's slowness is: its retries come from that share of the budget.
    pub pace: Pace,
    /// Whether the attempt's connection was refused while another endpoint of A, not yet
    /// tried by this call, is in the choice: the retry goes there at once, without backoff
    /// (nothing listened; the other endpoint is not the one that refused).
    pub refused_with_another_in_use: bool,
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
/// everything else allows a retry: asking takes a retry from the share of the call's
/// [`Pace`].
pub fn next_step(situation: &Situation, take_from_budget: impl FnOnce(Pace) -> bool) -> Step {
    let Situation {
        outcome,
        attempts,
        max_attempts,
        now,
        deadline,
        backoff,
        breaker_open,
        pace,
        refused_with_another_in_use,
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
    if !take_from_budget(pace) {
        return Step::Stop(StopReason::BudgetSpent);
    }
    if refused_with_another_in_use {
        return Step::RetryAfter(Duration::ZERO);
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
            pace: Pace::Ours,
            refused_with_another_in_use: false,
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
            (
                "refused, another endpoint in the choice: at once",
                Situation {
                    outcome: ConnectionError,
                    refused_with_another_in_use: true,
                    ..base
                },
                true,
                Step::RetryAfter(Duration::ZERO),
            ),
            (
                "refused, but the last attempt",
                Situation {
                    outcome: ConnectionError,
                    refused_with_another_in_use: true,
                    attempts: 2,
                    ..base
                },
                true,
                Step::Stop(StopReason::AttemptsSpent),
            ),
            (
                "refused elsewhere, the budget spent",
                Situation {
                    outcome: ConnectionError,
                    refused_with_another_in_use: true,
                    ..base
                },
                false,
                Step::Stop(StopReason::BudgetSpent),
            ),
        ];
        for (name, situation, budget, expected) in cases {
            assert_eq!(next_step(&situation, |_| budget), expected, "{name}");
        }
    }

    #[test]
    fn whose_slowness_a_call_is() {
        let own = 2050 * MS;
        let cases = [
            ("nothing asked", None, None, Pace::Ours),
            ("a delay of 0 asks nothing", Some(0), None, Pace::Ours),
            ("a delay under B's timeout", Some(999), None, Pace::Callers),
            ("the seed's 2 s delay", Some(2000), None, Pace::Callers),
            (
                "a caller willing to wait longer",
                None,
                Some(5000 * MS),
                Pace::Ours,
            ),
            (
                "a caller willing to wait exactly as long",
                None,
                Some(own),
                Pace::Ours,
            ),
            ("a caller in a hurry", None, Some(300 * MS), Pace::Callers),
            ("both", Some(10), Some(MS), Pace::Callers),
        ];
        for (name, delay, deadline, expected) in cases {
            assert_eq!(Pace::of(delay, deadline, own), expected, "{name}");
        }
        assert!(heard_by_breaker(Pace::Ours));
        assert!(
            !heard_by_breaker(Pace::Callers),
            "a caller's slowness never opens it"
        );
    }

    #[test]
    fn a_callers_retries_come_from_its_own_share() {
        let mut asked = Vec::new();
        for pace in [Pace::Ours, Pace::Callers] {
            let situation = Situation {
                pace,
                ..situation(AttemptOutcome::Timeout)
            };
            let step = next_step(&situation, |share| {
                asked.push(share);
                share == Pace::Callers
            });
            let expected = match pace {
                Pace::Ours => Step::Stop(StopReason::BudgetSpent),
                Pace::Callers => Step::RetryAfter(10 * MS),
            };
            assert_eq!(step, expected, "{pace:?}");
        }
        assert_eq!(asked, [Pace::Ours, Pace::Callers]);
    }

    #[test]
    fn the_budget_is_asked_only_when_a_retry_would_follow() {
        let mut asked = false;
        let stop = Situation {
            attempts: 2,
            ..situation(AttemptOutcome::Timeout)
        };
        let _ = next_step(&stop, |_| {
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
            callers in any::<bool>(),
            refused_elsewhere in any::<bool>(),
        ) {
            let pace = if callers { Pace::Callers } else { Pace::Ours };
            let now = Instant::now();
            let situation = Situation {
                outcome,
                attempts,
                max_attempts,
                now,
                deadline: now + Duration::from_millis(left_ms),
                backoff: backoff_ms.map(Duration::from_millis),
                breaker_open,
                pace,
                refused_with_another_in_use: refused_elsewhere,
            };
            let mut share = None;
            let step = next_step(&situation, |asked| {
                share = Some(asked);
                budget
            });
            prop_assert!(share.is_none_or(|asked| asked == pace), "another share was asked");
            if let Step::RetryAfter(wait) = step {
                prop_assert!(attempts < max_attempts, "a retry beyond the attempts allowed");
                prop_assert!(now + wait < situation.deadline, "a retry at or past the deadline");
                prop_assert!(outcome.is_retryable(), "a retry after {outcome:?}");
                prop_assert!(!breaker_open, "a retry while the breaker is open");
                prop_assert!(budget, "a retry the budget refused");
                let expected = if refused_elsewhere { Some(Duration::ZERO) } else { situation.backoff };
                prop_assert_eq!(Some(wait), expected, "the policy's wait, or none to go elsewhere");
            }
        }

        #[test]
        fn nothing_a_caller_asks_for_reaches_the_breaker(
            delay_ms in proptest::option::of(0u64..10_000),
            deadline_ms in proptest::option::of(0u64..10_000),
            own_ms in 1u64..10_000,
        ) {
            let pace = Pace::of(delay_ms, deadline_ms.map(Duration::from_millis), Duration::from_millis(own_ms));
            let asked = delay_ms.is_some_and(|ms| ms > 0) || deadline_ms.is_some_and(|ms| ms < own_ms);
            prop_assert_eq!(heard_by_breaker(pace), !asked, "{:?}", pace);
        }
    }
}
