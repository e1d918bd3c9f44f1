//! No credential a caller puts in a URL reaches a span or an OTLP log record: every query
//! value is `REDACTED` except the parameters the route declares (`/metrics?format=…`), on
//! every route; and `server.address` is written as the conventions write it.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use system_tests::otlp::{OtlpReceiver, ReceivedSpan, Typed};
use system_tests::{Kind, Reply, Service, client, demo_login, send};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn exporting(url: &str) -> [(&'static str, &str); 4] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
    ]
}

/// The server span of `service` in the trace `reply` names.
fn server_span(otlp: &OtlpReceiver, reply: &Reply, service: &str) -> ReceivedSpan {
    let trace = reply
        .header("traceresponse")
        .split('-')
        .nth(1)
        .expect("traceresponse")
        .to_owned();
    otlp.wait_for(1, |s| {
        s.trace_id == trace && s.kind == SpanKind::Server && s.service == service
    })
    .remove(0)
}

/// The HTTP conventions: "sensitive content provided in `url.query` SHOULD be scrubbed";
/// a query value can be a password, so every one a route does not declare is.
#[test]
fn a_password_in_a_query_reaches_no_span_and_no_log_record() {
    let otlp = OtlpReceiver::start();
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &["--trace-probes"],
        &exporting(&otlp.url),
    );
    let b = Service::start(
        Kind::B,
        "127.0.0.1:0",
        &["--provider-url", &a.url()],
        &exporting(&otlp.url),
    );
    let rt = runtime();
    let on_b = rt.block_on(send(
        client()
            .post(b.at("/protected-action?password=hunter2&flag"))
            .header("x-request-id", "query-b")
            .json(&demo_login()),
    ));
    assert_eq!(on_b.status, 200);
    let on_a = rt.block_on(send(
        client()
            .post(a.at("/token?password=hunter2&user=divya"))
            .header("x-request-id", "query-a")
            .json(&demo_login()),
    ));
    assert_eq!(on_a.status, 200);
    let unmatched = rt.block_on(send(client().get(a.at("/nope?token=hunter2"))));
    assert_eq!(unmatched.status, 404);
    let scrape = rt.block_on(send(
        client().get(a.at("/metrics?format=prometheus&key=hunter2")),
    ));
    assert_eq!(scrape.status, 200);

    for (reply, service, query) in [
        (&on_b, "service-b", "password=REDACTED&flag"),
        (&on_a, "service-a", "password=REDACTED&user=REDACTED"),
        (&unmatched, "service-a", "token=REDACTED"),
        (&scrape, "service-a", "format=prometheus&key=REDACTED"),
    ] {
        let span = server_span(&otlp, reply, service);
        assert_eq!(
            span.typed.get("url.query"),
            Some(&Typed::Str(query.into())),
            "{}",
            span.name
        );
    }
    // Every line so far is exported as a record: none carries the password either.
    a.logs.request_line("query-a");
    otlp.wait_for_logs(1, |r| {
        r.attributes.get("request.id") == Some(&Typed::Str("query-a".into()))
    });
    let everything = format!("{:?}{:?}", otlp.spans(), otlp.logs());
    assert!(!everything.contains("hunter2"), "a password was exported");
}

/// `server.address` is the host as the conventions write it: an IPv6 literal without the
/// brackets the `Host` header needs.
#[test]
fn server_address_is_an_ip_literal_without_brackets() {
    let otlp = OtlpReceiver::start();
    let a = Service::start(Kind::A, "127.0.0.1:0", &[], &exporting(&otlp.url));
    let reply = runtime().block_on(send(
        client()
            .post(a.at("/token"))
            .header("host", format!("[::1]:{}", a.addr.port()))
            .json(&demo_login()),
    ));
    assert_eq!(reply.status, 200);
    let span = server_span(&otlp, &reply, "service-a");
    assert_eq!(
        span.typed.get("server.address"),
        Some(&Typed::Str("::1".into()))
    );
    assert_eq!(
        span.typed.get("server.port"),
        Some(&Typed::Int(i64::from(a.addr.port())))
    );
}
