//! The OpenTelemetry contract: the walkthrough's scenarios run against both services
//! exporting to a receiver built on the official OTLP protobuf definitions, and every span
//! is checked as an OpenTelemetry expert would read it in Jaeger: name, kind, parent,
//! status, and every attribute's *type* and value (HTTP semantic conventions 1.26, stable).
//! The attributes tables in docs/traces.md are written from these expectations.

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use system_tests::otlp::{OtlpReceiver, ReceivedSpan, Typed};
use system_tests::{Kind, Service, client, eventually, send, vacant_addr};

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

#[test]
fn success_401_and_slow_calls_are_green_where_they_should_be() {
    let stack = Stack::start(&[]);
    let b_port = stack.b.addr.port();
    for (id, body, status) in [
        ("c-ok", system_tests::demo_login(), 200),
        (
            "c-401",
            json!({"username": "divya", "password": "wrong"}),
            401,
        ),
        (
            "c-slow",
            system_tests::demo_login_with(json!({"delay_ms": 300})),
            200,
        ),
    ] {
        let (reply, trace) = stack.call(body, id);
        assert_eq!(reply.status, status, "{}", reply.text);
        let status = i64::from(status);
        let expected = if id == "c-slow" { 4 } else { 3 };
        let spans = stack.otlp.wait_for_trace(&trace, expected);

        let server = server_of(&spans, "service-b");
        assert_eq!(server.len(), 1);
        let server = server[0];
        assert_eq!(server.name, "POST /protected-action");
        assert_eq!(server.parent_span_id, "");
        assert_attributes(server, &b_server_attributes(id, status, b_port));
        assert_status(server, None);

        let attempts = attempts_of(&spans);
        assert_eq!(attempts.len(), 1, "no retry");
        let attempt = attempts[0];
        assert_eq!(attempt.name, "POST /token");
        assert_eq!(attempt.parent_span_id, server.span_id);
        assert_attributes(attempt, &attempt_attributes(id, 1, Some(status)));
        // A client span is an error for any 4xx: the call did not get what it asked for.
        assert_status(attempt, (status == 401).then_some("401"));

        let a_span = server_of(&spans, "service-a");
        assert_eq!(a_span.len(), 1);
        assert_eq!(a_span[0].name, "POST /token");
        assert_eq!(a_span[0].parent_span_id, attempt.span_id);
        assert_attributes(a_span[0], &a_server_attributes(id, Some(status)));
        assert_status(a_span[0], None);

        if id == "c-slow" {
            let delay = find(&spans, |s| s.name == "simulated_delay");
            assert_eq!(delay[0].kind, SpanKind::Internal);
            assert_eq!(delay[0].parent_span_id, a_span[0].span_id);
            assert_attributes(
                delay[0],
                &[
                    ("lab.delay_ms", Want::Int(300)),
                    ("request.id", Want::Owned(id.to_owned())),
                ],
            );
        }
        for span in &spans {
            // W3C flags `sampled` and `random` (a trace B started), as `traceresponse` says.
            assert_eq!(span.flags & 0xff, 0x03, "{:?}", span.name);
            assert!(reply.header("traceresponse").ends_with("-03"));
            assert_eq!(span.resource_schema_url, SCHEMA_URL);
            assert_eq!(
                span.scope,
                (
                    span.service.clone(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                    SCHEMA_URL.to_owned()
                ),
                "instrumentation scope of {:?}",
                span.name
            );
            assert_eq!(span.resource["service.version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(span.resource["service.instance.id"].len(), 36, "a UUID");
        }
    }
    let instance = |service: &str| {
        stack
            .otlp
            .spans()
            .iter()
            .find(|s| s.service == service)
            .map(|s| s.resource["service.instance.id"].clone())
    };
    assert_ne!(
        instance("service-a"),
        instance("service-b"),
        "one per process"
    );
}

#[test]
fn a_timed_out_call_has_two_red_attempts_whose_failures_are_their_own() {
    let stack = Stack::start(&[]);
    let id = "c-timeout";
    let (reply, trace) = stack.call(system_tests::demo_login_with(json!({"delay_ms": 2000})), id);
    assert_eq!(reply.status, 503);
    // B's server span, two attempts, and under each A's span and its delay span.
    let spans = stack.otlp.wait_for_trace(&trace, 7);
    let server = server_of(&spans, "service-b")[0];
    assert_attributes(server, &b_server_attributes(id, 503, stack.b.addr.port()));
    assert_status(server, Some("503"));
    // The call's span says why B stopped; the attempts' failures are on the attempts, and
    // the access log line is on no span.
    let names: Vec<&str> = server.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["provider_gave_up"], "{:#?}", server.events);
    assert_eq!(
        server.events[0].attributes["reason"],
        Typed::Str("attempts_spent".into())
    );
    assert_eq!(server.events[0].attributes["attempts"], Typed::Int(2));

    let attempts = attempts_of(&spans);
    assert_eq!(attempts.len(), 2);
    for (n, attempt) in attempts.iter().enumerate() {
        let number = n as i64 + 1;
        assert_eq!(
            attempt.parent_span_id, server.span_id,
            "attempts are siblings"
        );
        assert_attributes(attempt, &attempt_attributes(id, number, None));
        assert_status(attempt, Some("timeout"));
        let failed: Vec<_> = attempt
            .events
            .iter()
            .filter(|e| e.name == "provider_call_failed")
            .collect();
        assert_eq!(failed.len(), 1, "{:#?}", attempt.events);
        assert_eq!(failed[0].attributes["error"], Typed::Str("timeout".into()));
        assert_eq!(failed[0].attributes["timeout_secs"], Typed::Double(1.0));
        assert_eq!(failed[0].attributes["attempt"], Typed::Int(number));
        for added in ["level", "target", "event"] {
            assert!(
                !failed[0].attributes.contains_key(added),
                "an event carries its own fields only: {:?}",
                failed[0].attributes
            );
        }

        let log = [stack
            .b
            .logs
            .wait_for(|l| l["event"] == "provider_call_failed" && l["attempt"] == number)];
        assert_eq!(
            log[0]["span_id"],
            attempt.span_id.as_str(),
            "the log line names the attempt"
        );
        assert_eq!(log[0]["trace_flags"], "01");

        // A's handler was dropped when B hung up (or A's own deadline answered 504 first).
        let a_span = find(&spans, |s| s.parent_span_id == attempt.span_id)[0];
        assert!(a_span.is_error, "{a_span:#?}");
        match a_span.typed.get("error.type") {
            Some(Typed::Str(t)) if t == "client_disconnected" => {
                assert!(!a_span.typed.contains_key("http.response.status_code"));
            }
            Some(Typed::Str(t)) if t == "504" => {}
            other => panic!("A's span error.type: {other:?}"),
        }
    }
}

#[test]
fn provider_down_gives_two_connection_errors_and_no_a_span() {
    let stack = Stack::without_a();
    let id = "c-down";
    let (reply, trace) = stack.call(system_tests::demo_login(), id);
    assert_eq!(reply.status, 503);
    let spans = stack.otlp.wait_for_trace(&trace, 3);
    assert_status(server_of(&spans, "service-b")[0], Some("503"));
    let attempts = attempts_of(&spans);
    assert_eq!(attempts.len(), 2);
    for (n, attempt) in attempts.iter().enumerate() {
        assert_attributes(attempt, &attempt_attributes(id, n as i64 + 1, None));
        assert_status(attempt, Some("connection_error"));
    }
    assert!(server_of(&spans, "service-a").is_empty());
}

#[test]
fn a_call_the_open_circuit_refuses_says_so_on_its_span_and_in_the_log() {
    let stack = Stack::without_a();
    // The breaker's default threshold: five calls in a row whose attempts all failed.
    for n in 0..5 {
        let (reply, _) = stack.call(system_tests::demo_login(), &format!("c-open-{n}"));
        assert_eq!(reply.status, 503);
    }
    let id = "c-refused";
    let (reply, trace) = stack.call(system_tests::demo_login(), id);
    assert_eq!(reply.status, 503);
    let spans = stack.otlp.wait_for_trace(&trace, 1);
    let server = server_of(&spans, "service-b")[0];
    assert_status(server, Some("503"));
    assert!(attempts_of(&spans).is_empty(), "A is not called");
    let names: Vec<&str> = server.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["circuit_open"], "{:#?}", server.events);
    let event = &server.events[0].attributes;
    assert_eq!(
        event["evidence"],
        Typed::Str("5 calls in a row failed".into())
    );
    assert!(
        matches!(event["retry_in_ms"], Typed::Int(ms) if (1..=1000).contains(&ms)),
        "{event:?}"
    );
    let line = stack
        .b
        .logs
        .wait_for(|l| l["event"] == "circuit_open" && l["request_id"] == id);
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["evidence"], "5 calls in a row failed");
    assert_eq!(line["trace_id"], trace.as_str());
}

