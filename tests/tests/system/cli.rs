//! `--help` documents every knob, with its environment variable and default; bad
//! configuration stops start-up with a clear message instead of a half-working service.
//!
//! `extra_users_come_from_a_file` parses A's flags as the binary does and runs A inside the
//! test process (it reads only A's answers); the others run the binary itself (its `--help`,
//! its exit on a bad start-up, its `--healthcheck` probe).

use std::process::Command;

use system_tests::{Kind, binary};

fn help(kind: Kind) -> String {
    let output = Command::new(binary(kind))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn service_a_help_lists_every_flag() {
    let text = help(Kind::A);
    for expected in [
        "--listen",
        "LISTEN_ADDR",
        "127.0.0.1:8080",
        "--users-file",
        "USERS_FILE",
        "--no-demo-user",
        "--max-delay-ms",
        "MAX_DELAY_MS",
        "5000",
        "--shutdown-grace-ms",
        "SHUTDOWN_GRACE_MS",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[test]
fn service_b_help_lists_every_flag() {
    let text = help(Kind::B);
    for expected in [
        "--listen",
        "LISTEN_ADDR",
        "127.0.0.1:8081",
        "--provider-url",
        "PROVIDER_URL",
        "http://127.0.0.1:8080",
        "--provider-timeout-ms",
        "PROVIDER_TIMEOUT_MS",
        "1000",
        "--provider-attempts",
        "PROVIDER_ATTEMPTS",
        "--retry-backoff-min-ms",
        "RETRY_BACKOFF_MIN_MS",
        "--retry-backoff-max-ms",
        "RETRY_BACKOFF_MAX_MS",
        "--shutdown-grace-ms",
        "--healthcheck",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();

    let output = Command::new(binary(Kind::A))
        .args(["--listen", &addr])
        .output()
        .expect("run");

    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("cannot listen on") && stdout.contains("\"level\":\"ERROR\""),
        "{stdout}"
    );
}

#[tokio::test]
async fn extra_users_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("users-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("users");
    std::fs::write(&file, "alice:wonderland\n").expect("write");

    let a = system_tests::InProcess::a(&["--users-file", file.to_str().expect("path")]).await;
    let alice = a
        .token(
            serde_json::json!({"username": "alice", "password": "wonderland"}),
            None,
        )
        .await;
    let divya = a.token(system_tests::demo_login(), None).await;

    assert_eq!(alice.json["token"], "token-alice");
    assert_eq!(divya.status, 200, "the demo user is still there");
}

#[test]
fn healthcheck_flag_probes_the_running_service() {
    let mut a = system_tests::Service::a(&[]);
    let addr = a.addr.to_string();
    let probe = |kind| {
        Command::new(binary(kind))
            .args(["--healthcheck", "--listen", &addr])
            .status()
            .expect("run probe")
    };

    assert!(probe(Kind::A).success(), "healthy while A serves");
    assert!(a.stop().success());
    assert!(!probe(Kind::A).success(), "unhealthy once A is gone");
    assert!(!probe(Kind::B).success());
}
