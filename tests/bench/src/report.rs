//! The benchmark's output: a table for the terminal, and with `--report`, the results block
//! of BENCHMARKS.md (between its markers; the rest of the file is left alone) and an SVG
//! chart drawn from the same numbers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::{Build, Config, Extras, Row, Side, Traces};

const BEGIN: &str = "<!-- bench:begin (written by `cargo run --release -p bench -- --report`) -->";
const END: &str = "<!-- bench:end -->";
const CHART: &str = "tests/bench/benchmark.svg";

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row_of(rows: &[Row], config: Config) -> Option<&Row> {
    rows.iter().find(|r| r.config == config)
}

/// Throughput ratio and p99 ratio of a row against its baseline.
fn ratios(rows: &[Row], row: &Row) -> Option<(f64, f64)> {
    let base = row_of(rows, row.config.baseline()?)?;
    Some((
        row.rps / base.rps,
        row.p99.as_secs_f64() / base.p99.as_secs_f64().max(f64::EPSILON),
    ))
}

/// Instructions per request of a row against its baseline's.
fn instructions_ratio(rows: &[Row], row: &Row) -> Option<f64> {
    let base = row_of(rows, row.config.baseline()?)?.instructions?;
    Some(row.instructions? as f64 / base.max(1) as f64)
}

/// Instructions per request of a row against its peer's.
fn instructions_vs_peer(rows: &[Row], row: &Row) -> Option<f64> {
    let peer = row_of(rows, row.config.peer()?)?.instructions?;
    Some(row.instructions? as f64 / peer.max(1) as f64)
}

/// `value` set against the peer's and the uninstrumented baseline's, as far as they are
/// known: `0.47× peer, 2.74× uninstrumented`, or `—`.
fn versus(value: Option<f64>, peer: Option<f64>, baseline: Option<f64>) -> String {
    let Some(value) = value else {
        return "—".to_owned();
    };
    let ratio = |reference: Option<f64>| {
        reference
            .filter(|r| *r > 0.0)
            .map(|r| format!("{:.2}×", value / r))
    };
    match (ratio(peer), ratio(baseline)) {
        (Some(p), Some(b)) => format!("{p} peer, {b} uninstrumented"),
        (Some(p), None) => format!("{p} peer"),
        (None, Some(b)) => format!("{b} uninstrumented"),
        (None, None) => "—".to_owned(),
    }
}

/// What a measure of `config` is compared with: the peer's and the baseline's, from
/// `measure` (`None` when not measured).
fn references(
    config: Config,
    measure: impl Fn(Config) -> Option<f64>,
) -> (Option<f64>, Option<f64>) {
    (
        config.peer().and_then(&measure),
        config.baseline().and_then(&measure),
    )
}

/// The table of `--instructions`: each configuration's count, against its peer and the
/// uninstrumented baseline.
pub fn instructions_table(measured: &[(Config, u64)]) -> String {
    let of = |config: Config| {
        measured
            .iter()
            .find(|(c, _)| *c == config)
            .map(|(_, v)| *v as f64)
    };
    let mut out = String::from(
        "| configuration | instructions per request | vs peer, uninstrumented |\n|---|---:|---:|\n",
    );
    for (config, value) in measured {
        let (peer, baseline) = references(*config, of);
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            config.label(),
            thousands(*value),
            versus(Some(*value as f64), peer, baseline)
        );
    }
    out
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The results as a Markdown table (readable in a terminal too).
pub fn table(rows: &[Row], extras: &Extras) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| configuration | instructions per request | vs peer, uninstrumented | req/s | vs peer, uninstrumented | p50 | p99 | p99 vs uninstrumented | peak RSS | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let rps = |config: Config| row_of(rows, config).map(|r| r.rps);
        let (peer_rps, base_rps) = references(row.config, rps);
        let rps_versus = versus(Some(row.rps), peer_rps, base_rps);
        let p99_ratio = ratios(rows, row).map_or("—".to_owned(), |(_, p)| format!("{p:.2}×"));
        let count = |config: Config| {
            row_of(rows, config)
                .and_then(|r| r.instructions)
                .map(|v| v as f64)
        };
        let (peer_count, base_count) = references(row.config, count);
        let instructions = row.instructions.map_or("—".to_owned(), thousands);
        let instructions_versus =
            versus(row.instructions.map(|v| v as f64), peer_count, base_count);
        let _ = writeln!(
            out,
            "| {} | {instructions} | {instructions_versus} | {:.0} | {rps_versus} | {} | {} | {p99_ratio} | {:.1} MiB | {} |",
            row.config.label(),
            row.rps,
            ms(row.p50),
            ms(row.p99),
            row.peak_rss_kib as f64 / 1024.0,
            row.errors
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| failure path / start-up | median |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| B answers 503 with A down (2 refused connects + backoff) | {} |",
        ms(extras.a_down)
    );
    let _ = writeln!(
        out,
        "| B answers 503 with its breaker open | {} |",
        ms(extras.breaker_open)
    );
    let _ = writeln!(
        out,
        "| B answers 503 with A timing out (2 × 100 ms timeout) | {} |",
        ms(extras.a_timeout)
    );
    let _ = writeln!(
        out,
        "| service A: start to healthy | {} |",
        ms(extras.startup_a)
    );
    let _ = writeln!(
        out,
        "| service B: start to healthy | {} |",
        ms(extras.startup_b)
    );
    out
}

