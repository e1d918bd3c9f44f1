//! The connection edge both services share: accepts TCP connections and serves HTTP/1.1 on
//! them with hyper, with every quantity a client controls bounded, and drains on shutdown.
//!
//! `axum::serve` exposes none of these limits, so the accept loop is written here, over
//! hyper's own connection builder (which enforces the header limits). What each hostile or
//! careless client gets:
//!
//! | the client…                                   | gets                                      | counted as `http_connection_errors_total{kind}` |
//! |-----------------------------------------------|-------------------------------------------|------------------------------|
//! | sends a head over `--max-header-bytes`        | 431, empty body (hyper's), closed         | `header_too_large`           |
//! | sends a URI over 64 KiB                       | 414 or 431, empty body (hyper's), closed  | `uri_too_long` / `header_too_large` |
//! | sends a malformed head (control byte, two Content-Lengths, > 100 headers) | 400 or 431, empty body (hyper's), closed | `malformed_request` / `header_too_large` |
//! | takes over `--header-timeout-ms` for its head | 408 JSON, closed                          | `header_timeout`             |
//! | takes over `--body-timeout-ms` for its body   | 408 JSON (see [`crate::edge::limits`]); its body never holds an in-flight place | (a 408 request) |
//! | stays idle over `--idle-timeout-ms`           | closed (not an error)                     |                              |
//! | connects when `--max-connections` are open    | the longest-idle connection is closed to make room (`evicted`); if every one has a request in flight, 503 JSON with `Retry-After`, closed | `evicted` / `over_capacity` |
//! | (the process runs out of file descriptors)    | waits in the kernel's backlog; accept backs off, logged once per burst | `accept_failed` |
//!
//! Every kind is also logged (`event: connection_rejected`), at most once a second per kind
//! with the number left unlogged, so a flood cannot flood the log. Requests over
//! `--max-in-flight` (counted once their body has arrived) are shed (503 JSON): the server
//! wraps the service's routes in the layers of [`crate::edge::limits`] and observes them with
//! [`crate::observe::requests`].
//!
//! Shutdown: the listener closes; connections with no request in flight (idle, or a head
//! still arriving) close at once; requests in flight get `--shutdown-grace-ms`; any still
//! running then are answered 503 (`shutdown_cut_off`, see [`crate::edge::limits`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::edge::connection::{ConnEvent, EventLog, Io, Shared, register_metrics};

/// What the server accepts connections from: a TCP listener, or one a lab's fault wraps
/// (see [`crate::faults`]).
pub trait Listener: Send + 'static {
    /// One accepted connection's stream.
    type Io: Io;
    /// The next connection, and who it is from.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Answers are small and written whole: send them without waiting for more.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

/// Where a service listens, and its container health probe: both services flatten these
/// into their flags, each with its own default port.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ListenArgs<const PORT: u16> {
    /// Address and port to listen on (default 127.0.0.1 and the service's port), as IP:PORT
    /// or localhost:PORT. Use `0.0.0.0:<port>` in a container; port 0 picks a free port (the chosen address is logged
    /// in the `listening` event).
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT)),
          value_parser = crate::edge::cli::parse_listen)]
    pub listen: SocketAddr,

    /// Instead of serving, check that the server on --listen answers GET /health with 200,
    /// and exit 0 if so, 1 if not. For container healthchecks: no curl needed in the image.
    #[arg(long)]
    pub healthcheck: bool,
}

/// The listen address could not be bound (in use, or not ours).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub source: io::Error,
}

/// How many connections the kernel may hold complete but not yet accepted. Tokio's `bind`
/// asks for 128 (the standard library's figure); a burst of clients beyond that has its
/// connection attempts dropped, and each retries only after a second. The kernel caps the
/// figure at `net.core.somaxconn` (4096 on current Linux).
const BACKLOG: u32 = 1024;

/// Binds `addr` (port 0 picks a free port), saying which address failed and why.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    socket
        .and_then(|socket| {
            // As tokio's `bind` does: a restarted service may bind while the old one's
            // connections sit in TIME_WAIT.
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(BACKLOG)
        })
        .map_err(|source| BindError { addr, source })
}

