//! Service A's routes: `GET /health`, `POST /token`, `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use telemetry::http::{Json, JsonBody};
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::metrics::{self as m, TokenOutcome};
use crate::users::Users;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Who may have a token.
    pub users: Arc<Users>,
    /// Ceiling for `delay_ms`.
    pub max_delay_ms: u64,
}

/// The whole HTTP surface of service A, with the shared telemetry layers.
pub fn router(state: AppState, metrics: telemetry::metrics::Metrics) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/token", post(issue_token))
        .route(
            "/metrics",
            telemetry::metrics::endpoint(metrics, m::json_view),
        )
        .with_state(state);
    telemetry::observe::instrument(routes)
}

/// Body of `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `"ok"` while the process serves requests.
    pub status: &'static str,
}

/// `GET /health`: 200 while the process is up. A depends on nothing, so there is nothing
/// else to check.
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Body of `POST /token`. Its `Debug` output never shows the password.
#[derive(Deserialize)]
pub struct TokenRequest {
    /// Who asks.
    pub username: String,
    /// Their password.
    pub password: String,
    /// Optional simulated latency; validated by hand so a bad value gets a 400 that says what
    /// is allowed, rather than a generic type error.
    #[serde(default)]
    pub delay_ms: Option<serde_json::Value>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("delay_ms", &self.delay_ms)
            .finish()
    }
}

/// Body of a successful `POST /token`.
#[derive(Debug, Serialize)]
pub struct TokenGrant {
    /// `token-<username>`: deterministic, so the walkthrough's output is reproducible.
    pub token: String,
    /// The user the token is for.
    pub user: String,
}

/// `POST /token`: waits `delay_ms` if asked, then answers 200 with a token for valid
/// credentials, 401 otherwise. The wait comes first and does not depend on the credentials.
pub async fn issue_token(
    State(state): State<AppState>,
    request_id: telemetry::RequestId,
    body: Result<JsonBody<TokenRequest>, telemetry::http::BodyError>,
) -> Result<Json<TokenGrant>, ApiError> {
    let JsonBody(request) = body?;
    let delay_ms = match parse_delay(request.delay_ms.as_ref(), state.max_delay_ms) {
        Ok(delay) => delay,
        Err(e) => {
            m::token_request(TokenOutcome::InvalidDelay);
            return Err(e);
        }
    };
    if let Some(delay_ms) = delay_ms {
        m::delay_requested(delay_ms);
        tokio::time::sleep(Duration::from_millis(delay_ms))
            .instrument(tracing::info_span!(
                "simulated_delay",
                delay_ms,
                request.id = %request_id.0
            ))
            .await;
    }
    if !state.users.verify(&request.username, &request.password) {
        m::token_request(TokenOutcome::InvalidCredentials);
        return Err(ApiError::InvalidCredentials);
    }
    m::token_request(TokenOutcome::Issued);
    Ok(Json(TokenGrant {
        token: format!("token-{}", request.username),
        user: request.username,
    }))
}

/// `delay_ms` must be absent, `null`, or an integer from 0 to `max`.
fn parse_delay(value: Option<&serde_json::Value>, max: u64) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(ms) if ms <= max => Ok(Some(ms)),
            _ => Err(ApiError::InvalidDelay { max }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delay_accepts_whole_milliseconds_up_to_the_ceiling() {
        assert_eq!(parse_delay(None, 5000).ok(), Some(None));
        assert_eq!(parse_delay(Some(&json!(null)), 5000).ok(), Some(None));
        assert_eq!(parse_delay(Some(&json!(0)), 5000).ok(), Some(Some(0)));
        assert_eq!(parse_delay(Some(&json!(5000)), 5000).ok(), Some(Some(5000)));
    }

    #[test]
    fn delay_refuses_everything_else() {
        for bad in [
            json!(-1),
            json!(1.5),
            json!("300"),
            json!(5001),
            json!(true),
            json!([1]),
        ] {
            assert!(parse_delay(Some(&bad), 5000).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let request: TokenRequest =
            serde_json::from_value(json!({"username": "divya", "password": "pass123"}))
                .expect("parses");
        assert!(!format!("{request:?}").contains("pass123"));
    }
}
