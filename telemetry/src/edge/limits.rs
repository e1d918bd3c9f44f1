//! The protections the server puts around every route, as a layer it owns (see
//! [`crate::edge::server::serve`]), in this order:
//!
//! 1. **cut-off**: when the shutdown grace runs out, a request still running is answered
//!    503 (`shutdown_cut_off`) and its handler dropped;
//! 2. **body**: the request body is read whole before anything else, within
//!    `--body-timeout-ms` (408) and [`BODY_LIMIT`] (413);
//! 3. **load shed**: only then does the request take one of `--max-in-flight` places, or
//!    get 503 with `Retry-After` (`load_shed`). A client trickling its body in holds a
//!    connection, never a place other clients need. Probes and scrapes are never shed.
//!
//! Each answers with the JSON error every other error has; each runs inside the request's
//! span, so what it did shows on the request's log line, span and metrics.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};
use tower::{Layer, Service};

use crate::edge::http::{BODY_LIMIT, error};

/// Routes never shed by the in-flight limit: probes and scrapes must answer under overload,
/// or an orchestrator restarts a busy service and monitoring goes blind when it matters.
pub const NEVER_SHED: [&str; 3] = ["/health", "/metrics", "/openapi.json"];

/// Requests shed because `--max-in-flight` were already being handled.
pub const REQUESTS_SHED: &str = "http_requests_shed_total";

/// What the protections enforce.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a body may take to arrive after its head.
    pub body_timeout: Duration,
    /// Places for requests being worked on.
    pub in_flight: Arc<Semaphore>,
    /// Turns true when the shutdown grace has run out.
    pub cut_off: watch::Receiver<bool>,
}

/// The protections as a tower layer, for the server to put around its routes.
#[derive(Debug, Clone)]
pub struct Protections(Arc<Limits>);

impl Protections {
    /// The layer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        metrics::describe_counter!(
            REQUESTS_SHED,
            "Requests answered 503 at once because --max-in-flight requests were being handled"
        );
        metrics::counter!(REQUESTS_SHED).absolute(0);
        Self(Arc::new(limits))
    }
}

impl<S> Layer<S> for Protections {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Protected<S> {
        Protected {
            inner,
            limits: Arc::clone(&self.0),
        }
    }
}

/// A service (a route) behind the [`Protections`].
#[derive(Debug, Clone)]
pub struct Protected<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> Service<Request> for Protected<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone made ready serves this request; a fresh one waits for the next.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let limits = Arc::clone(&self.limits);
        Box::pin(async move { Ok(protect(limits, request, inner).await) })
    }
}

async fn protect<S>(limits: Arc<Limits>, request: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let mut cut_off = limits.cut_off.clone();
    let protected = async {
        let request = match read_body(request, limits.body_timeout).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        let Ok(_place) = take_place(&request, &limits.in_flight) else {
            return shed();
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
/// 413 when it is larger than [`BODY_LIMIT`].
async fn read_body(request: Request, timeout: Duration) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    if http_body::Body::is_end_stream(&body) {
        return Ok(Request::from_parts(parts, body));
    }
    // A small body usually arrived with its head and is read at once: no timer is set
    // for it. One still on its way is read within `timeout`.
    let mut read = std::pin::pin!(Limited::new(body, BODY_LIMIT).collect());
    let at_once = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let result = match at_once {
        Poll::Ready(read) => Ok(read),
        Poll::Pending => tokio::time::timeout(timeout, read).await,
    };
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

/// One of the in-flight places (none needed for probes and scrapes), or `Err` when all
/// are taken.
fn take_place(
    request: &Request,
    in_flight: &Arc<Semaphore>,
) -> Result<Option<OwnedSemaphorePermit>, TryAcquireError> {
    let exempt = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|route| NEVER_SHED.contains(&route.as_str()));
    if exempt {
        return Ok(None);
    }
    in_flight.clone().try_acquire_owned().map(Some)
}

/// The answer to a request shed because every in-flight place is taken: logged, counted,
/// 503 with `Retry-After`.
fn shed() -> Response {
    crate::event!(WARN, "load_shed");
    metrics::counter!(REQUESTS_SHED).increment(1);
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in flight: try again later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
