//! Breaking A on purpose, under load: killed, frozen, flaky, slow at the timeout's edge, and
//! B's breaker, budget and deadline doing their jobs. Real processes, loopback only, every
//! load bounded in time. The fault endpoint itself is `endpoint`.
//!
//! `delays_around_the_timeout_give_only_200_or_503_never_after_the_deadline` runs A and B
//! inside the test process (it reads only statuses and times); the others kill or freeze A's
//! process, read `/proc`, or read log lines or `/metrics` counts.

mod endpoint;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use system_tests::stub::{StubProvider, status_reply, token_reply};
use system_tests::{InProcess, Kind, Service, client, eventually, get, post_json, send};

/// `workers` loops calling `url` with `body` for `duration`; every reply's status and time.
async fn load(
    url: String,
    workers: usize,
    duration: Duration,
    body: Value,
) -> Vec<(u16, Duration)> {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move {
                let mut replies = Vec::new();
                while Instant::now() < until {
                    let reply = post_json(&url, body.clone(), None).await;
                    replies.push((reply.status, reply.elapsed));
                }
                replies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load worker"));
    }
    all
}

/// Every reply is a 200 or a 503 (never a 500 or anything else), none slower than `bound`.
fn assert_only_200_or_503_within(replies: &[(u16, Duration)], bound: Duration) {
    assert!(!replies.is_empty());
    for (status, elapsed) in replies {
        assert!(
            *status == 200 || *status == 503,
            "status {status} under load"
        );
        assert!(
            *elapsed <= bound,
            "a reply took {elapsed:?}, over {bound:?}"
        );
    }
}

/// Waits for B's first 200 (bounded by `within`), then checks the next 20 calls all succeed.
async fn assert_recovers_within(b: &Service, within: Duration) {
    eventually("B's first 200")
        .within(within)
        .every(Duration::from_millis(20))
        .until_async(async || {
            let status = b
                .protected_action(system_tests::demo_login(), None)
                .await
                .status;
            if status == 200 { Ok(()) } else { Err(status) }
        })
        .await;
    for _ in 0..20 {
        assert_eq!(
            b.protected_action(system_tests::demo_login(), None)
                .await
                .status,
            200
        );
    }
}

