//! Outlier ejection: the per-endpoint breaker. An endpoint whose attempts keep failing is
//! taken out of the choice for a while, so attempts go to the replicas that answer:
//!
//! - a refused connection (nothing listens: a replica stopped, or not started yet) takes it
//!   out until a `/health` probe answers ([`State::Probing`], see `fleet::probe`);
//! - `--eject-after-failures` failures in a row (timeouts, broken connections, 5xx), or a
//!   failed share of at least `--eject-failure-rate` of its attempts over the last
//!   [`WINDOW`] (once it had [`MIN_CALLS`]), take it out for `--eject-base-ms`, doubled for
//!   each ejection in a row, at most `--eject-max-ms` ([`State::Ejected`]): its `/health`
//!   may answer while `/token` does not, so it serves its time instead of being probed.
//!
//! An endpoint back from a timed ejection is on probation: one attempt at a time, until one
//! is answered; a failure on probation takes it out again at once (for twice as long). So a
//! replica that is still sick costs one attempt per return, not a burst.
//!
//! The fleet never takes out more than `--max-ejection-percent` of its endpoints (at least
//! one of two or more), and never the only one. Only attempts paced by B alone count (see
//! `provider::decision::Pace`): a caller's asked-for slowness never takes a replica out.

use std::time::Duration;

use telemetry::window::{SlidingWindow, SlotClock};
use tokio::time::Instant;

use crate::resilience::Judged;

/// The window the failed share is measured over.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Attempts in the window before the failed share can take an endpoint out.
pub const MIN_CALLS: u32 = 10;

/// Slots the window is cut into.
const SLOTS: usize = 10;

/// When endpoints are taken out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionPolicy {
    /// Failures in a row that take an endpoint out; 0 turns ejection off.
    pub consecutive: u32,
    /// Failed share over [`WINDOW`] that takes it out.
    pub failure_rate: f64,
    /// How long the first ejection lasts.
    pub base: Duration,
    /// The longest one ejection lasts.
    pub max: Duration,
    /// Most endpoints out at once, in percent of those known.
    pub max_percent: u32,
}

impl EjectionPolicy {
    /// How many of `known` endpoints may be out at once: `max_percent` of them, at least
    /// one of two or more, never all.
    pub fn most_out(&self, known: usize) -> usize {
        if self.consecutive == 0 || known < 2 {
            return 0;
        }
        let share = known * self.max_percent as usize / 100;
        share.clamp(1, known - 1)
    }

    /// How long ejection number `in_a_row` (from 1) lasts: the base, doubled each time.
    pub fn duration(&self, in_a_row: u32) -> Duration {
        let doublings = in_a_row.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Why an endpoint was taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It refused a connection (or was never reached): out until a probe answers.
    Refused,
    /// Failures in a row.
    ConsecutiveFailures,
    /// A high failed share over the window.
    FailureRate,
}

impl Reason {
    /// Every reason, for registering metric series.
    pub const ALL: [Self; 3] = [Self::Refused, Self::ConsecutiveFailures, Self::FailureRate];

    /// The name in logs (`reason`) and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::FailureRate => "failure_rate",
        }
    }
}

/// Where an endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the choice.
    InUse,
    /// Out until `until`, for `reason`.
    Ejected {
        /// When it is back.
        until: Instant,
        /// Why it is out.
        reason: Reason,
    },
    /// Out until a `/health` probe answers: it refused a connection, or it was found by
    /// discovery and has not answered yet.
    Probing,
}

impl State {
    /// The name in metric labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::InUse => "in_use",
            Self::Ejected { .. } => "ejected",
            Self::Probing => "probing",
        }
    }

    /// Every state's label, for metric series.
    pub const LABELS: [&'static str; 3] = ["in_use", "ejected", "probing"];
}

/// How an attempt to an endpoint ended, as ejection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A answered (a 2xx or a 4xx: it is up and speaking its API).
    Answered,
    /// The connection was refused: nothing listens there.
    Refused,
    /// It timed out, broke off, answered 5xx or something unreadable.
    Failed,
}

/// One endpoint's record: where it stands, and what its recent attempts say.
#[derive(Debug)]
pub struct Health {
    state: State,
    /// Failures since the last answer.
    in_a_row: u32,
    /// Attempts and failures per slot of the window.
    window: SlidingWindow<Judged, SLOTS>,
    clock: SlotClock,
    /// Ejections with no quiet spell between them (reset after `max` back in use).
    ejections_in_a_row: u32,
    /// When it last came back.
    back_since: Option<Instant>,
    /// Back from a timed ejection for this reason, and no attempt answered since.
    probation: Option<Reason>,
}

