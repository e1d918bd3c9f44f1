//! A stand-in OpenTelemetry collector: accepts OTLP/HTTP protobuf on `/v1/traces` and
//! `/v1/logs` on a loopback port (gzip-compressed or not), decodes it with the official
//! `opentelemetry-proto` types, and keeps every span, log record and request header set for
//! the tests to inspect. It can be slow, or answer its first exports with error statuses
//! (a collector under load, restarting, or refusing). It runs on its own thread and
//! runtime, so a test that blocks while waiting cannot stall it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;

use crate::eventually;

/// An attribute value with its OTLP type.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// `string_value`.
    Str(String),
    /// `int_value`.
    Int(i64),
    /// `bool_value`.
    Bool(bool),
    /// `double_value`.
    Double(f64),
    /// Anything else (arrays, maps, bytes), rendered for a message.
    Other(String),
}

/// One span event.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// Its name.
    pub name: String,
    /// Its attributes, typed.
    pub attributes: HashMap<String, Typed>,
}

/// One exported span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that exported it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root span.
    pub parent_span_id: String,
    /// Server, client or internal.
    pub kind: SpanKind,
    /// Whether the span's status is Error.
    pub is_error: bool,
    /// Attributes, values rendered as text.
    pub attributes: HashMap<String, String>,
    /// Attributes with their OTLP types.
    pub typed: HashMap<String, Typed>,
    /// The status message (empty when none).
    pub status_message: String,
    /// Whether the status is Unset (neither Ok nor Error).
    pub status_unset: bool,
    /// Span events.
    pub events: Vec<ReceivedEvent>,
    /// Span links: the trace and span id (hex) each links to.
    pub links: Vec<(String, String)>,
    /// The OTLP `flags`: the W3C trace flags in the low byte, then whether the parent is
    /// remote.
    pub flags: u32,
    /// The span's W3C `tracestate`.
    pub trace_state: String,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// Attributes of the resource that exported it.
    pub resource: HashMap<String, String>,
    /// The resource's schema URL.
    pub resource_schema_url: String,
    /// Instrumentation scope name, version and schema URL.
    pub scope: (String, String, String),
}

impl ReceivedSpan {
    /// An attribute's value, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// One exported log record, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    /// `service.name` of the resource that exported it.
    pub service: String,
    /// Severity text ("INFO", "ERROR", …) and number.
    pub severity: (String, i32),
    /// The body, when it is a string.
    pub body: String,
    /// The record's event name (the logs data model's `EventName`).
    pub event_name: String,
    /// The instrumentation scope's name.
    pub scope: String,
    /// Attributes, typed.
    pub attributes: HashMap<String, Typed>,
    /// Trace id and span id, hex (empty when none).
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// W3C trace flags.
    pub flags: u32,
}

/// What one export request looked like on the wire.
#[derive(Debug, Clone)]
pub struct Export {
    /// `/v1/traces` or `/v1/logs`.
    pub path: &'static str,
    /// Its headers.
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    logs: Vec<ReceivedLog>,
    exports: Vec<Export>,
    /// Every POST, answered with an error or not.
    posts: usize,
    /// The answers to the next POSTs, before any is taken: a status and `Retry-After`.
    refusals: VecDeque<(u16, Option<&'static str>)>,
}

type Shared = Arc<Mutex<Store>>;

/// The running receiver.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    /// Base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub url: String,
    store: Shared,
}

impl OtlpReceiver {
    /// Starts a receiver on a free loopback port.
    pub fn start() -> Self {
        Self::start_slow(Duration::ZERO)
    }

    /// Starts a receiver that takes `delay` to answer each export (a collector under load).
    pub fn start_slow(delay: Duration) -> Self {
        Self::start_with(delay, Vec::new())
    }

