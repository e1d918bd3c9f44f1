//! W3C trace context and baggage in and out of HTTP headers, as the service's
//! [`Propagation`] says: what a caller sent is read ([`extract`]), and a call made on a
//! span's behalf carries the span's context onwards, with the request id in the baggage
//! ([`inject`]).
//!
//! What a caller sends is passed on only within bounds, so it can neither fail nor fill a
//! call onwards: a `tracestate` as W3C Trace Context allows it (at most 32 members, keys
//! unique and well formed, cut to 512 characters as the specification says; anything else
//! is dropped whole, never forwarded as received), and `baggage` with this service's own
//! entry first, then the caller's in key order, within bounds (see
//! [`crate::observe::traces::forwarded`]).

use http::{HeaderMap, HeaderValue};
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::observe::requests::id::{self as request_id, BAGGAGE_KEY as REQUEST_ID_BAGGAGE};
use crate::observe::traces::caller::Unrecorded;
use crate::observe::traces::forwarded;
use crate::observe::traces::ids::{SpanIds, ids_of};
use crate::observe::traces::sampling;

/// Which W3C headers a service reads and writes (`OTEL_PROPAGATORS`: `tracecontext`,
/// `baggage`, both by default), held by the request layer and the outbound middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    /// `traceparent` and `tracestate`, in and out.
    pub trace_context: bool,
    /// `baggage`, in and out.
    pub baggage: bool,
}

impl Default for Propagation {
    /// Both, as with no `OTEL_PROPAGATORS`.
    fn default() -> Self {
        Self {
            trace_context: true,
            baggage: true,
        }
    }
}

impl Propagation {
    /// What `OTEL_PROPAGATORS` asked for.
    pub fn of(env: &crate::observe::otel_env::OtelEnv) -> Self {
        Self {
            trace_context: env.trace_context,
            baggage: env.baggage,
        }
    }
}

/// Reads the caller's trace context (`traceparent`, `tracestate`, `baggage`) from
/// `headers`, its `tracestate` as W3C allows it to be kept ([`bounded_tracestate`](crate::observe::traces::forwarded::bounded_tracestate)). A
/// request with neither `traceparent` nor `baggage` (a client outside the trace) skips the
/// propagators: the ones installed here read nothing else.
pub fn extract(wanted: Propagation, headers: &HeaderMap) -> opentelemetry::Context {
    let present = (wanted.trace_context && headers.contains_key(TRACEPARENT))
        || (wanted.baggage && headers.contains_key(BAGGAGE));
    if !present {
        // What the propagators start from and would give back unchanged.
        return opentelemetry::Context::current();
    }
    let caller = CallerHeaders {
        headers,
        tracestate: forwarded::bounded_tracestate(headers),
    };
    global::get_text_map_propagator(|p| p.extract(&caller))
}

/// The caller's headers as the propagators read them: as sent, but `tracestate`, which is
/// read as [`bounded_tracestate`](crate::observe::traces::forwarded::bounded_tracestate) keeps it.
struct CallerHeaders<'a> {
    headers: &'a HeaderMap,
    tracestate: Option<String>,
}

impl Extractor for CallerHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACESTATE.as_str() {
            return self.tracestate.as_deref();
        }
        self.headers.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The W3C `baggage` header.
pub(crate) const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// Writes the trace context of `span` into `headers`, for a call made on the span's behalf,
/// and returns the span's ids: `traceparent`, `tracestate` when there is one, and `baggage`:
/// what the caller of this service sent, with `request_id` as `request.id` (so the callee
/// knows it even if a proxy drops `X-Request-ID`).
///
/// `traceparent` is written from the ids already in hand (the text `traceresponse` uses,
/// which W3C defines the same way); `tracestate` and `baggage` by the OpenTelemetry
/// propagators. The request id joins the baggage here, on the way out, rather than on every
/// request that comes in: most requests call nothing onwards.
pub fn inject(
    wanted: Propagation,
    span: &Span,
    headers: &mut HeaderMap,
    request_id: &str,
) -> SpanIds {
    let mut context = span.context();
    let mut ids = ids_of(&context);
    if !ids.valid
        && let Some((request, caller)) = Unrecorded::around(span)
    {
        // An unsampled request's call: a span id of its own in the request's trace, and
        // what the caller sent goes on as it would from a recorded span.
        ids = request.with_span_id(sampling::new_span_id());
        context = caller;
    }
    if wanted.trace_context
        && let Some(traceparent) = ids.traceparent()
    {
        headers.insert(TRACEPARENT, traceparent);
        let state = context.span().span_context().trace_state().header();
        if !state.is_empty()
            && let Ok(value) = HeaderValue::from_str(&state)
        {
            headers.insert(TRACESTATE, value);
        }
    }
    if !wanted.baggage {
        return ids;
    }
    if context.baggage().is_empty() {
        // The usual case: nothing came in, so the id is all there is to send.
        if let Some(only_the_id) = request_id_baggage(request_id) {
            headers.insert(BAGGAGE, only_the_id);
        }
        return ids;
    }
    let forwarded = forwarded::baggage(context.baggage(), request_id);
    if forwarded.dropped > 0 {
        crate::event!(
            WARN,
            "baggage_not_forwarded",
            kept = forwarded.kept as i64,
            dropped = forwarded.dropped as i64,
            max_entries = forwarded::MAX_BAGGAGE_MEMBERS as i64,
            max_bytes = forwarded::MAX_BAGGAGE_BYTES as i64,
        );
    }
    match HeaderValue::from_str(&forwarded.header) {
        Ok(value) if !forwarded.header.is_empty() => headers.insert(BAGGAGE, value),
        _ => headers.remove(BAGGAGE),
    };
    ids
}

