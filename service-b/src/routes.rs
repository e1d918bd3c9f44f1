//! Service B's routes: `GET /health`, `POST /protected-action`, `GET /metrics`.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use telemetry::RequestId;
use telemetry::edge::{CallerDeadline, Password};
use telemetry::edge::{Json, JsonBody};

use crate::error::ApiError;
use crate::provider::{Provider, TokenRequest};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The client for service A.
    pub provider: Provider,
    /// Ceiling for `delay_ms`.
    pub max_delay_ms: u64,
}

/// The whole HTTP surface of service B (the server adds the shared layers). `description`
/// (served at `/openapi.json`) describes every route here: see `crate::openapi`.
pub fn router(
    state: AppState,
    metrics: telemetry::observe::Metrics,
    description: serde_json::Value,
) -> Router {
    Router::new()
        .route("/health", get(telemetry::edge::health))
        .route("/protected-action", post(protected_action))
        .route(
            "/metrics",
            telemetry::edge::metrics_endpoint(metrics, crate::metrics::json_view),
        )
        .route(
            "/openapi.json",
            telemetry::edge::openapi_endpoint(description),
        )
        .with_state(state)
}

// Its `Debug` output never shows the password (see `Password`).
/// Body of `POST /protected-action`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ActionRequest {
    /// Passed to A.
    pub username: String,
    /// Passed to A (never logged).
    #[schema(value_type = String, format = Password)]
    pub password: Password,
    /// What the caller wants done; `"ping"` when absent.
    #[serde(default)]
    pub action: Option<String>,
    /// Milliseconds to ask A to wait before answering (the lab's slow provider): a whole
    /// number up to B's `--max-delay-ms` (the `maximum` here is this B's). A has a ceiling
    /// of its own; a value over it gets A's 400, passed through.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 5000)]
    pub delay_ms: Option<serde_json::Value>,
}

/// The combined answer: B's own result and what A issued. Keys in the lab's order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActionResult {
    /// The action performed.
    pub action: String,
    /// B's verdict.
    #[schema(value_type = String, pattern = "^ok$")]
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
#[utoipa::path(
    post,
    path = "/protected-action",
    tag = "consumer",
    summary = "Get a token from service A and answer the combined result",
    description = "Calls A's `POST /token` with a strict per-attempt timeout (1 s by default) and retries timeouts, refused connections and 5xx within a retry budget and a deadline; a circuit breaker stops calling A while it keeps failing. A's 401, 400 and 429 are passed through, never retried. A caller may say how long it will wait in the header `x-request-timeout-ms` (milliseconds): it shortens B's deadline, never lengthens it, and when it passes first B answers 504. Slowness a caller asks for (`delay_ms`, or a shorter deadline) is its own: such calls never count toward the circuit breaker and retry from a share of the retry budget of their own.",
    request_body(content = ActionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A issued a token: B's result and A's grant.", body = ActionResult),
        (status = 400, description = "`delay_ms` is not a whole number within the ceiling, or A refused the request as invalid (its reason).",
         body = telemetry::edge::ErrorBody),
        (status = 401, description = "A says: unknown user or wrong password.",
         body = telemetry::edge::ErrorBody),
        (status = 429, description = "A is throttling this username; its `Retry-After` is passed through.",
         body = telemetry::edge::ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until this username may try again."))),
        (status = 502, description = "A answered something B cannot use (`details` says what).",
         body = telemetry::edge::ErrorBody),
        (status = 503, description = "`provider unavailable`: every attempt failed or the deadline passed (`details` says how, attempt by attempt), or the circuit breaker is open (then with `Retry-After`).",
         body = telemetry::edge::ErrorBody,
         headers(("Retry-After" = u64, description = "With an open breaker: seconds until the next probe of A."))),
        (status = 504, description = "`deadline exceeded`: the caller's own deadline (`x-request-timeout-ms`) passed before A answered (`details` says what the attempts met).",
         body = telemetry::edge::ErrorBody),
    ),
)]
pub async fn protected_action(
    State(state): State<AppState>,
    request_id: RequestId,
    CallerDeadline(caller_deadline): CallerDeadline,
    body: Result<JsonBody<ActionRequest>, telemetry::edge::BodyError>,
) -> Result<Json<ActionResult>, ApiError> {
    let JsonBody(request) = body?;
    let delay_ms = match &request.delay_ms {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            telemetry::edge::json_whole_number(value)
                .filter(|ms| *ms <= state.max_delay_ms)
                .ok_or(ApiError::InvalidDelay {
                    max: state.max_delay_ms,
                })?,
        ),
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
            caller_deadline,
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
