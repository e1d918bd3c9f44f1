//! One setting moves every port: `PORT_BASE` for `./deploy/run-local.sh`, and `lab` follows
//! through the `services.env` the script writes while it runs, with no setting of its own.
//! The banner prints the same as `export LAB_…` lines, and the command that skips the build.
//! A fault endpoint `lab` cannot reach is named with the flag and variable that set it and
//! where its address came from; `--a-faults` takes every replica of A.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use system_tests::labs::{lab_alone, said, state_dir};
use system_tests::process::{Signal, signal_if_running};
use system_tests::{Kind, Service, binary, client, eventually, repo_root, vacant_addr};

/// The first block of ports from 23000 on whose seven ports are all free.
fn vacant_block() -> u16 {
    (23_000..23_990)
        .step_by(20)
        .find(|base| (0..7).all(|n| TcpListener::bind(("127.0.0.1", base + n)).is_ok()))
        .expect("a free block of ports in 23000-23999")
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The script, stopped (SIGTERM) whatever happens.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        signal_if_running(self.0.id(), Signal::TERM);
        let _ = self.0.wait();
    }
}

async fn injected(url: &str) -> Value {
    let body: Value = client()
        .get(url)
        .send()
        .await
        .expect("the fault endpoint answers")
        .json()
        .await
        .expect("JSON");
    body["injected"].clone()
}

