//! One request in, one server span, one log line and one set of metric samples out.
//!
//! [`instrument`] wraps a service's router with everything both services do to every request,
//! outermost first: validate or generate `X-Request-ID` and echo it, observe the request
//! (span joined to the caller's trace, seed-format log line, `http_requests_total`,
//! `http_request_duration_seconds` and `http_requests_in_flight` labelled by *route*, never raw path), limit the body, and
//! answer unknown routes and methods with JSON errors.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use tower::ServiceBuilder;
use tracing::{Instrument as _, field};

use crate::logging::LogContext;
use crate::{http, request_id, traces};

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

    let span = tracing::info_span!(
        "request",
        otel.name = %endpoint,
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = request.uri().path(),
        request.id = %request_id,
        http.response.status_code = field::Empty,
    );
    let (trace_id, span_id) = traces::join_caller_trace(&span, request.headers());
    LogContext {
        request_id,
        trace_id,
        span_id,
    }
    .attach_to(&span);

    let route_label = route.clone().unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let in_flight = InFlight::enter(&route_label);
    let response = next.run(request).instrument(span.clone()).await;
    drop(in_flight);

    let status = response.status();
    let elapsed = started.elapsed();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        tracing::info!(
            endpoint = %endpoint,
            status = status.as_u16(),
            latency_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0,
        );
    });

    let labels = [
        ("method", method.as_str().to_owned()),
        ("route", route_label),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    response
}

/// Counts a request in `http_requests_in_flight` until dropped, so a request whose future is
/// dropped midway (the client went away) is still counted out.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter(route: &str) -> Self {
        let gauge = metrics::gauge!("http_requests_in_flight", "route" => route.to_owned());
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
