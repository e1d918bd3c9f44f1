//! CI's smoke run of the benchmark: it completes and prints its table. It asserts no speed:
//! figures belong in BENCHMARKS.md, measured with the full run, not in a test that could
//! flake on a busy machine.

use std::io::Write as _;
use std::process::Command;

#[test]
fn the_benchmark_runs_and_prints_its_table() {
    let wrk = Command::new("wrk").arg("--version").output();
    if wrk.is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "wrk is required in CI (apt-get install -y wrk)"
        );
        // Straight to stderr, past libtest's capture, so the skip shows in normal output.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the benchmark smoke run: wrk is not installed (apt-get install -y wrk; .ci/run installs it)"
        );
        return;
    }

    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--smoke")
        .output()
        .expect("run the benchmark");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "baseline A  POST /token",
        "service A   POST /token",
        "baseline B  POST /protected-action",
        "service B   POST /protected-action",
        "service B   + OTLP export",
        "B answers 503 with A down",
        "service B: start to healthy",
    ] {
        assert!(stdout.contains(row), "{row:?} missing from:\n{stdout}");
    }
}