    /// Starts a receiver that answers its first POSTs with `refusals` (a status, and a
    /// `Retry-After` value when given), one each, taking nothing; then as [`Self::start`].
    pub fn start_refusing(refusals: Vec<(u16, Option<&'static str>)>) -> Self {
        Self::start_with(Duration::ZERO, refusals)
    }

    fn start_with(delay: Duration, refusals: Vec<(u16, Option<&'static str>)>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let store: Shared = Arc::default();
        store.lock().expect("store lock").refusals = refusals.into();
        let shared = store.clone();
        let counted = store.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new()
                    .route("/v1/traces", post(receive))
                    .route("/v1/logs", post(receive_logs))
                    .with_state(shared)
                    .layer(axum::middleware::from_fn(
                        move |request: axum::extract::Request, next: axum::middleware::Next| {
                            let store = counted.clone();
                            async move {
                                tokio::time::sleep(delay).await;
                                let refusal = {
                                    let mut store = store.lock().expect("store lock");
                                    store.posts += 1;
                                    store.refusals.pop_front()
                                };
                                match refusal {
                                    Some((status, retry_after)) => refuse(status, retry_after),
                                    None => next.run(request).await,
                                }
                            }
                        },
                    ));
                let _ = axum::serve(listener, app).await;
            });
        });
        Self { url, store }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().expect("store lock").spans.clone()
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.store.lock().expect("store lock").logs.clone()
    }

    /// Every export request received so far.
    pub fn exports(&self) -> Vec<Export> {
        self.store.lock().expect("store lock").exports.clone()
    }

    /// How many POSTs arrived, refused ones included.
    pub fn posts(&self) -> usize {
        self.store.lock().expect("store lock").posts
    }

    /// Waits (bounded) until at least `count` log records match `filter`, and returns them.
    pub fn wait_for_logs(
        &self,
        count: usize,
        filter: impl Fn(&ReceivedLog) -> bool,
    ) -> Vec<ReceivedLog> {
        eventually(format!("{count} log records"))
            .every(Duration::from_millis(20))
            .try_until(|| {
                let found: Vec<ReceivedLog> =
                    self.logs().into_iter().filter(|l| filter(l)).collect();
                if found.len() >= count {
                    Ok(found)
                } else {
                    Err(found.len())
                }
            })
            .unwrap_or_else(|timed_out| {
                panic!(
                    "{} (records found); every record: {:#?}",
                    timed_out.message,
                    self.logs()
                )
            })
    }

    /// Waits (bounded) until at least `count` spans of trace `trace_id` arrived, and returns
    /// all of that trace's spans.
    pub fn wait_for_trace(&self, trace_id: &str, count: usize) -> Vec<ReceivedSpan> {
        self.wait_for(count, |s| s.trace_id == trace_id)
    }

    /// Waits (bounded) until at least `count` spans match `filter`, and returns them.
    pub fn wait_for(
        &self,
        count: usize,
        filter: impl Fn(&ReceivedSpan) -> bool,
    ) -> Vec<ReceivedSpan> {
        eventually(format!("{count} spans"))
            .every(Duration::from_millis(20))
            .until(|| {
                let found: Vec<ReceivedSpan> =
                    self.spans().into_iter().filter(|s| filter(s)).collect();
                if found.len() >= count {
                    Ok(found)
                } else {
                    Err(found)
                }
            })
    }
}

/// An export refused with `status`, and `Retry-After` when given.
fn refuse(status: u16, retry_after: Option<&'static str>) -> axum::response::Response {
    let status = StatusCode::from_u16(status).expect("a status");
    match retry_after {
        Some(after) => (status, [(header::RETRY_AFTER, after)]).into_response(),
        None => status.into_response(),
    }
}

/// The body, gunzipped when the exporter compressed it.
fn decompressed(headers: &HeaderMap, body: Bytes) -> Option<Vec<u8>> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return Some(body.to_vec());
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).ok()?;
    Some(out)
}

async fn receive_logs(
    State(store): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let Some(request) =
        decompressed(&headers, body).and_then(|b| ExportLogsServiceRequest::decode(&b[..]).ok())
    else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_logs in request.resource_logs {
        let resource = resource_logs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for record in scope_logs.log_records {
                let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                received.push(ReceivedLog {
                    service: service.clone(),
                    severity: (record.severity_text.clone(), record.severity_number),
                    body,
                    event_name: record.event_name.clone(),
                    scope: scope.clone(),
                    attributes: typed(&record.attributes),
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                    flags: record.flags,
                });
            }
        }
    }
    let mut store = store.lock().expect("store lock");
    store.logs.extend(received);
    store.exports.push(Export {
        path: "/v1/logs",
        headers,
    });
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportLogsServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

async fn receive(
    State(store): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let Some(request) =
        decompressed(&headers, body).and_then(|b| ExportTraceServiceRequest::decode(&b[..]).ok())
    else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource_attributes = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource_attributes
            .get("service.name")
            .cloned()
            .unwrap_or_default();
        let resource_schema_url = resource_spans.schema_url.clone();
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .map(|s| (s.name, s.version, scope_spans.schema_url.clone()))
                .unwrap_or_default();
            for span in scope_spans.spans {
                let status = span.status.clone().unwrap_or_default();
                received.push(ReceivedSpan {
                    service: service.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    is_error: status.code == SpanStatus::Error as i32,
                    status_unset: status.code == SpanStatus::Unset as i32,
                    status_message: status.message,
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    typed: typed(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| ReceivedEvent {
                            name: e.name.clone(),
                            attributes: typed(&e.attributes),
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    flags: span.flags,
                    start_ns: span.start_time_unix_nano,
                    trace_state: span.trace_state.clone(),
                    resource: resource_attributes.clone(),
                    resource_schema_url: resource_schema_url.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    let mut store = store.lock().expect("store lock");
    store.spans.extend(received);
    store.exports.push(Export {
        path: "/v1/traces",
        headers,
    });
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

/// Attributes with their OTLP types.
pub fn typed(list: &[KeyValue]) -> HashMap<String, Typed> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Typed::Str(s.clone()),
                Some(any_value::Value::IntValue(i)) => Typed::Int(*i),
                Some(any_value::Value::BoolValue(b)) => Typed::Bool(*b),
                Some(any_value::Value::DoubleValue(d)) => Typed::Double(*d),
                Some(other) => Typed::Other(format!("{other:?}")),
                None => Typed::Other("(no value)".into()),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
