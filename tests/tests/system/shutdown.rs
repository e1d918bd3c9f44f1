//! SIGTERM and Ctrl-C: stop accepting, let the in-flight request finish, flush, exit 0.

use std::time::{Duration, Instant};

use serde_json::json;
use system_tests::{Service, eventually};

/// Polls A's Prometheus text until a `/token` request is in flight.
async fn wait_until_token_request_in_flight(a: &Service) {
    eventually("a /token request in flight")
        .until_async(async || {
            let text = system_tests::get(&a.at("/metrics?format=prometheus"))
                .await
                .text;
            let busy = text.contains(
                r#"http_server_active_requests{http_request_method="POST",url_scheme="http"} 1"#,
            );
            if busy { Ok(()) } else { Err(text) }
        })
        .await;
}

async fn drains_on(signal: &str) {
    let mut a = Service::a(&[]);
    let url = a.at("/token");
    let in_flight = tokio::spawn(system_tests::post_json(
        &url,
        system_tests::demo_login_with(json!({"delay_ms": 700})),
        Some("in-flight"),
    ));
    wait_until_token_request_in_flight(&a).await;

    a.signal(signal);
    let status = tokio::task::spawn_blocking(move || {
        let status = a.wait_exit();
        (status, a)
    });

    let reply = in_flight.await.expect("in-flight request");
    assert_eq!(
        reply.status, 200,
        "the in-flight request finished: {}",
        reply.text
    );
    let (status, a) = status.await.expect("wait");
    assert!(status.success(), "exit 0 after draining: {status:?}");
    a.logs.wait_for(|l| l["event"] == "shutdown_started");
    a.logs.wait_for(|l| l["event"] == "shutdown_complete");
    assert_eq!(
        a.logs.request_line("in-flight")["status"],
        200,
        "its log line was flushed"
    );
    assert!(
        std::net::TcpStream::connect(a.addr).is_err(),
        "no longer accepting connections"
    );
}

#[tokio::test]
async fn sigterm_drains_the_in_flight_request_and_exits_0() {
    drains_on("TERM").await;
}

#[tokio::test]
async fn ctrl_c_drains_the_same_way() {
    drains_on("INT").await;
}

#[tokio::test]
async fn sighup_and_sigquit_drain_the_same_way() {
    drains_on("HUP").await;
    drains_on("QUIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_under_load_leaves_no_answered_request_unlogged() {
    for signal in ["HUP", "TERM"] {
        let mut a = Service::a(&[]);
        let url = a.at("/token");
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let callers: Vec<_> = (0..16)
            .map(|caller| {
                let (url, answered) = (url.clone(), answered.clone());
                tokio::spawn(async move {
                    let client = system_tests::client();
                    for n in 0..10_000 {
                        let id = format!("{caller}-{n}");
                        let sent = client
                            .post(&url)
                            .header("x-request-id", &id)
                            .json(&system_tests::demo_login())
                            .send()
                            .await;
                        match sent {
                            Ok(reply) if reply.status() == 200 => {
                                answered.lock().expect("answered").push(id);
                            }
                            _ => return, // the server has stopped
                        }
                    }
                })
            })
            .collect();
        // Under way: some answers are in.
        eventually("500 answers under way")
            .until_async(async || {
                let now = answered.lock().expect("answered").len();
                if now >= 500 { Ok(()) } else { Err(now) }
            })
            .await;
        a.signal(signal);
        for caller in callers {
            caller.await.expect("caller");
        }
        let status = tokio::task::spawn_blocking(move || (a.wait_exit(), a));
        let (status, a) = status.await.expect("wait");
        assert!(status.success(), "SIG{signal}: {status:?}");
        a.logs.wait_for(|l| l["event"] == "shutdown_complete");
        let logged: std::collections::HashSet<String> = a
            .logs
            .matching(|l| l["endpoint"] == "POST /token" && l["status"] == 200)
            .iter()
            .filter_map(|l| l["request_id"].as_str().map(str::to_owned))
            .collect();
        let answered = answered.lock().expect("answered").clone();
        let unlogged: Vec<_> = answered.iter().filter(|id| !logged.contains(*id)).collect();
        assert!(
            unlogged.is_empty(),
            "SIG{signal}: {} of {} answered requests have no log line, e.g. {:?}",
            unlogged.len(),
            answered.len(),
            unlogged.first()
        );
    }
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    let mut a = Service::a(&["--shutdown-grace-ms", "200"]);
    let url = a.at("/token");
    let stuck = tokio::spawn(system_tests::post_json(
        &url,
        system_tests::demo_login_with(json!({"delay_ms": 5000})),
        None,
    ));
    wait_until_token_request_in_flight(&a).await;

    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || a.stop())
        .await
        .expect("stop");

    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    stuck.abort();
}
