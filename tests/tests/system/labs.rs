//! The labs (`lab`, README "Labs") that need no external tool: a fault given at start-up
//! acts from the first request, and the README tells each lab's story with real samples.
//! For a class: a mystery lab is sealed and its key needs the class secret (`classroom`);
//! its record holds up, and the report flags what does not (`record`); `lab stop` leaves
//! nothing behind (`reset`); one setting moves every port, and `lab` follows (`ports`); the
//! lab of A's replicas names the replica at fault (`replicas`).
//! The labs run against a real Prometheus are in the `tools` target.

mod classroom;
mod ports;
mod record;
mod replicas;
mod reset;

use std::process::Command;

use system_tests::labs::state_dir;
use system_tests::{Kind, Service, binary, client};

/// A fault given at start-up (`--fault`, what `lab start --compose` uses) acts from the
/// first request and shows in the gauge.
#[tokio::test]
async fn a_start_up_fault_acts_from_the_first_request() {
    let down = Service::a(&["--fault", r#"{"scenario":"a-down","down":true}"#]);
    assert!(
        client().get(down.at("/health")).send().await.is_err(),
        "A started down"
    );
    let a = Service::a(&[]);
    let b = Service::b(
        &a.url(),
        &[
            "--fault",
            r#"{"scenario":"b-misconfigured","provider_timeout_ms":25}"#,
        ],
    );
    let reply = b
        .protected_action(
            system_tests::demo_login_with(serde_json::json!({"delay_ms": 60})),
            None,
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    let metrics = system_tests::get(&b.at("/metrics?format=prometheus"))
        .await
        .text;
    assert!(
        metrics.contains(r#"fault_injection_active{scenario="b-misconfigured"} 1"#),
        "{metrics}"
    );
}

/// The README's labs section tells each lab's story as the lab does (question, alerts), its
/// `lab key` and `lab report` samples are real output, and every restart command for A it
/// gives keeps the fault endpoint the start script opens.
#[test]
fn the_readme_tells_each_labs_story() {
    let readme =
        std::fs::read_to_string(system_tests::repo_root().join("README.md")).expect("README.md");
    let start = readme
        .find("## Labs: something is wrong, find it")
        .expect("a labs section");
    let section = &readme[start..];
    let section = &section[..section.find("\n## Kubernetes").expect("next section")];
    for (n, scenario) in lab::all().enumerate() {
        let head = format!(
            "| {} | `{}` | {} |",
            n + 1,
            scenario.name,
            scenario.question
        );
        let row = section
            .lines()
            .find(|l| l.starts_with(&head))
            .unwrap_or_else(|| panic!("README: no row {head}"));
        if scenario.alerts.is_empty() {
            assert!(
                row.ends_with("| none: its users barely notice, so no SLO burns |"),
                "{row}"
            );
        }
        for alert in scenario.alerts {
            assert!(row.contains(alert.name), "{}: {row}", alert.name);
            assert!(row.contains(alert.runbook), "{}: {row}", alert.runbook);
            if let Some(slo) = alert.slo {
                assert!(row.contains(&format!("`{slo}`")), "{slo}: {row}");
            }
        }
    }

    // A restarted by the README's command can still be broken by `lab`.
    let script = std::fs::read_to_string(system_tests::repo_root().join("deploy/run-local.sh"))
        .expect("run-local.sh");
    assert!(
        script.contains("A_FAULT_LISTEN_ADDR:-127.0.0.1:$(port 5 9180)"),
        "the start script's default fault endpoint for A"
    );
    assert!(
        script
            .contains(r#"service-a --listen ${a_addrs[$1]} --fault-listen ${a_fault_addrs[$1]}""#),
        "the start script's restart command, as the README shows it"
    );
    let restarts: Vec<&str> = readme
        .match_indices("./target/release/service-a")
        .map(|(at, _)| &readme[at..])
        .collect();
    assert!(restarts.len() >= 3, "{restarts:?}");
    for restart in restarts {
        assert!(
            restart.starts_with(
                "./target/release/service-a --listen 127.0.0.1:8080 --fault-listen 127.0.0.1:9180"
            ),
            "README: {}",
            &restart[..60.min(restart.len())]
        );
    }

    // The samples: `lab key` as printed, and `lab report` of two students' records.
    let sample = |command: &str| -> Vec<String> {
        let at = section
            .find(&format!("$ {command}"))
            .unwrap_or_else(|| panic!("README: no sample of {command}"));
        section[at..]
            .lines()
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .map(|l| l.strip_prefix("   ").unwrap_or(l).to_owned())
            .collect()
    };
    let secret = section
        .lines()
        .find_map(|l| l.trim().strip_prefix("$ export LAB_CLASS_SECRET="))
        .expect("the sample's secret");
    let key = Command::new(binary(Kind::Lab))
        .args(["key", "--seed", "1-6"])
        .env("LAB_CLASS_SECRET", secret)
        .output()
        .expect("run lab");
    let printed: Vec<String> = String::from_utf8_lossy(&key.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(sample("./target/release/lab key --seed 1-6"), printed);

    let dir = state_dir("readme-report");
    std::fs::create_dir_all(dir.join("results")).expect("dir");
    let code = lab::key::Code::new(secret, 3).to_string();
    // Each run: its id, when it started (seconds after 10:00), its answers (seconds after
    // its start), and whether it was stopped (the lab revealed) at its last answer.
    type Answers<'a> = &'a [(&'a str, bool, f64)];
    let file = |student: &str, runs: &[(&str, f64, Answers<'_>, bool)]| {
        let mut records = Vec::new();
        for (run, from, answers, stopped) in runs {
            let record = |event, at: f64, attempt| {
                let ts = (from + at) as u32;
                lab::results::Record {
                    seq: 0,
                    ts: format!("2026-12-01T10:{:02}:{:02}Z", ts / 60, ts % 60),
                    event,
                    student: student.into(),
                    run: (*run).into(),
                    code: Some(code.clone()),
                    lab: lab::results::SEALED.into(),
                    answer: None,
                    replica: None,
                    right: None,
                    attempt,
                    seconds: at,
                    prev: String::new(),
                    hash: String::new(),
                }
            };
            records.push(record(lab::results::Event::Start, 0.0, 0));
            for (n, (answer, right, at)) in answers.iter().enumerate() {
                records.push(lab::results::Record {
                    answer: Some((*answer).into()),
                    right: Some(*right),
                    ..record(lab::results::Event::Check, *at, n as u32 + 1)
                });
            }
            if *stopped {
                let at = answers.last().map_or(0.0, |a| a.2);
                records.push(record(lab::results::Event::Stop, at, answers.len() as u32));
            }
        }
        lab::results::chain(&mut records);
        lab::results::text(&records)
    };
    let ada = file(
        "Ada Lovelace",
        &[(
            "r1",
            0.0,
            &[("a-slow", false, 190.0), ("a-timeouts", true, 412.0)],
            true,
        )],
    );
    let alan = file(
        "Alan Turing",
        &[(
            "r2",
            0.0,
            &[
                ("a-down", false, 120.0),
                ("a-flaky", false, 300.0),
                ("retry-storm", false, 655.0),
            ],
            false,
        )],
    );
    // Grace stops (the lab is revealed), starts the same code again and answers right.
    let grace = file(
        "Grace Hopper",
        &[
            ("r3", 0.0, &[("a-down", false, 95.0)], true),
            ("r4", 120.0, &[("a-timeouts", true, 40.0)], true),
        ],
    );
    for (name, text) in [("ada", ada), ("alan", alan), ("grace", grace)] {
        std::fs::write(dir.join(format!("results/{name}.jsonl")), text).expect("write");
    }
    let report = Command::new(binary(Kind::Lab))
        .args(["report", "results/ada.jsonl", "results/alan.jsonl"])
        .arg("results/grace.jsonl")
        .current_dir(&dir)
        .env_remove("LAB_CLASS_SECRET")
        .output()
        .expect("run lab");
    let printed: Vec<String> = String::from_utf8_lossy(&report.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        sample("./target/release/lab report results/*.jsonl"),
        printed
    );
}
