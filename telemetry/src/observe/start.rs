//! Starting observation: [`init`] installs the process's subscriber, recorder and
//! propagator, starts the exporters, and returns the [`Telemetry`] that owns what must be
//! flushed and the [`Settings`] the service's layers observe with.

use crate::observe::export::Notices;
use crate::observe::metrics::Metrics;
use crate::observe::requests::KnownMethods;
use crate::observe::settings::Settings;
use crate::observe::traces::{self, CallerTraceContext, Propagation};
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt as _};

/// The log filter when `RUST_LOG` is unset: INFO, except reqwest-retry's own free-text
/// "Retry attempt #n" warnings, which service B replaces with structured
/// `provider_call_failed` events.
pub const DEFAULT_LOG_FILTER: &str = "info,reqwest_retry=error";

/// Target of the per-request log line: it is the span's own summary, so it goes to the log
/// only, not onto the span as an event.
pub const ACCESS_LOG: &str = "access_log";

/// Telemetry settings both services take as flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TelemetryArgs {
    /// Also trace `GET /health` and `GET /metrics` (off: probes and scrapes would otherwise
    /// be a large share of all traces; their log lines keep trace ids either way).
    #[arg(long, env = "TRACE_PROBES")]
    pub trace_probes: bool,

    /// How to treat the trace context callers send: `trust` joins the caller's trace
    /// (honouring its sampled flag and passing its baggage on), `restart` starts a new trace
    /// linked to the caller's span (for a service anyone outside may call), `ignore` starts
    /// a new trace and reads nothing the caller sent.
    #[arg(long, env = "CALLER_TRACE_CONTEXT", value_enum, default_value_t)]
    pub caller_trace_context: CallerTraceContext,
}

/// Owns what must be flushed on the way out (the log writer thread and the exporters), and
/// the [`Settings`] the service observes with. Call [`Telemetry::shutdown`] after the
/// server has drained.
#[derive(Debug)]
pub struct Telemetry {
    log_guard: crate::observe::logs::writer::FlushGuard,
    notices: Notices,
    traces: traces::Traces,
    logs: Option<crate::observe::logs::OtlpLogs>,
    /// What the service's layers observe with: its metrics, propagation, caller policy,
    /// sampler and known methods, as `init` decided them.
    pub settings: Settings,
}

/// Why telemetry could not start. Every case is a start-up misconfiguration.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `RUST_LOG` does not parse as a filter.
    #[error("RUST_LOG is not a valid filter: {0}")]
    LogFilter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber or recorder was already installed in this process.
    #[error("telemetry was already initialised in this process: {0}")]
    AlreadyInitialised(String),
    /// An `OTEL_*` variable asks for something this build cannot honour.
    #[error("{0}")]
    Environment(String),
    /// The OTLP exporter settings are unusable.
    #[error("trace export is misconfigured: {0}")]
    Traces(String),
}

