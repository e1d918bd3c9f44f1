//! From a slow bucket to its trace: a real Prometheus with exemplar storage scrapes both
//! services (OpenMetrics, as it asks for), and an exemplar it stored on the server duration
//! histogram names a trace that is also the `trace_id` of a JSON log line and of spans the
//! services exported to the test's OTLP receiver. Timed-out attempts read as about 1 s.

use std::time::Duration;

use serde_json::json;
use system_tests::otlp::OtlpReceiver;
use system_tests::prometheus::{Prometheus, scrape_config};
use system_tests::{Kind, Service, eventually, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exemplar_leads_from_a_bucket_to_the_log_line_and_the_trace() {
    let otlp = OtlpReceiver::start();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let a = Service::start(Kind::A, "127.0.0.1:0", &[], &env);
    let b = Service::start(Kind::B, "127.0.0.1:0", &["--provider-url", &a.url()], &env);
    let Some(prometheus) = Prometheus::start(&scrape_config(&[
        ("service-a", a.addr),
        ("service-b", b.addr),
    ])) else {
        return;
    };
    let action = b.at("/protected-action");
    for n in 0..5 {
        let reply = post_json(
            &action,
            system_tests::demo_login(),
            Some(&format!("exemplar-{n}")),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    // The lab's timeout: two attempts cut at 1 s each.
    let slow = post_json(
        &action,
        system_tests::demo_login_with(json!({"delay_ms": 2000})),
        Some("exemplar-timeout"),
    )
    .await;
    assert_eq!(slow.status, 503);

    let exemplars = eventually("an exemplar over 1 s stored")
        .every(Duration::from_millis(200))
        .until_async(async || {
            let found = prometheus
                .query_exemplars(
                    r#"http_server_request_duration_seconds_bucket{job="service-b"}"#,
                    300,
                )
                .await;
            if found.iter().any(|(_, _, value)| *value > 1.0) {
                Ok(found)
            } else {
                Err(found)
            }
        })
        .await;
    let (series, labels, value) = exemplars
        .iter()
        .find(|(_, _, value)| *value > 1.0)
        .expect("the slow call's exemplar");
    assert_eq!(series["http_route"], "/protected-action", "{series}");
    assert_eq!(series["http_response_status_code"], "503");
    assert!(
        *value > 2.0 && *value < 2.2,
        "the 503 after two 1 s attempts: {value}"
    );
    let trace_id = labels["trace_id"].as_str().expect("a trace id").to_owned();
    assert_eq!(trace_id.len(), 32);

    let line = b.logs.request_line("exemplar-timeout");
    assert_eq!(
        line["trace_id"],
        trace_id.as_str(),
        "the log line of that request"
    );
    assert_eq!(line["span_id"], labels["span_id"], "and of its server span");
    let spans = otlp.wait_for_trace(&trace_id, 7);
    assert!(
        spans.iter().any(|s| s.service == "service-a"),
        "the trace crosses to A"
    );

    // Each timed-out attempt is an exemplar of B's attempt durations, naming the attempt's
    // own span (the span its `provider_call_failed` line names); the delay the caller asked
    // A for is one of A's `token_delay_seconds`, naming A's span in the same trace.
    let wait_for_exemplar = async |promql: &str| {
        eventually(format!("an exemplar of the trace on {promql}"))
            .every(Duration::from_millis(200))
            .until_async(async || {
                let found = prometheus.query_exemplars(promql, 300).await;
                found
                    .into_iter()
                    .find(|(_, labels, _)| labels["trace_id"] == trace_id.as_str())
                    .map(|(_, labels, value)| (labels, value))
            })
            .await
    };
    let (attempt, value) = wait_for_exemplar(
        r#"provider_attempt_duration_seconds_bucket{job="service-b",outcome="timeout"}"#,
    )
    .await;
    assert!((1.0..1.1).contains(&value), "a 1 s attempt: {value}");
    let failed: Vec<String> = b
        .logs
        .wait_for_n(2, |l| {
            l["event"] == "provider_call_failed" && l["request_id"] == "exemplar-timeout"
        })
        .iter()
        .map(|l| l["span_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        failed
            .iter()
            .any(|span| attempt["span_id"] == span.as_str()),
        "the exemplar names an attempt's span: {attempt} vs {failed:?}"
    );
    assert_ne!(attempt["span_id"], labels["span_id"], "not B's server span");
    let (delay, value) = wait_for_exemplar(r#"token_delay_seconds_bucket{job="service-a"}"#).await;
    assert!((value - 2.0).abs() < 1e-9, "the 2 s asked for: {value}");
    let a_lines = a.logs.wait_for_n(2, |l| {
        l["request_id"] == "exemplar-timeout" && l.get("endpoint").is_some()
    });
    assert!(
        a_lines.iter().any(|l| l["span_id"] == delay["span_id"]),
        "the exemplar names one of A's request spans: {delay} vs {a_lines:?}"
    );

    // Every fast call left an exemplar too, in a sub-millisecond to few-millisecond bucket,
    // each naming one of the five requests' traces.
    let fast: Vec<_> = exemplars.iter().filter(|(_, _, v)| *v < 0.1).collect();
    assert!(!fast.is_empty(), "{exemplars:?}");
    for (_, labels, _) in fast {
        let trace = labels["trace_id"].as_str().expect("trace id");
        b.logs
            .wait_for(|l| l["trace_id"] == trace && l.get("endpoint").is_some());
    }

    // A timed-out attempt reads as about 1 s: a bucket boundary sits just above the timeout.
    // Over the cumulative buckets: rate() sees no increase in a series whose first scrape
    // already held both attempts.
    let p99 = r#"histogram_quantile(0.99, sum by (le) (http_client_request_duration_seconds_bucket{job="service-b",error_type="timeout"}))"#;
    let value = eventually("the timeout histogram in Prometheus")
        .every(Duration::from_millis(200))
        .until_async(async || {
            let value = prometheus.query(p99).await.first().map(|(_, v)| *v);
            value.filter(|v| v.is_finite())
        })
        .await;
    assert!(
        (1.0..1.1).contains(&value),
        "p99 of timed-out attempts: {value}"
    );

    // target_info carries the same service.instance.id as the exported spans.
    let target = prometheus.query(r#"target_info{job="service-b"}"#).await;
    let instance = target[0].0["service_instance_id"]
        .as_str()
        .expect("instance id")
        .to_owned();
    let span = otlp.wait_for(1, |s| s.service == "service-b")[0].clone();
    assert_eq!(span.resource["service.instance.id"], instance);
}
