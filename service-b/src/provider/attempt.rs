//! One attempt to call A, in one place: the request on the wire, A's answer read whole, and
//! what the attempt came to, decided once, counted, logged and reported to the fleet. Each
//! endpoint's client for A is reqwest-middleware with two middlewares, outermost first:
//!
//! 1. telemetry's `ClientCalls`: the attempt's client span, trace context on the request,
//!    the client duration histogram, by [`error_type`] (this module's classification); it
//!    only observes, and leaves what it saw in the request's `Extensions`;
//! 2. [`ReadWhole`]: A's answer read whole within the attempt's timeout and at most
//!    [`MAX_ANSWER_BYTES`], so a body that stalls, breaks off or never ends fails the attempt
//!    like a missing answer.
//!
//! [`Attempt::run`] sends the attempt, classifies the result once ([`classify`]), counts
//! it, reports it to the fleet, and turns a failure into one [`AttemptFailure`]: its
//! `provider_call_failed` line is logged inside the attempt's span (so it names that span),
//! and the same value is what the call loop gets back.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::Extensions;
use http_body_util::BodyExt as _;
use reqwest::Response;
use reqwest_middleware::{Middleware, Next};
use telemetry::observe::{Observed, Outbound};

use crate::fleet::{Endpoint, Fleet};
use crate::metrics::ProviderMetrics;
use crate::outcome::AttemptOutcome;

/// The largest answer B reads from A, in bytes. A's answers are a few dozen bytes; anything
/// near this is not A speaking its API, and is refused before it is read (by its
/// `Content-Length`) or as soon as it grows past this.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempt {attempt}: {summary}")]
pub struct AttemptFailure {
    /// Which attempt, from 1.
    pub attempt: u32,
    /// How it failed (a failure variant of [`AttemptOutcome`]).
    pub kind: AttemptOutcome,
    /// What happened, for people: "timed out after 1s", "Connection refused (os error 111)",
    /// "provider answered 503 Service Unavailable".
    pub summary: String,
    /// The endpoint it went to, when B knows two or more (see `crate::fleet`).
    pub endpoint: Option<String>,
    /// Whether the connection was refused: nothing listened there.
    pub refused: bool,
}

/// An answer larger than [`MAX_ANSWER_BYTES`] (its announced or read size).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("answer of {0} bytes is over the {MAX_ANSWER_BYTES}-byte limit")]
pub struct AnswerTooLarge(pub u64);

/// How an attempt ended, decided once: an answer is `ok` (2xx), `rejected` (4xx, A's final
/// word) or `bad_status` (5xx); no whole answer is a `timeout`, a `connection_error` (refused,
/// reset, closed early, before or in the middle of the body) or a `protocol_error` (not HTTP B
/// can read, or too large).
pub fn classify(result: &reqwest_middleware::Result<Response>) -> AttemptOutcome {
    use reqwest_middleware::Error;
    match result {
        Ok(response) => AttemptOutcome::of_answer(response.status()),
        Err(Error::Reqwest(e)) if e.is_timeout() => AttemptOutcome::Timeout,
        Err(Error::Reqwest(e)) if e.is_connect() || e.is_body() || broke(e) => {
            AttemptOutcome::ConnectionError
        }
        Err(_) => AttemptOutcome::ProtocolError,
    }
}

/// The attempt span's `error.type` (and the client duration's label): the status code of
/// an answer that is not a success, the failure's kind without one; `None` for a success.
pub fn error_type(result: &reqwest_middleware::Result<Response>) -> Option<Cow<'static, str>> {
    match result {
        Ok(response)
            if response.status().is_client_error() || response.status().is_server_error() =>
        {
            Some(Cow::Owned(response.status().as_str().to_owned()))
        }
        Ok(_) => None,
        Err(_) => Some(Cow::Borrowed(classify(result).label())),
    }
}

/// The `(status, error.type)` pairs whose client duration series exist from the start: a
/// token, A's 401, and the failures without an answer.
pub fn known_outcomes() -> Vec<(Option<u16>, Option<Cow<'static, str>>)> {
    let failed = [
        AttemptOutcome::Timeout,
        AttemptOutcome::ConnectionError,
        AttemptOutcome::ProtocolError,
    ];
    let mut known = vec![(Some(200), None), (Some(401), Some(Cow::Borrowed("401")))];
    known.extend(failed.map(|f| (None, Some(Cow::Borrowed(f.label())))));
    known
}

/// Whether a request error is a connection that broke (reset, closed before the answer
/// ended), as opposed to an answer that is not HTTP: the first can be retried.
fn broke(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<std::io::Error>() {
            return true;
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled())
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Whether the attempt never reached A: the connection was refused (or could not be made).
fn refused(result: &reqwest_middleware::Result<Response>) -> bool {
    matches!(result, Err(reqwest_middleware::Error::Reqwest(e)) if e.is_connect() && !e.is_timeout())
}

/// One attempt about to be sent.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// Which attempt, from 1.
    pub number: u32,
    /// Its timeout.
    pub timeout: Duration,
    /// Where it goes.
    pub endpoint: &'a Arc<Endpoint>,
    /// Whether B knows two endpoints or more (the attempt's log line and span name it).
    pub several: bool,
    /// Whether its outcome says something about A (see `provider::decision::Pace`): only
    /// then does it count for the endpoint's load and ejection record.
    pub heard: bool,
}

