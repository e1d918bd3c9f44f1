//! How B classifies what goes wrong with A beyond the walkthrough: 5xx answers, broken
//! connections, and answers B cannot use. A stand-in provider plays each part, answering
//! every connection with the same canned bytes.
//!
//! The tests that read only B's answers and the stand-in's count run B inside the test
//! process (`an_unexpected_4xx_is_a_502_and_not_retried`,
//! `a_429_is_passed_through_with_retry_after_and_not_retried`,
//! `a_200_without_a_token_is_a_502`, `one_attempt_means_no_retry`); the others also read B's
//! log lines or `/metrics` counts, which only the binary shows.

use std::time::Duration;

use serde_json::json;
use system_tests::stub::{StubProvider, status_reply};
use system_tests::{InProcess, Service};

/// A stand-in provider answering `reply` to everything (empty: hang up without answering).
fn canned_provider(reply: &str) -> (String, StubProvider) {
    let stub = StubProvider::start(reply, Duration::from_secs(5));
    (stub.url.clone(), stub)
}

#[tokio::test]
async fn provider_5xx_is_bad_status_retried_then_503() {
    let (url, seen) = canned_provider(&status_reply("500 Internal Server Error"));
    let b = Service::b(&url, &[]);

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.json["details"],
        "provider answered 500 Internal Server Error on both attempts"
    );
    assert_eq!(seen.seen(), 2, "retried once");
    let failures = b.logs.failed_attempts(reply.request_id());
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|l| l["error"] == "bad_status"));
    let metrics = system_tests::get(&b.at("/metrics")).await;
    assert_eq!(metrics.json["provider_failures_by_kind"]["bad_status"], 1);
}

#[tokio::test]
async fn connection_closed_without_an_answer_is_a_connection_error() {
    let (url, seen) = canned_provider("");
    let b = Service::b(&url, &[]);

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    assert_eq!(reply.status, 503);
    assert_eq!(seen.seen(), 2);
    let failures = b.logs.failed_attempts(reply.request_id());
    assert_eq!(failures.len(), 2);
    assert!(
        failures.iter().all(|l| l["error"] == "connection_error"),
        "{failures:#?}"
    );
}

#[tokio::test]
async fn an_unexpected_4xx_is_a_502_and_not_retried() {
    let (url, seen) = canned_provider(&status_reply("404 Not Found"));
    let b = InProcess::b(&url, &[]).await;

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    assert_eq!(reply.status, 502);
    assert_eq!(reply.json["error"], "bad answer from provider");
    assert_eq!(reply.json["details"], "provider answered 404 Not Found");
    assert_eq!(seen.seen(), 1);
}

#[tokio::test]
async fn a_429_is_passed_through_with_retry_after_and_not_retried() {
    let (url, seen) = canned_provider(
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n",
    );
    let b = InProcess::b(&url, &[]).await;

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), "7");
    assert_eq!(seen.seen(), 1);
}

#[tokio::test]
async fn a_200_without_a_token_is_a_502() {
    let (url, _) = canned_provider(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    );
    let b = InProcess::b(&url, &[]).await;

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    assert_eq!(reply.status, 502);
    assert_eq!(reply.json["error"], "bad answer from provider");
}

#[tokio::test]
async fn one_attempt_means_no_retry() {
    let (url, seen) = canned_provider(&status_reply("503 Service Unavailable"));
    let b = InProcess::b(&url, &["--provider-attempts", "1"]).await;

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.json["details"],
        "provider answered 503 Service Unavailable on the only attempt"
    );
    assert_eq!(seen.seen(), 1);
}

#[tokio::test]
async fn a_too_large_delay_is_as_from_a_a_400_not_a_retry() {
    // B allows up to 5000 ms, this A only 1000: A's 400 is passed through, not retried.
    let a = Service::a(&["--max-delay-ms", "1000"]);
    let b = Service::b(&a.url(), &[]);

    let reply = b
        .protected_action(
            system_tests::demo_login_with(json!({"delay_ms": 2000})),
            None,
        )
        .await;

    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json["error"],
        "delay_ms must be an integer from 0 to 1000 (milliseconds)"
    );
    assert_eq!(
        b.logs.failed_attempts(reply.request_id()).len(),
        0,
        "no retry"
    );

    // Over B's own ceiling, B refuses at once and A never hears of it.
    let reply = b
        .protected_action(
            system_tests::demo_login_with(json!({"delay_ms": 999_999})),
            Some("over-b-ceiling"),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json["error"],
        "delay_ms must be an integer from 0 to 5000 (milliseconds)"
    );
    b.logs.request_line("over-b-ceiling");
    a.sync_logs().await;
    assert!(
        a.logs
            .matching(|l| l["request_id"] == "over-b-ceiling")
            .is_empty()
    );
}