impl Health {
    /// A record starting in `state`.
    pub fn new(state: State) -> Self {
        Self {
            state,
            in_a_row: 0,
            window: SlidingWindow::default(),
            clock: SlotClock::new(WINDOW / SLOTS as u32),
            ejections_in_a_row: 0,
            back_since: None,
            probation: None,
        }
    }

    /// Where it stands now; an ejection whose time is up ends here (`true`: it just came
    /// back).
    pub fn state(&mut self, now: Instant) -> (State, bool) {
        if let State::Ejected { until, reason } = self.state
            && now >= until
        {
            self.come_back(now);
            self.probation = Some(reason);
            return (self.state, true);
        }
        (self.state, false)
    }

    /// Whether it is on probation: back from a timed ejection, no attempt answered since
    /// (the fleet sends it one attempt at a time).
    pub fn on_probation(&self) -> bool {
        self.probation.is_some()
    }

    /// Where it stands now, without ending an ejection whose time is up (shown as back in
    /// use: the next pick ends it, and says so).
    pub fn current(&self, now: Instant) -> State {
        match self.state {
            State::Ejected { until, .. } if now >= until => State::InUse,
            state => state,
        }
    }

    /// Whether it is in the choice now (without ending an ejection: see [`Self::state`]).
    pub fn in_use(&self) -> bool {
        self.state == State::InUse
    }

    /// Records an attempt's verdict; returns why the endpoint should be taken out, if it
    /// should (the fleet decides whether it may).
    pub fn report(&mut self, verdict: Verdict, policy: &EjectionPolicy) -> Option<Reason> {
        if policy.consecutive == 0 || self.state != State::InUse {
            return None;
        }
        if let Some(reason) = self.probation {
            return match verdict {
                Verdict::Answered => {
                    self.probation = None;
                    None
                }
                Verdict::Refused => Some(Reason::Refused),
                Verdict::Failed => Some(reason),
            };
        }
        let slot = self.window.at(self.clock.now());
        slot.calls += 1;
        match verdict {
            Verdict::Answered => {
                self.in_a_row = 0;
                return None;
            }
            Verdict::Refused => {
                slot.failures += 1;
                self.in_a_row += 1;
                return Some(Reason::Refused);
            }
            Verdict::Failed => {
                slot.failures += 1;
                self.in_a_row += 1;
            }
        }
        if self.in_a_row >= policy.consecutive {
            return Some(Reason::ConsecutiveFailures);
        }
        let Judged { calls, failures } = crate::resilience::totals(&self.window);
        (calls >= MIN_CALLS && f64::from(failures) >= policy.failure_rate * f64::from(calls))
            .then_some(Reason::FailureRate)
    }

    /// Takes it out for `reason`; returns how long (`None`: until a probe answers).
    pub fn eject(
        &mut self,
        reason: Reason,
        policy: &EjectionPolicy,
        now: Instant,
    ) -> Option<Duration> {
        let quiet = self
            .back_since
            .is_some_and(|back| now.saturating_duration_since(back) >= policy.max);
        self.ejections_in_a_row = if quiet {
            1
        } else {
            self.ejections_in_a_row + 1
        };
        self.in_a_row = 0;
        self.probation = None;
        self.window = SlidingWindow::default();
        if reason == Reason::Refused {
            self.state = State::Probing;
            return None;
        }
        let lasts = policy.duration(self.ejections_in_a_row);
        self.state = State::Ejected {
            until: now + lasts,
            reason,
        };
        Some(lasts)
    }
    /// A probe answered, or the ejection's time is up: back in the choice, with a clean
    /// record (a timed return then goes on probation: see [`Self::state`]).
    pub fn come_back(&mut self, now: Instant) {
        self.state = State::InUse;
        self.in_a_row = 0;
        self.window = SlidingWindow::default();
        self.back_since = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy() -> EjectionPolicy {
        EjectionPolicy {
            consecutive: 5,
            failure_rate: 0.5,
            base: SECOND,
            max: 8 * SECOND,
            max_percent: 50,
        }
    }

    #[test]
    fn at_most_a_share_of_endpoints_is_ever_out_and_never_all() {
        let policy = policy();
        for (known, most) in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (10, 5)] {
            assert_eq!(policy.most_out(known), most, "{known} known");
        }
        let all = EjectionPolicy {
            max_percent: 100,
            ..policy
        };
        assert_eq!(all.most_out(3), 2, "never all");
        let off = EjectionPolicy {
            consecutive: 0,
            ..policy
        };
        assert_eq!(off.most_out(10), 0);
    }

