//! The harness for the system tests: builds the real `service-a` and `service-b` binaries,
//! starts them as separate processes on free ports, captures their JSON log lines from
//! stdout, and stops them with real signals. Tests then talk to them over HTTP, as the lab's
//! curl walkthrough does. Tests that need nothing but HTTP start A and B inside the test
//! process instead ([`InProcess`]), with the same calls.
//!
//! Everything that waits polls with a bound ([`eventually`], [`TIMEOUT`] unless told); nothing
//! sleeps blindly.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod attack;
pub mod dns;
pub mod eventually;
pub mod fleet;
pub mod in_process;
pub mod lab_stack;
pub mod labs;
pub mod load;
mod logs;
pub mod memory;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod stub;
pub mod tools;

pub use eventually::eventually;
pub use in_process::InProcess;
pub use logs::Logs;

/// Upper bound for anything the tests wait on (start-up, a log line, an exit). Generous,
/// because CI machines are shared; a passing test never waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The demo user's password, for tests that check it never leaks.
pub const DEMO_PASSWORD: &str = "pass123";

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The provider.
    A,
    /// The consumer.
    B,
    /// The traffic generator.
    Traffic,
    /// The labs.
    Lab,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Self::A => "service-a",
            Self::B => "service-b",
            Self::Traffic => "traffic",
            Self::Lab => "lab",
        }
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Path to a service binary of the same profile as the tests. The README's test command
/// builds them before the tests start (`cargo build --workspace && cargo test --workspace`);
/// when a developer runs a test on its own, the first test to need one builds them (a
/// no-op when they are up to date).
pub fn binary(kind: Kind) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/system-<hash> → target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps")
            .to_path_buf();
        // The whole workspace, as the README's command builds it: features are unified over
        // the packages a build selects, so building only the binaries' packages would choose
        // other features for shared crates (rustix's `process`, which only these tests use)
        // and rebuild every binary, then again for the next `cargo build --workspace`.
        // Without RUSTC_BOOTSTRAP, which changes every crate's fingerprint: set to time the
        // tests (`-Z unstable-options --report-time`), it would rebuild the whole tree.
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--workspace"])
            .env_remove("RUSTC_BOOTSTRAP");
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the service binaries failed");
        profile_dir
    });
    dir.join(kind.binary())
}

/// A running service process. Killed when dropped.
#[derive(Debug)]
pub struct Service {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout, line by line.
    pub logs: Logs,
}

impl Service {
    /// Starts service A on a free port with extra `args`.
    pub fn a(args: &[&str]) -> Self {
        Self::start(Kind::A, "127.0.0.1:0", args, &[])
    }

    /// Starts service B on a free port, calling A at `provider`, with extra `args`.
    pub fn b(provider: &str, args: &[&str]) -> Self {
        let mut all = vec!["--provider-url", provider];
        all.extend_from_slice(args);
        Self::start(Kind::B, "127.0.0.1:0", &all, &[])
    }

