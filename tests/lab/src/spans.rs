//! Following one trace without Jaeger. `lab collect` is a span collector on loopback: it
//! takes OTLP/HTTP (protobuf, gzip or not) on `/v1/traces` as the services export it,
//! decodes it with the official `opentelemetry-proto` types, and appends each span as one
//! JSON line to the per-user spans file (two files of at most 16 MiB, the older one
//! dropped). `lab trace <trace_id>` reads that file and prints the trace as a waterfall: B's
//! span, each attempt with its outcome and duration, A's span under each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key::hex;

/// The spans file rolls over to `<file>.1` beyond this size.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Largest export request taken (the services send batches of at most 512 spans).
const MAX_EXPORT_BYTES: usize = 16 * 1024 * 1024;

/// One span as the collector keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSpan {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root.
    #[serde(default)]
    pub parent: String,
    /// `service.name` of the process that exported it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer`.
    pub kind: String,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Whether its status is Error.
    #[serde(default)]
    pub error: bool,
    /// Attributes, as JSON values (strings, integers, booleans, numbers).
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    /// Events: name and attributes.
    #[serde(default)]
    pub events: Vec<(String, BTreeMap<String, Value>)>,
}

impl StoredSpan {
    fn attr(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn millis(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }
}

fn value(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(other) => Value::String(format!("{other:?}")),
        None => Value::Null,
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, Value> {
    list.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, value)))
        .collect()
}

/// The spans of one OTLP export request, flattened.
pub fn flatten(request: ExportTraceServiceRequest) -> Vec<StoredSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(|v| match value(v) {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
                    SpanKind::Server => "server",
                    SpanKind::Client => "client",
                    SpanKind::Producer => "producer",
                    SpanKind::Consumer => "consumer",
                    SpanKind::Internal | SpanKind::Unspecified => "internal",
                };
                spans.push(StoredSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    service: service.clone(),
                    kind: kind.to_owned(),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    error: span
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code == SpanStatus::Error as i32),
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attributes(&e.attributes)))
                        .collect(),
                    name: span.name,
                });
            }
        }
    }
    spans
}

/// The body, gunzipped when the exporter compressed it.
fn decompressed(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return Some(body.to_vec());
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).ok()?;
    Some(out)
}

/// Where the collector writes: the file, and one writer at a time.
#[derive(Debug)]
struct Store {
    file: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl Store {
    async fn append(&self, spans: &[StoredSpan]) -> Result<(), String> {
        let mut lines = String::new();
        for span in spans {
            lines.push_str(&serde_json::to_string(span).map_err(|e| e.to_string())?);
            lines.push('\n');
        }
        let _one_writer = self.lock.lock().await;
        let full = std::fs::metadata(&self.file).is_ok_and(|m| m.len() >= MAX_FILE_BYTES);
        if full {
            std::fs::rename(&self.file, older(&self.file))
                .map_err(|e| format!("{}: {e}", self.file.display()))?;
        }
        crate::paths::append(&self.file, lines.as_bytes())
    }
}

/// The rolled-over spans file beside `file`.
pub fn older(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

async fn receive_traces(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(request) =
        decompressed(&headers, &body).and_then(|b| ExportTraceServiceRequest::decode(&b[..]).ok())
    else {
        return (StatusCode::BAD_REQUEST, "not an OTLP/HTTP protobuf export").into_response();
    };
    if let Err(why) = store.append(&flatten(request)).await {
        crate::complain!("lab collect: {why}");
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// Log records are taken and dropped (`OTEL_LOGS_EXPORTER=otlp` would otherwise see errors):
/// the JSON lines on stdout are the logs here.
async fn receive_logs() -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportLogsServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// Serves OTLP/HTTP on `listen` (loopback only), appending every span to `file`, until the
/// process is stopped.
pub async fn collect(listen: SocketAddr, file: PathBuf) -> Result<(), String> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen {listen}: the span collector listens on a loopback address only"
        ));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    if let Some(dir) = file.parent() {
        crate::paths::ensure_dir(dir)?;
    }
    crate::complain!(
        "lab collect: OTLP/HTTP on http://{}, spans to {}",
        listener.local_addr().map_err(|e| e.to_string())?,
        file.display()
    );
    let store = Arc::new(Store {
        file,
        lock: tokio::sync::Mutex::new(()),
    });
    let app = Router::new()
        .route("/v1/traces", post(receive_traces))
        .route("/v1/logs", post(receive_logs))
        .layer(DefaultBodyLimit::max(MAX_EXPORT_BYTES))
        .with_state(store);
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("serving: {e}"))
}

/// The spans of `trace_id` in `file` and its rolled-over predecessor, each once.
pub fn read_trace(file: &Path, trace_id: &str) -> Vec<StoredSpan> {
    let mut seen = HashSet::new();
    let mut spans = Vec::new();
    for path in [older(file), file.to_path_buf()] {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains(trace_id)) {
            // A line still being written is skipped; the next read has it whole.
            if let Ok(span) = serde_json::from_str::<StoredSpan>(line)
                && span.trace_id == trace_id
                && seen.insert(span.span_id.clone())
            {
                spans.push(span);
            }
        }
    }
    spans
}

