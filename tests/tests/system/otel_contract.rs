//! The OpenTelemetry contract: the walkthrough's scenarios run against both services
//! exporting to a receiver built on the official OTLP protobuf definitions, and every span
//! is checked as an OpenTelemetry expert would read it in Jaeger: name, kind, parent,
//! status, and every attribute's *type* and value (HTTP semantic conventions 1.26, stable).
//! The attributes tables in docs/traces.md are written from these expectations. The calls
//! of the walkthrough are in `calls`; probes, flags, untrusted callers and sampling in
//! `sampling`.

mod calls;
mod sampling;

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use system_tests::otlp::{OtlpReceiver, ReceivedSpan, Typed};
use system_tests::{Kind, Service, client, send, vacant_addr};

/// What B sends as `User-Agent`.
const B_AGENT: &str = concat!("service-b/", env!("CARGO_PKG_VERSION"));
/// What the test client sends as `User-Agent`.
const TEST_AGENT: &str = "contract-test/1";
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.26.0";

/// An expected attribute value.
#[derive(Debug, Clone)]
enum Want {
    Str(&'static str),
    Owned(String),
    Int(i64),
    /// Any integer (a port).
    AnyInt,
    /// Any string ending so (a URL).
    EndsWith(&'static str),
}

/// Asserts the span has exactly these attributes, each of this type and value (`error.type`
/// aside: [`assert_status`] checks it).
fn assert_attributes(span: &ReceivedSpan, wanted: &[(&str, Want)]) {
    let mut keys: Vec<&String> = span.typed.keys().filter(|k| *k != "error.type").collect();
    keys.sort();
    let mut expected: Vec<&str> = wanted.iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    assert_eq!(keys, expected, "attribute set of {:?}", span.name);
    for (key, want) in wanted {
        let got = &span.typed[*key];
        let ok = match (want, got) {
            (Want::Str(w), Typed::Str(g)) => w == g,
            (Want::Owned(w), Typed::Str(g)) => w == g,
            (Want::Int(w), Typed::Int(g)) => w == g,
            (Want::AnyInt, Typed::Int(g)) => *g > 0,
            (Want::EndsWith(w), Typed::Str(g)) => g.ends_with(w),
            _ => false,
        };
        assert!(ok, "{:?}: {key} is {got:?}, expected {want:?}", span.name);
    }
}

/// Asserts the span's status: `None` Unset, `Some(error_type)` Error with that `error.type`.
fn assert_status(span: &ReceivedSpan, error_type: Option<&str>) {
    match error_type {
        None => assert!(
            span.status_unset,
            "{:?} should be Unset: {span:#?}",
            span.name
        ),
        Some(kind) => {
            assert!(span.is_error, "{:?} should be Error: {span:#?}", span.name);
            assert_eq!(span.typed.get("error.type"), Some(&Typed::Str(kind.into())));
        }
    }
}

fn otel_env(endpoint: &str) -> Vec<(&str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]
}

struct Stack {
    otlp: OtlpReceiver,
    a: Option<Service>,
    b: Service,
    rt: tokio::runtime::Runtime,
}

impl Stack {
    fn start(a_args: &[&str]) -> Self {
        let otlp = OtlpReceiver::start();
        let a = Service::start(Kind::A, "127.0.0.1:0", a_args, &otel_env(&otlp.url));
        let b = Service::start(
            Kind::B,
            "127.0.0.1:0",
            &["--provider-url", &a.url()],
            &otel_env(&otlp.url),
        );
        Self {
            otlp,
            a: Some(a),
            b,
            rt: runtime(),
        }
    }

    /// A and B, B started with `b_env` added to its environment.
    fn with_b_env(b_env: &[(&'static str, &'static str)]) -> Self {
        let otlp = OtlpReceiver::start();
        let a = Service::start(Kind::A, "127.0.0.1:0", &[], &otel_env(&otlp.url));
        let mut env = otel_env(&otlp.url);
        env.extend_from_slice(b_env);
        let b = Service::start(Kind::B, "127.0.0.1:0", &["--provider-url", &a.url()], &env);
        Self {
            otlp,
            a: Some(a),
            b,
            rt: runtime(),
        }
    }

    fn without_a() -> Self {
        let otlp = OtlpReceiver::start();
        let b = Service::start(
            Kind::B,
            "127.0.0.1:0",
            &["--provider-url", &format!("http://{}", vacant_addr())],
            &otel_env(&otlp.url),
        );
        Self {
            otlp,
            a: None,
            b,
            rt: runtime(),
        }
    }

    fn a(&self) -> &Service {
        self.a.as_ref().expect("A runs")
    }