/// The server's limits and timeouts; both services flatten these into their flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EdgeArgs {
    /// Largest request head (request line and headers) in bytes; a larger one gets 431 and
    /// the connection is closed.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1024, 1024 * 1024), allow_negative_numbers = true)]
    pub max_header_bytes: u32,

    /// How long a client may take to send a request head once it has started, in
    /// milliseconds (slow-loris defence); then 408 and the connection is closed.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub header_timeout_ms: u64,

    /// How long a client may take to send a request body after its head, in milliseconds;
    /// then 408.
    #[arg(long, env = "BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub body_timeout_ms: u64,

    /// How long a keep-alive connection may sit with no request before it is closed, in
    /// milliseconds. Keep callers' pool idle timeouts shorter (B's is 15 s), so they never
    /// reuse a connection the server is closing.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(1, 86_400_000), allow_negative_numbers = true)]
    pub idle_timeout_ms: u64,

    /// Most connections open at once (lowered to fit the open-files limit: see
    /// docs/limits.md). A new connection beyond it closes an idle or slowly sending one, or
    /// gets 503 if every one is handling a request.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub max_connections: u32,

    /// Most requests in flight at once (`/health` and `/metrics` excepted, so probes and
    /// scrapes still answer under overload); beyond it, 503 with `Retry-After`. Lowered to
    /// --max-connections if above it, and with it to fit the open-files limit.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub max_in_flight: u32,

    /// Most `GET /metrics` requests served at once (a scrape every few seconds needs one);
    /// beyond it, 503 with `Retry-After`, so scrapes can never crowd out requests.
    #[arg(long, env = "MAX_SCRAPES", default_value_t = 2,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1, 1024), allow_negative_numbers = true)]
    pub max_scrapes: u32,

    /// How long in-flight requests may run after SIGTERM before they are answered 503 and
    /// cut off, in milliseconds. Idle connections are closed at once.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(0, 3_600_000), allow_negative_numbers = true)]
    pub shutdown_grace_ms: u64,
}

