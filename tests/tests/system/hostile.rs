//! Hostile and careless clients: each test attacks one bound the services promise (memory,
//! connections, time, label values, login guesses) and reads the
//! process's own memory and metrics. Loopback only; every loop is bounded in count and time.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use system_tests::{Kind, Service, TIMEOUT, client, post_json, send};

/// The memory limit `deploy/compose.yaml` and `deploy/kubernetes/` give each service.
const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

/// How fast `/health` must answer on a new connection while an attack runs.
const HEALTHY_LATENCY: Duration = Duration::from_millis(100);

/// Asserts the process survived within its memory limit and still answers promptly.
async fn assert_unharmed(service: &mut Service, attack: &str) {
    assert!(service.is_alive(), "{attack}: the process died");
    let peak = service.peak_memory();
    assert!(
        peak < MEMORY_LIMIT,
        "{attack}: peak memory {} MiB is over the 64 MiB limit",
        peak / (1024 * 1024)
    );
    let latency = service.health_latency().await;
    assert!(
        latency < HEALTHY_LATENCY,
        "{attack}: /health took {latency:?}"
    );
}

/// Waits (bounded) until the Prometheus series reaches `at_least`, and returns its value: the
/// server counts a connection's end just after the client has seen it.
async fn wait_for_series(service: &Service, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let value = service.series(series).await;
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until an attack's requests answered so far reach `count`: it is under way.
async fn wait_under_way(answered: &AtomicUsize, count: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while answered.load(Ordering::Relaxed) < count {
        assert!(
            Instant::now() < deadline,
            "the attack never got going: {} answered",
            answered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connects and sends `bytes`, without reading; the connection stays open until dropped.
fn connect_and_send(service: &Service, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(service.addr).expect("connect");
    stream.write_all(bytes).expect("send");
    stream
}

/// Connections waiting in the kernel for `service` to accept them: the receive queue of its
/// listening socket in `/proc/net/tcp`.
fn accept_queue(service: &Service) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{:04X}", service.addr.port());
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            if !listening || !fields.get(1).is_some_and(|local| local.ends_with(&port)) {
                return None;
            }
            let (_, waiting) = fields.get(4)?.split_once(':')?;
            usize::from_str_radix(waiting, 16).ok()
        })
        .unwrap_or_else(|| panic!("no listening socket on {} in /proc/net/tcp", service.addr))
}

/// The bytes `client` sent that `service` has not read yet: the receive queue of the
/// server's end of that connection in `/proc/net/tcp` (`None` while it is not there).
fn unread_by(service: &Service, client: &TcpStream) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{:04X}", service.addr.port());
    let remote = format!(
        ":{:04X}",
        client.local_addr().expect("local address").port()
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ours = fields.get(1).is_some_and(|l| l.ends_with(&local))
            && fields.get(2).is_some_and(|r| r.ends_with(&remote))
            && fields.get(3) == Some(&"01");
        if !ours {
            return None;
        }
        let (_, unread) = fields.get(4)?.split_once(':')?;
        usize::from_str_radix(unread, 16).ok()
    })
}

