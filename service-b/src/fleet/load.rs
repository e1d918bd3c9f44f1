//! How loaded an endpoint looks: the Peak-EWMA cost of Finagle, Linkerd and tower
//! (`tower::load::PeakEwma`): an estimate of its latency that jumps to any slower call at
//! once and decays toward faster ones over [`DECAY`], times the calls in flight on it plus
//! one. A failed attempt counts as a call that took [`FAILURE_PENALTY`], so an endpoint that
//! fails fast (a refused connection, a quick 503) never looks like the fastest one.
//!
//! Why not tower's own: its estimate is reached only through a wrapped `Service`, whose
//! in-flight count is the number of response handles alive, and it has no way to record a
//! failure as slow; B's attempt loop calls each endpoint's HTTP client directly.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// How fast the estimate forgets a slow call: it decays toward faster observations with this
/// time constant (Finagle's and Linkerd's default).
pub const DECAY: Duration = Duration::from_secs(10);

/// What a failed attempt counts as: a call this slow. A second, the order of B's per-attempt
/// timeout, so a failing endpoint looks as costly as a stalled one.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The load of one endpoint: its latency estimate and the attempts in flight on it.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU32,
    estimate: Mutex<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// The latency estimate, in seconds.
    seconds: f64,
    /// When it was last updated.
    at: Instant,
}

impl Load {
    /// A load with no attempt in flight and an estimate of `initial` (an endpoint with no
    /// history starts as costly as the others, neither flooded nor starved).
    pub fn new(initial: Duration) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            estimate: Mutex::new(Estimate {
                seconds: initial.as_secs_f64(),
                at: Instant::now(),
            }),
        }
    }

    /// The cost of sending one more attempt here: the estimate as of now, times the attempts
    /// in flight plus one.
    pub fn cost(&self) -> f64 {
        let now = Instant::now();
        let estimate = *self.lock();
        decayed(estimate, 0.0, now) * f64::from(self.in_flight.load(Relaxed) + 1)
    }

    /// The latency estimate as of now, without the calls in flight.
    pub fn estimate(&self) -> Duration {
        let estimate = *self.lock();
        Duration::from_secs_f64(decayed(estimate, 0.0, Instant::now()))
    }

    /// An attempt starts here: counted in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// Records an attempt that took `took` (or failed: see [`FAILURE_PENALTY`]).
    pub fn observe(&self, took: Duration, failed: bool) {
        let took = if failed {
            took.max(FAILURE_PENALTY)
        } else {
            took
        };
        let seconds = took.as_secs_f64();
        let now = Instant::now();
        let mut estimate = self.lock();
        estimate.seconds = if seconds > estimate.seconds {
            seconds
        } else {
            decayed(*estimate, seconds, now)
        };
        estimate.at = now;
    }

    /// Starts afresh at `estimate` (an endpoint back from ejection).
    pub fn reset(&self, estimate: Duration) {
        *self.lock() = Estimate {
            seconds: estimate.as_secs_f64(),
            at: Instant::now(),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.estimate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The estimate moved toward `toward` by how long ago it was last updated.
fn decayed(estimate: Estimate, toward: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(estimate.at).as_secs_f64();
    let keep = (-elapsed / DECAY.as_secs_f64()).exp();
    estimate.seconds * keep + toward * (1.0 - keep)
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
    async fn a_slow_call_counts_at_once_and_fades_over_the_decay() {
        let load = Load::new(2 * MS);
        load.observe(2 * MS, false);
        load.observe(900 * MS, false);
        assert_eq!(load.estimate(), 900 * MS, "the peak, at once");
        tokio::time::advance(DECAY).await;
        let faded = load.estimate();
        assert!(
            (330 * MS..=332 * MS).contains(&faded),
            "e⁻¹ of it after one decay: {faded:?}"
        );
        load.observe(2 * MS, false);
        let after = load.estimate();
        assert!(
            after < 900 * MS / 2,
            "a fast call a decay later keeps it near the faded peak: {after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_failure_looks_slow_and_calls_in_flight_add_up() {
        let failing = Load::new(2 * MS);
        failing.observe(MS / 2, true);
        let healthy = Load::new(2 * MS);
        healthy.observe(2 * MS, false);
        assert!(
            failing.cost() > 100.0 * healthy.cost(),
            "a refusal is no bargain"
        );

        let one = healthy.cost();
        let first = healthy.start();
        let second = healthy.start();
        assert!(
            (healthy.cost() - 3.0 * one).abs() < 1e-9,
            "two in flight: thrice the cost"
        );
        drop((first, second));
        assert!((healthy.cost() - one).abs() < 1e-9);
    }
}
