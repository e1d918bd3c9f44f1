//! What the lab tests of both targets share: a state directory per test, the text a `lab`
//! command said, and the log line each lab leaves. The labs that need a real Prometheus run
//! in the `tools` target; the class's sealed mysteries and the README's stories in `system`.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

/// How long a lab's symptom may take to show.
pub const SYMPTOM_WITHIN: Duration = Duration::from_secs(90);

/// A directory of its own for one test's lab files (state, results, spans), emptied first
/// and removed when dropped.
#[derive(Debug)]
pub struct StateDir(PathBuf);

impl std::ops::Deref for StateDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for StateDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl AsRef<std::path::Path> for StateDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh [`StateDir`] named after `name` and this process.
pub fn state_dir(name: &str) -> StateDir {
    let dir = std::env::temp_dir().join(format!("lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    StateDir(dir)
}

/// What a command printed, stdout then stderr.
pub fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The log line each lab leaves, in A's or B's log.
pub fn log_symptom(name: &str) -> (&'static str, fn(&Value) -> bool) {
    match name {
        "a-slow" => ("service-a", |l| {
            l["endpoint"] == "POST /token" && l["latency_ms"].as_f64().is_some_and(|ms| ms > 250.0)
        }),
        "a-timeouts" => ("service-b", |l| {
            l["event"] == "provider_call_failed" && l["error"] == "timeout"
        }),
        "a-down" => ("service-b", |l| {
            l["event"] == "provider_call_failed" && l["error"] == "connection_error"
        }),
        "a-flaky" => ("service-b", |l| {
            l["event"] == "provider_call_failed" && l["error"] == "bad_status"
        }),
        "retry-storm" => ("service-b", |l| {
            l["event"] == "provider_gave_up" && l["reason"] == "retry_budget_exhausted"
        }),
        "brute-force" => ("service-a", |l| {
            l["endpoint"] == "POST /token" && l["status"] == 429
        }),
        "b-misconfigured" => ("service-b", |l| {
            l["event"] == "provider_call_failed"
                && l["timeout_secs"].as_f64().is_some_and(|s| s < 0.1)
        }),
        other => panic!("no log symptom for {other}"),
    }
}