#[test]
fn a_call_that_recovered_on_retry_is_green_with_one_red_attempt() {
    let stack = Stack::start(&["--failure-rate", "0.5"]);
    // A fails half its answers at random: within 60 calls one fails once, then succeeds.
    for n in 0..60 {
        let id = format!("c-retry-{n}");
        let (reply, trace) = stack.call(system_tests::demo_login(), &id);
        if reply.status != 200 {
            continue;
        }
        // B's server span ends last: once it is in, B's attempts are too.
        stack.otlp.wait_for(1, |s| {
            s.trace_id == trace && s.service == "service-b" && s.kind == SpanKind::Server
        });
        let attempts = attempts_of(&stack.otlp.wait_for_trace(&trace, 1)).len();
        if attempts != 2 {
            continue;
        }
        let spans = stack.otlp.wait_for_trace(&trace, 5);
        let attempts = attempts_of(&spans);
        let server = server_of(&spans, "service-b")[0];
        assert_status(server, None);
        assert_attributes(server, &b_server_attributes(&id, 200, stack.b.addr.port()));
        assert_attributes(attempts[0], &attempt_attributes(&id, 1, Some(503)));
        assert_status(attempts[0], Some("503"));
        assert_attributes(attempts[1], &attempt_attributes(&id, 2, Some(200)));
        assert_status(attempts[1], None);
        let a_spans = server_of(&spans, "service-a");
        assert_eq!(a_spans.len(), 2);
        assert_status(a_spans[0], Some("503"));
        assert_attributes(a_spans[0], &a_server_attributes(&id, Some(503)));
        assert_status(a_spans[1], None);
        return;
    }
    panic!("no call was retried and recovered in 60 tries");
}

