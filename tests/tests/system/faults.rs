//! Breaking A on purpose, under load: killed, frozen, flaky, slow at the timeout's edge, and
//! B's breaker, budget and deadline doing their jobs. Real processes, loopback only, every
//! load bounded in time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use system_tests::stub::{StubProvider, status_reply, token_reply};
use system_tests::{Kind, Service, client, eventually, get, post_json, send};

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
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &["--provider-timeout-ms", "300"]);

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

#[tokio::test]
async fn the_eleventh_wrong_password_is_throttled_for_that_user_only() {
    let dir = std::env::temp_dir().join(format!("throttle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let users = dir.join("users");
    std::fs::write(&users, "alice:wonderland\n").expect("users file");
    let a = Service::a(&["--users-file", users.to_str().expect("path")]);
    let b = Service::b(&a.url(), &[]);
    let wrong = json!({"username": "divya", "password": "guess"});

    for _ in 0..10 {
        assert_eq!(a.token(wrong.clone(), None).await.status, 401);
    }
    let throttled = a.token(wrong, None).await;

    assert_eq!(throttled.status, 429);
    assert!(
        throttled
            .header("retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s > 0)
    );
    assert!(throttled.json["error"].as_str().is_some());
    assert_eq!(
        a.token(system_tests::demo_login(), None).await.status,
        429,
        "even the right password waits"
    );
    let alice = json!({"username": "alice", "password": "wonderland"});
    assert_eq!(
        a.token(alice, None).await.status,
        200,
        "other users are unaffected"
    );
    let through_b = b.protected_action(system_tests::demo_login(), None).await;
    assert_eq!(through_b.status, 429, "B passes the 429 through");
    assert!(!through_b.header("retry-after").is_empty());
    assert_eq!(
        get(&a.at("/metrics")).await.json["token_requests_by_outcome"]["throttled"],
        3
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

/// A caller can ask A for a failure (`fail_status`) only when A was started to allow it: no
/// caller can make a production A fail at will.
#[tokio::test]
async fn fail_status_is_honoured_only_when_a_allows_it() {
    let body = system_tests::demo_login_with(json!({"fail_status": 502}));
    let locked = Service::a(&[]);
    let refused = locked.token(body.clone(), None).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("--allow-fail-status")),
        "{}",
        refused.text
    );

    let open = Service::a(&["--allow-fail-status"]);
    let injected = open.token(body, None).await;
    assert_eq!(injected.status, 502, "{}", injected.text);
    assert_eq!(injected.json["error"], "injected failure");
}

/// The fault endpoint (`--fault-listen`, loopback only) switches faults on and off at run
/// time, and the gauge says which is on.
#[tokio::test]
async fn faults_switch_on_and_off_at_run_time_on_loopback_only() {
    let a = Service::a(&["--fault-listen", "127.0.0.1:0"]);
    let line = a.logs.wait_for(|l| l["event"] == "fault_endpoint");
    let faults = format!("http://{}/faults", line["addr"].as_str().expect("addr"));

    let on = client()
        .put(&faults)
        .json(&json!({"scenario": "a-flaky", "failure_rate": 1.0}))
        .send()
        .await
        .expect("switched on");
    assert_eq!(on.status(), 200);
    let failed = a.token(system_tests::demo_login(), None).await;
    assert_eq!(failed.status, 503, "{}", failed.text);
    let metrics = get(&a.at("/metrics?format=prometheus")).await.text;
    assert!(
        metrics.contains(r#"fault_injection_active{scenario="a-flaky"} 1"#),
        "{metrics}"
    );
    a.logs
        .wait_for(|l| l["event"] == "fault_injected" && l["scenario"] == "a-flaky");

    // What a web page could send (DNS rebinding, or a script on any site): refused.
    let port = line["addr"]
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("port");
    for (header, value) in [
        ("host", "evil.example.com".to_owned()),
        ("host", format!("evil.example.com:{port}")),
        ("origin", "http://evil.example.com".to_owned()),
    ] {
        let refused = client()
            .put(&faults)
            .header(header, value.as_str())
            .json(&json!({"scenario": "a-slow", "extra_latency_ms": 300}))
            .send()
            .await
            .expect("sent");
        assert_eq!(refused.status(), 403, "{header}: {value}");
    }
    // The same, in what a client can write by hand: a second Host after a local one, and a
    // target in absolute form naming another host.
    let body = r#"{"scenario":"a-slow","extra_latency_ms":300}"#;
    for head in [
        format!("PUT /faults HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example.com\r\n"),
        format!("PUT http://evil.example.com/faults HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
    ] {
        let request = format!(
            "{head}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = raw_exchange(&format!("127.0.0.1:{port}"), &request);
        assert!(answer.starts_with("HTTP/1.1 403"), "{head:?}: {answer}");
    }
    let still = client().get(&faults).send().await.expect("asked");
    let still: serde_json::Value = still.json().await.expect("json");
    assert_eq!(
        still["injected"]["scenario"], "a-flaky",
        "unchanged: {still}"
    );

    let refused = client()
        .put(&faults)
        .json(&json!({"scenario": "Not A Name"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 400);

    let off = client().delete(&faults).send().await.expect("switched off");
    assert_eq!(off.status(), 200);
    assert_eq!(a.token(system_tests::demo_login(), None).await.status, 200);
    let metrics = get(&a.at("/metrics?format=prometheus")).await.text;
    assert!(
        metrics.contains(r#"fault_injection_active{scenario="a-flaky"} 0"#),
        "{metrics}"
    );

    // Down: A's port closes every connection unanswered (a scrape too), until cleared.
    client()
        .put(&faults)
        .json(&json!({"scenario": "a-down", "down": true}))
        .send()
        .await
        .expect("switched on");
    let refused = client().get(a.at("/health")).send().await;
    assert!(refused.is_err(), "A is down: {refused:?}");
    client().delete(&faults).send().await.expect("switched off");
    assert_eq!(get(&a.at("/health")).await.status, 200);

    // Anywhere but loopback, A refuses to start.
    let output = std::process::Command::new(system_tests::binary(Kind::A))
        .args(["--listen", "127.0.0.1:0", "--fault-listen", "0.0.0.0:0"])
        .output()
        .expect("run service-a");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("loopback"), "{said}");
}

/// Writes `request` as it is on a new connection to `addr` and reads the whole answer.
fn raw_exchange(addr: &str, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(system_tests::TIMEOUT))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}
