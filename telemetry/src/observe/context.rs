//! W3C trace context in and out of HTTP headers: a request's span joins its caller's trace
//! (`traceparent`, `tracestate`, `baggage`), restarts it with a link to the caller's span,
//! or ignores it ([`CallerTraceContext`]), and a call made on its behalf carries the span's
//! context onwards, with the request id in the baggage. [`SpanIds`] are a span's ids as the
//! log lines, `traceresponse` and exemplars write them.
//!
//! The `traceparent` flags written are W3C Trace Context Level 2's: `sampled` (0x01) and
//! `random` (0x02), set when the trace id is random. A trace started here has a random id
//! (the SDK's generator); a joined trace keeps the flag its caller sent. The OpenTelemetry
//! SDK keeps only the sampled bit of what it reads, so the caller's `random` bit is kept
//! here, in the context, next to the caller's baggage, and a sampled request's span is
//! started under a parent that carries the right flags, so the span the SDK exports has
//! them too (the SDK gives a span its parent's flags).
//!
//! What a caller sends is passed on only within bounds, so it can neither fail nor fill a
//! call onwards: a `tracestate` as W3C Trace Context allows it (at most 32 members, keys
//! unique and well formed, cut to 512 characters as the specification says; anything else
//! is dropped whole, never forwarded as received), and `baggage` with this service's own
//! entry first, then the caller's in key order, within bounds (see
//! [`crate::observe::forwarded`]).

use http::{HeaderMap, HeaderValue};
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan as _;

use crate::observe::forwarded;
use crate::observe::request_id::{self, BAGGAGE_KEY as REQUEST_ID_BAGGAGE};
use crate::observe::traces::{self, Decision};

/// How a service treats the trace context its callers send (`--caller-trace-context`).
/// W3C Trace Context's security considerations: a service at the edge of a system should
/// not let anyone outside choose its trace ids, sampling or baggage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CallerTraceContext {
    /// Join the caller's trace: its span is the parent, its sampled flag decides (with the
    /// parent-based sampler), its baggage goes on to calls onwards.
    #[default]
    Trust,
    /// Start a new trace whose first span *links* to the caller's span (when it sent a
    /// valid one): the two traces stay one click apart, but the caller's sampled flag and
    /// baggage are not taken.
    Restart,
    /// Start a new trace; the caller's trace context and baggage are not read.
    Ignore,
}

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

/// The W3C `random` flag the caller sent with the trace this process joined. Absent from
/// a context, the trace was started here, with a random id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallerRandomFlag(bool);

/// The `random` trace flag (W3C Trace Context Level 2).
const RANDOM_FLAG: u8 = 0x02;

/// The ids of a request's server span, for log lines and the `traceresponse` header, as the
/// lowercase hex W3C writes them. Held inline (it is `Copy`): every request's log lines,
/// exemplar and `traceresponse` read them without a copy of their text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanIds {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    valid: bool,
    /// Whether the span is sampled (recorded and exported).
    pub sampled: bool,
    /// Whether the trace id is random (W3C Level 2's `random` flag).
    pub random: bool,
}

impl SpanIds {
    /// The ids of a valid span context; `random` when the trace id is random.
    pub fn new(trace_id: TraceId, span_id: SpanId, sampled: bool, random: bool) -> Self {
        let mut ids = Self {
            valid: true,
            sampled,
            random,
            ..Self::default()
        };
        lower_hex(&trace_id.to_bytes(), &mut ids.trace_id);
        lower_hex(&span_id.to_bytes(), &mut ids.span_id);
        ids
    }

    /// The ids of another span of the same trace, with the same flags.
    pub fn with_span_id(&self, span_id: SpanId) -> Self {
        let mut ids = *self;
        lower_hex(&span_id.to_bytes(), &mut ids.span_id);
        ids
    }

    /// W3C trace id, 32 hex digits; empty when tracing is not installed.
    pub fn trace_id(&self) -> &str {
        self.text(&self.trace_id)
    }

    /// W3C span id, 16 hex digits; empty when tracing is not installed.
    pub fn span_id(&self) -> &str {
        self.text(&self.span_id)
    }