#[test]
fn unmatched_paths_and_made_up_methods_make_bounded_span_names() {
    let stack = Stack::start(&[]);
    let a = stack.a();
    let not_found = stack.rt.block_on(send(
        client()
            .get(a.at("/rand1?x=1"))
            .header("user-agent", TEST_AGENT),
    ));
    assert_eq!(not_found.status, 404);
    let odd = stack.rt.block_on(send(
        client()
            .request(
                reqwest::Method::from_bytes(b"M164251").expect("method"),
                a.at("/token"),
            )
            .header("user-agent", TEST_AGENT),
    ));
    assert_eq!(odd.status, 405);
    let trace = |reply: &system_tests::Reply| {
        reply
            .header("traceresponse")
            .split('-')
            .nth(1)
            .expect("traceresponse")
            .to_owned()
    };
    let span = stack.otlp.wait_for_trace(&trace(&not_found), 1)[0].clone();
    assert_eq!(span.name, "GET", "no route: the method alone");
    assert_attributes(
        &span,
        &[
            ("http.request.method", Want::Str("GET")),
            ("http.response.status_code", Want::Int(404)),
            ("url.scheme", Want::Str("http")),
            ("url.path", Want::Str("/rand1")),
            // A value the route does not declare: redacted (see otel_redaction.rs).
            ("url.query", Want::Str("x=REDACTED")),
            ("server.address", Want::Str("127.0.0.1")),
            ("server.port", Want::Int(i64::from(a.addr.port()))),
            ("client.address", Want::Str("127.0.0.1")),
            ("client.port", Want::AnyInt),
            ("network.peer.address", Want::Str("127.0.0.1")),
            ("network.peer.port", Want::AnyInt),
            ("user_agent.original", Want::Str(TEST_AGENT)),
            ("network.protocol.version", Want::Str("1.1")),
            ("request.id", Want::Owned(not_found.request_id().to_owned())),
        ],
    );
    assert_status(&span, None);

    let span = stack.otlp.wait_for_trace(&trace(&odd), 1)[0].clone();
    assert_eq!(span.name, "HTTP /token");
    assert_eq!(
        span.typed["http.request.method"],
        Typed::Str("_OTHER".into())
    );
    assert_eq!(
        span.typed["http.request.method_original"],
        Typed::Str("M164251".into())
    );
    assert_eq!(span.typed["http.response.status_code"], Typed::Int(405));
    assert_status(&span, None);
}

