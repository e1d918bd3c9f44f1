//! The external tools the `tools` target's checks drive (promtool, prometheus, amtool,
//! docker-compose, kubectl, and Python modules from PyPI), each looked for the way `.ci/run`
//! installs it.
//!
//! A missing tool skips the check it is needed for, and says so in the test command's
//! normal output: the line goes straight to the process's standard error, past libtest's
//! output capture, so `cargo test --workspace` shows it between the passing tests. In CI
//! (`CI=true`) a missing tool fails the test instead: CI never skips quietly.

use std::io::Write as _;
use std::process::{Command, Stdio};

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

/// Reports a skipped check (panics in CI) and returns `false`.
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
    false
}
