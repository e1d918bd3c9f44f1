//! Service B's routes: `GET /health`, `POST /protected-action`, `GET /metrics`.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use telemetry::RequestId;
use telemetry::http::{Json, JsonBody};
use telemetry::secret::Password;

use crate::error::ApiError;
use crate::provider::{Provider, TokenRequest};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The client for service A.
    pub provider: Provider,
}

/// The whole HTTP surface of service B, with the shared telemetry layers.
pub fn router(state: AppState, metrics: telemetry::metrics::Metrics) -> Router {
    let routes = Router::new()
        .route("/health", get(telemetry::http::health))
        .route("/protected-action", post(protected_action))
        .route(
            "/metrics",
            telemetry::metrics::endpoint(metrics, crate::metrics::json_view),
        )
        .with_state(state);
    telemetry::observe::instrument(routes, telemetry::observe::AttemptHeader::Ignored)
}

/// Body of `POST /protected-action`. Its `Debug` output never shows the password (see
/// [`Password`]).
#[derive(Debug, Deserialize)]
pub struct ActionRequest {
    /// Passed to A.
    pub username: String,
    /// Passed to A.
    pub password: Password,
    /// What the caller wants done; `"ping"` when absent.
    #[serde(default)]
    pub action: Option<String>,
    /// Simulated latency to ask of A; validated here, its ceiling is A's to enforce.
    #[serde(default)]
    pub delay_ms: Option<serde_json::Value>,
}

/// The combined answer: B's own result and what A issued. Keys in the lab's order.
#[derive(Debug, Serialize)]
pub struct ActionResult {
    /// The action performed.
    pub action: String,
    /// B's verdict.
    pub consumer: &'static str,
    /// The request's id, as in the `X-Request-ID` response header.
    pub request_id: String,
    /// The token A issued.
    pub token: String,
    /// The user A issued it to.
    pub user: String,
}

/// `POST /protected-action`: gets a token from A for the caller's credentials and answers
/// the combined body. See [`ApiError`] for every other answer.
pub async fn protected_action(
    State(state): State<AppState>,
    request_id: RequestId,
    body: Result<JsonBody<ActionRequest>, telemetry::http::BodyError>,
) -> Result<Json<ActionResult>, ApiError> {
    let JsonBody(request) = body?;
    let delay_ms = match &request.delay_ms {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or(ApiError::InvalidDelay)?),
    };
    let grant = state
        .provider
        .issue_token(
            &TokenRequest {
                username: &request.username,
                password: &request.password,
                delay_ms,
            },
            &request_id,
        )
        .await?;
    Ok(Json(ActionResult {
        action: request.action.unwrap_or_else(|| "ping".to_owned()),
        consumer: "ok",
        request_id: request_id.0,
        token: grant.token,
        user: grant.user,
    }))
}