#[test]
fn a_caller_that_hangs_up_leaves_a_red_span_with_no_invented_status() {
    let stack = Stack::start(&[]);
    // A raw connection, closed by the test itself once B is working on the request.
    let body = r#"{"username":"divya","password":"pass123","delay_ms":800}"#;
    let mut caller = std::net::TcpStream::connect(stack.b.addr).expect("connect");
    std::io::Write::write_all(
        &mut caller,
        format!(
            "POST /protected-action HTTP/1.1\r\nHost: b\r\nX-Request-ID: c-gone\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send");
    eventually("B to take the request").until(|| {
        stack.rt.block_on(
            stack.b.series(
                r#"http_server_active_requests{http_request_method="POST",url_scheme="http"}"#,
            ),
        ) >= 1.0
    });
    drop(caller);
    let line = stack.b.logs.request_line("c-gone");
    assert_eq!(line["status"], 499, "logs keep nginx's 499");
    let trace = line["trace_id"].as_str().expect("trace id").to_owned();
    let spans = stack.otlp.wait_for(1, |s| {
        s.trace_id == trace && s.service == "service-b" && s.kind == SpanKind::Server
    });
    let server = &spans[0];
    assert_eq!(server.name, "POST /protected-action");
    assert_status(server, Some("client_disconnected"));
    assert!(!server.typed.contains_key("http.response.status_code"));
}

#[test]
fn probes_and_scrapes_make_no_spans_unless_asked() {
    let otlp = OtlpReceiver::start();
    let quiet = Service::start(Kind::A, "127.0.0.1:0", &[], &otel_env(&otlp.url));
    let traced = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &["--trace-probes"],
        &otel_env(&otlp.url),
    );
    let rt = runtime();
    let probes = [
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("HEAD", "/health"),
        ("HEAD", "/metrics"),
    ];
    let mut traces = HashMap::new();
    for (name, service) in [("quiet", &quiet), ("traced", &traced)] {
        for (method, path) in probes {
            let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let reply = rt.block_on(send(client().request(verb, service.at(path))));
            assert_eq!(reply.status, 200);
            let value = reply.header("traceresponse").to_owned();
            traces.insert((name, format!("{method} {path}")), value);
        }
    }
    for (method, path) in probes {
        let probe = format!("{method} {path}");
        let traced_value = &traces[&("traced", probe.clone())];
        let traced_id = traced_value.split('-').nth(1).expect("id").to_owned();
        assert!(traced_value.ends_with("-03"), "{probe}: {traced_value}");
        otlp.wait_for_trace(&traced_id, 1);
        let quiet_value = &traces[&("quiet", probe.clone())];
        assert!(
            quiet_value.ends_with("-02"),
            "{probe} sampled out: {quiet_value}"
        );
        let line = quiet.logs.wait_for(|l| l["endpoint"] == probe.as_str());
        assert_eq!(
            line["trace_flags"], "00",
            "its log line says the trace is not kept"
        );
    }
    // Whatever the quiet service had queued is exported when it stops: none of it is a
    // probe's span.
    let quiet_ids: Vec<String> = probes
        .iter()
        .map(|(m, p)| traces[&("quiet", format!("{m} {p}"))].clone())
        .map(|v| v.split('-').nth(1).expect("id").to_owned())
        .collect();
    let mut quiet = quiet;
    assert!(quiet.stop().success());
    assert!(
        otlp.spans()
            .iter()
            .all(|s| !quiet_ids.contains(&s.trace_id)),
        "{:#?}",
        otlp.spans()
    );
}

