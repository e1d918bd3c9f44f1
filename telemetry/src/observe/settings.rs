//! What observation holds in hand: the settings [`crate::observe::init`] decides once, which
//! the request layer ([`crate::observe::requests::Observation`]) and the outbound middleware
//! ([`crate::observe::requests::outbound::ClientCalls`]) keep as fields, as tower-http's and
//! tracing-subscriber's layers keep their configuration. Nothing is read from a
//! process-wide place, so two services with different settings can run in one process.

use crate::observe::export::losses::Losses;
use crate::observe::metrics::Metrics;
use crate::observe::requests::series::KnownMethods;
use crate::observe::traces::Sampler;
use crate::observe::traces::{CallerTraceContext, Propagation};

/// A service's observation settings: its metrics (renderings, exemplars, what telemetry
/// lost), which W3C headers it reads and writes, how it treats its callers' trace context,
/// the sampler its requests are decided with, and the HTTP methods it names.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) metrics: Metrics,
    pub(crate) propagation: Propagation,
    pub(crate) caller_trace_context: CallerTraceContext,
    pub(crate) sampler: Sampler,
    pub(crate) known_methods: KnownMethods,
}

impl Settings {
    /// The settings of a service started inside a process that runs something else (a
    /// test's): the defaults of an environment with no `OTEL_*` variable, and metrics no
    /// recorder feeds. Its routes, `/metrics` included, answer as the binary's do; its
    /// telemetry goes where the process's installed subscriber and recorder send it, if
    /// anywhere (one process has one of each: telemetry output stays with the binaries).
    pub fn in_process() -> Self {
        let (metrics, _recorder) =
            Metrics::build(&[], Losses::leaked()).expect("the default buckets are valid");
        Self {
            metrics,
            propagation: Propagation::default(),
            caller_trace_context: CallerTraceContext::default(),
            sampler: Sampler::default(),
            known_methods: KnownMethods::default(),
        }
    }

    /// The same, treating callers' trace context as `policy` says.
    pub fn with_caller_trace_context(mut self, policy: CallerTraceContext) -> Self {
        self.caller_trace_context = policy;
        self
    }

    /// The same, reading and writing only the W3C headers `propagation` names.
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// The same, naming `methods` and no other (`OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`).
    pub fn with_known_methods(mut self, methods: &[String]) -> Self {
        self.known_methods = KnownMethods::named(methods);
        self
    }

    /// The service's metrics: what `/metrics` renders, and where its histograms keep
    /// exemplars.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How the service treats its callers' trace context.
    pub fn caller_trace_context(&self) -> CallerTraceContext {
        self.caller_trace_context
    }
}
