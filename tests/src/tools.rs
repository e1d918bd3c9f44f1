//! The external tools the `tools` target's checks drive (promtool, prometheus, amtool,
//! docker-compose, kubectl, and Python modules from PyPI), each looked for the way `.ci/run`
//! installs it.
//!
//! A missing tool skips the check it is needed for, and says so in the test command's
//! normal output: the line goes straight to the process's standard error, past libtest's
//! output capture, so `cargo test --workspace` shows it between the passing tests. Each skip
//! is also recorded for the run ([`skip_records`]), and the test command's last line, from
//! the `wrap-up` package, counts them. In CI (`CI=true`) a missing tool fails the test
//! instead: CI never skips quietly.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether an executable answers `--version`. `install` says how to get it.
pub fn executable(name: &str, install: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    found || skipped(name, install)
}

/// Whether `python3 -c "import <module>"` works. `package` is its name on PyPI.
pub fn python_module(module: &str, package: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found
        || skipped(
            &format!("python3 module {module}"),
            &format!("python3 -m pip install {package}"),
        )
}

/// A YAML file read by PyYAML, as JSON; `None` (a visible skip) when PyYAML is missing.
/// Panics when the file is not valid YAML.
pub fn yaml_as_json(path: &std::path::Path) -> Option<serde_json::Value> {
    if !python_module("yaml", "pyyaml") {
        return None;
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("YAML as JSON"))
}

/// Runs `command`; panics with its output unless it succeeds. Returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Reports a skipped check (panics in CI), records it for the run, and returns `false`.
fn skipped(what: &str, install: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is required in CI ({install})"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    // Not eprintln!: that one is captured for passing tests and never shown.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED part of {test}: {what} is not installed ({install}; .ci/run installs it)"
    );
    record_skip(&format!("{test} ({what})"));
    false
}

/// The directory of this run's skip records: one per `cargo test` process, which starts
/// every test binary of the run, named by its pid and start time (so a pid used again is
/// another run). `None` when the parent cannot be read.
fn run_dir() -> Option<PathBuf> {
    let parent = std::os::unix::process::parent_id();
    let stat = std::fs::read_to_string(format!("/proc/{parent}/stat")).ok()?;
    // Field 22, the start time, counted after the command's closing parenthesis (field 2).
    let started = stat.rsplit(") ").next()?.split(' ').nth(19)?.to_owned();
    Some(
        std::env::temp_dir()
            .join("system-tests-skips")
            .join(format!("{parent}-{started}")),
    )
}

/// Records one skipped check (`what`: the test, and the tool it lacked) for the run.
fn record_skip(what: &str) {
    static RECORDED: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = run_dir() else { return };
    let name = format!(
        "{}-{}",
        std::process::id(),
        RECORDED.fetch_add(1, Ordering::Relaxed)
    );
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), what);
    }
}

/// The checks of this `cargo test` run skipped so far for a missing tool, each once,
/// sorted; the records are removed as they are read.
pub fn skip_records() -> Vec<String> {
    let Some(dir) = run_dir() else {
        return Vec::new();
    };
    let mut records: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    records.sort();
    records.dedup();
    records
}

/// The test command's last line: how many checks were skipped for a missing tool, and which.
pub fn skip_line(records: &[String]) -> String {
    if records.is_empty() {
        "skipped for a missing tool: none".to_owned()
    } else {
        format!(
            "skipped for a missing tool: {} ({})",
            records.len(),
            records.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skip_line_counts_the_checks_and_names_them() {
        assert_eq!(skip_line(&[]), "skipped for a missing tool: none");
        let records = ["a::b (wrk)".to_owned(), "c::d (promtool)".to_owned()];
        assert_eq!(
            skip_line(&records),
            "skipped for a missing tool: 2 (a::b (wrk); c::d (promtool))"
        );
    }
}
