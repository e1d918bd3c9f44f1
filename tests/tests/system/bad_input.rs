//! Every bad input gets a JSON `{"error": ...}` with the right 4xx status, on both services;
//! never a 500, never a hang, and the service keeps serving afterwards.
//!
//! `error_messages_say_what_is_allowed` runs A inside the test process (it reads only the
//! answers); the other two also read the binaries' log lines (no 500 logged, nothing reached A).

use system_tests::{InProcess, Service, client, send};

struct Case {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
}

fn case(
    method: &'static str,
    path: &'static str,
    ct: Option<&'static str>,
    body: &str,
    status: u16,
) -> Case {
    Case {
        method,
        path,
        content_type: ct,
        body: body.to_owned(),
        status,
    }
}

const JSON: Option<&str> = Some("application/json");

fn cases(post_path: &'static str) -> Vec<Case> {
    vec![
        case("POST", post_path, JSON, "{\"username\":\"divya\"", 400),
        case("POST", post_path, JSON, "not json", 400),
        case("POST", post_path, JSON, "", 400),
        case("POST", post_path, JSON, "[1,2]", 422),
        case("POST", post_path, JSON, "{\"username\":\"divya\"}", 422),
        case("POST", post_path, JSON, "{\"password\":\"pass123\"}", 422),
        case(
            "POST",
            post_path,
            JSON,
            "{\"username\":7,\"password\":\"pass123\"}",
            422,
        ),
        case(
            "POST",
            post_path,
            JSON,
            "{\"username\":\"divya\",\"password\":\"pass123\",\"delay_ms\":-1}",
            400,
        ),
        case(
            "POST",
            post_path,
            JSON,
            "{\"username\":\"divya\",\"password\":\"pass123\",\"delay_ms\":1.5}",
            400,
        ),
        case(
            "POST",
            post_path,
            JSON,
            "{\"username\":\"divya\",\"password\":\"pass123\",\"delay_ms\":\"300\"}",
            400,
        ),
        case(
            "POST",
            post_path,
            Some("text/plain"),
            "{\"username\":\"divya\",\"password\":\"pass123\"}",
            415,
        ),
        case(
            "POST",
            post_path,
            None,
            "{\"username\":\"divya\",\"password\":\"pass123\"}",
            415,
        ),
        case(
            "POST",
            post_path,
            JSON,
            &format!(
                "{{\"username\":\"{}\",\"password\":\"x\"}}",
                "a".repeat(17 * 1024)
            ),
            413,
        ),
        case("GET", post_path, None, "", 405),
        case("DELETE", "/health", None, "", 405),
        case("GET", "/no-such-route", None, "", 404),
        case("GET", "/metrics?format=xml", None, "", 400),
    ]
}

async fn check_all(service: &Service, post_path: &'static str) {
    for case in cases(post_path) {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut request = client()
            .request(method, service.at(case.path))
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            request = request.header("content-type", ct);
        }
        let reply = send(request).await;
        let what = format!(
            "{} {} {:?}",
            case.method,
            case.path,
            &case.body.chars().take(80).collect::<String>()
        );
        assert_eq!(reply.status, case.status, "{what}: {}", reply.text);
        assert_eq!(reply.header("content-type"), "application/json", "{what}");
        let error = reply.json["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty(),
            "{what}: error body is JSON with an error: {}",
            reply.text
        );
        assert!(
            !reply.request_id().is_empty(),
            "{what}: request id echoed on errors too"
        );
    }
    let health = system_tests::get(&service.at("/health")).await;
    assert_eq!(health.status, 200, "still serving");
}

#[tokio::test]
async fn service_a_refuses_bad_input_with_json_errors() {
    let a = Service::a(&[]);
    check_all(&a, "/token").await;
    a.sync_logs().await;
    assert!(a.logs.matching(|l| l["status"] == 500).is_empty());
}

#[tokio::test]
async fn service_b_refuses_bad_input_with_json_errors() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    check_all(&b, "/protected-action").await;
    a.sync_logs().await;
    b.sync_logs().await;
    assert!(b.logs.matching(|l| l["status"] == 500).is_empty());
    assert!(
        a.logs
            .matching(|l| l["endpoint"] == "POST /token")
            .is_empty(),
        "bad input never reaches A"
    );
}

#[tokio::test]
async fn error_messages_say_what_is_allowed() {
    let a = InProcess::a(&["--max-delay-ms", "1000"]).await;
    let reply = a
        .token(
            system_tests::demo_login_with(serde_json::json!({"delay_ms": 1001})),
            None,
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json["error"],
        "delay_ms must be an integer from 0 to 1000 (milliseconds)"
    );

    let missing = a
        .token(serde_json::json!({"username": "divya"}), None)
        .await;
    assert!(
        missing.json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("missing field `password`")
    );
}