/// Installs logging, tracing and metrics for the whole process. Call once, from `main`,
/// inside the Tokio runtime (metrics upkeep runs as a task on it).
///
/// - Logs: one JSON object per line on stdout, queued and written by a background thread
///   (see [`crate::observe::logs::writer`]): a slow, blocked or closed stdout never stalls a request; what
///   it cannot take is dropped and counted (see [`crate::observe::export::losses`]). `RUST_LOG` (default
///   [`DEFAULT_LOG_FILTER`]) chooses the *lines* of this output (and of the OTLP log
///   records) only: spans at INFO and above are created whatever it says, so a quiet log
///   never breaks trace propagation, and a warning inside a request still carries the
///   request's id and trace ids.
/// - Traces: see [`crate::observe::traces`]. Ids are real W3C ids even when nothing is exported.
/// - Metrics: see [`crate::observe::metrics`].
///
/// `timeouts` are the service's own timeouts: each gets a histogram bucket boundary at and
/// just above it (see [`crate::observe::metrics::timeout_bounds`]).
pub fn init(
    service: &'static str,
    args: &TelemetryArgs,
    timeouts: &[std::time::Duration],
) -> Result<Telemetry, InitError> {
    // One resource for spans, log records and target_info: one service.instance.id.
    let (env, warnings) = crate::observe::otel_env::check().map_err(InitError::Environment)?;
    let resource = traces::resource(service, &env);
    // The recorder first: what the sinks below lose is counted in it.
    let metrics = Metrics::install(timeouts, &resource).map_err(InitError::AlreadyInitialised)?;
    let lost = metrics.losses();
    let (writer, log_guard) = crate::observe::logs::writer::stdout_writer(lost);
    // One name everywhere: OTEL_SERVICE_NAME (or the resource's) on every line and scope.
    let service = traces::service_name(&resource, service);
    let traces = traces::Traces::init(service, resource.clone(), args.trace_probes, &env, lost)
        .map_err(InitError::Traces)?;
    let logs = crate::observe::logs::OtlpLogs::init(service, resource.clone(), &env, lost)
        .map_err(InitError::Traces)?;
    let records = match &logs {
        Some(logs) => Some(logs.layer().with_filter(log_filter()?)),
        None => None,
    };

    let subscriber = tracing_subscriber::registry()
        .with(crate::observe::logs::layer(service, writer).with_filter(log_filter()?))
        // The same lines, as OTLP log records, when OTEL_LOGS_EXPORTER=otlp.
        .with(records)
        // Spans at INFO and above become OpenTelemetry spans whatever RUST_LOG says: a
        // filter on this layer that disabled B's attempt span would stop `traceparent`
        // from being sent. DEBUG and TRACE callsites from dependencies stay disabled for both
        // layers, so they cost nothing. Left off the spans: the access log line (the span
        // says it all), reqwest-retry's free-text retry warnings (B's attempt spans carry
        // structured ones), and an unsampled request with all inside it (see `traces`).
        .with(
            traces.layer().with_filter(
                Targets::new()
                    .with_default(LevelFilter::INFO)
                    .with_target(ACCESS_LOG, LevelFilter::OFF)
                    .with_target("reqwest_retry", LevelFilter::OFF)
                    .with_target(traces::UNRECORDED, LevelFilter::OFF)
                    .and(traces::InsideRecorded),
            ),
        );
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| InitError::AlreadyInitialised(e.to_string()))?;
    for warning in warnings {
        crate::event!(
            WARN,
            "otel_setting_ignored",
            variable = warning.variable.as_str(),
            reason = warning.reason.as_str()
        );
    }

    let settings = Settings {
        metrics,
        propagation: Propagation::of(&env),
        caller_trace_context: args.caller_trace_context,
        sampler: traces.sampler(),
        known_methods: env
            .known_methods
            .as_deref()
            .map(KnownMethods::named)
            .unwrap_or_default(),
    };
    Ok(Telemetry {
        log_guard,
        notices: Notices::start(service, lost),
        traces,
        logs,
        settings,
    })
}

/// The filter of a log output (the JSON lines, the OTLP log records): `RUST_LOG` (default
/// [`DEFAULT_LOG_FILTER`]) chooses the lines, and every span at INFO and above is kept
/// whatever it says, for the context it carries: a request's id and trace ids on every line
/// inside it, and, for an unsampled request, the ids a call onwards sends (no other layer
/// keeps that span: see [`crate::observe::traces`]).
fn log_filter<S>() -> Result<impl Filter<S>, tracing_subscriber::filter::ParseError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let lines = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(DEFAULT_LOG_FILTER),
    }?;
    let spans = filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO)
        .with_max_level_hint(LevelFilter::INFO);
    Ok(lines.or(spans))
}

/// How long each sink gets to take what is still queued at shutdown: the span and log
/// record exporters (together), then stdout. A sink that is stuck or gone cannot hold the
/// process longer; what it did not take is counted (see [`crate::observe::export::losses`]).
pub const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Telemetry {
    /// Flushes spans and log records still in their batches, then the log lines still
    /// queued, each within [`FLUSH_GRACE`], and says on stderr what was lost, if anything.
    pub async fn shutdown(self) {
        let spans = self.traces.shutdown(FLUSH_GRACE);
        let records = async {
            if let Some(logs) = self.logs {
                logs.shutdown(FLUSH_GRACE).await;
            }
        };
        tokio::join!(spans, records);
        self.log_guard.finish(FLUSH_GRACE);
        self.notices.finish(std::time::Duration::from_millis(200));
    }
}
