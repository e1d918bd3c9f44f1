//! OTLP log records (`OTEL_LOGS_EXPORTER=otlp`): each carries what its JSON line carries, on
//! the right span, with the event's name as the record's `EventName`, a body a person can
//! read, and no status code where no answer was sent.

use serde_json::json;
use system_tests::otlp::{OtlpReceiver, Typed};
use system_tests::{Kind, Service, eventually};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn logs_env(url: &str) -> [(&'static str, &str); 4] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
    ]
}

#[test]
fn log_records_carry_what_the_json_line_carries_on_the_right_span() {
    let otlp = OtlpReceiver::start();
    let env = logs_env(&otlp.url);
    let a = Service::start(Kind::A, "127.0.0.1:0", &[], &env);
    let b = Service::start(Kind::B, "127.0.0.1:0", &["--provider-url", &a.url()], &env);
    let rt = runtime();
    let reply = rt.block_on(b.protected_action(
        system_tests::demo_login_with(json!({"delay_ms": 2000})),
        Some("logs-timeout"),
    ));
    assert_eq!(reply.status, 503);

    let line = b.logs.request_line("logs-timeout");
    let request_id = Typed::Str("logs-timeout".into());
    let record = otlp.wait_for_logs(1, |r| {
        r.service == "service-b"
            && r.attributes.get("request.id") == Some(&request_id)
            && r.attributes.contains_key("endpoint")
    })[0]
        .clone();
    assert_eq!(record.event_name, "access_log");
    assert!(
        record
            .body
            .starts_with(r#"access_log endpoint="POST /protected-action" status=503 latency_ms="#),
        "{}",
        record.body
    );
    assert_eq!(record.severity, ("INFO".to_owned(), 9));
    assert_eq!(
        record.attributes["endpoint"],
        Typed::Str("POST /protected-action".into())
    );
    // Named as on the request's span.
    assert_eq!(
        record.attributes["http.response.status_code"],
        Typed::Int(503)
    );
    assert!(matches!(record.attributes["latency_ms"], Typed::Double(ms) if ms > 1000.0));
    assert_eq!(
        record.trace_id,
        line["trace_id"].as_str().expect("trace id")
    );
    assert_eq!(record.span_id, line["span_id"].as_str().expect("span id"));
    assert_eq!(record.flags & 1, 1, "sampled");

    for attempt in [1, 2] {
        let json_line = b
            .logs
            .wait_for(|l| l["event"] == "provider_call_failed" && l["attempt"] == attempt);
        let record = otlp.wait_for_logs(1, |r| {
            r.attributes.get("attempt") == Some(&Typed::Int(attempt))
                && r.event_name == "provider_call_failed"
        })[0]
            .clone();
        assert_eq!(record.severity, ("ERROR".to_owned(), 17));
        // The logs data model's EventName names it, and attributes do not repeat it; the
        // body is the line as a person reads it.
        assert_eq!(
            record.body,
            format!("provider_call_failed error=timeout timeout_secs=1 attempt={attempt}")
        );
        assert!(!record.attributes.contains_key("event"), "{record:?}");
        assert_eq!(record.scope, "service-b", "the scope is the service's");
        assert_eq!(record.attributes["error"], Typed::Str("timeout".into()));
        assert_eq!(record.attributes["timeout_secs"], Typed::Double(1.0));
        assert_eq!(record.attributes["request.id"], request_id);
        assert!(!record.attributes.contains_key("message"));
        assert_eq!(
            record.span_id,
            json_line["span_id"].as_str().expect("span id")
        );
        assert_ne!(
            record.span_id,
            line["span_id"].as_str().expect("server span")
        );
    }

    // Stdout is unchanged by the export: exactly the seed's fields plus the trace ids, in
    // this order.
    let raw = b
        .logs
        .raw()
        .into_iter()
        .find(|l| l.contains(r#""request_id":"logs-timeout""#) && l.contains(r#""endpoint""#))
        .expect("the raw request line");
    let keys = [
        "service",
        "endpoint",
        "status",
        "latency_ms",
        "request_id",
        "ts",
        "level",
        "trace_id",
        "span_id",
        "trace_flags",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            raw.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} in {raw}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order: {raw}"
    );
    assert_eq!(line.as_object().expect("object").len(), keys.len(), "{raw}");
}

/// A line that names its event (`"event":"listening"`) is a record with that `EventName`,
/// not an `event` attribute.
#[test]
fn a_start_up_line_is_a_record_named_after_its_event() {
    let otlp = OtlpReceiver::start();
    let _a = Service::start(Kind::A, "127.0.0.1:0", &[], &logs_env(&otlp.url));
    let record = otlp.wait_for_logs(1, |r| r.event_name == "listening")[0].clone();
    assert!(!record.attributes.contains_key("event"), "{record:?}");
    assert!(record.attributes.contains_key("addr"), "{record:?}");
    assert!(
        record.body.starts_with("listening addr="),
        "{}",
        record.body
    );
}

/// A request whose caller left before the answer: the JSON line says 499 (nginx's
/// convention), but no status was sent, so the record says `error.type`, as the span does.
#[test]
fn a_request_whose_caller_left_has_no_status_code_on_its_record() {
    let otlp = OtlpReceiver::start();
    let a = Service::start(Kind::A, "127.0.0.1:0", &[], &logs_env(&otlp.url));
    let body = r#"{"username":"divya","password":"pass123","delay_ms":3000}"#;
    let mut caller = std::net::TcpStream::connect(a.addr).expect("connect");
    std::io::Write::write_all(
        &mut caller,
        format!(
            "POST /token HTTP/1.1\r\nHost: a\r\nX-Request-ID: gone\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send");
    let rt = runtime();
    eventually("A to take the request").until(|| {
        rt.block_on(
            a.series(
                r#"http_server_active_requests{http_request_method="POST",url_scheme="http"}"#,
            ),
        ) >= 1.0
    });
    drop(caller);
    assert_eq!(a.logs.request_line("gone")["status"], 499);
    let gone = Typed::Str("gone".into());
    let record = otlp.wait_for_logs(1, |r| {
        r.event_name == "access_log" && r.attributes.get("request.id") == Some(&gone)
    })[0]
        .clone();
    assert_eq!(
        record.attributes.get("error.type"),
        Some(&Typed::Str("client_disconnected".into()))
    );
    assert!(
        !record.attributes.contains_key("http.response.status_code"),
        "{record:?}"
    );
}