/// `PORT_BASE` moves A, B and both fault endpoints; `lab` finds them in `services.env`
/// without any `LAB_*` setting, and the file goes when the script stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_base_port_moves_every_port_and_lab_follows() {
    // Arrange
    let base = vacant_block();
    let xdg = state_dir("ports");
    std::fs::create_dir_all(&xdg).expect("dir");
    let bin_dir = binary(Kind::A).parent().expect("bin dir").to_path_buf();
    let mut command = Command::new(repo_root().join("deploy/run-local.sh"));
    command
        .env("PORT_BASE", base.to_string())
        .env("BIN_DIR", &bin_dir)
        .env("XDG_STATE_HOME", &*xdg)
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
        "LAB_STATE_DIR",
    ] {
        command.env_remove(name);
    }
    let mut script = Script(command.spawn().expect("start run-local.sh"));
    let stderr = script.0.stderr.take().expect("stderr");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let mut banner = Vec::new();
    eventually("the banner's last line")
        .every(Duration::ZERO)
        .until(|| {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                banner.push(line);
            }
            if banner.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
                Ok(())
            } else {
                Err(banner.clone())
            }
        });
    let banner = banner.join("\n");

    // Assert: every port moved, and the banner says where lab finds them.
    for (port, what) in [(0, "A"), (1, "B"), (5, "A's faults"), (6, "B's faults")] {
        assert!(
            listening(base + port),
            "{what} on {}\n{banner}",
            base + port
        );
    }
    let exports = [
        format!("LAB_B_URL=http://127.0.0.1:{}", base + 1),
        format!("LAB_A_FAULTS=http://127.0.0.1:{}/faults", base + 5),
        format!("LAB_B_FAULTS=http://127.0.0.1:{}/faults", base + 6),
        format!("LAB_PROMETHEUS=http://127.0.0.1:{}", base + 2),
    ];
    let file = xdg.join(lab::paths::APP).join(lab::paths::SERVICES_FILE);
    let written = std::fs::read_to_string(&file).expect("services.env");
    for line in &exports {
        assert!(
            banner.contains(&format!("    export {line}\n")),
            "{line}\n{banner}"
        );
        assert!(written.lines().any(|l| l == line), "{line}\n{written}");
    }
    assert!(banner.contains(&file.display().to_string()), "{banner}");
    let rerun = format!(
        "BIN_DIR={} PORT_BASE={base} ./deploy/run-local.sh",
        bin_dir.display()
    );
    assert!(banner.contains(&rerun), "{rerun}\n{banner}");

    // Act: lab with no setting of its own.
    let lab = |args: &[&str]| {
        let mut command = Command::new(binary(Kind::Lab));
        command.args(args).env("XDG_STATE_HOME", &*xdg);
        for (name, _) in std::env::vars() {
            if name.starts_with("LAB_") {
                command.env_remove(name);
            }
        }
        command.output().expect("run lab")
    };
    let started = lab(&["start", "a-flaky"]);
    assert!(started.status.success(), "{}", said(&started));
    let a_faults = format!("http://127.0.0.1:{}/faults", base + 5);
    assert_eq!(injected(&a_faults).await["scenario"], "a-flaky");
    let stopped = lab(&["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    assert_eq!(injected(&a_faults).await, Value::Null);

    // The file goes with the script.
    signal_if_running(script.0.id(), Signal::TERM);
    eventually("run-local.sh to exit")
        .every(Duration::from_millis(50))
        .until(|| script.0.try_wait().expect("try_wait"));
    assert!(!file.exists(), "services.env outlived the script");
}

/// A fault endpoint nobody serves: `lab start` names `--a-faults` and `LAB_A_FAULTS`, and
/// where the address came from (the flag, or the script's `services.env`), and starts
/// nothing.
#[test]
fn an_unreachable_fault_endpoint_names_its_flag_and_its_source() {
    let dir = state_dir("unreachable");
    std::fs::create_dir_all(&dir).expect("dir");
    let nowhere = format!("http://{}", vacant_addr());
    let a_faults = format!("{nowhere}/faults");
    let given = lab_alone(
        &dir,
        &[
            "start",
            "a-slow",
            "--a-faults",
            &a_faults,
            "--prometheus",
            &nowhere,
        ],
    );
    let text = said(&given);
    assert_eq!(given.status.code(), Some(2), "{text}");
    for named in ["--a-faults", "LAB_A_FAULTS", "given by", "--fault-listen"] {
        assert!(text.contains(named), "{named}: {text}");
    }

    let file = dir.join(lab::paths::SERVICES_FILE);
    std::fs::write(&file, format!("LAB_A_FAULTS={a_faults}\n")).expect("write");
    let from_file = lab_alone(&dir, &["start", "a-slow", "--prometheus", &nowhere]);
    let text = said(&from_file);
    assert_eq!(from_file.status.code(), Some(2), "{text}");
    assert!(text.contains(&a_faults), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("--a-faults or LAB_A_FAULTS"), "{text}");
    assert!(
        !dir.join(lab::paths::STATE_FILE).exists(),
        "nothing started"
    );
}

/// `--a-faults` lists every replica of A: `lab start` breaks each, `lab stop` clears each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_of_a_is_broken_and_cleared() {
    let faults: Vec<String> = (0..2).map(|_| vacant_addr().to_string()).collect();
    let replicas: Vec<Service> = faults
        .iter()
        .map(|addr| Service::a(&["--fault-listen", addr]))
        .collect();
    let b_faults = vacant_addr().to_string();
    let b = Service::b(&replicas[0].url(), &["--fault-listen", &b_faults]);
    let urls: Vec<String> = faults
        .iter()
        .map(|a| format!("http://{a}/faults"))
        .collect();
    let dir = state_dir("replicas");
    let nowhere = format!("http://{}", vacant_addr());
    let lab = |args: &[&str]| {
        let mut all = args.to_vec();
        let (b_url, b_faults) = (b.url(), format!("http://{b_faults}/faults"));
        let a_faults = urls.join(",");
        all.extend(["--a-faults", &a_faults, "--b-faults", &b_faults]);
        all.extend(["--b", &b_url, "--prometheus", &nowhere]);
        lab_alone(&dir, &all)
    };
    let started = lab(&["start", "a-flaky"]);
    assert!(started.status.success(), "{}", said(&started));
    for url in &urls {
        assert_eq!(injected(url).await["scenario"], "a-flaky", "{url}");
    }
    let stopped = lab(&["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    for url in &urls {
        assert_eq!(injected(url).await, Value::Null, "{url}");
    }
}
