//! The log line format: one flat JSON object per line, in the lab's field order
//! (`service`, the event's own fields, `request_id`, `ts`, `level`, then `trace_id`,
//! `span_id` and `trace_flags`: `"01"` when the trace is sampled, so it exists in the
//! tracing backend, `"00"` when it is not and the ids lead nowhere; only the sampled bit,
//! as OpenTelemetry's log data model defines the field, even where `traceparent` also
//! carries W3C's `random` flag). The schema of every
//! line is `deploy/log-line.schema.json`. The request's fields are listed once, in
//! [`CONTEXT_FIELDS`]; the OTLP records (`logs::otlp`) are written from the same list.
//!
//! Request-scoped fields are not span fields formatted as text: [`observe`](crate::observe::requests)
//! attaches a [`LogContext`] to the request span, and every event inside that span (however
//! deep) finds it by walking up its scope. Values are JSON-escaped, so no header or path can
//! break a line or forge a field.

use std::io::Write;
use std::time::SystemTime;

use tracing::{Event, Span, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};

use crate::observe::logs::line::{LINE, MAX_KEPT_LINE, ObjectWriter};

/// What every log line of one request carries. Stored in the request span's extensions.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    /// The request's `X-Request-ID` (validated or generated).
    pub request_id: String,
    /// The trace and span ids of the request's span (empty when no trace context exists)
    /// and whether the trace is sampled (exported).
    pub ids: crate::observe::traces::SpanIds,
}

/// Where a context field stands on a JSON line: before `ts` (the lab's `request_id`), or
/// after `level` (the trace ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Between the event's own fields and `ts`.
    BeforeTimestamp,
    /// After `level`, at the end of the line.
    AfterLevel,
}

/// How a context field travels on an OTLP log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRecord {
    /// As an attribute of this name (the name the request's span gives it).
    Attribute(&'static str),
    /// As the record's own trace context.
    TraceContext,
}

/// One field every line of a request carries: its key on the JSON line, where it stands
/// there, how it travels on an OTLP record, and how to read it.
#[derive(Debug, Clone, Copy)]
pub struct ContextField {
    /// The key on the JSON line.
    pub key: &'static str,
    /// Where it stands on the JSON line.
    pub place: Place,
    /// How it travels on an OTLP log record.
    pub on_record: OnRecord,
    /// Its value for a request (`None`: the line leaves it out).
    pub read: fn(&LogContext) -> Option<&str>,
}

/// The fields a [`LogContext`] puts on every line of its request: the one list the JSON
/// line and the OTLP record are both written from. A field added here (and to the line's
/// schema, `deploy/log-line.schema.json`) is on both.
pub const CONTEXT_FIELDS: [ContextField; 4] = [
    ContextField {
        key: "request_id",
        place: Place::BeforeTimestamp,
        on_record: OnRecord::Attribute("request.id"),
        read: |c| Some(&c.request_id),
    },
    ContextField {
        key: "trace_id",
        place: Place::AfterLevel,
        on_record: OnRecord::TraceContext,
        read: |c| c.traced().map(|ids| ids.trace_id()),
    },
    ContextField {
        key: "span_id",
        place: Place::AfterLevel,
        on_record: OnRecord::TraceContext,
        read: |c| c.traced().map(|ids| ids.span_id()),
    },
    ContextField {
        key: "trace_flags",
        place: Place::AfterLevel,
        on_record: OnRecord::TraceContext,
        read: |c| c.traced().map(|ids| if ids.sampled { "01" } else { "00" }),
    },
];

/// Whether `key` is one of the [`CONTEXT_FIELDS`], which a line writes from its request's
/// context rather than from the event.
fn is_context_field(key: &str) -> bool {
    CONTEXT_FIELDS.iter().any(|f| f.key == key)
}

impl LogContext {
    /// The span's ids, when there is a trace context.
    fn traced(&self) -> Option<&crate::observe::traces::SpanIds> {
        (!self.ids.trace_id().is_empty()).then_some(&self.ids)
    }

