//! Faults B plays on purpose at run time, when started with `--fault-listen` (loopback
//! only): the labs' misconfigured B, whose per-attempt timeout is set below A's normal
//! latency. `fault_injection_active{scenario}` shows what is on; a sealed fault (a mystery
//! lab's) shows there, in its log line and at `GET /faults` only as `sealed`.

use std::sync::RwLock;
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

/// `--fault`: the fault endpoint's JSON, switched on at start-up; empty for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupFault(pub Option<Injected>);

/// Parses `--fault` (`B_FAULT`).
pub fn parse_fault(text: &str) -> Result<StartupFault, String> {
    if text.trim().is_empty() {
        return Ok(StartupFault(None));
    }
    let fault: Injected = serde_json::from_str(text).map_err(|e| format!("not a fault: {e}"))?;
    telemetry::faults::check_name(&fault.scenario)?;
    if fault
        .provider_timeout_ms
        .is_some_and(|ms| !(1..=60_000).contains(&ms))
    {
        return Err("provider_timeout_ms must be from 1 to 60000".into());
    }
    Ok(StartupFault(Some(fault)))
}

/// Sets (or, with `None`, restores) the per-attempt timeout of B's client for A.
type SetTimeout = Box<dyn Fn(Option<Duration>) + Send + Sync>;

/// What is switched on, and what it acts on.
pub struct FaultSwitch {
    set_timeout: SetTimeout,
    injected: RwLock<Option<Injected>>,
    scenarios: telemetry::faults::Scenarios,
}

impl FaultSwitch {
    /// Nothing switched on yet; `set_timeout` changes the client's per-attempt timeout.
    pub fn new(set_timeout: impl Fn(Option<Duration>) + Send + Sync + 'static) -> Self {
        Self {
            set_timeout: Box::new(set_timeout),
            injected: RwLock::new(None),
            scenarios: telemetry::faults::Scenarios::default(),
        }
    }

    /// Switches `fault` on (`None`: off), and says so in the gauge and the log.
    pub fn set(&self, fault: Option<Injected>) -> Result<(), String> {
        let timeout = fault.as_ref().and_then(|f| f.provider_timeout_ms);
        if timeout.is_some_and(|ms| !(1..=60_000).contains(&ms)) {
            return Err("provider_timeout_ms must be from 1 to 60000".into());
        }
        let mut injected = self.injected.write().unwrap_or_else(|p| p.into_inner());
        self.scenarios.switch(
            fault
                .as_ref()
                .map(|f| telemetry::faults::shown_name(&f.scenario, f.sealed)),
        )?;
        (self.set_timeout)(timeout.map(Duration::from_millis));
        match &fault {
            Some(fault) if fault.sealed => telemetry::event!(
                WARN,
                "fault_injected",
                scenario = telemetry::faults::SEALED,
                sealed = true
            ),
            Some(fault) => telemetry::event!(WARN, "fault_injected", scenario = %fault.scenario,
                provider_timeout_ms = fault.provider_timeout_ms),
            None => telemetry::event!(INFO, "fault_cleared"),
        }
        *injected = fault;
        Ok(())
    }
}

impl std::fmt::Debug for FaultSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultSwitch")
            .field("injected", &self.injected)
            .finish_non_exhaustive()
    }
}

impl telemetry::faults::Switch for FaultSwitch {
    type Fault = Injected;

    fn current(&self) -> Option<Injected> {
        self.injected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, fault: Option<Injected>) -> Result<(), String> {
        FaultSwitch::set(self, fault)
    }

    fn is_sealed(fault: &Injected) -> bool {
        fault.sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_sealed_fault_acts_the_same() {
        let timeout = Arc::new(Mutex::new(None));
        let seen = timeout.clone();
        let switch = FaultSwitch::new(move |t| *seen.lock().expect("lock") = t);
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
    }
}
