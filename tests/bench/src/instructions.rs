//! Instructions per request: a measure that does not wobble with the machine's load.
//!
//! The measured process (A for the A configurations, B for the B ones; the other runs
//! natively) runs under `valgrind --tool=callgrind`, which counts the instructions it
//! executes. It gets the start-up check and [`WARM_UP`] requests, then its counters are
//! zeroed (`callgrind_control --zero`), then `n` sequential requests over one keep-alive
//! connection are counted and the counts dumped (`callgrind_control --dump`) before it
//! stops. Only the requests are counted: start-up, lazy first-use work and shutdown are
//! not. (Subtracting a run with one request, as this did before, left in the clock
//! calibration of the `quanta` crate that the metrics exporter runs at start-up: it is
//! bounded by time, not work, so under valgrind it moved the figure by up to 3k.) Two runs
//! of the same binary agree within 1–3%, where requests per second differ by 10–20% on
//! this machine.
//!
//! The committed figures (`tests/bench/instructions.txt`) are a budget: `--check` fails when
//! a service, with every request sampled or at 1% sampling, needs more than [`ALLOWANCE`]
//! times its committed figure, or has no figure there.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Build, Config, Side, Traces, start_pair_under};

/// How far a service may grow over its committed figure before `--check` fails.
pub const ALLOWANCE: f64 = 1.10;

/// The configurations in the budget: the services with every request sampled (the default)
/// and at 1% sampling, and the baselines beside them as figures. The report counts the peer
/// and the export configurations too, but they stay out: the peer is not this project's
/// code, and exported spans leave in batches, on a timer and at shutdown, so those counts
/// move with how the batches fall.
pub const CONFIGS: [Config; 6] = [
    Config::BASELINE_A,
    Config::SERVICE_A,
    Config::new(Side::A, Build::Service, Traces::OnePercent),
    Config::BASELINE_B,
    Config::SERVICE_B,
    Config::new(Side::B, Build::Service, Traces::OnePercent),
];

/// Runs per configuration when the budget is written; the budget is their highest count.
pub const BUDGET_RUNS: u32 = 3;

/// The budget file, relative to the workspace root.
pub const BUDGET_FILE: &str = "tests/bench/instructions.txt";

/// The key of a configuration in the budget file: `service-a`, `service-a-1pct`,
/// `baseline-b`, `peer-b-otlp`…
pub fn key(config: Config) -> String {
    let build = match config.build {
        Build::Baseline => "baseline",
        Build::Peer => "peer",
        Build::Service => "service",
    };
    let side = match config.side {
        Side::A => "a",
        Side::B => "b",
        Side::BFleet => "b-fleet",
    };
    let traces = match config.traces {
        Traces::Sampled => "",
        Traces::OnePercent => "-1pct",
        Traces::Exported => "-otlp",
    };
    format!("{build}-{side}{traces}")
}

/// Whether valgrind can be run.
pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Instructions the measured process of `config` executes per request, over `requests`.
pub async fn per_request(
    config: Config,
    bins: &Path,
    sink: &str,
    scratch: &Path,
    requests: u64,
) -> Result<u64, String> {
    Ok(counted(config, bins, sink, scratch, requests).await? / requests)
}

/// Requests sent before counting starts: the first requests create metric series, fill
/// buffers and pools that later ones reuse.
pub const WARM_UP: u64 = 10;

