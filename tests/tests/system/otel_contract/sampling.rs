//! What gets a span and what does not: probes and scrapes, the W3C `random` flag, an
//! untrusted caller's trace restarted with a link, an unsampled request whose trace lives on
//! in the logs, and a quiet log that keeps the context.

use system_tests::otlp::OtlpReceiver;
use system_tests::{Kind, Service, client, send};

use super::*;

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