    /// Runs `read` with the context of the request `event` belongs to (found on the event's
    /// span or the nearest ancestor that has one), borrowed where it is stored: a line
    /// copies nothing of it.
    pub fn of_event<S, R>(
        event: &Event<'_>,
        ctx: &Context<'_, S>,
        read: impl FnOnce(Option<&LogContext>) -> R,
    ) -> R
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let holder = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find(|span| span.extensions().get::<LogContext>().is_some())
        });
        let extensions = holder.as_ref().map(|span| span.extensions());
        read(extensions.as_ref().and_then(|e| e.get::<LogContext>()))
    }

    /// Attaches this context to `span`, so every event recorded inside it carries the fields.
    pub fn attach_to(self, span: &Span) {
        span.with_subscriber(|(id, dispatch)| {
            if let Some(registry) = dispatch.downcast_ref::<Registry>()
                && let Some(span) = registry.span(id)
            {
                span.extensions_mut().insert(self);
            }
        });
    }
}

/// The log layer for `service`: every event as one JSON line (see the module docs for the
/// field order), written to `writer`.
pub fn layer<W>(service: &'static str, writer: W) -> JsonLines<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    JsonLines { service, writer }
}

/// A layer that writes each event as one JSON line and does nothing for spans: the lines
/// read request-scoped values from [`LogContext`], so unlike tracing-subscriber's fmt layer
/// it keeps no text of span fields (an allocation per span) and has no work on span entry,
/// exit or close.
#[derive(Debug, Clone)]
pub struct JsonLines<W> {
    /// The value of the `service` field on every line.
    service: &'static str,
    writer: W,
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        LINE.with_borrow_mut(|buf| {
            // A line logged while this one is being formatted finds the buffer taken and
            // gets a fresh one.
            let mut line = ObjectWriter::new(
                event.metadata().name(),
                std::mem::take(buf),
                is_context_field,
            );
            line.string("service", self.service);
            event.record(&mut line);

            LogContext::of_event(event, &ctx, |context| {
                let write_context = |line: &mut ObjectWriter, place: Place| {
                    let fields = CONTEXT_FIELDS.iter().filter(|f| f.place == place);
                    for field in fields {
                        if let Some(value) = context.and_then(field.read) {
                            line.string(field.key, value);
                        }
                    }
                };
                write_context(&mut line, Place::BeforeTimestamp);
                line.timestamp("ts", SystemTime::now());
                line.string("level", event.metadata().level().as_str());
                write_context(&mut line, Place::AfterLevel);
            });
            let mut text = line.finish();
            text.push('\n');
            // Nowhere to report a failed log write; keep serving.
            let _ = self.writer.make_writer().write_all(text.as_bytes());
            if text.capacity() <= MAX_KEPT_LINE {
                text.clear();
                *buf = text;
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Collects everything written, for assertions.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A request span carrying `request_id` (and no trace ids) for its lines.
    fn request_span(request_id: &str) -> Span {
        let span = tracing::info_span!("request");
        LogContext {
            request_id: request_id.into(),
            ..LogContext::default()
        }
        .attach_to(&span);
        span
    }

    pub(crate) fn lines_of(body: impl FnOnce()) -> Vec<serde_json::Value> {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::registry().with(layer("svc", move || sink.clone()));
        tracing::subscriber::with_default(subscriber, body);
        let bytes = capture.0.lock().expect("capture lock").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn fields_come_in_the_labs_order() {
        let lines = lines_of(|| {
            let span = request_span("demo-123");
            span.in_scope(|| {
                tracing::info!(endpoint = "POST /token", status = 200u16, latency_ms = 0.15)
            });
        });
        assert_eq!(lines[0]["service"], "svc");
        assert_eq!(lines[0]["endpoint"], "POST /token");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["latency_ms"], 0.15);
        assert_eq!(lines[0]["request_id"], "demo-123");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(
            lines[0].get("trace_id").is_none(),
            "no trace context, no ids"
        );
    }

    #[test]
    fn raw_line_starts_with_service_and_ends_with_level() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::registry().with(layer("svc", move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::warn!(a = 1, "hello"));
        let text = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            text.starts_with(r#"{"service":"svc","message":"hello","a":1,"ts":""#),
            "{text}"
        );
        assert!(text.ends_with("\"level\":\"WARN\"}\n"), "{text}");
    }

    #[test]
    fn a_named_event_keeps_the_labs_fields_and_no_message() {
        let lines = lines_of(|| {
            crate::event!(
                ERROR,
                "provider_call_failed",
                error = "timeout",
                attempt = 1
            );
        });
        assert_eq!(lines[0]["event"], "provider_call_failed");
        assert_eq!(lines[0]["error"], "timeout");
        assert_eq!(lines[0]["attempt"], 1);
        assert!(lines[0].get("message").is_none(), "{}", lines[0]);
    }

    #[test]
    fn display_and_debug_values_are_escaped_like_strings() {
        let hostile = "GET /a\n{\"forged\":true}";
        let lines = lines_of(|| {
            tracing::info!(shown = %hostile, debugged = ?"plain", path = %"/token");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["shown"], hostile);
        assert_eq!(lines[0]["debugged"], "\"plain\"");
        assert_eq!(lines[0]["path"], "/token");
        assert!(lines[0].get("forged").is_none());
    }

    #[test]
    fn hostile_values_cannot_break_a_line_or_forge_a_field() {
        let lines = lines_of(|| {
            let span = request_span("x\",\"level\":\"ERROR");
            span.in_scope(|| {
                tracing::info!(endpoint = "GET /a\n{\"forged\":true}", service = "evil")
            });
        });
        assert_eq!(lines.len(), 1, "a newline in a value stays inside the line");
        assert_eq!(lines[0]["endpoint"], "GET /a\n{\"forged\":true}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(
            lines[0]["service"], "svc",
            "reserved keys cannot be overwritten"
        );
        assert!(lines[0].get("forged").is_none());
    }

    #[test]
    fn every_context_field_is_on_the_line_in_its_place_and_in_the_schema() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::registry().with(layer("svc", move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            LogContext {
                request_id: "r1".into(),
                ids: crate::observe::traces::SpanIds::new(
                    opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
                        .expect("trace id"),
                    opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
                    false,
                    true,
                ),
            }
            .attach_to(&span);
            tracing::info!(parent: &span, status = 200);
        });
        let text = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8");
        // The keys in the order the line has them.
        let mut keys: Vec<(usize, &str)> = ["service", "status", "ts", "level"]
            .into_iter()
            .chain(CONTEXT_FIELDS.iter().map(|f| f.key))
            .map(|k| (text.find(&format!("\"{k}\":")).expect(k), k))
            .collect();
        keys.sort_unstable();
        let keys: Vec<&str> = keys.into_iter().map(|(_, k)| k).collect();
        let before = |field: &ContextField| field.place == Place::BeforeTimestamp;
        let mut expected = vec!["service", "status"];
        expected.extend(CONTEXT_FIELDS.iter().filter(|f| before(f)).map(|f| f.key));
        expected.extend(["ts", "level"]);
        expected.extend(CONTEXT_FIELDS.iter().filter(|f| !before(f)).map(|f| f.key));
        assert_eq!(keys, expected, "written from CONTEXT_FIELDS, in place");

        let schema_path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/log-line.schema.json");
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(schema_path).expect("the schema"))
                .expect("JSON");
        for field in CONTEXT_FIELDS {
            assert!(
                schema["properties"].get(field.key).is_some(),
                "{} is in deploy/log-line.schema.json",
                field.key
            );
        }
    }

    #[test]
    fn context_is_found_from_an_explicit_parent() {
        let lines = lines_of(|| {
            let span = request_span("r2");
            tracing::info!(parent: &span, status = 200);
        });
        assert_eq!(lines[0]["request_id"], "r2");
    }

    #[test]
    fn context_is_found_from_nested_spans() {
        let lines = lines_of(|| {
            let outer = tracing::info_span!("request");
            LogContext {
                request_id: "r1".into(),
                ids: crate::observe::traces::SpanIds::new(
                    opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
                        .expect("trace id"),
                    opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
                    true,
                    true,
                ),
            }
            .attach_to(&outer);
            outer.in_scope(|| {
                tracing::info_span!("attempt").in_scope(|| tracing::error!(attempt = 1))
            });
        });
        assert_eq!(lines[0]["request_id"], "r1");
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00f067aa0ba902b7");
        assert_eq!(lines[0]["trace_flags"], "01");
        assert_eq!(lines[0]["level"], "ERROR");
    }
}
