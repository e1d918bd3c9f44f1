//! What stops B's retries from making an outage worse: a retry budget and a circuit breaker.
//! Both are small state machines on Tokio's clock, so their tests run on paused time. They
//! record nothing themselves: the breaker returns its state changes, and
//! [`provider`](crate::provider), which wires both into the call to A, logs and counts them.

mod breaker;
mod budget;

use telemetry::window::SlidingWindow;

pub use breaker::{Admission, BreakerPolicy, CircuitBreaker, CircuitState, Evidence, Permit};
pub use budget::RetryBudget;

/// Slots a window of the budget and of the breaker is cut into: a call counts until the
/// window has passed since its slot began.
pub(crate) const WINDOW_SLOTS: usize = 10;

/// Calls in one slot of a window, and how many of them failed (the breaker, and each
/// endpoint's ejection record, judge by these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Judged {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
}

/// The totals of a window of [`Judged`] slots.
pub(crate) fn totals<const S: usize>(window: &SlidingWindow<Judged, S>) -> Judged {
    window
        .iter()
        .fold(Judged::default(), |sum, (_, slot)| Judged {
            calls: sum.calls + slot.calls,
            failures: sum.failures + slot.failures,
        })
}
