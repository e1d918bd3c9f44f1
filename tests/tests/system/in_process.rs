//! Services started inside the test process (zero2prod's `spawn_app`, here
//! `system_tests::InProcess`): each on port 0 with its own flags and its own observation
//! settings, driven over HTTP only. One process has one `tracing` subscriber, one `metrics`
//! recorder and one propagator, and none is installed here: what the services log, trace
//! and count is the real binaries' to show. What these tests hold is that two differently
//! configured services run side by side in one process, because nothing they are
//! configured with is process-wide. (Other modules start services this way too, for the
//! tests their docs name.)

use serde_json::json;
use system_tests::{
    InProcess, client, demo_login, demo_login_with, get, post_json, send, vacant_addr,
};
use telemetry::observe::{Propagation, Settings};

fn wrong_password() -> serde_json::Value {
    json!({"username": "divya", "password": "wrong"})
}

#[tokio::test]
async fn two_as_with_different_settings_answer_each_by_its_own() {
    // Arrange: one A throttles after one failed login and reads no baggage; the other
    // keeps the defaults.
    let strict = InProcess::a_with(
        &["--max-login-failures", "1"],
        Settings::in_process().with_propagation(Propagation {
            trace_context: true,
            baggage: false,
        }),
    )
    .await;
    let default = InProcess::a(&[]).await;

    // Act and assert: the walkthrough's basics on both.
    for a in [&strict, &default] {
        let health = get(&a.at("/health")).await;
        assert_eq!(health.status, 200);
        assert_eq!(health.text, "{\"status\":\"ok\"}\n");
        let token = post_json(&a.at("/token"), demo_login(), Some("demo-123")).await;
        assert_eq!(token.status, 200);
        assert_eq!(
            token.text,
            "{\"token\":\"token-divya\",\"user\":\"divya\"}\n"
        );
        assert_eq!(token.request_id(), "demo-123");
        let refused = post_json(&a.at("/token"), wrong_password(), None).await;
        assert_eq!(refused.status, 401);
        assert_eq!(refused.json["error"], "invalid credentials");
    }
    // Its own flags: the strict A throttles the second failure, the other does not.
    let second = post_json(&strict.at("/token"), wrong_password(), None).await;
    assert_eq!(second.status, 429, "{}", second.text);
    assert!(!second.header("retry-after").is_empty());
    let second = post_json(&default.at("/token"), wrong_password(), None).await;
    assert_eq!(second.status, 401);
    // Its own observation settings: only the A that reads baggage takes the request id
    // a caller sent there.
    let with_baggage = |a: &InProcess| {
        send(
            client()
                .get(a.at("/health"))
                .header("baggage", "request.id=from-baggage"),
        )
    };
    assert_eq!(with_baggage(&default).await.request_id(), "from-baggage");
    let ignored = with_baggage(&strict).await;
    assert_eq!(ignored.status, 200);
    assert_ne!(ignored.request_id(), "from-baggage");
}

#[tokio::test]
async fn b_in_process_combines_its_as_answer_or_says_it_is_unavailable() {
    // Arrange
    let a = InProcess::a(&[]).await;
    let b = InProcess::b(&a.url(), &[]).await;
    let b_alone = InProcess::b(&format!("http://{}", vacant_addr()), &[]).await;

    // Act
    let combined = post_json(
        &b.at("/protected-action"),
        demo_login_with(json!({"action": "ping"})),
        Some("demo-123"),
    )
    .await;
    let refused = post_json(
        &b.at("/protected-action"),
        json!({"username": "divya", "password": "wrong", "action": "ping"}),
        None,
    )
    .await;
    let unavailable = post_json(
        &b_alone.at("/protected-action"),
        demo_login_with(json!({"action": "ping"})),
        None,
    )
    .await;

    // Assert
    assert_eq!(get(&b.at("/health")).await.status, 200);
    assert_eq!(combined.status, 200);
    assert_eq!(
        combined.text,
        "{\"action\":\"ping\",\"consumer\":\"ok\",\"request_id\":\"demo-123\",\"token\":\"token-divya\",\"user\":\"divya\"}\n"
    );
    assert_eq!(refused.status, 401);
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.json["error"], "provider unavailable");
}
