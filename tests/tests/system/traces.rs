//! One request, one trace: both services export OTLP to a stand-in collector, and the span
//! tree, parent links, attributes and log correlation are checked for the lab's scenarios.
//!
//! `the_request_id_also_travels_in_baggage` runs A inside the test process (it reads only the
//! echoed request id, and the baggage it reads is the service's own setting); the others
//! read spans, log lines or `traceresponse` (only the binaries install a tracer), set the
//! `OTEL_*` environment, or send SIGTERM.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use system_tests::otlp::{OtlpReceiver, ReceivedSpan};
use system_tests::{InProcess, Kind, Served, Service, client, eventually, send, vacant_addr};

/// Exporter settings for tests: export batches every 50 ms instead of every 5 s.
fn otel_env(endpoint: &str) -> Vec<(&str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]
}

fn traced_a(endpoint: &str) -> Service {
    Service::start(Kind::A, "127.0.0.1:0", &[], &otel_env(endpoint))
}

fn traced_b(endpoint: &str, provider: &str, args: &[&str]) -> Service {
    let mut all = vec!["--provider-url", provider];
    all.extend_from_slice(args);
    Service::start(Kind::B, "127.0.0.1:0", &all, &otel_env(endpoint))
}

/// A request that makes a span (probes and scrapes make none by default): the demo login.
fn token_request(a: &impl Served) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}/token", a.base_url()))
        .json(&system_tests::demo_login())
}

/// `00-<trace>-<span>-<flags>` → (trace, span).
fn traceresponse(reply: &system_tests::Reply) -> (String, String) {
    let value = reply.header("traceresponse");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceresponse: {value:?}");
    let flags = u8::from_str_radix(parts[3], 16).expect("hex flags");
    assert_eq!(flags & 0x01, 0x01, "sampled: {value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    filter: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| filter(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what}: {spans:#?}");
    found[0]
}

fn b_server(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    one(spans, "B server span", |s| {
        s.service == "service-b" && s.kind == SpanKind::Server
    })
}

fn attempts(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    let mut found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "service-b" && s.kind == SpanKind::Client)
        .collect();
    found.sort_by_key(|s| s.start_ns);
    found
}

fn a_servers(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == "service-a" && s.kind == SpanKind::Server)
        .collect()
}

#[test]
fn success_is_one_trace_of_three_spans_across_both_services() {
    let otlp = OtlpReceiver::start();
    let a = traced_a(&otlp.url);
    let b = traced_b(&otlp.url, &a.url(), &[]);
    let rt = runtime();

    let reply = rt.block_on(b.protected_action(system_tests::demo_login(), Some("trace-ok")));

    assert_eq!(reply.status, 200);
    let (trace_id, span_id) = traceresponse(&reply);
    let spans = otlp.wait_for_trace(&trace_id, 3);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = b_server(&spans);
    assert_eq!(server.name, "POST /protected-action");
    assert_eq!(
        server.span_id, span_id,
        "traceresponse names B's server span"
    );
    assert_eq!(
        server.parent_span_id, "",
        "no incoming traceparent: a new trace"
    );
    assert_eq!(server.attr("http.request.method"), "POST");
    assert_eq!(server.attr("http.route"), "/protected-action");
    assert_eq!(server.attr("http.response.status_code"), "200");
    let attempt = attempts(&spans)[0];
    assert_eq!(attempt.name, "POST /token");
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(
        attempt.attr("http.request.resend_count"),
        "",
        "the first attempt"
    );
    assert!(attempt.attr("url.full").ends_with("/token"));
    assert_eq!(attempt.attr("server.address"), "127.0.0.1");
    assert_eq!(attempt.attr("http.response.status_code"), "200");
    assert!(!attempt.is_error);
    let a_span = a_servers(&spans)[0];
    assert_eq!(a_span.name, "POST /token");
    assert_eq!(
        a_span.parent_span_id, attempt.span_id,
        "A's span hangs under B's attempt"
    );
    for span in &spans {
        assert_eq!(
            span.attr("request.id"),
            "trace-ok",
            "request.id on {}",
            span.name
        );
        for value in span.attributes.values() {
            assert!(
                !value.contains("pass123") && !value.contains("token-divya"),
                "{span:#?}"
            );
        }
    }
    assert_eq!(
        b.logs.request_line("trace-ok")["trace_id"],
        trace_id.as_str()
    );
    assert_eq!(b.logs.request_line("trace-ok")["span_id"], span_id.as_str());
    assert_eq!(
        a.logs.request_line("trace-ok")["trace_id"],
        trace_id.as_str()
    );
}

