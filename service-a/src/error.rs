//! Every error service A answers, and the one place each becomes a response:
//! `{"error": "..."}` with the status documented on its variant.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use telemetry::edge::BodyError;

/// What can go wrong with a request to service A.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401. Unknown user or wrong password: deliberately one answer for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 400. `delay_ms` is not a whole number of milliseconds within the ceiling.
    #[error("delay_ms must be an integer from 0 to {max} (milliseconds)")]
    InvalidDelay {
        /// The ceiling, `--max-delay-ms`.
        max: u64,
    },
    /// 400. `fail_status` is not an integer from 500 to 599.
    #[error("fail_status must be an integer from 500 to 599")]
    InvalidFailStatus,
    /// 400. The request asks for a failure, but A was not started with --allow-fail-status.
    #[error("fail_status is off: start service A with --allow-fail-status to use it")]
    FailStatusOff,
    /// 429. Too many failed logins for this username; `Retry-After` says when to try again.
    #[error("too many failed logins for this user: try again later")]
    Throttled {
        /// Until the oldest counted failure leaves the window.
        retry_after: std::time::Duration,
    },
    /// 504: the caller's deadline (`x-request-timeout-ms`) passed first; nobody waits.
    #[error("deadline exceeded: the caller stopped waiting")]
    DeadlineExceeded,
    /// 5xx (the status asked for). A failure injected on purpose (`fail_status` or
    /// `--failure-rate`), to play a flaky provider.
    #[error("injected failure")]
    InjectedFailure(StatusCode),
    /// 400, 413, 415 or 422: the body is not acceptable JSON (see [`BodyError`]).
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::InvalidDelay { .. } | Self::InvalidFailStatus | Self::FailStatusOff => {
                StatusCode::BAD_REQUEST
            }
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::InjectedFailure(status) => *status,
            Self::Body(body) => body.status,
        };
        let mut response = telemetry::edge::error(status, self.to_string());
        if let Self::Throttled { retry_after } = self {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                telemetry::edge::retry_after(retry_after),
            );
        }
        response
    }
}
