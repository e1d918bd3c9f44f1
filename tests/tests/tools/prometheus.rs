//! A real Prometheus scrapes both services while the walkthrough runs, and its HTTP API
//! shows what the walkthrough implies.

use serde_json::json;
use system_tests::prometheus::{Prometheus, scrape_config};
use system_tests::{Service, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_services_and_sees_the_walkthrough() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &["--provider-timeout-ms", "200"]);
    let Some(prometheus) = Prometheus::start(&scrape_config(&[
        ("service-a", a.addr),
        ("service-b", b.addr),
    ])) else {
        return;
    };
    let action = b.at("/protected-action");

    a.token(system_tests::demo_login(), None).await;
    post_json(&action, system_tests::demo_login(), None).await;
    post_json(
        &action,
        json!({"username": "divya", "password": "wrong"}),
        None,
    )
    .await;
    post_json(
        &action,
        system_tests::demo_login_with(json!({"delay_ms": 400})),
        None,
    )
    .await;

    prometheus
        .wait_for_value(r#"up{job="service-a"}"#, 1.0)
        .await;
    prometheus
        .wait_for_value(r#"up{job="service-b"}"#, 1.0)
        .await;
    prometheus
        .wait_for_value(
            r#"sum(http_requests_total{job="service-b",route="/protected-action"})"#,
            3.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"sum(http_requests_total{job="service-b",route="/protected-action",status="503"})"#,
            1.0,
        )
        .await;
    // A issued a token directly and through B. The two attempts B gave up on were
    // abandoned by A when B closed the connection, and counted as 499.
    prometheus
        .wait_for_value(
            r#"token_requests_total{job="service-a",outcome="issued"}"#,
            2.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"sum(http_requests_total{job="service-a",route="/token",status="499"})"#,
            2.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"token_requests_total{job="service-a",outcome="invalid_credentials"}"#,
            1.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"provider_attempts_total{job="service-b",outcome="ok"}"#,
            1.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"provider_attempts_total{job="service-b",outcome="rejected"}"#,
            1.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"provider_attempts_total{job="service-b",outcome="timeout"}"#,
            2.0,
        )
        .await;
    prometheus
        .wait_for_value(
            r#"provider_failures_total{job="service-b",kind="timeout"}"#,
            1.0,
        )
        .await;
}
