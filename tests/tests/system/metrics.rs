//! `/metrics` content negotiation: JSON for curl, OpenMetrics for a Prometheus scrape (which
//! asks for it first), the text format for a client that asks for `text/plain`; each valid:
//! the text format by `promtool check metrics`, OpenMetrics by the OpenMetrics parser of
//! PyPI's `prometheus_client` (promtool has no OpenMetrics parser), and both by a real
//! Prometheus scraping them (`prometheus.rs`, `exemplars.rs`). Checked when the tools are
//! installed, and always in CI.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;
use system_tests::{Service, client, send};

const SCRAPE_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics_with(service: &Service, query: &str, accept: Option<&str>) -> system_tests::Reply {
    let mut request = client().get(service.at(&format!("/metrics{query}")));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    send(request).await
}

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

/// Runs `promtool check metrics` on `text`. Without promtool the check is skipped visibly,
/// except in CI (`CI=true`), where a missing promtool fails the test.
fn promtool_check(text: &str) {
    if !system_tests::prometheus::tool_available("promtool") {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let output = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// Parses `text` with the OpenMetrics 1.0 parser of PyPI's `prometheus_client`, which
/// checks the whole grammar, exemplars and `# EOF` included. Skipped with a note when it is
/// not installed, except in CI.
fn openmetrics_check(text: &str) {
    const PARSE: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
families = list(text_string_to_metric_families(sys.stdin.read()))\n\
exemplars = sum(1 for f in families for s in f.samples if s.exemplar)\n\
print(len(families), exemplars)\n";
    if !system_tests::tools::python_module("prometheus_client", "prometheus-client") {
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("python3 ran");
    assert!(
        output.status.success(),
        "not OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    let exemplars: usize = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("counts");
    assert!(exemplars > 0, "sampled requests leave exemplars: {text}");
}

#[tokio::test]
async fn promtool_finds_nothing_wrong_with_either_service() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &["--provider-timeout-ms", "200"]);
    let url = b.at("/protected-action");
    system_tests::post_json(&url, system_tests::demo_login(), None).await;
    system_tests::post_json(
        &url,
        system_tests::demo_login_with(json!({"delay_ms": 400})),
        None,
    )
    .await;

    for service in [&a, &b] {
        let reply = metrics_with(service, "?format=prometheus", None).await;
        promtool_check(&reply.text);
        let reply = metrics_with(service, "", Some(SCRAPE_ACCEPT)).await;
        openmetrics_check(&reply.text);
        for series in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "build_info{",
            "target_info{",
        ] {
            assert!(reply.text.contains(series), "{series}: {}", reply.text);
        }
    }
    let b_text = metrics_with(&b, "?format=prometheus", None).await.text;
    assert!(
        b_text.contains(r#"provider_attempts_total{outcome="timeout"} 2"#),
        "{b_text}"
    );
    assert!(
        b_text.contains(r#"provider_failures_total{kind="timeout"} 1"#),
        "{b_text}"
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
