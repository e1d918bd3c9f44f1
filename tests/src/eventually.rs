//! The one way the tests wait: a bounded poll. A probe is asked every so often (10 ms
//! unless told) until it says done or the time is up (the harness's [`TIMEOUT`] unless
//! told); then the test fails naming what never happened and what the probe last saw.
//!
//! ```ignore
//! eventually("A stops listening").until(|| !listening(addr));
//! let value = eventually("the counter reaches 3")
//!     .until_async(async || {
//!         let v = a.series("x").await;
//!         if v >= 3.0 { Ok(v) } else { Err(v) }
//!     })
//!     .await;
//! ```
//!
//! A probe answers with a `bool`, an `Option` (done with `Some`) or a `Result` (done with
//! `Ok`; the `Err` is what it saw, shown if the time runs out).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::TIMEOUT;

/// What one look of a probe found: done (with a value), or not yet (with what it saw).
pub trait Probe {
    /// The value a finished wait returns.
    type Output;
    /// Done, or what was seen instead.
    fn settle(self) -> Result<Self::Output, String>;
}

impl Probe for bool {
    type Output = ();
    fn settle(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Probe for Option<T> {
    type Output = T;
    fn settle(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: Debug> Probe for Result<T, E> {
    type Output = T;
    fn settle(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:?}"))
    }
}

/// A wait to be run: what it waits for, how long at most, how often it looks.
#[derive(Debug, Clone)]
#[must_use = "a wait does nothing until `until` or `until_async` runs it"]
pub struct Eventually {
    what: String,
    within: Duration,
    every: Duration,
}

/// A wait for `what` (said in the failure message): at most [`TIMEOUT`], looking every 10 ms.
pub fn eventually(what: impl Into<String>) -> Eventually {
    Eventually {
        what: what.into(),
        within: TIMEOUT,
        every: Duration::from_millis(10),
    }
}

/// Why a wait ended without its probe saying done.
#[derive(Debug, Clone)]
pub struct TimedOut {
    /// The message: what never happened, how long was waited, what was seen last.
    pub message: String,
    /// What the probe saw last.
    pub last: String,
}

impl Eventually {
    /// Waits at most `within`.
    pub fn within(mut self, within: Duration) -> Self {
        self.within = within;
        self
    }

    /// Looks every `every`.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    fn timed_out(&self, last: String) -> TimedOut {
        TimedOut {
            message: format!(
                "waited {:?} for {}, and it never happened; last seen: {last}",
                self.within, self.what
            ),
            last,
        }
    }

    /// Polls `probe`, sleeping the thread in between, until it is done; the error says what
    /// it saw last. For a caller that wants to fail with more than that.
    pub fn try_until<P: Probe>(&self, mut probe: impl FnMut() -> P) -> Result<P::Output, TimedOut> {
        let deadline = Instant::now() + self.within;
        loop {
            match probe().settle() {
                Ok(done) => return Ok(done),
                Err(seen) if Instant::now() >= deadline => return Err(self.timed_out(seen)),
                Err(_) => std::thread::sleep(self.every),
            }
        }
    }

    /// Polls `probe`, sleeping the thread in between, until it is done; panics when the
    /// time is up.
    #[track_caller]
    pub fn until<P: Probe>(self, probe: impl FnMut() -> P) -> P::Output {
        match self.try_until(probe) {
            Ok(done) => done,
            Err(timed_out) => panic!("{}", timed_out.message),
        }
    }

    /// Polls the async `probe`, sleeping the task in between, until it is done; panics when
    /// the time is up.
    pub async fn until_async<P: Probe>(self, mut probe: impl AsyncFnMut() -> P) -> P::Output {
        let deadline = Instant::now() + self.within;
        loop {
            match probe().await.settle() {
                Ok(done) => return done,
                Err(seen) if Instant::now() >= deadline => {
                    panic!("{}", self.timed_out(seen).message)
                }
                Err(_) => tokio::time::sleep(self.every).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_that_is_done_at_once_returns_its_value() {
        assert_eq!(eventually("a value").until(|| Some(7)), 7);
    }

    #[test]
    fn a_probe_is_asked_again_until_it_is_done() {
        let mut asked = 0;
        eventually("the third look")
            .every(Duration::from_millis(1))
            .until(|| {
                asked += 1;
                asked == 3
            });
        assert_eq!(asked, 3);
    }

    #[test]
    fn the_failure_names_what_never_happened_and_the_last_value_seen() {
        let mut n = 0;
        let failed = eventually("the counter to reach 1000")
            .within(Duration::from_millis(30))
            .every(Duration::from_millis(1))
            .try_until(|| {
                n += 1;
                if n >= 1000 { Ok(n) } else { Err(n) }
            })
            .expect_err("times out");
        assert!(
            failed.message.contains("the counter to reach 1000"),
            "{failed:?}"
        );
        assert_eq!(failed.last, n.to_string());
    }

    #[tokio::test]
    async fn an_async_probe_is_polled_too() {
        let mut asked = 0;
        let got = eventually("an async value")
            .every(Duration::from_millis(1))
            .until_async(async || {
                asked += 1;
                (asked >= 2).then_some(asked)
            })
            .await;
        assert_eq!(got, 2);
    }
}
