//! X-Request-ID: kept when valid, replaced by a UUID v4 otherwise, echoed on every route,
//! in every log line of the request, and forwarded from B to A.
//!
//! `every_route_echoes_the_id_even_on_errors` runs A inside the test process (it reads only
//! the echoed header); the others read the binaries' log lines.

use system_tests::{InProcess, Service, client, is_uuid_v4, send};

async fn health_with_id(service: &Service, id: &str) -> String {
    let reply = send(
        client()
            .get(service.at("/health"))
            .header("x-request-id", id),
    )
    .await;
    reply.request_id().to_owned()
}

#[tokio::test]
async fn valid_ids_are_kept() {
    let a = Service::a(&[]);
    for id in ["demo-123", "a.b_c:d-E9", &"x".repeat(128)] {
        assert_eq!(health_with_id(&a, id).await, id);
        assert_eq!(a.logs.request_line(id)["request_id"], id);
    }
}

#[tokio::test]
async fn invalid_or_missing_ids_are_replaced_by_a_uuid() {
    let a = Service::a(&[]);
    for id in [
        "has space",
        &"x".repeat(129),
        "semi;colon",
        "quote\"d",
        "{}",
    ] {
        let echoed = health_with_id(&a, id).await;
        assert!(is_uuid_v4(&echoed), "{id:?} → {echoed:?}");
    }
    let reply = system_tests::get(&a.at("/health")).await;
    assert!(is_uuid_v4(reply.request_id()));
    a.sync_logs().await;
    assert!(
        a.logs
            .matching(|l| l["request_id"] == "has space")
            .is_empty(),
        "an invalid id never reaches a log line"
    );
}

#[tokio::test]
async fn every_route_echoes_the_id_even_on_errors() {
    let a = InProcess::a(&[]).await;
    for path in ["/health", "/metrics", "/nope", "/token"] {
        let reply = send(client().get(a.at(path)).header("x-request-id", "echo-me")).await;
        assert_eq!(reply.request_id(), "echo-me", "{path}");
    }
}

#[tokio::test]
async fn b_forwards_its_generated_id_to_a() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);

    let reply = b.protected_action(system_tests::demo_login(), None).await;

    let id = reply.request_id();
    assert!(is_uuid_v4(id));
    assert_eq!(a.logs.request_line(id)["endpoint"], "POST /token");
}
