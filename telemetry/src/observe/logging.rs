//! The log line format: one flat JSON object per line, in the lab's field order
//! (`service`, the event's own fields, `request_id`, `ts`, `level`, then `trace_id`,
//! `span_id` and `trace_flags`: `"01"` when the trace is sampled, so it exists in the
//! tracing backend, `"00"` when it is not and the ids lead nowhere). The schema of every
//! line is `deploy/log-line.schema.json`.
//!
//! Request-scoped fields are not span fields formatted as text: [`observe`](crate::observe::requests)
//! attaches a [`LogContext`] to the request span, and every event inside that span (however
//! deep) finds it by walking up its scope. Values are JSON-escaped, so no header or path can
//! break a line or forge a field.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Keys the format writes itself; an event field with one of these names is dropped rather
/// than written twice.
const RESERVED: [&str; 7] = [
    "service",
    "request_id",
    "ts",
    "level",
    "trace_id",
    "span_id",
    "trace_flags",
];

/// What every log line of one request carries. Stored in the request span's extensions.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    /// The request's `X-Request-ID` (validated or generated).
    pub request_id: String,
    /// The trace and span ids of the request's span (empty when no trace context exists)
    /// and whether the trace is sampled (exported).
    pub ids: crate::observe::traces::SpanIds,
}

impl LogContext {
    /// Runs `read` with the context of the request `event` belongs to (found on the event's
    /// span or the nearest ancestor that has one), borrowed where it is stored: cloning it
    /// cost three allocations per line.
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
            let mut line = ObjectWriter::new(event.metadata().name(), std::mem::take(buf));
            line.string("service", self.service);
            event.record(&mut line);

            LogContext::of_event(event, &ctx, |context| {
                if let Some(context) = context {
                    line.string("request_id", &context.request_id);
                }
                line.timestamp("ts", SystemTime::now());
                line.string("level", event.metadata().level().as_str());
                if let Some(context) = context
                    && !context.ids.trace_id().is_empty()
                {
                    line.string("trace_id", context.ids.trace_id());
                    line.string("span_id", context.ids.span_id());
                    line.string("trace_flags", if context.ids.sampled { "01" } else { "00" });
                }
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

thread_local! {
    /// Each thread's line buffer, reused from line to line.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };

    /// The current second as RFC 3339 text without the `Z` (`2026-11-30T07:45:59`): most
    /// lines fall in the same second as the one before them.
    static SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((0, String::new())) };
}

/// A line buffer grown past this is dropped after use instead of kept for the next line.
const MAX_KEPT_LINE: usize = 16 * 1024;

/// Builds one JSON object, keys in insertion order.
struct ObjectWriter {
    buf: String,
    /// The event's own name: a `message` that only repeats it is left out (see
    /// [`crate::event!`]).
    name: &'static str,
}

impl ObjectWriter {
    fn new(name: &'static str, mut buf: String) -> Self {
        buf.clear();
        buf.reserve(256);
        buf.push('{');
        Self { buf, name }
    }

    fn key(&mut self, key: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        push_json_string(&mut self.buf, key);
        self.buf.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.buf, value);
    }

    /// `value`'s `Debug` text (a `Display` value's for `%` fields) as a JSON string, written
    /// in place: only text that needs escaping is copied out to be escaped.
    fn debug(&mut self, key: &str, value: &dyn fmt::Debug) {
        self.key(key);
        self.buf.push('"');
        let start = self.buf.len();
        let _ = write!(self.buf, "{value:?}");
        if needs_escaping(&self.buf[start..]) {
            let text = self.buf.split_off(start);
            self.buf.pop(); // the opening quote: serde_json writes its own
            push_json_string(&mut self.buf, &text);
        } else {
            self.buf.push('"');
        }
    }

    /// `value` as RFC 3339 UTC with milliseconds (`2026-11-30T07:45:59.677Z`), the second
    /// formatted once per second and thread.
    fn timestamp(&mut self, key: &str, value: SystemTime) {
        self.key(key);
        let since_epoch = value
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = since_epoch.as_secs();
        SECOND.with_borrow_mut(|(cached, text)| {
            if *cached != seconds || text.is_empty() {
                text.clear();
                let second = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
                let _ = write!(text, "{}", humantime::format_rfc3339_seconds(second));
                text.pop(); // the `Z`, written after the milliseconds
                *cached = seconds;
            }
            self.buf.push('"');
            self.buf.push_str(text);
        });
        let millis = since_epoch.subsec_millis();
        self.buf.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.buf.push(char::from(b'0' + digit as u8));
        }
        self.buf.push_str("Z\"");
    }

