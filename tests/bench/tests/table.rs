//! CI's smoke run of the benchmark: it completes and prints its table (16 configurations
//! driven by `wrk` for a second each, about 50 s on the 2-core machine, so not in the
//! README's test command: `test = false`; `.ci/run` runs it after). It asserts no speed.

use std::process::Command;

#[test]
fn the_benchmark_runs_and_prints_its_table() {
    // A visible, recorded skip without wrk; a failure in CI.
    if !system_tests::tools::executable("wrk", "apt-get install -y wrk") {
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
        "peer A      POST /token",
        "service A   POST /token",
        "peer A      1% sampled",
        "service A   1% sampled",
        "peer A      + OTLP export",
        "service A   + OTLP export",
        "baseline B  POST /protected-action",
        "peer B      POST /protected-action",
        "service B   POST /protected-action",
        "peer B      1% sampled",
        "service B   1% sampled",
        "peer B      + OTLP export",
        "service B   + OTLP export",
        "B answers 503 with A down",
        "service B: start to healthy",
    ] {
        assert!(stdout.contains(row), "{row:?} missing from:\n{stdout}");
    }
}
