//! What the lab tests of both targets share: a state directory per test, a pair of services
//! with fault endpoints (or B over several replicas of A) and `lab` run against them, a
//! class secret and the seeds it hides, the text a `lab` command said, and the log line
//! each lab leaves. The labs that need a
//! real Prometheus run in the `tools` target; the class's sealed mysteries, its record and
//! the README's stories in `system`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use lab::key::Code;
use serde_json::Value;

use crate::{Kind, Service, binary, vacant_addr};

/// The tests' class secret.
pub const SECRET: &str = "the tests' class secret";

/// The first seed whose mystery is `name`, under [`SECRET`].
pub fn seed_for(name: &str) -> u64 {
    (0..10_000)
        .find(|seed| Code::new(SECRET, *seed).lab().name == name)
        .unwrap_or_else(|| panic!("no seed hides {name}"))
}

/// The code of the first seed whose mystery is `name`, as `lab key` prints it.
pub fn code_for(name: &str) -> String {
    Code::new(SECRET, seed_for(name)).to_string()
}

/// A and B with fault endpoints (each service started with `env`).
#[derive(Debug)]
pub struct Pair {
    /// Service A.
    pub a: Service,
    /// Service B, calling A.
    pub b: Service,
    /// A's fault endpoint's URL.
    pub a_faults: String,
    /// B's fault endpoint's URL.
    pub b_faults: String,
}

impl Pair {
    /// A and B on free ports, each with its fault endpoint.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let (a_fault_addr, b_fault_addr) = (vacant_addr().to_string(), vacant_addr().to_string());
        let a = Service::start(
            Kind::A,
            "127.0.0.1:0",
            &["--fault-listen", &a_fault_addr],
            env,
        );
        let provider = a.url();
        let b = Service::start(
            Kind::B,
            "127.0.0.1:0",
            &["--provider-url", &provider, "--fault-listen", &b_fault_addr],
            env,
        );
        Self {
            a,
            b,
            a_faults: format!("http://{a_fault_addr}/faults"),
            b_faults: format!("http://{b_fault_addr}/faults"),
        }
    }

    /// `lab <args>` against this pair, with its files in `dir`, the class secret and the
    /// student's name not in the environment, and Prometheus nowhere (a wrong answer must
    /// not need one).
    pub fn lab(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(binary(Kind::Lab))
            .args(args)
            .args(["--b", &self.b.url(), "--a-faults", &self.a_faults])
            .args(["--b-faults", &self.b_faults])
            .args(["--prometheus", &format!("http://{}", vacant_addr())])
            .arg("--state-dir")
            .arg(dir)
            .env_remove("LAB_CLASS_SECRET")
            .env_remove("LAB_STUDENT")
            .env_remove("LAB_RESULTS")
            .output()
            .expect("run lab")
    }
}

/// Replicas of A, each with its fault endpoint, and B calling every one, with its own.
#[derive(Debug)]
pub struct Fleet {
    /// A's replicas, in the order `--a-faults` lists them (replica 1 first).
    pub a: Vec<Service>,
    /// Service B, calling every replica.
    pub b: Service,
    /// Each replica's fault endpoint's URL, in the same order.
    pub a_faults: Vec<String>,
    /// B's fault endpoint's URL.
    pub b_faults: String,
}

impl Fleet {
    /// `replicas` replicas of A and B on free ports, each with its fault endpoint.
    pub fn start(replicas: usize) -> Self {
        let mut a = Vec::new();
        let mut a_faults = Vec::new();
        for _ in 0..replicas {
            let faults = vacant_addr().to_string();
            a.push(Service::a(&["--fault-listen", &faults]));
            a_faults.push(format!("http://{faults}/faults"));
        }
        let provider: Vec<String> = a.iter().map(Service::url).collect();
        let b_fault_addr = vacant_addr().to_string();
        let b = Service::b(&provider.join(","), &["--fault-listen", &b_fault_addr]);
        Self {
            a,
            b,
            a_faults,
            b_faults: format!("http://{b_fault_addr}/faults"),
        }
    }

    /// `lab <args>` against this fleet, as [`Pair::lab`] does, `--a-faults` listing every
    /// replica.
    pub fn lab(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(binary(Kind::Lab))
            .args(args)
            .args(["--b", &self.b.url(), "--a-faults", &self.a_faults.join(",")])
            .args(["--b-faults", &self.b_faults])
            .args(["--prometheus", &format!("http://{}", vacant_addr())])
            .arg("--state-dir")
            .arg(dir)
            .env_remove("LAB_CLASS_SECRET")
            .env_remove("LAB_STUDENT")
            .env_remove("LAB_RESULTS")
            .output()
            .expect("run lab")
    }

    /// The replica (1, 2, 3…) whose address `line` names as its `network.peer.*`.
    pub fn replica_of(&self, line: &Value) -> Option<usize> {
        let port = line["network.peer.port"]
            .as_u64()
            .or_else(|| line["network.peer.port"].as_str()?.parse().ok())?;
        let address = line["network.peer.address"].as_str()?;
        self.a
            .iter()
            .position(|a| a.addr.port() as u64 == port && a.addr.ip().to_string() == address)
            .map(|i| i + 1)
    }
}

/// `lab <args>` with no service and no `LAB_*` setting from the environment, its files in
/// `dir`.
pub fn lab_alone(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(binary(Kind::Lab));
    command.args(args).arg("--state-dir").arg(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("LAB_") {
            command.env_remove(name);
        }
    }
    command.output().expect("run lab")
}

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
        "a-replica-slow" => ("service-b", |l| {
            l["event"] == "provider_call_failed"
                && l["error"] == "timeout"
                && !l["network.peer.port"].is_null()
        }),
        other => panic!("no log symptom for {other}"),
    }
}
