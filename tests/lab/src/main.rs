//! `lab`: break the running services on purpose, find what is wrong from their signals, and
//! check the answer; for a class, a sealed mystery, its answer key, a chained record of every
//! start, check and stop, and a report that checks it; and a span collector with a trace
//! waterfall, so that no Docker is needed. See README.md, "Labs", and docs/labs.md.
//!
//! It needs the services started with their fault endpoints (`--fault-listen`, loopback
//! only): `./deploy/run-local.sh` does that, and says where they are in `services.env` in
//! the state directory (see `lab::services`). It keeps what it started in a per-user state
//! file, so `lab stop` undoes exactly that.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use lab::key::{Code, check_secret, parse_seeds};
use lab::paths::{RESULTS_FILE, SPANS_FILE, STATE_FILE};
use lab::results::{Event, Record, SEALED};
use lab::services::{Services, Setting};
use lab::{SCENARIOS, Scenario, complain, names, say, scenario};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Break the services on purpose, find what is wrong, check the answer.
#[derive(Debug, Parser)]
#[command(name = "lab", version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,

    /// Service B's URL (the traffic goes there). Default: the one ./deploy/run-local.sh
    /// wrote in services.env in the state directory while it runs, else
    /// http://127.0.0.1:8081.
    #[arg(long, global = true, env = "LAB_B_URL")]
    b: Option<String>,

    /// Service A's fault endpoint (A started with --fault-listen); comma-separated, one per
    /// replica of A. Default: services.env's, else http://127.0.0.1:9180/faults.
    #[arg(long, global = true, env = "LAB_A_FAULTS")]
    a_faults: Option<String>,

    /// Service B's fault endpoint (B started with --fault-listen). Default: services.env's,
    /// else http://127.0.0.1:9181/faults.
    #[arg(long, global = true, env = "LAB_B_FAULTS")]
    b_faults: Option<String>,

    /// Prometheus, for `lab check`'s evidence and the alerts `lab start` finds still active:
    /// the one `./deploy/run-local.sh --observe` starts (services.env's), or the compose
    /// stack's. Default: http://127.0.0.1:9090.
    #[arg(long, global = true, env = "LAB_PROMETHEUS")]
    prometheus: Option<String>,

    /// Break the compose stack in this compose file instead: its services have no fault
    /// endpoint, so the lab recreates them with the fault as a start-up flag
    /// (`A_FAULT`/`B_FAULT`), and `lab stop` recreates them without.
    #[arg(long, global = true, env = "LAB_COMPOSE")]
    compose: Option<PathBuf>,

    /// With --compose: print the docker compose command instead of running it.
    #[arg(long, global = true, requires = "compose")]
    dry_run: bool,

    /// Where the lab keeps its files (the running lab, the results, the spans), readable by
    /// you only. Default: $XDG_STATE_HOME/first-distributed-system, or
    /// ~/.local/state/first-distributed-system.
    #[arg(long, global = true, env = "LAB_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// The results file of the open lab `lab start` starts (default: results.jsonl in the
    /// state directory): its start, every check and its stop go there. A mystery's always go
    /// to the state directory's results.jsonl, which a teacher collects. `lab check` and
    /// `lab stop` write where `lab start` chose.
    #[arg(long, global = true, env = "LAB_RESULTS")]
    results: Option<PathBuf>,

    /// Your name, as the results record it, given to `lab start` (default: your login name).
    #[arg(long, global = true, env = "LAB_STUDENT")]
    student: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The labs, with the question each asks.
    List,
    /// Switch a lab's fault on and start its traffic; list the alerts an earlier lab left.
    Start {
        /// The lab (see `lab list`).
        #[arg(required_unless_present = "mystery")]
        name: Option<String>,
        /// A lab whose name stays hidden until you find it: from a code your teacher gives
        /// you (--code), from a seed and the class secret (--seed), or at random.
        #[arg(long, conflicts_with = "name")]
        mystery: bool,
        /// The code of a mystery lab, as `lab key` prints it (e.g. 42-0123abcd9e).
        #[arg(long, requires = "mystery", conflicts_with = "seed")]
        code: Option<String>,
        /// The seed of a mystery lab: with the class secret, it picks the lab `lab key`
        /// lists for it.
        #[arg(long, requires = "mystery")]
        seed: Option<u64>,
        /// The class secret (the teacher's), for --seed.
        #[arg(long, env = "LAB_CLASS_SECRET", hide_env_values = true)]
        class_secret: Option<String>,
        /// Seconds of traffic (0: until `lab stop`).
        #[arg(long, default_value_t = 0)]
        duration: u64,
    },
    /// Stop the traffic and clear the faults (and A's login throttle); a mystery says which
    /// lab it was. Recorded.
    Stop,
    /// Say what you think is wrong: right or wrong, and what to look at; recorded.
    Check {
        /// A lab's name (see `lab list`).
        answer: String,
        /// With a lab of A's replicas (a-replica-slow): the replica at fault, 1, 2, 3… as
        /// ./deploy/run-local.sh --a-replicas numbers them (the order of --a-faults).
        #[arg(long)]
        replica: Option<u32>,
    },
    /// For the teacher: the lab each seed hides, and the code to hand out for it.
    Key {
        /// Seeds: `42`, `1-30` or `1-5,9`; may be repeated.
        #[arg(long, required = true)]
        seed: Vec<String>,
        /// The class secret: without it, nobody can list the key.
        #[arg(long, env = "LAB_CLASS_SECRET", hide_env_values = true)]
        class_secret: Option<String>,
    },
    /// For the teacher: a class's results files as one table, one row per student and lab
    /// run, each run whose record does not hold up flagged.
    Report {
        /// The results files (each student's results.jsonl).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
        /// The class secret: checks every code and answer against the key, and names the
        /// labs nobody found. A secret that fits none of the codes is refused.
        #[arg(long, env = "LAB_CLASS_SECRET", hide_env_values = true)]
        class_secret: Option<String>,
    },
    /// Collect spans: an OTLP/HTTP receiver on loopback for the services' traces, kept for
    /// `lab trace` (`./deploy/run-local.sh --observe` starts one).
    Collect {
        /// Where to listen (loopback only); the services' OTEL_EXPORTER_OTLP_ENDPOINT.
        #[arg(long, env = "LAB_OTLP_LISTEN", default_value = "127.0.0.1:4318")]
        listen: SocketAddr,
    },
    /// One trace as a waterfall: B's span, each attempt with its outcome and duration, A's
    /// span under each.
    Trace {
        /// The trace id (from a log line's trace_id, or a traceresponse header).
        trace_id: String,
        /// Seconds to wait for its spans to arrive (they are exported in batches).
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

/// What `lab start` started. Of a mystery it keeps the code (the one handed out, or one
/// made up for a random mystery): all `lab check` needs to grade an answer at once, and
/// nothing the student was not given already (`lab::key` says what a code tells).
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// A named lab's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scenario: Option<String>,
    /// A mystery's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// Whether the code is a class's (handed out, or made from a seed and the secret): the
    /// records carry it. A random mystery's code is its own, and stays here.
    #[serde(default)]
    class: bool,
    /// This run, random.
    run: String,
    /// Who started it: the name every record of the run carries.
    student: String,
    /// Where every record of the run goes, chosen at `lab start`.
    results: PathBuf,
    /// When, in Unix seconds.
    started_at: f64,
    /// Answers so far.
    #[serde(default)]
    attempts: u32,
    traffic_pid: u32,
    /// A lab of A's replicas: the one it broke (1, 2, 3…, the order of `--a-faults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replica: Option<u32>,
}