/// `baggage: request.id=<id>`, written directly when the id needs no percent-encoding (a
/// valid `X-Request-ID` never does): what the baggage propagator writes for a baggage of
/// that one entry, without building the baggage first.
fn request_id_baggage(request_id: &str) -> Option<HeaderValue> {
    // The request id alphabet is all baggage-safe.
    if !request_id::is_valid(request_id.as_bytes()) {
        return None;
    }
    let mut value = String::with_capacity(REQUEST_ID_BAGGAGE.len() + 1 + request_id.len());
    for part in [REQUEST_ID_BAGGAGE, "=", request_id] {
        value.push_str(part);
    }
    HeaderValue::from_str(&value).ok()
}

/// The W3C `traceparent` request header.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The W3C `tracestate` request header.
pub(crate) const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::traces::caller::tests::{join_caller_trace, with_tracing};
    use opentelemetry::baggage::Baggage;
    use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator as _};
    use opentelemetry_http::{HeaderExtractor, HeaderInjector};
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

    #[test]
    fn inject_writes_what_the_standard_propagators_read_back() {
        with_tracing(|| {
            let mut incoming = HeaderMap::new();
            for (name, value) in [
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("tracestate", "vendor=value"),
                ("baggage", "tenant=blue"),
            ] {
                incoming.insert(name, HeaderValue::from_static(value));
            }
            let parent = TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])
            .extract(&HeaderExtractor(&incoming));
            let span = tracing::info_span!("call");
            let _ = span.set_parent(parent);

            let mut outgoing = HeaderMap::new();
            let ids = inject(Propagation::default(), &span, &mut outgoing, "r1");

            let read = TraceContextPropagator::new().extract(&HeaderExtractor(&outgoing));
            let read = read.span().span_context().clone();
            assert_eq!(read.trace_id().to_string(), ids.trace_id());
            assert_eq!(
                ids.trace_id(),
                "0af7651916cd43dd8448eb211c80319c",
                "same trace"
            );
            assert_eq!(read.span_id().to_string(), ids.span_id());
            assert!(read.is_sampled() && ids.sampled);
            assert_eq!(read.trace_state().header(), "vendor=value");
            let baggage = BaggagePropagator::new().extract(&HeaderExtractor(&outgoing));
            assert_eq!(
                baggage
                    .baggage()
                    .get("tenant")
                    .map(|v| v.as_str().to_owned()),
                Some("blue".to_owned())
            );
        });
    }

    #[test]
    fn the_request_id_travels_on_in_baggage_next_to_the_callers_entries() {
        with_tracing(|| {
            for (sent, expected_tenant) in [
                (None, None),
                (Some("tenant=blue"), Some("blue")),
                (Some("request.id=ours,tenant=blue"), Some("blue")),
                (Some("request.id=theirs"), None),
            ] {
                let mut headers = HeaderMap::new();
                if let Some(baggage) = sent {
                    headers.insert("baggage", HeaderValue::from_static(baggage));
                }
                let span = tracing::info_span!("request");
                let _ = join_caller_trace(&span, &headers);
                let mut onwards = HeaderMap::new();
                let _ = inject(Propagation::default(), &span, &mut onwards, "ours");
                let context = BaggagePropagator::new().extract(&HeaderExtractor(&onwards));
                let baggage = context.baggage();
                let value = |key: &str| baggage.get(key).map(|v| v.as_str().to_owned());
                assert_eq!(
                    value(REQUEST_ID_BAGGAGE).as_deref(),
                    Some("ours"),
                    "{sent:?}"
                );
                assert_eq!(value("tenant").as_deref(), expected_tenant, "{sent:?}");
            }
        });
    }

    #[test]
    fn an_oversized_baggage_is_not_passed_on_but_the_request_id_is() {
        with_tracing(|| {
            let forwarded = |quotes: usize| {
                // Each quote is re-encoded as %22, three times its size.
                let sent = format!("k={}", "\"".repeat(quotes));
                let mut headers = HeaderMap::new();
                headers.insert("baggage", HeaderValue::from_str(&sent).expect("header"));
                let span = tracing::info_span!("request");
                let _ = join_caller_trace(&span, &headers);
                let mut onwards = HeaderMap::new();
                let _ = inject(Propagation::default(), &span, &mut onwards, "ours");
                onwards
                    .get("baggage")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let small = forwarded(100).expect("a baggage");
            assert!(small.contains("k=%22"), "small entries go on: {small}");
            assert!(small.contains("request.id=ours"), "{small}");
            assert_eq!(forwarded(2000).as_deref(), Some("request.id=ours"));
        });
    }

    #[test]
    fn the_direct_request_id_baggage_is_what_the_propagator_writes() {
        for id in ["r1", "a.b_c:d-E9", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"] {
            let direct = request_id_baggage(id).expect("a plain id");
            let mut baggage = Baggage::new();
            let _ = baggage.insert(REQUEST_ID_BAGGAGE, id.to_owned());
            let context = opentelemetry::Context::new().with_baggage(baggage);
            let mut headers = HeaderMap::new();
            BaggagePropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
            assert_eq!(Some(&direct), headers.get("baggage"), "{id}");
        }
        for not_plain in ["", "with space", "a=b", "é"] {
            assert!(request_id_baggage(not_plain).is_none(), "{not_plain:?}");
        }
    }
}
