//! `deploy/run-local.sh`, the README's start command, cannot lie: it refuses an address
//! something already serves (naming what), refuses a service that exits during start-up,
//! prints the PIDs of its own live children, and on SIGTERM stops exactly those and exits
//! 0; with `--a-replicas 3`, each replica of A has its own port, fault endpoint, banner line
//! and restart command, and B calls every one. It runs the binaries the tests use
//! (`BIN_DIR`), so no release build is needed here.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use system_tests::process::{self, Signal, alive, parent_of};
use system_tests::{Kind, Service, binary, eventually, repo_root, vacant_addr};

/// The script on two free addresses, with `env`; its stderr lines arrive on the receiver.
fn start_script(a: &str, b: &str, env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let bin_dir = binary(Kind::A)
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let mut child = Command::new(repo_root().join("deploy/run-local.sh"))
        .env("A_ADDR", a)
        .env("B_ADDR", b)
        .env("BIN_DIR", bin_dir)
        .env("A_FAULT_LISTEN_ADDR", vacant_addr().to_string())
        .env("B_FAULT_LISTEN_ADDR", vacant_addr().to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start run-local.sh");
    let (send, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    (child, lines)
}

/// Collects stderr lines until one contains `needle` (bounded); returns all seen.
fn read_until(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    eventually(format!("a line with {needle:?}"))
        .every(Duration::ZERO)
        .until(|| {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return Ok(());
                }
            }
            Err(seen.clone())
        });
    seen
}

/// Every stderr line still to come, up to the end of the stream (bounded): the script has
/// exited and started nothing, so its stderr closes.
fn rest_of(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let mut rest = Vec::new();
    eventually("the end of stderr")
        .every(Duration::ZERO)
        .until(|| match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                rest.push(line);
                Err(rest.clone())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(rest.clone()),
        });
    rest
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    eventually("run-local.sh to exit")
        .every(Duration::from_millis(20))
        .until(|| child.try_wait().expect("try_wait"))
}

