//! THE UNINSTRUMENTED BASELINE. Not part of the system: the same work as services A and B,
//! with no logs, metrics, traces, request ids, retries or validation beyond what the work
//! needs, so the benchmark can show what the instrumentation costs.
//!
//! - baseline A: `POST /token` parses the same JSON, compares the password, waits
//!   `delay_ms` if asked, answers the same JSON.
//! - baseline B: `POST /protected-action` parses the same JSON, calls baseline A with a
//!   1 s timeout (one attempt), answers the same combined JSON.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(default, skip_serializing)]
    action: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct Grant {
    token: String,
    user: String,
}

#[derive(Serialize)]
struct Combined {
    action: String,
    consumer: &'static str,
    request_id: String,
    token: String,
    user: String,
}

async fn token(axum::Json(c): axum::Json<Credentials>) -> Result<axum::Json<Grant>, StatusCode> {
    if let Some(ms) = c.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if c.username != "divya" || c.password != "pass123" {
        return Err(StatusCode::UNAUTHORIZED);
    }
    Ok(axum::Json(Grant {
        token: format!("token-{}", c.username),
        user: c.username,
    }))
}

async fn protected_action(
    State((client, url)): State<(reqwest::Client, String)>,
    axum::Json(mut c): axum::Json<Credentials>,
) -> Result<axum::Json<Combined>, StatusCode> {
    let action = c.action.take().unwrap_or_else(|| "ping".to_owned());
    let reply = client
        .post(&url)
        .json(&c)
        .send()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    if !reply.status().is_success() {
        return Err(reply.status());
    }
    let grant: Grant = reply.json().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(axum::Json(Combined {
        action,
        consumer: "ok",
        request_id: String::new(),
        token: grant.token,
        user: grant.user,
    }))
}

/// Serves baseline A on `listen` until killed.
pub async fn serve_a(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/token", post(token))
        .route("/health", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, app).await
}

/// Serves baseline B on `listen`, calling baseline A at `provider`, until killed.
pub async fn serve_b(listen: SocketAddr, provider: String) -> std::io::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/protected-action", post(protected_action))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state((client, format!("{provider}/token")));
    axum::serve(listener, app).await
}
