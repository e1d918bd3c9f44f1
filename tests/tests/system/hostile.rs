//! Hostile and careless clients: each test attacks one bound the services promise (memory,
//! connections, time, label values, login guesses) and reads the
//! process's own memory and metrics. Loopback only; every loop is bounded in count and time.
//! The same attacks at full size (20,000 methods, 200,000 usernames, 3,000 slow connections)
//! are the `heavy` target's, which CI runs.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use system_tests::attack::{
    HEALTHY_LATENCY, assert_unharmed, connect_and_send, read_answer, status_and_body, unread_by,
    wait_for_series,
};
use system_tests::{Kind, Service, client, eventually, load, send};

/// Requests being handled: the series that shows slow requests are under way.
const ACTIVE_POSTS: &str =
    r#"http_server_active_requests{http_request_method="POST",url_scheme="http"}"#;

#[tokio::test]
async fn two_thousand_made_up_methods_and_paths_add_no_series() {
    load::made_up_methods_and_paths_add_no_series(2_000).await;
}

#[tokio::test]
async fn a_small_spray_of_long_usernames_frees_no_attacker() {
    load::long_usernames_neither_free_an_attacker_nor_grow_memory(4_000).await;
}

#[tokio::test]
async fn out_of_file_descriptors_a_still_answers_and_says_why() {
    let mut a = Service::start_under(
        &["prlimit", "--nofile=256:256"],
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[],
    );
    let limits = a.logs.wait_for(|l| l["event"] == "edge_limits");
    assert_eq!(
        limits["max_connections"], 192,
        "256 descriptors less 64 kept free"
    );
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(a.addr).expect("connect"))
        .collect();
    assert_unharmed(&mut a, "300 idle connections at a 256-descriptor limit").await;
    a.logs
        .wait_for(|l| l["event"] == "connection_rejected" && l["kind"] == "evicted");
    drop(idle);
}

#[tokio::test]
async fn sigterm_closes_idle_and_half_sent_connections_at_once() {
    let mut a = Service::a(&[]);
    let _half = connect_and_send(&a, b"POST /tok");
    let _idle = TcpStream::connect(a.addr).expect("connect");
    a.sync_logs().await;
    let started = Instant::now();
    let status = a.stop();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no request was in flight, yet shutdown took {:?} of the 10 s grace",
        started.elapsed()
    );
    assert!(
        a.logs
            .matching(|l| l["event"] == "shutdown_grace_expired")
            .is_empty()
    );
    a.logs.wait_for(|l| l["event"] == "shutdown_complete");
}

#[tokio::test]
async fn requests_cut_off_by_the_grace_are_answered_503_and_logged() {
    let mut a = Service::a(&["--shutdown-grace-ms", "1000"]);
    let slow: Vec<_> = (0..5)
        .map(|n| {
            tokio::spawn(a.token(
                system_tests::demo_login_with(json!({"delay_ms": 3000})),
                Some(&format!("cut-{n}")),
            ))
        })
        .collect();
    // The five requests run together.
    wait_for_series(&a, ACTIVE_POSTS, 5.0).await;
    a.signal("TERM");
    for task in slow {
        let reply = task.await.expect("cut-off request");
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert_eq!(reply.json["error"], "server shutting down: request cut off");
    }
    assert!(a.wait_exit().success());
    let expired = a.logs.wait_for(|l| l["event"] == "shutdown_grace_expired");
    assert_eq!(expired["cut_off"], 5, "{expired}");
    for n in 0..5 {
        let id = format!("cut-{n}");
        assert_eq!(a.logs.request_line(&id)["status"], 503);
        a.logs
            .wait_for(|l| l["event"] == "shutdown_cut_off" && l["request_id"] == id.as_str());
    }
}

#[tokio::test]
async fn b_does_not_log_an_attempt_number_its_caller_made_up() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    let reply = send(
        client()
            .post(b.at("/protected-action"))
            .header("x-attempt", "7")
            .header("x-request-id", "forged-attempt")
            .json(&system_tests::demo_login()),
    )
    .await;
    assert_eq!(reply.status, 200);
    let line = b.logs.request_line("forged-attempt");
    assert!(line.get("attempt").is_none(), "{line}");
    let a_line = a.logs.request_line("forged-attempt");
    assert_eq!(
        a_line["attempt"], 1,
        "A still shows B's own numbering: {a_line}"
    );
}

#[tokio::test]
async fn malformed_heads_are_refused_logged_and_counted() {
    let a = Service::a(&[]);
    // (what, request, status; 0: a 431 the kernel's reset may overtake, because the server
    // stopped reading at 16 KiB and closed with the rest unread)
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "control byte",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "101 headers",
            {
                let mut head = b"GET /health HTTP/1.1\r\nHost: a\r\n".to_vec();
                for n in 0..101 {
                    head.extend_from_slice(format!("X-H{n}: v\r\n").as_bytes());
                }
                head.extend_from_slice(b"\r\n");
                head
            },
            431,
        ),
        (
            "70 KB URI",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(70_000)).into_bytes(),
            0,
        ),
        (
            "two Content-Lengths",
            b"POST /token HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            400,
        ),
    ];
    for (what, request, status) in &cases {
        let mut stream = connect_and_send(&a, request);
        let answer = read_answer(&mut stream);
        if *status == 0 {
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
                "{what}: {answer:?}"
            );
        } else {
            assert_eq!(status_and_body(&answer).0, *status, "{what}: {answer:?}");
        }
    }
    for kind in ["malformed_request", "header_too_large"] {
        let series = format!(r#"http_connection_errors_total{{kind="{kind}"}}"#);
        assert_eq!(wait_for_series(&a, &series, 2.0).await, 2.0, "{kind}");
    }
    for kind in ["malformed_request", "header_too_large"] {
        a.logs
            .wait_for(|l| l["event"] == "connection_rejected" && l["kind"] == kind);
    }
}