/// The PID on the banner line of `service` ("service A (provider) … pid 1234").
fn banner_pid(lines: &[String], service: &str) -> u32 {
    lines
        .iter()
        .find(|l| l.contains(service))
        .and_then(|l| l.rsplit("pid ").next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid for {service} in {lines:#?}"))
}

#[test]
fn banner_pids_are_its_live_children_and_sigterm_stops_exactly_them() {
    let (a, b) = (vacant_addr().to_string(), vacant_addr().to_string());
    let (mut script, lines) = start_script(&a, &b, &[]);
    let banner = read_until(&lines, "Ctrl-C stops both");
    let (a_pid, b_pid) = (
        banner_pid(&banner, "service A"),
        banner_pid(&banner, "service B"),
    );
    for pid in [a_pid, b_pid] {
        assert!(alive(pid), "{pid} is running");
        assert_eq!(
            parent_of(pid),
            Some(script.id()),
            "{pid} is the script's child"
        );
    }

    // The walkthrough: stop A alone, start one by hand on its address. The script does not
    // own that one, and must leave it running.
    process::signal(a_pid, Signal::TERM);
    eventually("A to stop")
        .every(Duration::from_millis(20))
        .until(|| !alive(a_pid));
    let mut by_hand = Service::start(Kind::A, &a, &[], &[]);

    process::signal(script.id(), Signal::TERM);
    let status = wait_exit(&mut script);
    assert_eq!(status.code(), Some(0), "SIGTERM is the normal way out");
    assert!(!alive(b_pid), "B, its child, is stopped");
    assert!(
        by_hand.is_alive(),
        "the A started by hand is not the script's to stop"
    );
}

#[test]
fn an_address_already_served_is_refused_naming_the_server() {
    let squatter = Service::a(&[]);
    let b = vacant_addr().to_string();
    let (mut script, lines) = start_script(&squatter.addr.to_string(), &b, &[]);
    let mut said = read_until(&lines, "already served");
    assert_eq!(wait_exit(&mut script).code(), Some(1));
    said.extend(rest_of(&lines));
    let said = said.join("\n");
    assert!(
        said.contains(&format!("service-a (pid {})", squatter.pid())),
        "names what serves it: {said}"
    );
    assert!(!said.contains("service B (consumer)"), "no banner: {said}");
}

#[test]
fn a_service_exiting_during_start_up_is_refused_and_nothing_is_left() {
    let (a, b) = (vacant_addr().to_string(), vacant_addr().to_string());
    // A (only A) refuses this setting and exits at once.
    let (mut script, lines) = start_script(&a, &b, &[("FAILURE_RATE", "2")]);
    let said = read_until(&lines, "exited during start-up").join("\n");
    assert_eq!(wait_exit(&mut script).code(), Some(1), "{said}");
    assert!(said.contains("service A exited"), "{said}");
    assert!(
        said.contains("expected a number from 0.0 to 1.0"),
        "A's own error shows: {said}"
    );
    // B, started beside it, is gone with the script: its address is free again.
    eventually(format!("B to leave {b}"))
        .every(Duration::from_millis(20))
        .until(|| std::net::TcpStream::connect(&b).is_err());
}

/// A free block of 30 ports from 23500 on: the script with `PORT_BASE` set to it puts A's
/// replica k (2 to 9) on +10+k and its fault endpoint on +20+k.
fn vacant_block(replicas: u16) -> u16 {
    let ports = |base: u16| {
        (0..7)
            .chain((2..=replicas).flat_map(|k| [10 + k, 20 + k]))
            .map(move |n| base + n)
    };
    (23_500..23_970)
        .step_by(30)
        .find(|base| ports(*base).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("a free block of ports in 23500-23999")
}

/// One replica's line of the banner: "replica 2  http://…  faults http://…/faults  pid 1234".
#[derive(Debug)]
struct Replica {
    addr: String,
    faults: String,
    pid: u32,
}

fn replicas_in(banner: &[String]) -> Vec<Replica> {
    banner
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first() == Some(&"replica") && w.get(3) == Some(&"faults"))
        .map(|w| Replica {
            addr: w[2].trim_start_matches("http://").to_owned(),
            faults: w[4].to_owned(),
            pid: w[6].parse().expect("a pid"),
        })
        .collect()
}

/// How many of A's endpoints B has in use, from its `/metrics`.
async fn in_use(b: &str) -> Option<f64> {
    let metrics = system_tests::get(&format!("http://{b}/metrics?format=prometheus"))
        .await
        .text;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"provider_endpoints{state="in_use"} "#))
        .and_then(|v| v.parse().ok())
}

/// `--a-replicas 3`: three A processes on their own ports and fault endpoints, each one the
/// script's child and listed in the banner with its restart command, every fault endpoint
/// in `services.env`, B calling all three. Replica 1 stopped, B keeps answering 200; started
/// again by its printed command, B takes it back. SIGTERM stops the script's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_start_apart_and_b_calls_every_one() {
    // Arrange
    let refused = Command::new(repo_root().join("deploy/run-local.sh"))
        .args(["--a-replicas", "10"])
        .output()
        .expect("run-local.sh");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("from 1 to 9"),
        "{refused:?}"
    );
    let base = vacant_block(3);
    let xdg = std::env::temp_dir().join(format!("run-local-replicas-{}", std::process::id()));
    let bin_dir = binary(Kind::A).parent().expect("bin dir").to_path_buf();
    let mut command = Command::new(repo_root().join("deploy/run-local.sh"));
    command
        .args(["--a-replicas", "3"])
        .env("PORT_BASE", base.to_string())
        .env("BIN_DIR", &bin_dir)
        .env("XDG_STATE_HOME", &xdg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in [
        "A_ADDR",
        "B_ADDR",
        "A_FAULT_LISTEN_ADDR",
        "B_FAULT_LISTEN_ADDR",
    ] {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("LAB_")) {
        command.env_remove(name);
    }
    let mut script = command.spawn().expect("start run-local.sh");
    let stderr = script.stderr.take().expect("stderr");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let banner = read_until(&lines, "Ctrl-C stops A's 3 replicas and B");
    let replicas = replicas_in(&banner);

    // Assert: where each replica is, as the banner and services.env say.
    let at = |n: u16| format!("127.0.0.1:{}", base + n);
    let expected = [(0, 5), (12, 22), (13, 23)];
    assert_eq!(replicas.len(), 3, "{banner:#?}");
    for (replica, (port, fault)) in replicas.iter().zip(expected) {
        assert_eq!(replica.addr, at(port), "{banner:#?}");
        assert_eq!(replica.faults, format!("http://{}/faults", at(fault)));
        assert!(alive(replica.pid), "{replica:?}");
        assert_eq!(parent_of(replica.pid), Some(script.id()), "{replica:?}");
    }
    let text = banner.join("\n");
    let faults: Vec<&str> = replicas.iter().map(|r| r.faults.as_str()).collect();
    let exported = format!("export LAB_A_FAULTS={}", faults.join(","));
    assert!(text.contains(&exported), "{exported}\n{text}");
    let written = std::fs::read_to_string(xdg.join(lab::paths::APP).join("services.env"))
        .expect("services.env");
    assert!(written.contains(&exported[7..]), "{written}");
    let b = at(1);
    eventually("B to use three replicas")
        .every(Duration::from_millis(100))
        .until_async(async || {
            let used = in_use(&b).await;
            if used == Some(3.0) { Ok(()) } else { Err(used) }
        })
        .await;

    // Act: replica 1 stopped, as the walkthrough stops A.
    let first = &replicas[0];
    process::signal(first.pid, Signal::TERM);
    eventually("replica 1 to stop")
        .every(Duration::from_millis(20))
        .until(|| !alive(first.pid));
    let call = || {
        system_tests::post_json(
            &format!("http://{b}/protected-action"),
            system_tests::demo_login(),
            None,
        )
    };
    eventually("B to take replica 1 out")
        .every(Duration::ZERO)
        .until_async(async || {
            let used = in_use(&b).await;
            if used == Some(2.0) {
                return Ok(());
            }
            let reply = call().await;
            assert_eq!(
                reply.status, 200,
                "B serves from the others: {}",
                reply.text
            );
            Err(used)
        })
        .await;

    // Replica 1 started again by the command the banner printed: B takes it back.
    let restart = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("replica 1:"))
        .map(str::trim)
        .expect("replica 1's restart command");
    assert!(
        restart.ends_with(&format!("--listen {} --fault-listen {}", at(0), at(5))),
        "{restart}"
    );
    let mut by_hand = Command::new("bash")
        .args(["-c", &format!("exec env {restart}")])
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .spawn()
        .expect("restart replica 1");
    eventually("B to take replica 1 back")
        .every(Duration::from_millis(100))
        .until_async(async || {
            let used = in_use(&b).await;
            if used == Some(3.0) {
                return Ok(());
            }
            let reply = call().await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            Err(used)
        })
        .await;

    // SIGTERM: the script's own stop, the one started by hand stays.
    process::signal(script.id(), Signal::TERM);
    assert_eq!(wait_exit(&mut script).code(), Some(0));
    for replica in &replicas[1..] {
        assert!(!alive(replica.pid), "{replica:?} stopped with the script");
    }
    assert!(
        by_hand.try_wait().expect("try_wait").is_none(),
        "the replica started by hand is not the script's to stop"
    );
    let _ = by_hand.kill();
    let _ = by_hand.wait();
    let _ = std::fs::remove_dir_all(xdg);
}
