//! B trusts nothing A sends, nor what its own callers pass along: a fake A that answers a
//! body without end, one that stalls mid-answer, one that refuses B's request; the real A
//! made slow under two hundred callers (a thousand in the `heavy` target); a caller's oversized baggage. The real B binary,
//! loopback only, every load bounded.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use system_tests::{Service, client, demo_login, load, send};

/// A fake A: for every request it reads, `answer` writes whatever it likes to the stream.
fn fake_a(answer: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let (answer, counter) = (answer.clone(), counter.clone());
            std::thread::spawn(move || {
                // The head and B's small JSON body arrive together on loopback.
                let mut buf = [0u8; 8192];
                let mut read = Vec::new();
                while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                answer(&mut stream);
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_gigabyte_answer_is_refused_and_b_stays_small() {
    // Announced as 2 GiB, and streamed for as long as B reads.
    let (url, seen) = fake_a(|stream| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2147483648\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = [b' '; 64 * 1024];
        while stream.write_all(&chunk).is_ok() {}
    });
    // The same without announcing its size: read until the limit, then refused.
    let (endless, _) = fake_a(|stream| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
        while stream.write_all(chunk.as_bytes()).is_ok() {}
    });
    for url in [&url, &endless] {
        // Every call reaches the fake A: the breaker would otherwise stop them after five.
        let mut b = Service::b(url, &["--breaker-threshold", "0"]);
        for n in 0..8 {
            let reply = b.protected_action(demo_login(), None).await;
            assert_eq!(reply.status, 503, "{}", reply.text);
            assert!(
                reply.json["details"]
                    .as_str()
                    .is_some_and(|d| d.contains("over the 65536-byte limit")),
                "call {n}: {}",
                reply.text
            );
        }
        let peak = b.peak_memory();
        assert!(
            peak < 24 * 1024 * 1024,
            "B read the answer: peak {} MiB",
            peak / (1024 * 1024)
        );
        assert!(b.is_alive());
        let failed = b.logs.wait_for(|l| l["event"] == "provider_call_failed");
        assert_eq!(failed["error"], "protocol_error", "{failed}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        8,
        "not retried: it would recur"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_body_stalls_past_the_timeout_is_a_retried_timeout() {
    // The head and the start of a token at once, the rest 1.5 s later.
    let (url, seen) = fake_a(|stream| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 38\r\n\r\n{\"token\":";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1500));
        let _ = stream.write_all(b"\"token-divya\",\"user\":\"divya\"}");
    });
    let b = Service::b(&url, &[]);
    let started = Instant::now();
    let reply = b.protected_action(demo_login(), Some("stalled-body")).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(
        reply.json["details"], "timed out after 1s on both attempts",
        "{}",
        reply.text
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(seen.load(Ordering::SeqCst), 2, "retried");
    let failed = b.logs.failed_attempts("stalled-body");
    assert_eq!(failed.len(), 2, "{failed:?}");
    for line in &failed {
        assert_eq!(line["error"], "timeout", "{line}");
    }
    // Counted against A like any timeout.
    assert_eq!(
        b.series(r#"provider_attempts_total{outcome="timeout"}"#)
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_refuses_b_s_request_b_s_log_says_why() {
    let (url, _) = fake_a(|stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    });
    let b = Service::b(&url, &[]);
    let reply = b.protected_action(demo_login(), Some("refused")).await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    let refused = b
        .logs
        .wait_for(|l| l["event"] == "provider_refused" && l["request_id"] == "refused");
    assert_eq!(refused["status"], 431, "{refused}");
    assert_eq!(refused["level"], "WARN", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_huge_baggage_is_not_passed_on_to_a() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    // 8 KB of quotes: each one three bytes once percent-encoded again.
    let baggage = format!("blob={}", "\"".repeat(8000));
    let reply = send(
        client()
            .post(b.at("/protected-action"))
            .header("baggage", baggage)
            .header("x-request-id", "big-baggage")
            .json(&demo_login()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    b.logs
        .wait_for(|l| l["event"] == "baggage_not_forwarded" && l["request_id"] == "big-baggage");
    // A served it: the request id still travelled.
    a.logs.request_line("big-baggage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_callers_on_a_slow_a_keep_b_inside_its_memory_limit() {
    load::callers_on_a_slow_a_keep_b_inside_its_memory_limit(200, Duration::from_secs(2)).await;
}
