//! Observation: what happens in a service is seen, in logs, traces and metrics, and what
//! telemetry itself could not deliver is counted. Three rooms (logs, traces, metrics), the
//! requests that all three observe, and the exports with what they lost; each a folder whose
//! `mod.rs` says what each file is for. The entry point is [`init`] (the crate's `run`
//! calls it); everything a service names is re-exported here.
//!
//! | file or folder | what |
//! |---|---|
//! | [`start`] | [`init`]: the subscriber, recorder and propagator installed, and the [`Telemetry`] that flushes them |
//! | [`settings`] | what the layers observe with, held as fields: [`Settings`] |
//! | [`otel_env`] | the `OTEL_*` variables: each honoured or refused at start |
//! | [`logs`] | JSON log lines on stdout behind a bounded queue, and as OTLP log records |
//! | [`traces`] | spans as OpenTelemetry spans: sampling, W3C trace context in and out, OTLP export |
//! | [`metrics`] | the recorder, its three renderings, exemplars, the process's own series |
//! | [`requests`] | one request in and one call out, observed: spans, log line, series, request id |
//! | [`export`] | the queues and client in front of the OTLP exporters, and what telemetry lost |

pub mod export;
pub mod logs;
pub mod metrics;
pub mod otel_env;
pub mod requests;
pub mod settings;
pub mod start;
pub mod traces;

/// A structured event named `$name`: `"event": $name` in the JSON log line, and the span
/// event's name in OpenTelemetry (where an unnamed event would be named after its source
/// line): `telemetry::event!(WARN, "load_shed", in_flight = 3)`. No free-text message.
///
/// The name travels as the event's `message` too, first: tracing-opentelemetry names span
/// events from it, and an event named that way keeps a field called `error` as a plain
/// attribute (an unnamed one is rewritten as an "exception" with a quoted value). The JSON
/// line leaves out a message that only repeats the event's name.
#[macro_export]
macro_rules! event {
    ($level:ident, $name:literal) => {
        ::tracing::event!(name: $name, ::tracing::Level::$level, message = $name, event = $name)
    };
    ($level:ident, $name:literal, $($rest:tt)+) => {
        ::tracing::event!(
            name: $name,
            ::tracing::Level::$level,
            message = $name,
            event = $name,
            $($rest)+
        )
    };
}

pub use metrics::{
    CLIENT_DURATION, ExemplarHistogram, Exposition, Metrics, SERVER_REQUESTS, Tally,
};
pub use requests::{
    ATTEMPT_HEADER, AttemptHeader, Classify, ClientAddress, ClientCalls, Observed, Outbound,
    REQUEST_ID_HEADER, RequestId, TIMEOUT_HEADER,
};
pub use settings::Settings;
pub use start::{
    ACCESS_LOG, DEFAULT_LOG_FILTER, FLUSH_GRACE, InitError, Telemetry, TelemetryArgs, init,
};
pub use traces::{CallerTraceContext, Propagation, SpanIds, current_ids, inject};
