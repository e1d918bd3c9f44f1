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
//! | takes over `--body-timeout-ms` for its body   | 408 JSON (see [`crate::limits`]); its body never holds an in-flight place | (a 408 request) |
//! | stays idle over `--idle-timeout-ms`           | closed (not an error)                     |                              |
//! | connects when `--max-connections` are open    | the longest-idle connection is closed to make room (`evicted`); if every one has a request in flight, 503 JSON with `Retry-After`, closed | `evicted` / `over_capacity` |
//! | (the process runs out of file descriptors)    | waits in the kernel's backlog; accept backs off, logged once per burst | `accept_failed` |
//!
//! Every kind is also logged (`event: connection_rejected`), at most once a second per kind
//! with the number left unlogged, so a flood cannot flood the log. Requests over
//! `--max-in-flight` (counted once their body has arrived) are shed (503 JSON): the server
//! wraps the service's routes in the layers of [`crate::limits`] and observes them with
//! [`crate::observe`].
//!
//! Shutdown: the listener closes; connections with no request in flight (idle, or a head
//! still arriving) close at once; requests in flight get `--shutdown-grace-ms`; any still
//! running then are answered 503 (`shutdown_cut_off`, see [`crate::limits`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// Where a service listens, and its container health probe: both services flatten these
/// into their flags, each with its own default port.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ListenArgs<const PORT: u16> {
    /// Address and port to listen on (default 127.0.0.1 and the service's port), as IP:PORT
    /// or localhost:PORT. Use `0.0.0.0:<port>` in a container; port 0 picks a free port (the chosen address is logged
    /// in the `listening` event).
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT)),
          value_parser = crate::cli::parse_listen)]
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

/// Binds `addr` (port 0 picks a free port), saying which address failed and why.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Whether the server is unplugged: every connection, new or open, is closed unanswered, as
/// if the process were gone (a lab's "A is down", switched through the fault endpoint).
static UNPLUGGED: std::sync::LazyLock<watch::Sender<bool>> =
    std::sync::LazyLock::new(|| watch::Sender::new(false));

/// Unplugs the server (`true`) or plugs it back in (`false`).
pub fn unplug(unplugged: bool) {
    UNPLUGGED.send_replace(unplugged);
}

/// The server's limits and timeouts; both services flatten these into their flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EdgeArgs {
    /// Largest request head (request line and headers) in bytes; a larger one gets 431 and
    /// the connection is closed.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = crate::cli::whole::<u32>(1024, 1024 * 1024), allow_negative_numbers = true)]
    pub max_header_bytes: u32,

    /// How long a client may take to send a request head once it has started, in
    /// milliseconds (slow-loris defence); then 408 and the connection is closed.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = crate::cli::whole::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub header_timeout_ms: u64,

    /// How long a client may take to send a request body after its head, in milliseconds;
    /// then 408.
    #[arg(long, env = "BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = crate::cli::whole::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub body_timeout_ms: u64,

    /// How long a keep-alive connection may sit with no request before it is closed, in
    /// milliseconds. Keep callers' pool idle timeouts shorter (B's is 15 s), so they never
    /// reuse a connection the server is closing.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = crate::cli::whole::<u64>(1, 86_400_000), allow_negative_numbers = true)]
    pub idle_timeout_ms: u64,

    /// Most connections open at once (lowered to fit the file-descriptor limit). A new
    /// connection beyond it closes the longest-idle one, or gets 503 if all are busy.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = crate::cli::whole::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub max_connections: u32,

    /// Most requests in flight at once (`/health` and `/metrics` excepted, so probes and
    /// scrapes still answer under overload); beyond it, 503 with `Retry-After`. Keep it
    /// below --max-connections, so a new connection always finds room.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = crate::cli::whole::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub max_in_flight: u32,

    /// How long in-flight requests may run after SIGTERM before they are answered 503 and
    /// cut off, in milliseconds. Idle connections are closed at once.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = crate::cli::whole::<u64>(0, 3_600_000), allow_negative_numbers = true)]
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
    /// How many descriptors the service may hold for connections of its own (B: one per
    /// request in flight, to call A); the connection cap leaves room for them.
    pub outbound: u32,
    /// Whether the caller's `x-attempt` header is shown on spans and log lines.
    pub attempt_header: crate::observe::AttemptHeader,
}