    fn text<'a>(&self, hex: &'a [u8]) -> &'a str {
        if self.valid {
            std::str::from_utf8(hex).unwrap_or_default()
        } else {
            ""
        }
    }

    /// The `traceresponse` value (`00-<trace>-<span>-<flags>`, from the W3C Trace Context
    /// Level 3 draft), so a caller can go from any response, a failed one included, to its
    /// trace.
    pub fn traceresponse(&self) -> Option<HeaderValue> {
        self.traceparent()
    }

    /// The W3C `traceparent` value naming this span as the parent of a call
    /// (`00-<trace>-<span>-<flags>`, the same text as [`Self::traceresponse`]); the flags
    /// are `sampled` and `random`.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        if !self.valid {
            return None;
        }
        let mut value = [0_u8; 55];
        let flags: &[u8] = match (self.random, self.sampled) {
            (false, false) => b"00",
            (false, true) => b"01",
            (true, false) => b"02",
            (true, true) => b"03",
        };
        let parts: [&[u8]; 6] = [b"00-", &self.trace_id, b"-", &self.span_id, b"-", flags];
        let mut at = 0;
        for part in parts {
            value[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        HeaderValue::from_bytes(&value).ok()
    }
}

/// Reads the caller's trace context (`traceparent`, `tracestate`, `baggage`) from
/// `headers`, its `tracestate` as W3C allows it to be kept ([`bounded_tracestate`](crate::observe::forwarded::bounded_tracestate)). A
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
/// read as [`bounded_tracestate`](crate::observe::forwarded::bounded_tracestate) keeps it.
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
        ids = request.with_span_id(traces::new_span_id());
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
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The W3C `tracestate` request header.
pub(crate) const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The trace context a request came with, as this process's [`CallerTraceContext`] reads
/// it: the caller's context to join (`Trust`, with its baggage and its `random` flag), the
/// caller's span to link to (`Restart`), or nothing (`Ignore`, or a caller that sent none).
#[derive(Debug)]
pub struct Caller {
    /// The parent a new span joins: the caller's context, or an empty one.
    parent: opentelemetry::Context,
    /// The caller's span, linked to from a restarted trace.
    link: Option<SpanContext>,
}

impl Caller {
    /// Reads the caller's trace context from `headers`, as `policy` says, from the headers
    /// `wanted`.
    pub fn read(policy: CallerTraceContext, wanted: Propagation, headers: &HeaderMap) -> Self {
        match policy {
            CallerTraceContext::Trust => {
                let caller = extract(wanted, headers);
                let parent = match caller_random_flag(&caller, headers) {
                    Some(random) => caller.with_value(random),
                    None => caller,
                };
                Self { parent, link: None }
            }
            CallerTraceContext::Restart => Self {
                parent: opentelemetry::Context::new(),
                link: wants_trace_context(wanted, headers)
                    .then(|| extract(wanted, headers).span().span_context().clone())
                    .filter(SpanContext::is_valid),
            },
            CallerTraceContext::Ignore => Self {
                parent: opentelemetry::Context::new(),
                link: None,
            },
        }
    }

    /// The parent the sampler decides with (see [`crate::observe::traces::decide`]).
    pub fn parent(&self) -> &opentelemetry::Context {
        &self.parent
    }

    /// Starts the request's `span` as `decision` says, and returns its ids. A sampled span
    /// becomes an OpenTelemetry span under the caller's (or linked to it), with the trace id
    /// the decision was made with. An unsampled one gets ids of its own in the same trace,
    /// kept on it ([`Unrecorded`]) with the caller's context, for calls made on its behalf.
    pub fn start(self, span: &Span, decision: Decision) -> SpanIds {
        let random = self
            .parent
            .get::<CallerRandomFlag>()
            .is_none_or(|caller| caller.0);
        if decision.sampled {
            if let Some(link) = self.link {
                span.add_link(link);
            }
            let _ = span.set_parent(flagged_parent(self.parent, decision.trace_id, random));
            return span_ids(span);
        }
        let ids = SpanIds::new(decision.trace_id, traces::new_span_id(), false, random);
        Unrecorded {
            ids,
            caller: self.parent,
        }
        .attach_to(span);
        ids
    }
}

