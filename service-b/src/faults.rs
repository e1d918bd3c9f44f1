//! Faults B plays on purpose at run time, when started with `--fault-listen` (loopback
//! only): the labs' misconfigured B, whose per-attempt timeout is set below A's normal
//! latency. `fault_injection_active{scenario}` shows what is on; a sealed fault (a mystery
//! lab's) shows there, in its log line and at `GET /faults` only as `sealed`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault switched on at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injected {
    /// Its name, for the gauge's label: 1–32 of `a-z0-9-`.
    pub scenario: String,
    /// The per-attempt timeout to use instead of `--provider-timeout-ms`, 1–60000 ms.
    #[serde(default)]
    pub provider_timeout_ms: Option<u64>,
    /// A mystery lab's fault: it acts as usual, but the gauge, the log line and `GET /faults`
    /// say only `sealed`, never its name or settings. A mystery lab switches one on in both
    /// services, so which service logs a fault says nothing either.
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
        if self
            .provider_timeout_ms
            .is_some_and(|ms| !(1..=60_000).contains(&ms))
        {
            return Err("provider_timeout_ms must be from 1 to 60000".into());
        }
        Ok(())
    }
}

/// `--fault`: the fault endpoint's JSON, switched on at start-up; empty for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupFault(pub Option<Injected>);

/// Parses `--fault` (`B_FAULT`).
pub fn parse_fault(text: &str) -> Result<StartupFault, String> {
    Switch::parse(text).map(StartupFault)
}

/// The switch of B's run-time faults.
pub type Switch = telemetry::faults::FaultSwitch<Injected>;

/// What a fault changes in B: the per-attempt timeout, and what a lab leaves behind.
pub trait Knobs: Send + Sync + 'static {
    /// Switches the per-attempt timeout (`None`: back to `--provider-timeout-ms`).
    fn set_timeout(&self, timeout: Option<Duration>);
    /// Forgets what past calls taught the breaker and the retry budget, so a lab's end
    /// leaves no open breaker or spent budget behind for the next.
    fn forget_past(&self);
}

/// A new switch: a fault sets the per-attempt timeout; clearing it (a lab's end) also
/// forgets what the calls under it taught the breaker and the budget.
pub fn switch(knobs: impl Knobs) -> Switch {
    Switch::new(move |fault: Option<&Injected>| {
        let timeout = fault.and_then(|f| f.provider_timeout_ms);
        knobs.set_timeout(timeout.map(Duration::from_millis));
        if fault.is_none() {
            knobs.forget_past();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    /// What the switch asked of B.
    #[derive(Debug, Default)]
    struct Seen {
        timeout: Mutex<Option<Duration>>,
        forgotten: Mutex<u32>,
    }

    impl Knobs for Arc<Seen> {
        fn set_timeout(&self, timeout: Option<Duration>) {
            *self.timeout.lock().expect("lock") = timeout;
        }
        fn forget_past(&self) {
            *self.forgotten.lock().expect("lock") += 1;
        }
    }

    #[test]
    fn a_sealed_fault_acts_the_same_and_its_end_forgets_the_past() {
        let seen = Arc::new(Seen::default());
        let switch = switch(seen.clone());
        let StartupFault(fault) =
            parse_fault(r#"{"scenario":"sealed","sealed":true,"provider_timeout_ms":15}"#)
                .expect("parses");
        switch.set(fault).expect("valid");
        assert_eq!(
            *seen.timeout.lock().expect("lock"),
            Some(Duration::from_millis(15))
        );
        assert_eq!(*seen.forgotten.lock().expect("lock"), 0);
        switch.set(None).expect("off");
        assert_eq!(*seen.timeout.lock().expect("lock"), None);
        assert_eq!(*seen.forgotten.lock().expect("lock"), 1, "a lab's end");
        assert!(parse_fault(r#"{"scenario":"x","provider_timeout_ms":0}"#).is_err());
    }
}
