//! The protections the server puts around every route, as a layer it owns (see
//! [`crate::edge::server::serve`]), in this order:
//!
//! 1. **cut-off**: when the shutdown grace runs out, a request still running is answered
//!    503 (`shutdown_cut_off`) and its handler dropped;
//! 2. **body**: the request body is read whole before anything else, within
//!    `--body-timeout-ms` (408) and [`BODY_LIMIT`] (413);
//! 3. **load shed**: only then does the request take one of `--max-in-flight` places, or
//!    get 503 with `Retry-After` (`load_shed`). A client trickling its body in holds a
//!    connection, never a place other clients need. `/health` is never shed; `/metrics`
//!    takes one of `--max-scrapes` places of its own instead, so probes and scrapes answer
//!    under overload, and scrapes can never crowd out requests.
//!
//! Each answers with the JSON error every other error has; each runs inside the request's
//! span, so what it did shows on the request's log line, span and metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};
use tower::{Layer, Service};

use crate::around::{Around, Wrapped};
use crate::edge::connection::BodyArriving;
use crate::edge::http::{BODY_LIMIT, error};

/// The route never shed: a liveness probe must answer under overload, or an orchestrator
/// restarts a busy service.
pub const NEVER_SHED: &str = "/health";

/// The route with places of its own (`--max-scrapes`) instead of the in-flight limit's:
/// monitoring must see a service under overload, and a flood of scrapes must not be what
/// overloads it.
pub const SCRAPES: &str = "/metrics";

/// Requests shed because every place of their kind was taken, by `limit`: `in_flight`
/// (`--max-in-flight`) or `scrapes` (`--max-scrapes`).
pub const REQUESTS_SHED: &str = "http_requests_shed_total";

/// The limit that shed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    /// `--max-in-flight`.
    InFlight,
    /// `--max-scrapes`.
    Scrapes,
}

impl Shed {
    const ALL: [Self; 2] = [Self::InFlight, Self::Scrapes];

    /// The `limit` label.
    fn label(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Scrapes => "scrapes",
        }
    }
}

/// What the protections enforce.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a body may take to arrive after its head.
    pub body_timeout: Duration,
    /// Places for requests being worked on.
    pub in_flight: Arc<Semaphore>,
    /// Places for scrapes of `/metrics`.
    pub scrapes: Arc<Semaphore>,
    /// Turns true when the shutdown grace has run out.
    pub cut_off: watch::Receiver<bool>,
}

/// The protections as a tower layer, for the server to put around its routes.
#[derive(Debug, Clone)]
pub struct Protections(Arc<Guarded>);

/// The limits, and the counters of what they shed (by [`Shed`]).
#[derive(Debug)]
struct Guarded {
    limits: Limits,
    shed: [metrics::Counter; Shed::ALL.len()],
}

impl Protections {
    /// The layer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        metrics::describe_counter!(
            REQUESTS_SHED,
            "Requests answered 503 at once because every place of their kind was taken, by limit (--max-in-flight, --max-scrapes)"
        );
        let shed = Shed::ALL.map(|limit| {
            let counter = metrics::counter!(REQUESTS_SHED, "limit" => limit.label());
            counter.increment(0);
            counter
        });
        Self(Arc::new(Guarded { limits, shed }))
    }
}

impl<S> Layer<S> for Protections {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Protected<S> {
        Wrapped::new(inner, self.clone())
    }
}

/// A service (a route) behind the [`Protections`].
pub type Protected<S> = Wrapped<S, Protections>;

impl Around for Protections {
    fn around<S>(self, request: Request, inner: S) -> impl Future<Output = Response> + Send
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        protect(self.0, request, inner)
    }
}

async fn protect<S>(guarded: Arc<Guarded>, request: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let limits = &guarded.limits;
    let mut cut_off = limits.cut_off.clone();
    let protected = async {
        let request = match read_body(request, limits.body_timeout).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        let _place = match take_place(&request, limits) {
            Ok(place) => place,
            Err(limit) => return shed(limit, &guarded.shed),
        };
        let Ok(response) = inner.call(request).await;
        response
    };
    tokio::select! {
        response = protected => response,
        _ = cut_off.wait_for(|cut| *cut) => {
            crate::event!(WARN, "shutdown_cut_off");
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server shutting down: request cut off",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// The request with its body read whole: 408 when it does not arrive within `timeout`,
/// 413 when it is larger than [`BODY_LIMIT`], 503 when the connection was closed to make
/// room for another client before it arrived (see [`crate::edge::connection`]).
async fn read_body(request: Request, timeout: Duration) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    let arriving = parts.extensions.remove::<BodyArriving>();
    if http_body::Body::is_end_stream(&body) {
        return Ok(Request::from_parts(parts, body));
    }
    // A small body usually arrived with its head and is read at once: no timer is set
    // for it. One still on its way is read within `timeout`.
    let mut read = std::pin::pin!(Limited::new(body, BODY_LIMIT).collect());
    let at_once = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let result = match (at_once, &arriving) {
        (Poll::Ready(read), _) => Ok(read),
        (Poll::Pending, None) => tokio::time::timeout(timeout, read).await,
        (Poll::Pending, Some(arriving)) => tokio::select! {
            result = tokio::time::timeout(timeout, read) => result,
            () = arriving.evicted() => return Err(evicted()),
        },
    };
    if let Some(arriving) = &arriving {
        arriving.arrived();
    }
    match result {
        Ok(Ok(whole)) => Ok(Request::from_parts(parts, Body::from(whole.to_bytes()))),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {BODY_LIMIT} bytes"),
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// The answer to a request whose connection was closed to make room for another client
/// while its body was still arriving, too slowly: 503 with `Retry-After`, and the
/// connection closes after it.
fn evicted() -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server at its connection limit and the request body arrived too slowly: try again later",
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The request's place: one of the scrape places for `/metrics`, none for `/health`, one of
/// the in-flight places for everything else; `Err` when every place of its kind is taken.
fn take_place(request: &Request, limits: &Limits) -> Result<Option<OwnedSemaphorePermit>, Shed> {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let (places, limit) = match route {
        Some(NEVER_SHED) => return Ok(None),
        Some(SCRAPES) => (&limits.scrapes, Shed::Scrapes),
        _ => (&limits.in_flight, Shed::InFlight),
    };
    match places.clone().try_acquire_owned() {
        Ok(place) => Ok(Some(place)),
        Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(limit),
    }
}

/// The answer to a request shed because every place of its kind is taken: logged, counted,
/// 503 with `Retry-After`.
fn shed(limit: Shed, counters: &[metrics::Counter; Shed::ALL.len()]) -> Response {
    crate::event!(WARN, "load_shed", limit = limit.label());
    if let Some(index) = Shed::ALL.iter().position(|l| *l == limit) {
        counters[index].increment(1);
    }
    let message = match limit {
        Shed::InFlight => "too many requests in flight: try again later",
        Shed::Scrapes => "too many scrapes of /metrics at once: try again later",
    };
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