/// Waits (bounded) until fewer than `below` connections wait for `service` to accept them.
fn wait_for_accept_queue_below(service: &Service, below: usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let waiting = accept_queue(service);
        if waiting < below {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} connections still wait to be accepted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the server wrote back before closing (empty if it closed without a word).
fn read_answer(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code and JSON body of a raw HTTP/1.1 answer.
fn status_and_body(answer: &str) -> (u16, Value) {
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// A token character string from a counter, e.g. "M17X".
fn made_up_method(n: u32) -> reqwest::Method {
    reqwest::Method::from_bytes(format!("M{n}X").as_bytes()).expect("a token")
}

#[tokio::test]
async fn twenty_thousand_made_up_methods_and_paths_add_no_series() {
    let mut a = Service::a(&[]);
    let http = client();
    let answered = Arc::new(AtomicUsize::new(0));
    let spray = |from: u32, to: u32| {
        let (http, answered) = (http.clone(), answered.clone());
        let base = a.url();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..16 {
                let (http, base, answered) = (http.clone(), base.clone(), answered.clone());
                tasks.spawn(async move {
                    for n in (from + worker..to).step_by(16) {
                        let path = if n % 2 == 0 {
                            "/token".to_owned()
                        } else {
                            format!("/r{n}")
                        };
                        let reply =
                            send(http.request(made_up_method(n), format!("{base}{path}"))).await;
                        assert!(matches!(reply.status, 404 | 405), "{}", reply.text);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            tasks.join_all().await;
        }
    };
    spray(0, 200).await;
    // Every route's own series exist before the baseline is read.
    a.health_latency().await;
    system_tests::get(&a.at("/metrics?format=prometheus")).await;
    let before = system_tests::get(&a.at("/metrics?format=prometheus"))
        .await
        .text;

    let attack = tokio::spawn(spray(200, 20_200));
    wait_under_way(&answered, 200 + 1000).await;
    let during = a.health_latency().await;
    attack.await.expect("spray");

    let after = system_tests::get(&a.at("/metrics?format=prometheus"))
        .await
        .text;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        series(&after),
        series(&before),
        "20,000 more methods and paths added series"
    );
    assert!(
        after.len() < before.len() + 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.contains(r#"method="_OTHER""#), "{after}");
    assert!(!after.contains("M1X"), "a made-up method became a label");
    assert!(
        during < HEALTHY_LATENCY,
        "/health took {during:?} during the spray"
    );
    assert_unharmed(&mut a, "20k methods").await;
}

/// Usernames the spray tries, each once: the load the throttle is sized for (200,000 names
/// failing within one window).
const SPRAYED_NAMES: usize = 200_000;

/// Length of each sprayed name. 200,000 of them make 205 MB of names, over three times the
/// memory limit: a throttle that kept each name, or 400 bytes of each, would break the limit
/// as surely as with names of 16,000 characters (3.2 GB, three times as long to send, and
/// no more proof).
const SPRAYED_NAME_LENGTH: usize = 1_024;

#[tokio::test]
async fn a_spray_of_long_usernames_neither_frees_an_attacker_nor_grows_memory() {
    const { assert!(SPRAYED_NAMES as u64 * SPRAYED_NAME_LENGTH as u64 > 3 * MEMORY_LIMIT) };
    let mut a = Service::a(&[]);
    let url = a.at("/token");
    let http = client();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 16;
    for worker in 0..workers {
        let (http, url, answered) = (http.clone(), url.clone(), answered.clone());
        tasks.spawn(async move {
            let padding = "u".repeat(SPRAYED_NAME_LENGTH - 8);
            for n in (worker..SPRAYED_NAMES).step_by(workers) {
                let body = json!({"username": format!("{n:08}{padding}"), "password": "guess"});
                let reply = send(http.post(&url).json(&body)).await;
                // 429 when both of a name's counters are shared with names already at the
                // limit: the throttle errs on the side of refusing.
                assert!(matches!(reply.status, 401 | 429), "{}", reply.text);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    wait_under_way(&answered, 1_000).await;
    let during = a.health_latency().await;
    tasks.join_all().await;
    assert!(
        during < HEALTHY_LATENCY,
        "/health took {during:?} during the spray"
    );

    let mut evaluated = 0;
    for _ in 0..30 {
        let reply = post_json(
            &url,
            json!({"username": "divya", "password": "wrong"}),
            None,
        )
        .await;
        match reply.status {
            401 => evaluated += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(evaluated <= 10, "{evaluated} wrong guesses were checked");
    let right = post_json(
        &url,
        json!({"username": "divya", "password": system_tests::DEMO_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(
        right.status, 429,
        "the right password after the limit is still refused: {}",
        right.text
    );
    assert_unharmed(&mut a, "200k usernames of 1 KiB").await;
}

#[tokio::test]
async fn slow_connections_and_endless_headers_leave_the_process_small_and_answering() {
    let mut a = Service::a(&[]);
    // 3,000 connections that each start a request and never finish its head, opened no
    // faster than A accepts them: a SYN the kernel drops from a full backlog costs the client
    // a second before it tries again, and proves nothing about the process.
    let slow: Vec<TcpStream> = (0..3000)
        .map(|n| {
            if n % 32 == 0 {
                wait_for_accept_queue_below(&a, 64);
            }
            connect_and_send(&a, b"POST /token HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        })
        .collect();
    assert_unharmed(&mut a, "3,000 slow connections").await;
    // Over the cap, the slowest make room.
    wait_for_series(
        &a,
        r#"http_connection_errors_total{kind="evicted"}"#,
        3000.0 - 1024.0,
    )
    .await;
    drop(slow);

    // 300 connections each sending a header that never ends (390 KB each, in pieces).
    let endless = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..300)
            .map(|_| {
                scope.spawn(|| {
                    let mut stream = connect_and_send(&a, b"GET /health HTTP/1.1\r\nX-Endless: ");
                    let chunk = [b'a'; 4096];
                    for _ in 0..(390 * 1024 / chunk.len()) {
                        if stream.write_all(&chunk).is_err() {
                            break; // the server closed the connection
                        }
                    }
                    read_answer(&mut stream)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect::<Vec<_>>()
    });
    // The server stops reading at 16 KiB, answers 431 and closes; with the rest of the
    // header unread, the kernel resets the connection, which can reach the client first.
    for answer in &endless {
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer:?}"
        );
    }
    assert_unharmed(&mut a, "300 endless headers").await;
    // Every one counted.
    wait_for_series(
        &a,
        r#"http_connection_errors_total{kind="header_too_large"}"#,
        300.0,
    )
    .await;
    a.logs
        .wait_for(|l| l["event"] == "connection_rejected" && l["kind"] == "header_too_large");
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
    let deadline = Instant::now() + TIMEOUT;
    while a
        .series(r#"http_server_active_requests{http_request_method="POST",url_scheme="http"}"#)
        .await
        < 5.0
    {
        assert!(
            Instant::now() < deadline,
            "the five requests never ran together"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let deadline = Instant::now() + TIMEOUT;
    while a
        .series(r#"http_server_active_requests{http_request_method="POST",url_scheme="http"}"#)
        .await
        < 2.0
    {
        assert!(Instant::now() < deadline, "the slow requests never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let deadline = Instant::now() + TIMEOUT;
    // Until both slow requests are being handled, a newcomer evicts one of them (it is still
    // idle), so the probe waits until A has read both; in the moment between A reading a
    // request and handling it, the probe can still win: then the attempt starts over.
    loop {
        let slow: Vec<_> = (0..2)
            .map(|_| connect_and_send(&a, slow_request.as_bytes()))
            .collect();
        while slow.iter().any(|s| unread_by(&a, s) != Some(0)) {
            assert!(Instant::now() < deadline, "A never read the slow requests");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut probe = connect_and_send(
            &a,
            b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        let answer = read_answer(&mut probe);
        let (status, body) = status_and_body(&answer);
        if status == 503 {
            assert_eq!(
                body["error"],
                "server at its connection limit: try again later"
            );
            assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
        drop(slow);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Asked once a connection is free again (the slow requests end after 1 s).
    let deadline = Instant::now() + TIMEOUT;
    while a
        .series(r#"http_connection_errors_total{kind="over_capacity"}"#)
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the refusal was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
