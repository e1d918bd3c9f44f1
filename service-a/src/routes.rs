//! Service A's routes: `GET /health`, `POST /token`, `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use telemetry::edge::{Json, JsonBody};
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::faults::Teaching;
use crate::metrics::TokenOutcome;
use crate::throttle::LoginThrottle;
use crate::users::Users;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Who may have a token.
    pub users: Arc<Users>,
    /// Failed logins per username.
    pub throttle: Arc<LoginThrottle>,
    /// Ceiling for `delay_ms`.
    pub max_delay_ms: u64,
    /// The teaching knobs, from the flags and from the fault endpoint.
    pub faults: Arc<Teaching>,
    /// A's own series.
    pub token_metrics: Arc<crate::metrics::TokenMetrics>,
}

use telemetry::edge::CallerDeadline;
use telemetry::edge::Password;

/// Added to the caller's deadline. The caller's clock started first (before the request
/// crossed the network), so with this grace the caller's own timeout always fires first and
/// it never receives a 504 racing its timeout; A's deadline is the backstop for when the
/// caller's hang-up does not reach A (a proxy in between keeps the connection open).
const DEADLINE_GRACE: Duration = Duration::from_millis(25);

/// The whole HTTP surface of service A (the server adds the shared layers). `description`
/// (served at `/openapi.json`) describes every route here: see `crate::openapi`.
pub fn router(
    state: AppState,
    metrics: telemetry::observe::Metrics,
    description: serde_json::Value,
) -> Router {
    Router::new()
        .route("/health", get(telemetry::edge::health))
        .route("/token", post(issue_token))
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
/// Body of `POST /token`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// Who asks.
    pub username: String,
    /// Their password (never logged).
    #[schema(value_type = String, format = Password)]
    pub password: Password,
    /// Milliseconds A waits before answering, to play a slow provider: a whole number up to
    /// `--max-delay-ms` (the `maximum` here is this A's). Validated by hand, so a bad value
    /// gets a 400 that says what is allowed rather than a generic type error.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 5000)]
    pub delay_ms: Option<serde_json::Value>,
    /// Answer this 5xx (after any delay) instead of a token, to play a failing provider.
    /// Honoured only when A runs with `--allow-fail-status`; otherwise any value is a 400.
    #[serde(default)]
    #[schema(value_type = Option<u16>, minimum = 500, maximum = 599)]
    pub fail_status: Option<serde_json::Value>,
}

/// Body of a successful `POST /token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenGrant {
    /// `token-<username>`: deterministic, so the walkthrough's output is reproducible.
    pub token: String,
    /// The user the token is for.
    pub user: String,
}

/// `POST /token`. In order: validate the body; refuse a username with too many recent failed
/// logins (429), or check the password and count it if wrong; wait `delay_ms` plus
/// `--extra-latency-ms`, but never past the caller's deadline (`x-request-timeout-ms`; then
/// 504, work abandoned); answer an injected failure if one is asked for or drawn; then 200
/// with a token for valid credentials, 401 otherwise. The wait does not depend on the
/// credentials.
#[utoipa::path(
    post,
    path = "/token",
    operation_id = "token",
    tag = "provider",
    summary = "A token for valid credentials",
    description = "Validates the body; refuses a username with too many recent failed logins (429), or checks the password and counts a wrong one; waits `delay_ms` (plus `--extra-latency-ms`), never past the caller's deadline; then answers a token for valid credentials, 401 otherwise. A caller may say how long it will wait in the header `x-request-timeout-ms` (milliseconds; service B sends it): when that passes first, A stops and answers 504.",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A token for these credentials.", body = TokenGrant),
        (status = 400, description = "`delay_ms` or `fail_status` outside its range, or `fail_status` while A does not allow it.",
         body = telemetry::edge::ErrorBody),
        (status = 401, description = "Unknown user or wrong password: one answer for both.",
         body = telemetry::edge::ErrorBody),
        (status = 429, description = "Too many failed logins for this username in the window; `Retry-After` says when the oldest leaves it.",
         body = telemetry::edge::ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until this username may try again."))),
        (status = 504, description = "The caller's deadline (`x-request-timeout-ms`) passed first.",
         body = telemetry::edge::ErrorBody),
        (status = "5XX", description = "A failure injected on purpose: the `fail_status` asked for (with `--allow-fail-status`), or 503 at the `--failure-rate`.",
         body = telemetry::edge::ErrorBody),
    ),
)]
pub async fn issue_token(
    State(state): State<AppState>,
    request_id: telemetry::RequestId,
    CallerDeadline(deadline): CallerDeadline,
    body: Result<JsonBody<TokenRequest>, telemetry::edge::BodyError>,
) -> Result<Json<TokenGrant>, ApiError> {
    let outcome = token_outcome(&state, &request_id, deadline, body).await;
    state.token_metrics.token_request(match &outcome {
        Ok(_) => TokenOutcome::Issued,
        Err(ApiError::InvalidCredentials) => TokenOutcome::InvalidCredentials,
        Err(ApiError::Throttled { .. }) => TokenOutcome::Throttled,
        Err(ApiError::DeadlineExceeded) => TokenOutcome::DeadlineExceeded,
        Err(ApiError::InjectedFailure(_)) => TokenOutcome::InjectedFailure,
        Err(
            ApiError::InvalidDelay { .. } | ApiError::InvalidFailStatus | ApiError::FailStatusOff,
        ) => TokenOutcome::InvalidRequest,
        // A body the extractor refused never reached the token logic.
        Err(ApiError::Body(_)) => return outcome,
    });
    outcome
}

