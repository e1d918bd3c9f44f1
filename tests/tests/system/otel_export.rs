//! OTLP/HTTP export as the specification has it: a collector's 429, 502, 503 or 504 is
//! retried (after its `Retry-After`, or a backoff) within the export timeout, and a failed
//! export is counted by how it ended (`rejected`, `timeout`, `network_error`); exported
//! spans carry the W3C trace flags their `traceparent` carries.

use std::time::Duration;

use system_tests::otlp::OtlpReceiver;
use system_tests::{Kind, Reply, Service, TIMEOUT, client, demo_login, eventually, send};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn a_exporting_to(url: &str, extra: &[(&'static str, &'static str)]) -> Service {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    env.extend_from_slice(extra);
    Service::start(Kind::A, "127.0.0.1:0", &[], &env)
}

fn login(a: &Service, rt: &tokio::runtime::Runtime) -> Reply {
    rt.block_on(send(client().post(a.at("/token")).json(&demo_login())))
}

fn trace_of(reply: &Reply) -> String {
    reply
        .header("traceresponse")
        .split('-')
        .nth(1)
        .expect("traceresponse")
        .to_owned()
}

/// `otel_sdk_exporter_span_exported_total` with `error_type` (or without, when `None`).
fn exported(error_type: Option<&str>) -> String {
    let labels = r#"otel_component_type="otlp_http_span_exporter",otel_component_name="otlp_http_span_exporter/0""#;
    match error_type {
        Some(kind) => {
            format!("otel_sdk_exporter_span_exported_total{{{labels},error_type=\"{kind}\"}}")
        }
        None => format!("otel_sdk_exporter_span_exported_total{{{labels}}}"),
    }
}

/// Polls `series` on `a` until it is at least 1.
fn wait_for_series(a: &Service, rt: &tokio::runtime::Runtime, series: &str) {
    eventually(format!("{series} counted"))
        .every(Duration::from_millis(50))
        .until(|| rt.block_on(a.series(series)) >= 1.0);
}

/// The OTLP/HTTP specification: 429, 502, 503 and 504 are retryable; the export that met
/// them arrives on a later attempt, and nothing is counted lost.
#[test]
fn a_collector_that_refuses_for_a_while_gets_the_spans_on_a_retry() {
    let otlp = OtlpReceiver::start_refusing(vec![
        (503, None),
        (429, Some("0")),
        (502, None),
        (504, None),
    ]);
    let a = a_exporting_to(&otlp.url, &[]);
    let rt = runtime();
    let reply = login(&a, &rt);
    otlp.wait_for_trace(&trace_of(&reply), 1);
    assert!(otlp.posts() >= 5, "four refusals, then the export");
    for kind in ["rejected", "network_error", "timeout"] {
        assert_eq!(rt.block_on(a.series(&exported(Some(kind)))), 0.0, "{kind}");
    }
    assert!(rt.block_on(a.series(&exported(None))) >= 1.0);
}

/// A collector still refusing when the export's time is up rejected it; a status that is
/// not retryable is a rejection at once, not retried.
#[test]
fn refusals_that_outlast_the_timeout_or_are_final_are_counted_rejected() {
    let rt = runtime();
    for (status, retried) in [(503, true), (400, false)] {
        let otlp = OtlpReceiver::start_refusing(vec![(status, None); 10_000]);
        let a = a_exporting_to(&otlp.url, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")]);
        login(&a, &rt);
        wait_for_series(&a, &rt, &exported(Some("rejected")));
        assert_eq!(
            rt.block_on(a.series(&exported(Some("network_error")))),
            0.0,
            "{status}"
        );
        let posts = otlp.posts();
        assert_eq!(posts > 1, retried, "{status}: {posts} POSTs");
    }
}

/// A collector that accepts connections and never answers is a timeout; one that refuses
/// connections is a network error.
#[test]
fn no_answer_is_a_timeout_and_no_connection_a_network_error() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_url = format!("http://{}", hung.local_addr().expect("addr"));
    let _held = std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(16).collect();
        std::thread::sleep(TIMEOUT);
        drop(held);
    });
    let refusing_url = format!("http://{}", system_tests::vacant_addr());
    let rt = runtime();
    for (url, kind) in [(&hung_url, "timeout"), (&refusing_url, "network_error")] {
        let a = a_exporting_to(url, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "300")]);
        login(&a, &rt);
        wait_for_series(&a, &rt, &exported(Some(kind)));
    }
}

/// W3C Trace Context Level 2: the exported span's flags are those of its `traceparent`:
/// `random` for a trace A starts and for a caller that set it, not for one that did not.
#[test]
fn exported_spans_carry_the_w3c_random_flag() {
    let otlp = OtlpReceiver::start();
    let a = a_exporting_to(&otlp.url, &[]);
    let rt = runtime();
    let call = |traceparent: Option<String>| {
        let mut request = client().post(a.at("/token")).json(&demo_login());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let reply = rt.block_on(send(request));
        let flags = reply
            .header("traceresponse")
            .rsplit('-')
            .next()
            .map(str::to_owned);
        let span = otlp.wait_for_trace(&trace_of(&reply), 1).remove(0);
        (
            flags.expect("flags"),
            span.flags & 0xff,
            span.parent_span_id,
        )
    };
    let (shown, exported, parent) = call(None);
    assert_eq!(
        (shown.as_str(), exported, parent.as_str()),
        ("03", 0x03, "")
    );
    let random = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
    let (shown, exported, parent) = call(Some(random.into()));
    assert_eq!((shown.as_str(), exported), ("03", 0x03));
    assert_eq!(parent, "00f067aa0ba902b7");
    let not_random = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (shown, exported, _) = call(Some(not_random.into()));
    assert_eq!((shown.as_str(), exported), ("01", 0x01));
}