    #[test]
    fn each_ejection_in_a_row_lasts_twice_as_long_up_to_the_cap() {
        let policy = policy();
        let lasts: Vec<_> = (1..=6).map(|n| policy.duration(n).as_secs()).collect();
        assert_eq!(lasts, [1, 2, 4, 8, 8, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_or_a_failed_share_take_it_out_and_time_brings_it_back() {
        let policy = policy();
        let mut health = Health::new(State::InUse);
        for _ in 0..4 {
            assert_eq!(health.report(Verdict::Failed, &policy), None);
        }
        assert_eq!(
            health.report(Verdict::Failed, &policy),
            Some(Reason::ConsecutiveFailures)
        );
        let now = Instant::now();
        assert_eq!(
            health.eject(Reason::ConsecutiveFailures, &policy, now),
            Some(SECOND)
        );
        assert_eq!(health.state(now).0.label(), "ejected");
        assert_eq!(
            health.report(Verdict::Failed, &policy),
            None,
            "out: not judged"
        );
        tokio::time::advance(SECOND).await;
        assert_eq!(
            health.state(Instant::now()),
            (State::InUse, true),
            "its time is up"
        );
        assert!(health.on_probation());
        assert_eq!(health.report(Verdict::Answered, &policy), None);
        assert!(!health.on_probation(), "answered: off probation");
        // Half of ten attempts failed, never two in a row.
        let mut reasons = Vec::new();
        for n in 0..10 {
            let verdict = if n % 2 == 1 {
                Verdict::Failed
            } else {
                Verdict::Answered
            };
            reasons.push(health.report(verdict, &policy));
        }
        assert_eq!(
            reasons.last(),
            Some(&Some(Reason::FailureRate)),
            "{reasons:?}"
        );
        assert!(reasons[..9].iter().all(Option::is_none), "{reasons:?}");
        let lasts = health.eject(Reason::FailureRate, &policy, Instant::now());
        assert_eq!(
            lasts,
            Some(2 * SECOND),
            "the second in a row lasts twice as long"
        );
    }
    #[tokio::test(start_paused = true)]
    async fn a_failure_on_probation_takes_it_out_again_at_once_for_longer() {
        let policy = policy();
        let mut health = Health::new(State::InUse);
        let lasts = health.eject(Reason::FailureRate, &policy, Instant::now());
        assert_eq!(lasts, Some(SECOND));
        tokio::time::advance(SECOND).await;
        assert_eq!(health.state(Instant::now()), (State::InUse, true));
        assert_eq!(
            health.report(Verdict::Failed, &policy),
            Some(Reason::FailureRate),
            "one failure on probation is enough"
        );
        let lasts = health.eject(Reason::FailureRate, &policy, Instant::now());
        assert_eq!(lasts, Some(2 * SECOND));
        assert!(!health.on_probation());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_takes_it_out_until_a_probe_answers() {
        let policy = policy();
        let mut health = Health::new(State::InUse);
        assert_eq!(
            health.report(Verdict::Refused, &policy),
            Some(Reason::Refused)
        );
        assert_eq!(health.eject(Reason::Refused, &policy, Instant::now()), None);
        tokio::time::advance(60 * SECOND).await;
        assert_eq!(
            health.state(Instant::now()),
            (State::Probing, false),
            "no time limit"
        );
        health.come_back(Instant::now());
        assert!(health.in_use());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_resets_how_long_the_next_ejection_lasts() {
        let policy = policy();
        let mut health = Health::new(State::InUse);
        let mut lasts = Vec::new();
        for _ in 0..3 {
            let now = Instant::now();
            lasts.push(health.eject(Reason::ConsecutiveFailures, &policy, now));
            health.come_back(now);
        }
        assert_eq!(lasts, [Some(SECOND), Some(2 * SECOND), Some(4 * SECOND)]);
        tokio::time::advance(8 * SECOND).await;
        let again = health.eject(Reason::ConsecutiveFailures, &policy, Instant::now());
        assert_eq!(
            again,
            Some(SECOND),
            "back for the longest ejection: it starts over"
        );
    }

    #[test]
    fn answers_clear_the_run_and_ejection_off_judges_nothing() {
        let policy = policy();
        let mut health = Health::new(State::InUse);
        // Three failures in every ten: never five in a row, never half of the window.
        for _ in 0..20 {
            for _ in 0..3 {
                assert_eq!(health.report(Verdict::Failed, &policy), None);
            }
            for _ in 0..7 {
                assert_eq!(health.report(Verdict::Answered, &policy), None);
            }
        }
        let off = EjectionPolicy {
            consecutive: 0,
            ..policy
        };
        let mut health = Health::new(State::InUse);
        assert_eq!(health.report(Verdict::Refused, &off), None);
    }
}
