//! The idiomatic peer the benchmark measures does the services' work (the walkthrough's
//! happy path, B's call to A carrying the trace and the request id). The benchmark's own
//! smoke run (about 50 s of `wrk`) is the `table` target, which CI runs after the test
//! command. It asserts no speed: figures belong in BENCHMARKS.md, measured with the full
//! run, not in a test that could flake on a busy machine.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process of the benchmark's binary, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// Starts `bench <role> --listen <addr> [args]`, its logs discarded.
fn start(role: &str, listen: SocketAddr, args: &[&str]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([role, "--listen", &listen.to_string()])
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the benchmark binary");
    Running(child)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Polls `GET /health` until it answers 200, for at most 20 s.
async fn wait_healthy(addr: SocketAddr) {
    let client = client();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(reply) = client.get(format!("http://{addr}/health")).send().await
            && reply.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} did not answer GET /health within 20 s");
}

async fn post(
    url: String,
    request_id: Option<&str>,
    body: serde_json::Value,
) -> (u16, Option<String>, serde_json::Value) {
    let mut request = client().post(url).json(&body);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let reply = request.send().await.expect("answer");
    let status = reply.status().as_u16();
    let id = reply
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = reply.json().await.expect("a JSON body");
    (status, id, body)
}

#[tokio::test]
async fn the_peer_answers_the_walkthrough_happy_path() {
    // Arrange
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let _a = start("peer-a", a_addr, &[]);
    let _b = start(
        "peer-b",
        b_addr,
        &["--provider", &format!("http://{a_addr}")],
    );
    wait_healthy(a_addr).await;
    wait_healthy(b_addr).await;
    let divya = serde_json::json!({"username": "divya", "password": "pass123", "action": "ping"});
    let wrong = serde_json::json!({"username": "divya", "password": "wrong"});

    // Act
    let token = post(format!("http://{a_addr}/token"), None, divya.clone()).await;
    let refused = post(format!("http://{a_addr}/token"), None, wrong.clone()).await;
    let action = post(
        format!("http://{b_addr}/protected-action"),
        Some("demo-123"),
        divya,
    )
    .await;
    let refused_by_b = post(format!("http://{b_addr}/protected-action"), None, wrong).await;

    // Assert
    assert_eq!(token.0, 200);
    assert_eq!(
        token.2,
        serde_json::json!({"token": "token-divya", "user": "divya"})
    );
    assert!(
        token.1.is_some_and(|id| !id.is_empty()),
        "A sets a request id"
    );
    assert_eq!(refused.0, 401);
    assert_eq!(
        refused.2,
        serde_json::json!({"error": "invalid credentials"})
    );
    assert_eq!(action.0, 200);
    assert_eq!(action.1.as_deref(), Some("demo-123"));
    assert_eq!(
        action.2,
        serde_json::json!({
            "action": "ping",
            "consumer": "ok",
            "request_id": "demo-123",
            "token": "token-divya",
            "user": "divya"
        })
    );
    assert_eq!(
        refused_by_b.0, 401,
        "A's 401 is passed on: {:?}",
        refused_by_b.2
    );
}

#[tokio::test]
async fn the_peer_b_sends_a_the_trace_and_the_request_id() {
    // Arrange: a stand-in A that keeps the headers of each call.
    let seen: Arc<Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: axum::http::HeaderMap| async move {
            kept.lock().expect("lock").push(headers);
            axum::Json(serde_json::json!({"token": "token-divya", "user": "divya"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a_addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let b_addr = free_addr();
    let _b = start(
        "peer-b",
        b_addr,
        &["--provider", &format!("http://{a_addr}")],
    );
    wait_healthy(b_addr).await;

    // Act
    let action = post(
        format!("http://{b_addr}/protected-action"),
        Some("demo-123"),
        serde_json::json!({"username": "divya", "password": "pass123"}),
    )
    .await;

    // Assert
    assert_eq!(action.0, 200, "{:?}", action.2);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "one attempt");
    let header = |name: &str| {
        seen[0]
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-request-id"), "demo-123");
    // W3C Trace Context, sampled: 00-<trace id>-<span id>-01.
    let traceparent = header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3] == "01"
            && parts[1] != "0".repeat(32),
        "traceparent {traceparent:?}"
    );
}
