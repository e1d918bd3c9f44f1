//! Drives a server with `wrk` (Debian's package) and reads its figures.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

/// Runs `wrk` against `url`, POSTing `body`, for `duration` with `connections`.
pub fn run(
    url: &str,
    body: &str,
    duration: Duration,
    connections: u32,
    scratch: &Path,
) -> Result<Load, String> {
    let script = scratch.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let output = Command::new("wrk")
        .args(["--threads", "1", "--latency"])
        .arg(format!("--connections={connections}"))
        .arg(format!("--duration={}s", duration.as_secs().max(1)))
        .arg("--script")
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install -y wrk): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads `Requests/sec`, the 50% and 99% latency lines, and error counts.
pub fn parse(text: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => load.rps = v.parse().ok()?,
            (Some("50%"), Some(v)) => load.p50 = duration(v)?,
            (Some("99%"), Some(v)) => load.p99 = duration(v)?,
            (Some("Non-2xx"), _) => load.errors += line.rsplit(' ').next()?.parse::<u64>().ok()?,
            (Some("Socket"), Some("errors:")) => {
                load.errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (load.rps > 0.0).then_some(load)
}

fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 5s test @ http://127.0.0.1:1/token\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.10ms  300.00us   9.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     90%    1.50ms\n     99%    3.25ms\n  100000 requests in 5.00s, 15.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  20000.50\nTransfer/sec:      3.00MB\n";
        let load = parse(text).expect("parsed");
        assert_eq!(load.rps, 20000.5);
        assert_eq!(load.p50, Duration::from_micros(812));
        assert_eq!(load.p99, Duration::from_micros(3250));
        assert_eq!(load.errors, 7);
    }
}
