//! How a request's span joins its caller's trace ([`CallerTraceContext`]): it joins it
//! (`traceparent`, `tracestate`, `baggage`), restarts it with a link to the caller's span,
//! or ignores it, as the service's settings say.
//!
//! The `traceparent` flags written are W3C Trace Context Level 2's: `sampled` (0x01) and
//! `random` (0x02), set when the trace id is random. A trace started here has a random id
//! (the SDK's generator); a joined trace keeps the flag its caller sent. The OpenTelemetry
//! SDK keeps only the sampled bit of what it reads, so the caller's `random` bit is kept
//! here, in the context, next to the caller's baggage, and a sampled request's span is
//! started under a parent that carries the right flags, so the span the SDK exports has
//! them too (the SDK gives a span its parent's flags).

use http::HeaderMap;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan as _;

use crate::observe::traces::ids::{RANDOM_FLAG, SpanIds, span_ids};
use crate::observe::traces::propagation::{Propagation, TRACEPARENT, extract};
use crate::observe::traces::sampling::{self, Decision};

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

/// The W3C `random` flag the caller sent with the trace this process joined. Absent from
/// a context, the trace was started here, with a random id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallerRandomFlag(bool);

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
        let ids = SpanIds::new(decision.trace_id, sampling::new_span_id(), false, random);
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
pub(crate) struct Unrecorded {
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
    pub(crate) fn around(span: &Span) -> Option<(SpanIds, opentelemetry::Context)> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observe::traces::propagation::inject;
    use http::HeaderValue;
    use opentelemetry::global;
    use opentelemetry::propagation::TextMapCompositePropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Runs `body` with spans made into OpenTelemetry spans and the W3C propagators
    /// installed, as `observe::init` sets them up.
    pub(crate) fn with_tracing(body: impl FnOnce()) {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = SdkTracerProvider::builder().build();
        let seen = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target(crate::observe::traces::UNRECORDED, LevelFilter::OFF)
            .and(crate::observe::traces::InsideRecorded);
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

    /// Starts `span` as a request's, as `observe` does (every request sampled: no sampler is
    /// installed here).
    fn join(policy: CallerTraceContext, span: &Span, headers: &HeaderMap) -> SpanIds {
        let caller = Caller::read(policy, Propagation::default(), headers);
        let decision = crate::observe::traces::decide(
            &crate::observe::traces::Sampler::default(),
            caller.parent(),
            "request",
        );
        caller.start(span, decision)
    }

    pub(crate) fn join_caller_trace(span: &Span, headers: &HeaderMap) -> SpanIds {
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
            let request =
                tracing::info_span!(target: crate::observe::traces::UNRECORDED, "request");
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
}