/// Serves the service's `routes` on `listener` until `stop` resolves, then drains (see the
/// module docs). The routes get JSON answers for unknown paths and methods, the
/// protections of [`crate::limits`], and around them the observation of every request
/// ([`crate::observe::instrument`]). Returns once every connection is closed, or when the
/// answers to cut-off requests have had half a second to go out.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    serving: Serving<'_>,
) -> io::Result<()> {
    let Serving {
        edge,
        outbound,
        attempt_header,
    } = serving;
    let max_connections = connection_cap(
        u64::from(edge.max_connections),
        fd_limit().map(|limit| limit.saturating_sub(u64::from(outbound))),
    );
    tracing::info!(
        event = "edge_limits",
        max_connections,
        max_in_flight = edge.max_in_flight,
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
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed);
    let limits = crate::limits::Limits {
        body_timeout: Duration::from_millis(edge.body_timeout_ms),
        in_flight: Arc::new(Semaphore::new(edge.max_in_flight as usize)),
        cut_off,
    };
    let router = crate::observe::instrument(crate::limits::apply(routes, limits), attempt_header);
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
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some((failures, _)) = accept_failures.take() {
                        tracing::info!(event = "accept_recovered", failures);
                    }
                    shared.admit(stream, peer);
                }
                Err(error) => {
                    // Out of file descriptors (or memory): the kernel keeps the connection in
                    // its backlog. Pause instead of spinning, and say so once per burst.
                    shared.events.record(ConnEvent::AcceptFailed, None);
                    let (failures, backoff) = accept_failures.get_or_insert_with(|| {
                        tracing::warn!(event = "accept_failed", error = %error,
                            "cannot accept connections; backing off until it recovers");
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
    tracing::info!(
        event = "shutdown_started",
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
        tracing::warn!(
            event = "shutdown_grace_expired",
            cut_off,
            "requests still in flight were answered 503 and cut off"
        );
        let _ = cut_off_tx.send(true);
        let _ = tokio::time::timeout(CUT_OFF_FLUSH, all_closed()).await;
    }
    tracing::info!(event = "shutdown_complete");
    Ok(())
}

/// `--max-connections`, lowered so that inbound connections leave [`RESERVED_FDS`] free
/// under the process's file-descriptor limit.
fn connection_cap(configured: u64, fd_limit: Option<u64>) -> u64 {
    match fd_limit {
        Some(limit) => configured.min(limit.saturating_sub(RESERVED_FDS).max(1)),
        None => configured,
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

/// What every connection task shares.
struct Shared {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    max_connections: usize,
    header_timeout: Duration,
    /// hyper's read buffer: `--max-header-bytes`, at least 8 KiB. A head that fills it
    /// without ending is refused.
    head_buffer: usize,
    idle_timeout: Duration,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    open: watch::Sender<usize>,
    stopping: watch::Receiver<bool>,
    refusals: Arc<Semaphore>,
    events: EventLog,
}

/// One open connection, as the accept loop and its own task see it.
#[derive(Debug, Default)]
struct Conn {
    /// Requests on it being handled now.
    busy: AtomicU32,
    /// Requests it has carried so far (a new one resets the head clock).
    requests: AtomicU64,
    /// When it last had nothing to do, in milliseconds since [`epoch`].
    idle_since: AtomicU64,
    /// Which of its timers fired, if one did ([`Phase`] as u8).
    timed_out: AtomicU8,
    /// Whether a request head on it filled hyper's read buffer without ending, which hyper
    /// refuses as too large. hyper reports that as a parse error, unless writing its 431
    /// fails first (a client still sending its head
    /// gets reset by the kernel): then hyper's error is the failed write, and this tells
    /// what happened.
    head_overflowed: AtomicBool,
    /// Told to close now: evicted, or the server is stopping and it is idle.
    close: Notify,
}

impl Shared {
    /// Takes a new connection: evicts the longest-idle one when at the cap, or refuses the
    /// newcomer when every open connection is busy.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        if *UNPLUGGED.borrow() {
            drop(stream);
            return;
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn::default());
        conn.idle_since.store(now_ms(), Relaxed);
        {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            if conns.len() >= self.max_connections {
                let victim = conns
                    .iter()
                    .filter(|(_, c)| c.busy.load(Relaxed) == 0)
                    .min_by_key(|(_, c)| c.idle_since.load(Relaxed))
                    .map(|(id, _)| *id);
                match victim.and_then(|id| conns.remove(&id)) {
                    Some(victim) => {
                        victim.close.notify_one();
                        self.events.record(ConnEvent::Evicted, Some(peer));
                    }
                    None => {
                        drop(conns);
                        self.events.record(ConnEvent::OverCapacity, Some(peer));
                        self.refuse(stream);
                        return;
                    }
                }
            }
            conns.insert(id, conn.clone());
            self.open.send_replace(conns.len());
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let ended = shared.run(stream, peer, conn).await;
            let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.remove(&id);
            shared.open.send_replace(conns.len());
            drop(conns);
            if let Some(event) = ended {
                shared.events.record(event, Some(peer));
            }
        });
    }

    /// Serves one connection until it ends; returns the rejection to record, if any.
    async fn run(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        conn: Arc<Conn>,
    ) -> Option<ConnEvent> {
        let io = ClockedIo {
            io: stream,
            conn: conn.clone(),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            head: None,
            head_bytes: 0,
            head_buffer: self.head_buffer,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        };
        let service = ConnService {
            shared: self.clone(),
            conn: conn.clone(),
            peer_ip: peer.ip().to_string().into(),
        };
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut stopping = self.stopping.clone();
        let mut unplugged = UNPLUGGED.subscribe();
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => return result.err().and_then(|e| classify(&e, &conn)),
                () = conn.close.notified() => return None,
                _ = unplugged.wait_for(|u| *u) => return None,
                changed = stopping.wait_for(|s| *s), if !draining => {
                    if changed.is_err() || conn.busy.load(Relaxed) == 0 {
                        return None;
                    }
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }

    /// Answers a connection over capacity with a 503 and closes it. While few are lingering,
    /// its request is read and discarded first, so the client sees the answer, not a reset.
    fn refuse(&self, stream: TcpStream) {
        let _ = stream.try_write(over_capacity_response());
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_millis(250), async {
                let mut sink = [0u8; 1024];
                while stream.readable().await.is_ok() {
                    match stream.try_read(&mut sink) {
                        Ok(0) => break,
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => break,
                        _ => {}
                    }
                }
            })
            .await;
        });
    }
}

