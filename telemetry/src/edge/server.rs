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

use crate::edge::config::{ConnectionLimits, EdgeArgs};
use crate::edge::connection::{ConnEvent, EventLog, Io, Shared};

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
        events: EventLog::new(),
    });

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
}