impl Default for EdgeArgs {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_in_flight: 512,
            max_scrapes: 2,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl EdgeArgs {
    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// File descriptors kept free for everything that is not an inbound connection and not
/// counted by the caller of [`serve`]: the runtime, the listener, log output, the span
/// exporter, and connections refused over capacity while they linger.
const RESERVED_FDS: u64 = 64;

/// The fewest connections and in-flight places a service can work with: probes, a scrape
/// and a few callers at once. An open-files limit too low for them is refused at start.
const MIN_CONNECTIONS: u64 = 32;
const MIN_IN_FLIGHT: u64 = 8;

/// How long the answers to cut-off requests get to reach their clients after the grace.
const CUT_OFF_FLUSH: Duration = Duration::from_millis(500);

/// Longest pause of the accept loop after an accept error.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections refused over capacity that may linger at once while their request is read
/// and discarded (so the client reads the 503 instead of a reset); more are just closed.
const LINGERING_REFUSALS: usize = 16;

/// How a service is served, besides its flags.
#[derive(Debug, Clone, Copy)]
pub struct Serving<'a> {
    /// The limits and timeouts.
    pub edge: &'a EdgeArgs,
    /// Whether the caller's `x-attempt` header is shown on spans and log lines.
    pub attempt_header: crate::observe::requests::AttemptHeader,
    /// What every request is observed with.
    pub observe: &'a crate::observe::Settings,
}

/// Serves the service's `routes` on `listener` within `limits` until `stop` resolves, then
/// drains (see the module docs). The routes get JSON answers for unknown paths and methods, the
/// protections of [`crate::edge::limits`], and around them the observation of every request
/// ([`crate::observe::requests::Observation`]), as one layer around every route. Returns once
/// every connection is closed, or when the answers to cut-off requests have had half a second
/// to go out.
pub async fn serve(
    mut listener: impl Listener,
    routes: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    serving: Serving<'_>,
    limits: &ConnectionLimits,
) -> io::Result<()> {
    let Serving {
        edge,
        attempt_header,
        observe,
    } = serving;
    let (max_connections, max_in_flight) = (limits.max_connections, limits.max_in_flight);
    crate::event!(
        INFO,
        "edge_limits",
        max_connections,
        max_in_flight,
        max_scrapes = edge.max_scrapes,
        chosen = %limits.why,
        max_header_bytes = edge.max_header_bytes,
        header_timeout_ms = edge.header_timeout_ms,
        body_timeout_ms = edge.body_timeout_ms,
        idle_timeout_ms = edge.idle_timeout_ms,
    );
    let (stopping_tx, stopping) = watch::channel(false);
    let (cut_off_tx, cut_off) = watch::channel(false);
    let (open_tx, open) = watch::channel(0usize);
    let mut http = hyper::server::conn::http1::Builder::new();
    let max_header = edge.max_header_bytes as usize;
    // hyper's buffer also bounds what one read may hold; 8 KiB is its minimum.
    let head_buffer = max_header.max(8 * 1024);
    http.max_header_size(max_header)
        .max_buf_size(head_buffer)
        .header_read_timeout(None);
    let routes = routes
        .fallback(crate::edge::http::not_found)
        .method_not_allowed_fallback(crate::edge::http::method_not_allowed);
    let limits = crate::edge::limits::Limits {
        body_timeout: Duration::from_millis(edge.body_timeout_ms),
        in_flight: Arc::new(Semaphore::new(
            usize::try_from(max_in_flight).unwrap_or(usize::MAX),
        )),
        scrapes: Arc::new(Semaphore::new(edge.max_scrapes as usize)),
        cut_off,
    };
    // One layer around every route, outermost first: observation (so what the protections
    // answer is logged, counted and traced like any other answer), then the protections.
    // Each `Router::layer` would wrap every route once more, and each wrapper is cloned for
    // every request. The body reaching a handler is already read whole within its limit,
    // so the extractors' own limit (another wrapper around the body) is off.
    let router = routes.layer(
        tower::ServiceBuilder::new()
            .layer(crate::observe::requests::Observation::new(
                observe,
                attempt_header,
            ))
            .layer(crate::edge::limits::Protections::new(limits))
            .layer(axum::extract::DefaultBodyLimit::disable()),
    );
    let shared = Arc::new(Shared {
        router,
        http,
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        header_timeout: Duration::from_millis(edge.header_timeout_ms),
        head_buffer,
        idle_timeout: Duration::from_millis(edge.idle_timeout_ms),
        conns: Mutex::default(),
        next_id: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        open: open_tx,
        stopping,
        refusals: Arc::new(Semaphore::new(LINGERING_REFUSALS)),
        events: EventLog::default(),
    });
    register_metrics();

    tokio::pin!(stop);
    let mut accept_failures: Option<(u64, Duration)> = None;
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = Listener::accept(&mut listener) => match accepted {
                Ok((stream, peer)) => {
                    if let Some((failures, _)) = accept_failures.take() {
                        crate::event!(INFO, "accept_recovered", failures);
                    }
                    shared.admit(stream, peer);
                }
                Err(error) => {
                    // Out of file descriptors (or memory): the kernel keeps the connection in
                    // its backlog. Pause instead of spinning, and say so once per burst.
                    shared.events.record(ConnEvent::AcceptFailed, None);
                    let (failures, backoff) = accept_failures.get_or_insert_with(|| {
                        crate::event!(WARN, "accept_failed", error = %error,
                            details = "cannot accept connections; backing off until it recovers");
                        (0, Duration::from_millis(5))
                    });
                    *failures += 1;
                    let pause = *backoff;
                    *backoff = (*backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    drop(listener);

    let grace = Duration::from_millis(edge.shutdown_grace_ms);
    crate::event!(
        INFO,
        "shutdown_started",
        grace_ms = edge.shutdown_grace_ms,
        in_flight = shared.in_flight.load(Relaxed),
        connections = *open.borrow(),
    );
    let _ = stopping_tx.send(true);
    let all_closed = || {
        let mut open = open.clone();
        async move {
            let _ = open.wait_for(|n| *n == 0).await;
        }
    };
    if tokio::time::timeout(grace, all_closed()).await.is_err() {
        let cut_off = shared.in_flight.load(Relaxed);
        crate::event!(
            WARN,
            "shutdown_grace_expired",
            cut_off,
            details = "requests still in flight were answered 503 and cut off"
        );
        let _ = cut_off_tx.send(true);
        let _ = tokio::time::timeout(CUT_OFF_FLUSH, all_closed()).await;
    }
    crate::event!(INFO, "shutdown_complete");
    Ok(())
}

/// The connection and in-flight limits a service runs with, and why: see
/// [`ConnectionLimits::for_this_process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: u64,
    /// Most requests in flight at once.
    pub max_in_flight: u64,
    /// How they were chosen, said in the `edge_limits` line at start.
    pub why: String,
}

/// The open-files limit is too low for the service to work (the message names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitsError(pub String);

impl ConnectionLimits {
    /// The limits `edge` asks for, fitted to this process's open-files limit where each
    /// request in flight may also hold `outbound_per_request` connections of its own (B:
    /// one, to call A; A: none). See [`Self::derive`].
    pub fn for_this_process(
        edge: &EdgeArgs,
        outbound_per_request: u32,
    ) -> Result<Self, LimitsError> {
        Self::derive(edge, fd_limit(), outbound_per_request).map_err(LimitsError)
    }

    /// `--max-connections` and `--max-in-flight`, kept coherent: the in-flight limit never
    /// above the connection limit, and both lowered together to fit the open-files limit
    /// `fd_limit` less [`RESERVED_FDS`], where each request in flight may also hold
    /// `outbound_per_request` connections of its own. Lowered, a third of the descriptors
    /// left (B) or a half (A) go to in-flight places and the rest to connections, so
    /// connections always outnumber places and a new one finds room. Refused, naming the
    /// limit, when it leaves fewer than [`MIN_CONNECTIONS`] or [`MIN_IN_FLIGHT`].
    fn derive(
        edge: &EdgeArgs,
        fd_limit: Option<u64>,
        outbound_per_request: u32,
    ) -> Result<Self, String> {
        let outbound = u64::from(outbound_per_request);
        let connections = u64::from(edge.max_connections);
        let in_flight = u64::from(edge.max_in_flight).min(connections);
        let configured = if in_flight < u64::from(edge.max_in_flight) {
            "as configured, --max-in-flight lowered to --max-connections"
        } else {
            "as configured"
        };
        let as_configured = Self {
            max_connections: connections,
            max_in_flight: in_flight,
            why: configured.to_owned(),
        };
        let Some(limit) = fd_limit else {
            return Ok(as_configured);
        };
        let budget = limit.saturating_sub(RESERVED_FDS);
        if connections + in_flight * outbound <= budget {
            return Ok(as_configured);
        }
        let workable = |budget| {
            let (c, f) = Self::shared_out(connections, in_flight, budget, outbound);
            (c >= MIN_CONNECTIONS && f >= MIN_IN_FLIGHT).then_some((c, f))
        };
        let Some((max_connections, max_in_flight)) = workable(budget) else {
            // The least limit that works (what was asked for always does).
            let needed = (budget..=connections + in_flight * outbound)
                .find(|more| workable(*more).is_some())
                .map_or(limit, |budget| budget + RESERVED_FDS);
            let onwards = if outbound > 0 {
                " each with its own connection onwards"
            } else {
                ""
            };
            return Err(format!(
                "the open-files limit (ulimit -n) is {limit}: too low to serve, at least \
                 {needed} needed ({RESERVED_FDS} for the process, {MIN_CONNECTIONS} \
                 connections, {MIN_IN_FLIGHT} requests in flight{onwards}); raise it, e.g. \
                 ulimit -n 1024"
            ));
        };
        let onwards = if outbound > 0 {
            format!(", {} for connections onwards", max_in_flight * outbound)
        } else {
            String::new()
        };
        Ok(Self {
            max_connections,
            max_in_flight,
            why: format!(
                "lowered to fit the open-files limit of {limit}: {RESERVED_FDS} kept for the \
                 process{onwards}"
            ),
        })
    }

    /// `budget` descriptors shared out between connections and in-flight places (see
    /// [`Self::derive`]), neither above what was asked.
    fn shared_out(connections: u64, in_flight: u64, budget: u64, outbound: u64) -> (u64, u64) {
        let in_flight = in_flight.min(budget / (2 + outbound));
        let connections = connections.min(budget.saturating_sub(in_flight * outbound));
        (connections, in_flight)
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux; `None` elsewhere).
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resolves on the first SIGTERM (what `kill`, Docker and Kubernetes send), SIGINT (Ctrl-C),
/// SIGHUP (the terminal closed) or SIGQUIT: each drains and flushes the same way, so no
/// answered request goes unlogged whichever one ends the process.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            ("SIGTERM", SignalKind::terminate()),
            ("SIGINT", SignalKind::interrupt()),
            ("SIGHUP", SignalKind::hangup()),
            ("SIGQUIT", SignalKind::quit()),
        ];
        let mut listening = Vec::new();
        for (name, kind) in kinds {
            match signal(kind) {
                Ok(stream) => listening.push((name, stream)),
                Err(e) => tracing::error!(error = %e, signal = name, "cannot listen for a signal"),
            }
        }
        let received = std::future::poll_fn(|cx| {
            for (name, stream) in &mut listening {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*name);
                }
            }
            std::task::Poll::Pending
        });
        let name = received.await;
        crate::event!(INFO, "signal_received", signal = name);
    }
    #[cfg(not(unix))]
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 600 clients connect at once to a listener that accepts none yet: every connection
    /// completes at once. With a backlog of 128 the kernel drops the attempts past it, and
    /// those clients would wait a second for their retry.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut held = Vec::new();
        for _ in 0..600 {
            let connect = TcpStream::connect(addr);
            let stream = tokio::time::timeout(Duration::from_millis(500), connect)
                .await
                .expect("a connection attempt was dropped: the backlog is too short")
                .expect("connected");
            held.push(stream);
        }
        drop(listener);
    }

    /// (max_connections, max_in_flight) for the default flags at `fd_limit`, for A (no
    /// connections onwards) and B (one per request in flight).
    fn derived(fd_limit: Option<u64>, outbound: u32) -> Result<(u64, u64), String> {
        ConnectionLimits::derive(&EdgeArgs::default(), fd_limit, outbound)
            .map(|l| (l.max_connections, l.max_in_flight))
    }

    #[test]
    fn limits_fit_the_descriptors_and_stay_coherent() {
        // Room enough: as configured.
        assert_eq!(derived(None, 1), Ok((1024, 512)));
        assert_eq!(derived(Some(20_000), 1), Ok((1024, 512)));
        assert_eq!(
            derived(Some(1024 + 64), 0),
            Ok((1024, 512)),
            "A needs no room onwards"
        );
        // systemd's default soft limit: both lowered, connections above places.
        assert_eq!(derived(Some(1024), 0), Ok((960, 480)));
        assert_eq!(derived(Some(1024), 1), Ok((640, 320)));
        // A small limit still works.
        assert_eq!(derived(Some(256), 0), Ok((192, 96)));
        assert_eq!(derived(Some(256), 1), Ok((128, 64)));
        for fd_limit in (0..100_000).step_by(7) {
            for outbound in [0, 1, 2] {
                if let Ok((connections, in_flight)) = derived(Some(fd_limit), outbound) {
                    assert!(in_flight <= connections, "{fd_limit}, {outbound}");
                    assert!(connections >= MIN_CONNECTIONS && in_flight >= MIN_IN_FLIGHT);
                    assert!(
                        connections + in_flight * u64::from(outbound) + RESERVED_FDS <= fd_limit,
                        "{fd_limit}, {outbound}: over the limit"
                    );
                }
            }
        }
    }

    #[test]
    fn a_limit_too_low_to_work_is_refused_by_name() {
        let refusal = derived(Some(64), 1).expect_err("refused");
        assert!(
            refusal.contains("open-files limit (ulimit -n) is 64"),
            "{refusal}"
        );
        assert!(refusal.contains("at least 111 needed"), "{refusal}");
        assert!(derived(Some(110), 1).is_err());
        assert!(derived(Some(111), 1).is_ok());
        assert!(derived(Some(95), 0).is_err());
        assert!(derived(Some(96), 0).is_ok());
    }

    #[test]
    fn in_flight_never_exceeds_connections() {
        let edge = EdgeArgs {
            max_connections: 100,
            max_in_flight: 512,
            ..EdgeArgs::default()
        };
        let limits = ConnectionLimits::derive(&edge, None, 1).expect("works");
        assert_eq!((limits.max_connections, limits.max_in_flight), (100, 100));
        assert!(limits.why.contains("lowered"), "{}", limits.why);
    }

    #[test]
    fn the_fd_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(fd_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn edge_defaults_match_the_flags() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            edge: EdgeArgs,
        }
        let cli = Cli::try_parse_from(["x"]).expect("defaults parse");
        assert_eq!(cli.edge, EdgeArgs::default());
        assert!(Cli::try_parse_from(["x", "--max-header-bytes", "10"]).is_err());
    }
}
