//! One request in, one server span, one log line and one set of metric samples out.
//!
//! [`instrument`] wraps a service's router with everything both services do to every request,
//! outermost first: validate or generate `X-Request-ID` and echo it, observe the request
//! (span joined to the caller's trace, seed-format log line, `http_requests_total`,
//! `http_request_duration_seconds` and `http_requests_in_flight` labelled by *route*, never
//! raw path, and a `traceresponse` header naming the trace), limit the body, and answer
//! unknown routes and methods with JSON errors.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use ::http::{HeaderName, HeaderValue};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use tower::ServiceBuilder;
use tracing::{Instrument as _, field};

use crate::logging::LogContext;
use crate::{http, request_id, traces};

/// Response header naming the request's trace (W3C Trace Context Level 2).
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// Request header in which a retrying caller numbers its attempts (1, 2, …); shown as
/// `attempt` on the request's span and log line.
pub const ATTEMPT_HEADER: &str = "x-attempt";

/// Route label for requests that matched no route (their raw paths would explode the label
/// set; the log line still shows the path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Adds the shared behaviour to `router`. Call it after all routes are added.
pub fn instrument<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_invalid)
                .layer(request_id::set_layer())
                .layer(request_id::propagate_layer())
                .layer(from_fn(observe))
                .layer(DefaultBodyLimit::max(http::BODY_LIMIT)),
        )
}

/// The middleware behind [`instrument`]: see the module docs.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let endpoint = format!(
        "{method} {}",
        route.as_deref().unwrap_or(request.uri().path())
    );
    let request_id = request_id::RequestId::from_headers(request.headers()).0;
    let attempt = request
        .headers()
        .get(ATTEMPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());

    let span = tracing::info_span!(
        "request",
        otel.name = %endpoint,
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = request.uri().path(),
        request.id = %request_id,
        attempt,
        http.response.status_code = field::Empty,
    );
    let ids = traces::join_caller_trace(&span, request.headers(), &request_id);
    let traceresponse = ids.traceresponse();
    LogContext {
        request_id,
        trace_id: ids.trace_id,
        span_id: ids.span_id,
    }
    .attach_to(&span);

    let record = Record::start(started, span.clone(), endpoint, attempt, &method, route);
    let mut response = next.run(request).instrument(span).await;
    if let Some(value) = traceresponse.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    record.finish(response.status().as_u16());
    response
}

/// Status logged and counted for a request whose caller went away before the answer (the
/// connection closed, so the server dropped the handler): nginx's "client closed request".
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// One request being observed: counted in `http_requests_in_flight` from the start, and
/// logged and counted exactly once at the end: by [`Record::finish`], or, if the handler is
/// dropped midway because the client went away, by `Drop` with status 499.
struct Record {
    span: tracing::Span,
    endpoint: String,
    attempt: Option<u32>,
    method: ::http::Method,
    handles: RouteHandles,
    started: Instant,
    finished: bool,
}

impl Record {
    fn start(
        started: Instant,
        span: tracing::Span,
        endpoint: String,
        attempt: Option<u32>,
        method: &::http::Method,
        route: Option<String>,
    ) -> Self {
        let route = route.unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
        let handles = RouteHandles::of(&route);
        handles.in_flight.increment(1.0);
        Self {
            span,
            endpoint,
            attempt,
            method: method.clone(),
            handles,
            started,
            finished: false,
        }
    }

    fn finish(mut self, status: u16) {
        self.record(status);
        self.finished = true;
    }

    fn record(&self, status: u16) {
        self.handles.in_flight.decrement(1.0);
        let elapsed = self.started.elapsed();
        self.span.record("http.response.status_code", status);
        if status >= 500 {
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.in_scope(|| {
            tracing::info!(
                endpoint = %self.endpoint,
                status,
                latency_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0,
                attempt = self.attempt,
            );
        });
        let (requests, duration) = self.handles.outcome(&self.method, status);
        requests.increment(1);
        duration.record(elapsed.as_secs_f64());
    }
}

/// `http_requests_total` and `http_request_duration_seconds` for one method and status.
type OutcomeHandles = (metrics::Counter, metrics::Histogram);

/// The metric handles of one route, registered once and reused: building label sets and
/// looking them up in the recorders on every request is measurable (BENCHMARKS.md).
#[derive(Clone)]
struct RouteHandles {
    route: Arc<str>,
    in_flight: metrics::Gauge,
    outcomes: Arc<RwLock<HashMap<(::http::Method, u16), OutcomeHandles>>>,
}

impl RouteHandles {
    /// The handles for `route` (the recorder is process-wide, so the cache is too).
    fn of(route: &str) -> Self {
        static ROUTES: OnceLock<RwLock<HashMap<String, RouteHandles>>> = OnceLock::new();
        let routes = ROUTES.get_or_init(RwLock::default);
        if let Some(handles) = routes.read().unwrap_or_else(|p| p.into_inner()).get(route) {
            return handles.clone();
        }
        let mut routes = routes.write().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(route.to_owned())
            .or_insert_with(|| Self {
                route: route.into(),
                in_flight: metrics::gauge!("http_requests_in_flight", "route" => route.to_owned()),
                outcomes: Arc::default(),
            })
            .clone()
    }

    /// `http_requests_total` and `http_request_duration_seconds` for one method and status.
    fn outcome(
        &self,
        method: &::http::Method,
        status: u16,
    ) -> (metrics::Counter, metrics::Histogram) {
        let key = (method.clone(), status);
        if let Some(handles) = self
            .outcomes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return handles.clone();
        }
        let labels = [
            ("method", method.as_str().to_owned()),
            ("route", self.route.to_string()),
            ("status", status.to_string()),
        ];
        let handles = (
            metrics::counter!("http_requests_total", &labels),
            metrics::histogram!("http_request_duration_seconds", &labels),
        );
        self.outcomes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(handles)
            .clone()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.finished {
            self.record(CLIENT_CLOSED_REQUEST);
        }
    }
}
