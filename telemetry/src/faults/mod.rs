//! The labs' ways to break a service on purpose, which a service adds only when asked to
//! (`--fault-listen`, `--fault`): a [`FaultSwitch`] holding the fault switched on now, the
//! fault [`endpoint`] that switches it at run time, and [`unplug`], which takes a service's
//! port down. Each service says what its faults are ([`Fault`]) and what switching one does;
//! what shows is the same for both: the `fault_injection_active{scenario}` gauge and the
//! `fault_injected` / `fault_cleared` log lines.
//!
//! A fault may be *sealed* (`"sealed": true`, what a mystery lab sends): it acts exactly as
//! the same fault unsealed, but everything a student reads while diagnosing (the gauge's
//! label, the `fault_injected` log line, `GET /faults`) says only that a sealed fault is on,
//! never its name or its settings.

pub mod endpoint;
pub mod unplug;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

pub use endpoint::{ListenError, router};
pub use unplug::{Plug, Pluggable};

/// The gauge of what is injected now: 1 for the active scenario, 0 for the others seen.
pub const ACTIVE: &str = "fault_injection_active";

/// At most this many scenario names over a process's life: each is a label value.
pub const MAX_SCENARIOS: usize = 16;

/// The scenario name shown for a sealed fault, whatever name it was given.
pub const SEALED: &str = "sealed";

/// The scenario name to show for a fault called `name`: [`SEALED`] when it is sealed.
pub fn shown_name(name: &str, sealed: bool) -> &str {
    if sealed { SEALED } else { name }
}

/// A service's fault, as `PUT /faults` and `--fault` take it (JSON).
pub trait Fault: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Its name: 1–32 of `a-z0-9-` (checked for every fault).
    fn scenario(&self) -> &str;
    /// Whether it is sealed.
    fn sealed(&self) -> bool;
    /// What is wrong with its settings, if anything.
    fn check(&self) -> Result<(), String>;
}

/// What switching a fault does besides showing it (`None`: switched off).
type OnSwitch<F> = Box<dyn Fn(Option<&F>) + Send + Sync>;

/// The fault switched on now, shown in the gauge and the log as it changes.
pub struct FaultSwitch<F> {
    injected: RwLock<Option<F>>,
    scenarios: Scenarios,
    on_switch: OnSwitch<F>,
}

impl<F> std::fmt::Debug for FaultSwitch<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultSwitch").finish_non_exhaustive()
    }
}

impl<F: Fault> FaultSwitch<F> {
    /// Nothing switched on; `on_switch` runs with each fault switched on (`None`: off).
    pub fn new(on_switch: impl Fn(Option<&F>) + Send + Sync + 'static) -> Self {
        Scenarios::describe_series();
        Self {
            injected: RwLock::new(None),
            scenarios: Scenarios::default(),
            on_switch: Box::new(on_switch),
        }
    }

    /// The fault switched on now.
    pub fn current(&self) -> Option<F> {
        self.read(|fault| fault.cloned())
    }

    /// Reads the fault switched on now, without copying it.
    pub fn read<R>(&self, read: impl FnOnce(Option<&F>) -> R) -> R {
        read(
            self.injected
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref(),
        )
    }

    /// Switches `fault` on (`None`: off) after checking it, and says so in the gauge and
    /// the log (a sealed fault only as `sealed`).
    pub fn set(&self, fault: Option<F>) -> Result<(), String> {
        if let Some(fault) = &fault {
            check_name(fault.scenario())?;
            fault.check()?;
        }
        let mut injected = self.injected.write().unwrap_or_else(|p| p.into_inner());
        self.scenarios
            .switch(fault.as_ref().map(|f| shown_name(f.scenario(), f.sealed())))?;
        (self.on_switch)(fault.as_ref());
        match &fault {
            Some(fault) if fault.sealed() => {
                crate::event!(WARN, "fault_injected", scenario = SEALED, sealed = true);
            }
            Some(fault) => {
                let settings = serde_json::to_string(fault).unwrap_or_default();
                crate::event!(
                    WARN,
                    "fault_injected",
                    scenario = fault.scenario(),
                    settings
                );
            }
            None => crate::event!(INFO, "fault_cleared"),
        }
        *injected = fault;
        Ok(())
    }

    /// Parses `--fault`: the endpoint's JSON; empty for none.
    pub fn parse(text: &str) -> Result<Option<F>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let fault: F = serde_json::from_str(text).map_err(|e| format!("not a fault: {e}"))?;
        check_name(fault.scenario())?;
        fault.check()?;
        Ok(Some(fault))
    }
}

/// A service's labs, as its start-up sets them up: the fault endpoint's listener (with
/// `--fault-listen`) and the switch, with the `--fault` switched on from the start.
#[derive(Debug)]
pub struct Lab<F> {
    listener: Option<TcpListener>,
    /// The switch (the service's handlers read it).
    pub switch: Arc<FaultSwitch<F>>,
    asked: bool,
}

