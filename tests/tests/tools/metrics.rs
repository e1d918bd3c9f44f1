//! `/metrics` in both formats is valid: the text format by `promtool check metrics`,
//! OpenMetrics by the OpenMetrics parser of PyPI's `prometheus_client` (promtool has no
//! OpenMetrics parser), and both by a real Prometheus scraping them (`prometheus.rs`,
//! `exemplars.rs`). Checked when the tools are installed, and always in CI.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;
use system_tests::prometheus::SCRAPE_ACCEPT;
use system_tests::{Service, metrics_with};

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
