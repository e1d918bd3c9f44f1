//! Outbound HTTP calls, observed in one place: [`ClientCalls`], a reqwest-middleware
//! `Middleware` a service puts on the client it calls another service with. For every call
//! (every attempt of a retrying caller) it makes:
//!
//! - one OpenTelemetry HTTP client span (semantic conventions 1.26), named after the URL's
//!   path (`POST /token`), numbers as integers, `http.request.resend_count` on resends (the
//!   attempt number less one: the conventions' way to number attempts), `url.full` without
//!   credentials or query values, and status and `error.type` from the outcome;
//! - the span's trace context on the request (`traceparent`, `tracestate`, and `baggage`
//!   carrying the request id), so the callee's span hangs under it;
//! - one `http_client_request_duration_seconds` sample (`http.client.request.duration`),
//!   labelled by the target it was built for, with the span as its exemplar when sampled.
//!
//! What a failure *is* belongs to the service: it says it through [`Outcomes`], whose
//! `ended` runs inside the call's span (so the lines it logs name the call's span). The
//! middleware reads the attempt number from the request's `x-attempt` header and the request
//! id from `X-Request-ID`: the headers the callee reads too, so there is one source for each.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http::Extensions;
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};
use tracing::Span;

use crate::observe::context::{self, SpanIds};
use crate::observe::exemplars::ExemplarHistogram;
use crate::observe::logging::LogContext;
use crate::observe::metrics::CLIENT_DURATION;
use crate::observe::request_id::HEADER as REQUEST_ID;
use crate::observe::request_metrics::method_label;
use crate::observe::requests::{ATTEMPT_HEADER, REDACTED, protocol_version, redacted_query};

/// What one call's result means to the service that made it.
pub trait Outcomes: Send + Sync + 'static {
    /// The `error.type` of a call that failed (a status code such as `"503"`, or the
    /// failure's kind), `None` when it succeeded.
    fn error_type(
        &self,
        result: &reqwest_middleware::Result<Response>,
    ) -> Option<Cow<'static, str>>;

    /// Runs inside the call's span once the call has ended, with what the caller gets back
    /// (the service's own log lines and span events about the call). What it returns is
    /// what the caller gets.
    fn ended(
        &self,
        call: &Call,
        result: reqwest_middleware::Result<Response>,
    ) -> reqwest_middleware::Result<Response> {
        let _ = call;
        result
    }

    /// `(status, error.type)` pairs of `POST` calls whose duration series exist, at zero,
    /// from the start.
    fn known(&self) -> Vec<(Option<u16>, Option<Cow<'static, str>>)> {
        Vec::new()
    }
}

/// One ended call, as [`Outcomes::ended`] sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Its number, from 1 (the `x-attempt` header; 1 without one).
    pub attempt: u32,
    /// Its timeout, when it had one.
    pub timeout: Option<Duration>,
    /// How long it took.
    pub took: Duration,
    /// Its `error.type`, when it failed.
    pub error_type: Option<Cow<'static, str>>,
    /// Its span's ids: a sampled call's are an exemplar for what the service records of it.
    pub ids: SpanIds,
}

/// The middleware; see the module docs.
pub struct ClientCalls<O> {
    outcomes: O,
    /// `server.address`, `server.port` and `url.template` of the one target this client
    /// calls, fixed when it is built: one client per callee, so its series are its own.
    target: Target,
    durations: RwLock<HashMap<DurationKey, ExemplarHistogram>>,
}

#[derive(Debug, Clone)]
struct Target {
    address: String,
    port: u16,
    template: String,
}

/// Method label, protocol version, status code (none: no answer) and `error.type` of one
/// duration series.
type DurationKey = (
    &'static str,
    &'static str,
    Option<u16>,
    Option<Cow<'static, str>>,
);

impl<O> std::fmt::Debug for ClientCalls<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCalls")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<O: Outcomes> ClientCalls<O> {
    /// The middleware for a client that calls `target` (its path has no parameters, so it
    /// is its own `url.template`), with the service's `outcomes`.
    pub fn new(target: &Url, outcomes: O) -> Self {
        let calls = Self {
            target: Target {
                address: target.host_str().unwrap_or_default().to_owned(),
                port: target.port_or_known_default().unwrap_or(80),
                template: target.path().to_owned(),
            },
            durations: RwLock::default(),
            outcomes,
        };
        for (status, error_type) in calls.outcomes.known() {
            let _ = calls.duration("POST", "1.1", status, error_type);
        }
        calls
    }

    /// The duration series of one outcome, registered on first use and kept.
    fn duration(
        &self,
        method: &'static str,
        version: &'static str,
        status: Option<u16>,
        error_type: Option<Cow<'static, str>>,
    ) -> ExemplarHistogram {
        let key = (method, version, status, error_type);
        if let Some(found) = self
            .durations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return found.clone();
        }
        let mut labels = vec![
            ("http_request_method", method.to_owned()),
            ("server_address", self.target.address.clone()),
            ("server_port", self.target.port.to_string()),
            ("url_template", self.target.template.clone()),
            ("network_protocol_version", version.to_owned()),
        ];
        if let Some(status) = key.2 {
            labels.push(("http_response_status_code", status.to_string()));
        }
        if let Some(error_type) = &key.3 {
            labels.push(("error_type", error_type.to_string()));
        }
        let created = ExemplarHistogram::register(CLIENT_DURATION, &labels);
        self.durations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(created)
            .clone()
    }
}

