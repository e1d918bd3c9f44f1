//! The deployment files that need no external tool: every dashboard panel says what
//! question it answers, the panels of A's replicas read series and labels B exports when it
//! knows two replicas, the traffic generator runs its mix, and the Dockerfile's build
//! command names this workspace's packages and binaries with a current lock file. The checks
//! that run docker-compose, promtool, kubectl or a real Prometheus are in the `tools` target.

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

/// The panels of A's replicas, by title, each with the series and the labels it groups by.
const REPLICA_PANELS: [(&str, &str, &[&str]); 5] = [
    (
        "Calls per A replica",
        "provider_endpoint_attempts_total",
        &["endpoint"],
    ),
    (
        "Failed attempts per A replica, by outcome",
        "provider_endpoint_attempts_total",
        &["endpoint", "outcome"],
    ),
    (
        "Ejections, per A replica and reason",
        "provider_endpoint_ejections_total",
        &["endpoint", "reason"],
    ),
    (
        "A's replicas known to B, and in use",
        "provider_endpoints",
        &["instance"],
    ),
    (
        "A: p99 latency of POST /token, per replica",
        "http_server_request_duration_seconds_bucket",
        &["instance", "le"],
    ),
];

/// The dashboard shows each replica of A: its share of B's attempts (stacked), its failed
/// attempts, its ejections, how many B knows and uses, and A's own latency per target.
/// Each panel groups by labels the series carry: B's on B's `/metrics` with two replicas
/// (`instance` is Prometheus' own label, on every target).
#[tokio::test]
async fn the_dashboard_shows_each_replica_of_a() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("dashboards/services.json")).expect("read"),
    )
    .expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let a_replicas = [Service::a(&[]), Service::a(&[])];
    let b = Service::b(
        &format!("{},{}", a_replicas[0].url(), a_replicas[1].url()),
        &[],
    );
    let exported = system_tests::get(&b.at("/metrics?format=prometheus"))
        .await
        .text;
    for (title, series, labels) in REPLICA_PANELS {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        let expr = panel["targets"][0]["expr"].as_str().expect("a query");
        assert!(expr.contains(series), "{title}: {expr}");
        assert!(
            expr.contains(&format!("by ({})", labels.join(", "))),
            "{title}: {expr}"
        );
        if series.starts_with("provider_") {
            let line = exported
                .lines()
                .find(|l| l.starts_with(&format!("{series}{{")))
                .unwrap_or_else(|| panic!("{title}: B exports no {series}"));
            for label in labels.iter().filter(|l| **l != "instance") {
                assert!(line.contains(&format!("{label}=\"")), "{title}: {line}");
            }
        }
    }
    let calls = panels
        .iter()
        .find(|p| p["title"] == "Calls per A replica")
        .expect("calls per replica");
    assert_eq!(
        calls["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"], "percent",
        "each replica's share, stacked"
    );
    let up = panels
        .iter()
        .find(|p| p["title"] == "Is each service up?")
        .expect("up");
    assert!(
        up["targets"][0]["legendFormat"]
            .as_str()
            .is_some_and(|l| l.contains("{{instance}}")),
        "each replica of A is a target of its own"
    );
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

/// The Dockerfile builds with `cargo build --release --locked -p …` and copies the binaries
/// from `target/release/`: that command must build here, from this workspace and its lock
/// file, and make the binaries it copies.
///
/// Checked without compiling a release build (minutes on a cold machine), each part of that
/// claim for what it is:
/// - `--locked`: `cargo metadata --locked` resolves the whole workspace as the build does and
///   fails, as the build would, when `Cargo.lock` is not current;
/// - `-p <name>`: each names a package of this workspace, as cargo requires;
/// - each copied `target/release/<name>` is a `bin` target of a package the command builds;
/// - that those packages compile: the test command's own `cargo build --workspace` has just
///   built them from the same sources and lock file. A release build differs only where code
///   asks for the profile, so none of the workspace's code may (`debug_assertions`). `.ci/run`
///   builds the services in release anyway, for the instruction budget.
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

    let metadata: Value = serde_json::from_str(&run_ok(
        Command::new(env!("CARGO"))
            .args(["metadata", "--locked", "--format-version", "1"])
            .current_dir(repo_root()),
    ))
    .expect("cargo metadata prints JSON");
    let members = metadata["workspace_members"]
        .as_array()
        .expect("workspace members");
    let workspace: Vec<&Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(&p["id"]))
        .collect();
    let built: Vec<&Value> = args
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| {
            *workspace
                .iter()
                .find(|p| p["name"] == w[1])
                .unwrap_or_else(|| panic!("-p {}: no such package in this workspace", w[1]))
        })
        .collect();
    let copied: Vec<&str> = dockerfile
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("target/release/"))
        .collect();
    assert!(!copied.is_empty(), "the Dockerfile copies the binaries");
    for binary in copied {
        assert!(
            built.iter().any(|p| {
                p["targets"].as_array().is_some_and(|targets| {
                    targets
                        .iter()
                        .any(|t| t["name"] == binary && t["kind"][0] == "bin")
                })
            }),
            "target/release/{binary} is no binary of a package the command builds: {line}"
        );
    }
    for package in workspace {
        let manifest = package["manifest_path"].as_str().expect("manifest path");
        let src = std::path::Path::new(manifest)
            .parent()
            .expect("package directory")
            .join("src");
        // A package of tests alone (tests/wrap-up) has no src/.
        let sources = if src.is_dir() {
            rust_files(&src)
        } else {
            Vec::new()
        };
        for file in sources {
            let text = std::fs::read_to_string(&file).expect("read source");
            assert!(
                !text.contains("debug_assertions"),
                "{} depends on the build profile: the release build is then no longer the \
                 debug build this test relies on (see its docs)",
                file.display()
            );
        }
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}