impl State {
    /// The lab that runs.
    fn lab(&self) -> Option<&'static Scenario> {
        match (&self.scenario, &self.code) {
            (Some(name), _) => scenario(name),
            (None, Some(code)) => Code::parse(code).ok().map(|code| code.lab()),
            (None, None) => None,
        }
    }

    /// Whether `answer` (and `replica`, for a lab of A's replicas) names the lab that runs.
    fn is(&self, answer: &str, replica: Option<u32>) -> bool {
        self.lab().is_some_and(|lab| lab.name == answer) && replica == self.replica
    }

    fn mystery(&self) -> bool {
        self.code.is_some()
    }

    /// A record of this run, now (`lab::results::append` numbers and chains it); `replica`
    /// is the one a check names, or the one a stop reveals.
    fn record(&self, event: Event, answer: Option<(&str, bool)>, replica: Option<u32>) -> Record {
        Record {
            seq: 0,
            ts: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            event,
            student: self.student.clone(),
            run: self.run.clone(),
            code: self.code.clone().filter(|_| self.class),
            lab: self.scenario.clone().unwrap_or_else(|| SEALED.to_owned()),
            answer: answer.map(|(answer, _)| answer.to_owned()),
            replica,
            right: answer.map(|(_, right)| right),
            attempt: self.attempts,
            seconds: ((now() - self.started_at).max(0.0) * 10.0).round() / 10.0,
            prev: String::new(),
            hash: String::new(),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let services = Services::resolve(
        [
            args.b.as_deref(),
            args.a_faults.as_deref(),
            args.b_faults.as_deref(),
            args.prometheus.as_deref(),
        ],
        state_dir(&args).ok().as_deref(),
    );
    let result = match &args.command {
        Cmd::List => {
            list();
            Ok(true)
        }
        Cmd::Start {
            name,
            mystery,
            code,
            seed,
            class_secret,
            duration,
        } => {
            let choice = Choice {
                name: name.as_deref(),
                mystery: *mystery,
                code: code.as_deref(),
                seed: *seed,
                secret: class_secret.as_deref(),
            };
            start(&args, &services, &choice, *duration).await
        }
        Cmd::Stop => stop(&args, &services).await,
        Cmd::Check { answer, replica } => check(&args, &services, answer, *replica).await,
        Cmd::Key { seed, class_secret } => key(seed, class_secret.as_deref()),
        Cmd::Report {
            files,
            csv,
            class_secret,
        } => report(files, *csv, class_secret.as_deref()),
        Cmd::Collect { listen } => match state_dir(&args) {
            Ok(dir) => lab::spans::collect(*listen, dir.join(SPANS_FILE))
                .await
                .map(|()| true),
            Err(e) => Err(e),
        },
        Cmd::Trace { trace_id, wait } => trace(&args, trace_id, *wait).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            complain!("lab: {message}");
            ExitCode::from(2)
        }
    }
}

