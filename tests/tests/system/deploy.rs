//! The deployment files that need no external tool: every dashboard panel says what
//! question it answers, the traffic generator runs its mix, and the Dockerfile's build
//! command builds this workspace. The checks that run docker-compose, promtool, kubectl or a
//! real Prometheus are in the `tools` target.

use std::process::Command;

use serde_json::Value;
use system_tests::tools::run_ok;
use system_tests::{Kind, Service, binary, repo_root};

#[test]
fn every_dashboard_panel_says_what_question_it_answers() {
    for entry in std::fs::read_dir(repo_root().join("dashboards")).expect("dashboards/") {
        let path = entry.expect("entry").path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        assert!(
            dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{path:?}: fixed uid"
        );
        for panel in dashboard["panels"].as_array().expect("panels") {
            if panel["type"] == "row" {
                continue;
            }
            let description = panel["description"].as_str().unwrap_or_default();
            assert!(
                description.contains('?'),
                "{}: description should ask its question",
                panel["title"]
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}: datasource by variable",
                panel["title"]
            );
        }
    }
}

#[test]
fn traffic_generator_runs_the_mix_and_summarises() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &["--provider-timeout-ms", "200"]);

    let summary = run_ok(Command::new(binary(Kind::Traffic)).args([
        "--target",
        &b.url(),
        "--rate",
        "50",
        "--duration",
        "2",
        "--slow-ms",
        "50",
        "--timeout-ms",
        "400",
        "--mix",
        "success=2,wrong_password=1,slow=1,timeout=1",
    ]));

    assert!(summary.starts_with("100 requests sent in"), "{summary}");
    for row in [
        "success             200",
        "wrong_password      401",
        "slow                200",
        "timeout             503",
    ] {
        assert!(summary.contains(row), "{row:?} missing from:\n{summary}");
    }
}

/// The Dockerfile builds with `cargo build --release --locked -p …`; that exact command must
/// build here, from this workspace and its lock file.
#[test]
fn the_dockerfile_build_command_builds_this_workspace() {
    let dockerfile =
        std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).expect("Dockerfile");
    let line = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build line in the Dockerfile");
    let args: Vec<&str> = line
        .split_whitespace()
        .skip_while(|w| *w != "cargo")
        .skip(1)
        .take_while(|w| *w != "\\" && *w != "&&")
        .collect();
    assert_eq!(&args[..3], ["build", "--release", "--locked"], "{line}");
    for binary in ["service-a", "service-b", "traffic"] {
        assert!(
            args.windows(2).any(|w| w == ["-p", binary]),
            "{binary} not built: {line}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} not copied"
        );
    }
    run_ok(
        Command::new(env!("CARGO"))
            .args(&args)
            .arg("--quiet")
            .current_dir(repo_root()),
    );
}