/// The parent a sampled request's span is started under, carrying the W3C flags the span
/// must have: the OpenTelemetry SDK gives a new span its parent's trace flags (setting
/// `sampled`), and reads only `sampled` from a `traceparent`.
///
/// - A caller's span: the same, with `random` as the caller sent it.
/// - No caller's span: a placeholder for the trace that starts here, with the id the
///   sampler decided with and `random` set. It has no span id, so the SDK makes the new
///   span a root (no parent span id), local (not remote), of `trace_id`, flagged
///   `sampled` and `random`; the parent-based samplers see a sampled local parent and keep
///   the decision already made.
fn flagged_parent(
    parent: opentelemetry::Context,
    trace_id: TraceId,
    random: bool,
) -> opentelemetry::Context {
    let caller = parent.span().span_context().clone();
    let with_random = |flags: TraceFlags| {
        if random {
            TraceFlags::new(flags.to_u8() | RANDOM_FLAG)
        } else {
            flags
        }
    };
    let flagged = if caller.is_valid() {
        SpanContext::new(
            caller.trace_id(),
            caller.span_id(),
            with_random(caller.trace_flags()),
            caller.is_remote(),
            caller.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            trace_id,
            SpanId::INVALID,
            with_random(TraceFlags::SAMPLED),
            false,
            TraceState::default(),
        )
    };
    parent.with_remote_span_context(flagged)
}

/// What an unsampled request keeps in place of the OpenTelemetry span it does not have:
/// its ids, and its caller's context (the `tracestate` and baggage a call onwards carries).
#[derive(Debug)]
struct Unrecorded {
    ids: SpanIds,
    caller: opentelemetry::Context,
}

impl Unrecorded {
    fn attach_to(self, span: &Span) {
        span.with_subscriber(|(id, dispatch)| {
            if let Some(registry) = dispatch.downcast_ref::<Registry>()
                && let Some(span) = registry.span(id)
            {
                span.extensions_mut().insert(self);
            }
        });
    }

    /// The ids and caller context of the unsampled request `span` belongs to (the span
    /// itself or its nearest ancestor that has them).
    fn around(span: &Span) -> Option<(SpanIds, opentelemetry::Context)> {
        let mut found = None;
        span.with_subscriber(|(id, dispatch)| {
            let Some(registry) = dispatch.downcast_ref::<Registry>() else {
                return;
            };
            found = registry.span(id).and_then(|span| {
                span.scope().find_map(|s| {
                    s.extensions()
                        .get::<Self>()
                        .map(|u| (u.ids, u.caller.clone()))
                })
            });
        });
        found
    }
}

/// Whether the caller sent a `traceparent` this process reads.
fn wants_trace_context(wanted: Propagation, headers: &HeaderMap) -> bool {
    wanted.trace_context && headers.contains_key(TRACEPARENT)
}

/// The caller's `random` flag, when `caller` (extracted from `headers`) holds a valid span
/// context read from its `traceparent`.
fn caller_random_flag(
    caller: &opentelemetry::Context,
    headers: &HeaderMap,
) -> Option<CallerRandomFlag> {
    if !caller.span().span_context().is_valid() {
        return None;
    }
    // `00-<trace>-<span>-<flags>`: the propagator accepted it, so the flags are hex.
    let flags = headers
        .get(TRACEPARENT)?
        .to_str()
        .ok()?
        .split('-')
        .nth(3)
        .and_then(|hex| u8::from_str_radix(hex.get(..2)?, 16).ok())?;
    Some(CallerRandomFlag(flags & RANDOM_FLAG != 0))
}

/// The ids of `span` (empty without tracing).
pub fn span_ids(span: &Span) -> SpanIds {
    ids_of(&span.context())
}

/// The ids of the span the caller runs in: in a handler, its request's.
pub fn current_ids() -> SpanIds {
    span_ids(&Span::current())
}

fn ids_of(context: &opentelemetry::Context) -> SpanIds {
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        SpanIds::new(
            span_context.trace_id(),
            span_context.span_id(),
            span_context.is_sampled(),
            span_context.trace_flags().to_u8() & RANDOM_FLAG != 0,
        )
    } else {
        SpanIds::default()
    }
}

