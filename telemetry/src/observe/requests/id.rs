//! `X-Request-ID`: accepted from the caller when it is 1–128 characters of
//! `[A-Za-z0-9._:-]`, otherwise taken from the `request.id` baggage entry when a caller sent
//! one (a proxy may drop custom headers, but keeps W3C `baggage`), otherwise replaced by a
//! fresh UUID v4; echoed on every response.
//!
//! tower-http does the setting and echoing; this module adds only the validation it lacks
//! (an invalid id is removed first, so tower-http generates a new one) and an extractor.

use axum::extract::{FromRequestParts, Request};
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::BaggagePropagator;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, SetRequestIdLayer};

/// The header that carries the id, in requests and responses, and from B to A.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The baggage key that carries the request id from service to service, so the callee
/// knows it even if a proxy drops `X-Request-ID`.
pub const BAGGAGE_KEY: &str = "request.id";

/// Longest id accepted from a caller.
pub const MAX_LEN: usize = 128;

/// Whether a caller-supplied id may be used as it is.
pub fn is_valid(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// What checks a request's `X-Request-ID` before tower-http sets one: [`drop_invalid`], and,
/// when the service reads W3C baggage, [`drop_invalid_or_from_baggage`].
pub fn checker(baggage: bool) -> fn(Request) -> Request {
    if baggage {
        drop_invalid_or_from_baggage
    } else {
        drop_invalid
    }
}

/// Removes an `X-Request-ID` that breaks the rules (or is given twice). A request left
/// with none gets a new one from [`set_layer`].
pub fn drop_invalid(mut request: Request) -> Request {
    remove_invalid(request.headers_mut());
    request
}

/// [`drop_invalid`], then, when no id is left, takes a valid one from the caller's
/// `request.id` baggage.
pub fn drop_invalid_or_from_baggage(mut request: Request) -> Request {
    let headers = request.headers_mut();
    if remove_invalid(headers) {
        return request;
    }
    let from_baggage = BaggagePropagator::new()
        .extract(&HeaderExtractor(headers))
        .baggage()
        .get(BAGGAGE_KEY)
        .map(|v| v.as_str().to_owned())
        .filter(|id| is_valid(id.as_bytes()))
        .and_then(|id| HeaderValue::from_str(&id).ok());
    if let Some(id) = from_baggage {
        headers.insert(HEADER, id);
    }
    request
}

/// Removes the id unless it is one valid value; says whether it was kept.
fn remove_invalid(headers: &mut http::HeaderMap) -> bool {
    let mut values = headers.get_all(HEADER).iter();
    let keep = matches!((values.next(), values.next()), (Some(v), None) if is_valid(v.as_bytes()));
    if !keep {
        headers.remove(HEADER);
    }
    keep
}

/// Generates ids for requests that arrive without a valid one.
pub fn set_layer() -> SetRequestIdLayer<NewUuid> {
    SetRequestIdLayer::new(HEADER, NewUuid)
}

/// Makes a random (version 4) UUID as the new id, in its hyphenated lowercase form. Like
/// tower-http's `MakeRequestUuid`, without formatting the UUID into a `String` first.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewUuid;

impl MakeRequestId for NewUuid {
    fn make_request_id<B>(
        &mut self,
        _: &http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(id)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// Copies the request's id onto its response.
pub fn propagate_layer() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(HEADER)
}

/// The current request's id, for handlers (B puts it in its body and forwards it to A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id read from request headers after the layers above ran (always present then).
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let id = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Self(id.to_owned())
    }

    /// The id as a header value, for forwarding.
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_distinct_v4_uuids_in_their_hyphenated_form() {
        let request = http::Request::new(());
        let mut make = NewUuid;
        let [first, second] = [(); 2].map(|()| {
            let id = make.make_request_id(&request).expect("an id");
            id.header_value().to_str().expect("text").to_owned()
        });
        assert_ne!(first, second);
        for id in [first, second] {
            let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.hyphenated().to_string(), id, "lowercase, hyphenated");
            assert!(is_valid(id.as_bytes()));
        }
    }

    #[test]
    fn accepts_the_allowed_alphabet_up_to_128() {
        assert!(is_valid(b"demo-123"));
        assert!(is_valid(b"a.b_c:d-E9"));
        assert!(is_valid(&[b'a'; 128]));
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert!(!is_valid(b""));
        assert!(!is_valid(&[b'a'; 129]));
        for bad in ["has space", "quote\"", "new\nline", "slash/", "é", "{json}"] {
            assert!(!is_valid(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn invalid_header_is_dropped_and_valid_kept() {
        let req = Request::builder()
            .header(HEADER, "bad id")
            .body(axum::body::Body::empty())
            .expect("request");
        assert!(drop_invalid(req).headers().get(HEADER).is_none());

        let req = Request::builder()
            .header(HEADER, "good-id")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(drop_invalid(req).headers()[HEADER], "good-id");
    }

    #[test]
    fn two_ids_are_ambiguous_and_dropped() {
        let req = Request::builder()
            .header(HEADER, "one")
            .header(HEADER, "two")
            .body(axum::body::Body::empty())
            .expect("request");
        assert!(drop_invalid(req).headers().get(HEADER).is_none());
    }
}