fn proc_value(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field in /proc status")
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_under_load_gives_only_200_or_503_and_recovers() {
    let a = Service::a(&[]);
    let addr = a.addr.to_string();
    let b = Service::b(&a.url(), &["--breaker-cooldown-ms", "200"]);
    let running = tokio::spawn(load(
        b.at("/protected-action"),
        8,
        Duration::from_millis(1500),
        system_tests::demo_login(),
    ));

    // Under way: A has answered some of B's calls.
    a.logs
        .wait_for_n(16, |l| l["endpoint"] == "POST /token" && l["status"] == 200);
    drop(a); // SIGKILL, mid-load
    let replies = running.await.expect("load");

    // The default deadline is 2050 ms; allow a shared machine some scheduling slack.
    assert_only_200_or_503_within(&replies, Duration::from_millis(2050 + 500));
    assert!(replies.iter().any(|r| r.0 == 200) && replies.iter().any(|r| r.0 == 503));
    let _a = Service::start(Kind::A, &addr, &[], &[]);
    assert_recovers_within(&b, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_under_load_gives_503s_within_the_deadline_with_bounded_resources() {
    let a = Service::a(&[]);
    let b = Service::b(
        &a.url(),
        &[
            "--provider-timeout-ms",
            "200",
            "--breaker-cooldown-ms",
            "200",
        ],
    );
    load(
        b.at("/protected-action"),
        4,
        Duration::from_millis(200),
        system_tests::demo_login(),
    )
    .await;
    let (rss_before, files_before) = (proc_value(b.pid(), "VmRSS:"), open_files(b.pid()));

    a.signal("STOP");
    let replies = load(
        b.at("/protected-action"),
        8,
        Duration::from_millis(1500),
        system_tests::demo_login(),
    )
    .await;
    let (rss_after, files_after) = (proc_value(b.pid(), "VmRSS:"), open_files(b.pid()));
    a.signal("CONT");

    // Deadline: 2 × 200 ms + 10 ms backoff + 40 ms margin = 450 ms.
    assert_only_200_or_503_within(&replies, Duration::from_millis(450 + 400));
    assert!(replies.iter().filter(|r| r.0 == 503).count() > replies.len() / 2);
    assert!(
        files_after <= files_before + 32,
        "open files {files_before} → {files_after}"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "RSS {rss_before} kB → {rss_after} kB"
    );
    assert_recovers_within(&b, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_provider_gets_at_most_the_retry_budget_on_top() {
    let a = Service::a(&["--failure-rate", "0.5"]);
    let b = Service::b(&a.url(), &["--breaker-threshold", "0"]);

    let replies = load(
        b.at("/protected-action"),
        4,
        Duration::from_millis(1500),
        system_tests::demo_login(),
    )
    .await;

    assert_only_200_or_503_within(&replies, Duration::from_secs(3));
    let calls = get(&b.at("/metrics")).await.json["protected_action_requests"]
        .as_u64()
        .expect("count");
    let reached_a = get(&a.at("/metrics")).await.json["token_requests"]
        .as_u64()
        .expect("count");
    // Budget: retries ≤ 20% of calls + 1/s × 10 s.
    let bound = calls as f64 * 1.2 + 10.0;
    assert!(
        reached_a as f64 <= bound,
        "A got {reached_a} calls for {calls} requests to B (bound {bound})"
    );
    let exhausted = get(&b.at("/metrics")).await.json["retry_budget_exhausted"]
        .as_u64()
        .expect("count");
    assert!(
        exhausted > 0,
        "with half of A's answers failing, the budget must have run out"
    );
    b.logs
        .wait_for(|l| l["event"] == "provider_gave_up" && l["reason"] == "retry_budget_exhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_around_the_timeout_give_only_200_or_503_never_after_the_deadline() {
    let a = InProcess::a(&[]).await;
    let b = InProcess::b(&a.url(), &["--provider-timeout-ms", "300"]).await;

    let tasks: Vec<_> = [250u64, 290, 300, 310, 350]
        .into_iter()
        .flat_map(|delay| [delay, delay])
        .map(|delay| {
            let body = system_tests::demo_login_with(json!({"delay_ms": delay}));
            tokio::spawn(b.protected_action(body, None))
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        let reply = task.await.expect("request");
        replies.push((reply.status, reply.elapsed));
    }

    // Deadline: 2 × 300 ms + 10 ms + 40 ms = 650 ms.
    assert_only_200_or_503_within(&replies, Duration::from_millis(650 + 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drops_work_once_the_callers_deadline_has_passed() {
    let a = Service::a(&[]);
    let slow = system_tests::demo_login_with(json!({"delay_ms": 3000}));

    let reply = send(
        client()
            .post(a.at("/token"))
            .header("x-request-timeout-ms", "200")
            .json(&slow),
    )
    .await;
    assert_eq!(reply.status, 504);
    assert!(
        reply.elapsed < Duration::from_secs(1),
        "stopped at the deadline: {:?}",
        reply.elapsed
    );
    let expired = send(
        client()
            .post(a.at("/token"))
            .header("x-request-timeout-ms", "0")
            .json(&system_tests::demo_login()),
    )
    .await;
    assert_eq!(expired.status, 504, "work already expired is refused");
    let metrics = get(&a.at("/metrics")).await.json;
    assert_eq!(metrics["token_requests_by_outcome"]["deadline_exceeded"], 2);
    a.logs.wait_for(|l| l["event"] == "deadline_exceeded");

    // Through B: once B gives up, A holds nothing in flight.
    let b = Service::b(
        &a.url(),
        &["--provider-timeout-ms", "200", "--provider-attempts", "1"],
    );
    let gave_up = b.protected_action(slow, None).await;
    assert_eq!(gave_up.status, 503);
    eventually("A to hold nothing in flight once B gave up")
        .within(Duration::from_secs(1))
        .every(Duration::from_millis(20))
        .until_async(async || {
            let text = get(&a.at("/metrics?format=prometheus")).await.text;
            let idle = text.contains(
                r#"http_server_active_requests{http_request_method="POST",url_scheme="http"} 0"#,
            );
            if idle { Ok(()) } else { Err(text) }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_probes_and_closes() {
    let stub = StubProvider::start(
        status_reply("503 Service Unavailable"),
        Duration::from_secs(5),
    );
    let b = Service::b(
        &stub.url,
        &[
            "--provider-attempts",
            "1",
            "--breaker-threshold",
            "3",
            "--breaker-cooldown-ms",
            "500",
        ],
    );
    let url = b.at("/protected-action");

    for _ in 0..3 {
        assert_eq!(
            post_json(&url, system_tests::demo_login(), None)
                .await
                .status,
            503
        );
    }
    assert_eq!(stub.seen(), 3);
    b.logs.wait_for(|l| l["event"] == "circuit_opened");
    let fast = post_json(&url, system_tests::demo_login(), Some("while-open")).await;
    assert_eq!(fast.status, 503);
    assert!(
        fast.json["details"]
            .as_str()
            .unwrap_or_default()
            .starts_with("circuit open"),
        "{}",
        fast.text
    );
    assert!(!fast.header("retry-after").is_empty());
    let served_in = b.logs.request_line("while-open")["latency_ms"]
        .as_f64()
        .expect("latency");
    assert!(
        served_in < 10.0,
        "open breaker answers at once: {served_in} ms"
    );
    assert_eq!(stub.seen(), 3, "A is not called while open");
    let gauge = get(&b.at("/metrics?format=prometheus")).await.text;
    assert!(
        gauge.contains(r#"provider_circuit_state{state="open"} 1"#),
        "{gauge}"
    );

    stub.set_reply(token_reply());
    // The probe after the cool-down closes the circuit.
    eventually("the probe after the cool-down to close the circuit")
        .within(Duration::from_secs(3))
        .every(Duration::from_millis(50))
        .until_async(async || {
            let reply = post_json(&url, system_tests::demo_login(), None).await;
            if reply.status == 200 {
                Ok(())
            } else {
                Err(reply.text)
            }
        })
        .await;
    assert_eq!(stub.seen(), 4, "exactly one probe reached A");
    b.logs.wait_for(|l| l["event"] == "circuit_half_open");
    b.logs.wait_for(|l| l["event"] == "circuit_closed");
    assert_eq!(
        post_json(&url, system_tests::demo_login(), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn five_failed_calls_in_a_row_open_the_breaker_whatever_succeeded_before() {
    let mut a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    assert_eq!(
        b.protected_action(system_tests::demo_login(), None)
            .await
            .status,
        200
    );
    a.stop();
    for n in 1..=5 {
        let reply = b.protected_action(system_tests::demo_login(), None).await;
        assert_eq!(reply.status, 503, "call {n}: {}", reply.text);
    }
    b.logs.wait_for(|l| l["event"] == "circuit_opened");
    let fast = b.protected_action(system_tests::demo_login(), None).await;
    assert_eq!(fast.status, 503);
    let details = fast.json["details"].as_str().unwrap_or_default();
    assert!(
        details.starts_with("circuit open: 5 calls in a row failed; "),
        "{}",
        fast.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spaced_around_the_keep_alive_timeout_never_fail() {
    // The provider closes idle connections after 150 ms; B drops its own after 100 ms.
    let stub = StubProvider::start(token_reply(), Duration::from_millis(150));
    let b = Service::b(&stub.url, &["--pool-idle-timeout-ms", "100"]);

    for gap in [60u64, 90, 120, 150, 180].repeat(6) {
        let reply = b.protected_action(system_tests::demo_login(), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }

    let attempts = get(&b.at("/metrics")).await.json["provider_attempts_by_outcome"].clone();
    assert_eq!(attempts["ok"], 30);
    assert_eq!(
        attempts["connection_error"], 0,
        "no stale connection was reused: {attempts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_provider_closed_is_retried_once_on_a_fresh_one() {
    let stub = StubProvider::start(token_reply(), Duration::from_secs(5));
    stub.hang_up_on_reuse();
    let b = Service::b(&stub.url, &[]);

    for n in 0..8 {
        let reply = b
            .protected_action(system_tests::demo_login(), Some(&format!("reuse-{n}")))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    // The first call opened a connection; each later one tried the pooled connection, lost
    // it, and succeeded on its one retry.
    let attempts = get(&b.at("/metrics")).await.json["provider_attempts_by_outcome"].clone();
    assert_eq!(attempts["ok"], 8, "{attempts}");
    assert_eq!(attempts["connection_error"], 7, "{attempts}");
    for n in 1..8 {
        let failed = b.logs.failed_attempts(&format!("reuse-{n}"));
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["error"], "connection_error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_hanging_up_on_b_never_open_its_breaker() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &["--breaker-threshold", "3"]);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    let slow = system_tests::demo_login_with(json!({"delay_ms": 300}));

    for _ in 0..10 {
        let gave_up = impatient
            .post(b.at("/protected-action"))
            .json(&slow)
            .send()
            .await;
        assert!(gave_up.is_err(), "the caller hangs up before B answers");
    }
    let reply = b
        .protected_action(system_tests::demo_login(), Some("after-hang-ups"))
        .await;

    assert_eq!(
        reply.status, 200,
        "A is healthy; the breaker must still be closed: {}",
        reply.text
    );
    b.sync_logs().await;
    assert!(
        b.logs
            .matching(|l| l["event"] == "circuit_opened")
            .is_empty()
    );
}
