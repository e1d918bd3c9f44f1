//! What stops B's retries from making an outage worse: a retry budget and a circuit breaker.
//! Both are small state machines on Tokio's clock, so their tests run on paused time.
//! [`provider`](crate::provider) wires them into the call to A.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Caps retries at a share of recent calls (Finagle's and Linkerd's retry budget): over a
/// sliding `window`, retries may not exceed `ratio` × calls + `min_per_sec` × window. The
/// floor lets a quiet client (one curl at a time) still retry; the ratio stops a busy one
/// from doubling its load on a provider that is already failing.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    window: Duration,
    slots: Mutex<VecDeque<Slot>>,
}

/// Calls and retries within one tenth of the window.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: Instant,
    calls: u32,
    retries: u32,
}

impl RetryBudget {
    /// A budget of `ratio` retries per call, plus `min_per_sec`, over `window`.
    pub fn new(ratio: f64, min_per_sec: f64, window: Duration) -> Self {
        Self {
            ratio: ratio.max(0.0),
            reserve: min_per_sec.max(0.0) * window.as_secs_f64(),
            window,
            slots: Mutex::new(VecDeque::new()),
        }
    }

    /// Records a call (every call earns the budget `ratio` retries).
    pub fn deposit(&self) {
        self.with_current_slot(|slot| slot.calls += 1);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let mut allowed = false;
        self.with_slots(|slots| {
            let calls: u32 = slots.iter().map(|s| s.calls).sum();
            let retries: u32 = slots.iter().map(|s| s.retries).sum();
            allowed = self.reserve + self.ratio * f64::from(calls) - f64::from(retries) >= 1.0;
        });
        if allowed {
            self.with_current_slot(|slot| slot.retries += 1);
        }
        allowed
    }

    fn with_slots(&self, f: impl FnOnce(&mut VecDeque<Slot>)) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while slots
            .front()
            .is_some_and(|s| now.duration_since(s.start) >= self.window)
        {
            slots.pop_front();
        }
        f(&mut slots);
    }

    fn with_current_slot(&self, f: impl FnOnce(&mut Slot)) {
        let slot_length = self.window / 10;
        self.with_slots(|slots| {
            let now = Instant::now();
            if slots
                .back()
                .is_none_or(|s| now.duration_since(s.start) >= slot_length)
            {
                slots.push_back(Slot {
                    start: now,
                    calls: 0,
                    retries: 0,
                });
            }
            if let Some(slot) = slots.back_mut() {
                f(slot);
            }
        });
    }
}

/// The breaker's state, as exported in the `provider_circuit_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through (gauge 0).
    Closed,
    /// Calls are refused until the cool-down ends (gauge 1).
    Open,
    /// One probe call is allowed through to test A (gauge 2).
    HalfOpen,
}

impl CircuitState {
    /// The state's name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight; everything else is refused until it reports.
    HalfOpen,
}

/// Fails fast when A keeps failing: after `threshold` consecutive failed calls it opens and
/// refuses calls for `cooldown`; then it lets one probe through, which closes it on success
/// or re-opens it on failure. A threshold of 0 disables it.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// The breaker's answer to "may I call A?".
#[derive(Debug)]
pub enum Admission<'a> {
    /// Go ahead; report the outcome on the permit.
    Allowed(Permit<'a>),
    /// The circuit is open: do not call A. The next probe is allowed after `retry_in`.
    Refused {
        /// Time until the next probe may go.
        retry_in: Duration,
    },
}

/// Permission for one call. Report its outcome with [`Permit::record`]. A permit dropped
/// without a report (B's own caller hung up mid-call) says nothing about A's health: it is
/// not counted, and if it was the half-open probe, the next call becomes the probe, so a
/// lost probe can neither leave the breaker stuck half-open nor re-open it.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    reported: bool,
}

