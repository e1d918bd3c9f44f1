//! Every error service B answers, and the one place each becomes a response. Bodies are
//! `{"error": "..."}`, with `details` where there is more to say.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use telemetry::edge::{BodyError, ErrorBody, Json};

use crate::provider::ProviderError;

/// What can go wrong with a request to service B.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400. `delay_ms` is not a whole number of milliseconds within B's ceiling.
    #[error("delay_ms must be an integer from 0 to {max} (milliseconds)")]
    InvalidDelay {
        /// The ceiling, `--max-delay-ms`.
        max: u64,
    },
    /// 400, 413, 415 or 422: the body is not acceptable JSON (see [`BodyError`]).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The call to A did not give a token:
    /// - 401 `invalid credentials` when A said so;
    /// - 400 with A's reason when A refused the request as invalid;
    /// - 429 (with A's `Retry-After`) when A is throttling;
    /// - 503 `provider unavailable` when every attempt failed or the deadline passed,
    ///   `details` saying how, or at once when the circuit breaker is open (with
    ///   `Retry-After`);
    /// - 502 `bad answer from provider` when A answered something unusable;
    /// - 504 `deadline exceeded` when the caller's own deadline passed first, `details`
    ///   saying what the attempts met.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, details) = match self {
            Self::InvalidDelay { .. } => (StatusCode::BAD_REQUEST, self.to_string(), None),
            Self::Body(body) => return body.into_response(),
            Self::Provider(ProviderError::InvalidCredentials) => (
                StatusCode::UNAUTHORIZED,
                "invalid credentials".to_owned(),
                None,
            ),
            Self::Provider(ProviderError::InvalidRequest(reason)) => {
                (StatusCode::BAD_REQUEST, reason, None)
            }
            Self::Provider(ProviderError::Throttled { retry_after }) => {
                let mut response =
                    telemetry::edge::error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                if let Some(value) = retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return response;
            }
            Self::Provider(ProviderError::Unavailable(failures)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "provider unavailable".to_owned(),
                Some(failures.details()),
            ),
            Self::Provider(ProviderError::CircuitOpen { retry_in, evidence }) => {
                let details = format!(
                    "circuit open: {evidence}; not calling the provider; next probe in {}ms",
                    retry_in.as_millis()
                );
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(ErrorBody {
                        details: Some(details),
                        error: "provider unavailable".to_owned(),
                    }),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, telemetry::edge::retry_after(retry_in));
                return response;
            }
            Self::Provider(ProviderError::CallerDeadline(failures)) => (
                StatusCode::GATEWAY_TIMEOUT,
                "deadline exceeded".to_owned(),
                Some(failures.details()),
            ),
            Self::Provider(ProviderError::BadAnswer(what)) => (
                StatusCode::BAD_GATEWAY,
                "bad answer from provider".to_owned(),
                Some(what),
            ),
        };
        (status, Json(ErrorBody { details, error })).into_response()
    }
}
