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
//!
//! A query string can carry a credential (`?password=…`), so the span's `url.query` keeps
//! every parameter's name but shows its value as `REDACTED`, except the parameters the
//! route declares ([`DeclaredQuery`]): the HTTP conventions' "sensitive content provided in
//! `url.query` SHOULD be scrubbed", done for every value the service does not know to be
//! harmless.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use ::http::{HeaderMap, HeaderName, Method, Version, header};
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::util::MapRequest;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::request_id::{PropagateRequestId, SetRequestId};
use tracing::{Instrument as _, field};

use crate::around::{Around, Wrapped};
use crate::observe::logging::LogContext;
use crate::observe::request_id::NewUuid;
use crate::observe::request_metrics::{CALLER_GONE, OTHER_METHOD, RequestMetrics, RouteHandles};
use crate::observe::settings::Settings;
use crate::observe::{context, request_id, traces};

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
    settings: Settings,
    attempt_header: AttemptHeader,
    declared_query: DeclaredQuery,
    metrics: Arc<RequestMetrics>,
}

impl Observation {
    /// The layer, observing as `settings` say; whether `x-attempt` is read depends on who
    /// calls the service. The query parameters shown as sent are those of
    /// [`DeclaredQuery::default`].
    pub fn new(settings: &Settings, attempt_header: AttemptHeader) -> Self {
        Self {
            settings: settings.clone(),
            attempt_header,
            declared_query: DeclaredQuery::default(),
            // The methods the services' routes serve: their gauges exist, at zero, from the
            // first scrape.
            metrics: Arc::new(RequestMetrics::new(
                settings.known_methods.clone(),
                settings.metrics.exemplars().clone(),
                &[Method::GET, Method::POST],
            )),
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

/// The query parameters each route declares, whose values a span shows as sent; every
/// other value is [`REDACTED`].
#[derive(Debug, Clone)]
pub struct DeclaredQuery(Arc<[(&'static str, &'static [&'static str])]>);

impl Default for DeclaredQuery {
    /// `/metrics?format=…`, the one query parameter the shared routes take.
    fn default() -> Self {
        Self(Arc::new([("/metrics", &["format"][..])]))
    }
}

impl DeclaredQuery {
    /// The names `route` declares (none for a path no route matched).
    fn of(&self, route: Option<&str>) -> &'static [&'static str] {
        route
            .and_then(|route| self.0.iter().find(|(r, _)| *r == route))
            .map_or(&[], |(_, names)| names)
    }
}

/// What a query parameter's value becomes on a span when the route does not declare it
/// (the word the semantic conventions use).
pub const REDACTED: &str = "REDACTED";

/// `query` with the value of every parameter outside `declared` replaced by [`REDACTED`]
/// (`password=hunter2&format=json` → `password=REDACTED&format=json`): names stay, as the
/// HTTP conventions ask, and so does a parameter without a value. Borrowed when nothing
/// needs replacing.
pub fn redacted_query<'a>(query: &'a str, declared: &[&str]) -> std::borrow::Cow<'a, str> {
    let hidden = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(name, value)| !value.is_empty() && !declared.contains(&name))
    };
    if !query.split('&').any(hidden) {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut redacted = String::with_capacity(query.len());
    for (n, pair) in query.split('&').enumerate() {
        if n > 0 {
            redacted.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if hidden(pair) => {
                redacted.push_str(name);
                redacted.push('=');
                redacted.push_str(REDACTED);
            }
            _ => redacted.push_str(pair),
        }
    }
    std::borrow::Cow::Owned(redacted)
}

/// A route behind [`Observation`]: request id checked (tower-http), made when missing and
/// echoed, then [`Observed`].
type WithRequestId<S> =
    MapRequest<SetRequestId<PropagateRequestId<Observed<S>>, NewUuid>, fn(Request) -> Request>;

impl<S> Layer<S> for Observation {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBuilder::new()
            .map_request(request_id::checker(self.settings.propagation.baggage))
            .layer(request_id::set_layer())
            .layer(request_id::propagate_layer())
            .service(Wrapped::new(inner, self.clone()))
    }
}

/// A route whose requests are observed: see [`observe`].
pub type Observed<S> = Wrapped<S, Observation>;

impl Around for Observation {
    fn around<S>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let observation = self.clone();
        async move { observe(&observation, request, inner).await }
    }
}

/// One request observed: its span, log line, metrics and `traceresponse` (see the module
/// docs) around `inner`'s answer.
async fn observe<S>(observation: &Observation, request: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Observation {
        settings,
        attempt_header,
        declared_query,
        metrics,
    } = observation;
    let started = Instant::now();
    let method = settings.known_methods.label(request.method());
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
    let caller = context::Caller::read(
        settings.caller_trace_context,
        settings.propagation,
        request.headers(),
    );
    let decision = traces::decide(&settings.sampler, caller.parent(), span_name);
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

/// The OpenTelemetry HTTP server span of a sampled request (semantic conventions 1.26,
/// stable attributes), its query's values redacted but those of the `declared` parameters.
/// Numbers are recorded as i64: tracing-opentelemetry exports unsigned ones as text.
fn server_span(
    request: &Request,
    name: &str,
    method: &'static str,
    route: Option<&str>,
    version: &'static str,
    request_id: &str,
    declared: &[&str],
) -> tracing::Span {
    let query = request
        .uri()
        .query()
        .map(|query| redacted_query(query, declared));
    let method_original = (method == OTHER_METHOD).then(|| request.method().as_str());
    let headers = request.headers();
    let (server_address, server_port) = host_and_port(headers);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let client = request.extensions().get::<ClientAddress>();
    let client_address = client.map(|client| &*client.ip);
    let client_port = client.map(|client| i64::from(client.port));
    tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = field::Empty,
        error.type = field::Empty,
        http.request.method = method,
        http.request.method_original = method_original,
        http.route = route,
        http.response.status_code = field::Empty,
        url.scheme = "http",
        url.path = request.uri().path(),
        url.query = query.as_deref(),
        server.address = server_address,
        server.port = server_port,
        client.address = client_address,
        client.port = client_port,
        network.peer.address = client_address,
        network.peer.port = client_port,
        user_agent.original = user_agent,
        network.protocol.version = version,
        request.id = request_id,
    )
}

/// `server.address` and `server.port` from the `Host` header (port 80 when it names none);
/// neither when the header is not a valid `host[:port]` (RFC 9110 7.2: a registered name or
/// IPv4 address, or an IP literal in brackets). An IP literal's address is the address
/// alone, as the conventions write `server.address` (`::1`, not `[::1]`). Read in place:
/// parsing it as an `Authority` copied it on every request.
fn host_and_port(headers: &HeaderMap) -> (Option<&str>, Option<i64>) {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(split_host)
        .map_or((None, None), |(name, port)| {
            (Some(name), Some(i64::from(port)))
        })
}

fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let literal = &host[1..end - 1];
        let ip_literal = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        (ip_literal.then_some(literal)?, &host[end..])
    } else {
        let end = host.find(':').unwrap_or(host.len());
        let name = &host[..end];
        let reg_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
        (reg_name.then_some(name)?, &host[end..])
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => 80,
        None => return None,
        Some("") => 80,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

/// `network.protocol.version`: "1.1", "1.0", ….
pub(crate) fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
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
    ids: context::SpanIds,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted_but_the_declared_ones() {
        for (query, declared, expected) in [
            ("password=hunter2", &[][..], "password=REDACTED"),
            ("format=json", &["format"][..], "format=json"),
            (
                "format=json&token=t1",
                &["format"][..],
                "format=json&token=REDACTED",
            ),
            ("x=1&&flag&y=", &[][..], "x=REDACTED&&flag&y="),
            ("a=b=c", &[][..], "a=REDACTED"),
            ("", &[][..], ""),
        ] {
            assert_eq!(redacted_query(query, declared), expected, "{query}");
        }
        assert!(matches!(
            redacted_query("format=json&flag", &["format"]),
            std::borrow::Cow::Borrowed(_)
        ));
        let declared = DeclaredQuery::default();
        assert_eq!(declared.of(Some("/metrics")), ["format"]);
        assert!(declared.of(Some("/token")).is_empty() && declared.of(None).is_empty());
    }

    #[test]
    fn host_header_gives_address_and_port() {
        for (host, expected) in [
            ("localhost:8080", Some(("localhost", 8080))),
            ("service-a", Some(("service-a", 80))),
            ("127.0.0.1:8081", Some(("127.0.0.1", 8081))),
            ("[::1]:8081", Some(("::1", 8081))),
            ("[::1]", Some(("::1", 80))),
            ("example.com:", Some(("example.com", 80))),
            ("example.com:65535", Some(("example.com", 65535))),
            ("example.com:65536", None),
            ("example.com:80a", None),
            ("example.com:-1", None),
            ("a:1:2", None),
            (":8080", None),
            ("", None),
            ("a b", None),
            ("user@host", None),
            ("[::1", None),
            ("[]:80", None),
            ("[::1]x", None),
            ("[::1]:80:80", None),
            ("host/path", None),
        ] {
            assert_eq!(split_host(host), expected, "{host:?}");
        }
    }
}
