//! Faults A plays on purpose, to be a slow or flaky provider: the teaching flags
//! (`--extra-latency-ms`, `--failure-rate`) and, when A is started with `--fault-listen`,
//! faults switched on and off at run time through a small endpoint on loopback (the labs
//! use it). Whatever is on shows as `fault_injection_active{scenario}`; a sealed fault (a
//! mystery lab's) shows there, in its log line and at `GET /faults` only as `sealed`.
//!
//! The endpoint (`GET`, `PUT`, `DELETE /faults`) exists only with the flag, listens only on
//! a loopback address, and is not part of A's API: it is how a teacher's or a test's tools
//! break A, never how a caller does. Clearing a fault there (`DELETE /faults`, what `lab
//! stop` sends) also clears the login throttle: a lab leaves no user throttled behind it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::throttle::LoginThrottle;

/// What the flags set, for the whole life of the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Added to every token request's wait.
    pub extra_latency: Duration,
    /// Share of token requests answered with an injected 503.
    pub failure_rate: f64,
    /// Whether a request may ask for a failure itself (`fail_status`).
    pub allow_fail_status: bool,
}

/// A fault switched on at run time; it replaces the flags' latency and failure rate while on.
/// `down` unplugs A: its port stops answering (connections are closed unanswered), as if A
/// were gone, until the fault is cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injected {
    /// Its name, for the gauge's label: 1–32 of `a-z0-9-`.
    pub scenario: String,
    /// Added to every token request's wait, in milliseconds.
    #[serde(default)]
    pub extra_latency_ms: u64,
    /// Share of token requests (0.0–1.0) that wait `slow_ms` more.
    #[serde(default)]
    pub slow_share: f64,
    /// How much more those wait, in milliseconds.
    #[serde(default)]
    pub slow_ms: u64,
    /// Share of token requests (0.0–1.0) answered with an injected 503.
    #[serde(default)]
    pub failure_rate: f64,
    /// A's port closes every connection unanswered: A is down.
    #[serde(default)]
    pub down: bool,
    /// A mystery lab's fault: it acts as usual, but the gauge, the log line and `GET /faults`
    /// say only `sealed`, never its name or settings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
}

impl telemetry::faults::Fault for Injected {
    fn scenario(&self) -> &str {
        &self.scenario
    }

    fn sealed(&self) -> bool {
        self.sealed
    }

    fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.slow_share) || !(0.0..=1.0).contains(&self.failure_rate) {
            return Err("slow_share and failure_rate must be from 0.0 to 1.0".into());
        }
        if self.extra_latency_ms > 600_000 || self.slow_ms > 600_000 {
            return Err("latencies must be at most 600000 ms".into());
        }
        Ok(())
    }
}

/// `--fault`: the fault endpoint's JSON, switched on at start-up; empty for none.
#[derive(Debug, Clone, PartialEq)]
pub struct StartupFault(pub Option<Injected>);

/// Parses `--fault` (`A_FAULT`).
pub fn parse_fault(text: &str) -> Result<StartupFault, String> {
    Switch::parse(text).map(StartupFault)
}

/// The switch of A's run-time faults.
pub type Switch = telemetry::faults::FaultSwitch<Injected>;

/// A new switch: a fault that says A is down pulls `plug`, and clearing the fault clears
/// `throttle` (the failures a lab's guessing traffic left are forgotten).
pub fn switch(plug: telemetry::faults::Plug, throttle: Arc<LoginThrottle>) -> Switch {
    Switch::new(move |fault: Option<&Injected>| {
        plug.set_unplugged(fault.is_some_and(|f| f.down));
        if fault.is_none() {
            throttle.clear();
        }
    })
}

/// One token request's share of the faults: how long to wait on top of `delay_ms`, and
/// whether to answer an injected 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Added to the request's wait.
    pub extra: Duration,
    /// Answer 503 instead of a token.
    pub fail: bool,
}

/// The flags' faults and the one switched on at run time, if any.
#[derive(Debug)]
pub struct Teaching {
    flags: Faults,
    switch: Arc<Switch>,
}

impl Teaching {
    /// The faults of `flags`, and those `switch` turns on.
    pub fn new(flags: Faults, switch: Arc<Switch>) -> Self {
        Self { flags, switch }
    }