fn list() {
    for (n, s) in lab::all().enumerate() {
        say!("{}. {:<16} {}\n   {}", n + 1, s.name, s.title, s.question);
        if s.names_a_replica() {
            say!(
                "   On {} replicas of A or more (./deploy/run-local.sh --a-replicas {0}); the \
                 answer names the replica: lab check {} --replica N",
                lab::REPLICAS_NEEDED,
                s.name
            );
        }
        say!();
    }
}

fn state_dir(args: &Args) -> Result<PathBuf, String> {
    match &args.state_dir {
        Some(dir) => Ok(dir.clone()),
        None => lab::paths::default_dir(),
    }
}

fn state_path(args: &Args) -> Result<PathBuf, String> {
    Ok(state_dir(args)?.join(STATE_FILE))
}

/// The results file `lab start` is asked for, as an absolute path.
fn results_path(args: &Args) -> Result<PathBuf, String> {
    let path = match &args.results {
        Some(file) => file.clone(),
        None => state_dir(args)?.join(RESULTS_FILE),
    };
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_state(args: &Args) -> Result<State, String> {
    let path = state_path(args)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("no lab is running (nothing in {})", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a lab this version of lab started ({e}): remove it, and restart the \
             services to clear any fault it left",
            path.display()
        )
    })
}

fn write_state(args: &Args, state: &State) -> Result<(), String> {
    let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
    lab::paths::replace(&state_path(args)?, text.as_bytes())
}

/// A run's records go where `lab start` sent them, under the name it gave: a `--results` or
/// `--student` (or its variable) given to `lab check` or `lab stop` must agree with them, or
/// nothing is graded, stopped or recorded.
fn same_run(args: &Args, state: &State) -> Result<(), String> {
    if let Some(given) = &args.results {
        let given = std::path::absolute(given).unwrap_or_else(|_| given.clone());
        if given != state.results {
            return Err(format!(
                "this lab's records go to {}, chosen at lab start: --results (or LAB_RESULTS) \
                 cannot send them to {} instead",
                state.results.display(),
                given.display()
            ));
        }
    }
    if let Some(name) = &args.student
        && *name != state.student
    {
        return Err(format!(
            "this lab was started by {:?}: --student (or LAB_STUDENT) cannot answer as {name:?}",
            state.student
        ));
    }
    Ok(())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Who starts a lab: `--student`, or the login name.
fn student(args: &Args) -> String {
    args.student
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// A service's fault endpoints: which service, and the flag and variable that set them.
#[derive(Debug, Clone, Copy)]
enum Faults {
    A,
    B,
}

impl Faults {
    fn setting(self, services: &Services) -> &Setting {
        match self {
            Self::A => &services.a_faults,
            Self::B => &services.b_faults,
        }
    }

    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::A => ("A", "--a-faults", "LAB_A_FAULTS"),
            Self::B => ("B", "--b-faults", "LAB_B_FAULTS"),
        }
    }
}

/// Switches `fault` on at each of a service's fault endpoints (`None`: clears it; at A,
/// clearing also clears the login throttle).
async fn switch(services: &Services, which: Faults, fault: Option<&Value>) -> Result<(), String> {
    let each = vec![fault.cloned(); which.setting(services).list().len()];
    switch_each(services, which, &each).await
}

/// Switches `faults[i]` on at a service's i-th fault endpoint (`None`: clears it there).
async fn switch_each(
    services: &Services,
    which: Faults,
    faults: &[Option<Value>],
) -> Result<(), String> {
    let setting = which.setting(services);
    let (service, flag, variable) = which.names();
    for (endpoint, fault) in setting.list().into_iter().zip(faults) {
        let request = match fault {
            Some(fault) => client().put(endpoint).json(fault),
            None => client().delete(endpoint),
        };
        let reply = request.send().await.map_err(|e| {
            format!(
                "cannot reach {service}'s fault endpoint {endpoint}: {}. That address is {}. \
                 {service} opens it when started with --fault-listen: ./deploy/run-local.sh starts \
                 both services so, and writes services.env for lab (to restart A alone, run the \
                 command its banner printed); elsewhere, point {flag} or {variable} at it.",
                unreachable(&e),
                setting.source(flag, variable)
            )
        })?;
        if !reply.status().is_success() {
            let status = reply.status();
            let body = reply.text().await.unwrap_or_default();
            return Err(format!("{endpoint} answered {status}: {body}"));
        }
    }
    Ok(())
}

/// Why a request got no answer, in a few words.
fn unreachable(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "nothing answers there".to_owned()
    } else if error.is_timeout() {
        "no answer within 5 s".to_owned()
    } else {
        error.to_string()
    }
}

