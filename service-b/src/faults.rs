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

/// A new switch; a fault sets the per-attempt timeout through `set_timeout` (`None`:
/// back to `--provider-timeout-ms`).
pub fn switch(set_timeout: impl Fn(Option<Duration>) + Send + Sync + 'static) -> Switch {
    Switch::new(move |fault: Option<&Injected>| {
        let timeout = fault.and_then(|f| f.provider_timeout_ms);
        set_timeout(timeout.map(Duration::from_millis));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_fault_acts_the_same() {
        let timeout = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = timeout.clone();
        let switch = switch(move |t| *seen.lock().expect("lock") = t);
        let StartupFault(fault) =
            parse_fault(r#"{"scenario":"sealed","sealed":true,"provider_timeout_ms":15}"#)
                .expect("parses");
        switch.set(fault).expect("valid");
        assert_eq!(
            *timeout.lock().expect("lock"),
            Some(Duration::from_millis(15))
        );
        switch.set(None).expect("off");
        assert_eq!(*timeout.lock().expect("lock"), None);
        assert!(parse_fault(r#"{"scenario":"x","provider_timeout_ms":0}"#).is_err());
    }
}