    /// Starts `kind` listening on `listen` with `args` and extra environment `env`, and waits
    /// for its `listening` line.
    pub fn start(kind: Kind, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], kind, listen, args, env)
    }

    /// [`Self::start`], with the binary run by `wrapper` (e.g. `["prlimit", "--nofile=256"]`).
    pub fn start_under(
        wrapper: &[&str],
        kind: Kind,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(wrapper, kind, listen, args, env, |_| true)
    }

    /// [`Self::start_under`], keeping only the stdout lines `keep` accepts (every line is
    /// still read, so the service never waits on its stdout).
    pub(crate) fn spawn(
        wrapper: &[&str],
        kind: Kind,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        keep: fn(&str) -> bool,
    ) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary(kind));
                command
            }
            None => Command::new(binary(kind)),
        };
        command
            .args(["--listen", listen])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start service");
        let stdout = child.stdout.take().expect("stdout piped");
        let logs = Logs::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) if keep(&line) => sink.push(line),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        // Owned before the wait, so a service that never says where it listens is killed
        // with the failing test rather than left running.
        let mut service = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
        };
        let listening = service.logs.wait_for(|l| l["event"] == "listening");
        service.addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening line names the address");
        service
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://<addr><path>`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// Waits until every log line this service wrote so far has been captured: sends a
    /// marked `/health` request and waits for its line, which the service writes after all
    /// earlier ones. Use it before asserting that something was *not* logged.
    pub async fn sync_logs(&self) {
        static MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "sync-{}",
            MARK.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        send(client().get(self.at("/health")).header("x-request-id", &id)).await;
        self.logs.request_line(&id);
    }

    /// [`Self::sync_logs`] for tests that are not async.
    pub fn sync_logs_blocking(&self, runtime: &tokio::runtime::Runtime) {
        runtime.block_on(self.sync_logs());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's peak resident memory (`VmHWM` in `/proc/<pid>/status`), in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process is alive");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Asks `/health` over a new connection, and returns how long the answer took; panics
    /// unless it is a 200.
    pub async fn health_latency(&self) -> Duration {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(TIMEOUT)
            .build()
            .expect("client");
        let reply = send(fresh.get(self.at("/health"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.elapsed
    }

    /// The value of one Prometheus series, e.g. `http_connection_errors_total{kind="evicted"}`
    /// (0 when absent).
    pub async fn series(&self, series: &str) -> f64 {
        let text = get(&self.at("/metrics?format=prometheus")).await.text;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`, `INT`, `HUP`, `QUIT`).
    pub fn signal(&self, name: &str) {
        process::signal(self.pid(), process::by_name(name));
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        eventually("the process to exit").until(|| child.try_wait().expect("try_wait"))
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines from `lines` (a process's output, read by another thread) until one contains
/// `needle` (bounded by [`TIMEOUT`]); returns every line read.
pub fn lines_until(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    eventually(format!("a line with {needle:?}"))
        .every(Duration::ZERO)
        .until(|| {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return Ok(());
                }
            }
            Err(seen.clone())
        });
    seen
}

/// A loopback address nothing listens on (bound, then released).
pub fn vacant_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// An HTTP client that never goes through a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

/// A response read whole: status, headers, body as text and as JSON (when it is JSON).
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as sent.
    pub text: String,
    /// Body parsed, or `Value::Null` if it is not JSON.
    pub json: Value,
    /// Time from sending to the whole body read.
    pub elapsed: Duration,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `X-Request-ID` header.
    pub fn request_id(&self) -> &str {
        self.header("x-request-id")
    }
}

/// Sends `request` and reads the whole reply.
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let started = Instant::now();
    let response = request.send().await.expect("request sent and answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body read");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
        elapsed: started.elapsed(),
    }
}

/// `POST url` with a JSON body and an optional request id, like the walkthrough's curls.
/// The request is built before the future is returned, so it can be spawned.
pub fn post_json(
    url: &str,
    body: Value,
    request_id: Option<&str>,
) -> impl Future<Output = Reply> + Send + 'static + use<> {
    let mut request = client().post(url).json(&body);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    send(request)
}

/// The demo user's credentials as a request body: `{"username":"divya","password":"pass123"}`.
pub fn demo_login() -> Value {
    serde_json::json!({"username": "divya", "password": DEMO_PASSWORD})
}

/// [`demo_login`] with `extra` fields added, e.g. `json!({"delay_ms": 2000})`.
pub fn demo_login_with(extra: Value) -> Value {
    let mut body = demo_login();
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

impl Service {
    /// `POST /protected-action` on this service (B) with `body` and an optional request id.
    pub fn protected_action(
        &self,
        body: Value,
        request_id: Option<&str>,
    ) -> impl Future<Output = Reply> + Send + 'static + use<> {
        post_json(&self.at("/protected-action"), body, request_id)
    }

    /// `POST /token` on this service (A) with `body` and an optional request id.
    pub fn token(
        &self,
        body: Value,
        request_id: Option<&str>,
    ) -> impl Future<Output = Reply> + Send + 'static + use<> {
        post_json(&self.at("/token"), body, request_id)
    }
}

/// A service a helper can call, whether a process ([`Service`]) or inside the test process
/// ([`InProcess`]).
pub trait Served {
    /// `http://<addr>`.
    fn base_url(&self) -> String;
}

impl Served for Service {
    fn base_url(&self) -> String {
        self.url()
    }
}

impl Served for InProcess {
    fn base_url(&self) -> String {
        self.url()
    }
}

/// `GET /metrics<query>` on `service`, with `accept` as the `Accept` header when given.
pub async fn metrics_with(service: &impl Served, query: &str, accept: Option<&str>) -> Reply {
    let mut request = client().get(format!("{}/metrics{query}", service.base_url()));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    send(request).await
}

/// The committed OpenAPI description of `service` (`deploy/openapi/<service>.json`).
pub fn committed_openapi(service: &str) -> PathBuf {
    repo_root().join(format!("deploy/openapi/{service}.json"))
}

/// `GET url`.
pub fn get(url: &str) -> impl Future<Output = Reply> + Send + 'static + use<> {
    send(client().get(url))
}

/// Whether a string is a UUID v4 as tower-http generates it.
pub fn is_uuid_v4(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| bytes[i] == b'-')
        && bytes[14] == b'4'
        && s.chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit())
}
