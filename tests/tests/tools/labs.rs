//! The labs (`lab`, README "Labs"): each one's fault, switched on through the services'
//! fault endpoints with generated traffic, shows within 90 s in the metrics (a real
//! Prometheus scraping both services, with the project's rules loaded), in the alerts the
//! lab says it fires, and in the logs; `lab check` accepts the right answer and rejects a
//! wrong one; `lab stop` clears the fault. A healthy system under healthy traffic shows none
//! of the labs' symptoms. Every lab's fault reaches the compose stack as a start-up flag
//! (`docker-compose config`). One lab runs here (`a-down`); every other, and the lab without
//! Docker and on A's replicas, are the `heavy` target's (CI runs it).

use std::process::Command;

use serde_json::Value;
use system_tests::lab_stack::{self, Stack};
use system_tests::labs::{said, state_dir};
use system_tests::{Kind, binary};

/// One lab end to end in the README's command (the others are the `heavy` target's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_a_down() {
    lab_stack::run_lab("a-down").await;
}

/// Healthy traffic on a healthy pair shows no lab's symptom, and a mystery lab's name stays
/// hidden until `lab stop`.
#[ignore = "10 s or more: CI runs it after the test command (--test tools -- --ignored)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_system_shows_no_symptom_and_a_mystery_stays_hidden() {
    let Some(stack) = Stack::start("healthy") else {
        return;
    };
    let mut traffic = Command::new(binary(Kind::Traffic))
        .args([
            "--target",
            &stack.b.url(),
            "--rate",
            "10",
            "--duration",
            "30",
        ])
        .args(["--mix", "success=1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("traffic");
    // Enough scrapes for every 30 s window to hold data.
    stack
        .wait_for_metric(
            r#"sum(increase(http_server_request_duration_seconds_count{job="service-b", http_route="/protected-action"}[30s])) > 50"#,
        )
        .await;
    for scenario in &lab::SCENARIOS {
        let found = stack.prometheus.query(scenario.symptom).await;
        assert!(
            found.is_empty(),
            "{} shows on a healthy system: {found:?}",
            scenario.name
        );
    }
    let alerts = stack.prometheus.alerts().await;
    assert!(alerts.is_empty(), "alerts on a healthy system: {alerts:?}");
    let _ = traffic.kill();
    let _ = traffic.wait();

    let started = stack.lab(&[
        "start",
        "--mystery",
        "--seed",
        "7",
        "--class-secret",
        "a class secret",
        "--duration",
        "5",
    ]);
    let text = said(&started);
    assert!(started.status.success(), "{text}");
    assert!(
        lab::SCENARIOS.iter().all(|s| !text.contains(s.title)),
        "the mystery's name is hidden: {text}"
    );
    let stopped = stack.lab(&["stop"]);
    assert!(
        said(&stopped).contains("The lab was:"),
        "{}",
        said(&stopped)
    );
}

/// On the compose stack, whose fault endpoints are out of reach, `lab start --compose`
/// recreates A and B with the lab's fault as a start-up flag: for every lab, the compose
/// file passes it to the right service, and that service accepts it.
#[test]
fn every_lab_breaks_the_compose_stack_through_start_up_flags() {
    let compose = system_tests::repo_root().join("deploy/compose.yaml");
    let have_compose =
        system_tests::tools::executable("docker-compose", "apt-get install -y docker-compose");
    let state = state_dir("dry-run");
    for scenario in &lab::SCENARIOS {
        let output = Command::new(binary(Kind::Lab))
            .args(["start", scenario.name, "--dry-run", "--compose"])
            .arg(&compose)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("run lab");
        let text = said(&output);
        assert!(output.status.success(), "{text}");
        assert!(!state.exists(), "a dry run starts nothing");
        let env: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.ends_with("_FAULT"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(env.len(), 2, "{text}");
        for (name, value) in &env {
            let (kind, service) = if name == "A_FAULT" {
                (Kind::A, "service-a")
            } else {
                (Kind::B, "service-b")
            };
            // The service parses it (a bad flag exits 2 before doing anything).
            let parsed = Command::new(binary(kind))
                .args(["--healthcheck", "--listen", "127.0.0.1:9"])
                .env(name, value)
                .output()
                .expect("run the service");
            assert_ne!(
                parsed.status.code(),
                Some(2),
                "{name}={value}: {}",
                said(&parsed)
            );
            if !have_compose {
                continue;
            }
            let rendered = Command::new("docker-compose")
                .arg("-f")
                .arg(&compose)
                .arg("config")
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .expect("docker-compose config");
            assert!(rendered.status.success(), "{}", said(&rendered));
            let file = std::env::temp_dir().join(format!("compose-{}.yaml", std::process::id()));
            std::fs::write(&file, &rendered.stdout).expect("write");
            if let Some(config) = system_tests::tools::yaml_as_json(&file) {
                let passed = &config["services"][service]["environment"][name.as_str()];
                let passed = passed.as_str().unwrap_or_default();
                let wanted: Value = if value.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(value).expect("JSON")
                };
                let got: Value = serde_json::from_str(passed).unwrap_or(Value::Null);
                assert_eq!(got, wanted, "{service} gets {name} for {}", scenario.name);
            }
            let _ = std::fs::remove_file(file);
        }
    }
}
