//! Faults a caller or an operator can switch on: `fail_status` only when A allows it, and the
//! loopback fault endpoint (`--fault-listen`) that switches faults on and off at run time.
//!
//! `fail_status_is_honoured_only_when_a_allows_it` runs A inside the test process (it reads
//! only A's answers); the fault endpoint's test reads A's log line and gauge.

use serde_json::json;
use system_tests::{InProcess, Kind, Service, client, get};

/// A caller can ask A for a failure (`fail_status`) only when A was started to allow it: no
/// caller can make a production A fail at will.
#[tokio::test]
async fn fail_status_is_honoured_only_when_a_allows_it() {
    let body = system_tests::demo_login_with(json!({"fail_status": 502}));
    let locked = InProcess::a(&[]).await;
    let refused = locked.token(body.clone(), None).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("--allow-fail-status")),
        "{}",
        refused.text
    );

    let open = InProcess::a(&["--allow-fail-status"]).await;
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
