//! One request in, one server span, one log line and one set of metric samples out.
//!
//! [`Observation`] is the tower layer of everything both services do to every request,
//! outermost first: validate or generate `X-Request-ID` and echo it (tower-http), observe the
//! request (span joined to the caller's trace, log line in the lab's format,
//! `http_requests_total` by route, `http_server_request_duration_seconds` by route with an
//! exemplar for sampled requests, `http_server_active_requests`, never by raw path, and a
//! `traceresponse` header naming the trace). The server puts it around its protections, so
//! their answers are observed like any other.
//!
//! Every label value and span name comes from a bounded set: a method outside the standard
//! ones is `_OTHER` (the OpenTelemetry convention; the original is kept on the span as
//! `http.request.method_original`), and a path no route matches is `unmatched`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use ::http::{HeaderName, Method};
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::util::MapRequest;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::request_id::{PropagateRequestId, SetRequestId};
use tracing::Instrument as _;

use crate::around::{Around, Wrapped};
use crate::observe::logs::format::LogContext;
use crate::observe::requests::id as request_id;
use crate::observe::requests::id::NewUuid;
use crate::observe::requests::series::{CALLER_GONE, OTHER_METHOD, RequestMetrics, RouteHandles};
use crate::observe::requests::server_span::{DeclaredQuery, protocol_version, server_span};
use crate::observe::settings::Settings;
use crate::observe::traces::{self, Caller, CallerTraceContext, Propagation, Sampler, SpanIds};

/// The connection's peer, for the span's `client.*` and `network.peer.*` attributes: the
/// server puts it on each request (its IP written as text once per connection). No proxy
/// stands before the services, so the peer is the client.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    /// The peer's IP, as text.
    pub ip: std::sync::Arc<str>,
    /// The peer's port.
    pub port: u16,
}

/// Response header naming the request's trace (W3C Trace Context Level 3, a draft).
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// Request header in which a retrying caller numbers its attempts (1, 2, …); shown as
/// `attempt` on the request's log line where the service trusts it. (Its span needs no
/// such attribute: its parent, the caller's client span, carries the semantic conventions'
/// `http.request.resend_count`.)
pub const ATTEMPT_HEADER: &str = "x-attempt";

/// Request header in which a caller says how many milliseconds it will wait for this
/// attempt (like Envoy's `x-envoy-expected-rq-timeout-ms` or gRPC's `grpc-timeout`): B sends
/// it, A stops work nobody will wait for.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// Whether a service reads the caller's `x-attempt` header into its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptHeader {
    /// Shown: the service is called by a retrying client it knows (A, called by B).
    Trusted,
    /// Ignored: the service is an edge anyone may call (B), where the header would let a
    /// caller write its own number into the service's log line.
    Ignored,
}

/// Everything both services do to every request, as one tower layer for the server to put
/// around its routes (see the module docs).
#[derive(Debug, Clone)]
pub struct Observation {
    declared_query: DeclaredQuery,
    /// Cloned once per request: one reference count.
    observing: Arc<Observing>,
}

/// What the layer observes with: the parts of the service's [`Settings`] a request needs,
/// and its request series.
#[derive(Debug)]
struct Observing {
    attempt_header: AttemptHeader,
    caller_trace_context: CallerTraceContext,
    propagation: Propagation,
    sampler: Sampler,
    metrics: RequestMetrics,
}

impl Observation {
    /// The layer, observing as `settings` say; whether `x-attempt` is read depends on who
    /// calls the service. The query parameters shown as sent are those of
    /// [`DeclaredQuery::default`].
    pub fn new(settings: &Settings, attempt_header: AttemptHeader) -> Self {
        Self {
            declared_query: DeclaredQuery::default(),
            observing: Arc::new(Observing {
                attempt_header,
                caller_trace_context: settings.caller_trace_context,
                propagation: settings.propagation,
                sampler: settings.sampler.clone(),
                // The methods the services' routes serve: their gauges exist, at zero, from
                // the first scrape.
                metrics: RequestMetrics::new(
                    settings.known_methods.clone(),
                    settings.metrics.exemplars().clone(),
                    &[Method::GET, Method::POST],
                ),
            }),
        }
    }

    /// The same layer, showing the values of `route`'s query parameters `names` as sent.
    pub fn declare_query(mut self, route: &'static str, names: &'static [&'static str]) -> Self {
        let mut declared = self.declared_query.0.to_vec();
        declared.push((route, names));
        self.declared_query = DeclaredQuery(declared.into());
        self
    }
}

/// A route behind [`Observation`]: request id checked (tower-http), made when missing and
/// echoed, then [`ObservedRoute`].
type WithRequestId<S> =
    MapRequest<SetRequestId<PropagateRequestId<ObservedRoute<S>>, NewUuid>, fn(Request) -> Request>;

impl<S> Layer<S> for Observation {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBuilder::new()
            .map_request(request_id::checker(self.observing.propagation.baggage))
            .layer(request_id::set_layer())
            .layer(request_id::propagate_layer())
            .service(Wrapped::new(inner, self.clone()))
    }
}