/// A caller B trusts (the default) joins its trace to B's; the W3C `random` flag it sent
/// comes back in `traceresponse`, and a trace B starts has it set (its ids are random).
#[test]
fn the_w3c_random_flag_is_set_and_kept() {
    let stack = Stack::start(&[]);
    let call = |traceparent: Option<&str>| {
        let mut request = client()
            .post(stack.b.at("/protected-action"))
            .json(&system_tests::demo_login());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let reply = stack.rt.block_on(send(request));
        assert_eq!(reply.status, 200);
        reply.header("traceresponse").to_owned()
    };
    let fresh = call(None);
    assert!(fresh.ends_with("-03"), "a new trace: {fresh}");
    let caller = "0af7651916cd43dd8448eb211c80319c";
    let random = call(Some(&format!("00-{caller}-b7ad6b7169203331-03")));
    assert!(random.starts_with(&format!("00-{caller}-")), "{random}");
    assert!(random.ends_with("-03"), "{random}");
    let not_random = call(Some(&format!("00-{caller}-b7ad6b7169203331-01")));
    assert!(not_random.ends_with("-01"), "{not_random}");
    // A, called by B, keeps B's flags: its span is in the same trace, sampled.
    let spans = stack.otlp.wait_for_trace(caller, 6);
    assert!(spans.iter().any(|s| s.service == "service-a"));
}

/// With `CALLER_TRACE_CONTEXT=restart`, B starts its own trace for a caller's request, its
/// server span links to the caller's span (that the caller's baggage goes no further is
/// `context.rs`'s unit test).
#[test]
fn an_untrusted_callers_trace_is_restarted_with_a_link() {
    let stack = Stack::with_b_env(&[("CALLER_TRACE_CONTEXT", "restart")]);
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let reply = stack.rt.block_on(send(
        client()
            .post(stack.b.at("/protected-action"))
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-00"))
            .header("baggage", "tenant=blue")
            .header("x-request-id", "c-restart")
            .json(&system_tests::demo_login()),
    ));
    assert_eq!(reply.status, 200);
    let trace = reply
        .header("traceresponse")
        .split('-')
        .nth(1)
        .expect("traceresponse")
        .to_owned();
    assert_ne!(trace, caller_trace, "a trace of B's own");
    // The caller said "not sampled"; B's sampler decided for itself: B's span, its
    // attempt, A's span.
    let spans = stack.otlp.wait_for_trace(&trace, 3);
    let server = server_of(&spans, "service-b")[0];
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        server.links,
        [(caller_trace.to_owned(), caller_span.to_owned())]
    );
    assert!(
        stack
            .otlp
            .spans()
            .iter()
            .all(|s| s.trace_id != caller_trace),
        "nothing joined the caller's trace"
    );
    let line = stack.a().logs.request_line("c-restart");
    assert_eq!(line["trace_id"], trace.as_str(), "A is in B's trace");
}

