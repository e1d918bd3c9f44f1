//! The lab walkthrough, service A (steps 1–5), with status, exact body and log line.
//!
//! The tests that check no log line or count run A inside the test process
//! (`unknown_user_gets_the_same_answer_as_a_wrong_password`,
//! `step_4_very_slow_provider_still_answers_200_itself`,
//! `a_slow_request_does_not_hold_up_others`); the others read the binary's log lines or its
//! `/metrics` counts.

use serde_json::{Value, json};
use system_tests::{InProcess, Service, get, is_uuid_v4};

/// `ts` is RFC 3339 UTC with milliseconds: `2026-02-04T16:08:59.123Z`.
fn is_rfc3339_millis(ts: &Value) -> bool {
    let ts = ts.as_str().unwrap_or_default();
    ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.'
}

/// The fields every request line has, as in the lab.
fn assert_request_line(line: &Value, service: &str, endpoint: &str, status: u16, request_id: &str) {
    assert_eq!(line["service"], service, "{line}");
    assert_eq!(line["endpoint"], endpoint, "{line}");
    assert_eq!(line["status"], status, "{line}");
    assert!(line["latency_ms"].is_f64(), "latency_ms is a float: {line}");
    assert_eq!(line["request_id"], request_id, "{line}");
    assert!(is_rfc3339_millis(&line["ts"]), "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
}

#[tokio::test]
async fn step_1_health() {
    let a = Service::a(&[]);

    let reply = get(&a.at("/health")).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text, "{\"status\":\"ok\"}\n");
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(
        reply.header("content-length"),
        "16",
        "same length as the lab's"
    );
    assert!(is_uuid_v4(reply.request_id()));
    let line = a.logs.request_line(reply.request_id());
    assert_request_line(&line, "service-a", "GET /health", 200, reply.request_id());
}

#[tokio::test]
async fn step_2_token_with_correct_credentials() {
    let a = Service::a(&[]);

    let reply = a.token(system_tests::demo_login(), Some("demo-123")).await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text,
        "{\"token\":\"token-divya\",\"user\":\"divya\"}\n"
    );
    assert_eq!(reply.header("content-length"), "39");
    assert_eq!(reply.request_id(), "demo-123");
    let line = a.logs.request_line("demo-123");
    assert_request_line(&line, "service-a", "POST /token", 200, "demo-123");
}

#[tokio::test]
async fn step_3_token_with_wrong_password() {
    let a = Service::a(&[]);

    let reply = a
        .token(json!({"username": "divya", "password": "wrong"}), None)
        .await;

    assert_eq!(reply.status, 401);
    assert_eq!(reply.text, "{\"error\":\"invalid credentials\"}\n");
    assert_eq!(reply.header("content-length"), "32");
    let line = a.logs.request_line(reply.request_id());
    assert_request_line(&line, "service-a", "POST /token", 401, reply.request_id());
}

#[tokio::test]
async fn unknown_user_gets_the_same_answer_as_a_wrong_password() {
    let a = InProcess::a(&[]).await;

    let unknown = a
        .token(json!({"username": "mallory", "password": "pass123"}), None)
        .await;
    let wrong = a
        .token(json!({"username": "divya", "password": "nope"}), None)
        .await;

    assert_eq!((unknown.status, &unknown.text), (wrong.status, &wrong.text));
}

#[tokio::test]
async fn step_4_slow_but_still_200() {
    let a = Service::a(&[]);

    let reply = a
        .token(
            system_tests::demo_login_with(json!({"delay_ms": 300})),
            None,
        )
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text,
        "{\"token\":\"token-divya\",\"user\":\"divya\"}\n"
    );
    assert!(reply.elapsed.as_millis() >= 300, "{:?}", reply.elapsed);
    let line = a.logs.request_line(reply.request_id());
    assert!(
        line["latency_ms"].as_f64().unwrap_or_default() >= 300.0,
        "{line}"
    );
}

#[tokio::test]
async fn step_4_very_slow_provider_still_answers_200_itself() {
    let a = InProcess::a(&[]).await;

    let reply = a
        .token(
            system_tests::demo_login_with(json!({"delay_ms": 2000})),
            None,
        )
        .await;

    assert_eq!(
        reply.status, 200,
        "A has no timeout of its own: B's timeout is B's"
    );
    assert!(reply.elapsed.as_millis() >= 2000);
}

#[tokio::test]
async fn a_slow_request_does_not_hold_up_others() {
    let a = InProcess::a(&[]).await;
    let slow = tokio::spawn(a.token(
        system_tests::demo_login_with(json!({"delay_ms": 1500})),
        None,
    ));

    let quick = a.token(system_tests::demo_login(), None).await;

    assert_eq!(quick.status, 200);
    assert!(quick.elapsed.as_millis() < 1000, "{:?}", quick.elapsed);
    assert_eq!(slow.await.expect("slow request").status, 200);
}

#[tokio::test]
async fn step_5_metrics_count_what_happened() {
    let a = Service::a(&[]);
    get(&a.at("/health")).await;
    a.token(system_tests::demo_login(), None).await;
    a.token(json!({"username": "divya", "password": "wrong"}), None)
        .await;
    a.token(
        system_tests::demo_login_with(json!({"delay_ms": 300})),
        None,
    )
    .await;

    let reply = get(&a.at("/metrics")).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.json["requests_total"], 4, "{}", reply.text);
    assert_eq!(reply.json["token_requests"], 3, "{}", reply.text);
    assert_eq!(reply.json["token_requests_by_outcome"]["issued"], 2);
    assert_eq!(
        reply.json["token_requests_by_outcome"]["invalid_credentials"],
        1
    );
    let again = get(&a.at("/metrics")).await;
    assert_eq!(
        again.json["requests_total"], 5,
        "the first /metrics call counts too"
    );
}