#[async_trait::async_trait]
impl<O: Outcomes> Middleware for ClientCalls<O> {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let attempt = header(ATTEMPT_HEADER)
            .and_then(|a| a.parse::<u32>().ok())
            .unwrap_or(1);
        let request_id = header(REQUEST_ID.as_str()).unwrap_or_default();
        let method = method_label(request.method());
        let version = protocol_version(request.version());
        let span = client_span(&request, attempt, &request_id, version);
        let ids = context::inject(&span, request.headers_mut(), &request_id);
        LogContext { request_id, ids }.attach_to(&span);
        let timeout = request.timeout().copied();

        let started = Instant::now();
        let result = next.run(request, extensions).await;
        let took = started.elapsed();

        let error_type = self.outcomes.error_type(&result);
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        if let Some(status) = status {
            span.record("http.response.status_code", i64::from(status));
        }
        if let Some(peer) = result.as_ref().ok().and_then(Response::remote_addr) {
            span.record("network.peer.address", peer.ip().to_string().as_str());
            span.record("network.peer.port", i64::from(peer.port()));
        }
        if let Some(error_type) = &error_type {
            span.record("error.type", error_type.as_ref());
            span.record("otel.status_code", "ERROR");
        }
        self.duration(method, version, status, error_type.clone())
            .record(took.as_secs_f64(), &ids);
        let call = Call {
            attempt,
            timeout,
            took,
            error_type,
            ids,
        };
        span.in_scope(|| self.outcomes.ended(&call, result))
    }
}

/// The client span of `request`, attempt number `attempt`, for request `request_id`. It is
/// not entered while the request runs: nothing inside logs, and what the service logs about
/// the call runs inside it once the call has ended.
fn client_span(request: &Request, attempt: u32, request_id: &str, version: &str) -> Span {
    let url = request.url();
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{} {}", request.method(), url.path()),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        http.request.method = request.method().as_str(),
        http.response.status_code = tracing::field::Empty,
        http.request.resend_count = (attempt > 1).then(|| i64::from(attempt - 1)),
        url.full = redacted_url(url).as_ref(),
        url.template = url.path(),
        server.address = url.host_str(),
        server.port = url.port_or_known_default().map(i64::from),
        network.protocol.version = version,
        network.peer.address = tracing::field::Empty,
        network.peer.port = tracing::field::Empty,
        user_agent.original = user_agent,
        request.id = request_id,
    )
}

/// `url` as `url.full` may show it: the HTTP conventions' "`url.full` MUST NOT contain
/// credentials" (user and password become `REDACTED`), and the query's values redacted as
/// on server spans (see [`redacted_query`]). Borrowed when there is nothing to hide.
fn redacted_url(url: &Url) -> std::borrow::Cow<'_, str> {
    let credentials = !url.username().is_empty() || url.password().is_some();
    let query = url.query().map(|query| redacted_query(query, &[]));
    let hidden_query = matches!(query, Some(std::borrow::Cow::Owned(_)));
    if !credentials && !hidden_query {
        return std::borrow::Cow::Borrowed(url.as_str());
    }
    let mut shown = url.clone();
    if credentials {
        let _ = shown.set_username(REDACTED);
        let _ = shown.set_password(Some(REDACTED));
    }
    if let Some(query) = &query {
        shown.set_query(Some(query));
    }
    std::borrow::Cow::Owned(shown.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_full_shows_no_credentials_and_no_query_values() {
        for (url, shown) in [
            ("http://a:8080/token", "http://a:8080/token"),
            (
                "http://u:p@a:8080/token",
                "http://REDACTED:REDACTED@a:8080/token",
            ),
            (
                "http://a/token?key=s3cret&flag",
                "http://a/token?key=REDACTED&flag",
            ),
        ] {
            let url = Url::parse(url).expect("url");
            assert_eq!(redacted_url(&url), shown);
        }
    }

    struct Nothing;

    impl Outcomes for Nothing {
        fn error_type(
            &self,
            result: &reqwest_middleware::Result<Response>,
        ) -> Option<Cow<'static, str>> {
            result.is_err().then_some(Cow::Borrowed("failed"))
        }

        fn known(&self) -> Vec<(Option<u16>, Option<Cow<'static, str>>)> {
            vec![(Some(200), None), (None, Some(Cow::Borrowed("timeout")))]
        }
    }

    #[test]
    fn two_clients_keep_their_own_targets_in_their_series() {
        let (metrics, recorder) = crate::observe::Metrics::build(&[]).expect("recorder");
        metrics::with_local_recorder(&recorder, || {
            let first = Url::parse("http://10.0.0.1:8080/token").expect("url");
            let second = Url::parse("http://provider.example:9000/v2/token").expect("url");
            let _one = ClientCalls::new(&first, Nothing);
            let _two = ClientCalls::new(&second, Nothing);
        });
        let text = metrics.render_prometheus();
        for expected in [
            r#"server_address="10.0.0.1",server_port="8080",url_template="/token",network_protocol_version="1.1",http_response_status_code="200""#,
            r#"server_address="provider.example",server_port="9000",url_template="/v2/token",network_protocol_version="1.1",error_type="timeout""#,
        ] {
            assert!(
                text.lines().any(
                    |l| l.starts_with("http_client_request_duration_seconds_count")
                        && l.contains(expected)
                ),
                "{expected} in {text}"
            );
        }
    }
}