/// A request B's sampler turns down keeps one trace across both services without a span in
/// it: the same trace id on B's and A's log lines (each with a span id of its own and
/// `trace_flags` "00"), `traceparent` sent on to A unsampled, and nothing exported. A call
/// that fails keeps the ids on every line it writes. A caller's sampled trace is still
/// honoured (parent based), and exported whole.
#[test]
fn an_unsampled_request_keeps_its_trace_in_the_logs_and_exports_nothing() {
    let mut stack = Stack::with_b_env(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]);
    let (reply, trace) = stack.call(system_tests::demo_login(), "unsampled-ok");
    assert_eq!(reply.status, 200);
    assert!(
        reply.header("traceresponse").ends_with("-02"),
        "not sampled, random"
    );
    let b_line = stack.b.logs.request_line("unsampled-ok");
    let a_line = stack.a().logs.request_line("unsampled-ok");
    for line in [&b_line, &a_line] {
        assert_eq!(line["trace_id"], trace.as_str(), "{line}");
        assert_eq!(line["trace_flags"], "00", "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    assert_ne!(b_line["span_id"], a_line["span_id"], "A's span is its own");

    let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = stack.rt.block_on(send(
        client()
            .post(stack.b.at("/protected-action"))
            .header("traceparent", format!("00-{caller}-00f067aa0ba902b7-01"))
            .json(&system_tests::demo_login()),
    ));
    assert_eq!(sampled.status, 200);
    assert!(sampled.header("traceresponse").contains(caller));
    for service in ["service-a", "service-b"] {
        stack
            .otlp
            .wait_for(1, |s| s.trace_id == caller && s.service == service);
    }

    drop(stack.a.take());
    let (failed, failed_trace) = stack.call(system_tests::demo_login(), "unsampled-down");
    assert_eq!(failed.status, 503);
    let attempts = stack.b.logs.failed_attempts("unsampled-down");
    assert!(!attempts.is_empty());
    for line in attempts
        .iter()
        .chain([&stack.b.logs.request_line("unsampled-down")])
    {
        assert_eq!(line["trace_id"], failed_trace.as_str(), "{line}");
        assert_eq!(line["trace_flags"], "00", "{line}");
    }
    stack.stop_b_and_assert_not_exported(&[&trace, &failed_trace]);
}

/// A quiet log (`RUST_LOG=warn`, log records over OTLP too) changes none of that: the spans
/// that carry a request's context exist whatever the log filter says, so the unsampled
/// caller's trace still reaches A with its `tracestate`, and an error line inside the
/// request carries the request's id and trace ids.
#[test]
fn a_quiet_log_keeps_an_unsampled_requests_context() {
    let mut stack = Stack::with_b_env(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        // Quiet but for the line that says where B listens.
        ("RUST_LOG", "warn,service_b::startup=info"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
    ]);
    let caller = "0af7651916cd43dd8448eb211c80319c";
    let reply = stack.rt.block_on(send(
        client()
            .post(stack.b.at("/protected-action"))
            .header("x-request-id", "quiet-ok")
            .header("traceparent", format!("00-{caller}-b7ad6b7169203331-00"))
            .header("tracestate", "vendor=value")
            .json(&system_tests::demo_login()),
    ));
    assert_eq!(reply.status, 200);
    assert!(reply.header("traceresponse").contains(caller));
    let a_line = stack.a().logs.request_line("quiet-ok");
    assert_eq!(a_line["trace_id"], caller, "{a_line}");
    assert_eq!(a_line["trace_flags"], "00", "{a_line}");

    drop(stack.a.take());
    let (failed, failed_trace) = stack.call(system_tests::demo_login(), "quiet-down");
    assert_eq!(failed.status, 503);
    let line = stack
        .b
        .logs
        .wait_for(|l| l["event"] == "provider_call_failed" && l["request_id"] == "quiet-down");
    assert_eq!(line["trace_id"], failed_trace.as_str(), "{line}");
    assert_eq!(line["trace_flags"], "00", "{line}");
    assert!(
        stack
            .b
            .logs
            .all()
            .iter()
            .all(|l| l["level"] != "INFO" || l["event"] == "listening"),
        "RUST_LOG=warn holds back the INFO lines"
    );
    stack.stop_b_and_assert_not_exported(&[caller, &failed_trace]);
}
