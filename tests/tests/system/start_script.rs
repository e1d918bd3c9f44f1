//! `deploy/run-local.sh`, the README's start command, cannot lie: it refuses an address
//! something already serves (naming what), refuses a service that exits during start-up,
//! prints the PIDs of its own live children, and on SIGTERM stops exactly those and exits
//! 0. It runs the binaries the tests use (`BIN_DIR`), so no release build is needed here.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use system_tests::{Kind, Service, TIMEOUT, binary, repo_root, vacant_addr};

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
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }
    panic!("no line with {needle:?} in {TIMEOUT:?}: {seen:#?}");
}

/// Every stderr line still to come, up to the end of the stream (bounded): the script has
/// exited and started nothing, so its stderr closes.
fn rest_of(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut rest = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => rest.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(Instant::now() < deadline, "stderr still open: {rest:#?}");
            }
        }
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "run-local.sh did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive: read its state, not just whether /proc has it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(") ")
            .next()
            .unwrap_or_default()
            .starts_with('Z')
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()
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
    assert!(
        Command::new("kill")
            .arg(a_pid.to_string())
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + TIMEOUT;
    while alive(a_pid) {
        assert!(Instant::now() < deadline, "A did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut by_hand = Service::start(Kind::A, &a, &[], &[]);

    Command::new("kill")
        .args(["-TERM", &script.id().to_string()])
        .status()
        .expect("kill");
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
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(&b).is_ok() {
        assert!(Instant::now() < deadline, "B left running on {b}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
