//! For load runs that read a service's memory: a start that keeps only the log lines not tied
//! to one request (a load run writes hundreds of thousands of those), and the process's
//! resident memory now, beside its peak ([`Service::peak_memory`]).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::{Kind, Logs, Service, binary};

impl Service {
    /// [`Service::start`] on a free port, keeping only the log lines without a `request_id`
    /// (start-up, limits, breaker transitions, losses, shutdown); every line is still read,
    /// so the service never waits on its stdout.
    pub fn start_without_request_lines(kind: Kind, args: &[&str]) -> Self {
        let mut child = Command::new(binary(kind))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start service");
        let stdout = child.stdout.take().expect("stdout piped");
        let logs = Logs::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) if !line.contains("\"request_id\"") => sink.push(line),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        // Owned before the wait, so a service that never says where it listens is killed.
        let mut service = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
        };
        let listening = service.logs.wait_for(|l| l["event"] == "listening");
        service.addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening line names the address");
        service
    }

    /// The process's resident memory now (`VmRSS` in `/proc/<pid>/status`), in bytes.
    pub fn resident_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process is alive");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }
}
