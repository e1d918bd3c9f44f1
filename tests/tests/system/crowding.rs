//! No client can crowd the others out at the edge: at the connection cap, the connections
//! that give least for their place (idle, or a request arriving a byte at a time) make room
//! for newcomers; scrapes of `/metrics` have places of their own; and the limits a small
//! open-files limit forces stay coherent, or the service refuses to start and says why.
//! Small sizes here prove what the large attacks of the `tools` target prove at scale.

use std::io::Write as _;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use system_tests::{Kind, Service, TIMEOUT, binary, send};

/// How fast `/health` must answer on a new connection while an attack runs.
const HEALTHY_LATENCY: Duration = Duration::from_millis(100);

/// Bodies trickling in a byte at a time on `count` connections to `service`, until dropped.
/// The byte rounds made so far are counted, so a test can wait until the trickle is under way.
struct Trickle {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickle {
    fn start(service: &Service, path: &str, count: usize) -> Self {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        );
        let mut streams: Vec<TcpStream> = (0..count)
            .filter_map(|_| {
                let mut stream = TcpStream::connect(service.addr).ok()?;
                stream.write_all(head.as_bytes()).ok()?;
                stream.set_nonblocking(true).ok()?;
                Some(stream)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (until, made) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            while !until.load(Ordering::Relaxed) {
                // A closed connection fails its write; the rest keep trickling.
                streams.retain_mut(|s| s.write_all(b" ").is_ok());
                made.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) until `n` byte rounds have gone out.
    fn wait_rounds(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        while self.rounds.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the trickle never got going");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client that opens a new connection for every request, like a newcomer.
fn newcomer() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

/// Sends `n` of the requests `make` builds, each on a new connection, with `/health` asked
/// in between; returns the share answered `expected` and the slowest `/health`.
async fn served_at_the_cap(
    service: &Service,
    n: usize,
    expected: u16,
    make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> (f64, Duration) {
    let client = newcomer();
    let mut served = 0;
    let mut slowest_health = Duration::ZERO;
    for _ in 0..n {
        if send(make(&client)).await.status == expected {
            served += 1;
        }
        slowest_health = slowest_health.max(service.health_latency().await);
    }
    (served as f64 / n as f64, slowest_health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_a_byte_at_a_time_make_room_at_the_cap_on_a() {
    let a = Service::a(&["--max-connections", "64"]);
    let trickle = Trickle::start(&a, "/token", 100);
    trickle.wait_rounds(5);
    let (served, health) = served_at_the_cap(&a, 40, 200, |c| {
        c.post(a.at("/token")).json(&system_tests::demo_login())
    })
    .await;
    assert!(served >= 0.95, "{:.0}% of logins served", served * 100.0);
    assert!(health < HEALTHY_LATENCY, "/health took {health:?}");
    assert!(
        a.series(r#"http_connection_errors_total{kind="evicted"}"#)
            .await
            >= 1.0,
        "a newcomer made room by closing a slow connection"
    );
    drop(trickle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_a_byte_at_a_time_make_room_at_the_cap_on_b() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &["--max-connections", "64"]);
    let trickle = Trickle::start(&b, "/protected-action", 100);
    trickle.wait_rounds(5);
    let (served, health) = served_at_the_cap(&b, 40, 200, |c| {
        c.post(b.at("/protected-action"))
            .json(&system_tests::demo_login())
    })
    .await;
    assert!(served >= 0.95, "{:.0}% of calls served", served * 100.0);
    assert!(health < HEALTHY_LATENCY, "/health took {health:?}");
    // A body closed to make room gets its answer, logged like any other: 503.
    let evicted = b
        .logs
        .wait_for(|l| l["endpoint"] == "POST /protected-action" && l["status"] == 503);
    assert!(evicted["latency_ms"].as_f64().is_some(), "{evicted}");
    drop(trickle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_scrapes_is_shed_and_requests_go_on() {
    let a = Service::a(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let shed = Arc::new(AtomicUsize::new(0));
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            let (stop, shed, url) = (stop.clone(), shed.clone(), a.at("/metrics"));
            tokio::spawn(async move {
                let client = system_tests::client();
                while !stop.load(Ordering::Relaxed) {
                    let reply = send(
                        client
                            .get(&url)
                            .header("accept", "application/openmetrics-text"),
                    )
                    .await;
                    match reply.status {
                        200 => {}
                        503 => {
                            assert_eq!(reply.header("retry-after"), "1");
                            assert_eq!(
                                reply.json["error"],
                                "too many scrapes of /metrics at once: try again later"
                            );
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("a scrape got {other}: {}", reply.text),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + TIMEOUT;
    while shed.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no scrape was ever shed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 0..50 {
        let reply = a.token(system_tests::demo_login(), None).await;
        assert_eq!(
            reply.status, 200,
            "login {n} during the flood: {}",
            reply.text
        );
    }
    stop.store(true, Ordering::Relaxed);
    for scraper in scrapers {
        scraper.await.expect("scraper");
    }
    let counted = a
        .series(r#"http_requests_shed_total{limit="scrapes"}"#)
        .await;
    assert!(
        counted >= shed.load(Ordering::Relaxed) as f64,
        "{counted} counted of {} shed",
        shed.load(Ordering::Relaxed)
    );
    assert_eq!(
        a.series(r#"http_requests_shed_total{limit="in_flight"}"#)
            .await,
        0.0
    );
}

#[test]
fn at_systemds_open_files_limit_b_keeps_its_limits_coherent() {
    let b = Service::start_under(
        &["prlimit", "--nofile=1024:1024"],
        Kind::B,
        "127.0.0.1:0",
        &["--provider-url", "http://127.0.0.1:9"],
        &[],
    );
    let limits = b.logs.wait_for(|l| l["event"] == "edge_limits");
    assert_eq!(limits["max_connections"], 640, "{limits}");
    assert_eq!(limits["max_in_flight"], 320, "{limits}");
    let why = limits["chosen"].as_str().unwrap_or_default();
    assert!(why.contains("open-files limit of 1024"), "{limits}");
}

#[test]
fn an_open_files_limit_too_low_to_serve_is_refused_by_name() {
    let output = Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(binary(Kind::B))
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run service-b under prlimit");
    assert!(!output.status.success(), "started at 64 open files");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let fatal = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["event"] == "fatal")
        .unwrap_or_else(|| panic!("no fatal line in {stdout}"));
    let error = fatal["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("open-files limit (ulimit -n) is 64")
            && error.contains("at least 111 needed"),
        "{fatal}"
    );
    assert!(
        !stdout.contains(r#""event":"listening""#),
        "said it was listening before refusing: {stdout}"
    );
}
