//! A stand-in OpenTelemetry collector: accepts OTLP/HTTP protobuf on `/v1/traces` on a
//! loopback port, decodes it with the official `opentelemetry-proto` types, and keeps every
//! span for the tests to inspect. It runs on its own thread and runtime, so a test that
//! blocks while waiting cannot stall it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;

use crate::TIMEOUT;

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

/// The running receiver.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    /// Base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free loopback port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let store = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new()
                    .route("/v1/traces", post(receive))
                    .with_state(store);
                let _ = axum::serve(listener, app).await;
            });
        });
        Self { url, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans lock").clone()
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
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let found: Vec<ReceivedSpan> = self.spans().into_iter().filter(|s| filter(s)).collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited {TIMEOUT:?} for {count} spans, got {}: {found:#?}",
                found.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn receive(
    State(store): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    body: Bytes,
) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
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
                    resource: resource_attributes.clone(),
                    resource_schema_url: resource_schema_url.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    store.lock().expect("spans lock").extend(received);
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
