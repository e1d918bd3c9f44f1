//! Every error service A answers, and the one place each becomes a response:
//! `{"error": "..."}` with the status documented on its variant.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use telemetry::http::BodyError;

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
    /// 400, 413, 415 or 422: the body is not acceptable JSON (see [`BodyError`]).
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::InvalidDelay { .. } => StatusCode::BAD_REQUEST,
            Self::Body(body) => body.status,
        };
        telemetry::http::error(status, self.to_string())
    }
}
