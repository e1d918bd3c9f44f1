//! `lab`: break the running services on purpose, find what is wrong from their signals, and
//! check the answer. See README.md, "Labs".
//!
//! It needs the services started with their fault endpoints (`--fault-listen`, loopback
//! only): `./deploy/run-local.sh` does that. It keeps what it started in a small state file,
//! so `lab stop` undoes exactly that.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use lab::{SCENARIOS, Scenario, scenario};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Break the services on purpose, find what is wrong, check the answer.
#[derive(Debug, Parser)]
#[command(name = "lab", version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,

    /// Service B's URL (the traffic goes there).
    #[arg(
        long,
        global = true,
        env = "LAB_B_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    b: String,

    /// Service A's fault endpoint (A started with --fault-listen).
    #[arg(
        long,
        global = true,
        env = "LAB_A_FAULTS",
        default_value = "http://127.0.0.1:9180/faults"
    )]
    a_faults: String,

    /// Service B's fault endpoint (B started with --fault-listen).
    #[arg(
        long,
        global = true,
        env = "LAB_B_FAULTS",
        default_value = "http://127.0.0.1:9181/faults"
    )]
    b_faults: String,

    /// Prometheus, for `lab check`'s evidence (the compose stack's by default).
    #[arg(
        long,
        global = true,
        env = "LAB_PROMETHEUS",
        default_value = "http://127.0.0.1:9090"
    )]
    prometheus: String,

    /// Break the compose stack in this compose file instead: its services have no fault
    /// endpoint, so the lab recreates them with the fault as a start-up flag
    /// (`A_FAULT`/`B_FAULT`), and `lab stop` recreates them without.
    #[arg(long, global = true, env = "LAB_COMPOSE")]
    compose: Option<PathBuf>,

    /// With --compose: print the docker compose command instead of running it.
    #[arg(long, global = true, requires = "compose")]
    dry_run: bool,

    /// Where the running lab is remembered.
    #[arg(long, global = true, env = "LAB_STATE")]
    state: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The labs, with the question each asks.
    List,
    /// Switch a lab's fault on and start its traffic.
    Start {
        /// The lab (see `lab list`).
        #[arg(required_unless_present = "mystery")]
        name: Option<String>,
        /// A lab chosen at random, its name hidden: for a class.
        #[arg(long, conflicts_with = "name")]
        mystery: bool,
        /// Seed of the random choice, so a teacher can give every student the same one.
        #[arg(long, requires = "mystery")]
        seed: Option<u64>,
        /// Seconds of traffic (0: until `lab stop`).
        #[arg(long, default_value_t = 0)]
        duration: u64,
    },
    /// Clear the fault and stop the traffic.
    Stop,
    /// Say what you think is wrong: right or wrong, then the evidence.
    Check {
        /// A lab's name (see `lab list`).
        answer: String,
    },
}

/// What `lab start` started.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    scenario: String,
    mystery: bool,
    traffic_pid: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.command {
        Cmd::List => {
            list();
            Ok(true)
        }
        Cmd::Start {
            name,
            mystery,
            seed,
            duration,
        } => start(&args, name.as_deref(), *mystery, *seed, *duration).await,
        Cmd::Stop => stop(&args).await,
        Cmd::Check { answer } => check(&args, answer).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("lab: {message}");
            ExitCode::from(2)
        }
    }
}

fn list() {
    for (n, s) in SCENARIOS.iter().enumerate() {
        println!("{}. {:<16} {}\n   {}\n", n + 1, s.name, s.title, s.question);
    }
}

fn state_path(args: &Args) -> PathBuf {
    args.state
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("first-distributed-system-lab.json"))
}

fn read_state(args: &Args) -> Result<State, String> {
    let path = state_path(args);
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("no lab is running (nothing in {})", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// Switches `fault` on at `endpoint` (`None`: clears it).
async fn switch(endpoint: &str, fault: Option<Value>) -> Result<(), String> {
    let request = match &fault {
        Some(fault) => client().put(endpoint).json(fault),
        None => client().delete(endpoint),
    };
    let reply = request.send().await.map_err(|e| {
        format!("cannot reach the fault endpoint {endpoint} ({e}): start the services with --fault-listen (./deploy/run-local.sh does)")
    })?;
    if !reply.status().is_success() {
        let status = reply.status();
        let body = reply.text().await.unwrap_or_default();
        return Err(format!("{endpoint} answered {status}: {body}"));
    }
    Ok(())
}

async fn start(
    args: &Args,
    name: Option<&str>,
    mystery: bool,
    seed: Option<u64>,
    duration: u64,
) -> Result<bool, String> {
    let path = state_path(args);
    if path.exists() {
        return Err(format!(
            "a lab is already running ({}): `lab stop` first",
            path.display()
        ));
    }
    let chosen: &Scenario = if mystery {
        let mut rng = seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        &SCENARIOS[rng.usize(..SCENARIOS.len())]
    } else {
        let name = name.unwrap_or_default();
        scenario(name).ok_or_else(|| format!("no lab called {name:?}: see `lab list`"))?
    };
    // Each service gets this lab's fault, or none (a previous one is cleared).
    if let Some(compose) = &args.compose {
        recreate(
            compose,
            chosen.a_fault.map(|f| f()),
            chosen.b_fault.map(|f| f()),
            args.dry_run,
        )?;
        if args.dry_run {
            return Ok(true);
        }
    } else {
        switch(&args.a_faults, chosen.a_fault.map(|f| f())).await?;
        switch(&args.b_faults, chosen.b_fault.map(|f| f())).await?;
    }

    let traffic = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("traffic")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("traffic"));
    let child = Command::new(&traffic)
        .args(["--target", &args.b, "--duration", &duration.to_string()])
        .args(chosen.traffic)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the traffic generator {} ({e}): build it beside lab with `cargo build --release -p traffic`",
                traffic.display()
            )
        })?;
    let state = State {
        scenario: chosen.name.to_owned(),
        mystery,
        traffic_pid: child.id(),
    };
    std::fs::write(&path, serde_json::to_string(&state).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if mystery {
        println!("A mystery lab is running: something is wrong. Find out what.");
        println!("Your answer: `lab check <name>`, one of: {}", names());
    } else {
        println!("Lab {}: {}", chosen.name, chosen.title);
        println!("Question: {}", chosen.question);
        println!("When you know: `lab check <name>`; `lab stop` ends it.");
    }
    Ok(true)
}

