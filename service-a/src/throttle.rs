//! Brute-force protection for `/token`: after too many failed logins for one username within
//! a window, that username is refused with 429 and `Retry-After` until the oldest failure
//! leaves the window. Other users are unaffected; a successful login clears the count.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Most usernames tracked at once, so a spray of made-up names cannot exhaust memory. When
/// full, expired entries are dropped; if it is still full, new names are not tracked.
const MAX_TRACKED: usize = 10_000;

/// Failed logins per username over a sliding window.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// Refuse a username after `max_failures` failures within `window` (0: never).
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when `username` is throttled.
    pub fn check(&self, username: &str) -> Result<(), Duration> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let mut failures = self.lock();
        let Some(times) = failures.get_mut(username) else {
            return Ok(());
        };
        let now = Instant::now();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= self.max_failures as usize => {
                Err(self.window - now.duration_since(*oldest))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn record_failure(&self, username: &str) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = self.lock();
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED && !failures.contains_key(username) {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let times = failures.entry(username.to_owned()).or_default();
        times.push_back(now);
        while times.len() > self.max_failures as usize {
            times.pop_front();
        }
    }

    /// Clears a username's failures after a successful login.
    pub fn record_success(&self, username: &str) {
        if self.max_failures > 0 {
            self.lock().remove(username);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_eleventh_attempt_within_the_window_is_refused_until_it_slides() {
        let throttle = LoginThrottle::new(10, Duration::from_secs(60));
        for _ in 0..10 {
            assert!(throttle.check("divya").is_ok());
            throttle.record_failure("divya");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let retry_after = throttle.check("divya").expect_err("throttled");
        assert_eq!(
            retry_after,
            Duration::from_secs(50),
            "until the first failure is 60 s old"
        );
        assert!(
            throttle.check("alice").is_ok(),
            "other users are unaffected"
        );

        tokio::time::advance(retry_after).await;
        assert!(throttle.check("divya").is_ok(), "the window slid");
    }

    #[tokio::test(start_paused = true)]
    async fn success_clears_and_zero_disables() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        throttle.record_failure("divya");
        throttle.record_success("divya");
        throttle.record_failure("divya");
        assert!(throttle.check("divya").is_ok());

        let off = LoginThrottle::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            off.record_failure("divya");
        }
        assert!(off.check("divya").is_ok());
    }
}
