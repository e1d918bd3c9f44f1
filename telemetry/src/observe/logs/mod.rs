//! Logs: one JSON object per line on stdout, never blocking a request, and the same lines
//! as OTLP log records when asked for.
//!
//! | file | what |
//! |---|---|
//! | [`format`](mod@format) | the JSON log line format, and the request context every line carries |
//! | [`line`](mod@line) | one JSON line, written in place and escaped only where needed |
//! | [`writer`] | stdout behind a bounded queue |
//! | [`otlp`] | the same lines as OTLP log records, when `OTEL_LOGS_EXPORTER=otlp` |

pub mod format;
pub mod line;
pub mod otlp;
pub mod writer;

pub use format::{LogContext, layer};
pub use otlp::OtlpLogs;
pub use writer::{FlushGuard, stdout_writer};