    /// Stops B (its export queue is flushed on the way out) and asserts that no span of
    /// `traces` was exported.
    fn stop_b_and_assert_not_exported(&mut self, traces: &[&str]) {
        assert!(self.b.stop().success());
        let spans = self.otlp.spans();
        assert!(
            spans.iter().all(|s| !traces.contains(&s.trace_id.as_str())),
            "{spans:#?}"
        );
    }

    /// Calls B and returns the reply and the trace id its `traceresponse` names.
    fn call(&self, body: serde_json::Value, id: &str) -> (system_tests::Reply, String) {
        let reply = self.rt.block_on(send(
            client()
                .post(self.b.at("/protected-action"))
                .header("user-agent", TEST_AGENT)
                .header("x-request-id", id)
                .json(&body),
        ));
        let trace_id = reply
            .header("traceresponse")
            .split('-')
            .nth(1)
            .expect("traceresponse")
            .to_owned();
        (reply, trace_id)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The spans `f` picks, first started first (attempt 1's before attempt 2's).
fn find(spans: &[ReceivedSpan], f: impl Fn(&ReceivedSpan) -> bool) -> Vec<&ReceivedSpan> {
    let mut found: Vec<&ReceivedSpan> = spans.iter().filter(|s| f(s)).collect();
    found.sort_by_key(|s| s.start_ns);
    found
}

fn b_server_attributes(id: &str, status: i64, port: u16) -> Vec<(&'static str, Want)> {
    vec![
        ("http.request.method", Want::Str("POST")),
        ("http.route", Want::Str("/protected-action")),
        ("http.response.status_code", Want::Int(status)),
        ("url.scheme", Want::Str("http")),
        ("url.path", Want::Str("/protected-action")),
        ("server.address", Want::Str("127.0.0.1")),
        ("server.port", Want::Int(i64::from(port))),
        ("client.address", Want::Str("127.0.0.1")),
        ("client.port", Want::AnyInt),
        ("network.peer.address", Want::Str("127.0.0.1")),
        ("network.peer.port", Want::AnyInt),
        ("user_agent.original", Want::Str(TEST_AGENT)),
        ("network.protocol.version", Want::Str("1.1")),
        ("request.id", Want::Owned(id.to_owned())),
    ]
}

fn attempt_attributes(id: &str, attempt: i64, status: Option<i64>) -> Vec<(&'static str, Want)> {
    let mut wanted = vec![
        ("http.request.method", Want::Str("POST")),
        ("url.full", Want::EndsWith("/token")),
        ("url.template", Want::Str("/token")),
        ("server.address", Want::Str("127.0.0.1")),
        ("server.port", Want::AnyInt),
        ("network.protocol.version", Want::Str("1.1")),
        ("user_agent.original", Want::Str(B_AGENT)),
        ("request.id", Want::Owned(id.to_owned())),
    ];
    if let Some(status) = status {
        // An answer names the peer that gave it.
        wanted.push(("http.response.status_code", Want::Int(status)));
        wanted.push(("network.peer.address", Want::Str("127.0.0.1")));
        wanted.push(("network.peer.port", Want::AnyInt));
    }
    if attempt > 1 {
        wanted.push(("http.request.resend_count", Want::Int(attempt - 1)));
    }
    wanted
}

/// A's server span: the attempt it serves is its parent's (`http.request.resend_count`), so
/// it carries no number of its own.
fn a_server_attributes(id: &str, status: Option<i64>) -> Vec<(&'static str, Want)> {
    let mut wanted = vec![
        ("http.request.method", Want::Str("POST")),
        ("http.route", Want::Str("/token")),
        ("url.scheme", Want::Str("http")),
        ("url.path", Want::Str("/token")),
        ("server.address", Want::Str("127.0.0.1")),
        ("server.port", Want::AnyInt),
        ("client.address", Want::Str("127.0.0.1")),
        ("client.port", Want::AnyInt),
        ("network.peer.address", Want::Str("127.0.0.1")),
        ("network.peer.port", Want::AnyInt),
        ("user_agent.original", Want::Str(B_AGENT)),
        ("network.protocol.version", Want::Str("1.1")),
        ("request.id", Want::Owned(id.to_owned())),
    ];
    if let Some(status) = status {
        wanted.push(("http.response.status_code", Want::Int(status)));
    }
    wanted
}

fn server_of<'a>(spans: &'a [ReceivedSpan], service: &str) -> Vec<&'a ReceivedSpan> {
    find(spans, |s| {
        s.service == service && s.kind == SpanKind::Server
    })
}

fn attempts_of(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    find(spans, |s| {
        s.service == "service-b" && s.kind == SpanKind::Client
    })
}
