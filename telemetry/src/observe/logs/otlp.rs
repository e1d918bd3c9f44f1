//! Optional OTLP log export: with `OTEL_LOGS_EXPORTER=otlp`, every log line is also sent as
//! an OpenTelemetry log record to the same collector as the spans (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `/v1/logs` appended, or `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`; headers, timeout and
//! compression as for spans). Stdout keeps its JSON lines, unchanged, either way.
//!
//! A record carries what its JSON line carries: the event's name as the record's
//! `EventName` (the line's `event`, or `access_log` for a request's line), the event's own
//! fields and `request.id` as attributes, the level as severity, the time, the service on
//! the resource, and the trace and span ids (with the sampled flag) as the record's trace
//! context, so a backend links it to its span. Its body is the line as a person reads it in
//! a backend's log list: the message or the event's name, then the event's own fields as
//! `key=value` (`provider_call_failed error=timeout timeout_secs=1 attempt=1`).
//!
//! The access line's `status` is the record's `http.response.status_code`, as on the span;
//! when the caller went away before an answer (the line's 499, nginx's convention) no
//! status was sent, so the record says `error.type` `client_disconnected` instead, as the
//! span does.
//!
//! opentelemetry-appender-tracing sees only the event's own fields, not the request context
//! this crate keeps on the span, hence this small layer.

use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::{InstrumentationScope, Key};
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, SdkLogger, SdkLoggerProvider,
};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::observe::export::queue::{Counted, Gate, GatedLogs};
use crate::observe::logs::format::{CONTEXT_FIELDS, LogContext, OnRecord};
use crate::observe::requests::CLIENT_CLOSED_REQUEST;
use crate::observe::requests::series::CALLER_GONE;

/// Whether log records are to be exported: `OTEL_LOGS_EXPORTER=otlp` and an endpoint.
pub fn configured(env: &crate::observe::otel_env::OtelEnv) -> bool {
    let wanted = env.export_logs;
    let endpoint = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    wanted && endpoint && !env.sdk_disabled
}

/// The log provider of this process. Shut it down to flush the last batch.
#[derive(Debug)]
pub struct OtlpLogs {
    provider: SdkLoggerProvider,
    service: &'static str,
    losses: &'static crate::observe::export::losses::Losses,
}

impl OtlpLogs {
    /// The exporter, when [`configured`].
    pub fn init(
        service: &'static str,
        resource: opentelemetry_sdk::Resource,
        env: &crate::observe::otel_env::OtelEnv,
        losses: &'static crate::observe::export::losses::Losses,
    ) -> Result<Option<Self>, String> {
        if !configured(env) {
            return Ok(None);
        }
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let pipeline = &losses.log_records;
        let client =
            crate::observe::export::client::RetryingClient::new(env.logs_export_timeout, pipeline)?;
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| e.to_string())?;
        let capacity =
            crate::observe::export::queue::capacity_from_env("OTEL_BLRP_MAX_QUEUE_SIZE")?;
        let batch = BatchLogProcessor::builder(Counted::new(exporter, pipeline))
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(capacity)
                    .build(),
            )
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_log_processor(GatedLogs::new(batch, Gate::new(pipeline, capacity)))
            .build();
        Ok(Some(Self {
            provider,
            service,
            losses,
        }))
    }

    /// The layer that turns each event into a log record.
    pub fn layer(&self) -> RecordLayer {
        let scope = InstrumentationScope::builder(self.service)
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(crate::observe::traces::SCHEMA_URL)
            .build();
        RecordLayer {
            logger: self.provider.logger_with_scope(scope),
            event_names: EventNames::default(),
        }
    }

    /// Exports what is still batched, waiting at most `grace`; what is still queued or
    /// being exported then is counted lost. Blocks, so it runs on the blocking pool.
    pub async fn shutdown(self, grace: Duration) {
        let provider = self.provider;
        let _ = tokio::time::timeout(
            grace + Duration::from_millis(100),
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(grace)),
        )
        .await;
        self.losses.log_records.give_up();
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct RecordLayer {
    logger: SdkLogger,
    event_names: EventNames,
}

/// Most event names kept for records beyond the callsites' own: event names are literals
/// in the code, so far fewer.
const MAX_EVENT_NAMES: usize = 256;

