//! What stops B's retries from making an outage worse: a retry budget and a circuit breaker.
//! Both are small state machines on Tokio's clock, so their tests run on paused time. They
//! record nothing themselves: the breaker returns its state changes, and
//! [`provider`](crate::provider), which wires both into the call to A, logs and counts them.

mod breaker;
mod budget;

use telemetry::edge::SlidingWindow;

pub use breaker::{Admission, BreakerPolicy, CircuitBreaker, CircuitState, Evidence, Permit};
pub use budget::RetryBudget;

/// Slots a window of the budget and of the breaker is cut into: a call counts until the
/// window has passed since its slot began.
pub(crate) const WINDOW_SLOTS: usize = 10;

/// Calls, and something about them (retries for the budget, failures for the breaker),
/// within one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallsAnd {
    pub(crate) calls: u32,
    pub(crate) of_which: u32,
}

/// The totals of a window of [`CallsAnd`].
pub(crate) fn totals(window: &SlidingWindow<CallsAnd, WINDOW_SLOTS>) -> CallsAnd {
    window
        .iter()
        .fold(CallsAnd::default(), |sum, (_, slot)| CallsAnd {
            calls: sum.calls + slot.calls,
            of_which: sum.of_which + slot.of_which,
        })
}
