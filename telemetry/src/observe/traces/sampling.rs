//! Whether a request is recorded, decided before its span is built.
//!
//! `GET /health` and `GET /metrics` make no spans worth keeping: probes and scrapes would
//! otherwise be a large share of all traces. Their spans are sampled out (they keep ids for
//! their log lines) unless `--trace-probes` is given.
//!
//! **Sampled first, then built.** A request's sampling decision is made before its span
//! exists ([`decide`], by the configured sampler, with the trace id the span will have). A
//! sampled request's span is an OpenTelemetry span as the conventions describe it; an
//! unsampled request's span is a bare `tracing` span (target [`UNRECORDED`]) that only
//! anchors its log lines, and nothing inside it reaches the OpenTelemetry layer
//! ([`InsideRecorded`]): its ids, metrics and propagation stay, and it pays for no span
//! data it would throw away.
//!

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SpanId, SpanKind, TraceContextExt as _, TraceId};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SamplingDecision, SamplingResult, ShouldSample,
};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

/// Target of the span of a request that is not sampled: a bare anchor for its log lines,
/// which the OpenTelemetry layer never sees.
pub const UNRECORDED: &str = "unrecorded";

/// The sampler a service's requests are decided with: the one its tracer provider has
/// ([`crate::observe::traces::Traces::sampler`]), or none, where every request is "sampled" (without a tracer that
/// keeps nothing: a service run inside a test process).
#[derive(Clone, Default)]
pub struct Sampler(Option<Arc<dyn ShouldSample>>);

impl Sampler {
    /// Decides with `sampler` (the one the tracer provider is given).
    pub(crate) fn configured(sampler: Box<dyn ShouldSample>) -> Self {
        Self(Some(Arc::from(sampler)))
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sampler(configured)"
        } else {
            "Sampler(every request)"
        })
    }
}

/// Whether a request is sampled, decided before its span exists, and the trace id it was
/// decided with: its caller's, or a new random one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The trace the request's span belongs to.
    pub trace_id: TraceId,
    /// Whether the span is recorded and exported.
    pub sampled: bool,
}

/// Asks `sampler` about a server span named `name` whose parent is `parent` (the caller's
/// context; empty for a new trace). Without a sampler, everything is "sampled", which
/// without tracing installed means nothing is kept either.
pub fn decide(sampler: &Sampler, parent: &opentelemetry::Context, name: &str) -> Decision {
    let remote = parent.span();
    let trace_id = match remote.span_context() {
        context if context.is_valid() => context.trace_id(),
        _ => RandomIdGenerator::default().new_trace_id(),
    };
    let sampled = sampler.0.as_ref().is_none_or(|sampler| {
        let result =
            sampler.should_sample(Some(parent), trace_id, name, &SpanKind::Server, &[], &[]);
        result.decision != SamplingDecision::Drop
    });
    Decision { trace_id, sampled }
}

/// A new random span id.
pub fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// The OpenTelemetry layer's filter: a span or event inside a span that layer does not see
/// (an unsampled request's, [`UNRECORDED`]) is not seen either. Without it, a span inside
/// an unsampled request (B's call to A, A's delay) would start a trace of its own.
///
/// A span is judged by the span it is made in (the current one): a filter is asked before
/// the span exists, without its explicit `parent:`. The services make spans only inside
/// the span they belong to; an event's explicit parent is checked.
#[derive(Debug, Clone, Copy)]
pub struct InsideRecorded;

impl<S> Filter<S> for InsideRecorded
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, _: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        // `span` looks through this layer's filters: `None` for a span it did not see.
        cx.current_span()
            .id()
            .is_none_or(|id| cx.span(id).is_some())
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        event.parent().is_none_or(|id| cx.span(id).is_some())
    }
}

/// The routes of probes and scrapes, whose `GET` and `HEAD` spans are sampled out unless
/// `--trace-probes` is given.
const PROBE_ROUTES: [&str; 2] = ["/health", "/metrics"];

/// Whether a server span named `name` (`GET /health`) is a probe's or a scrape's.
fn is_probe(name: &str) -> bool {
    name.split_once(' ').is_some_and(|(method, route)| {
        matches!(method, "GET" | "HEAD") && PROBE_ROUTES.contains(&route)
    })
}

/// Drops the server spans of `/health` and `/metrics`; asks the configured sampler about
/// every other span.
#[derive(Debug, Clone)]
pub(crate) struct SkipProbes(pub(crate) Box<dyn ShouldSample>);

impl ShouldSample for SkipProbes {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if *span_kind == SpanKind::Server && is_probe(name) {
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: parent_context
                    .map(|c| c.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing made inside an unsampled request's span reaches the OpenTelemetry layer:
    /// neither spans nor events in it, nor events naming it as their parent; what is made
    /// inside a recorded span does.
    #[test]
    fn nothing_inside_an_unrecorded_span_is_seen() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing::span::{Attributes, Id};
        use tracing_subscriber::Layer;
        use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
        use tracing_subscriber::layer::SubscriberExt as _;

        /// Counts what it sees, as the OpenTelemetry layer would.
        struct Seen(Arc<AtomicUsize>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
            fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        /// The log layer: it sees every span, so unrecorded ones exist.
        struct All;
        impl<S: Subscriber> Layer<S> for All {}

        let seen = Arc::new(AtomicUsize::new(0));
        let filter = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target(UNRECORDED, LevelFilter::OFF)
            .and(InsideRecorded);
        let subscriber = tracing_subscriber::registry()
            .with(All.with_filter(LevelFilter::INFO))
            .with(Seen(Arc::clone(&seen)).with_filter(filter));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(target: UNRECORDED, "request");
            request.in_scope(|| {
                let _call = tracing::info_span!("call");
                tracing::info!("inside");
            });
            tracing::info!(parent: &request, "named as parent");
            assert_eq!(seen.load(Ordering::Relaxed), 0);

            let recorded = tracing::info_span!("recorded");
            recorded.in_scope(|| tracing::info!("inside"));
            tracing::info!(parent: &recorded, "named as parent");
            assert_eq!(seen.load(Ordering::Relaxed), 3);
        });
    }

    #[test]
    fn probes_and_scrapes_by_get_or_head_are_probes() {
        for (name, probe) in [
            ("GET /health", true),
            ("HEAD /health", true),
            ("GET /metrics", true),
            ("HEAD /metrics", true),
            ("POST /health", false),
            ("GET /token", false),
            ("GET", false),
            ("GET /healthz", false),
        ] {
            assert_eq!(is_probe(name), probe, "{name}");
        }
    }
}
