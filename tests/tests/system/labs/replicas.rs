//! The lab of A's replicas (`a-replica-slow`): one replica of three is broken, and the
//! answer names it. It needs three replicas and refuses, saying how to start them, with
//! fewer (or on the compose stack); every replica's fault is sealed, so no fault endpoint,
//! log line or gauge says which one; B's own lines name it; `lab check` takes the replica
//! (`--replica N`) and refuses an answer without one; `lab stop` reveals it, and the record
//! holds up in `lab report`.

use serde_json::{Value, json};
use system_tests::labs::{Fleet, Pair, lab_alone, log_symptom, said, state_dir};
use system_tests::{Kind, binary, client};

const LAB: &str = "a-replica-slow";

/// What a replica's fault endpoint says is on.
async fn injected(url: &str) -> Value {
    let body: Value = client()
        .get(url)
        .send()
        .await
        .expect("the fault endpoint answers")
        .json()
        .await
        .expect("JSON");
    body["injected"].clone()
}

/// Fewer than three replicas: `lab start` says how to start three and starts nothing; on
/// the compose stack it says the lab runs on the start script only.
#[test]
fn fewer_than_three_replicas_are_refused_naming_the_start_command() {
    let pair = Pair::start(&[]);
    let dir = state_dir("replicas-one");
    let refused = pair.lab(&dir, &["start", LAB]);
    let text = said(&refused);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    for needed in [
        "./deploy/run-local.sh --a-replicas 3",
        "knows of 1",
        "--a-faults",
    ] {
        assert!(text.contains(needed), "{needed}: {text}");
    }
    assert!(
        !dir.join(lab::paths::STATE_FILE).exists(),
        "nothing started"
    );

    let compose = system_tests::repo_root().join("deploy/compose.yaml");
    let compose = compose.to_string_lossy();
    let dry = lab_alone(&dir, &["start", LAB, "--dry-run", "--compose", &compose]);
    assert_eq!(dry.status.code(), Some(2), "{}", said(&dry));
    assert!(said(&dry).contains("--a-replicas 3 only"), "{}", said(&dry));
}

/// Three replicas, one slowed: each fault endpoint says the same sealed nothing, each
/// replica logs the same sealed `fault_injected`; B's failed attempts name the replica, and
/// `lab check` grades the replica named, `lab stop` reveals it, `lab report` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_is_slow_and_the_answer_names_it() {
    // Arrange
    let fleet = Fleet::start(3);
    let dir = state_dir("replicas");
    let listed = fleet.lab(&dir, &["list"]);
    assert!(
        said(&listed).contains("./deploy/run-local.sh --a-replicas 3"),
        "{}",
        said(&listed)
    );

    // Act
    let started = fleet.lab(&dir, &["start", LAB, "--student", "sam"]);
    let text = said(&started);
    assert!(started.status.success(), "{text}");
    assert!(text.contains("--replica N"), "{text}");

    // Assert: sealed alike at every replica, and B's log names the slow one.
    for (replica, url) in fleet.a.iter().zip(&fleet.a_faults) {
        assert_eq!(
            injected(url).await,
            json!({"scenario": "sealed", "sealed": true}),
            "{url}"
        );
        let line = replica.logs.wait_for(|l| l["event"] == "fault_injected");
        assert_eq!(line["scenario"], "sealed", "{line}");
        assert!(!line.to_string().contains("1500"), "{line}");
        let gauge = replica
            .series(r#"fault_injection_active{scenario="sealed"}"#)
            .await;
        assert_eq!(gauge, 1.0, "{url}");
    }
    let (_, symptom) = log_symptom(LAB);
    let failed = fleet.b.logs.wait_for(symptom);
    let slow = fleet.replica_of(&failed).expect("the line names a replica");
    let others: Vec<usize> = (1..=3).filter(|n| *n != slow).collect();
    for replica in &fleet.a {
        let shown: Vec<String> = replica.logs.raw();
        assert!(
            shown.iter().all(|l| !l.contains(LAB)),
            "no replica names the lab"
        );
    }

    // An answer without a replica, or with one that does not exist, is refused unrecorded.
    for wrong_shape in [
        vec!["check", LAB],
        vec!["check", LAB, "--replica", "4"],
        vec!["check", "a-slow", "--replica", "1"],
    ] {
        let refused = fleet.lab(&dir, &wrong_shape);
        assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    }
    let wrong_replica = others[0].to_string();
    let wrong = fleet.lab(&dir, &["check", LAB, "--replica", &wrong_replica]);
    assert_eq!(wrong.status.code(), Some(1), "{}", said(&wrong));
    assert!(
        said(&wrong).starts_with(&format!("wrong: it is not replica {wrong_replica}.")),
        "{}",
        said(&wrong)
    );
    let right = fleet.lab(&dir, &["check", LAB, "--replica", &slow.to_string()]);
    assert!(right.status.success(), "{}", said(&right));
    assert!(
        said(&right).starts_with("right: ") && said(&right).contains(&format!("replica {slow}")),
        "{}",
        said(&right)
    );
    let stopped = fleet.lab(&dir, &["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    assert!(
        said(&stopped).contains(&format!("The replica at fault was: replica {slow}")),
        "{}",
        said(&stopped)
    );
    for url in &fleet.a_faults {
        assert_eq!(injected(url).await, Value::Null, "{url} cleared");
    }

    // The record: two answers, each with its replica, and the stop that reveals it.
    let results = dir.join(lab::paths::RESULTS_FILE);
    let file = lab::results::read(&std::fs::read_to_string(&results).expect("results"), "r");
    assert!(file.breaks.is_empty(), "{:?}", file.breaks);
    let replicas: Vec<Option<u32>> = file.records.iter().map(|(_, r)| r.replica).collect();
    let (slow_n, wrong_n) = (slow as u32, others[0] as u32);
    assert_eq!(replicas, [None, Some(wrong_n), Some(slow_n), Some(slow_n)]);
    let report = std::process::Command::new(binary(Kind::Lab))
        .arg("report")
        .arg(&results)
        .env_remove("LAB_CLASS_SECRET")
        .output()
        .expect("run lab");
    let table = said(&report);
    let row = table
        .lines()
        .find(|l| l.starts_with("sam"))
        .expect("sam's row");
    assert!(row.contains(" yes "), "{table}");
    assert!(
        row.contains(&format!("{LAB}#{wrong_n} {LAB}#{slow_n}")),
        "{table}"
    );
}
