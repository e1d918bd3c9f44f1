//! `/metrics` content negotiation: JSON for curl, OpenMetrics for a Prometheus scrape (which
//! asks for it first), the text format for a client that asks for `text/plain`; series
//! labelled by route, exemplars only for sampled requests, every known series exported at 0
//! from the first scrape. That both formats are valid, by promtool and an OpenMetrics
//! parser, is checked in the `tools` target (`metrics.rs` there).

use system_tests::prometheus::SCRAPE_ACCEPT;
use system_tests::{Service, metrics_with};

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
    a.token(system_tests::demo_login(), None).await;

    let text = metrics_with(&a, "?format=prometheus", None).await.text;

    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/token",status="200"} 1"#),
        "{text}"
    );
    assert!(!text.contains("/x1"));
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/token",http_response_status_code="200",url_scheme="http",le="0.0001"}"#),
        "the convention's name and labels, sub-millisecond buckets: {text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="404",url_scheme="http",le="+Inf"} 3"#),
        "no http_route when no route matched: {text}"
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
        reply.header("traceresponse").ends_with("-00"),
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
        "http_requests_shed_total 0",
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
        "provider_circuit_state",
        r#"otel_sdk_processor_span_processed_total{otel_component_type="batching_span_processor",otel_component_name="batching_span_processor/0",error_type="queue_full"}"#,
    ] {
        assert!(has(&b_text, series), "B: no {series} at 0:\n{b_text}");
    }
}
