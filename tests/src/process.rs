//! Signals and process checks through a library (`rustix`), not by running `kill` or `ps`:
//! no shell command whose absence, output format or exit code a test would have to read.

pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process};

/// The signal of a name as `kill -<NAME>` takes it: `TERM`, `KILL`, `STOP`, `CONT`, `INT`,
/// `HUP`, `QUIT`.
pub fn by_name(name: &str) -> Signal {
    match name {
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        other => panic!("no signal named {other} in the tests"),
    }
}

fn pid(pid: u32) -> Pid {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("{pid} is not a process id"))
}

/// Sends `signal` to the process `pid`; panics when it cannot be sent (no such process).
pub fn signal(process: u32, signal: Signal) {
    kill_process(pid(process), signal)
        .unwrap_or_else(|e| panic!("sending {signal:?} to {process}: {e}"));
}

/// Sends `signal` to the process `pid` if it still exists (for clean-ups in `Drop`).
pub fn signal_if_running(process: u32, signal: Signal) {
    let _ = kill_process(pid(process), signal);
}

/// Whether the process `pid` is running: it exists and is not a zombie (`/proc/<pid>/stat`).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(") ")
            .next()
            .unwrap_or_default()
            .starts_with('Z')
    })
}

/// The parent of the process `pid` (`/proc/<pid>/stat`), if it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()
}

/// The command line of the process `pid`, its arguments joined by spaces, as `ps -o args=`
/// shows it (read from `/proc/<pid>/cmdline`; empty when the process is gone).
pub fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reaches_a_child_and_the_command_line_is_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        // Until the child has exec'd, /proc shows the parent's command line.
        crate::eventually("the child's own command line")
            .until(|| command_line(child.id()) == "sleep 30");
        signal(child.id(), by_name("TERM"));
        let status = child.wait().expect("wait");
        assert!(!status.success(), "stopped by the signal: {status:?}");
    }
}
