//! `traffic`: sends service B a steady mix of the lab's scenarios (success, wrong password,
//! slow, timeout) at a fixed rate, shows progress, and prints a summary at the end (or on
//! Ctrl-C): requests by scenario and status, and latency percentiles.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use traffic::{Mix, Scenario, percentile};

/// Drive service B with a mix of the lab's scenarios.
#[derive(Debug, Parser)]
#[command(name = "traffic", version, about)]
struct Args {
    /// Base URL of service B.
    #[arg(long, env = "TRAFFIC_TARGET", default_value = "http://127.0.0.1:8081")]
    target: String,

    /// Requests per second, from 0.1 to 10000 (open loop: sent on schedule whether or not
    /// earlier ones answered).
    #[arg(long, env = "TRAFFIC_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    rate: f64,

    /// How long to run, in seconds; 0 runs until Ctrl-C or SIGTERM.
    #[arg(long, env = "TRAFFIC_DURATION", default_value_t = 60)]
    duration: u64,

    /// Scenario weights: success, wrong_password, slow, timeout.
    #[arg(
        long,
        env = "TRAFFIC_MIX",
        default_value = "success=70,wrong_password=10,slow=15,timeout=5"
    )]
    mix: Mix,

    /// `delay_ms` of the slow scenario (below B's per-attempt timeout).
    #[arg(long, env = "TRAFFIC_SLOW_MS", default_value_t = 300)]
    slow_ms: u64,

    /// `delay_ms` of the timeout scenario (above B's per-attempt timeout).
    #[arg(long, env = "TRAFFIC_TIMEOUT_MS", default_value_t = 2000)]
    timeout_ms: u64,

    /// Send every wrong password to this username (a brute-force run: A throttles it)
    /// instead of spreading them over throwaway names.
    #[arg(long, env = "TRAFFIC_GUESS_USER")]
    guess_user: Option<String>,

    /// Most requests in flight at once; beyond it a tick is skipped (and counted), so a stuck
    /// B cannot make the generator grow without bound.
    #[arg(long, env = "TRAFFIC_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,

    /// Read more of these arguments from standard input, one per line, after the command
    /// line's: what `lab start` uses, so that `ps` shows no mystery lab's traffic.
    #[arg(long)]
    args_from_stdin: bool,
}

/// The command line's arguments, and with `--args-from-stdin` those read from standard
/// input (one per line, to the end), parsed together.
fn parse_args() -> Args {
    let mut all: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if Args::parse_from(&all).args_from_stdin {
        all.extend(
            std::io::stdin()
                .lines()
                .map_while(Result::ok)
                .filter(|line| !line.is_empty())
                .map(Into::into),
        );
    }
    Args::parse_from(all)
}

#[derive(Default)]
struct Results {
    /// (scenario, status or "error") → latencies.
    latencies: BTreeMap<(Scenario, String), Vec<Duration>>,
    skipped: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = parse_args();
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        eprintln!("traffic: --rate must be above 0");
        return std::process::ExitCode::FAILURE;
    }
    let url = format!("{}/protected-action", args.target.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("traffic: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let planned = (args.duration > 0).then(|| (args.rate * args.duration as f64).round() as u64);
    let progress = progress_bar(planned);
    let results = Arc::new(Mutex::new(Results::default()));
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    // A run of a set length sends rate × duration requests, catching up on ticks a busy
    // machine missed (as vegeta does); an endless one skips them rather than burst.
    tick.set_missed_tick_behavior(if planned.is_some() {
        tokio::time::MissedTickBehavior::Burst
    } else {
        tokio::time::MissedTickBehavior::Skip
    });
    let mut schedule = args.mix.schedule();
    let mut sent: u64 = 0;
    let mut last_report = Instant::now();
    let quiet_terminal = !std::io::stderr().is_terminal();
    let stop = stop_signal();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => break,
        }
        // A planned request skipped at the in-flight limit counts towards the plan.
        let skipped = results.lock().map_or(0, |r| r.skipped);
        if planned.is_some_and(|n| sent + skipped >= n) {
            break;
        }
        let Some(scenario) = schedule.next() else {
            break;
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            results.lock().map(|mut r| r.skipped += 1).ok();
            continue;
        };
        let request = client.post(&url).json(&scenario.body(
            sent,
            args.slow_ms,
            args.timeout_ms,
            args.guess_user.as_deref(),
        ));
        sent += 1;
        let results = results.clone();
        let bar = progress.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16().to_string();
                    let _ = response.bytes().await;
                    status
                }
                Err(_) => "error".to_owned(),
            };
            if let Ok(mut r) = results.lock() {
                r.latencies
                    .entry((scenario, outcome))
                    .or_default()
                    .push(sent.elapsed());
            }
            bar.inc(1);
            drop(permit);
        });
        if quiet_terminal && last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "traffic: {} answered after {:.0?}",
                progress.position(),
                started.elapsed()
            );
        }
    }
    let sending = started.elapsed();
    // Let requests already sent finish (bounded by the client timeout).
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        in_flight.acquire_many(u32::try_from(args.max_in_flight).unwrap_or(u32::MAX)),
    )
    .await;
    progress.finish_and_clear();
    let results = results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    print_summary(&results, sending, started.elapsed());
    std::process::ExitCode::SUCCESS
}

/// `--rate`: a positive number of requests per second the scheduler can keep.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.1..=10_000.0).contains(&rate) => Ok(rate),
        _ => Err("expected requests per second from 0.1 to 10000".into()),
    }
}

fn progress_bar(planned: Option<u64>) -> ProgressBar {
    match planned {
        Some(n) => {
            let bar = ProgressBar::new(n);
            if let Ok(style) =
                ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} answered")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let spinner = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} {pos} answered (Ctrl-C to stop)",
            ) {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(Duration::from_millis(200));
            spinner
        }
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The rate line: sent per second while sending (what `--rate` asked for), then the whole run
/// including the wait for the last, slowest answers (so lower than `--rate` when some
/// requests are slow).
fn print_summary(results: &Results, sending: Duration, elapsed: Duration) {
    let total: usize = results.latencies.values().map(Vec::len).sum();
    let per_second = |d: Duration| total as f64 / d.as_secs_f64().max(f64::EPSILON);
    println!(
        "{total} requests sent in {:.1}s ({:.1}/s); {:.1}s with the wait for the last answers{}",
        sending.as_secs_f64(),
        per_second(sending),
        elapsed.as_secs_f64(),
        if results.skipped > 0 {
            format!(", {} skipped at the in-flight limit", results.skipped)
        } else {
            String::new()
        }
    );
    println!(
        "{:<16} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "status", "count", "p50", "p90", "p99", "max"
    );
    let mut all = Vec::new();
    for ((scenario, status), latencies) in &results.latencies {
        let mut sorted = latencies.clone();
        sorted.sort();
        print_row(scenario.name(), status, &sorted);
        all.extend(sorted);
    }
    all.sort();
    print_row("all", "", &all);
}

fn print_row(name: &str, status: &str, sorted: &[Duration]) {
    let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
    println!(
        "{name:<16} {status:>6} {:>7} {:>9} {:>9} {:>9} {:>9}",
        sorted.len(),
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.9)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    );
}