#[tokio::test]
async fn slow_heads_and_bodies_get_408_and_idle_connections_close() {
    let a = Service::a(&[
        "--header-timeout-ms",
        "300",
        "--body-timeout-ms",
        "300",
        "--idle-timeout-ms",
        "300",
    ]);
    let mut head = connect_and_send(&a, b"POST /token HTTP/1.1\r\nHost: a\r\n");
    let (status, body) = status_and_body(&read_answer(&mut head));
    assert_eq!(
        (status, body["error"].as_str()),
        (408, Some("request head not received within 300 ms"))
    );
    assert_eq!(
        wait_for_series(
            &a,
            r#"http_connection_errors_total{kind="header_timeout"}"#,
            1.0
        )
        .await,
        1.0
    );

    let mut body = connect_and_send(
        &a,
        b"POST /token HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    );
    let (status, json) = status_and_body(&read_answer(&mut body));
    assert_eq!(
        (status, json["error"].as_str()),
        (408, Some("request body not received within 300 ms"))
    );

    let mut idle = TcpStream::connect(a.addr).expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    let answer = read_answer(&mut idle);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the idle keep-alive connection was closed after about 300 ms, not {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn over_the_in_flight_cap_requests_are_shed_but_probes_answer() {
    let a = Service::a(&["--max-in-flight", "2"]);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(a.token(
                system_tests::demo_login_with(json!({"delay_ms": 1500})),
                None,
            ))
        })
        .collect();
    // The slow requests run.
    wait_for_series(&a, ACTIVE_POSTS, 2.0).await;
    let shed = a.token(system_tests::demo_login(), Some("shed")).await;
    assert_eq!(shed.status, 503, "{}", shed.text);
    assert_eq!(shed.header("retry-after"), "1");
    assert_eq!(
        shed.json["error"],
        "too many requests in flight: try again later"
    );
    assert_eq!(a.logs.request_line("shed")["status"], 503);
    let latency = a.health_latency().await;
    assert!(
        latency < HEALTHY_LATENCY,
        "/health is never shed: {latency:?}"
    );
    assert_eq!(
        a.series(r#"http_requests_shed_total{limit="in_flight"}"#)
            .await,
        1.0
    );
    for task in slow {
        assert_eq!(task.await.expect("slow").status, 200);
    }
}

#[tokio::test]
async fn over_the_connection_cap_with_every_connection_busy_newcomers_get_503() {
    let a = Service::a(&["--max-connections", "2"]);
    let body = r#"{"username":"nobody","password":"x","delay_ms":1000}"#;
    let slow_request = format!(
        "POST /token HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Until both slow requests are being handled, a newcomer evicts one of them (it is still
    // idle), so the probe waits until A has read both; in the moment between A reading a
    // request and handling it, the probe can still win: then the attempt starts over.
    let (answer, body) =
        eventually("a newcomer refused with 503 at the connection cap").until(|| {
            let slow: Vec<_> = (0..2)
                .map(|_| connect_and_send(&a, slow_request.as_bytes()))
                .collect();
            eventually("A has read both slow requests")
                .every(Duration::from_millis(1))
                .until(|| {
                    let unread: Vec<_> = slow.iter().map(|s| unread_by(&a, s)).collect();
                    if unread.iter().all(|u| *u == Some(0)) {
                        Ok(())
                    } else {
                        Err(unread)
                    }
                });
            let mut probe = connect_and_send(
                &a,
                b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            );
            let answer = read_answer(&mut probe);
            let (status, body) = status_and_body(&answer);
            if status == 503 {
                Ok((answer, body))
            } else {
                Err(status)
            }
        });
    assert_eq!(
        body["error"],
        "server at its connection limit: try again later"
    );
    assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer:?}");
    // Counted once a connection is free again (the slow requests end after 1 s).
    wait_for_series(
        &a,
        r#"http_connection_errors_total{kind="over_capacity"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_trickling_in_hold_no_place_other_clients_need() {
    let mut a = Service::a(&[]);
    // 520 requests, more than --max-in-flight (512), each announcing a 100-byte body and
    // sending one byte of it.
    let head = b"POST /token HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    let trickling: Vec<TcpStream> = (0..520).map(|_| connect_and_send(&a, head)).collect();
    // Everyone else is served as usual.
    for n in 0..50 {
        let reply = a.token(system_tests::demo_login(), None).await;
        assert_eq!(reply.status, 200, "request {n}: {}", reply.text);
    }
    assert_eq!(
        a.series(r#"http_requests_shed_total{limit="in_flight"}"#)
            .await,
        0.0
    );
    assert_unharmed(&mut a, "520 trickling bodies").await;
    drop(trickling);
}