    fn raw(&mut self, key: &str, value: impl fmt::Display) {
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// Appends `value` as a JSON string. Most values need no escaping and are copied as they
/// are; the others go through serde_json, which escapes quotes, backslashes and every
/// control character (newlines too). Formatting every value through serde_json allocated
/// once per field per line: the largest single cost of a log line (BENCHMARKS.md).
fn push_json_string(buf: &mut String, value: &str) {
    if !needs_escaping(value) {
        buf.push('"');
        buf.push_str(value);
        buf.push('"');
        return;
    }
    match serde_json::to_string(value) {
        Ok(escaped) => buf.push_str(&escaped),
        Err(_) => buf.push_str("\"\""),
    }
}

/// Whether `value` holds a quote, a backslash or a control character. Written as a fold
/// with no early exit so that the compiler checks many bytes at a time: values are short,
/// and this runs for every field of every line.
fn needs_escaping(value: &str) -> bool {
    value.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

fn is_reserved(field: &Field) -> bool {
    RESERVED.contains(&field.name())
}

impl Visit for ObjectWriter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if is_reserved(field) {
            return;
        }
        match serde_json::Number::from_f64(value) {
            Some(number) => self.raw(field.name(), number),
            None => self.raw(field.name(), "null"),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !is_reserved(field) {
            self.raw(field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !is_reserved(field) {
            self.raw(field.name(), value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !is_reserved(field) {
            self.raw(field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let repeats_name = field.name() == "message" && value == self.name;
        if !is_reserved(field) && !repeats_name {
            self.string(field.name(), value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !is_reserved(field) {
            self.string(field.name(), &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !is_reserved(field) {
            self.debug(field.name(), value);
        }
    }
}

#[cfg(test)]
mod tests {
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

    pub(super) fn lines_of(body: impl FnOnce()) -> Vec<serde_json::Value> {
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
    fn a_named_event_keeps_the_seed_s_fields_and_no_message() {
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
    fn strings_are_escaped_only_when_they_need_it() {
        for value in [
            "plain",
            "",
            "ünïcode ✓",
            "a\"b",
            "a\\b",
            "line\nbreak",
            "\u{1}",
            "tab\t",
        ] {
            let mut buf = String::new();
            push_json_string(&mut buf, value);
            assert_eq!(
                serde_json::from_str::<String>(&buf).expect("valid JSON"),
                value,
                "{buf}"
            );
        }
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

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn timestamps_match_rfc_3339_with_milliseconds_across_seconds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_489_599_000);
        // Across a second, a minute, a day and a year boundary, and back in time.
        for offset_ms in [
            0, 1, 9, 10, 99, 100, 999, 1000, 1001, 61_000, 86_400_000, 3, 0,
        ] {
            let at = start + Duration::from_millis(offset_ms);
            let mut line = ObjectWriter::new("event", String::new());
            line.timestamp("ts", at);
            let expected = format!("{{\"ts\":\"{}\"}}", humantime::format_rfc3339_millis(at));
            assert_eq!(line.finish(), expected);
        }
    }

    #[test]
    fn a_line_logged_while_formatting_another_is_whole() {
        struct Nested;
        impl fmt::Display for Nested {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                tracing::info!(inner = 1);
                f.write_str("outer value")
            }
        }
        // tracing drops the inner event (its dispatcher refuses re-entry); whatever it
        // does, the outer line must come out whole.
        let lines = tests::lines_of(|| tracing::info!(outer = %Nested));
        assert_eq!(
            lines.last().expect("the outer line")["outer"],
            "outer value"
        );
    }
}