/// The replica of A a lab of A's replicas breaks: one of those `--a-faults` lists, at
/// random. Refused on the compose stack (its labs give every replica the same fault) and
/// with fewer than [`lab::REPLICAS_NEEDED`] replicas.
fn pick_replica(args: &Args, services: &Services, lab: &Scenario) -> Result<u32, String> {
    let needed = lab::REPLICAS_NEEDED;
    if args.compose.is_some() {
        return Err(format!(
            "{} runs on ./deploy/run-local.sh --a-replicas {needed} only: on the compose \
             stack a lab recreates every replica of A with the same fault",
            lab.name
        ));
    }
    let replicas = services.a_faults.list().len();
    if replicas < needed {
        return Err(format!(
            "{} needs {needed} replicas of A or more, each with its fault endpoint, and lab \
             knows of {replicas} ({}). Start them with `./deploy/run-local.sh --a-replicas \
             {needed}` (add --observe for Prometheus and the span collector): it lists every \
             replica's fault endpoint in services.env. Elsewhere, list them all in \
             --a-faults or LAB_A_FAULTS, comma-separated.",
            lab.name,
            services.a_faults.source("--a-faults", "LAB_A_FAULTS")
        ));
    }
    let replicas = u32::try_from(replicas).unwrap_or(u32::MAX);
    Ok(fastrand::u32(1..=replicas))
}

/// How `lab start` was asked to choose.
#[derive(Debug)]
struct Choice<'a> {
    name: Option<&'a str>,
    mystery: bool,
    code: Option<&'a str>,
    seed: Option<u64>,
    secret: Option<&'a str>,
}

/// What `lab start` chose: the lab, a mystery's code, and whether that is a class's.
#[derive(Debug)]
struct Picked {
    lab: &'static Scenario,
    code: Option<Code>,
    class: bool,
}

impl Choice<'_> {
    fn pick(&self) -> Result<Picked, String> {
        if !self.mystery {
            let name = self.name.unwrap_or_default();
            let lab =
                scenario(name).ok_or_else(|| format!("no lab called {name:?}: see `lab list`"))?;
            return Ok(Picked {
                lab,
                code: None,
                class: false,
            });
        }
        let (code, class) = match (self.code, self.seed) {
            (Some(code), _) => (Code::parse(code)?, true),
            (None, Some(seed)) => {
                let secret = self.secret.ok_or(
                    "--seed needs the class secret (--class-secret or LAB_CLASS_SECRET): \
                     without it a seed picks nothing. A student starts from the code the \
                     teacher gives out (--code)",
                )?;
                check_secret(secret)?;
                (Code::new(secret, seed), true)
            }
            (None, None) => (Code::random(), false),
        };
        Ok(Picked {
            lab: code.lab(),
            code: Some(code),
            class,
        })
    }
}

async fn start(
    args: &Args,
    services: &Services,
    choice: &Choice<'_>,
    duration: u64,
) -> Result<bool, String> {
    let path = state_path(args)?;
    if path.exists() {
        return Err(format!(
            "a lab is already running ({}): `lab stop` first",
            path.display()
        ));
    }
    if choice.mystery && args.dry_run {
        return Err("--dry-run would print the mystery's fault: run it without".into());
    }
    let picked = choice.pick()?;
    let chosen = picked.lab;
    let replicas = services.a_faults.list().len();
    let replica = if chosen.names_a_replica() {
        Some(pick_replica(args, services, chosen)?)
    } else {
        None
    };
    // A named lab's faults as they are. A mystery's sealed, and one for each service, so
    // that neither which service says "fault_injected" nor what it says gives it away.
    let (a, b) = if choice.mystery {
        (
            Some(lab::sealed(chosen.a_fault)),
            Some(lab::sealed(chosen.b_fault)),
        )
    } else {
        (chosen.a_fault.map(|f| f()), chosen.b_fault.map(|f| f()))
    };
    if let (true, Some(compose)) = (args.dry_run, &args.compose) {
        recreate(compose, a, b, true)?;
        return Ok(true);
    }
    let results = results_path(args)?;
    if choice.mystery {
        // A mystery's record goes where the teacher collects: the state directory's results
        // file, never one of the student's choosing (a scratch file would take a run, and
        // its reveal, out of the record).
        let collected = state_dir(args)?.join(RESULTS_FILE);
        if args.results.is_some() && std::path::absolute(&collected).ok().as_ref() != Some(&results)
        {
            return Err(format!(
                "a mystery's record goes to {}, where the teacher collects: --results (or \
                 LAB_RESULTS) is for open labs",
                collected.display()
            ));
        }
        // The teacher collects a file: a device, a pipe or a directory would keep nothing.
        if let Ok(meta) = std::fs::metadata(&results)
            && !meta.is_file()
        {
            return Err(format!(
                "{} is not a file: a mystery's record goes to a results file the teacher can collect",
                results.display()
            ));
        }
    }

    // What an earlier lab left firing, before this one's fault can add to it.
    for line in leftover_alerts(&services.prometheus).await {
        say!("{line}");
    }

    // At each replica of A, its fault: the lab's at every one, or for a lab of A's replicas
    // the lab's at the one picked, sealed, and at the others a sealed fault that changes
    // nothing, so that no replica's fault endpoint, log or gauge says which.
    let a_each: Vec<Option<Value>> = match (replica, chosen.replica_fault) {
        (Some(picked), Some(fault)) => (1..=replicas)
            .map(|n| Some(lab::sealed((n == picked as usize).then_some(fault))))
            .collect(),
        _ => vec![a.clone(); replicas],
    };
    if let Some(compose) = &args.compose {
        recreate(compose, a, b, false)?;
    } else {
        let switched = match switch_each(services, Faults::A, &a_each).await {
            Ok(()) => switch(services, Faults::B, b.as_ref()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = switched {
            let _ = switch(services, Faults::A, None).await;
            let _ = switch(services, Faults::B, None).await;
            return Err(e);
        }
    }

    let traffic = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("traffic")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("traffic"));
    // The lab's own arguments go through standard input: `ps` shows the same command line
    // for every lab. Nothing of lab's environment that a student should not see goes along.
    let mut child = Command::new(&traffic)
        .args([
            "--target",
            &services.b.value,
            "--duration",
            &duration.to_string(),
        ])
        .arg("--args-from-stdin")
        .env_remove("LAB_CLASS_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the traffic generator {} ({e}): build it beside lab with `cargo build --release -p traffic`",
                traffic.display()
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let lines: String = chosen.traffic.iter().map(|a| format!("{a}\n")).collect();
        stdin
            .write_all(lines.as_bytes())
            .map_err(|e| format!("cannot hand the traffic generator its arguments: {e}"))?;
    }
    let state = State {
        scenario: (!choice.mystery).then(|| chosen.name.to_owned()),
        code: picked.code.map(|code| code.to_string()),
        class: picked.class,
        run: format!("{:016x}", fastrand::u64(..)),
        student: student(args),
        results,
        started_at: now(),
        attempts: 0,
        traffic_pid: child.id(),
        replica,
    };
    // Started, stated and recorded, or not started at all.
    let recorded = write_state(args, &state).and_then(|()| {
        lab::results::append(&state.results, state.record(Event::Start, None, None))
    });
    if let Err(e) = recorded {
        let _ = halt(args, services, state.traffic_pid).await;
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "the lab could not be recorded, so it was not started: {e}"
        ));
    }
    if choice.mystery {
        say!("A mystery lab is running: something is wrong. Find out what.");
        say!(
            "Your answer: `lab check <name>`, one of: {}",
            lab::mystery_names()
        );
    } else {
        say!("Lab {}: {}", chosen.name, chosen.title);
        say!("Question: {}", chosen.question);
        if chosen.names_a_replica() {
            say!(
                "When you know: `lab check {} --replica N`, N from 1 to {replicas} as \
                 ./deploy/run-local.sh's banner numbers A's replicas; `lab stop` ends it.",
                chosen.name
            );
        } else {
            say!("When you know: `lab check <name>`; `lab stop` ends it.");
        }
    }
    say!(
        "Recorded in {}: this start, every answer, and the stop{}.",
        state.results.display(),
        if choice.mystery {
            " (which names the lab)"
        } else {
            ""
        }
    );
    Ok(true)
}

