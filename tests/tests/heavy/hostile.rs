//! The large attacks of `hostile` (system target) at full size: 20,000 made-up methods,
//! 200,000 usernames of 1 KiB, 3,000 slow connections and 300 endless headers. Each reads
//! the process's own memory and metrics. Loopback only; every loop is bounded in count and
//! time. The `system` target keeps a small version of the first two.

use std::io::Write as _;
use std::net::TcpStream;

use system_tests::attack::{
    MEMORY_LIMIT, assert_unharmed, connect_and_send, read_answer, wait_for_accept_queue_below,
    wait_for_series,
};
use system_tests::{Service, load};

#[tokio::test]
async fn twenty_thousand_made_up_methods_and_paths_add_no_series() {
    load::made_up_methods_and_paths_add_no_series(20_000).await;
}

/// Usernames the spray tries, each once: the load the throttle is sized for (200,000 names
/// failing within one window).
const SPRAYED_NAMES: usize = 200_000;

/// 200,000 names of 1 KiB make 205 MB of names, over three times the memory limit: a
/// throttle that kept each name, or 400 bytes of each, would break the limit as surely as
/// with names of 16,000 characters (3.2 GB, three times as long to send, and no more proof).
#[tokio::test]
async fn a_spray_of_long_usernames_neither_frees_an_attacker_nor_grows_memory() {
    const { assert!(SPRAYED_NAMES as u64 * load::SPRAYED_NAME_LENGTH as u64 > 3 * MEMORY_LIMIT) };
    load::long_usernames_neither_free_an_attacker_nor_grow_memory(SPRAYED_NAMES).await;
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