/// Each target of the performance issues, with whether this run met it.
fn targets(rows: &[Row], extras: &Extras) -> String {
    let mut out = String::from("| target | this run | met |\n|---|---|:-:|\n");
    let mut check = |target: &str, value: String, met: bool| {
        let _ = writeln!(
            out,
            "| {target} | {value} | {} |",
            if met { "yes" } else { "**no**" }
        );
    };
    let service = |side, traces| Config::new(side, Build::Service, traces);
    // Issue 26: instructions per request, absolute (they carry over between machines), and
    // against the peer.
    for (config, bound) in [
        (service(Side::A, Traces::OnePercent), 45_000),
        (service(Side::A, Traces::Sampled), 62_000),
        (service(Side::B, Traces::OnePercent), 145_000),
    ] {
        if let Some(row) = row_of(rows, config)
            && let Some(count) = row.instructions
        {
            let ratio = instructions_ratio(rows, row)
                .map_or(String::new(), |r| format!(" ({r:.2}× uninstrumented)"));
            check(
                &format!(
                    "{}: ≤ {} instructions per request",
                    config.label(),
                    thousands(bound)
                ),
                format!("{}{ratio}", thousands(count)),
                count <= bound,
            );
        }
    }
    for row in rows.iter().filter(|r| r.config.build == Build::Service) {
        if let Some(ratio) = instructions_vs_peer(rows, row) {
            check(
                &format!("{}: instructions ≤ 0.4 × the peer's", row.config.label()),
                format!("{ratio:.2}×"),
                ratio <= 0.4,
            );
        }
    }
    // Earlier rounds: throughput, latency and memory against the uninstrumented baseline.
    for (config, bound) in [
        (Config::SERVICE_A, 0.85),
        (Config::SERVICE_B, 0.75),
        (service(Side::B, Traces::Exported), 0.7),
    ] {
        if let Some((ratio, _)) = row_of(rows, config).and_then(|r| ratios(rows, r)) {
            check(
                &format!("{}: throughput ≥ {bound} × baseline", config.label()),
                format!("{ratio:.2}×"),
                ratio >= bound,
            );
        }
    }
    for config in [Config::SERVICE_A, Config::SERVICE_B] {
        if let Some((_, p99)) = row_of(rows, config).and_then(|r| ratios(rows, r)) {
            check(
                &format!("{}: p99 ≤ 1.5 × baseline p99", config.label()),
                format!("{p99:.2}×"),
                p99 <= 1.5,
            );
        }
    }
    for row in rows.iter().filter(|r| r.config.build == Build::Service) {
        let mib = row.peak_rss_kib as f64 / 1024.0;
        check(
            &format!("{}: peak RSS < 25 MiB", row.config.label()),
            format!("{mib:.1} MiB"),
            mib < 25.0,
        );
    }
    check(
        "B with A down: median 503 < 20 ms",
        ms(extras.a_down),
        extras.a_down < Duration::from_millis(20),
    );
    let startup = extras.startup_a.max(extras.startup_b);
    check(
        "start-up to healthy < 100 ms",
        ms(startup),
        startup < Duration::from_millis(100),
    );
    out
}

