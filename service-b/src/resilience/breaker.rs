//! The circuit breaker: see [`CircuitBreaker`].

use std::sync::Mutex;
use std::time::Duration;

use telemetry::window::{SlidingWindow, SlotClock};
use tokio::time::Instant;

use super::{Judged, WINDOW_SLOTS, totals};

/// The breaker's state, as exported in the `provider_circuit_state{state}` gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call is allowed through to test A.
    HalfOpen,
}

impl CircuitState {
    /// Every state, for registering metric series.
    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// The state's name in logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// When the breaker opens. A quiet client (one call at a time, fewer than `min_calls` over
/// the last `window`, e.g. curl while A is down): when `consecutive` calls in a row failed,
/// whatever succeeded before them. A busy one (at least `min_calls` calls in the window, or
/// several at once): when the share of them that failed reaches `failure_rate`. Under load, runs of failures happen by
/// chance on a provider failing part of the time, so there the rate alone decides, and the
/// breaker never turns a partly healthy provider into a dead one; a provider that is down
/// fails every call and trips it within a few calls at any traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failures in a row that count as enough evidence; 0 turns the breaker off.
    pub consecutive: u32,
    /// Share of failed calls in the window (0.0–1.0) at which it opens.
    pub failure_rate: f64,
    /// Calls in the window that count as enough evidence.
    pub min_calls: u32,
    /// The sliding window the rate is measured over.
    pub window: Duration,
    /// How long it stays open before letting one probe through.
    pub cooldown: Duration,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive_failures: u32,
        /// Calls and failures per tenth of the window.
        outcomes: SlidingWindow<Judged, WINDOW_SLOTS>,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight; everything else is refused until it reports.
    HalfOpen,
}

impl State {
    fn closed() -> Self {
        Self::Closed {
            consecutive_failures: 0,
            outcomes: SlidingWindow::default(),
        }
    }
}

/// What opened the breaker: said in B's 503 while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// This many calls in a row failed (a quiet client).
    InARow(u32),
    /// This many of the calls in the window failed (a busy client).
    Rate {
        /// Failed calls in the window.
        failures: u32,
        /// Calls in the window.
        calls: u32,
    },
    /// The probe sent after the cool-down failed.
    ProbeFailed,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InARow(n) => write!(f, "{n} calls in a row failed"),
            Self::Rate { failures, calls } => {
                write!(f, "{failures} of the last {calls} calls failed")
            }
            Self::ProbeFailed => f.write_str("the probe after the cool-down failed"),
        }
    }
}

/// The breaker's state under its lock.
#[derive(Debug)]
struct Inner {
    state: State,
    /// What opened it last.
    evidence: Evidence,
    /// Calls admitted and not yet reported: more than one at a time is a busy client.
    in_flight: u32,
}

/// Fails fast when A is sick: opens as [`BreakerPolicy`] says and refuses calls for the
/// cool-down; then it lets one probe through, which closes it on success or re-opens it on
/// failure.
#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    clock: SlotClock,
    state: Mutex<Inner>,
}

/// The breaker's answer to "may I call A?".
#[derive(Debug)]
pub enum Admission<'a> {
    /// Go ahead; report the outcome on the permit (none for a call the breaker does not
    /// hear about). When this call is the probe of an open breaker, it says so: the breaker
    /// entered [`CircuitState::HalfOpen`].
    Allowed(Option<Permit<'a>>, Option<CircuitState>),
    /// The circuit is open: do not call A. The next probe is allowed after `retry_in`.
    Refused {
        /// Time until the next probe may go.
        retry_in: Duration,
        /// What opened it.
        evidence: Evidence,
    },
}

/// Permission for one call. Report its outcome with [`Permit::record`]. A permit dropped
/// without a report says nothing about A's health (B's own caller hung up mid-call, or the
/// caller asked for the failure): it is not counted, and if it was the half-open probe, the
/// next call becomes the probe, so a lost probe can neither leave the breaker stuck
/// half-open nor re-open it.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    reported: bool,
}

