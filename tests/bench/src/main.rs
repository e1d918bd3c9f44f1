//! `bench`: how fast are A and B next to the same work done with no instrumentation at all
//! (`baseline.rs`), and next to the same work instrumented the way the ecosystem's docs do it
//! (`peer.rs`), on this machine, in this run? See BENCHMARKS.md for the latest figures and
//! how to read them. Run with `cargo run --release -p bench` (add `-- --report` to rewrite
//! BENCHMARKS.md and its chart).
//!
//! Every configuration is measured in every round, interleaved (for A, then for B: baseline,
//! peer, service, peer and service at 1% sampling, peer and service with OTLP export), and
//! the table shows medians over the rounds, because a shared machine is noisy.

mod baseline;
mod instructions;
mod peer;
mod report;
mod wrk;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Benchmark services A and B against an uninstrumented baseline and an idiomatic peer.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    version,
    about,
    after_help = "A default run takes about five and a half minutes after the release build: \
                  3 rounds × 15 configurations × 5 s of load, the failure-path and start-up \
                  samples, then instructions per request for every configuration (with \
                  valgrind, about a minute). --smoke takes about 20 s. --instructions counts \
                  instructions alone; --instructions --check only the budget's six \
                  configurations (about 25 s)."
)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,

    /// Rounds; each measures every configuration once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,

    /// Concurrent connections wrk keeps open.
    #[arg(long, default_value_t = 32)]
    connections: u32,

    /// A quick run that only shows the benchmark works (1 round of 1 s, few samples).
    #[arg(long)]
    smoke: bool,

    /// Rewrite BENCHMARKS.md and tests/bench/benchmark.svg with this run's figures.
    #[arg(long)]
    report: bool,

    /// Where the service binaries are; by default they are built with the benchmark's own
    /// profile and taken from next to it.
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Count CPU instructions per request instead (valgrind's callgrind; steady where
    /// requests per second are not): every configuration, or with --check or --write-budget
    /// only those in the budget (baselines, services at 100% and 1% sampling).
    #[arg(long)]
    instructions: bool,

    /// Sequential requests per instruction count (--instructions, and the full run's
    /// instructions column).
    #[arg(long, default_value_t = 2000)]
    requests: u64,

    /// With --instructions: fail when a service needs more than 110% of its committed
    /// figure in tests/bench/instructions.txt.
    #[arg(long)]
    check: bool,

    /// With --instructions: write this run's figures to tests/bench/instructions.txt.
    #[arg(long)]
    write_budget: bool,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) Serve the uninstrumented baseline A.
    #[command(hide = true)]
    BaselineA {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// (internal) Serve the uninstrumented baseline B.
    #[command(hide = true)]
    BaselineB {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        provider: String,
    },
    /// (internal) Serve the idiomatic peer A.
    #[command(hide = true)]
    PeerA {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// (internal) Serve the idiomatic peer B.
    #[command(hide = true)]
    PeerB {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        provider: String,
    },
}

/// Which service a configuration measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `POST /token`.
    A,
    /// `POST /protected-action`, B's process (A runs beside it, built the same way).
    B,
    /// The same, with three replicas of A given to B as a list: B's choice of an endpoint
    /// per attempt (its fleet) at work. Only the service has one.
    BFleet,
}

impl Side {
    /// The same service over one A.
    pub fn single(self) -> Self {
        match self {
            Self::BFleet => Self::B,
            side => side,
        }
    }
}

/// Whose implementation serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Uninstrumented (`src/baseline.rs`).
    Baseline,
    /// Instrumented the way the ecosystem's docs and examples do it (`src/peer.rs`).
    Peer,
    /// This project's service, with its defaults: JSON logs to a file, metrics, spans.
    Service,
}

