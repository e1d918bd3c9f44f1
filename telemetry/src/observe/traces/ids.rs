//! A span's W3C ids ([`SpanIds`]), as the log lines, `traceresponse` and exemplars write
//! them, read from a `tracing` span.

use http::HeaderValue;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `random` trace flag (W3C Trace Context Level 2).
pub(crate) const RANDOM_FLAG: u8 = 0x02;

/// The ids of a request's server span, for log lines and the `traceresponse` header, as the
/// lowercase hex W3C writes them. Held inline (it is `Copy`): every request's log lines,
/// exemplar and `traceresponse` read them without a copy of their text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanIds {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    pub(crate) valid: bool,
    /// Whether the span is sampled (recorded and exported).
    pub sampled: bool,
    /// Whether the trace id is random (W3C Level 2's `random` flag).
    pub random: bool,
}

impl SpanIds {
    /// The ids of a valid span context; `random` when the trace id is random.
    pub fn new(trace_id: TraceId, span_id: SpanId, sampled: bool, random: bool) -> Self {
        let mut ids = Self {
            valid: true,
            sampled,
            random,
            ..Self::default()
        };
        lower_hex(&trace_id.to_bytes(), &mut ids.trace_id);
        lower_hex(&span_id.to_bytes(), &mut ids.span_id);
        ids
    }

    /// The ids of another span of the same trace, with the same flags.
    pub fn with_span_id(&self, span_id: SpanId) -> Self {
        let mut ids = *self;
        lower_hex(&span_id.to_bytes(), &mut ids.span_id);
        ids
    }

    /// W3C trace id, 32 hex digits; empty when tracing is not installed.
    pub fn trace_id(&self) -> &str {
        self.text(&self.trace_id)
    }

    /// W3C span id, 16 hex digits; empty when tracing is not installed.
    pub fn span_id(&self) -> &str {
        self.text(&self.span_id)
    }

    fn text<'a>(&self, hex: &'a [u8]) -> &'a str {
        if self.valid {
            std::str::from_utf8(hex).unwrap_or_default()
        } else {
            ""
        }
    }

    /// The `traceresponse` value (`00-<trace>-<span>-<flags>`, from the W3C Trace Context
    /// Level 3 draft), so a caller can go from any response, a failed one included, to its
    /// trace.
    pub fn traceresponse(&self) -> Option<HeaderValue> {
        self.traceparent()
    }

    /// The W3C `traceparent` value naming this span as the parent of a call
    /// (`00-<trace>-<span>-<flags>`, the same text as [`Self::traceresponse`]); the flags
    /// are `sampled` and `random`.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        if !self.valid {
            return None;
        }
        let mut value = [0_u8; 55];
        let flags: &[u8] = match (self.random, self.sampled) {
            (false, false) => b"00",
            (false, true) => b"01",
            (true, false) => b"02",
            (true, true) => b"03",
        };
        let parts: [&[u8]; 6] = [b"00-", &self.trace_id, b"-", &self.span_id, b"-", flags];
        let mut at = 0;
        for part in parts {
            value[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        HeaderValue::from_bytes(&value).ok()
    }
}

/// The ids of `span` (empty without tracing).
pub fn span_ids(span: &Span) -> SpanIds {
    ids_of(&span.context())
}

/// The ids of the span the caller runs in: in a handler, its request's.
pub fn current_ids() -> SpanIds {
    span_ids(&Span::current())
}

pub(crate) fn ids_of(context: &opentelemetry::Context) -> SpanIds {
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        SpanIds::new(
            span_context.trace_id(),
            span_context.span_id(),
            span_context.is_sampled(),
            span_context.trace_flags().to_u8() & RANDOM_FLAG != 0,
        )
    } else {
        SpanIds::default()
    }
}

/// Writes `bytes` as lowercase hex into `text` (twice as long), as W3C ids are written: the
/// same text as the ids' `Display`, without the formatting machinery.
fn lower_hex(bytes: &[u8], text: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(text.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_their_display_writes_them() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id");
        let span = SpanId::from_hex("00f067aa0ba902b7").expect("span id");
        let ids = SpanIds::new(trace, span, true, false);
        assert_eq!(ids.trace_id(), trace.to_string());
        assert_eq!(ids.span_id(), span.to_string());
        assert_eq!(
            ids.traceresponse().as_ref().map(HeaderValue::as_bytes),
            Some(&b"00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"[..])
        );
        for (sampled, random, flags) in [
            (false, false, "-00"),
            (false, true, "-02"),
            (true, true, "-03"),
        ] {
            let value = SpanIds::new(trace, span, sampled, random).traceresponse();
            assert!(
                value.is_some_and(|v| v.as_bytes().ends_with(flags.as_bytes())),
                "{flags}"
            );
        }
    }

    #[test]
    fn no_span_has_empty_ids_and_no_traceresponse() {
        let ids = SpanIds::default();
        assert_eq!((ids.trace_id(), ids.span_id()), ("", ""));
        assert!(ids.traceresponse().is_none());
    }
}
