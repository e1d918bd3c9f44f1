//! Optional OTLP log export: with `OTEL_LOGS_EXPORTER=otlp`, every log line is also sent as
//! an OpenTelemetry log record to the same collector as the spans (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `/v1/logs` appended, or `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`; headers, timeout and
//! compression as for spans). Stdout keeps its JSON lines, unchanged, either way.
//!
//! A record carries what its JSON line carries: the event's fields and `request.id` as
//! attributes, the level as severity, the time, the service on the resource, and the trace
//! and span ids (with the sampled flag) as the record's trace context, so a backend links it
//! to its span. opentelemetry-appender-tracing sees only the event's own fields, not the
//! request context this crate keeps on the span, hence this small layer.

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

use crate::observe::export_queue::{Counted, Gate, GatedLogs};
use crate::observe::logging::{CONTEXT_FIELDS, LogContext, OnRecord};

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
}

impl OtlpLogs {
    /// The exporter, when [`configured`].
    pub fn init(
        service: &'static str,
        resource: opentelemetry_sdk::Resource,
        env: &crate::observe::otel_env::OtelEnv,
    ) -> Result<Option<Self>, String> {
        if !configured(env) {
            return Ok(None);
        }
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| e.to_string())?;
        let capacity = crate::observe::export_queue::capacity_from_env("OTEL_BLRP_MAX_QUEUE_SIZE")?;
        let pipeline = &crate::observe::losses::losses().log_records;
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
        Ok(Some(Self { provider, service }))
    }

    /// The layer that turns each event into a log record.
    pub fn layer(&self) -> RecordLayer {
        let scope = InstrumentationScope::builder(self.service)
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(crate::observe::traces::SCHEMA_URL)
            .build();
        RecordLayer {
            logger: self.provider.logger_with_scope(scope),
        }
    }

    /// Exports what is still batched, waiting at most `grace`. Blocks, so it runs on the
    /// blocking pool.
    pub async fn shutdown(self, grace: Duration) {
        let provider = self.provider;
        let _ = tokio::time::timeout(
            grace + Duration::from_millis(100),
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(grace)),
        )
        .await;
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct RecordLayer {
    logger: SdkLogger,
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
        // A named event (`telemetry::event!`) is its name; the access log line is the
        // `access_log` event.
        let access_log = metadata.target() == crate::observe::ACCESS_LOG;
        let name = if access_log {
            crate::observe::ACCESS_LOG
        } else {
            metadata.name()
        };
        let mut fields = Fields {
            record: &mut record,
            name,
            access_log,
            named: false,
            body: None,
        };
        event.record(&mut fields);
        let (named, body) = (fields.named, fields.body.take());
        if named || access_log {
            record.set_event_name(name);
        }
        if let Some(body) = body {
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
/// them (the access line's `status` is `http.response.status_code`). The event's name is
/// the record's `EventName`, not an attribute; the body is a free-text message, if any.
struct Fields<'a, R> {
    record: &'a mut R,
    name: &'static str,
    access_log: bool,
    /// Whether the event named itself (an `event` field equal to its name).
    named: bool,
    body: Option<String>,
}

impl<R: opentelemetry::logs::LogRecord> Fields<'_, R> {
    fn add(&mut self, field: &Field, value: AnyValue) {
        let key = match field.name() {
            "status" if self.access_log => "http.response.status_code",
            name => name,
        };
        self.record.add_attribute(Key::new(key), value);
    }

    /// Whether a text field only repeats what the record already says (its name), and
    /// takes a free-text message as the body.
    fn said_otherwise(&mut self, field: &Field, value: &str) -> bool {
        match field.name() {
            "event" if value == self.name => {
                self.named = true;
                true
            }
            "message" if value == self.name => true,
            "message" => {
                self.body = Some(value.to_owned());
                true
            }
            _ => false,
        }
    }
}

impl<R: opentelemetry::logs::LogRecord> Visit for Fields<'_, R> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, AnyValue::Double(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, AnyValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(
            field,
            AnyValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, AnyValue::Boolean(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.said_otherwise(field, value) {
            self.add(field, AnyValue::from(value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if !self.said_otherwise(field, &text) {
            self.add(field, AnyValue::from(text));
        }
    }
}
