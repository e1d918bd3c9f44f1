//! The walkthrough's calls, each span checked: success, 401, slow, timed out, A down, the
//! open circuit, a recovered retry, made-up paths and methods, a caller that hangs up.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use system_tests::otlp::Typed;
use system_tests::{client, eventually, send};

use super::*;

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