    /// What the flags set.
    pub fn flags(&self) -> Faults {
        self.flags
    }

    /// Draws one token request's faults.
    pub fn draw(&self) -> Draw {
        let (extra, failure_rate) = self.switch.read(|injected| match injected {
            None => (self.flags.extra_latency, self.flags.failure_rate),
            Some(fault) => {
                let slow = fault.slow_share > 0.0 && fastrand::f64() < fault.slow_share;
                let slow_ms = if slow { fault.slow_ms } else { 0 };
                (
                    Duration::from_millis(fault.extra_latency_ms.saturating_add(slow_ms)),
                    fault.failure_rate,
                )
            }
        });
        Draw {
            extra,
            fail: failure_rate > 0.0 && fastrand::f64() < failure_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(scenario: &str) -> Injected {
        Injected {
            scenario: scenario.into(),
            extra_latency_ms: 0,
            slow_share: 0.0,
            slow_ms: 0,
            failure_rate: 0.0,
            down: false,
            sealed: false,
        }
    }

    fn teaching(flags: Faults) -> (Teaching, Arc<Switch>) {
        let throttle = Arc::new(LoginThrottle::new(10, Duration::from_secs(60)));
        let switch = Arc::new(switch(telemetry::faults::Plug::default(), throttle));
        (Teaching::new(flags, switch.clone()), switch)
    }

    #[tokio::test(start_paused = true)]
    async fn clearing_a_fault_clears_the_login_throttle() {
        let throttle = Arc::new(LoginThrottle::new(1, Duration::from_secs(60)));
        let switch = switch(telemetry::faults::Plug::default(), throttle.clone());
        throttle.begin("divya").expect("the first guess").failed();
        assert!(throttle.begin("divya").is_err(), "throttled");
        switch.set(Some(fault("a-slow"))).expect("valid");
        assert!(
            throttle.begin("divya").is_err(),
            "switching a fault on clears nothing"
        );
        switch.set(None).expect("off");
        drop(throttle.begin("divya").expect("cleared with the fault"));
    }

    #[test]
    fn an_injected_fault_replaces_the_flags_until_cleared() {
        let (knobs, switch) = teaching(Faults {
            extra_latency: Duration::from_millis(5),
            ..Faults::default()
        });
        assert_eq!(knobs.draw().extra, Duration::from_millis(5));
        let mut slow = fault("a-slow");
        slow.extra_latency_ms = 300;
        switch.set(Some(slow.clone())).expect("valid");
        assert_eq!(switch.current(), Some(slow));
        assert_eq!(knobs.draw().extra, Duration::from_millis(300));
        let mut failing = fault("a-flaky");
        failing.failure_rate = 1.0;
        switch.set(Some(failing)).expect("valid");
        assert!(knobs.draw().fail);
        switch.set(None).expect("off");
        assert_eq!(knobs.draw().extra, Duration::from_millis(5));
        assert!(!knobs.draw().fail);
    }

    #[test]
    fn a_sealed_fault_acts_the_same() {
        let (knobs, switch) = teaching(Faults::default());
        let mut sealed = fault("anything");
        sealed.extra_latency_ms = 300;
        sealed.sealed = true;
        switch.set(Some(sealed)).expect("valid");
        assert_eq!(knobs.draw().extra, Duration::from_millis(300));
        let parsed = parse_fault(r#"{"scenario":"sealed","sealed":true,"failure_rate":1.0}"#)
            .expect("parses");
        assert!(parsed.0.is_some_and(|f| f.sealed && f.failure_rate == 1.0));
        // Unsealed faults serialise as before, without the flag.
        let open = serde_json::to_value(fault("a-slow")).expect("JSON");
        assert!(open.get("sealed").is_none(), "{open}");
    }

    #[test]
    fn nonsense_is_refused() {
        let (_, switch) = teaching(Faults::default());
        assert!(switch.set(Some(fault("Bad Name"))).is_err());
        let mut share = fault("x");
        share.slow_share = 1.5;
        assert!(switch.set(Some(share)).is_err());
        assert_eq!(switch.current(), None);
    }
}