impl Permit<'_> {
    /// Reports whether A answered (any answer, a 401 included) or the call failed; returns
    /// the state the breaker entered, if this changed it.
    pub fn record(mut self, succeeded: bool) -> Option<CircuitState> {
        self.reported = true;
        self.breaker.record(succeeded)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.abandon();
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker with `policy`.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            clock: SlotClock::new(policy.window / WINDOW_SLOTS as u32),
            state: Mutex::new(Inner {
                state: State::closed(),
                evidence: Evidence::ProbeFailed,
                in_flight: 0,
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match self.lock().state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go to A now. A call the breaker does not hear about (`heard`
    /// false: see `provider::decision::heard_by_breaker`) gets no permit and counts for
    /// nothing; it is refused while the breaker is open, and while it waits for its probe,
    /// instead of becoming the probe.
    pub fn admit(&self, heard: bool) -> Admission<'_> {
        let allow = |entered| {
            // Built only when heard: a permit dropped unreported tells the breaker so.
            let permit = heard.then(|| Permit {
                breaker: self,
                reported: false,
            });
            Admission::Allowed(permit, entered)
        };
        if self.policy.consecutive == 0 {
            return allow(None);
        }
        let mut inner = self.lock();
        let admission = match inner.state {
            State::Closed { .. } => allow(None),
            State::Open { until } if Instant::now() < until => Admission::Refused {
                retry_in: until - Instant::now(),
                evidence: inner.evidence,
            },
            State::Open { .. } if !heard => Admission::Refused {
                retry_in: Duration::ZERO,
                evidence: inner.evidence,
            },
            State::Open { .. } => {
                inner.state = State::HalfOpen;
                allow(Some(CircuitState::HalfOpen))
            }
            State::HalfOpen => Admission::Refused {
                retry_in: Duration::ZERO,
                evidence: inner.evidence,
            },
        };
        if matches!(admission, Admission::Allowed(Some(_), _)) {
            inner.in_flight += 1;
        }
        admission
    }

    fn record(&self, succeeded: bool) -> Option<CircuitState> {
        if self.policy.consecutive == 0 {
            return None;
        }
        let policy = self.policy;
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        let others_in_flight = inner.in_flight > 0;
        let Inner {
            state, evidence, ..
        } = &mut *inner;
        let changed = match (&mut *state, succeeded) {
            (
                State::Closed {
                    consecutive_failures,
                    outcomes,
                },
                _,
            ) => {
                *consecutive_failures = if succeeded {
                    0
                } else {
                    *consecutive_failures + 1
                };
                let slot = outcomes.at(self.clock.now());
                slot.calls += 1;
                slot.failures += u32::from(!succeeded);
                let Judged { calls, failures } = totals(outcomes);
                // Busy: enough calls in the window to judge by their rate, or other calls
                // running at the same time (a loaded client, before its window fills).
                let busy = calls >= policy.min_calls || others_in_flight;
                let opened_by = if succeeded {
                    None
                } else if !busy && *consecutive_failures >= policy.consecutive {
                    Some(Evidence::InARow(*consecutive_failures))
                } else if busy && f64::from(failures) >= policy.failure_rate * f64::from(calls) {
                    Some(Evidence::Rate { failures, calls })
                } else {
                    None
                };
                opened_by.map(|opened_by| {
                    *evidence = opened_by;
                    CircuitState::Open
                })
            }
            (State::HalfOpen, true) => Some(CircuitState::Closed),
            (State::HalfOpen, false) => {
                *evidence = Evidence::ProbeFailed;
                Some(CircuitState::Open)
            }
            // A call admitted before the circuit opened, finishing late: already counted.
            (State::Open { .. }, _) => None,
        };
        if let Some(next) = changed {
            *state = match next {
                CircuitState::Open => State::Open {
                    until: Instant::now() + policy.cooldown,
                },
                _ => State::closed(),
            };
        }
        changed
    }

    /// Closes the breaker with an empty window, forgetting every call so far (calls in
    /// flight report into the fresh window); returns whether it was not closed.
    pub fn reset(&self) -> bool {
        let mut inner = self.lock();
        let was_closed = matches!(inner.state, State::Closed { .. });
        inner.state = State::closed();
        !was_closed
    }

    /// A call ended without an outcome. Only a lost probe changes anything: the circuit goes
    /// back to open with its cool-down already over, so the next call probes at once.
    fn abandon(&self) {
        if self.policy.consecutive == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        if matches!(inner.state, State::HalfOpen) {
            inner.state = State::Open {
                until: Instant::now(),
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerPolicy {
            consecutive,
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(1),
        })
    }

    fn allowed(breaker: &CircuitBreaker) -> Option<Permit<'_>> {
        match breaker.admit(true) {
            Admission::Allowed(permit, _) => Some(permit.expect("a heard call's permit")),
            Admission::Refused { .. } => None,
        }
    }
    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = breaker(3);
        for _ in 0..2 {
            allowed(&breaker).expect("closed").record(false);
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(
            allowed(&breaker).expect("closed").record(false),
            Some(CircuitState::Open),
            "the breaker says what it entered; the caller records it"
        );
        assert!(allowed(&breaker).is_none(), "open: refused");

        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(allowed(&breaker).is_none(), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = allowed(&breaker).expect("one probe after the cool-down");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(allowed(&breaker).is_none(), "only one probe at a time");
        assert_eq!(probe.record(true), Some(CircuitState::Closed));
        assert!(allowed(&breaker).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_opens_it_after_a_run_of_failures_whatever_succeeded_before() {
        let breaker = breaker(5);
        allowed(&breaker).expect("closed").record(true);
        for _ in 0..4 {
            allowed(&breaker).expect("closed").record(false);
        }
        assert_eq!(breaker.state(), CircuitState::Closed, "four in a row");
        assert_eq!(
            allowed(&breaker).expect("closed").record(false),
            Some(CircuitState::Open),
            "the fifth in a row opens it, although A answered earlier in the window"
        );
        match breaker.admit(true) {
            Admission::Refused { evidence, .. } => {
                assert_eq!(evidence, Evidence::InARow(5));
                assert_eq!(evidence.to_string(), "5 calls in a row failed");
            }
            Admission::Allowed(..) => panic!("open"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_breaks_the_run_and_a_failed_probe_reopens() {
        let breaker = breaker(2);
        allowed(&breaker).expect("closed").record(false);
        allowed(&breaker).expect("closed").record(true);
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Closed, "one in a row");
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Open, "two in a row");

        tokio::time::advance(Duration::from_secs(1)).await;
        allowed(&breaker).expect("probe").record(false);
        assert_eq!(
            breaker.state(),
            CircuitState::Open,
            "probe failed: open again"
        );
        match breaker.admit(true) {
            Admission::Refused { evidence, .. } => assert_eq!(evidence, Evidence::ProbeFailed),
            Admission::Allowed(..) => panic!("open"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn callers_hanging_up_never_open_the_circuit() {
        let breaker = breaker(3);
        for _ in 0..100 {
            drop(allowed(&breaker).expect("closed"));
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_probe_lets_the_next_call_probe_at_once() {
        let breaker = breaker(1);
        allowed(&breaker).expect("closed").record(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(allowed(&breaker).expect("probe"));
        let next = allowed(&breaker).expect("the next call probes without another cool-down");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        next.record(true);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_may_not_probe_waits_for_one_that_may() {
        let breaker = breaker(1);
        allowed(&breaker).expect("closed").record(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            matches!(breaker.admit(false), Admission::Refused { .. }),
            "a caller's slow call does not become the probe"
        );
        assert_eq!(breaker.state(), CircuitState::Open);
        let probe = allowed(&breaker).expect("the next call of B's own pace probes");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        probe.record(true);
        assert!(
            matches!(breaker.admit(false), Admission::Allowed(None, None)),
            "closed: every call goes, unheard ones without a permit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unheard_calls_weigh_nothing() {
        let breaker = breaker(5);
        // Many unheard calls in flight do not make a quiet client look busy: its run of
        // failures still opens the breaker.
        let unheard: Vec<_> = (0..50).map(|_| breaker.admit(false)).collect();
        for _ in 0..5 {
            allowed(&breaker).expect("closed").record(false);
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        drop(unheard);
        assert_eq!(
            breaker.state(),
            CircuitState::Open,
            "their end changes nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_closes_it_and_forgets_the_window() {
        let breaker = breaker(2);
        allowed(&breaker).expect("closed").record(false);
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(breaker.reset(), "it was open");
        assert_eq!(breaker.state(), CircuitState::Closed);
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Closed, "one failure since");
        assert!(!breaker.reset(), "it was closed");
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_opens() {
        let breaker = breaker(0);
        for _ in 0..100 {
            allowed(&breaker).expect("disabled").record(false);
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_failing_half_the_time_under_load_never_opens_it() {
        let breaker = breaker(5);
        // Under load: eight calls in flight at any time, from the very first.
        let mut in_flight: std::collections::VecDeque<Permit<'_>> =
            (0..8).map(|_| allowed(&breaker).expect("closed")).collect();
        for n in 0..10_000 {
            // Runs of 9 failures, 45% failures overall: a flaky, busy provider.
            let failed = (n % 20) >= 11;
            let oldest = in_flight.pop_front().expect("a call in flight");
            assert_eq!(oldest.record(!failed), None, "call {n} changed the state");
            in_flight.push_back(allowed(&breaker).expect("stays closed"));
            if n % 100 == 0 {
                tokio::time::advance(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_calling_one_at_a_time_is_judged_by_the_run() {
        let breaker = breaker(5);
        // The same flaky pattern, one call at a time, before the window holds 20 calls:
        // nine failures in a row are five in a row.
        let opened = (0..20).find_map(|n| {
            let failed = (n % 20) >= 11;
            allowed(&breaker)
                .expect("closed until the run")
                .record(!failed)
                .map(|_| n)
        });
        assert_eq!(opened, Some(15), "the fifth failure in a row");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_provider_under_load_opens_it_within_min_calls() {
        let breaker = breaker(1_000);
        for _ in 0..100 {
            allowed(&breaker).expect("closed").record(true);
        }
        let mut failed = 0;
        while let Some(permit) = allowed(&breaker) {
            permit.record(false);
            failed += 1;
            assert!(failed <= 100, "never opened");
        }
        assert_eq!(failed, 100, "opens when failures reach half the window");
        match breaker.admit(true) {
            Admission::Refused { evidence, .. } => {
                assert_eq!(
                    evidence,
                    Evidence::Rate {
                        failures: 100,
                        calls: 200
                    }
                );
                assert_eq!(evidence.to_string(), "100 of the last 200 calls failed");
            }
            Admission::Allowed(..) => panic!("open"),
        }
    }
}