#[test]
fn timeout_shows_two_failed_attempts_each_with_its_own_a_span() {
    let otlp = OtlpReceiver::start();
    let a = traced_a(&otlp.url);
    let b = traced_b(&otlp.url, &a.url(), &["--provider-timeout-ms", "200"]);
    let rt = runtime();

    let reply = rt.block_on(b.protected_action(
        system_tests::demo_login_with(json!({"delay_ms": 500})),
        None,
    ));

    assert_eq!(reply.status, 503);
    let (trace_id, _) = traceresponse(&reply);
    // B's server span, 2 attempts, and for each attempt A's server span and its delay span
    // (A finishes its wait after B gave up).
    let spans = otlp.wait_for_trace(&trace_id, 7);
    let server = b_server(&spans);
    assert!(server.is_error);
    let attempts = attempts(&spans);
    assert_eq!(attempts.len(), 2);
    for (n, attempt) in attempts.iter().enumerate() {
        let resends = if n == 0 { String::new() } else { n.to_string() };
        assert_eq!(attempt.attr("http.request.resend_count"), resends);
        assert!(attempt.is_error);
        assert_eq!(attempt.attr("error.type"), "timeout");
        assert_eq!(attempt.parent_span_id, server.span_id);
        let served = one(&spans, "A span per attempt", |s| {
            s.service == "service-a" && s.parent_span_id == attempt.span_id
        });
        let delay = one(&spans, "delay span", |s| s.parent_span_id == served.span_id);
        assert_eq!(delay.name, "simulated_delay");
        assert_eq!(delay.attr("lab.delay_ms"), "500");
    }
    assert!(
        b.logs
            .failed_attempts(reply.request_id())
            .iter()
            .all(|l| l["trace_id"] == trace_id.as_str())
    );
}

#[test]
fn provider_down_shows_two_failed_attempts_and_no_a_span() {
    let otlp = OtlpReceiver::start();
    let b = traced_b(&otlp.url, &format!("http://{}", vacant_addr()), &[]);
    let rt = runtime();

    let reply = rt.block_on(b.protected_action(system_tests::demo_login(), None));

    assert_eq!(reply.status, 503);
    let (trace_id, _) = traceresponse(&reply);
    let spans = otlp.wait_for_trace(&trace_id, 3);
    let attempts = attempts(&spans);
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|s| s.is_error && s.attr("error.type") == "connection_error")
    );
    assert!(a_servers(&spans).is_empty());
}

#[test]
fn invalid_credentials_are_one_attempt_and_no_retry() {
    let otlp = OtlpReceiver::start();
    let a = traced_a(&otlp.url);
    let b = traced_b(&otlp.url, &a.url(), &[]);
    let rt = runtime();

    let reply =
        rt.block_on(b.protected_action(json!({"username": "divya", "password": "wrong"}), None));

    assert_eq!(reply.status, 401);
    let (trace_id, _) = traceresponse(&reply);
    let spans = otlp.wait_for_trace(&trace_id, 3);
    assert_eq!(attempts(&spans).len(), 1);
    assert_eq!(
        a_servers(&spans)[0].attr("http.response.status_code"),
        "401"
    );
    // Any straggler would arrive before a later trace's spans: each service exports its
    // spans in the order they end, one batch after the other.
    let later = rt.block_on(b.protected_action(system_tests::demo_login(), None));
    otlp.wait_for_trace(&traceresponse(&later).0, 3);
    assert_eq!(
        otlp.spans()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .count(),
        3
    );
}