/// The alerts pending or firing now, as lines for `lab start` (none when there are none),
/// each with how long it may go on.
async fn leftover_alerts(prometheus: &Setting) -> Vec<String> {
    let url = format!("{}/api/v1/rules", prometheus.value);
    let body = match client().get(&url).send().await {
        Ok(reply) => reply.json::<Value>().await.map_err(|e| e.to_string()),
        Err(e) => Err(unreachable(&e)),
    };
    match body {
        Ok(body) if body["status"] == "success" => {
            lab::alerts::describe(&lab::alerts::active(&body))
        }
        Ok(body) => vec![format!(
            "(Prometheus at {} did not list its alerts: {})",
            prometheus.value, body["error"]
        )],
        Err(why) => vec![format!(
            "(no answer from Prometheus at {}: {why}; the alerts an earlier lab may have left \
             are not listed)",
            prometheus.value
        )],
    }
}

/// Recreates the compose stack's A and B with `a` and `b` as their start-up faults (`None`:
/// none): `A_FAULT=… B_FAULT=… docker compose -f <file> up -d --no-deps service-a service-b`,
/// with as many replicas of A as run now (`--scale`), every one with the same fault.
fn recreate(
    compose: &Path,
    a: Option<Value>,
    b: Option<Value>,
    dry_run: bool,
) -> Result<(), String> {
    let env = [
        ("A_FAULT", a.map(|f| f.to_string()).unwrap_or_default()),
        ("B_FAULT", b.map(|f| f.to_string()).unwrap_or_default()),
    ];
    let file = compose.display().to_string();
    let mut args: Vec<String> = ["compose", "-f", &file, "up", "-d", "--no-deps"]
        .map(str::to_owned)
        .to_vec();
    // `up` puts a service back at the compose file's scale (one) unless told otherwise: a
    // stack started with `--scale service-a=3` keeps its three.
    if !dry_run && let Some(replicas) = a_replicas_running(&file).filter(|n| *n > 1) {
        args.push(format!("--scale=service-a={replicas}"));
    }
    args.extend(["service-a", "service-b"].map(str::to_owned));
    if dry_run {
        for (name, value) in &env {
            say!("{name}={value}");
        }
        say!("docker {}", args.join(" "));
        return Ok(());
    }
    let status = Command::new("docker")
        .args(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .map_err(|e| format!("cannot run docker compose: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("docker {} failed ({status})", args.join(" ")))
    }
}

/// How many containers of service-a the compose stack in `file` has now (`docker compose
/// ps -q service-a`), or `None` when docker cannot say.
fn a_replicas_running(file: &str) -> Option<usize> {
    let output = Command::new("docker")
        .args(["compose", "-f", file, "ps", "-q", "service-a"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let ids = String::from_utf8_lossy(&output.stdout);
    output
        .status
        .success()
        .then(|| ids.lines().filter(|l| !l.trim().is_empty()).count())
}

async fn stop(args: &Args, services: &Services) -> Result<bool, String> {
    let state = read_state(args)?;
    same_run(args, &state)?;
    let halted = halt(args, services, state.traffic_pid).await;
    // The stop (a mystery's reveal, or the replica a lab of A's replicas broke) is recorded
    // before anything is revealed; if it cannot be, the state stays for another `lab stop`.
    let record = state.record(Event::Stop, None, state.replica);
    lab::results::append(&state.results, record).map_err(|e| {
        format!("the stop could not be recorded ({e}): run `lab stop` again once it can be")
    })?;
    let path = state_path(args)?;
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if state.mystery() {
        match state.lab() {
            Some(lab) => say!("The lab was: {}", lab.name),
            None => say!("The lab was not one this version of lab knows."),
        }
    }
    if let Some(replica) = state.replica {
        say!(
            "The replica at fault was: replica {replica}{}",
            replica_faults(services, replica)
                .map(|endpoint| format!(" (its fault endpoint {endpoint})"))
                .unwrap_or_default()
        );
    }
    halted?;
    say!("Lab stopped: traffic stopped, faults cleared (and with them A's login throttle).");
    Ok(true)
}

/// Puts the system back as it was before the lab: stops the traffic (and waits until it has
/// exited, so none of its requests lands afterwards), then clears both services' faults,
/// which at A also clears the login throttle (on the compose stack, recreates A and B).
async fn halt(args: &Args, services: &Services, traffic_pid: u32) -> Result<(), String> {
    let traffic = stop_traffic(traffic_pid);
    let faults = match &args.compose {
        Some(compose) => recreate(compose, None, None, false),
        None => {
            let a = switch(services, Faults::A, None).await;
            let b = switch(services, Faults::B, None).await;
            a.and(b)
        }
    };
    traffic.and(faults)
}

/// How long the traffic generator may take to exit: it waits for its requests in flight,
/// the slowest of which B ends within its deadline (2050 ms by default).
const TRAFFIC_EXITS_WITHIN: Duration = Duration::from_secs(10);

/// Stops the traffic generator `lab start` started, and waits (bounded) until it has exited.
fn stop_traffic(pid: u32) -> Result<(), String> {
    if traffic_runs(pid) == Some(false) {
        return Ok(());
    }
    let _ = Command::new("kill")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + TRAFFIC_EXITS_WITHIN;
    while traffic_runs(pid) == Some(true) {
        if Instant::now() >= deadline {
            return Err(format!(
                "the traffic generator (pid {pid}) did not exit within {TRAFFIC_EXITS_WITHIN:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether `pid` is the traffic generator `lab start` started (a process id can be reused
/// once it ends): `None` where /proc cannot tell.
fn traffic_runs(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"--args-from-stdin")
    });
    Some(ours)
}

/// What to look at next after a wrong answer to a mystery: the same for every lab.
const LOOK_NEXT: &[&str] = &[
    "Is each service up? (up{job=~\"service-a|service-b\"})",
    "What does B answer, and how fast? (B's 503 rate, by the last failure's kind; Latency p50 / p95 / p99)",
    "How do B's attempts to call A end, and after how long? (B's attempts to call A, by outcome; Attempts per B request; Attempt duration p95, by outcome)",
    "What does A say about itself? (A: p99 latency; A's token requests, by outcome; A's requested delay; A's abandoned requests (499))",
    "Which alerts are pending or firing, and what do their runbooks say? (Prometheus' /alerts)",
    "The logs: B's provider_call_failed and provider_gave_up lines (their error, timeout_secs, reason), and A's lines for the same request_id",
    "One request end to end: `lab trace <trace_id>` of a request that went wrong",
    "With several replicas of A, is one of them the odd one out? (Calls per A replica; Failed attempts per A replica, by outcome; Ejections, per A replica and reason)",
];

/// Replica `n`'s fault endpoint, as `--a-faults` lists it.
fn replica_faults(services: &Services, n: u32) -> Option<&str> {
    let index = usize::try_from(n).ok()?.checked_sub(1)?;
    services.a_faults.list().get(index).copied()
}

/// Whether `replica` goes with `answered`: a lab of A's replicas needs one, of those
/// `--a-faults` lists, and no other lab takes one. Refused answers are not recorded.
fn check_replica(
    services: &Services,
    answered: &Scenario,
    replica: Option<u32>,
) -> Result<(), String> {
    let replicas = services.a_faults.list().len();
    match (answered.names_a_replica(), replica) {
        (true, None) => Err(format!(
            "{0} names the replica too: lab check {0} --replica N, N from 1 to {replicas} as \
             ./deploy/run-local.sh's banner numbers A's replicas",
            answered.name
        )),
        (false, Some(_)) => Err(format!(
            "--replica goes with a lab of A's replicas ({}), not with {}",
            lab::REPLICA_LABS.map(|s| s.name).join(", "),
            answered.name
        )),
        (true, Some(n)) if n == 0 || replica_faults(services, n).is_none() => Err(format!(
            "--replica {n}: lab knows of {replicas} replicas of A, numbered 1 to {replicas} ({})",
            services.a_faults.source("--a-faults", "LAB_A_FAULTS")
        )),
        _ => Ok(()),
    }
}

async fn check(
    args: &Args,
    services: &Services,
    answer: &str,
    replica: Option<u32>,
) -> Result<bool, String> {
    let mut state = read_state(args)?;
    same_run(args, &state)?;
    let answered =
        scenario(answer).ok_or_else(|| format!("no lab called {answer:?}: one of {}", names()))?;
    check_replica(services, answered, replica)?;
    let right = state.is(answer, replica);
    state.attempts += 1;
    // Recorded first: an answer that cannot be recorded is not graded.
    let record = lab::results::append(
        &state.results,
        state.record(Event::Check, Some((answer, right)), replica),
    )
    .map_err(|e| format!("the answer could not be recorded, so it is not graded: {e}"))?;
    write_state(args, &state)?;

    // A named lab, or a right answer: the lab's own evidence. A wrong answer to a mystery:
    // never the lab's evidence, only what the guess would show and where to look next.
    let shown = if right || !state.mystery() {
        state.lab()
    } else {
        None
    };
    let named = match replica {
        Some(n) => format!("{answer} --replica {n}"),
        None => answer.to_owned(),
    };
    match (right, shown, replica) {
        (true, Some(lab), Some(n)) => say!("right: {}: replica {n}", lab.title),
        (true, Some(lab), None) => say!("right: {}", lab.title),
        (false, Some(lab), Some(n)) if lab.name == answer => {
            say!("wrong: it is not replica {n}. Look again at the evidence below.");
        }
        (false, Some(_), _) => {
            say!("wrong: it is not {named}. Look again at the evidence below.");
        }
        (_, None, _) => say!("wrong: it is not {named}."),
    }
    say!(
        "(answer {} of this lab, {:.0} s after it started: recorded in {})",
        record.attempt,
        record.seconds,
        state.results.display()
    );
    say!();
    match shown {
        Some(lab) => evidence(services, lab).await,
        None => {
            let guess = scenario(answer).unwrap_or(&SCENARIOS[0]);
            let telling = &guess.evidence[0];
            say!("Had it been {answer}, this would show it:");
            say!("Dashboard panel: {}", telling.panel);
            say!("PromQL:          {}", telling.promql);
            say!(
                "Its value now:   {}",
                value_now(services, telling.promql).await
            );
            say!();
            say!("Look next:");
            for (n, step) in LOOK_NEXT.iter().enumerate() {
                say!("  {}. {step}", n + 1);
            }
            say!(
                "An example now:  {}",
                example_now(&services.b.value, None).await
            );
        }
    }
    Ok(right)
}

/// Everything that shows `lab`: its panels and their queries' values now, the log line, a
/// fresh example request, the alerts and their runbooks.
async fn evidence(services: &Services, lab: &Scenario) {
    for (n, shown) in lab.evidence.iter().enumerate() {
        if n > 0 {
            say!();
        }
        say!("Dashboard panel: {}", shown.panel);
        say!("PromQL:          {}", shown.promql);
        say!(
            "Its value now:   {}",
            value_now(services, shown.promql).await
        );
        if let Some(average) = shown.average {
            say!(
                "                 (a quantile: histogram_quantile places it inside a histogram \
                 bucket, and may read as high as the bucket's upper bound; the average below \
                 is exact, as the log lines' latency_ms are)"
            );
            say!("Average:         {average}");
            say!("Its value now:   {}", value_now(services, average).await);
        }
    }
    say!();
    if lab.names_a_replica() {
        // B's series name a replica by its address, the banner by its number.
        say!(
            "A's replicas:    numbered as --a-faults lists them (./deploy/run-local.sh's banner gives each one's address):"
        );
        for (n, endpoint) in services.a_faults.list().iter().enumerate() {
            say!(
                "                 replica {}: fault endpoint {endpoint}",
                n + 1
            );
        }
    }
    say!("Log:             {}", lab.log);
    say!(
        "An example now:  {}",
        example_now(&services.b.value, lab.request.map(|f| f())).await
    );
    if lab.alerts.is_empty() {
        say!(
            "Alert:           none: B routes its attempts around the fault, its users barely \
             notice, and no SLO burns. The signals per replica are where it shows."
        );
    }
    for alert in lab.alerts {
        let slo = alert.slo.map(|s| format!(" (slo {s})")).unwrap_or_default();
        say!(
            "Alert:           {}{slo}: {}; runbook {}",
            alert.name,
            alert_state(services, alert).await,
            alert.runbook
        );
    }
}

/// Whether `alert` is pending or firing now, as Prometheus says.
async fn alert_state(services: &Services, alert: &lab::Alert) -> String {
    let selector = match alert.slo {
        Some(slo) => format!(r#"ALERTS{{alertname="{}", slo="{slo}"}}"#, alert.name),
        None => format!(r#"ALERTS{{alertname="{}"}}"#, alert.name),
    };
    let prometheus = &services.prometheus.value;
    match query_series(prometheus, &selector).await {
        Ok(series) => {
            let states: Vec<&str> = series
                .iter()
                .filter_map(|s| s["metric"]["alertstate"].as_str())
                .collect();
            if states.contains(&"firing") {
                "firing now".into()
            } else if states.contains(&"pending") {
                "pending now (it fires once it has lasted its `for:`)".into()
            } else {
                "not active now".into()
            }
        }
        Err(why) => format!("(no answer from {prometheus}: {why})"),
    }
}

async fn value_now(services: &Services, promql: &str) -> String {
    let prometheus = &services.prometheus.value;
    match query(prometheus, promql).await {
        Ok(value) => value,
        Err(why) => format!(
            "(no answer from {prometheus}: {why}; ./deploy/run-local.sh --observe starts one)"
        ),
    }
}

async fn example_now(b: &str, body: Option<Value>) -> String {
    match example(b, body).await {
        Ok(example) => example,
        Err(why) => format!("(B did not answer: {why})"),
    }
}

/// The series `promql` returns now.
async fn query_series(prometheus: &str, promql: &str) -> Result<Vec<Value>, String> {
    let mut url =
        reqwest::Url::parse(&format!("{prometheus}/api/v1/query")).map_err(|e| e.to_string())?;
    url.query_pairs_mut().append_pair("query", promql);
    let reply = client().get(url).send().await.map_err(|e| e.to_string())?;
    let body: Value = reply.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("the query failed: {}", body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The value of `promql` now, one `{labels} value` per series.
async fn query(prometheus: &str, promql: &str) -> Result<String, String> {
    let series = query_series(prometheus, promql).await?;
    if series.is_empty() {
        return Ok("no data".into());
    }
    Ok(series
        .iter()
        .map(|s| format!("{} {}", s["metric"], s["value"][1].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join("; "))
}

/// One call to B (`body`, or the demo user's plain login): its status, request id and trace
/// id, to look up in the logs and with `lab trace`.
async fn example(b: &str, body: Option<Value>) -> Result<String, String> {
    let body =
        body.unwrap_or_else(|| serde_json::json!({"username": "divya", "password": "pass123"}));
    let reply = client()
        .post(format!("{b}/protected-action"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let header = |name: &str| {
        reply
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let trace_id = header("traceresponse")
        .split('-')
        .nth(1)
        .unwrap_or("-")
        .to_owned();
    Ok(format!(
        "{} for request id {} (grep it in both logs), trace {trace_id} (`lab trace {trace_id}`, or Jaeger)",
        reply.status(),
        header("x-request-id"),
    ))
}

fn key(seeds: &[String], secret: Option<&str>) -> Result<bool, String> {
    let secret = secret.ok_or(
        "lab key needs the class secret (--class-secret or LAB_CLASS_SECRET): without it nobody can list the key",
    )?;
    check_secret(secret)?;
    let mut all = Vec::new();
    for text in seeds {
        all.extend(parse_seeds(text)?);
    }
    say!(
        "{:>6}  {:<16} code (lab start --mystery --code …)",
        "seed",
        "lab"
    );
    for seed in all {
        let code = Code::new(secret, seed);
        say!("{seed:>6}  {:<16} {code}", code.lab().name);
    }
    Ok(true)
}

fn report(files: &[PathBuf], csv: bool, secret: Option<&str>) -> Result<bool, String> {
    if let Some(secret) = secret {
        check_secret(secret)?;
    }
    let mut read = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let file = lab::results::read(&text, &file.display().to_string());
        for broken in file.describe_breaks() {
            complain!("lab report: {broken}");
        }
        read.push(file);
    }
    if let Some(secret) = secret {
        lab::results::secret_fits(&read, secret)?;
    }
    let rows = lab::results::rows(&read, secret);
    let text = if csv {
        lab::results::csv(&rows)
    } else {
        lab::results::table(&rows)
    };
    for line in text.lines() {
        say!("{line}");
    }
    Ok(true)
}

async fn trace(args: &Args, text: &str, wait: u64) -> Result<bool, String> {
    let id = lab::spans::trace_id(text)?;
    let file = state_dir(args)?.join(SPANS_FILE);
    let deadline = Instant::now() + Duration::from_secs(wait);
    // Spans come in batches from two processes: once the root is there, wait until none has
    // arrived for a moment (unless the trace is old), bounded by --wait.
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let spans = lab::spans::read_trace(&file, &id);
        if spans.len() != last_count {
            last_count = spans.len();
            last_change = Instant::now();
        }
        let has_root = spans.iter().any(|s| s.parent.is_empty());
        let newest_end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0) as f64 / 1e9;
        let recent = now() - newest_end < 5.0;
        let settled = !recent || last_change.elapsed() >= Duration::from_millis(1500);
        let out_of_time = Instant::now() >= deadline;
        if (has_root && settled) || (out_of_time && !spans.is_empty()) {
            for line in lab::spans::waterfall(&id, &spans).lines() {
                say!("{line}");
            }
            if !has_root {
                say!("(the trace's first span has not arrived: some spans are missing)");
            }
            return Ok(true);
        }
        if out_of_time {
            complain!(
                "lab trace: no span of trace {id} in {} after {wait} s: is the span collector running \
                 (`./deploy/run-local.sh --observe` starts it), and do the services export to it \
                 (OTEL_EXPORTER_OTLP_ENDPOINT)?",
                file.display()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