/// Writes `bytes` as lowercase hex into `text` (twice as long), as W3C ids are written: the
/// same text as the ids' `Display`, without the formatting machinery.
fn lower_hex(bytes: &[u8], text: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(text.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::Baggage;
    use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator as _};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{HeaderExtractor, HeaderInjector};
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Runs `body` with spans made into OpenTelemetry spans and the W3C propagators
    /// installed, as `observe::init` sets them up.
    fn with_tracing(body: impl FnOnce()) {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = SdkTracerProvider::builder().build();
        let seen = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target(traces::UNRECORDED, LevelFilter::OFF)
            .and(traces::InsideRecorded);
        /// What the log layer is in the services: a layer that sees every span, so the
        /// spans the OpenTelemetry layer does not see exist all the same.
        struct SeesAll;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SeesAll {}
        let subscriber = tracing_subscriber::registry()
            .with(SeesAll.with_filter(LevelFilter::INFO))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(seen),
            );
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        tracing::subscriber::with_default(subscriber, body);
    }

    #[test]
    fn ids_are_written_as_their_display_writes_them() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id");
        let span = SpanId::from_hex("00f067aa0ba902b7").expect("span id");
        let ids = SpanIds::new(trace, span, true, false);
        assert_eq!(ids.trace_id(), trace.to_string());
        assert_eq!(ids.span_id(), span.to_string());
        assert_eq!(
            ids.traceresponse().as_ref().map(HeaderValue::as_bytes),
            Some(&b"00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"[..])
        );
        for (sampled, random, flags) in [
            (false, false, "-00"),
            (false, true, "-02"),
            (true, true, "-03"),
        ] {
            let value = SpanIds::new(trace, span, sampled, random).traceresponse();
            assert!(
                value.is_some_and(|v| v.as_bytes().ends_with(flags.as_bytes())),
                "{flags}"
            );
        }
    }

    #[test]
    fn no_span_has_empty_ids_and_no_traceresponse() {
        let ids = SpanIds::default();
        assert_eq!((ids.trace_id(), ids.span_id()), ("", ""));
        assert!(ids.traceresponse().is_none());
    }

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

    /// Starts `span` as a request's, as `observe` does (every request sampled: no sampler is
    /// installed here).
    fn join(policy: CallerTraceContext, span: &Span, headers: &HeaderMap) -> SpanIds {
        let caller = Caller::read(policy, Propagation::default(), headers);
        let decision = traces::decide(&traces::Sampler::default(), caller.parent(), "request");
        caller.start(span, decision)
    }

    fn join_caller_trace(span: &Span, headers: &HeaderMap) -> SpanIds {
        join(CallerTraceContext::Trust, span, headers)
    }

    /// An unsampled request has ids of its own in its caller's trace, with the caller's
    /// `random` flag, and a call made for it carries them on with the caller's baggage and
    /// `tracestate`, from a span id of the call's own.
    #[test]
    fn an_unsampled_request_keeps_its_ids_and_passes_the_context_on() {
        with_tracing(|| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_static(CALLER));
            headers.insert("tracestate", HeaderValue::from_static("vendor=value"));
            headers.insert("baggage", HeaderValue::from_static("tenant=blue"));
            let caller = Caller::read(CallerTraceContext::Trust, Propagation::default(), &headers);
            let decision = Decision {
                trace_id: TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("id"),
                sampled: false,
            };
            let request = tracing::info_span!(target: traces::UNRECORDED, "request");
            let ids = caller.start(&request, decision);
            assert_eq!(ids.trace_id(), "0af7651916cd43dd8448eb211c80319c");
            assert!(!ids.sampled && ids.random);
            assert_ne!(ids.span_id(), "b7ad6b7169203331", "a span id of its own");
            assert!(
                span_ids(&request).trace_id().is_empty(),
                "no OpenTelemetry span"
            );

            let call = request.in_scope(|| tracing::info_span!("call"));
            assert!(span_ids(&call).trace_id().is_empty(), "nor inside it");
            let mut onwards = HeaderMap::new();
            let sent = inject(Propagation::default(), &call, &mut onwards, "r1");
            assert_eq!(sent.trace_id(), ids.trace_id());
            assert_ne!(sent.span_id(), ids.span_id());
            assert_eq!(
                onwards["traceparent"],
                format!("00-{}-{}-02", ids.trace_id(), sent.span_id()).as_str()
            );
            assert_eq!(onwards["tracestate"], "vendor=value");
            let baggage = onwards["baggage"].to_str().expect("text");
            assert!(baggage.contains("tenant=blue") && baggage.contains("request.id=r1"));
        });
    }

    /// The `traceparent` a call from a request gets, when the request came with `sent`.
    fn onwards(policy: CallerTraceContext, sent: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in sent {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        let request = tracing::info_span!("request");
        let _ = join(policy, &request, &headers);
        let call = tracing::info_span!(parent: &request, "call");
        let mut onwards = HeaderMap::new();
        let _ = inject(Propagation::default(), &call, &mut onwards, "r1");
        onwards
    }

    fn flags(headers: &HeaderMap) -> String {
        let value = headers["traceparent"].to_str().expect("text");
        value.rsplit('-').next().expect("flags").to_owned()
    }

    fn trace_of(headers: &HeaderMap) -> String {
        let value = headers["traceparent"].to_str().expect("text");
        value.split('-').nth(1).expect("trace id").to_owned()
    }

    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";

    #[test]
    fn the_random_flag_is_set_on_new_traces_and_kept_from_the_caller() {
        use CallerTraceContext::Trust;
        with_tracing(|| {
            assert_eq!(
                flags(&onwards(Trust, &[])),
                "03",
                "a new trace's id is random"
            );
            let joined = onwards(Trust, &[("traceparent", CALLER)]);
            assert_eq!(flags(&joined), "03");
            assert_eq!(trace_of(&joined), "0af7651916cd43dd8448eb211c80319c");
            let not_random = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            assert_eq!(flags(&onwards(Trust, &[("traceparent", not_random)])), "01");
            let invalid = "00-00000000000000000000000000000000-b7ad6b7169203331-01";
            assert_eq!(
                flags(&onwards(Trust, &[("traceparent", invalid)])),
                "03",
                "an invalid parent starts a new trace"
            );
        });
    }

    #[test]
    fn an_untrusted_callers_trace_is_restarted_or_ignored_with_its_baggage() {
        with_tracing(|| {
            let sent = [("traceparent", CALLER), ("baggage", "tenant=blue")];
            for policy in [CallerTraceContext::Restart, CallerTraceContext::Ignore] {
                let onwards = onwards(policy, &sent);
                assert_ne!(trace_of(&onwards), "0af7651916cd43dd8448eb211c80319c");
                assert_eq!(flags(&onwards), "03", "{policy:?}: a new, random trace");
                assert_eq!(onwards["baggage"], "request.id=r1", "{policy:?}");
            }
            let trusted = onwards(CallerTraceContext::Trust, &sent);
            assert!(
                trusted["baggage"]
                    .to_str()
                    .is_ok_and(|b| b.contains("tenant=blue")),
                "{trusted:?}"
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

    /// The span the SDK makes for a sampled request has the W3C flags `traceresponse`
    /// shows: `random` for a trace started here and for a caller that said so.
    #[test]
    fn a_sampled_span_carries_the_random_flag_it_should() {
        with_tracing(|| {
            let flags_of = |sent: &[(&'static str, &'static str)]| {
                let mut headers = HeaderMap::new();
                for (name, value) in sent {
                    headers.insert(*name, HeaderValue::from_static(value));
                }
                let span = tracing::info_span!("request");
                let ids = join_caller_trace(&span, &headers);
                let flags = span.context().span().span_context().trace_flags().to_u8();
                let child = tracing::info_span!(parent: &span, "call");
                let child_flags = child.context().span().span_context().trace_flags().to_u8();
                assert_eq!(flags, child_flags, "a child keeps its parent's flags");
                (flags, ids.trace_id().to_owned())
            };
            assert_eq!(flags_of(&[]).0, 0x03, "a new trace's id is random");
            let (flags, trace) = flags_of(&[("traceparent", CALLER)]);
            assert_eq!(
                (flags, trace.as_str()),
                (0x03, "0af7651916cd43dd8448eb211c80319c")
            );
            let not_random = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            assert_eq!(flags_of(&[("traceparent", not_random)]).0, 0x01);
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