async fn token_outcome(
    state: &AppState,
    request_id: &telemetry::RequestId,
    deadline: Option<Duration>,
    body: Result<JsonBody<TokenRequest>, telemetry::edge::BodyError>,
) -> Result<Json<TokenGrant>, ApiError> {
    let JsonBody(request) = body?;
    let delay_ms = parse_delay(request.delay_ms.as_ref(), state.max_delay_ms)?;
    let fail_status = parse_fail_status(request.fail_status.as_ref())?;
    if fail_status.is_some() && !state.faults.flags().allow_fail_status {
        return Err(ApiError::FailStatusOff);
    }
    // The login's outcome is decided now, before any wait: the guess takes its place in the
    // count and is settled at once, so a wrong guess stays counted however many arrive
    // together, and a right password never holds a place while it waits (other logins of
    // the same user in flight cannot get it throttled).
    let guess = state
        .throttle
        .begin(&request.username)
        .map_err(|retry_after| ApiError::Throttled { retry_after })?;
    let valid = state
        .users
        .verify(&request.username, request.password.expose());
    if valid {
        drop(guess);
    } else {
        guess.failed();
    }

    if let Some(delay_ms) = delay_ms {
        state.token_metrics.delay_requested(delay_ms);
    }
    let draw = state.faults.draw();
    let wait = Duration::from_millis(delay_ms.unwrap_or(0)) + draw.extra;
    // Work the caller will not wait for is not done: the wait stops at the deadline, and a
    // deadline that has already passed (0) is refused outright.
    let deadline = deadline.map(|d| if d.is_zero() { d } else { d + DEADLINE_GRACE });
    let expired = deadline.is_some_and(|d| d.is_zero() || d < wait);
    let waited = deadline.map_or(wait, |d| d.min(wait));
    if !waited.is_zero() {
        tokio::time::sleep(waited)
            .instrument(tracing::info_span!(
                "simulated_delay",
                lab.delay_ms = millis(wait),
                request.id = %request_id.0
            ))
            .await;
    }
    if expired {
        telemetry::event!(
            WARN,
            "deadline_exceeded",
            deadline_ms = millis(waited),
            delay_ms = millis(wait)
        );
        return Err(ApiError::DeadlineExceeded);
    }

    let injected = fail_status.or_else(|| draw.fail.then_some(StatusCode::SERVICE_UNAVAILABLE));
    if let Some(status) = injected {
        return Err(ApiError::InjectedFailure(status));
    }
    if !valid {
        return Err(ApiError::InvalidCredentials);
    }
    Ok(Json(TokenGrant {
        token: format!("token-{}", request.username),
        user: request.username,
    }))
}

/// Whole milliseconds, as i64: span attributes must be integers, and tracing-opentelemetry
/// exports unsigned numbers as text.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `fail_status` must be absent, `null`, or an integer from 500 to 599.
fn parse_fail_status(value: Option<&serde_json::Value>) -> Result<Option<StatusCode>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => telemetry::edge::json_whole_number(v)
            .filter(|code| (500..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code as u16).ok())
            .map(Some)
            .ok_or(ApiError::InvalidFailStatus),
    }
}

/// `delay_ms` must be absent, `null`, or an integer from 0 to `max`.
fn parse_delay(value: Option<&serde_json::Value>, max: u64) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match telemetry::edge::json_whole_number(v) {
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
        assert_eq!(parse_delay(Some(&json!(300.0)), 5000).ok(), Some(Some(300)));
        for bad in [
            json!(-1),
            json!(-0.5),
            json!(1e300),
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
    fn fail_status_must_be_a_5xx() {
        assert_eq!(
            parse_fail_status(Some(&json!(503))).ok(),
            Some(Some(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(parse_fail_status(None).ok(), Some(None));
        assert_eq!(
            parse_fail_status(Some(&json!(502.0))).ok(),
            Some(Some(StatusCode::BAD_GATEWAY))
        );
        for bad in [json!(404), json!(600), json!("500"), json!(500.5)] {
            assert!(parse_fail_status(Some(&bad)).is_err(), "{bad}");
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