/// Instructions the measured process executes for `requests` requests, after [`WARM_UP`].
async fn counted(
    config: Config,
    bins: &Path,
    sink: &str,
    scratch: &Path,
    requests: u64,
) -> Result<u64, String> {
    let out = scratch.join(format!("callgrind.{}", key(config)));
    // Callgrind writes the dump asked for to `<out>.1`, and the rest at exit to `<out>`.
    let dump = scratch.join(format!("callgrind.{}.1", key(config)));
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&dump);
    let wrapper = [
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let (mut processes, addr, pid) = start_pair_under(config, bins, sink, scratch, &wrapper)?;
    crate::wait_healthy_within(addr, Duration::from_secs(60)).await?;
    let (path, body) = crate::request_of(config);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{addr}{path}");
    let (client, url) = (&client, &url);
    let send = |n: u64| async move {
        for _ in 0..n {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{}: {e}", config.label()))?;
            if !response.status().is_success() {
                return Err(format!(
                    "{}: answered {}",
                    config.label(),
                    response.status()
                ));
            }
            response.bytes().await.map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    send(WARM_UP).await?;
    callgrind_control("--zero", pid)?;
    send(requests).await?;
    callgrind_control("--dump", pid)?;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cannot stop {pid}"));
    }
    if let Some(measured) = processes.iter_mut().find(|p| p.0.id() == pid) {
        let _ = measured.0.wait();
    }
    drop(processes);
    let text = std::fs::read_to_string(&dump)
        .map_err(|e| format!("no callgrind dump for {}: {e}", config.label()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no instruction total in {}", dump.display()))
}

/// Sends `command` (`--zero`, `--dump`) to the callgrind of process `pid`; it returns once
/// the command is done.
fn callgrind_control(command: &str, pid: u32) -> Result<(), String> {
    let output = Command::new("callgrind_control")
        .args([command, &pid.to_string()])
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {command} {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Reads `key number` lines.
pub fn read_budget(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.split_once(char::is_whitespace)?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The budget file's text for `measured`.
pub fn write_budget(measured: &[(Config, u64)], requests: u64) -> String {
    let mut text = format!(
        "# Instructions per request, counted by callgrind over {requests} requests (after\n\
         # {WARM_UP} not counted), the highest of {BUDGET_RUNS} runs:\n\
         # `cargo run --release -p bench -- --instructions --write-budget`.\n\
         # `--check` fails when a service needs more than {:.0}% of its figure here.\n\
         # `-1pct`: with OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01.\n",
        ALLOWANCE * 100.0
    );
    for (config, value) in measured {
        text.push_str(&format!("{} {value}\n", key(*config)));
    }
    text
}

/// The services whose measure exceeds their budget by more than [`ALLOWANCE`], or that have
/// no budget.
pub fn over_budget(measured: &[(Config, u64)], budget: &[(String, u64)]) -> Vec<String> {
    measured
        .iter()
        .filter(|(config, _)| config.build == Build::Service)
        .filter_map(|(config, value)| {
            let Some((_, allowed)) = budget.iter().find(|(k, _)| *k == key(*config)) else {
                return Some(format!(
                    "{}: no figure for `{}` in {BUDGET_FILE} (--write-budget records one)",
                    config.label(),
                    key(*config)
                ));
            };
            let limit = *allowed as f64 * ALLOWANCE;
            (*value as f64 > limit).then(|| {
                format!(
                    "{}: {value} instructions per request, over {limit:.0} ({allowed} + 10%)",
                    config.label()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_A_1PCT: Config = Config::new(Side::A, Build::Service, Traces::OnePercent);

    #[test]
    fn the_budget_reads_back_and_a_growth_over_ten_percent_fails() {
        let text = write_budget(
            &[
                (Config::SERVICE_A, 100_000),
                (SERVICE_A_1PCT, 50_000),
                (Config::BASELINE_A, 30_000),
            ],
            2000,
        );
        let budget = read_budget(&text);
        assert_eq!(budget[0], ("service-a".to_owned(), 100_000));
        assert_eq!(budget[1], ("service-a-1pct".to_owned(), 50_000));
        assert!(over_budget(&[(Config::SERVICE_A, 109_999)], &budget).is_empty());
        assert_eq!(
            over_budget(&[(Config::SERVICE_A, 110_001)], &budget).len(),
            1
        );
        assert!(over_budget(&[(SERVICE_A_1PCT, 54_999)], &budget).is_empty());
        assert_eq!(over_budget(&[(SERVICE_A_1PCT, 55_001)], &budget).len(), 1);
        assert!(
            over_budget(&[(Config::BASELINE_A, 90_000)], &budget).is_empty(),
            "baselines are figures, not budgets"
        );
    }

    #[test]
    fn a_service_without_a_figure_fails_the_check() {
        let budget = read_budget("service-a 100000\n");
        let over = over_budget(&[(Config::SERVICE_B, 1)], &budget);
        assert_eq!(over.len(), 1, "{over:?}");
        assert!(over[0].contains("service-b"), "{over:?}");
    }

    #[test]
    fn the_budget_holds_every_service_at_both_samplings_and_no_peer() {
        let keys: Vec<String> = CONFIGS.iter().map(|c| key(*c)).collect();
        assert_eq!(
            keys,
            [
                "baseline-a",
                "service-a",
                "service-a-1pct",
                "baseline-b",
                "service-b",
                "service-b-1pct"
            ]
        );
    }
}