/// The trace id in `text`: 32 hex digits, or a `traceparent` / `traceresponse` value.
pub fn trace_id(text: &str) -> Result<String, String> {
    let text = text.trim();
    let id = match text.split('-').collect::<Vec<_>>()[..] {
        [_, id, _, _] => id,
        _ => text,
    };
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a trace id (32 hex digits, as in a log line's trace_id or the middle of a traceresponse header)"
        ))
    }
}

/// Which attempt `span` is: a client span's number is its `http.request.resend_count`
/// plus one (the conventions' way to count attempts: absent on the first), and a span
/// serving a client span (A's, under B's attempt) is that attempt's.
fn attempt_of(span: &StoredSpan, spans: &[StoredSpan]) -> Option<u64> {
    let of_client = |client: &StoredSpan| {
        let resends = client
            .attributes
            .get("http.request.resend_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        resends + 1
    };
    if span.kind == "client" {
        return Some(of_client(span));
    }
    spans
        .iter()
        .find(|parent| parent.span_id == span.parent && parent.kind == "client")
        .map(of_client)
}

/// Bar width of the waterfall, in characters.
const BAR: usize = 40;

/// The trace as a waterfall: one line per span, children under their parent, each with its
/// start (from the trace's start), duration, service, name, attempt, outcome and a bar.
pub fn waterfall(trace_id: &str, spans: &[StoredSpan]) -> String {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&StoredSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if span.parent.is_empty() || !ids.contains(span.parent.as_str()) {
            roots.push(span);
        } else {
            children.entry(span.parent.as_str()).or_default().push(span);
        }
    }
    roots.sort_by_key(|s| s.start_ns);
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_ns);
    }
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    let total = end.saturating_sub(start).max(1);

    let mut rows: Vec<[String; 4]> = Vec::new();
    fn walk<'a>(
        span: &'a StoredSpan,
        prefix: &str,
        last: bool,
        depth: usize,
        children: &HashMap<&str, Vec<&'a StoredSpan>>,
        out: &mut Vec<(String, &'a StoredSpan)>,
    ) {
        let branch = match (depth, last) {
            (0, _) => String::new(),
            (_, true) => format!("{prefix}└─ "),
            (_, false) => format!("{prefix}├─ "),
        };
        out.push((branch, span));
        let next = match (depth, last) {
            (0, _) => String::new(),
            (_, true) => format!("{prefix}   "),
            (_, false) => format!("{prefix}│  "),
        };
        let kids = children
            .get(span.span_id.as_str())
            .cloned()
            .unwrap_or_default();
        for (i, kid) in kids.iter().enumerate() {
            walk(kid, &next, i + 1 == kids.len(), depth + 1, children, out);
        }
    }
    let mut ordered = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        walk(root, "", i + 1 == roots.len(), 0, &children, &mut ordered);
    }
    for (branch, span) in &ordered {
        let offset = span.start_ns.saturating_sub(start);
        let from = (offset as f64 / total as f64 * BAR as f64).round() as usize;
        let length = ((span.end_ns.saturating_sub(span.start_ns)) as f64 / total as f64
            * BAR as f64)
            .round()
            .max(1.0) as usize;
        let from = from.min(BAR - 1);
        let length = length.min(BAR - from);
        let bar = format!(
            "|{}{}{}|",
            " ".repeat(from),
            "█".repeat(length),
            " ".repeat(BAR - from - length)
        );
        let attempt = attempt_of(span, spans)
            .map(|n| format!(" attempt {n}"))
            .unwrap_or_default();
        rows.push([
            format!("{:>9.1} ms", offset as f64 / 1e6),
            format!("{:>9.1} ms", span.millis()),
            format!(
                "{branch}{} {}{attempt} ({})",
                span.service, span.name, span.kind
            ),
            format!("{:<22} {bar}", outcome(span)),
        ]);
        for (name, attributes) in &span.events {
            let details: Vec<String> = attributes
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "attempt" | "event" | "level" | "target")
                        && !k.starts_with("code.")
                })
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            let indent: String = branch
                .chars()
                .map(|c| if c == '├' || c == '│' { '│' } else { ' ' })
                .collect();
            rows.push([
                String::new(),
                String::new(),
                format!("{indent}   · {name} {}", details.join(" ")),
                String::new(),
            ]);
        }
    }
    // Event lines may run past the span column; only span names set its width.
    let width = rows
        .iter()
        .filter(|r| !r[0].is_empty())
        .map(|r| r[2].chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "trace {trace_id}: {} spans, {:.1} ms\n\n{:>12} {:>12}  {:<width$}  outcome\n",
        spans.len(),
        total as f64 / 1e6,
        "start",
        "duration",
        "span",
    );
    for row in rows {
        let line = if row[0].is_empty() {
            format!("{:>12} {:>12}  {}", "", "", row[2])
        } else {
            let pad = width - row[2].chars().count();
            format!(
                "{} {}  {}{}  {}",
                row[0],
                row[1],
                row[2],
                " ".repeat(pad),
                row[3]
            )
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A span's outcome in a word or two: its status code and, when it failed, why.
fn outcome(span: &StoredSpan) -> String {
    let status = span.attr("http.response.status_code");
    let error_type = span.attr("error.type");
    match (status, span.error, error_type) {
        (Some(status), false, _) => status,
        (Some(status), true, Some(kind)) if kind == status => format!("{status} error"),
        (Some(status), true, Some(kind)) => format!("{status} error {kind}"),
        (Some(status), true, None) => format!("{status} error"),
        (None, true, Some(kind)) => format!("error {kind}"),
        (None, true, None) => "error".to_owned(),
        (None, false, _) => "ok".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn span(id: u8, parent: u8, name: &str, kind: SpanKind, ms: (u64, u64)) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: 1_000_000_000 + ms.0 * 1_000_000,
            end_time_unix_nano: 1_000_000_000 + ms.1 * 1_000_000,
            ..Span::default()
        }
    }

    fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue(service.into()),
                    )],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn failed(mut span: Span, error_type: &str) -> Span {
        span.status = Some(Status {
            code: SpanStatus::Error as i32,
            message: String::new(),
        });
        span.attributes.push(kv(
            "error.type",
            any_value::Value::StringValue(error_type.into()),
        ));
        span
    }

    /// Attempt `n` of a client span: `http.request.resend_count` on a resend.
    fn with_attempt(mut span: Span, n: i64) -> Span {
        if n > 1 {
            span.attributes.push(kv(
                "http.request.resend_count",
                any_value::Value::IntValue(n - 1),
            ));
        }
        span
    }

    /// The timeout path: B's span, two attempts that time out, A's span under each.
    fn timeout_trace() -> Vec<StoredSpan> {
        let mut root = failed(
            span(1, 0, "POST /protected-action", SpanKind::Server, (0, 2014)),
            "503",
        );
        root.attributes.push(kv(
            "http.response.status_code",
            any_value::Value::IntValue(503),
        ));
        let b = export(
            "service-b",
            vec![
                root,
                with_attempt(
                    failed(
                        span(2, 1, "POST /token", SpanKind::Client, (1, 1001)),
                        "timeout",
                    ),
                    1,
                ),
                with_attempt(
                    failed(
                        span(3, 1, "POST /token", SpanKind::Client, (1010, 2011)),
                        "timeout",
                    ),
                    2,
                ),
            ],
        );
        let a = export(
            "service-a",
            vec![
                with_attempt(
                    failed(
                        span(4, 2, "POST /token", SpanKind::Server, (2, 1001)),
                        "client_disconnected",
                    ),
                    1,
                ),
                with_attempt(
                    failed(
                        span(5, 3, "POST /token", SpanKind::Server, (1011, 2011)),
                        "client_disconnected",
                    ),
                    2,
                ),
            ],
        );
        // Decoded from the wire, as the collector gets them.
        let wire = |r: ExportTraceServiceRequest| {
            ExportTraceServiceRequest::decode(&r.encode_to_vec()[..]).expect("decodes")
        };
        let mut spans = flatten(wire(a));
        spans.extend(flatten(wire(b)));
        spans
    }

    #[test]
    fn the_waterfall_hangs_each_a_span_under_its_attempt() {
        let text = waterfall(&"ab".repeat(16), &timeout_trace());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("5 spans, 2014.0 ms"), "{text}");
        let order: Vec<usize> = [
            "service-b POST /protected-action (server)",
            "├─ service-b POST /token attempt 1 (client)",
            "│  └─ service-a POST /token attempt 1 (server)",
            "└─ service-b POST /token attempt 2 (client)",
            "   └─ service-a POST /token attempt 2 (server)",
        ]
        .iter()
        .map(|needle| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(lines[order[0]].contains("503 error"), "{text}");
        assert!(lines[order[1]].contains("error timeout"), "{text}");
        assert!(lines[order[1]].contains("1000.0 ms"), "{text}");
        assert!(
            lines[order[2]].contains("error client_disconnected"),
            "{text}"
        );
    }

    #[test]
    fn spans_round_trip_through_the_file() {
        let file = std::env::temp_dir().join(format!("lab-spans-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let spans = timeout_trace();
        let mut text = String::new();
        for span in &spans {
            text.push_str(&serde_json::to_string(span).expect("JSON"));
            text.push('\n');
        }
        text.push_str(r#"{"trace_id":"abab"#); // a line still being written
        std::fs::write(&file, text).expect("write");
        let read = read_trace(&file, &"ab".repeat(16));
        assert_eq!(read, spans);
        assert!(read_trace(&file, &"cd".repeat(16)).is_empty());
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn trace_ids_are_taken_from_a_header_too() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(id).expect("id"), id);
        assert_eq!(
            trace_id(&format!("00-{id}-00f067aa0ba902b7-01")).expect("id"),
            id
        );
        assert!(trace_id("not-a-trace").is_err());
    }
}