/// What hyper's error says about the client, when it is the client's fault.
fn classify(error: &hyper::Error, conn: &Conn) -> Option<ConnEvent> {
    if conn.timed_out.load(Relaxed) == Phase::Head as u8 {
        return Some(ConnEvent::HeaderTimeout);
    }
    // Too large as hyper says, or as this connection saw when hyper's 431 could not be
    // written (then hyper's error is the failed write).
    let too_large =
        error.is_parse_too_large() || (!error.is_parse() && conn.head_overflowed.load(Relaxed));
    if too_large {
        // hyper reports an over-long URI as "too large" too; its message tells them apart.
        if error.to_string().contains("URI too long") {
            return Some(ConnEvent::UriTooLong);
        }
        return Some(ConnEvent::HeaderTooLarge);
    }
    if error.is_parse() {
        return Some(ConnEvent::MalformedRequest);
    }
    None
}

/// The hyper service of one connection: counts the request as busy on the connection and in
/// the process, tells it the caller's address, and runs the router.
#[derive(Clone)]
struct ConnService {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    /// The peer's IP as text, written once per connection rather than once per request.
    peer_ip: Arc<str>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        self.conn.requests.fetch_add(1, Relaxed);
        self.conn.busy.fetch_add(1, Relaxed);
        self.shared.in_flight.fetch_add(1, Relaxed);
        let busy = Busy {
            conn: self.conn.clone(),
            shared: self.shared.clone(),
        };
        request
            .extensions_mut()
            .insert(crate::extensions::ClientAddress(self.peer_ip.clone()));
        let response = self
            .shared
            .router
            .clone()
            .oneshot(request.map(axum::body::Body::new));
        Box::pin(async move {
            let response = response.await;
            drop(busy);
            response
        })
    }
}

