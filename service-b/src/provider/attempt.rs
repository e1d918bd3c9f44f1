//! One attempt to call A: the request on the wire, A's answer read whole, and what the
//! attempt came to, decided once. B's client for A is reqwest-middleware with two
//! middlewares, outermost first:
//!
//! 1. telemetry's [`ClientCalls`]: the attempt's client span, trace context on the request,
//!    the client duration histogram; it asks [`Attempts`] (below) what the result means;
//! 2. [`ReadWhole`]: A's answer read whole within the attempt's timeout and at most
//!    [`MAX_ANSWER_BYTES`], so a body that stalls, breaks off or never ends fails the attempt
//!    like a missing answer.
//!
//! A failed attempt becomes one [`AttemptFailure`], built here, inside the attempt's span:
//! its `provider_call_failed` line is logged there (so it names the attempt's span), and the
//! same value is what the call loop gets back.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::Extensions;
use http_body_util::BodyExt as _;
use reqwest::Response;
use reqwest_middleware::{Middleware, Next};
use telemetry::observe::{Call, Outcomes};

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
        }
    }

    /// Logs the lab's `provider_call_failed` line, with the fields that fit the kind.
    fn log(&self, timeout: Duration) {
        let attempt = i64::from(self.attempt);
        let error = self.kind.label();
        match self.kind {
            AttemptOutcome::Timeout => telemetry::event!(
                ERROR,
                "provider_call_failed",
                error,
                timeout_secs = timeout.as_secs_f64(),
                attempt,
            ),
            _ => telemetry::event!(
                ERROR,
                "provider_call_failed",
                error,
                details = %self.summary,
                attempt,
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

/// What an attempt's result means, for telemetry's [`ClientCalls`]: its `error.type`, and
/// inside its span, the attempt counted (its span the duration's exemplar) and a failure
/// built, logged and handed back to the call loop.
#[derive(Debug, Clone)]
pub struct Attempts {
    metrics: Arc<ProviderMetrics>,
}

impl Attempts {
    /// Recording into `metrics`.
    pub fn new(metrics: Arc<ProviderMetrics>) -> Self {
        Self { metrics }
    }
}

impl Outcomes for Attempts {
    fn error_type(
        &self,
        result: &reqwest_middleware::Result<Response>,
    ) -> Option<Cow<'static, str>> {
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

    fn ended(
        &self,
        call: &Call,
        result: reqwest_middleware::Result<Response>,
    ) -> reqwest_middleware::Result<Response> {
        let kind = classify(&result);
        self.metrics.attempt(kind, call.took, &call.ids);
        if !kind.is_failure() {
            return result;
        }
        let timeout = call.timeout.unwrap_or_default();
        let failure = AttemptFailure::new(call.attempt, kind, &result, timeout);
        failure.log(timeout);
        Err(reqwest_middleware::Error::middleware(failure))
    }

    fn known(&self) -> Vec<(Option<u16>, Option<Cow<'static, str>>)> {
        let failed = [
            AttemptOutcome::Timeout,
            AttemptOutcome::ConnectionError,
            AttemptOutcome::ProtocolError,
        ];
        let mut known = vec![(Some(200), None), (Some(401), Some(Cow::Borrowed("401")))];
        known.extend(failed.map(|f| (None, Some(Cow::Borrowed(f.label())))));
        known
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
