//! The caller's deadline: how long a caller says it will wait for an answer, in the header
//! `x-request-timeout-ms` (like Envoy's `x-envoy-expected-rq-timeout-ms` or gRPC's
//! `grpc-timeout`). B sends it to A on every attempt; a caller of B may send it too. A
//! service uses it to stop work nobody waits for; it can only shorten what the service does,
//! never lengthen it.

use std::time::Duration;

use http::HeaderMap;

use crate::observe::TIMEOUT_HEADER;

/// Longest caller deadline honoured as given; larger values are clamped to it.
pub const MAX_CALLER_DEADLINE: Duration = Duration::from_secs(600);

/// How long the caller will wait, if it said (see [`caller_deadline`]). An extractor of its
/// own: taking the whole `HeaderMap` copied every header of every request.
#[derive(Debug, Clone, Copy)]
pub struct CallerDeadline(pub Option<Duration>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerDeadline {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(caller_deadline(&parts.headers)))
    }
}

/// How long the caller will wait, from `x-request-timeout-ms` (whole milliseconds), clamped
/// to [`MAX_CALLER_DEADLINE`]. A missing or malformed header means no deadline: a service
/// never refuses work over a header it cannot read.
pub fn caller_deadline(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(TIMEOUT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|ms| Duration::from_millis(ms).min(MAX_CALLER_DEADLINE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_deadline_is_read_and_clamped() {
        let mut headers = HeaderMap::new();
        assert_eq!(caller_deadline(&headers), None);
        headers.insert(TIMEOUT_HEADER, "250".parse().expect("value"));
        assert_eq!(caller_deadline(&headers), Some(Duration::from_millis(250)));
        headers.insert(TIMEOUT_HEADER, "99999999999".parse().expect("value"));
        assert_eq!(caller_deadline(&headers), Some(MAX_CALLER_DEADLINE));
        for junk in ["soon", "-5", "1.5", ""] {
            headers.insert(TIMEOUT_HEADER, junk.parse().expect("value"));
            assert_eq!(caller_deadline(&headers), None, "{junk:?}");
        }
    }
}
