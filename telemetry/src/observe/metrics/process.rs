//! The process's own series, read from `/proc/self` each time `/metrics` is read:
//! `process_cpu_seconds_total` (user and system time, in fractional seconds as the Go and
//! Python clients give it), `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_threads` and `process_start_time_seconds`.
//!
//! They are written as exposition text rather than through the `metrics` facade, whose
//! counters are whole numbers: a process under a second of CPU would read 0. On a system
//! without `/proc` (not Linux) there are none.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, 100 on every Linux
/// architecture the kernel exports to user space).
const USER_HZ: f64 = 100.0;

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
}

/// Reads the process now (`None` without `/proc`).
pub fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let page = page_size()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(&stat, &boot, &limits, page, open_fds)
}

/// The page size, from the kernel's own report of this process's mappings.
fn page_size() -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps_rollup")
        .or_else(|_| std::fs::read_to_string("/proc/self/smaps"))
        .ok();
    let from_smaps = smaps.as_deref().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("KernelPageSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    Some(from_smaps.unwrap_or(4096))
}

/// A reading from the texts of `/proc/self/stat`, `/proc/stat` and `/proc/self/limits`.
fn parse(stat: &str, boot: &str, limits: &str, page: u64, open_fds: u64) -> Option<Reading> {
    // The command name, in parentheses, may hold spaces: fields count from after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let field = |n: usize| -> Option<u64> { after_name.split(' ').nth(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let virtual_bytes = field(23)?;
    let resident_pages = field(24)?;
    let boot_time: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .unwrap_or(u64::MAX);
    Some(Reading {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: resident_pages * page,
        virtual_bytes,
        threads,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
        open_fds,
        max_fds,
    })
}

/// The reading as Prometheus text exposition, appended to `out`.
pub fn render(out: &mut String) {
    let Some(reading) = read() else {
        return;
    };
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        let _ = write!(
            out,
            "# HELP {sample} {help}\n# TYPE {sample} {kind}\n{sample} {value}\n\n"
        );
    };
    family(
        "process_cpu_seconds",
        "counter",
        "Total user and system CPU time spent, in seconds",
        reading.cpu_seconds,
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size, in bytes",
        reading.resident_bytes as f64,
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size, in bytes",
        reading.virtual_bytes as f64,
    );
    family(
        "process_open_fds",
        "gauge",
        "Open file descriptors",
        reading.open_fds as f64,
    );
    family(
        "process_max_fds",
        "gauge",
        "Most file descriptors the process may open",
        reading.max_fds as f64,
    );
    family(
        "process_threads",
        "gauge",
        "Threads of the process",
        reading.threads as f64,
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "When the process started, in seconds since the Unix epoch",
        reading.start_time_seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_with_fractional_cpu_seconds() {
        // A command name with a space and a parenthesis, 18 ticks of user and system time.
        let stat = "4242 (service a) S 1 4242 4242 0 -1 4194560 100 0 0 0 11 7 0 0 20 0 6 0 \
                    12345 123456789 2048 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1764489599\nprocesses 10\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let reading = parse(stat, boot, limits, 4096, 9).expect("parses");
        assert_eq!(
            reading,
            Reading {
                cpu_seconds: 0.18,
                resident_bytes: 2048 * 4096,
                virtual_bytes: 123_456_789,
                threads: 6,
                start_time_seconds: 1_764_489_599.0 + 123.45,
                open_fds: 9,
                max_fds: 1024,
            }
        );
    }

    #[test]
    fn this_process_reads_itself() {
        if cfg!(target_os = "linux") {
            let reading = read().expect("/proc on Linux");
            assert!(reading.resident_bytes > 0 && reading.threads >= 1);
            let mut text = String::new();
            render(&mut text);
            assert!(
                text.contains("# TYPE process_cpu_seconds_total counter\n"),
                "{text}"
            );
        }
    }
}