/// What happens to the traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traces {
    /// The default: every request sampled, nothing exported.
    Sampled,
    /// One trace in a hundred sampled:
    /// `OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01`.
    OnePercent,
    /// Every request sampled, and exported over OTLP/HTTP to the benchmark's receiver
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`), by both processes of the B configurations.
    Exported,
}

/// One measured configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Which service.
    pub side: Side,
    /// Whose.
    pub build: Build,
    /// With which traces (always [`Traces::Sampled`] for the baseline, which has none).
    pub traces: Traces,
}

impl Config {
    pub const fn new(side: Side, build: Build, traces: Traces) -> Self {
        Self {
            side,
            build,
            traces,
        }
    }

    /// Uninstrumented A.
    pub const BASELINE_A: Self = Self::new(Side::A, Build::Baseline, Traces::Sampled);
    /// Service A with its defaults.
    pub const SERVICE_A: Self = Self::new(Side::A, Build::Service, Traces::Sampled);
    /// Uninstrumented B calling uninstrumented A.
    pub const BASELINE_B: Self = Self::new(Side::B, Build::Baseline, Traces::Sampled);
    /// Service B calling service A, both with their defaults.
    pub const SERVICE_B: Self = Self::new(Side::B, Build::Service, Traces::Sampled);
    /// Service B over three replicas of service A.
    pub const SERVICE_B_FLEET: Self = Self::new(Side::BFleet, Build::Service, Traces::Sampled);

    /// Every configuration, in the order each round measures them (and the table lists
    /// them): for each service, the baseline, then peer and service side by side in each
    /// tracing setup.
    pub const ALL: [Self; 15] = [
        Self::BASELINE_A,
        Self::new(Side::A, Build::Peer, Traces::Sampled),
        Self::SERVICE_A,
        Self::new(Side::A, Build::Peer, Traces::OnePercent),
        Self::new(Side::A, Build::Service, Traces::OnePercent),
        Self::new(Side::A, Build::Peer, Traces::Exported),
        Self::new(Side::A, Build::Service, Traces::Exported),
        Self::BASELINE_B,
        Self::new(Side::B, Build::Peer, Traces::Sampled),
        Self::SERVICE_B,
        Self::new(Side::B, Build::Peer, Traces::OnePercent),
        Self::new(Side::B, Build::Service, Traces::OnePercent),
        Self::new(Side::B, Build::Peer, Traces::Exported),
        Self::new(Side::B, Build::Service, Traces::Exported),
        Self::SERVICE_B_FLEET,
    ];

    /// Row label, e.g. `service A   1% sampled`.
    pub fn label(self) -> String {
        let side = match self.side {
            Side::A => "A",
            Side::B | Side::BFleet => "B",
        };
        let build = match self.build {
            Build::Baseline => "baseline",
            Build::Peer => "peer",
            Build::Service => "service",
        };
        let what = match (self.traces, self.side) {
            (Traces::Sampled, Side::A) => "POST /token",
            (Traces::Sampled, Side::B) => "POST /protected-action",
            (Traces::Sampled, Side::BFleet) => "over 3 replicas of A",
            (Traces::OnePercent, _) => "1% sampled",
            (Traces::Exported, _) => "+ OTLP export",
        };
        format!("{:<12}{what}", format!("{build} {side}"))
    }

    /// The uninstrumented configuration this one is compared with (B over one A, for B
    /// over three).
    pub fn baseline(self) -> Option<Self> {
        (self.build != Build::Baseline)
            .then(|| Self::new(self.side.single(), Build::Baseline, Traces::Sampled))
    }

    /// The idiomatic peer in the same setup, which a service is compared with (over one A,
    /// for B over three).
    pub fn peer(self) -> Option<Self> {
        (self.build == Build::Service)
            .then(|| Self::new(self.side.single(), Build::Peer, self.traces))
    }

    /// The environment the configuration's processes get (both of them, for B): the
    /// variable names the services honour (`telemetry/src/observe/otel_env/`) and the
    /// OpenTelemetry SDK reads for the peer.
    fn env(self, sink: &str) -> Vec<(&'static str, String)> {
        match self.traces {
            Traces::Sampled => Vec::new(),
            Traces::OnePercent => vec![
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01".to_owned()),
            ],
            Traces::Exported => vec![("OTEL_EXPORTER_OTLP_ENDPOINT", sink.to_owned())],
        }
    }
}

/// Medians of one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Which.
    pub config: Config,
    /// Median requests/s.
    pub rps: f64,
    /// Median p50.
    pub p50: Duration,
    /// Median p99.
    pub p99: Duration,
    /// Highest peak RSS of the measured process over the rounds, KiB.
    pub peak_rss_kib: u64,
    /// Errors seen by wrk over all rounds.
    pub errors: u64,
    /// Instructions per request (callgrind), when counted: not in `--smoke` runs, nor
    /// without valgrind.
    pub instructions: Option<u64>,
}

/// The failure paths and start-up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// B's 503 with A down (two refused connects and the backoff), median.
    pub a_down: Duration,
    /// B's 503 with the breaker open, median.
    pub breaker_open: Duration,
    /// B's 503 with A timing out (2 × 100 ms timeout), median.
    pub a_timeout: Duration,
    /// Start to healthy, service A, median.
    pub startup_a: Duration,
    /// Start to healthy, service B, median.
    pub startup_b: Duration,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.role {
        Some(Role::BaselineA { listen }) => {
            return exit(runtime.block_on(baseline::serve_a(listen)));
        }
        Some(Role::BaselineB { listen, provider }) => {
            return exit(runtime.block_on(baseline::serve_b(listen, provider)));
        }
        Some(Role::PeerA { listen }) => {
            return exit(runtime.block_on(peer::serve_a(listen)));
        }
        Some(Role::PeerB { listen, provider }) => {
            return exit(runtime.block_on(peer::serve_b(listen, provider)));
        }
        None => {}
    }
    match runtime.block_on(run(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn exit(result: std::io::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    if args.instructions {
        return run_instructions(args).await;
    }
    let bins = binaries(args)?;
    let (rounds, duration, samples) = if args.smoke {
        (1, Duration::from_secs(1), 5)
    } else {
        (args.rounds, Duration::from_secs(args.duration), 200)
    };
    let scratch = std::env::temp_dir().join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let otlp = otlp_sink().await?;
    let sink = otlp.url.as_str();

    let mut measured: Vec<(Config, wrk::Load, u64)> = Vec::new();
    for round in 1..=rounds {
        for config in Config::ALL {
            eprintln!("round {round}/{rounds}: {}", config.label());
            let exported = otlp.received();
            let (load, rss) = measure(
                config,
                &bins,
                sink,
                duration,
                args.connections,
                &scratch,
                !args.smoke,
            )
            .await?;
            if config.traces == Traces::Exported {
                otlp.check_exported(exported, config)?;
            }
            measured.push((config, load, rss));
        }
    }
    let mut rows: Vec<Row> = Config::ALL
        .iter()
        .map(|&config| {
            let runs: Vec<&(Config, wrk::Load, u64)> =
                measured.iter().filter(|m| m.0 == config).collect();
            Row {
                config,
                rps: median_f64(runs.iter().map(|r| r.1.rps).collect()),
                p50: median(runs.iter().map(|r| r.1.p50).collect()),
                p99: median(runs.iter().map(|r| r.1.p99).collect()),
                peak_rss_kib: runs.iter().map(|r| r.2).max().unwrap_or(0),
                errors: runs.iter().map(|r| r.1.errors).sum(),
                instructions: None,
            }
        })
        .collect();
    eprintln!("failure paths and start-up");
    let extras = extras(&bins, samples, &scratch).await?;
    // Not in a smoke run: debug binaries under valgrind take minutes and say nothing.
    if !args.smoke && instructions::available() {
        for row in &mut rows {
            eprintln!("counting instructions: {}", row.config.label());
            let exported = otlp.received();
            row.instructions = Some(
                instructions::per_request(row.config, &bins, sink, &scratch, args.requests).await?,
            );
            if row.config.traces == Traces::Exported {
                otlp.check_exported(exported, row.config)?;
            }
        }
    } else if !args.smoke {
        eprintln!(
            "valgrind is not installed: no instructions per request (apt-get install -y valgrind)"
        );
    }

    let table = report::table(&rows, &extras);
    println!("{table}");
    if args.report {
        let root = workspace_root();
        report::write(
            &root,
            &rows,
            &extras,
            rounds,
            duration,
            args.connections,
            args.requests,
        )?;
        eprintln!("wrote BENCHMARKS.md and tests/bench/benchmark.svg");
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `--instructions`: instructions per request of each configuration, and the budget check.
async fn run_instructions(args: &Args) -> Result<(), String> {
    if !instructions::available() {
        return Err("valgrind is needed for --instructions (apt-get install -y valgrind)".into());
    }
    let bins = binaries(args)?;
    let scratch = std::env::temp_dir().join(format!("bench-ir-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let otlp = otlp_sink().await?;
    let sink = otlp.url.as_str();
    // A budget is the highest of three runs: counts still move by a few percent from run to
    // run (hash seeds, ids, timers), and a budget taken from a low run would fail later
    // ones that are no worse.
    let runs = if args.write_budget {
        instructions::BUDGET_RUNS
    } else {
        1
    };
    // The budget's configurations alone when checking or writing it (CI waits for this);
    // every configuration otherwise.
    let configs: &[Config] = if args.check || args.write_budget {
        &instructions::CONFIGS
    } else {
        &Config::ALL
    };
    let mut measured = Vec::new();
    for &config in configs {
        let mut highest = 0;
        for run in 1..=runs {
            eprintln!("counting instructions: {} ({run}/{runs})", config.label());
            let exported = otlp.received();
            let value =
                instructions::per_request(config, &bins, sink, &scratch, args.requests).await?;
            if config.traces == Traces::Exported {
                otlp.check_exported(exported, config)?;
            }
            highest = highest.max(value);
        }
        measured.push((config, highest));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    print!("{}", report::instructions_table(&measured));
    let budget_path = workspace_root().join(instructions::BUDGET_FILE);
    if args.write_budget {
        std::fs::write(
            &budget_path,
            instructions::write_budget(&measured, args.requests),
        )
        .map_err(|e| e.to_string())?;
        eprintln!("wrote {}", instructions::BUDGET_FILE);
    }
    if args.check {
        let text = std::fs::read_to_string(&budget_path)
            .map_err(|e| format!("{}: {e}", instructions::BUDGET_FILE))?;
        let over = instructions::over_budget(&measured, &instructions::read_budget(&text));
        if !over.is_empty() {
            return Err(format!("over the instruction budget:\n{}", over.join("\n")));
        }
        eprintln!(
            "within the instruction budget ({})",
            instructions::BUDGET_FILE
        );
    }
    Ok(())
}

/// The path and body each configuration is measured with.
pub(crate) fn request_of(config: Config) -> (&'static str, &'static str) {
    match config.side {
        Side::A => ("/token", r#"{"username":"divya","password":"pass123"}"#),
        Side::B | Side::BFleet => (
            "/protected-action",
            r#"{"username":"divya","password":"pass123","action":"ping"}"#,
        ),
    }
}

/// The directory holding `service-a` and `service-b`, built if needed.
fn binaries(args: &Args) -> Result<PathBuf, String> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .ok_or("no directory for the benchmark binary")?
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "service-a", "-p", "service-b"])
        .current_dir(workspace_root());
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the services failed".into());
    }
    Ok(dir)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

fn spawn(command: &mut Command, log: Option<&Path>) -> Result<Process, String> {
    let stdout = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).map_err(|e| e.to_string())?),
        None => Stdio::null(),
    };
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .env_remove("RUST_LOG");
    // No OpenTelemetry setting (export, sampler) unless the configuration gives it,
    // whatever the benchmark's own environment holds. (Removing the endpoint
    // unconditionally, after the export configuration had set it, once meant that
    // configuration exported nothing.)
    for (name, _) in std::env::vars_os() {
        let given = command
            .get_envs()
            .any(|(set, value)| set == name && value.is_some());
        if name.to_string_lossy().starts_with("OTEL_") && !given {
            command.env_remove(name);
        }
    }
    command
        .spawn()
        .map(Process)
        .map_err(|e| format!("cannot start {command:?}: {e}"))
}

/// Waits until `GET /health` answers, returning how long it took.
async fn wait_healthy(addr: SocketAddr) -> Result<Duration, String> {
    wait_healthy_within(addr, Duration::from_secs(10)).await
}

/// [`wait_healthy`], waiting at most `limit` (a process under valgrind starts slowly).
pub(crate) async fn wait_healthy_within(
    addr: SocketAddr,
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    while started.elapsed() < limit {
        if client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("{addr} did not become healthy"))
}

/// Starts the processes `config` needs on free ports: A (or baseline A), and for the B
/// configurations B (or baseline B) calling it. Returns them with the measured process's
/// address and pid.
fn start_pair(
    config: Config,
    bins: &Path,
    sink: &str,
    scratch: &Path,
) -> Result<(Vec<Process>, SocketAddr, u32), String> {
    start_pair_under(config, bins, sink, scratch, &[])
}

/// [`start_pair`], with the measured process (A for the A configurations, B for the B ones)
/// run by `wrapper` (e.g. valgrind); the others run as they are.
fn start_pair_under(
    config: Config,
    bins: &Path,
    sink: &str,
    scratch: &Path,
    wrapper: &[String],
) -> Result<(Vec<Process>, SocketAddr, u32), String> {
    let measured_a = config.side == Side::A;
    // The command for `program`, run by the wrapper when it is the measured process.
    let command = |program: &Path, measured: bool| match wrapper.split_first() {
        Some((first, rest)) if measured => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        _ => Command::new(program),
    };
    let (a_addr, b_addr) = (free_addr()?, free_addr()?);
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let env = config.env(sink);
    // The logs of the peer and the services go to a file, as they would in production; the
    // baseline writes none.
    let log = |name: &str| {
        let side = match config.side {
            Side::A => "a",
            Side::B => "b",
            Side::BFleet => "b-fleet",
        };
        scratch.join(format!("{name}-{side}.log"))
    };
    let a = match config.build {
        Build::Baseline => spawn(
            command(&me, measured_a).args(["baseline-a", "--listen", &a_addr.to_string()]),
            None,
        )?,
        Build::Peer => spawn(
            command(&me, measured_a)
                .args(["peer-a", "--listen", &a_addr.to_string()])
                .envs(env.iter().map(|(k, v)| (k, v))),
            Some(&log("peer-a")),
        )?,
        Build::Service => spawn(
            command(&bins.join("service-a"), measured_a)
                .args(["--listen", &a_addr.to_string()])
                .envs(env.iter().map(|(k, v)| (k, v))),
            Some(&log("service-a")),
        )?,
    };
    let mut processes = vec![a];
    if config.side == Side::A {
        let pid = processes[0].0.id();
        return Ok((processes, a_addr, pid));
    }
    let mut provider = format!("http://{a_addr}");
    if config.side == Side::BFleet && config.build == Build::Service {
        // Two more replicas of A, each with its own log.
        for replica in 2..=3 {
            let addr = free_addr()?;
            processes.push(spawn(
                command(&bins.join("service-a"), false)
                    .args(["--listen", &addr.to_string()])
                    .envs(env.iter().map(|(k, v)| (k, v))),
                Some(&log(&format!("service-a{replica}"))),
            )?);
            provider.push_str(&format!(",http://{addr}"));
        }
    }
    let b_listen = b_addr.to_string();
    let target = match config.build {
        Build::Baseline => spawn(
            command(&me, true).args(["baseline-b", "--listen", &b_listen, "--provider", &provider]),
            None,
        )?,
        Build::Peer => spawn(
            command(&me, true)
                .args(["peer-b", "--listen", &b_listen, "--provider", &provider])
                .envs(env.iter().map(|(k, v)| (k, v))),
            Some(&log("peer-b")),
        )?,
        Build::Service => spawn(
            command(&bins.join("service-b"), true)
                .args(["--listen", &b_listen, "--provider-url", &provider])
                .envs(env.iter().map(|(k, v)| (k, v))),
            Some(&log("service-b")),
        )?,
    };
    let pid = target.0.id();
    processes.push(target);
    Ok((processes, b_addr, pid))
}

async fn measure(
    config: Config,
    bins: &Path,
    sink: &str,
    duration: Duration,
    connections: u32,
    scratch: &Path,
    warm_up: bool,
) -> Result<(wrk::Load, u64), String> {
    let (processes, addr, pid) = start_pair(config, bins, sink, scratch)?;
    wait_healthy(addr).await?;
    let (path, body) = request_of(config);
    let url = format!("http://{addr}{path}");
    if warm_up {
        wrk::run(&url, body, Duration::from_secs(1), connections, scratch)?;
    }
    let load = tokio::task::spawn_blocking({
        let (url, scratch) = (url.clone(), scratch.to_path_buf());
        move || wrk::run(&url, body, duration, connections, &scratch)
    })
    .await
    .map_err(|e| e.to_string())??;
    let rss = peak_rss_kib(pid);
    drop(processes);
    Ok((load, rss))
}

/// Peak resident set size (VmHWM) of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A stand-in collector that accepts OTLP/HTTP and discards it.
async fn otlp_sink() -> Result<Sink, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            counter.fetch_add(body.len() as u64, Ordering::Relaxed);
            ""
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Sink { url, received })
}

/// The OTLP receiver of the export configuration: it takes every batch and counts its bytes,
/// so the benchmark can tell that the export configuration did export.
struct Sink {
    url: String,
    received: Arc<AtomicU64>,
}

impl Sink {
    /// Bytes received so far.
    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// An error unless more than `before` bytes have arrived since `config` started.
    fn check_exported(&self, before: u64, config: Config) -> Result<(), String> {
        if self.received() > before {
            Ok(())
        } else {
            Err(format!(
                "{}: no spans reached the OTLP receiver",
                config.label()
            ))
        }
    }
}

async fn extras(bins: &Path, samples: usize, scratch: &Path) -> Result<Extras, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let body = serde_json::json!({"username": "divya", "password": "pass123"});
    let time_503s = |url: String, body: serde_json::Value, n: usize| {
        let client = client.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..n {
                let started = Instant::now();
                let reply = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = reply.status();
                let _ = reply.bytes().await;
                if status != 503 {
                    return Err(format!("expected 503, got {status}"));
                }
                times.push(started.elapsed());
            }
            Ok::<Duration, String>(median(times))
        }
    };

    // A down: nothing listens where B calls. The breaker is off and the retry budget
    // unlimited, so every one of these back-to-back calls takes the full path (two refused
    // connects and the backoff); then the breaker on, to time its fast path.
    let vacant = format!("http://{}", free_addr()?);
    let b_addr = free_addr()?;
    let b = spawn(
        Command::new(bins.join("service-b")).args([
            "--listen",
            &b_addr.to_string(),
            "--provider-url",
            &vacant,
            "--breaker-threshold",
            "0",
            // Unlimited retry budget: every call takes the full two-attempt path.
            "--retry-budget-min-per-sec",
            "1000000",
        ]),
        Some(&scratch.join("b-down.log")),
    )?;
    wait_healthy(b_addr).await?;
    let a_down = time_503s(
        format!("http://{b_addr}/protected-action"),
        body.clone(),
        samples,
    )
    .await?;
    drop(b);
    let b_addr = free_addr()?;
    let b = spawn(
        Command::new(bins.join("service-b")).args([
            "--listen",
            &b_addr.to_string(),
            "--provider-url",
            &vacant,
            "--breaker-cooldown-ms",
            "600000",
        ]),
        Some(&scratch.join("b-breaker.log")),
    )?;
    wait_healthy(b_addr).await?;
    time_503s(format!("http://{b_addr}/protected-action"), body.clone(), 5).await?;
    let breaker_open = time_503s(
        format!("http://{b_addr}/protected-action"),
        body.clone(),
        samples,
    )
    .await?;
    drop(b);

    // A timing out: 100 ms per attempt, A asked to wait 200 ms.
    let (a_addr, b_addr) = (free_addr()?, free_addr()?);
    let a = spawn(
        Command::new(bins.join("service-a")).args(["--listen", &a_addr.to_string()]),
        Some(&scratch.join("a-slow.log")),
    )?;
    let b = spawn(
        Command::new(bins.join("service-b")).args([
            "--listen",
            &b_addr.to_string(),
            "--provider-url",
            &format!("http://{a_addr}"),
            "--provider-timeout-ms",
            "100",
            "--breaker-threshold",
            "0",
            // Unlimited retry budget: every call takes the full two-attempt path.
            "--retry-budget-min-per-sec",
            "1000000",
        ]),
        Some(&scratch.join("b-slow.log")),
    )?;
    wait_healthy(a_addr).await?;
    wait_healthy(b_addr).await?;
    let slow = serde_json::json!({"username": "divya", "password": "pass123", "delay_ms": 200});
    let a_timeout = time_503s(
        format!("http://{b_addr}/protected-action"),
        slow,
        samples.min(20),
    )
    .await?;
    drop((a, b));

    // Start-up: exec to first healthy answer.
    let startup = |binary: &'static str| {
        let bins = bins.to_path_buf();
        async move {
            let mut times = Vec::new();
            for _ in 0..samples.min(10) {
                let addr = free_addr()?;
                let process = spawn(
                    Command::new(bins.join(binary)).args(["--listen", &addr.to_string()]),
                    None,
                )?;
                times.push(wait_healthy(addr).await?);
                drop(process);
            }
            Ok::<Duration, String>(median(times))
        }
    };
    let startup_a = startup("service-a").await?;
    let startup_b = startup("service-b").await?;
    Ok(Extras {
        a_down,
        breaker_open,
        a_timeout,
        startup_a,
        startup_b,
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}
