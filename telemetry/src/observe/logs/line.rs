//! One JSON log line, written in place: keys in the order they are given, values escaped
//! only when they need it, the timestamp formatted once per second. The layer in
//! [`crate::observe::logs::format`] decides what goes on the line; this is how it is written.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};

/// Keys the format writes itself; an event field with one of these names (or one the
/// writer's caller reserves) is dropped rather than written twice.
const RESERVED: [&str; 3] = ["service", "ts", "level"];

thread_local! {
    /// Each thread's line buffer, reused from line to line.
    pub(crate) static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };

    /// The current second as RFC 3339 text without the `Z` (`2026-11-30T07:45:59`): most
    /// lines fall in the same second as the one before them.
    static SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((0, String::new())) };
}

/// A line buffer grown past this is dropped after use instead of kept for the next line.
pub(crate) const MAX_KEPT_LINE: usize = 16 * 1024;

/// Builds one JSON object, keys in insertion order.
pub(crate) struct ObjectWriter {
    buf: String,
    /// The event's own name: a `message` that only repeats it is left out (see
    /// [`crate::event!`]).
    name: &'static str,
    /// Keys the caller writes itself, besides [`RESERVED`]: event fields of these names
    /// are dropped.
    reserved: fn(&str) -> bool,
}

impl ObjectWriter {
    /// A line for the event `name`, written into `buf`, dropping event fields whose key
    /// the format writes or `reserved` says the caller writes.
    pub(crate) fn new(name: &'static str, mut buf: String, reserved: fn(&str) -> bool) -> Self {
        buf.clear();
        buf.reserve(256);
        buf.push('{');
        Self {
            buf,
            name,
            reserved,
        }
    }

    fn is_reserved(&self, field: &Field) -> bool {
        RESERVED.contains(&field.name()) || (self.reserved)(field.name())
    }

    fn key(&mut self, key: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        push_json_string(&mut self.buf, key);
        self.buf.push(':');
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) {
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
    pub(crate) fn timestamp(&mut self, key: &str, value: SystemTime) {
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

    pub(crate) fn integer(&mut self, key: &str, value: u64) {
        self.raw(key, value);
    }

    fn raw(&mut self, key: &str, value: impl fmt::Display) {
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    pub(crate) fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// Appends `value` as a JSON string. Most values need no escaping and are copied as they
/// are; the others go through serde_json, which escapes quotes, backslashes and every
/// control character (newlines too): a plain value costs a copy, never an allocation.
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

impl Visit for ObjectWriter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.is_reserved(field) {
            return;
        }
        match serde_json::Number::from_f64(value) {
            Some(number) => self.raw(field.name(), number),
            None => self.raw(field.name(), "null"),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.is_reserved(field) {
            self.raw(field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.is_reserved(field) {
            self.raw(field.name(), value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.is_reserved(field) {
            self.raw(field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let repeats_name = field.name() == "message" && value == self.name;
        if !self.is_reserved(field) && !repeats_name {
            self.string(field.name(), value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.is_reserved(field) {
            self.string(field.name(), &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.is_reserved(field) {
            self.debug(field.name(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn timestamps_match_rfc_3339_with_milliseconds_across_seconds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_489_599_000);
        // Across a second, a minute, a day and a year boundary, and back in time.
        for offset_ms in [
            0, 1, 9, 10, 99, 100, 999, 1000, 1001, 61_000, 86_400_000, 3, 0,
        ] {
            let at = start + Duration::from_millis(offset_ms);
            let mut line = ObjectWriter::new("event", String::new(), |_| false);
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
        let lines =
            crate::observe::logs::format::tests::lines_of(|| tracing::info!(outer = %Nested));
        assert_eq!(
            lines.last().expect("the outer line")["outer"],
            "outer value"
        );
    }
}
