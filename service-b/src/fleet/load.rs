//! How loaded an endpoint looks: the Peak-EWMA cost of Finagle, Linkerd and tower
//! (`tower::load::PeakEwma`): an estimate of its latency that jumps to any slower answer at
//! once and decays toward faster ones over [`DECAY`], plus a penalty for failures, times
//! the attempts in flight on it plus one.
//!
//! A failed attempt (a timeout, a refused or broken connection, a 5xx) is not a latency: it
//! adds a penalty of [`FAILURE_PENALTY`] that fades over [`PENALTY_DECAY`]. So an endpoint
//! that fails fast (a refused connection, a quick 503) never looks like the fastest one,
//! and one that timed out is left alone for a few seconds, then tried again: when it has
//! recovered, it gets its share back within seconds instead of after the long fade of a
//! one-second "latency".
//!
//! Why not tower's own: its estimate is reached only through a wrapped `Service`, whose
//! in-flight count is the number of response handles alive, and it has no way to record a
//! failure; B's attempt loop calls each endpoint's HTTP client directly.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// How fast the latency estimate forgets a slow answer: it decays toward faster ones with
/// this time constant. Finagle and Linkerd use 10 s; over replicas that answer within
/// milliseconds, one scheduling hiccup then steers calls away from a healthy replica for
/// half a minute, so B forgets faster (slowness that lasts is seen again at once: the
/// estimate takes any slower answer as it is).
pub const DECAY: Duration = Duration::from_secs(2);

/// Added to every endpoint's latency estimate in its cost: replicas a few milliseconds
/// apart cost about the same, so the attempts in flight decide between them, and a
/// millisecond of scheduling noise on one does not steer calls away from it; a replica
/// that is really slower (tens of milliseconds, or a timeout) still costs many times more.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(5);

/// What a failed attempt adds to an endpoint's cost: about B's per-attempt timeout, so a
/// failing endpoint looks as costly as a stalled one.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// How fast the penalty fades: after five of these (5 s) it weighs less than a fast answer.
pub const PENALTY_DECAY: Duration = Duration::from_secs(1);

/// The load of one endpoint: see the module docs.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU32,
    estimate: Mutex<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// The latency estimate, in seconds, as of `latency_at`.
    latency: f64,
    latency_at: Instant,
    /// The failure penalty, in seconds, as of `penalty_at`.
    penalty: f64,
    penalty_at: Instant,
}

impl Load {
    /// A load with no attempt in flight and a latency estimate of `initial` (an endpoint
    /// with no history starts as costly as the others, neither flooded nor starved).
    pub fn new(initial: Duration) -> Self {
        let now = Instant::now();
        Self {
            in_flight: AtomicU32::new(0),
            estimate: Mutex::new(Estimate {
                latency: initial.as_secs_f64(),
                latency_at: now,
                penalty: 0.0,
                penalty_at: now,
            }),
        }
    }

    /// The cost of sending one more attempt here: the latency estimate and the penalty as
    /// of now over a floor, times the attempts in flight plus one.
    pub fn cost(&self) -> f64 {
        let now = Instant::now();
        let e = *self.lock();
        let latency = decayed(e.latency, e.latency_at, 0.0, now, DECAY);
        let penalty = decayed(e.penalty, e.penalty_at, 0.0, now, PENALTY_DECAY);
        (LATENCY_FLOOR.as_secs_f64() + latency + penalty) * f64::from(self.in_flight() + 1)
    }

    /// The latency estimate as of now (no penalty, no attempts in flight).
    pub fn estimate(&self) -> Duration {
        let e = *self.lock();
        Duration::from_secs_f64(decayed(e.latency, e.latency_at, 0.0, Instant::now(), DECAY))
    }

    /// Attempts in flight here now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// An attempt starts here: counted in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// Records an attempt that got an answer after `took`.
    pub fn answered(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let now = Instant::now();
        let mut e = self.lock();
        e.latency = if seconds > e.latency {
            seconds
        } else {
            decayed(e.latency, e.latency_at, seconds, now, DECAY)
        };
        e.latency_at = now;
    }

    /// Records a failed attempt: the penalty, at full weight again.
    pub fn failed(&self) {
        let now = Instant::now();
        let mut e = self.lock();
        let left = decayed(e.penalty, e.penalty_at, 0.0, now, PENALTY_DECAY);
        e.penalty = left.max(FAILURE_PENALTY.as_secs_f64());
        e.penalty_at = now;
    }

    /// Starts afresh at `latency`, with no penalty (an endpoint back in the choice).
    pub fn reset(&self, latency: Duration) {
        let now = Instant::now();
        *self.lock() = Estimate {
            latency: latency.as_secs_f64(),
            latency_at: now,
            penalty: 0.0,
            penalty_at: now,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.estimate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `value`, set at `at`, moved toward `toward` by how long ago that was, with time constant
/// `tau`.
fn decayed(value: f64, at: Instant, toward: f64, now: Instant, tau: Duration) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    let keep = (-elapsed / tau.as_secs_f64()).exp();
    value * keep + toward * (1.0 - keep)
}

/// An attempt in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Load);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_counts_at_once_and_fades_over_the_decay() {
        let load = Load::new(2 * MS);
        load.answered(2 * MS);
        load.answered(900 * MS);
        assert_eq!(load.estimate(), 900 * MS, "the peak, at once");
        tokio::time::advance(DECAY).await;
        let faded = load.estimate();
        assert!(
            (330 * MS..=332 * MS).contains(&faded),
            "e⁻¹ of it after one decay: {faded:?}"
        );
        load.answered(2 * MS);
        let after = load.estimate();
        assert!(after < 900 * MS / 2, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_costs_a_second_and_is_forgotten_within_seconds() {
        let failing = Load::new(2 * MS);
        failing.failed();
        let healthy = Load::new(2 * MS);
        assert!(
            failing.cost() > 100.0 * healthy.cost(),
            "a refusal is no bargain"
        );
        tokio::time::advance(8 * PENALTY_DECAY).await;
        assert!(
            failing.cost() < 2.0 * healthy.cost(),
            "eight seconds on, it is worth a try: {} against {}",
            failing.cost(),
            healthy.cost()
        );
        assert_eq!(
            failing.estimate(),
            healthy.estimate(),
            "a failure is not a latency"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_multiply_the_cost() {
        let load = Load::new(2 * MS);
        let one = load.cost();
        let first = load.start();
        let second = load.start();
        assert_eq!(load.in_flight(), 2);
        assert!(
            (load.cost() - 3.0 * one).abs() < 1e-9,
            "two in flight: thrice the cost"
        );
        drop((first, second));
        assert!((load.cost() - one).abs() < 1e-9);
    }
}