impl Attempt<'_> {
    /// Sends `request` and settles what it came to: A's answer (2xx or 4xx, read whole), or
    /// the failure, counted, reported and logged once.
    pub async fn run(
        self,
        request: reqwest::Request,
        request_id: &telemetry::RequestId,
        fleet: &Fleet,
        metrics: &ProviderMetrics,
    ) -> Result<Response, AttemptFailure> {
        let mut extensions = Extensions::new();
        extensions.insert(Outbound {
            attempt: self.number,
            request_id: request_id.0.clone(),
            peer: self.endpoint.peer.filter(|_| self.several),
        });
        let result = {
            let _in_flight = self.endpoint.load.start();
            self.endpoint
                .http
                .execute_with_extensions(request, &mut extensions)
                .await
        };
        let observed = extensions.remove::<Observed>();
        let took = observed.as_ref().map(|o| o.took).unwrap_or_default();
        let kind = classify(&result);
        let refused = refused(&result);
        if let Some(observed) = &observed {
            metrics.attempt(kind, took, &observed.ids);
        }
        fleet.report(self.endpoint, kind, refused, took, self.heard);
        if !kind.is_failure()
            && let Ok(answer) = result
        {
            return Ok(answer);
        }
        let failure = AttemptFailure::new(self.number, kind, &result, self.timeout)
            .at(self.several.then(|| self.endpoint.name.clone()), refused);
        let log = || failure.log(self.timeout, self.endpoint.peer.filter(|_| self.several));
        match &observed {
            Some(observed) => observed.span.in_scope(log),
            None => log(),
        }
        Err(failure)
    }
}

impl AttemptFailure {
    /// Attempt `attempt`, which ended as `kind` (a failure) with `result` within `timeout`.
    pub fn new(
        attempt: u32,
        kind: AttemptOutcome,
        result: &reqwest_middleware::Result<Response>,
        timeout: Duration,
    ) -> Self {
        use reqwest_middleware::Error;
        let summary = match (kind, result) {
            (AttemptOutcome::Timeout, _) => format!("timed out after {}", humanize(timeout)),
            (_, Ok(response)) => format!("provider answered {}", response.status()),
            (_, Err(Error::Reqwest(e))) if e.is_body() => {
                format!("answer broke off: {}", telemetry::edge::innermost(e))
            }
            (_, Err(Error::Middleware(e))) => e.to_string(),
            (_, Err(e)) => telemetry::edge::innermost(e),
        };
        Self {
            attempt,
            kind,
            summary,
            endpoint: None,
            refused: false,
        }
    }

    /// The same failure, which went to `endpoint` and was `refused` or not.
    pub fn at(mut self, endpoint: Option<String>, refused: bool) -> Self {
        self.endpoint = endpoint;
        self.refused = refused;
        self
    }

    /// Logs the lab's `provider_call_failed` line, with the fields that fit the kind, and
    /// the replica it went to when B knows several (`peer`).
    fn log(&self, timeout: Duration, peer: Option<std::net::SocketAddr>) {
        let attempt = i64::from(self.attempt);
        let error = self.kind.label();
        let peer_address = peer.map(|p| p.ip().to_string());
        let peer_port = peer.map(|p| i64::from(p.port()));
        match self.kind {
            AttemptOutcome::Timeout => telemetry::event!(
                ERROR,
                "provider_call_failed",
                error,
                timeout_secs = timeout.as_secs_f64(),
                attempt,
                network.peer.address = peer_address,
                network.peer.port = peer_port,
            ),
            _ => telemetry::event!(
                ERROR,
                "provider_call_failed",
                error,
                details = %self.summary,
                attempt,
                network.peer.address = peer_address,
                network.peer.port = peer_port,
            ),
        }
    }
}

/// "1s", "250ms", to the nearest millisecond (an attempt cut to what is left of a 300 ms
/// deadline gets a few microseconds less, and is still "300ms").
pub fn humanize(duration: Duration) -> String {
    let millis = (duration.as_micros() + 500) / 1000;
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// The middleware that reads A's answer whole: see the module docs. The body is read
/// inside the request's own timeout, which reqwest applies to the body too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadWhole;

#[async_trait::async_trait]
impl Middleware for ReadWhole {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let response = next.run(request, extensions).await?;
        let limit = MAX_ANSWER_BYTES as u64;
        if let Some(announced) = response.content_length().filter(|n| *n > limit) {
            return Err(reqwest_middleware::Error::middleware(AnswerTooLarge(
                announced,
            )));
        }
        let (parts, mut body) = http::Response::from(response).into_parts();
        let mut whole = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(reqwest_middleware::Error::Reqwest)?;
            if let Some(data) = frame.data_ref() {
                if whole.len() + data.len() > MAX_ANSWER_BYTES {
                    let read = (whole.len() + data.len()) as u64;
                    return Err(reqwest_middleware::Error::middleware(AnswerTooLarge(read)));
                }
                whole.extend_from_slice(data);
            }
        }
        Ok(Response::from(http::Response::from_parts(
            parts,
            whole.freeze(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(humanize(Duration::from_secs(1)), "1s");
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
        assert_eq!(humanize(Duration::from_micros(299_990)), "300ms");
        assert_eq!(humanize(Duration::from_micros(999_700)), "1s");
    }
}
