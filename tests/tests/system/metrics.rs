//! `/metrics` content negotiation: JSON for curl, OpenMetrics for a Prometheus scrape (which
//! asks for it first), the text format for a client that asks for `text/plain`; series
//! labelled by route, exemplars only for sampled requests, every known series exported at 0
//! from the first scrape. That both formats are valid, by promtool and an OpenMetrics
//! parser, is checked in the `tools` target (`metrics.rs` there).
//!
//! `the_format_is_negotiated_by_q_value_and_says_it_varies` runs A inside the test process
//! (it reads only statuses and headers); the others read the series the binary's recorder
//! keeps, or set the `OTEL_*` environment the binary reads at start.

use system_tests::prometheus::SCRAPE_ACCEPT;
use system_tests::{InProcess, Service, metrics_with};

const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[tokio::test]
async fn curl_gets_json_and_a_scrape_gets_openmetrics() {
    let a = Service::a(&[]);

    let curl = metrics_with(&a, "", Some("*/*")).await;
    let scrape = metrics_with(&a, "", Some(SCRAPE_ACCEPT)).await;
    let text = metrics_with(&a, "", Some("text/plain;version=0.0.4")).await;
    let forced_text = metrics_with(&a, "?format=prometheus", Some("*/*")).await;
    let forced_json = metrics_with(&a, "?format=json", Some(SCRAPE_ACCEPT)).await;

    assert_eq!(curl.header("content-type"), "application/json");
    assert!(curl.json["requests_total"].is_u64());
    assert_eq!(scrape.header("content-type"), OPENMETRICS_TYPE);
    assert!(scrape.text.ends_with("\n# EOF\n"), "{}", scrape.text);
    assert!(scrape.text.contains("# TYPE http_requests counter"));
    assert_eq!(text.header("content-type"), PROMETHEUS_TYPE);
    let scrape = text;
    assert!(
        scrape.text.contains("# TYPE http_requests_total counter"),
        "{}",
        scrape.text
    );
    assert_eq!(forced_text.header("content-type"), PROMETHEUS_TYPE);
    assert_eq!(forced_json.header("content-type"), "application/json");
}

