//! What a stuck sink keeps at shutdown is counted and named on the last stderr line, and
//! only that: with stdout unread, the lines that reached the pipe are whole and not counted
//! lost; with a collector that never answers, every span and log record still queued or
//! being exported when the flush grace runs out is counted (`spans_shutdown`,
//! `log_records_shutdown`) on a line shaped like every log line.

use std::io::{BufRead as _, Read as _};
use std::time::Duration;

use system_tests::{Kind, eventually};

use crate::losses::{HEALTHY_LATENCY, Held, health_latency, load, sum_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_holds_up_no_request_and_sigterm_counts_only_what_it_never_took() {
    // Read up to `listening`, then never again: the pipe fills, then the queue behind it.
    let mut a = Held::start(Kind::A, &[]);
    let base = format!("http://{}", a.addr);
    let dropped = r#"reason="queue_full""#;
    eventually("a log line dropped for a full queue")
        .within(Duration::from_secs(60))
        .every(Duration::ZERO)
        .until_async(async || {
            let lost = sum_of(&base, "log_lines_dropped_total", &[dropped]).await;
            if lost == 0.0 {
                load(&base, 2000).await;
            }
            lost > 0.0
        })
        .await;
    // Stdout is stuck: every request still answers at once.
    for _ in 0..10 {
        let latency = health_latency(&a.url("/health")).await;
        assert!(latency < HEALTHY_LATENCY, "/health took {latency:?}");
    }
    load(&base, 200).await;
    let notice = a.wait_for_notice("log_lines_queue_full");
    assert!(
        notice["log_lines_queue_full"].as_u64() > Some(0),
        "{notice}"
    );

    // Every request answered so far, this last scrape too (its line comes after it).
    let answered = sum_of(&base, "http_requests_total", &[]).await as u64 + 1;

    // SIGTERM ends it within the flush grace, although stdout never takes another line.
    assert!(a.stop().success());
    // The pipe, read to its end now that the process is gone: whole lines only.
    let mut rest = String::new();
    a.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut rest)
        .expect("read");
    assert!(
        rest.is_empty() || rest.ends_with('\n'),
        "the last line is whole: {:?}",
        &rest[rest.len().saturating_sub(200)..]
    );
    let mut requests_in_pipe = 0;
    for line in rest.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
        requests_in_pipe += u64::from(line.get("endpoint").is_some());
    }
    let final_notice = a.notices().pop().expect("a notice at shutdown");
    assert!(
        final_notice["log_lines_shutdown"].as_u64() > Some(0),
        "{final_notice}"
    );
    // Each answered request's line is in the pipe or counted lost, never both; the lost
    // also count the few lines that are not a request's (start-up, signal, shutdown).
    let lost = a.lost("log_lines_queue_full")
        + a.lost("log_lines_write_failed")
        + a.lost("log_lines_shutdown");
    assert!(
        (answered..=answered + 10).contains(&(requests_in_pipe + lost)),
        "{answered} answered; {requests_in_pipe} in the pipe and {lost} counted lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_log_records_a_hung_collector_never_took_are_counted_at_sigterm() {
    // Accepts connections and never answers: every export waits for its 10 s timeout, far
    // past the 2 s the shutdown gives the exporters.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", hung.local_addr().expect("addr"));
    let _held = std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(16).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let mut a = Held::start(
        Kind::A,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
        ],
    );
    // Stdout read as it comes: no line is lost there, so each one is a log record made.
    let stdout = a.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || stdout.lines().map_while(Result::ok).count());
    let base = format!("http://{}", a.addr);
    let made = 300;
    load(&base, made).await;
    assert!(a.stop().success());
    let lines = a.startup_lines + reader.join().expect("reader");

    let last = a.notices().pop().expect("a notice at shutdown");
    for field in [
        "service",
        "event",
        "ts",
        "level",
        "spans_shutdown",
        "log_records_shutdown",
    ] {
        assert!(last.get(field).is_some(), "{field} in {last}");
    }
    assert_eq!(last["level"], "WARN");
    // Every span (one per login) and every log record (one per line) is counted once.
    let spans: u64 = [
        "queue_full",
        "export_failed",
        "already_shutdown",
        "shutdown",
    ]
    .iter()
    .map(|kind| a.lost(&format!("spans_{kind}")))
    .sum();
    assert_eq!(spans, made as u64, "{:?}", a.notices());
    let records: u64 = [
        "queue_full",
        "export_failed",
        "already_shutdown",
        "shutdown",
    ]
    .iter()
    .map(|kind| a.lost(&format!("log_records_{kind}")))
    .sum();
    assert_eq!(records, lines as u64, "{:?}", a.notices());
}
