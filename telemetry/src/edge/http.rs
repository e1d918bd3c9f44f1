//! The HTTP edge both services share: JSON bodies in and out, and the rule that every error
//! is `{"error": "..."}` with the right 4xx status, including the ones the framework produces
//! (malformed JSON, wrong Content-Type, oversized body, unknown route, wrong method).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest request body accepted, in bytes; larger bodies get 413.
pub const BODY_LIMIT: usize = 16 * 1024;

/// A JSON response body, with a trailing newline so `curl` output ends its line (the lab's
/// Content-Length values count it too).
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(mut body) => {
                body.push(b'\n');
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "response body could not be serialised");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// The body of every error response. `details` is optional context (B's 503 says what
/// happened on each attempt); keys are in the lab's (alphabetical) order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Extra context for a human; absent when there is nothing to add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// A short, stable description of what went wrong.
    pub error: String,
}

/// The bytes of `{"error": message}` and a newline, for responses written outside axum.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut body = serde_json::to_vec(&ErrorBody {
        details: None,
        error: message.to_owned(),
    })
    .unwrap_or_default();
    body.push(b'\n');
    body
}

/// A JSON number that is a whole, non-negative number: `300`, and also `300.0`, which JSON
/// (and JSON Schema's `integer`) count as the same number. `None` for anything else.
pub fn json_whole_number(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        // Whole floats up to 2^53, where f64 still holds every integer exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
            .map(|f| f as u64)
    })
}

/// A `Retry-After` value for `wait`: whole seconds, rounded up, at least 1.
pub fn retry_after(wait: std::time::Duration) -> http::HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1).into()
}

/// An error response: `status` with `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            details: None,
            error: message.into(),
        }),
    )
        .into_response()
}

/// A JSON request body whose every rejection is a JSON error with the right status:
/// 400 malformed JSON, 415 not `application/json`, 422 wrong shape or types, 413 larger
/// than [`BODY_LIMIT`]. (The server reads bodies whole before handlers run, with the 408 of
/// `--body-timeout-ms`: see [`crate::edge::limits`].)
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// Why a request body was refused; converts into the response described on [`JsonBody`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    /// 400, 413, 415 or 422.
    pub status: StatusCode,
    /// What was wrong, in words a caller can act on.
    pub message: String,
}

impl From<JsonRejection> for BodyError {
    fn from(rejection: JsonRejection) -> Self {
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with Content-Type: application/json".to_owned()
            }
            JsonRejection::JsonSyntaxError(_) => {
                format!("malformed JSON: {}", innermost(&rejection))
            }
            JsonRejection::JsonDataError(_) => {
                format!("invalid request body: {}", innermost(&rejection))
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                format!("request body is larger than {BODY_LIMIT} bytes")
            }
            _ => format!("could not read the request body: {}", rejection.body_text()),
        };
        let status = match rejection.status() {
            s if s.is_client_error() => s,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, message }
    }
}

/// The root cause of an error chain: the serde message at the bottom of a rejection
/// ("missing field `password` at line 1 column 20") without axum's prefix, or the OS error
/// under reqwest's "error sending request for url …" ("Connection refused (os error 111)").
pub fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = BodyError;

    /// The common case pays for nothing it does not use: a body sent as exactly
    /// `application/json` is parsed straight into `T`, and only a body that fails is parsed
    /// again by axum, whose error names where it went wrong (the path to the bad field, a
    /// wrapper that costs on every parse). Any other `Content-Type` goes to axum whole,
    /// which decides what is JSON.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let plain_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"));
        if !plain_json {
            let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
            return Ok(Self(value));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| BodyError::from(JsonRejection::from(e)))?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Self(value)),
            Err(_) => match axum::Json::<T>::from_bytes(&bytes) {
                Err(rejection) => Err(rejection.into()),
                // Both parsers read JSON the same way; kept for completeness.
                Ok(axum::Json(value)) => Ok(Self(value)),
            },
        }
    }
}

/// 404 for any path no route matches.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

/// 405 for a known path with a method it does not serve.
pub async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Login {
        username: String,
        attempts: u32,
    }

    fn request(content_type: &str, body: &'static str) -> Request {
        http::Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .expect("request")
    }

    /// The fast path answers exactly what axum's extractor answers, for good bodies and
    /// bad ones alike.
    #[tokio::test]
    async fn the_fast_path_says_what_axum_says() {
        for body in [
            r#"{"username":"divya","attempts":1}"#,
            r#"{"username":"divya"}"#,
            r#"{"username":"divya","attempts":"one"}"#,
            r#"{"username":"divya","attempts":1"#,
            r#"{"username":"divya","attempts":1} trailing"#,
            "",
            "[]",
        ] {
            let ours = JsonBody::<Login>::from_request(request("application/json", body), &())
                .await
                .map(|JsonBody(v)| v)
                .map_err(|e| (e.status, e.message));
            let theirs = axum::Json::<Login>::from_request(request("application/json", body), &())
                .await
                .map(|axum::Json(v)| v)
                .map_err(|e| {
                    let e = BodyError::from(e);
                    (e.status, e.message)
                });
            assert_eq!(ours, theirs, "{body:?}");
        }
    }

    #[tokio::test]
    async fn other_content_types_are_axums_to_judge() {
        let body = r#"{"username":"divya","attempts":1}"#;
        for content_type in [
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "application/cloudevents+json",
            "text/json",
            "application/json;",
            "application/json, text/plain",
        ] {
            let ours = JsonBody::<Login>::from_request(request(content_type, body), &())
                .await
                .map(|JsonBody(v)| v)
                .map_err(|e| e.status);
            let theirs = axum::Json::<Login>::from_request(request(content_type, body), &())
                .await
                .map(|axum::Json(v)| v)
                .map_err(|e| e.status());
            assert_eq!(ours, theirs, "{content_type}");
        }
        let refused = JsonBody::<Login>::from_request(request("text/json", body), &()).await;
        assert!(refused.is_err_and(|e| e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
}