/// Rewrites the results block of BENCHMARKS.md and the chart.
pub fn write(
    root: &Path,
    rows: &[Row],
    extras: &Extras,
    rounds: usize,
    duration: Duration,
    connections: u32,
    requests: u64,
) -> Result<(), String> {
    let path = root.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| format!("# Benchmarks\n\n{BEGIN}\n{END}\n"));
    let (Some(start), Some(end)) = (existing.find(BEGIN), existing.find(END)) else {
        return Err(format!("{} has no {BEGIN} … {END} block", path.display()));
    };
    let mut block = String::new();
    let _ = writeln!(block, "{BEGIN}\n");
    let _ = writeln!(block, "Measured {} on {}.", today(), machine());
    let _ = writeln!(
        block,
        "{rounds} interleaved rounds of {} s per configuration, wrk with 1 thread and {connections} connections; medians over the rounds; peak RSS is the highest over the rounds. Instructions per request: callgrind on the measured process (B's rows: B alone), {requests} sequential requests over one keep-alive connection counted after {warm_up} uncounted ones (start-up and shutdown not counted). Each service row is set against the idiomatic peer in the same setup and against the uninstrumented baseline; \"1% sampled\" is `OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01`, \"+ OTLP export\" exports every span (both processes, for B) to a local receiver.\n",
        duration.as_secs(),
        warm_up = crate::instructions::WARM_UP,
    );
    block.push_str(&table(rows, extras));
    let _ = writeln!(
        block,
        "\n![throughput, p99 and instructions per request: baseline (grey), peer (orange), service (blue)]({CHART})\n"
    );
    block.push_str(&targets(rows, extras));
    let _ = write!(block, "\n{END}");
    let updated = format!(
        "{}{block}{}",
        &existing[..start],
        &existing[end + END.len()..]
    );
    std::fs::write(&path, updated).map_err(|e| e.to_string())?;
    std::fs::write(root.join(CHART), chart(rows)).map_err(|e| e.to_string())
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores of {cpu}, {mem_gib:.0} GiB")
}

/// Three horizontal bar charts side by side: throughput, p99 and instructions per request,
/// one bar per configuration.
fn chart(rows: &[Row]) -> String {
    let (width, bar_h, gap, label_w, plot_w) = (1240.0, 22.0, 8.0, 260.0, 260.0);
    let height = 50.0 + rows.len() as f64 * (bar_h + gap);
    let max_rps = rows.iter().map(|r| r.rps).fold(1.0, f64::max);
    let max_p99 = rows
        .iter()
        .map(|r| r.p99.as_secs_f64() * 1000.0)
        .fold(0.001, f64::max);
    let max_instructions = rows.iter().filter_map(|r| r.instructions).fold(1, u64::max) as f64;
    let x3 = label_w + 2.0 * (plot_w + 60.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{label_w}" y="20" font-weight="bold">throughput (requests/s, higher is better)</text>
<text x="{}" y="20" font-weight="bold">p99 latency (ms, lower is better)</text>
<text x="{x3}" y="20" font-weight="bold">instructions per request (lower is better)</text>
"#,
        label_w + plot_w + 60.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = 35.0 + i as f64 * (bar_h + gap);
        let color = match row.config.build {
            Build::Baseline => "#9e9e9e",
            Build::Peer => "#ff7f0e",
            Build::Service => "#1f77b4",
        };
        let rps_w = plot_w * row.rps / max_rps;
        let p99 = row.p99.as_secs_f64() * 1000.0;
        let p99_w = plot_w * p99 / max_p99;
        let x2 = label_w + plot_w + 60.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>
<rect x="{label_w}" y="{y}" width="{rps_w:.1}" height="{bar_h}" fill="{color}"/>
<text x="{:.1}" y="{}">{:.0}</text>
<rect x="{x2}" y="{y}" width="{p99_w:.1}" height="{bar_h}" fill="{color}"/>
<text x="{:.1}" y="{}">{p99:.2}</text>
"#,
            label_w - 8.0,
            y + 15.0,
            row.config.label(),
            label_w + rps_w + 4.0,
            y + 15.0,
            row.rps,
            x2 + p99_w + 4.0,
            y + 15.0,
        );
        if let Some(instructions) = row.instructions {
            let w = plot_w * instructions as f64 / max_instructions;
            let _ = write!(
                svg,
                r#"<rect x="{x3}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{color}"/>
<text x="{:.1}" y="{}">{}</text>
"#,
                x3 + w + 4.0,
                y + 15.0,
                thousands(instructions),
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_set_against_its_peer_and_the_baseline() {
        let measured = [
            (Config::BASELINE_A, 28_000),
            (Config::new(Side::A, Build::Peer, Traces::Sampled), 160_000),
            (Config::SERVICE_A, 80_000),
            (
                Config::new(Side::A, Build::Service, Traces::OnePercent),
                70_000,
            ),
        ];
        let table = instructions_table(&measured);
        assert!(
            table.contains(
                "| service A   POST /token | 80,000 | 0.50× peer, 2.86× uninstrumented |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| peer A      POST /token | 160,000 | 5.71× uninstrumented |"),
            "{table}"
        );
        assert!(
            table.contains("| baseline A  POST /token | 28,000 | — |"),
            "{table}"
        );
        // Its peer at 1% was not measured: the baseline alone.
        assert!(
            table.contains("| service A   1% sampled | 70,000 | 2.50× uninstrumented |"),
            "{table}"
        );
    }

    #[test]
    fn thousands_are_separated() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (106_512, "106,512"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }
}