/// A request in flight; dropped when it is answered or abandoned.
struct Busy {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Relaxed);
        if self.conn.busy.fetch_sub(1, Relaxed) == 1 {
            self.conn.idle_since.store(now_ms(), Relaxed);
        }
    }
}

/// Which timer of a connection is running: none while a request is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for a request; nothing of it has arrived.
    Idle = 1,
    /// Part of a request head has arrived.
    Head = 2,
}

/// The connection's socket, with its head and idle timers: while no request is in flight,
/// a read that would wait past the running timer's deadline fails instead (after a JSON
/// 408 for a head that stalled), which ends the connection. The timer is armed wherever
/// hyper touches the socket while waiting (a read that would block, the flush of a
/// response), so its expiry always wakes the connection.
struct ClockedIo {
    io: TcpStream,
    conn: Arc<Conn>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// When the current head started arriving, and the request count then.
    head: Option<(Instant, u64)>,
    /// Bytes read since the current head started arriving.
    head_bytes: usize,
    head_buffer: usize,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl ClockedIo {
    /// The running timer's phase and deadline, or `None` while a request is in flight.
    fn deadline(&mut self) -> Option<(Phase, Instant)> {
        if self.conn.busy.load(Relaxed) > 0 {
            return None;
        }
        let requests = self.conn.requests.load(Relaxed);
        match self.head {
            Some((started, at)) if at == requests => {
                Some((Phase::Head, started + self.header_timeout))
            }
            _ => {
                self.head = None;
                let idle_since =
                    epoch() + Duration::from_millis(self.conn.idle_since.load(Relaxed));
                Some((Phase::Idle, idle_since + self.idle_timeout))
            }
        }
    }
}

impl ClockedIo {
    /// Arms the running timer and polls it: the phase whose deadline has passed, if one has.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<Phase> {
        let (phase, deadline) = self.deadline()?;
        if self.armed != Some(deadline) {
            self.sleep.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready().then_some(phase)
    }
}

impl AsyncRead for ClockedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                let started_a_head =
                    read > 0 && this.head.is_none() && this.conn.busy.load(Relaxed) == 0;
                if started_a_head {
                    this.head = Some((Instant::now(), this.conn.requests.load(Relaxed)));
                    this.head_bytes = 0;
                }
                let in_head = this
                    .head
                    .is_some_and(|(_, at)| at == this.conn.requests.load(Relaxed));
                if in_head {
                    this.head_bytes = this.head_bytes.saturating_add(read);
                    // hyper reads a head into a buffer of this size at most: a head
                    // still incomplete when it is full is refused.
                    if this.head_bytes >= this.head_buffer {
                        this.conn.head_overflowed.store(true, Relaxed);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(phase) = this.poll_timer(cx) else {
                    return Poll::Pending;
                };
                this.conn.timed_out.store(phase as u8, Relaxed);
                if phase == Phase::Head {
                    let message = format!(
                        "request head not received within {} ms",
                        this.header_timeout.as_millis()
                    );
                    let _ =
                        this.io
                            .try_write(&canned_response("408 Request Timeout", &message, false));
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match phase {
                        Phase::Idle => "idle timeout",
                        Phase::Head => "request head timeout",
                    },
                )))
            }
        }
    }
}