/// Event names as the log record takes them (`&'static str`). A named event's is its
/// callsite's name (`telemetry::event!`); an `event` field's text is kept here once, up to
/// [`MAX_EVENT_NAMES`] names (past them, a record keeps its name as an `event` attribute).
#[derive(Debug, Default)]
struct EventNames(std::sync::Mutex<std::collections::HashSet<&'static str>>);

impl EventNames {
    fn of(&self, name: &str, callsite: &'static str) -> Option<&'static str> {
        if name == callsite {
            return Some(callsite);
        }
        let mut names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = names.get(name) {
            return Some(kept);
        }
        if names.len() >= MAX_EVENT_NAMES {
            return None;
        }
        let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(kept);
        Some(kept)
    }
}

impl<S> tracing_subscriber::Layer<S> for RecordLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut record = self.logger.create_log_record();
        let now = SystemTime::now();
        record.set_timestamp(now);
        record.set_observed_timestamp(now);
        record.set_severity_number(severity(*metadata.level()));
        record.set_severity_text(metadata.level().as_str());
        let access_log = metadata.target() == crate::observe::ACCESS_LOG;
        // A request's line is the `access_log` event; a named one is its `event`.
        let mut fields = Fields {
            record: &mut record,
            callsite: metadata.name(),
            access_log,
            name: access_log.then(|| crate::observe::ACCESS_LOG.to_owned()),
            message: None,
            text: String::new(),
        };
        event.record(&mut fields);
        let body = fields.body();
        if access_log {
            record.set_event_name(crate::observe::ACCESS_LOG);
        } else if let Some(name) = fields.name.take() {
            match self.event_names.of(&name, metadata.name()) {
                Some(name) => record.set_event_name(name),
                None => record.add_attribute(Key::new("event"), AnyValue::from(name)),
            }
        }
        if !body.is_empty() {
            record.set_body(AnyValue::from(body));
        }
        LogContext::of_event(event, &ctx, |context| {
            let Some(context) = context else { return };
            for field in &CONTEXT_FIELDS {
                if let (OnRecord::Attribute(name), Some(value)) =
                    (field.on_record, (field.read)(context))
                {
                    record.add_attribute(name, value.to_owned());
                }
            }
            if let (Ok(trace_id), Ok(span_id)) = (
                TraceId::from_hex(context.ids.trace_id()),
                SpanId::from_hex(context.ids.span_id()),
            ) {
                let flags = if context.ids.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                record.set_trace_context(trace_id, span_id, Some(flags));
            }
        });
        self.logger.emit(record);
    }
}

fn severity(level: Level) -> Severity {
    match level {
        Level::TRACE => Severity::Trace,
        Level::DEBUG => Severity::Debug,
        Level::INFO => Severity::Info,
        Level::WARN => Severity::Warn,
        Level::ERROR => Severity::Error,
    }
}

/// The event's fields as typed attributes, named as on the spans where a convention names
/// them (the access line's `status` is `http.response.status_code`, or `error.type` when
/// no answer was sent). The event's name is the record's `EventName`, not an attribute;
/// the body is the message or the name, then every own field as `key=value`.
struct Fields<'a, R> {
    record: &'a mut R,
    /// The callsite's name: a `message` equal to it only repeats the name
    /// (`telemetry::event!`).
    callsite: &'static str,
    access_log: bool,
    /// The event's name: its `event` field, or `access_log`.
    name: Option<String>,
    /// A free-text message.
    message: Option<String>,
    /// The own fields as ` key=value`, in order.
    text: String,
}

impl<R: opentelemetry::logs::LogRecord> Fields<'_, R> {
    fn add(&mut self, field: &Field, value: AnyValue, text: &dyn std::fmt::Display) {
        use std::fmt::Write as _;
        let _ = write!(self.text, " {}={text}", field.name());
        let key = match field.name() {
            "status" if self.access_log => {
                if matches!(value, AnyValue::Int(status) if status == i64::from(CLIENT_CLOSED_REQUEST))
                {
                    self.record
                        .add_attribute(Key::new("error.type"), AnyValue::from(CALLER_GONE));
                    return;
                }
                "http.response.status_code"
            }
            name => name,
        };
        self.record.add_attribute(Key::new(key), value);
    }

    /// Whether a text field says something the record holds elsewhere: the event's name
    /// (`event`, or a `message` that repeats the callsite's name) or a free-text message.
    fn said_otherwise(&mut self, field: &Field, value: &str) -> bool {
        match field.name() {
            "event" => {
                self.name = Some(value.to_owned());
                true
            }
            "message" if value == self.callsite => true,
            "message" => {
                self.message = Some(value.to_owned());
                true
            }
            _ => false,
        }
    }

    fn add_text(&mut self, field: &Field, value: &str) {
        let plain = !value.is_empty()
            && !value
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b'=' || b.is_ascii_control());
        let text = if plain {
            value.to_owned()
        } else {
            format!("{value:?}")
        };
        self.add(field, AnyValue::from(value.to_owned()), &text);
    }

    /// The body: the message, or else the name, then the own fields.
    fn body(&self) -> String {
        let head = self
            .message
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or_default();
        format!("{head}{}", self.text).trim_start().to_owned()
    }
}

impl<R: opentelemetry::logs::LogRecord> Visit for Fields<'_, R> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, AnyValue::Double(value), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, AnyValue::Int(value), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(
            field,
            AnyValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
            &value,
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, AnyValue::Boolean(value), &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.said_otherwise(field, value) {
            self.add_text(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if !self.said_otherwise(field, &text) {
            self.add_text(field, &text);
        }
    }
}
