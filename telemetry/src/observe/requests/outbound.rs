//! Outbound HTTP calls, observed in one place: [`ClientCalls`], a reqwest-middleware
//! `Middleware` a service puts on the client it calls another service with (the shape of
//! reqwest-tracing's `TracingMiddleware`: it observes, it never changes a result). For every
//! call (every attempt of a retrying caller) it makes:
//!
//! - one OpenTelemetry HTTP client span (semantic conventions 1.26), named after the URL's
//!   path (`POST /token`), numbers as integers, `http.request.resend_count` on resends (the
//!   attempt number less one: the conventions' way to number attempts), `url.full` without
//!   credentials or query values, `network.peer.*` for the replica it went to, and status
//!   and `error.type` from the outcome;
//! - the span's trace context on the request (`traceparent`, `tracestate`, and `baggage`
//!   carrying the request id), so the callee's span hangs under it;
//! - one `http_client_request_duration_seconds` sample (`http.client.request.duration`),
//!   labelled by the target it was built for, with the span as its exemplar when sampled.
//!
//! The caller says what the middleware cannot know in the request's `Extensions`
//! ([`Outbound`]: the attempt's number, the request id, the replica chosen), and gets back
//! in them what the middleware saw ([`Observed`]: the span, its ids, how long the call
//! took), to log and count the call inside its span. What a failure *is* stays the
//! caller's: it gives the middleware its classification (`error.type`) when it builds it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http::Extensions;
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};
use tracing::Span;

use crate::observe::logs::format::LogContext;
use crate::observe::metrics::CLIENT_DURATION;
use crate::observe::metrics::exemplars::ExemplarHistogram;
use crate::observe::requests::server_span::{REDACTED, protocol_version, redacted_query};
use crate::observe::settings::Settings;
use crate::observe::traces::{self, SpanIds};

/// What the caller says of one call, in the request's `Extensions`.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// Its number, from 1 (an attempt of a retrying caller); 0 is taken as 1.
    pub attempt: u32,
    /// The id of the request it is made for (the baggage's `request.id`).
    pub request_id: String,
    /// The replica it goes to, when the caller chose one: `network.peer.*` on its span from
    /// the start, failures included. Without one, the address that answered, if any.
    pub peer: Option<SocketAddr>,
}

/// What the middleware saw of one call, left in the request's `Extensions` for the caller.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The call's client span: what the caller logs about the call belongs inside it.
    pub span: Span,
    /// The span's ids: a sampled call's are an exemplar for what the caller records of it.
    pub ids: SpanIds,
    /// How long the call took.
    pub took: Duration,
}

/// The `error.type` of a call's result: a status code such as `"503"`, or the failure's
/// kind; `None` when it succeeded. The caller's own classification.
pub type Classify = fn(&reqwest_middleware::Result<Response>) -> Option<Cow<'static, str>>;

/// The middleware; see the module docs.
pub struct ClientCalls {
    settings: Settings,
    classify: Classify,
    /// `server.address`, `server.port` and `url.template` of the one target this client
    /// calls, fixed when it is built: one middleware per callee, so its series are its own.
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

impl std::fmt::Debug for ClientCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCalls")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ClientCalls {
    /// The middleware for a client that calls `target` (its path has no parameters, so it
    /// is its own `url.template`), observing as `settings` say, with the caller's
    /// `classify`; the duration series of the `known` `(status, error.type)` pairs of `POST`
    /// calls exist, at zero, from the start.
    pub fn new(
        settings: &Settings,
        target: &Url,
        classify: Classify,
        known: &[(Option<u16>, Option<Cow<'static, str>>)],
    ) -> Self {
        let calls = Self {
            settings: settings.clone(),
            classify,
            target: Target {
                address: target.host_str().unwrap_or_default().to_owned(),
                port: target.port_or_known_default().unwrap_or(80),
                template: target.path().to_owned(),
            },
            durations: RwLock::default(),
        };
        for (status, error_type) in known {
            let _ = calls.duration("POST", "1.1", *status, error_type.clone());
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
        let created = self
            .settings
            .metrics
            .exemplar_histogram(CLIENT_DURATION, &labels);
        self.durations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(created)
            .clone()
    }
}

#[async_trait::async_trait]
impl Middleware for ClientCalls {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let call = extensions.get::<Outbound>().cloned().unwrap_or_default();
        let method = self.settings.known_methods.label(request.method());
        let version = protocol_version(request.version());
        let span = client_span(&request, &call, version);
        let ids = traces::inject(
            self.settings.propagation,
            &span,
            request.headers_mut(),
            &call.request_id,
        );
        LogContext {
            request_id: call.request_id,
            ids,
        }
        .attach_to(&span);

        let started = Instant::now();
        let result = next.run(request, extensions).await;
        let took = started.elapsed();

        let error_type = (self.classify)(&result);
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        if let Some(status) = status {
            span.record("http.response.status_code", i64::from(status));
        }
        let answered_from = result.as_ref().ok().and_then(Response::remote_addr);
        if let (None, Some(peer)) = (call.peer, answered_from) {
            span.record("network.peer.address", peer.ip().to_string().as_str());
            span.record("network.peer.port", i64::from(peer.port()));
        }
        if let Some(error_type) = &error_type {
            span.record("error.type", error_type.as_ref());
            span.record("otel.status_code", "ERROR");
        }
        self.duration(method, version, status, error_type)
            .record(took.as_secs_f64(), &ids);
        extensions.insert(Observed { span, ids, took });
        result
    }
}

/// The client span of `request`, made for `call`. It is not entered while the request runs:
/// nothing inside logs, and what the caller logs about the call runs inside it once the
/// call has ended.
fn client_span(request: &Request, call: &Outbound, version: &str) -> Span {
    let url = request.url();
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let attempt = call.attempt.max(1);
    let peer_address = call.peer.map(|peer| peer.ip().to_string());
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
        network.peer.address = peer_address,
        network.peer.port = call.peer.map(|peer| i64::from(peer.port())),
        user_agent.original = user_agent,
        request.id = call.request_id.as_str(),
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

    fn failed(result: &reqwest_middleware::Result<Response>) -> Option<Cow<'static, str>> {
        result.is_err().then_some(Cow::Borrowed("failed"))
    }

    const KNOWN: [(Option<u16>, Option<Cow<'static, str>>); 2] =
        [(Some(200), None), (None, Some(Cow::Borrowed("timeout")))];

    #[test]
    fn two_clients_keep_their_own_targets_in_their_series() {
        let settings = Settings::in_process();
        let (metrics, recorder) =
            crate::observe::Metrics::build(&[], crate::observe::export::losses::Losses::leaked())
                .expect("recorder");
        let settings = Settings {
            metrics,
            ..settings
        };
        metrics::with_local_recorder(&recorder, || {
            let first = Url::parse("http://10.0.0.1:8080/token").expect("url");
            let second = Url::parse("http://provider.example:9000/v2/token").expect("url");
            let _one = ClientCalls::new(&settings, &first, failed, &KNOWN);
            let _two = ClientCalls::new(&settings, &second, failed, &KNOWN);
        });
        let text = settings.metrics().render_prometheus();
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