/// Recreates the compose stack's A and B with `a` and `b` as their start-up faults (`None`:
/// none): `A_FAULT=… B_FAULT=… docker compose -f <file> up -d --no-deps service-a service-b`.
fn recreate(
    compose: &std::path::Path,
    a: Option<Value>,
    b: Option<Value>,
    dry_run: bool,
) -> Result<(), String> {
    let env = [
        ("A_FAULT", a.map(|f| f.to_string()).unwrap_or_default()),
        ("B_FAULT", b.map(|f| f.to_string()).unwrap_or_default()),
    ];
    let file = compose.display().to_string();
    let args = [
        "compose",
        "-f",
        &file,
        "up",
        "-d",
        "--no-deps",
        "service-a",
        "service-b",
    ];
    if dry_run {
        for (name, value) in &env {
            println!("{name}={value}");
        }
        println!("docker {}", args.join(" "));
        return Ok(());
    }
    let status = Command::new("docker")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .map_err(|e| format!("cannot run docker compose: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("docker {} failed ({status})", args.join(" ")))
    }
}

fn names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn stop(args: &Args) -> Result<bool, String> {
    let state = read_state(args)?;
    let _ = Command::new("kill")
        .arg(state.traffic_pid.to_string())
        .stderr(Stdio::null())
        .status();
    let (a, b) = match &args.compose {
        Some(compose) => (recreate(compose, None, None, false), Ok(())),
        None => (
            switch(&args.a_faults, None).await,
            switch(&args.b_faults, None).await,
        ),
    };
    std::fs::remove_file(state_path(args)).map_err(|e| e.to_string())?;
    if state.mystery {
        println!("The lab was: {}", state.scenario);
    }
    println!("Lab stopped: faults cleared, traffic stopped.");
    a.and(b).map(|()| true)
}

async fn check(args: &Args, answer: &str) -> Result<bool, String> {
    let state = read_state(args)?;
    let Some(actual) = scenario(&state.scenario) else {
        return Err(format!(
            "unknown lab {:?} in the state file",
            state.scenario
        ));
    };
    if scenario(answer).is_none() {
        return Err(format!("no lab called {answer:?}: one of {}", names()));
    }
    let right = answer == actual.name;
    if right {
        println!("right: {}", actual.title);
    } else {
        println!("wrong: it is not {answer}. Look again at the evidence below.");
    }
    println!();
    println!("Dashboard panel: {}", actual.panel);
    println!("PromQL:          {}", actual.promql);
    match query(&args.prometheus, actual.promql).await {
        Ok(value) => println!("Its value now:   {value}"),
        Err(why) => println!(
            "Its value now:   (no answer from {}: {why})",
            args.prometheus
        ),
    }
    println!("Log:             {}", actual.log);
    match example(&args.b).await {
        Ok(example) => println!("An example now:  {example}"),
        Err(why) => println!("An example now:  (B did not answer: {why})"),
    }
    println!("Runbook:         {}", actual.runbook);
    Ok(right)
}

/// The value of `promql` now, one `{labels} value` per series.
async fn query(prometheus: &str, promql: &str) -> Result<String, String> {
    let mut url =
        reqwest::Url::parse(&format!("{prometheus}/api/v1/query")).map_err(|e| e.to_string())?;
    url.query_pairs_mut().append_pair("query", promql);
    let reply = client().get(url).send().await.map_err(|e| e.to_string())?;
    let body: Value = reply.json().await.map_err(|e| e.to_string())?;
    let series = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if series.is_empty() {
        return Ok("no data".into());
    }
    Ok(series
        .iter()
        .map(|s| format!("{} {}", s["metric"], s["value"][1].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join("; "))
}

/// One call to B like the traffic's: its status, request id and trace id, to look up in
/// the logs and in Jaeger.
async fn example(b: &str) -> Result<String, String> {
    let reply = client()
        .post(format!("{b}/protected-action"))
        .json(&serde_json::json!({"username": "divya", "password": "pass123"}))
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
        "{} for request id {} (grep it in both logs), trace {} (open it in Jaeger)",
        reply.status(),
        header("x-request-id"),
        trace_id
    ))
}