impl<F: Fault> Lab<F> {
    /// Binds the endpoint on `listen` (loopback only) when given, and switches `startup` on.
    pub async fn start(
        listen: Option<SocketAddr>,
        switch: FaultSwitch<F>,
        startup: Option<F>,
    ) -> Result<Self, ListenError> {
        let listener = match listen {
            Some(addr) => Some(endpoint::bind(addr).await?),
            None => None,
        };
        let asked = listener.is_some() || startup.is_some();
        if let Some(fault) = startup {
            // Checked when the flag was parsed; a name cap cannot be hit by the first one.
            let _ = switch.set(Some(fault));
        }
        Ok(Self {
            listener,
            switch: Arc::new(switch),
            asked,
        })
    }

    /// Whether a lab may break this service (a fault endpoint or a start-up fault).
    pub fn asked(&self) -> bool {
        self.asked
    }

    /// Serves the fault endpoint in the background, if there is one.
    pub fn serve(&mut self) {
        if let Some(listener) = self.listener.take() {
            endpoint::serve(listener, router(self.switch.clone()));
        }
    }
}

/// Checks a scenario name: 1–32 of `a-z0-9-` (it becomes a label value).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err("scenario must be 1-32 characters of a-z, 0-9 and -".into())
    }
}

/// The scenario switched on now, and every name seen (bounded).
#[derive(Debug, Default)]
pub struct Scenarios {
    seen: RwLock<Vec<String>>,
    active: RwLock<Option<String>>,
}

impl Scenarios {
    /// Makes `name` the active scenario (`None`: none), after checking it: 1–32 of
    /// `a-z0-9-`, and at most [`MAX_SCENARIOS`] names ever. Sets the gauge. For a sealed
    /// fault, pass [`shown_name`]'s answer: the label must not name it.
    pub fn switch(&self, name: Option<&str>) -> Result<(), String> {
        if let Some(name) = name {
            check_name(name)?;
            let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
            if !seen.iter().any(|s| s == name) {
                if seen.len() >= MAX_SCENARIOS {
                    return Err(format!(
                        "at most {MAX_SCENARIOS} scenario names per process"
                    ));
                }
                seen.push(name.to_owned());
            }
        }
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = active.take() {
            metrics::gauge!(ACTIVE, "scenario" => before).set(0.0);
        }
        if let Some(name) = name {
            metrics::gauge!(ACTIVE, "scenario" => name.to_owned()).set(1.0);
            *active = Some(name.to_owned());
        }
        Ok(())
    }

    /// Describes the gauge (once, at start-up).
    pub fn describe_series() {
        metrics::describe_gauge!(
            ACTIVE,
            "1 for the fault scenario switched on now through the fault endpoint, 0 for others seen"
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fault with only a name.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub(crate) struct Fake {
        scenario: String,
        #[serde(default)]
        sealed: bool,
    }

    impl Fake {
        pub(crate) fn new(scenario: &str, sealed: bool) -> Self {
            Self {
                scenario: scenario.into(),
                sealed,
            }
        }
    }

    impl Fault for Fake {
        fn scenario(&self) -> &str {
            &self.scenario
        }
        fn sealed(&self) -> bool {
            self.sealed
        }
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn names_are_checked_and_bounded() {
        let scenarios = Scenarios::default();
        assert!(scenarios.switch(Some("Bad Name")).is_err());
        assert!(scenarios.switch(Some("")).is_err());
        for n in 0..MAX_SCENARIOS {
            scenarios
                .switch(Some(&format!("s{n}")))
                .expect("within the cap");
        }
        assert!(scenarios.switch(Some("one-too-many")).is_err());
        assert!(scenarios.switch(Some("s0")).is_ok(), "a name seen before");
        assert!(scenarios.switch(None).is_ok());
    }

    #[test]
    fn a_switch_checks_names_and_runs_its_action() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let switch = FaultSwitch::new(move |f: Option<&Fake>| {
            log.lock().expect("log").push(f.map(|f| f.scenario.clone()));
        });
        assert!(switch.set(Some(Fake::new("Bad Name", false))).is_err());
        switch.set(Some(Fake::new("a-slow", true))).expect("valid");
        assert_eq!(switch.current(), Some(Fake::new("a-slow", true)));
        switch.set(None).expect("off");
        assert_eq!(
            *seen.lock().expect("log"),
            [Some("a-slow".to_owned()), None]
        );
        assert_eq!(
            FaultSwitch::<Fake>::parse(r#"{"scenario":"x"}"#),
            Ok(Some(Fake::new("x", false)))
        );
        assert_eq!(FaultSwitch::<Fake>::parse(" "), Ok(None));
        assert!(FaultSwitch::<Fake>::parse(r#"{"scenario":"X Y"}"#).is_err());
        assert_eq!(shown_name("a-slow", true), SEALED);
        assert_eq!(shown_name("a-slow", false), "a-slow");
    }
}