#[tokio::test]
async fn prometheus_series_are_labelled_by_route_never_raw_path() {
    let a = Service::a(&[]);
    for path in ["/x1", "/x2", "/x3"] {
        system_tests::get(&a.at(path)).await;
    }
    // One request in HTTP/1.0: `network_protocol_version` tells it apart.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut raw = tokio::net::TcpStream::connect(a.addr)
            .await
            .expect("connects");
        raw.write_all(b"GET /x4 HTTP/1.0\r\nHost: a\r\n\r\n")
            .await
            .expect("sent");
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).await.expect("answered");
        assert!(answer.starts_with(b"HTTP/1.0 404"), "{answer:?}");
    }
    a.token(system_tests::demo_login(), None).await;

    let text = metrics_with(&a, "?format=prometheus", None).await.text;

    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/token",status="200"} 1"#),
        "{text}"
    );
    assert!(!text.contains("/x1"));
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/token",http_response_status_code="200",url_scheme="http",network_protocol_version="1.1",le="0.0001"}"#),
        "the convention's name and labels, sub-millisecond buckets: {text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="404",url_scheme="http",network_protocol_version="1.1",le="+Inf"} 3"#),
        "no http_route when no route matched: {text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="404",url_scheme="http",network_protocol_version="1.0",le="+Inf"} 1"#),
        "the protocol version is a label: {text}"
    );
    assert!(
        text.contains(r#"token_requests_total{outcome="issued"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn unsampled_requests_leave_no_exemplar() {
    let a = Service::start(
        system_tests::Kind::A,
        "127.0.0.1:0",
        &[],
        &[("OTEL_TRACES_SAMPLER", "always_off")],
    );
    let reply = a.token(system_tests::demo_login(), None).await;
    assert!(
        reply.header("traceresponse").ends_with("-02"),
        "not sampled"
    );
    let text = metrics_with(&a, "?format=openmetrics", None).await.text;
    assert!(
        text.contains("http_server_request_duration_seconds_bucket{http_request_method=\"POST\""),
        "{text}"
    );
    assert!(
        !text.contains(" # {"),
        "no exemplar names a trace that does not exist: {text}"
    );
}

#[tokio::test]
async fn a_fresh_service_exports_every_series_it_knows_of_at_zero() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    // The first scrape, before any other request: a restarted service never blanks a panel
    // or breaks a rate().
    let a_text = system_tests::get(&a.at("/metrics?format=prometheus"))
        .await
        .text;
    let b_text = system_tests::get(&b.at("/metrics?format=prometheus"))
        .await
        .text;
    let has = |text: &str, series: &str| {
        text.lines()
            .any(|l| l.starts_with(series) && l.ends_with(" 0"))
    };
    for series in [
        "token_delay_seconds_count 0",
        r#"token_requests_total{outcome="issued"} 0"#,
        r#"token_requests_total{outcome="throttled"} 0"#,
        r#"http_server_active_requests{http_request_method="POST",url_scheme="http"} 0"#,
        r#"log_lines_dropped_total{reason="queue_full"} 0"#,
        r#"http_requests_shed_total{limit="in_flight"} 0"#,
        r#"http_requests_shed_total{limit="scrapes"} 0"#,
    ] {
        let name = series.rsplit_once(' ').map_or(series, |(n, _)| n);
        assert!(has(&a_text, name), "A: no {series}:\n{a_text}");
    }
    for outcome in [
        "ok",
        "rejected",
        "timeout",
        "connection_error",
        "bad_status",
        "protocol_error",
    ] {
        for series in [
            format!(r#"provider_attempt_duration_seconds_count{{outcome="{outcome}"}}"#),
            format!(r#"provider_attempts_total{{outcome="{outcome}"}}"#),
        ] {
            assert!(has(&b_text, &series), "B: no {series} at 0:\n{b_text}");
        }
    }
    for series in [
        r#"provider_gave_up_total{reason="retry_budget_exhausted"}"#,
        r#"provider_failures_total{kind="circuit_open"}"#,
        r#"provider_circuit_state{state="half_open"}"#,
        r#"otel_sdk_processor_span_processed_total{otel_component_type="batching_span_processor",otel_component_name="batching_span_processor/0",error_type="queue_full"}"#,
    ] {
        assert!(has(&b_text, series), "B: no {series} at 0:\n{b_text}");
    }
}

/// RFC 9110 negotiation: `q=0` is "not acceptable", the highest q wins, a response that
/// varies by `Accept` says so, and nothing acceptable is a 406 that names what is.
#[tokio::test]
async fn the_format_is_negotiated_by_q_value_and_says_it_varies() {
    let a = InProcess::a(&[]).await;
    for (accept, content_type) in [
        (
            "application/openmetrics-text;q=0, text/plain",
            PROMETHEUS_TYPE,
        ),
        (
            "text/plain;q=1, application/openmetrics-text;q=0.1",
            PROMETHEUS_TYPE,
        ),
        ("application/json;q=0, */*", OPENMETRICS_TYPE),
        ("text/html,*/*;q=0.8", "application/json"),
    ] {
        let reply = metrics_with(&a, "", Some(accept)).await;
        assert_eq!(reply.status, 200, "{accept}");
        assert_eq!(reply.header("content-type"), content_type, "{accept}");
        assert_eq!(reply.header("vary"), "accept", "{accept}");
    }
    let refused = metrics_with(&a, "", Some("image/png, */*;q=0")).await;
    assert_eq!(refused.status, 406);
    assert!(
        refused.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("application/openmetrics-text")),
        "{}",
        refused.text
    );
}

/// OpenMetrics as its spec and the OpenTelemetry–Prometheus compatibility rules write it:
/// `target_info` first, each family's `# TYPE`, `# UNIT` (for a unit suffix), `# HELP` in
/// that order, and canonical `le` values. (That a real parser reads it is the `tools`
/// target's check.)
#[tokio::test]
async fn openmetrics_metadata_comes_in_order_with_units_and_canonical_buckets() {
    let a = Service::a(&[]);
    a.token(system_tests::demo_login(), None).await;
    let text = metrics_with(&a, "", Some(SCRAPE_ACCEPT)).await.text;
    assert!(text.starts_with("# TYPE target info\n"), "{text}");
    let family = "http_server_request_duration_seconds";
    let at = |line: &str| {
        text.find(line)
            .unwrap_or_else(|| panic!("no {line:?} in {text}"))
    };
    let (kind, unit, help) = (
        at(&format!("# TYPE {family} histogram\n")),
        at(&format!("# UNIT {family} seconds\n")),
        at(&format!("# HELP {family} ")),
    );
    assert!(kind < unit && unit < help, "TYPE, UNIT, HELP: {text}");
    assert!(
        text.contains(r#"le="1.0"}"#) && text.contains(r#"le="10.0"}"#),
        "canonical le: {text}"
    );
    assert!(!text.contains(r#"le="1"}"#) && !text.contains(r#"le="10"}"#));
    assert!(
        !text.contains("# UNIT http_requests "),
        "a counter of requests has no unit: {text}"
    );
}

/// Buckets follow the OpenTelemetry HTTP advice around a second, where B's timeout sits: an
/// answer just over 1 s is not read as 2.44 s.
#[tokio::test]
async fn duration_buckets_have_the_advised_boundaries_around_a_second() {
    let a = Service::a(&[]);
    a.token(system_tests::demo_login(), None).await;
    let text = metrics_with(&a, "?format=prometheus", None).await.text;
    for le in ["0.75", "1", "1.25", "1.5", "2", "2.5"] {
        assert!(
            text.contains(&format!(
                r#"http_server_request_duration_seconds_bucket{{http_request_method="POST",http_route="/token",http_response_status_code="200",url_scheme="http",network_protocol_version="1.1",le="{le}"}}"#
            )),
            "le={le}: {text}"
        );
    }
}

/// Process CPU time keeps its fraction of a second (the Go and Python clients' way): a
/// service that has served requests has spent more than zero.
#[tokio::test]
async fn process_cpu_seconds_are_fractional() {
    let a = Service::a(&[]);
    for _ in 0..200 {
        a.token(system_tests::demo_login(), None).await;
    }
    let cpu = a.series("process_cpu_seconds_total").await;
    assert!(cpu > 0.0 && cpu < 60.0, "process_cpu_seconds_total {cpu}");
}

/// Resource attributes from `OTEL_RESOURCE_ATTRIBUTES`, and the name from
/// `OTEL_SERVICE_NAME`, are labels of `target_info`; the same name is on every log line.
#[tokio::test]
async fn target_info_has_every_resource_attribute_and_the_one_service_name() {
    let a = Service::start(
        system_tests::Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,service.namespace=shop",
            ),
            ("OTEL_SERVICE_NAME", "custom-a"),
        ],
    );
    let reply = a.token(system_tests::demo_login(), None).await;
    let text = metrics_with(&a, "?format=prometheus", None).await.text;
    let info = text
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .unwrap_or_else(|| panic!("no target_info: {text}"));
    for label in [
        r#"deployment_environment_name="prod""#,
        r#"service_namespace="shop""#,
        r#"service_name="custom-a""#,
        r#"service_version=""#,
        r#"service_instance_id=""#,
    ] {
        assert!(info.contains(label), "{label} in {info}");
    }
    let line = a.logs.request_line(reply.request_id());
    assert_eq!(line["service"], "custom-a", "one name everywhere");
}

/// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` replaces the known methods, as the HTTP
/// conventions ask: a method it names keeps its name, one it leaves out is `_OTHER`.
#[tokio::test]
async fn the_known_methods_can_be_overridden() {
    let a = Service::start(
        system_tests::Kind::A,
        "127.0.0.1:0",
        &[],
        &[("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,POST,BREW")],
    );
    for method in ["BREW", "PUT"] {
        let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        system_tests::send(system_tests::client().request(verb, a.at("/health"))).await;
    }
    let text = metrics_with(&a, "?format=prometheus", None).await.text;
    assert!(
        text.contains(r#"http_requests_total{method="BREW",route="/health",status="405"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="_OTHER",route="/health",status="405"} 1"#),
        "PUT is not in the list: {text}"
    );
}