impl AsyncWrite for ClockedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        // A response has gone out. Hyper does not read again until the socket is readable,
        // so the idle timer is armed here, where it wakes the connection when it fires.
        if flushed.is_ready() && self.poll_timer(cx).is_some() {
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A whole HTTP/1.1 response with a JSON error body, for the answers written before or
/// instead of hyper's (the connection closes after it).
fn canned_response(status: &str, error: &str, retry_after: bool) -> Vec<u8> {
    let body = crate::http::error_body(error);
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if retry_after {
        response.push_str("retry-after: 1\r\n");
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The 503 for a connection over `--max-connections`, built once.
fn over_capacity_response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| {
        canned_response(
            "503 Service Unavailable",
            "server at its connection limit: try again later",
            true,
        )
    })
}

/// Milliseconds since [`epoch`].
fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A fixed instant early in the process, so connection timestamps fit in an atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Connections refused or closed because of what the client did, by kind.
pub const CONNECTION_ERRORS: &str = "http_connection_errors_total";

/// A connection-level event worth counting and logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnEvent {
    HeaderTooLarge,
    UriTooLong,
    MalformedRequest,
    HeaderTimeout,
    OverCapacity,
    Evicted,
    AcceptFailed,
}

impl ConnEvent {
    const ALL: [Self; 7] = [
        Self::HeaderTooLarge,
        Self::UriTooLong,
        Self::MalformedRequest,
        Self::HeaderTimeout,
        Self::OverCapacity,
        Self::Evicted,
        Self::AcceptFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::HeaderTooLarge => "header_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::MalformedRequest => "malformed_request",
            Self::HeaderTimeout => "header_timeout",
            Self::OverCapacity => "over_capacity",
            Self::Evicted => "evicted",
            Self::AcceptFailed => "accept_failed",
        }
    }
}

fn register_metrics() {
    metrics::describe_counter!(
        CONNECTION_ERRORS,
        "Connections refused or closed because of what the client sent or how many there were, by kind"
    );
    for event in ConnEvent::ALL {
        metrics::counter!(CONNECTION_ERRORS, "kind" => event.label()).absolute(0);
    }
}

/// Counts every connection event, and logs at most one line a second per kind, carrying
/// how many went unlogged since the previous line.
#[derive(Debug, Default)]
struct EventLog {
    /// Per kind: the second (since [`epoch`]) of the last line, plus one (0: never).
    last_logged: [AtomicU64; ConnEvent::ALL.len()],
    /// Per kind: events not logged since the last line.
    unlogged: [AtomicU64; ConnEvent::ALL.len()],
}

impl EventLog {
    fn record(&self, event: ConnEvent, peer: Option<SocketAddr>) {
        metrics::counter!(CONNECTION_ERRORS, "kind" => event.label()).increment(1);
        if event == ConnEvent::AcceptFailed {
            return; // the accept loop logs its bursts itself
        }
        let index = event as usize;
        let second = now_ms() / 1000 + 1;
        let last = self.last_logged[index].load(Relaxed);
        let due = last != second
            && self.last_logged[index]
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_ok();
        if !due {
            self.unlogged[index].fetch_add(1, Relaxed);
            return;
        }
        let unlogged = self.unlogged[index].swap(0, Relaxed);
        tracing::warn!(
            event = "connection_rejected",
            kind = event.label(),
            peer = peer.map(|p| p.to_string()),
            unlogged,
        );
    }
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
        tracing::info!(event = "signal_received", signal = name);
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

    #[test]
    fn the_connection_cap_leaves_descriptors_free() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(20_000)), 1024);
        assert_eq!(connection_cap(1024, Some(256)), 192);
        assert_eq!(connection_cap(1024, Some(10)), 1, "never zero");
    }

    #[test]
    fn the_fd_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(fd_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn canned_answers_are_whole_json_responses() {
        let response = String::from_utf8(canned_response("503 Service Unavailable", "busy", true))
            .expect("utf-8");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nretry-after: 1"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert_eq!(body, "{\"error\":\"busy\"}\n");
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
