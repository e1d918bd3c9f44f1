//! For load runs that read a service's memory: a start that keeps only the log lines not tied
//! to one request (a load run writes hundreds of thousands of those), and the process's
//! resident memory now, beside its peak ([`Service::peak_memory`]).

use crate::{Kind, Service};

impl Service {
    /// [`Service::start`] on a free port, keeping only the log lines without a `request_id`
    /// (start-up, limits, breaker transitions, losses, shutdown); every line is still read,
    /// so the service never waits on its stdout.
    pub fn start_without_request_lines(kind: Kind, args: &[&str]) -> Self {
        Self::spawn(&[], kind, "127.0.0.1:0", args, &[], |line| {
            !line.contains("\"request_id\"")
        })
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
