//! The traffic generator's pieces that deserve tests of their own: the scenario mix, the
//! order requests are sent in, and the latency summary.

use std::time::Duration;

/// One of the lab's scenarios, as a request to B's `/protected-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Correct credentials, no delay: 200.
    Success,
    /// Wrong password: 401, one attempt, no retry.
    WrongPassword,
    /// A slow provider within B's timeout: 200, slowly.
    Slow,
    /// A provider slower than B's timeout: 503 after every attempt times out.
    Timeout,
}

impl Scenario {
    /// Every scenario, in display order.
    pub const ALL: [Self; 4] = [
        Self::Success,
        Self::WrongPassword,
        Self::Slow,
        Self::Timeout,
    ];

    /// Its name in `--mix`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::WrongPassword => "wrong_password",
            Self::Slow => "slow",
            Self::Timeout => "timeout",
        }
    }

    /// The JSON body B gets for request number `n`. `slow_ms` and `timeout_ms` are the
    /// `delay_ms` of the two slow scenarios.
    ///
    /// Wrong passwords go to one of [`GUESSED_USERS`] names in turn, never to the demo
    /// user: A throttles a username after 10 failed logins a minute, and a steady trickle of
    /// wrong passwords for `divya` would soon have every scenario answered 429. A name A does
    /// not know gets the same 401, by the same code path, as a wrong password.
    /// `guess_user` sends every wrong password to that one username instead (a brute-force
    /// run, which A's throttle answers with 429).
    pub fn body(
        self,
        n: u64,
        slow_ms: u64,
        timeout_ms: u64,
        guess_user: Option<&str>,
    ) -> serde_json::Value {
        let mut body =
            serde_json::json!({"username": "divya", "password": "pass123", "action": "ping"});
        match self {
            Self::Success => {}
            Self::WrongPassword => {
                body["username"] = match guess_user {
                    Some(user) => user.to_owned(),
                    None => format!("guest-{}", n % GUESSED_USERS),
                }
                .into();
                body["password"] = "wrong".into();
            }
            Self::Slow => body["delay_ms"] = slow_ms.into(),
            Self::Timeout => body["delay_ms"] = timeout_ms.into(),
        }
        body
    }
}

/// How many usernames the wrong passwords are spread over: at 10% of 1,000 requests a
/// second, each gets about 6 a minute, under A's default throttle of 10.
pub const GUESSED_USERS: u64 = 1024;

/// Weights per scenario, parsed from `success=70,wrong_password=10,slow=15,timeout=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(Vec<(Scenario, u32)>);

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let scenario = Scenario::ALL
                .into_iter()
                .find(|s| s.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!("unknown scenario {name:?}; known: {}", names.join(", "))
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: weight must be a whole number"))?;
            if weight > 0 {
                weights.push((scenario, weight));
            }
        }
        if weights.is_empty() {
            return Err("the mix needs at least one scenario with a weight above 0".into());
        }
        Ok(Self(weights))
    }
}

impl Mix {
    /// Scenarios in sending order: smooth weighted round-robin (nginx's algorithm), so every
    /// stretch of requests has the mix's proportions, with no randomness to make a short
    /// run unrepresentative.
    pub fn schedule(&self) -> impl Iterator<Item = Scenario> + '_ {
        let total: i64 = self.0.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut current = vec![0i64; self.0.len()];
        std::iter::repeat_with(move || {
            for (c, (_, w)) in current.iter_mut().zip(&self.0) {
                *c += i64::from(*w);
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            self.0[best].0
        })
    }
}

/// The value below which `q` (0–1) of `sorted` falls, nearest-rank.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passwords_never_lock_out_the_demo_user() {
        let names: std::collections::HashSet<String> = (0..2 * GUESSED_USERS)
            .map(|n| Scenario::WrongPassword.body(n, 0, 0, None)["username"].to_string())
            .collect();
        assert_eq!(names.len() as u64, GUESSED_USERS);
        assert!(!names.contains("\"divya\""));
        assert_eq!(Scenario::Success.body(7, 0, 0, None)["username"], "divya");
        let guess = Scenario::WrongPassword.body(7, 0, 0, Some("divya"));
        assert_eq!(guess["username"], "divya");
    }

    #[test]
    fn the_mix_parses_and_refuses_nonsense() {
        let mix: Mix = "success=3, timeout=1".parse().expect("parses");
        assert_eq!(mix.0, vec![(Scenario::Success, 3), (Scenario::Timeout, 1)]);
        assert!("bogus=1".parse::<Mix>().is_err());
        assert!("success".parse::<Mix>().is_err());
        assert!("success=x".parse::<Mix>().is_err());
        assert!("success=0".parse::<Mix>().is_err());
    }

    #[test]
    fn the_schedule_keeps_the_proportions_in_every_window() {
        let mix: Mix = "success=70,wrong_password=10,slow=15,timeout=5"
            .parse()
            .expect("parses");
        let first: Vec<Scenario> = mix.schedule().take(100).collect();
        let count = |s| first.iter().filter(|x| **x == s).count();
        assert_eq!(count(Scenario::Success), 70);
        assert_eq!(count(Scenario::WrongPassword), 10);
        assert_eq!(count(Scenario::Slow), 15);
        assert_eq!(count(Scenario::Timeout), 5);
        let twenty: Vec<Scenario> = mix.schedule().take(20).collect();
        assert!(
            twenty.contains(&Scenario::Timeout),
            "a short run still sees every scenario"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