/// A route whose requests are observed: see [`Observation`].
pub type ObservedRoute<S> = Wrapped<S, Observation>;

impl Around for Observation {
    async fn around<S>(self, request: Request, inner: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        observe(&self, request, inner).await
    }
}

/// One request observed: its span, log line, metrics and `traceresponse` (see the module
/// docs) around `inner`'s answer.
async fn observe<S>(observation: &Observation, request: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Observation {
        declared_query,
        observing,
    } = observation;
    let Observing {
        attempt_header,
        caller_trace_context,
        propagation,
        sampler,
        metrics,
    } = &**observing;
    let started = Instant::now();
    let method = metrics.method_label(request.method());
    let route = request.extensions().get::<MatchedPath>();
    let handles = metrics.route(route.map(MatchedPath::as_str));
    // `POST /token`: the span's name and, for a standard method, the log's endpoint.
    let span_name = handles.name(method);
    let endpoint = match route {
        Some(_) if method != OTHER_METHOD => None,
        Some(route) => Some(format!("{} {}", request.method(), route.as_str())),
        None => Some(format!("{} {}", request.method(), request.uri().path())),
    };
    let route = route.map(MatchedPath::as_str);
    let request_id = request_id::RequestId::from_headers(request.headers()).0;
    let attempt = match *attempt_header {
        AttemptHeader::Trusted => request
            .headers()
            .get(ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok()),
        AttemptHeader::Ignored => None,
    };
    let version = protocol_version(request.version());
    // Sampled first, then built: an unsampled request's span is a bare anchor for its log
    // lines (see `traces`).
    let caller = Caller::read(*caller_trace_context, *propagation, request.headers());
    let decision = traces::decide(sampler, caller.parent(), span_name);
    let span = if decision.sampled {
        server_span(
            &request,
            span_name,
            method,
            route,
            version,
            &request_id,
            declared_query.of(route),
        )
    } else {
        tracing::info_span!(target: traces::UNRECORDED, "request")
    };
    let ids = caller.start(&span, decision);
    LogContext { request_id, ids }.attach_to(&span);

    // The record owns the span; the handler's future gets the only other handle (each
    // handle is counted, and dropped, through every layer).
    let active = metrics.active(method).clone();
    active.increment(1.0);
    let record = Record {
        span,
        endpoint,
        attempt,
        method,
        version,
        handles,
        active,
        ids,
        started,
        finished: false,
    };
    let Ok(mut response) = inner.call(request).instrument(record.span.clone()).await;
    if let Some(value) = ids.traceresponse() {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    record.finish(response.status().as_u16());
    response
}

/// Status logged and counted for a request whose caller went away before the answer (the
/// connection closed, so the server dropped the handler): nginx's "client closed request".
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// One request being observed: counted in `http_server_active_requests` from its start, and
/// logged and counted exactly once at the end: by [`Record::finish`], or, if the handler is
/// dropped midway because the client went away, by `Drop` with status 499.
struct Record {
    span: tracing::Span,
    /// The log line's `endpoint` when it is not the span's name: the method as sent and
    /// the raw path when no route matched (`GET /nope`), or a nonstandard method.
    endpoint: Option<String>,
    attempt: Option<u32>,
    method: &'static str,
    /// `network.protocol.version`, a label of the duration histogram.
    version: &'static str,
    handles: RouteHandles,
    active: metrics::Gauge,
    /// The span's ids: a sampled request's are the duration's exemplar.
    ids: SpanIds,
    started: Instant,
    finished: bool,
}

impl Record {
    fn finish(mut self, status: u16) {
        self.record(status, true);
        self.finished = true;
    }

    /// Logs and counts the request. The span gets a status code only when one was sent,
    /// and ERROR only for a 5xx or no answer at all: a 4xx is the caller's error. A caller
    /// that went away is logged and counted as 499 (nginx's convention) but its span gets
    /// no invented status code, only `error.type` [`CALLER_GONE`]; so does the duration
    /// histogram, which follows the OpenTelemetry convention.
    fn record(&self, status: u16, answered: bool) {
        self.active.decrement(1.0);
        let elapsed = self.started.elapsed();
        if answered {
            self.span
                .record("http.response.status_code", i64::from(status));
            if status >= 500 {
                self.span.record("otel.status_code", "ERROR");
                self.span.record("error.type", status.to_string().as_str());
            }
        } else {
            self.span.record("otel.status_code", "ERROR");
            self.span.record("error.type", CALLER_GONE);
        }
        // The span is the line's explicit parent (where the line finds the request's ids)
        // rather than entered around it.
        tracing::info!(
            target: crate::observe::ACCESS_LOG,
            parent: &self.span,
            endpoint = self
                .endpoint
                .as_deref()
                .unwrap_or_else(|| self.handles.name(self.method)),
            status,
            latency_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0,
            attempt = self.attempt,
        );
        self.handles
            .with_outcome(self.method, self.version, status, answered, |outcome| {
                outcome.requests.increment(1);
                outcome.duration.record(elapsed.as_secs_f64(), &self.ids);
            });
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.finished {
            self.record(CLIENT_CLOSED_REQUEST, false);
        }
    }
}
