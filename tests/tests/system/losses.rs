//! Telemetry never holds up the service's work, and what it loses is counted: a stdout
//! nobody reads, a closed stdout, an OTLP collector that answers slowly or never, for spans
//! and for log records. Loopback only; every load is bounded in count and time.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use system_tests::otlp::OtlpReceiver;
use system_tests::process::Signal;
use system_tests::{Kind, Service, TIMEOUT, binary, client, demo_login, eventually};

/// How fast `/health` must answer while a sink is stuck.
pub(crate) const HEALTHY_LATENCY: Duration = Duration::from_millis(100);

/// A service whose stdout the test holds: read up to the `listening` line, then left as
/// the test wants it (never read again, or closed). Its stderr is collected.
pub(crate) struct Held {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) stdout: Option<BufReader<ChildStdout>>,
    /// Lines read from stdout up to `listening`, that one included.
    pub(crate) startup_lines: usize,
    stderr: Arc<Mutex<String>>,
}

impl Held {
    pub(crate) fn start(kind: Kind, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary(kind))
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start service");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                collected.lock().expect("stderr").push_str(&text);
            }
        });
        let mut startup_lines = 0;
        let addr = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).expect("read") > 0, "exited");
            startup_lines += 1;
            let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if parsed["event"] == "listening" {
                break parsed["addr"]
                    .as_str()
                    .expect("addr")
                    .parse()
                    .expect("addr");
            }
        };
        Self {
            child,
            addr,
            stdout: Some(stdout),
            startup_lines,
            stderr,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every `telemetry_lost` notice on stderr so far.
    pub(crate) fn notices(&self) -> Vec<serde_json::Value> {
        let text = self.stderr.lock().expect("stderr").clone();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|n| n["event"] == "telemetry_lost")
            .collect()
    }

    /// The sum of `counter` over every notice: each says what was lost since the one
    /// before.
    pub(crate) fn lost(&self, counter: &str) -> u64 {
        self.notices()
            .iter()
            .filter_map(|n| n[counter].as_u64())
            .sum()
    }

    /// SIGTERM, then waits (bounded by the flush graces and a margin) for the exit.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        system_tests::process::signal(self.child.id(), Signal::TERM);
        let child = &mut self.child;
        let status = eventually("the exit after SIGTERM")
            .within(Duration::from_secs(8))
            .every(Duration::from_millis(20))
            .until(|| child.try_wait().expect("wait"));
        // Its stderr is read to the end by then, or soon.
        std::thread::sleep(Duration::from_millis(100));
        status
    }

    /// Waits (bounded) for the stderr notice saying `counter` lost something.
    pub(crate) fn wait_for_notice(&self, counter: &str) -> serde_json::Value {
        eventually(format!(
            "a telemetry_lost notice naming {counter} on stderr"
        ))
        .every(Duration::from_millis(50))
        .until(|| {
            let text = self.stderr.lock().expect("stderr").clone();
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|n| n["event"] == "telemetry_lost" && n.get(counter).is_some())
                .ok_or(text)
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every series of `metric` on `url`'s Prometheus text whose labels contain all
/// of `labels` (e.g. `error_type="queue_full"`).
pub(crate) async fn sum_of(url: &str, metric: &str, labels: &[&str]) -> f64 {
    let text = system_tests::get(&format!("{url}/metrics?format=prometheus"))
        .await
        .text;
    sum_in(&text, metric, labels)
}

/// [`sum_of`] in a text already scraped.
fn sum_in(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[metric.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Sends `count` POST /token requests to `base`, 16 at a time, keep-alive; every answer
/// must be a 200.
pub(crate) async fn load(base: &str, count: usize) {
    let client = client();
    let url = format!("{base}/token");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let reply = client
                        .post(&url)
                        .json(&demo_login())
                        .send()
                        .await
                        .expect("answered");
                    assert_eq!(reply.status(), 200);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
}

pub(crate) async fn health_latency(url: &str) -> Duration {
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(TIMEOUT)
        .build()
        .expect("client");
    let started = Instant::now();
    let reply = fresh.get(url).send().await.expect("answered");
    assert_eq!(reply.status(), 200);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_counts_every_line_it_could_not_write() {
    let mut a = Held::start(Kind::A, &[]);
    let base = format!("http://{}", a.addr);
    // As `| head` does: the reader goes away.
    drop(a.stdout.take());
    load(&base, 300).await;
    let failed = r#"reason="write_failed""#;
    eventually("all 300 lines counted as write_failed")
        .every(Duration::from_millis(50))
        .until_async(async || {
            let lost = sum_of(&base, "log_lines_dropped_total", &[failed]).await;
            if lost >= 300.0 { Ok(()) } else { Err(lost) }
        })
        .await;
    let notice = a.wait_for_notice("log_lines_write_failed");
    assert!(
        notice["log_lines_write_failed"].as_u64() > Some(0),
        "{notice}"
    );
}

/// Waits (bounded) until `service`'s export queue for `signal` ("span" or "log") is empty
/// and no batch is on its way: every item made is accounted for.
async fn settle(base: &str, signal: &str, made: f64) {
    let processed = format!("otel_sdk_processor_{signal}_processed_total");
    let exported = format!("otel_sdk_exporter_{signal}_exported_total");
    eventually(format!("{signal}s to settle"))
        .within(Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || {
            let taken = sum_of(base, &processed, &[]).await;
            let delivered = sum_of(base, &exported, &[]).await;
            let queued = sum_of(
                base,
                &format!("otel_sdk_processor_{signal}_queue_size"),
                &[],
            )
            .await;
            // Everything made was handed on or dropped, and every batch handed on has ended.
            let handed_on = taken - sum_of(base, &processed, &["error_type="]).await;
            if queued == 0.0 && taken >= made && delivered >= handed_on {
                Ok(())
            } else {
                Err(format!(
                    "{taken} processed of {made}, {delivered} delivered, {queued} queued"
                ))
            }
        })
        .await;
}

/// Asserts that what was lost on the way to the collector is what the counters say,
/// within 1%.
fn assert_counted(what: &str, made: f64, received: f64, counted: f64) {
    let lost = made - received;
    assert!(
        lost > 0.0,
        "{what}: nothing was lost, so nothing was tested"
    );
    assert!(
        (lost - counted).abs() <= (lost * 0.01).max(1.0),
        "{what}: {made} made, {received} received, so {lost} lost; {counted} counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_a_slow_collector_cannot_take_are_dropped_and_counted() {
    // 200 ms per export, 64 spans a batch: about 320 spans a second get through.
    let collector = OtlpReceiver::start_slow(Duration::from_millis(200));
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let made = 3000;
    load(&a.url(), made).await;
    settle(&a.url(), "span", made as f64).await;
    let received = collector.spans().len() as f64;
    let counted = sum_of(
        &a.url(),
        "otel_sdk_processor_span_processed_total",
        &["error_type="],
    )
    .await
        + sum_of(
            &a.url(),
            "otel_sdk_exporter_span_exported_total",
            &["error_type="],
        )
        .await;
    assert_counted("spans", made as f64, received, counted);
    assert!(
        sum_of(
            &a.url(),
            "otel_sdk_processor_span_processed_total",
            &[r#"error_type="queue_full""#]
        )
        .await
            > 0.0,
        "the queue was where they were lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_a_collector_that_never_answers_cannot_take_are_counted() {
    // Accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", hung.local_addr().expect("addr"));
    let _held = std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(64).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let made = 2000;
    load(&a.url(), made).await;
    settle(&a.url(), "span", made as f64).await;
    let counted = sum_of(
        &a.url(),
        "otel_sdk_processor_span_processed_total",
        &["error_type="],
    )
    .await
        + sum_of(
            &a.url(),
            "otel_sdk_exporter_span_exported_total",
            &["error_type="],
        )
        .await;
    assert_counted("spans", made as f64, 0.0, counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_a_refusing_collector_cannot_take_are_counted() {
    // Refuses every export at once, as a final answer (400: not retried). A collector that
    // cannot be reached is retried until each export's time is up (`otel_export.rs`).
    let collector = OtlpReceiver::start_refusing(vec![(400, None); 100_000]);
    let refusing = format!("{}/v1/logs", collector.url);
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", refusing.as_str()),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "256"),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
        ],
    );
    load(&a.url(), 2000).await;
    a.sync_logs().await;
    settle(&a.url(), "log", a.logs.all().len() as f64).await;
    // Every JSON line is also a log record: as many were made as lines were written (the
    // scrape below adds one of each, after it has counted).
    a.sync_logs().await;
    let made = a.logs.all().len() as f64;
    let text = system_tests::get(&a.at("/metrics?format=prometheus"))
        .await
        .text;
    let counted = sum_in(
        &text,
        "otel_sdk_processor_log_processed_total",
        &["error_type="],
    ) + sum_in(
        &text,
        "otel_sdk_exporter_log_exported_total",
        &["error_type="],
    );
    assert_counted("log records", made, 0.0, counted);
}
