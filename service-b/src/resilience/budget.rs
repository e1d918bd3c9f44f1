//! The retry budget: see [`RetryBudget`].

use std::sync::Mutex;
use std::time::Duration;

use telemetry::window::{SlidingWindow, SlotClock};

use super::WINDOW_SLOTS;

/// Calls, and the retries among them, in one slot of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spent {
    calls: u32,
    retries: u32,
}

/// Caps retries at a share of recent calls (Finagle's and Linkerd's retry budget): over a
/// sliding `window`, retries may not exceed `ratio` × calls + `min_per_sec` × window. The
/// floor lets a quiet client (one curl at a time) still retry; the ratio stops a busy one
/// from doubling its load on a provider that is already failing.
/// Why not tower's `TpsBudget`: docs/failure-modes.md, "A retry budget".
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    clock: SlotClock,
    /// Calls and retries per tenth of the window.
    counts: Mutex<SlidingWindow<Spent, WINDOW_SLOTS>>,
}

impl RetryBudget {
    /// A budget of `ratio` retries per call, plus `min_per_sec`, over `window`.
    pub fn new(ratio: f64, min_per_sec: f64, window: Duration) -> Self {
        Self {
            ratio: ratio.max(0.0),
            reserve: min_per_sec.max(0.0) * window.as_secs_f64(),
            clock: SlotClock::new(window / WINDOW_SLOTS as u32),
            counts: Mutex::default(),
        }
    }

    /// Records a call (every call earns the budget `ratio` retries).
    pub fn deposit(&self) {
        let now = self.clock.now();
        self.lock().at(now).calls += 1;
    }

    /// Takes one retry from the budget; `false` when it is spent. The check and the take
    /// happen under one lock: two retries racing for the last unit cannot both get it.
    pub fn try_withdraw(&self) -> bool {
        let now = self.clock.now();
        let mut counts = self.lock();
        counts.advance(now);
        let Spent { calls, retries } =
            counts
                .iter()
                .fold(Spent::default(), |sum, (_, slot)| Spent {
                    calls: sum.calls + slot.calls,
                    retries: sum.retries + slot.retries,
                });
        let allowed = self.reserve + self.ratio * f64::from(calls) - f64::from(retries) >= 1.0;
        if allowed {
            counts.at(now).retries += 1;
        }
        allowed
    }

    /// Forgets every call and retry so far.
    pub fn reset(&self) {
        *self.lock() = SlidingWindow::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlidingWindow<Spent, WINDOW_SLOTS>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racing_retries_never_overdraw_the_budget() {
        // A reserve of 10 retries and nothing earned: exactly 10 of 64 racing retries go.
        let budget = std::sync::Arc::new(RetryBudget::new(0.0, 1.0, Duration::from_secs(10)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..8).filter(|_| budget.try_withdraw()).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(granted, 10);
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
