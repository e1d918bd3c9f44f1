//! One connection: its head and idle timers, the request it is serving, how it ends and what
//! that says about the client (see the table in [`crate::edge::server`]). Works on any
//! stream a [`crate::edge::server::Listener`] accepts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

pub(crate) use crate::edge::rejections::{ConnEvent, EventLog};

use crate::edge::clocked_io::{ClockedIo, Phase, over_capacity_response, write_now};

/// A connection's byte stream: a TCP stream, or one a lab's fault wraps.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) http: hyper::server::conn::http1::Builder,
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    /// hyper's read buffer: `--max-header-bytes`, at least 8 KiB. A head that fills it
    /// without ending is refused.
    pub(crate) head_buffer: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) conns: Mutex<HashMap<u64, Arc<Conn>>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) open: watch::Sender<usize>,
    pub(crate) stopping: watch::Receiver<bool>,
    pub(crate) refusals: Arc<Semaphore>,
    pub(crate) events: EventLog,
}

/// One open connection, as the accept loop and its own task see it.
#[derive(Debug, Default)]
pub(crate) struct Conn {
    /// Requests on it being handled now.
    pub(crate) busy: AtomicU32,
    /// Requests it has carried so far (a new one resets the head clock).
    pub(crate) requests: AtomicU64,
    /// When it last had nothing to do, in milliseconds since [`epoch`].
    pub(crate) idle_since: AtomicU64,
    /// Whether a request's head or body is arriving on it now.
    pub(crate) receiving: AtomicBool,
    /// When the request now arriving sent its first byte, in milliseconds since [`epoch`].
    pub(crate) receiving_since: AtomicU64,
    /// Bytes read since then.
    pub(crate) received: AtomicU64,
    /// Told that it was closed to make room while its request's body was arriving: the
    /// body's reader answers 503 (see [`BodyArriving`]).
    pub(crate) evicted: Notify,
    /// Which of its timers fired, if one did ([`Phase`] as u8).
    pub(crate) timed_out: AtomicU8,
    /// Whether a request head on it filled hyper's read buffer without ending, which hyper
    /// refuses as too large. hyper reports that as a parse error, unless writing its 431
    /// fails first (a client still sending its head
    /// gets reset by the kernel): then hyper's error is the failed write, and this tells
    /// what happened.
    pub(crate) head_overflowed: AtomicBool,
    /// Told to close now: evicted, or the server is stopping and it is idle.
    pub(crate) close: Notify,
}

/// How long a connection is spared after it began to wait or to send, before it can be
/// judged by its rate: a client gets this long to send its request once connected.
const EVICTION_GRACE_MS: u64 = 250;

impl Conn {
    /// Where the connection stands in line to be closed when a newcomer needs its place,
    /// lowest first, or `None` when it may not be: it is handling a request (whose body
    /// has arrived). Idle connections go first, the longest idle first; then connections
    /// whose request is arriving, the slowest (bytes per second so far) first. So the
    /// clients that take a place and give little for it (a slow loris, a body at a byte a
    /// second, a keep-alive nobody uses) make room for everyone else. A connection that
    /// began to wait or to send less than [`EVICTION_GRACE_MS`] ago is judged last, the
    /// oldest first, so a burst of newcomers cannot push out the client that just arrived
    /// before it could say anything, nor lock everyone out by being new.
    fn eviction_rank(&self, now: u64) -> Option<(bool, u64, std::cmp::Reverse<u64>)> {
        let receiving = self.receiving.load(Relaxed);
        if !receiving && self.busy.load(Relaxed) > 0 {
            return None;
        }
        let since = if receiving {
            self.receiving_since.load(Relaxed)
        } else {
            self.idle_since.load(Relaxed)
        };
        let age = now.saturating_sub(since);
        if age < EVICTION_GRACE_MS {
            return Some((true, 0, std::cmp::Reverse(age)));
        }
        let bytes_per_sec = if receiving {
            self.received.load(Relaxed).saturating_mul(1000) / age
        } else {
            0
        };
        Some((false, bytes_per_sec, std::cmp::Reverse(age)))
    }

    /// A request's head started arriving, with its first `bytes`.
    pub(crate) fn started_receiving(&self, bytes: usize) {
        self.received.store(bytes as u64, Relaxed);
        self.receiving_since.store(now_ms(), Relaxed);
        self.receiving.store(true, Relaxed);
    }
}

/// Put on a request whose body is still arriving when its head has: the protections read
/// the body and say when it has arrived (see [`crate::edge::limits`]), and hear from it if
/// the connection was closed meanwhile to make room for another client.
#[derive(Debug, Clone)]
pub(crate) struct BodyArriving(Arc<Conn>);

impl BodyArriving {
    /// The body has arrived (or will not): the request is no longer arriving.
    pub(crate) fn arrived(&self) {
        self.0.receiving.store(false, Relaxed);
    }

    /// Resolves when the connection is closed to make room before the body has arrived.
    pub(crate) async fn evicted(&self) {
        self.0.evicted.notified().await;
    }
}

impl Shared {
    /// Takes a new connection. At the cap, the connection [`Conn::eviction_rank`] puts
    /// first is closed to make room; when none may be (every one is handling a request),
    /// the newcomer is refused.
    pub(crate) fn admit<I: Io>(self: &Arc<Self>, stream: I, peer: SocketAddr) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn::default());
        conn.idle_since.store(now_ms(), Relaxed);
        {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            if conns.len() >= self.max_connections {
                let now = now_ms();
                let victim = conns
                    .iter()
                    .filter_map(|(id, c)| c.eviction_rank(now).map(|rank| (rank, *id)))
                    .min()
                    .map(|(_, id)| id);
                match victim.and_then(|id| conns.remove(&id)) {
                    Some(victim) => {
                        if victim.busy.load(Relaxed) > 0 {
                            // Its body is arriving: the body's reader answers 503 and the
                            // connection closes after it. (Had the body arrived just now,
                            // nobody hears, and the request ends as usual.)
                            victim.evicted.notify_waiters();
                        } else {
                            victim.close.notify_one();
                        }
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
    async fn run<I: Io>(
        self: &Arc<Self>,
        stream: I,
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
            peer: crate::observe::requests::ClientAddress {
                ip: peer.ip().to_string().into(),
                port: peer.port(),
            },
        };
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut stopping = self.stopping.clone();
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => return result.err().and_then(|e| classify(&e, &conn)),
                () = conn.close.notified() => return None,
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
    fn refuse<I: Io>(&self, mut stream: I) {
        write_now(&mut stream, over_capacity_response());
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_millis(250), async {
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
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
    /// The peer's address, its IP written as text once per connection rather than once
    /// per request.
    peer: crate::observe::requests::ClientAddress,
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
        request.extensions_mut().insert(self.peer.clone());
        if http_body::Body::is_end_stream(request.body()) {
            self.conn.receiving.store(false, Relaxed);
        } else {
            request
                .extensions_mut()
                .insert(BodyArriving(self.conn.clone()));
        }
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
        self.conn.receiving.store(false, Relaxed);
        if self.conn.busy.fetch_sub(1, Relaxed) == 1 {
            self.conn.idle_since.store(now_ms(), Relaxed);
        }
    }
}

/// Milliseconds since [`epoch`].
pub(crate) fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A fixed instant early in the process, so connection timestamps fit in an atomic.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}
