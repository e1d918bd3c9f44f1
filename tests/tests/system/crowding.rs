//! No client can crowd the others out at the edge: at the connection cap, the connections
//! that give least for their place (idle, or a request arriving a byte at a time) make room
//! for newcomers; scrapes of `/metrics` have places of their own; and the limits a small
//! open-files limit forces stay coherent, or the service refuses to start and says why.
//! Small sizes here prove what the large attacks of the `heavy` target (1,100 bodies at a
//! byte a second at the default caps, 200 scrapers) prove at scale.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use system_tests::attack::{HEALTHY_LATENCY, Trickle, served_at_the_cap};
use system_tests::{Kind, Service, binary, eventually, send};

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
    eventually("a scrape shed")
        .until_async(async || shed.load(Ordering::Relaxed) > 0)
        .await;
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
    // 960 descriptors left: B's 256 places in flight (its default) and one connection to A
    // each, the rest for connections.
    assert_eq!(limits["max_connections"], 704, "{limits}");
    assert_eq!(limits["max_in_flight"], 256, "{limits}");
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