impl Permit<'_> {
    /// Reports whether A answered (any answer, a 401 included) or the call failed.
    pub fn record(mut self, succeeded: bool) {
        self.reported = true;
        self.breaker.record(succeeded);
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
    /// A breaker that opens after `threshold` consecutive failures (0: never) for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        metrics::gauge!(crate::metrics::CIRCUIT_STATE).set(CircuitState::Closed.gauge_value());
        Self {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go to A now.
    pub fn admit(&self) -> Admission<'_> {
        let allow = || {
            Admission::Allowed(Permit {
                breaker: self,
                reported: false,
            })
        };
        if self.threshold == 0 {
            return allow();
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => allow(),
            State::Open { until } if Instant::now() < until => Admission::Refused {
                retry_in: until - Instant::now(),
            },
            State::Open { .. } => {
                *state = State::HalfOpen;
                drop(state);
                transition(CircuitState::HalfOpen);
                allow()
            }
            State::HalfOpen => Admission::Refused {
                retry_in: Duration::ZERO,
            },
        }
    }

    fn record(&self, succeeded: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut state = self.lock();
        let changed = match (&mut *state, succeeded) {
            (
                State::Closed {
                    consecutive_failures,
                },
                true,
            ) => {
                *consecutive_failures = 0;
                None
            }
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) => {
                *consecutive_failures += 1;
                (*consecutive_failures >= self.threshold).then_some(CircuitState::Open)
            }
            (State::HalfOpen, true) => Some(CircuitState::Closed),
            (State::HalfOpen, false) => Some(CircuitState::Open),
            // A call admitted before the circuit opened, finishing late: already counted.
            (State::Open { .. }, _) => None,
        };
        if let Some(next) = changed {
            *state = match next {
                CircuitState::Open => State::Open {
                    until: Instant::now() + self.cooldown,
                },
                _ => State::Closed {
                    consecutive_failures: 0,
                },
            };
            drop(state);
            transition(next);
        }
    }

    /// A call ended without an outcome. Only a lost probe changes anything: the circuit goes
    /// back to open with its cool-down already over, so the next call probes at once.
    fn abandon(&self) {
        let mut state = self.lock();
        if matches!(*state, State::HalfOpen) {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Logs, counts and exports a state change.
fn transition(to: CircuitState) {
    match to {
        CircuitState::Open => tracing::warn!(event = "circuit_opened"),
        CircuitState::HalfOpen => tracing::info!(event = "circuit_half_open"),
        CircuitState::Closed => tracing::info!(event = "circuit_closed"),
    }
    metrics::counter!(crate::metrics::CIRCUIT_TRANSITIONS, "to" => to.as_str()).increment(1);
    metrics::gauge!(crate::metrics::CIRCUIT_STATE).set(to.gauge_value());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(breaker: &CircuitBreaker) -> Option<Permit<'_>> {
        match breaker.admit() {
            Admission::Allowed(permit) => Some(permit),
            Admission::Refused { .. } => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(1));
        for _ in 0..2 {
            allowed(&breaker).expect("closed").record(false);
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(allowed(&breaker).is_none(), "open: refused");

        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(allowed(&breaker).is_none(), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = allowed(&breaker).expect("one probe after the cool-down");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(allowed(&breaker).is_none(), "only one probe at a time");
        probe.record(true);
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(allowed(&breaker).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_a_success_resets_the_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(1));
        allowed(&breaker).expect("closed").record(false);
        allowed(&breaker).expect("closed").record(true);
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Closed, "not consecutive");
        allowed(&breaker).expect("closed").record(false);
        assert_eq!(breaker.state(), CircuitState::Open);

        tokio::time::advance(Duration::from_secs(1)).await;
        allowed(&breaker).expect("probe").record(false);
        assert_eq!(
            breaker.state(),
            CircuitState::Open,
            "probe failed: open again"
        );
        assert!(allowed(&breaker).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn callers_hanging_up_never_open_the_circuit() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(1));
        for _ in 0..100 {
            drop(allowed(&breaker).expect("closed"));
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_probe_lets_the_next_call_probe_at_once() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(1));
        allowed(&breaker).expect("closed").record(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(allowed(&breaker).expect("probe"));
        let next = allowed(&breaker).expect("the next call probes without another cool-down");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        next.record(true);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_opens() {
        let breaker = CircuitBreaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            allowed(&breaker).expect("disabled").record(false);
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_floor_lets_a_quiet_client_retry() {
        let budget = RetryBudget::new(0.2, 1.0, Duration::from_secs(10));
        budget.deposit();
        assert!(
            budget.try_withdraw(),
            "one call, one retry: within the floor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_at_the_ratio_plus_floor() {
        let budget = RetryBudget::new(0.2, 1.0, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 30, "0.2 × 100 calls + 1/s × 10 s");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(budget.try_withdraw(), "the window slid: the floor is back");
    }
}
