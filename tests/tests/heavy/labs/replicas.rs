//! The lab of A's replicas on what `./deploy/run-local.sh --observe --a-replicas 3` starts:
//! the local Prometheus scrapes each replica as a target of job `service-a`; three healthy
//! replicas show no symptom; once `lab start a-replica-slow` (reading the script's
//! `services.env`) slows one, the symptom names that replica's address in Prometheus, B's
//! panels of the evidence have data, the calls per replica show B routing around it, and
//! `lab check … --replica N` is right for it alone.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use system_tests::labs::{SYMPTOM_WITHIN, said, state_dir};
use system_tests::prometheus::tool_available;
use system_tests::{Kind, binary, eventually, repo_root};

use super::local::{Running, lab_cmd, listening, query};

const LAB: &str = "a-replica-slow";

/// A free block of ports from 23600 on for `PORT_BASE`, with three replicas of A (replica k
/// on +10+k, its fault endpoint on +20+k).
fn vacant_block() -> u16 {
    let ports = |base: u16| [0, 1, 2, 3, 4, 5, 6, 12, 13, 22, 23].map(|n| base + n);
    (23_600..23_970)
        .step_by(30)
        .find(|base| {
            ports(*base)
                .iter()
                .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        })
        .expect("a free block of ports in 23600-23999")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_replica_of_three_is_found_in_prometheus() {
    if !tool_available("prometheus") {
        return;
    }
    // Arrange: the script with three replicas of A and everything --observe starts.
    let base = vacant_block();
    let xdg = state_dir("replicas-local");
    std::fs::create_dir_all(&xdg).expect("state dir");
    let state = xdg.join(lab::paths::APP);
    let bin_dir = binary(Kind::A).parent().expect("bin dir").to_path_buf();
    let mut command = Command::new(repo_root().join("deploy/run-local.sh"));
    command
        .args(["--observe", "--a-replicas", "3"])
        .env("PORT_BASE", base.to_string())
        .env("BIN_DIR", &bin_dir)
        .env("XDG_STATE_HOME", &*xdg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in [
        "A_ADDR",
        "B_ADDR",
        "A_FAULT_LISTEN_ADDR",
        "B_FAULT_LISTEN_ADDR",
        "PROMETHEUS_ADDR",
        "ALERTMANAGER_ADDR",
        "OTLP_ADDR",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "PROVIDER_URL",
    ] {
        command.env_remove(name);
    }
    let mut script = command.spawn().expect("start run-local.sh");
    let stderr = script.stderr.take().expect("stderr");
    let _running = Running {
        script,
        restarted_a: None,
    };
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let banner = system_tests::lines_until(&lines, "Ctrl-C stops");
    let replicas: Vec<String> = [0, 12, 13]
        .map(|n| format!("127.0.0.1:{}", base + n))
        .to_vec();
    let prometheus = format!("http://127.0.0.1:{}", base + 2);
    let b: SocketAddr = format!("127.0.0.1:{}", base + 1).parse().expect("B");
    assert!(listening(b), "{banner:#?}");

    // Every replica is a target of job service-a, and up.
    eventually("every replica up as a target of service-a")
        .within(SYMPTOM_WITHIN)
        .every(Duration::from_millis(500))
        .until_async(async || {
            let up = query(&prometheus, r#"up{job="service-a"} == 1"#).await;
            let mut instances: Vec<String> = up
                .iter()
                .filter_map(|(labels, _)| labels["instance"].as_str().map(str::to_owned))
                .collect();
            instances.sort();
            if instances == replicas {
                Ok(())
            } else {
                Err(instances)
            }
        })
        .await;

    // Three healthy replicas under healthy traffic show no symptom.
    let scenario = lab::scenario(LAB).expect("the lab");
    let healthy = Command::new(binary(Kind::Traffic))
        .args(["--target", &format!("http://{b}"), "--rate", "20"])
        .args(["--duration", "5", "--mix", "success=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("traffic");
    assert!(healthy.success());
    let scraped = r#"count(sum by (endpoint) (increase(provider_endpoint_attempts_total{job="service-b", outcome="ok"}[1m])) > 0) == 3"#;
    eventually("calls to every replica scraped")
        .within(SYMPTOM_WITHIN)
        .every(Duration::from_millis(500))
        .until_async(async || !query(&prometheus, scraped).await.is_empty())
        .await;
    let found = query(&prometheus, scenario.symptom).await;
    assert!(found.is_empty(), "healthy replicas: {found:?}");

    // Act: the lab, with no address given to lab: it reads the script's services.env.
    let started = lab_cmd(&state, &["start", LAB, "--student", "sam"]);
    assert!(started.status.success(), "{}", said(&started));

    // Assert: the symptom names one replica, and the evidence shows it.
    let slow = eventually(format!("{LAB}'s symptom on one replica"))
        .within(SYMPTOM_WITHIN)
        .every(Duration::from_millis(500))
        .until_async(async || {
            let found = query(&prometheus, scenario.symptom).await;
            if let [(labels, _)] = &found[..] {
                let endpoint = labels["endpoint"].as_str().unwrap_or_default();
                let n = replicas.iter().position(|r| r == endpoint);
                Ok(n.map(|n| n + 1).expect("the symptom names a replica"))
            } else {
                Err(found)
            }
        })
        .await;
    let slow_addr = &replicas[slow - 1];
    // B's series are there from the start; A's 499s per replica from the slow one's
    // second (a counter's first sample is no increase), a minute or so in: the query runs.
    let _ = query(&prometheus, scenario.evidence[2].promql).await;
    for shown in &scenario.evidence[..2] {
        eventually(format!("{}: {}", shown.panel, shown.promql))
            .within(SYMPTOM_WITHIN)
            .every(Duration::from_millis(100))
            .until_async(async || !query(&prometheus, shown.promql).await.is_empty())
            .await;
    }
    // B sends the slow replica the fewest of its attempts, once the panel's rate window
    // holds more of the lab than of the healthy minutes before it.
    eventually(format!("the fewest calls to the slow replica, {slow_addr}"))
        .within(SYMPTOM_WITHIN)
        .every(Duration::from_millis(500))
        .until_async(async || {
            let calls = query(&prometheus, scenario.evidence[0].promql).await;
            let fewest = calls
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .and_then(|(labels, _)| labels["endpoint"].as_str());
            if fewest == Some(slow_addr.as_str()) {
                Ok(())
            } else {
                Err(calls)
            }
        })
        .await;

    let others: Vec<usize> = (1..=3).filter(|n| *n != slow).collect();
    let wrong = lab_cmd(&state, &["check", LAB, "--replica", &others[0].to_string()]);
    assert_eq!(wrong.status.code(), Some(1), "{}", said(&wrong));
    let right = lab_cmd(&state, &["check", LAB, "--replica", &slow.to_string()]);
    let text = said(&right);
    assert!(right.status.success(), "{text}");
    assert!(text.starts_with("right: "), "{text}");
    assert!(!text.contains("no answer from"), "{text}");
    assert!(text.contains(slow_addr), "the evidence names it: {text}");
    let stopped = lab_cmd(&state, &["stop"]);
    assert!(
        said(&stopped).contains(&format!("The replica at fault was: replica {slow}")),
        "{}",
        said(&stopped)
    );
}