#[test]
fn a_caller_s_traceparent_is_joined_and_an_invalid_one_ignored() {
    let otlp = OtlpReceiver::start();
    let a = traced_a(&otlp.url);
    let rt = runtime();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    let joined = rt.block_on(send(token_request(&a).header(
        "traceparent",
        format!("00-{caller_trace}-00f067aa0ba902b7-01"),
    )));
    let garbage = rt.block_on(send(token_request(&a).header("traceparent", "00-zz-yy-01")));

    assert_eq!(joined.status, 200);
    let (trace_id, _) = traceresponse(&joined);
    assert_eq!(trace_id, caller_trace);
    let span = &otlp.wait_for_trace(caller_trace, 1)[0];
    assert_eq!(span.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(garbage.status, 200);
    let (fresh, _) = traceresponse(&garbage);
    assert_ne!(fresh, caller_trace);
    assert_eq!(fresh.len(), 32);
}

#[tokio::test]
async fn the_request_id_also_travels_in_baggage() {
    let a = InProcess::a(&[]).await;

    let reply = send(token_request(&a).header("baggage", "request.id=from-baggage,other=1")).await;

    assert_eq!(
        reply.request_id(),
        "from-baggage",
        "used when X-Request-ID is missing"
    );
    let invalid = send(token_request(&a).header("baggage", "request.id=bad%20id")).await;
    assert!(system_tests::is_uuid_v4(invalid.request_id()));
}

#[test]
fn a_collector_that_is_down_or_hung_never_slows_a_request() {
    // One collector refuses connections, the other accepts and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_url = format!("http://{}", hung.local_addr().expect("addr"));
    let down_url = format!("http://{}", vacant_addr());
    let rt = runtime();

    for collector in [&down_url, &hung_url] {
        let a = traced_a(collector);
        let b = traced_b(collector, &a.url(), &[]);
        let started = Instant::now();
        for _ in 0..30 {
            let reply = rt.block_on(b.protected_action(system_tests::demo_login(), None));
            assert_eq!(reply.status, 200);
        }
        // 30 loopback round trips take milliseconds; an export on the request path would
        // take the collector's timeout (seconds) at least once.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{collector}: {:?}",
            started.elapsed()
        );
    }
    drop(hung);
}

#[test]
fn failed_exports_are_counted_and_logged() {
    // The export gives up after 1 s of retries, not the default 10 s.
    let endpoint = format!("http://{}", vacant_addr());
    let mut env = otel_env(&endpoint);
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"));
    let b = Service::start(
        Kind::B,
        "127.0.0.1:0",
        &["--provider-url", "http://127.0.0.1:9"],
        &env,
    );
    let rt = runtime();
    rt.block_on(b.protected_action(system_tests::demo_login(), None));

    eventually("an export failure counted")
        .every(Duration::from_millis(50))
        .until(|| {
            let text = rt
                .block_on(system_tests::get(&b.at("/metrics?format=prometheus")))
                .text;
            let failed = text.lines().any(|l| {
                l.starts_with("otel_sdk_exporter_span_exported_total{")
                    && l.contains("error_type=")
                    && !l.ends_with(" 0")
            });
            if failed { Ok(()) } else { Err(text) }
        });
    // And logged, with the collector's error, once per failed batch.
    let line = b.logs.wait_for(|l| l["event"] == "span_export_failed");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(
        line["spans_dropped"].as_u64().is_some_and(|n| n >= 1),
        "{line}"
    );
    assert!(
        line["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{line}"
    );
}

#[test]
fn sigterm_flushes_spans_still_in_the_batch() {
    let otlp = OtlpReceiver::start();
    // The default 5 s batch delay: only the shutdown flush can deliver this span in time.
    let mut a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.url)],
    );
    let rt = runtime();

    let reply = rt.block_on(send(token_request(&a).header("x-request-id", "last-words")));
    let started = Instant::now();
    assert!(a.stop().success());

    let (trace_id, _) = traceresponse(&reply);
    let spans = otlp.wait_for_trace(&trace_id, 1);
    assert_eq!(spans[0].attr("request.id"), "last-words");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "flushed at exit, not by the timer"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_standard_otel_variables_name_the_service_and_its_resource() {
    let otlp = OtlpReceiver::start();
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "provider-x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    let rt = runtime();

    let reply = rt.block_on(send(token_request(&a)));

    let (trace_id, _) = traceresponse(&reply);
    let span = &otlp.wait_for_trace(&trace_id, 1)[0];
    assert_eq!(span.service, "provider-x");
    assert_eq!(
        span.resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("test")
    );
}
