//! The client for service A, and everything B does when A is slow, down or failing. The
//! whole call is [`Provider::issue_token`], which reads top to bottom:
//!
//! 1. ask the circuit breaker (open: 503 at once, A is not called);
//! 2. for each attempt: what is left of the deadline bounds its timeout; send it (one
//!    client span each, from the client's [`AttemptSpan`] middleware, which also injects
//!    `traceparent`); classify the result once ([`AttemptOutcome`]); record it, in one
//!    place, on the attempt's span, in its log line and in the metrics;
//! 3. decide: stop on an answer, or on a failure that is not retryable, or when the
//!    attempts, the retry budget or the deadline are spent ([`StopReason`], recorded when it
//!    happens); otherwise wait as reqwest-retry's exponential backoff policy says, and go
//!    again.
//!
//! How the call ended is a [`ProviderError`]; the route turns it into B's answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Extensions;
use reqwest::{Response, StatusCode, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{RetryDecision, RetryPolicy as _};
use serde::{Deserialize, Serialize};
use telemetry::edge::Password;
use tokio::time::Instant;
use tracing::Span;

use crate::config::ProviderConfig;
use crate::metrics as m;
use crate::outcome::{AttemptOutcome, StopReason};
use crate::resilience::{Admission, CircuitBreaker, CircuitState, Evidence, RetryBudget};

/// Header that tells A which attempt it is serving (1-based).
pub const ATTEMPT_HEADER: http::HeaderName =
    http::HeaderName::from_static(telemetry::observe::ATTEMPT_HEADER);

/// Header that tells A how many milliseconds B will wait for this attempt.
pub const TIMEOUT_HEADER: http::HeaderName =
    http::HeaderName::from_static(telemetry::observe::TIMEOUT_HEADER);

/// What B says it is, in `User-Agent` (and so in A's spans as `user_agent.original`).
pub const USER_AGENT: &str = concat!("service-b/", env!("CARGO_PKG_VERSION"));

/// Sliding window of the retry budget.
const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// What B sends to A's `POST /token`. Its `Debug` output never shows the password (see
/// [`Password`]).
#[derive(Debug, Serialize)]
pub struct TokenRequest<'a> {
    /// Who asks.
    pub username: &'a str,
    /// Their password, passed through untouched.
    pub password: &'a Password,
    /// Simulated latency to ask A for, when the caller asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// A's answer to valid credentials.
#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    /// The token A issued.
    pub token: String,
    /// Whom it was issued to.
    pub user: String,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// Which attempt, from 1.
    pub attempt: u32,
    /// How it failed (a failure variant of [`AttemptOutcome`]).
    pub kind: AttemptOutcome,
    /// What happened, for people: "timed out after 1s", "Connection refused (os error 111)",
    /// "provider answered 503 Service Unavailable".
    pub summary: String,
}

/// How a call to A ended when it did not yield a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// A answered 401: the credentials are wrong. Not retried.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A refused the request as invalid (400 or 422), with its reason. Not retried.
    #[error("{0}")]
    InvalidRequest(String),
    /// A answered 429: too many requests. Not retried; `Retry-After` is passed on.
    #[error("provider is throttling requests")]
    Throttled {
        /// A's `Retry-After`, when it sent one.
        retry_after: Option<http::HeaderValue>,
    },
    /// No attempt got a usable answer: the failures, and why B stopped.
    #[error("provider unavailable: {}", .0.details())]
    Unavailable(Failures),
    /// The circuit breaker is open: A was not called.
    #[error("provider unavailable: circuit open")]
    CircuitOpen {
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
        /// The calls that opened it.
        evidence: Evidence,
    },
    /// A answered, but not with anything B can use (an unexpected 4xx, or a body without a
    /// token): a configuration or version mismatch, not an outage.
    #[error("unusable answer from provider: {0}")]
    BadAnswer(String),
}

/// What went wrong on a call where no attempt got a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures {
    /// Each failed attempt, in order.
    pub attempts: Vec<AttemptFailure>,
    /// Why B made no further attempt.
    pub stopped: StopReason,
    /// The call's deadline (said in the details when it is what stopped B).
    pub deadline: Duration,
}

impl Failures {
    /// The 503's `details`: what happened on the attempts, then why B stopped, unless it
    /// simply made every attempt it may.
    pub fn details(&self) -> String {
        let mut details = describe(&self.attempts);
        let note = match self.stopped {
            StopReason::AttemptsSpent => None,
            StopReason::BudgetSpent => Some("not retried: retry budget spent".to_owned()),
            StopReason::Deadline => Some(format!(
                "gave up at the {} deadline",
                humanize(self.deadline)
            )),
            StopReason::NotRetryable => Some(format!(
                "not retried: a {} would recur",
                self.attempts
                    .last()
                    .map_or("failure", |f| f.kind.label())
                    .replace('_', " ")
            )),
        };
        if let Some(note) = note {
            details.push_str("; ");
            details.push_str(&note);
        }
        details
    }

    /// The last failure's kind.
    pub fn last_kind(&self) -> AttemptOutcome {
        self.attempts
            .last()
            .map_or(AttemptOutcome::Timeout, |f| f.kind)
    }
}

/// Says what happened on the attempts: "timed out after 1s on both attempts" when they all
/// failed the same way, "attempt 1: …; attempt 2: …" otherwise.
pub fn describe(failures: &[AttemptFailure]) -> String {
    let Some(first) = failures.first() else {
        return "no attempt was made".to_owned();
    };
    if failures.iter().all(|f| f.summary == first.summary) {
        let on = match failures.len() {
            1 => "on the only attempt".to_owned(),
            2 => "on both attempts".to_owned(),
            n => format!("on all {n} attempts"),
        };
        format!("{} {on}", first.summary)
    } else {
        failures
            .iter()
            .map(|f| format!("attempt {}: {}", f.attempt, f.summary))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The client for service A.
#[derive(Debug, Clone)]
pub struct Provider {
    http: ClientWithMiddleware,
    token_url: Url,
    timeout: Duration,
    /// A per-attempt timeout switched on at run time (the labs' misconfigured B), in
    /// milliseconds; 0 when none is.
    timeout_override: Arc<std::sync::atomic::AtomicU64>,
    deadline: Duration,
    max_attempts: u32,
    backoff: ExponentialBackoff,
    breaker: Arc<CircuitBreaker>,
    budget: Arc<RetryBudget>,
}

impl Provider {
    /// The per-attempt timeout: `--provider-timeout-ms`, unless one was switched on at run
    /// time through the fault endpoint.
    pub fn attempt_timeout(&self) -> Duration {
        match self
            .timeout_override
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => self.timeout,
            ms => Duration::from_millis(ms),
        }
    }

    /// Switches the per-attempt timeout to `timeout` (`None`: back to the flag's).
    pub fn override_timeout(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.timeout_override
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// A client for A with the timeouts, retry policy, budget and breaker of `config`.
    pub fn new(config: &ProviderConfig) -> Result<Self, reqwest::Error> {
        let timeout = config.provider_timeout();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            // B talks to A directly; a proxy from the environment would only add a hop
            // that fails on its own.
            .no_proxy()
            .build()?;
        // One client span per attempt, with `traceparent` injected (see AttemptSpan).
        let http = ClientBuilder::new(client).with(AttemptSpan).build();
        let (min, max) = config.retry_backoff();
        let mut token_url = config.provider_url.clone();
        // Config only admits http:// URLs, which always have a path.
        if let Ok(mut segments) = token_url.path_segments_mut() {
            segments.pop_if_empty().push("token");
        }
        let _ = PROVIDER_SERVER.set((
            token_url.host_str().unwrap_or_default().to_owned(),
            token_url.port_or_known_default().unwrap_or(80),
            token_url.path().to_owned(),
        ));
        Ok(Self {
            http,
            token_url,
            timeout,
            timeout_override: Arc::default(),
            deadline: config.provider_deadline(),
            max_attempts: config.provider_attempts,
            backoff: ExponentialBackoff::builder()
                .retry_bounds(min, max)
                .jitter(reqwest_retry::Jitter::Bounded)
                .build_with_max_retries(config.provider_attempts.saturating_sub(1)),
            breaker: Arc::new(CircuitBreaker::new(config.breaker_policy())),
            budget: Arc::new(RetryBudget::new(
                config.retry_budget_ratio,
                config.retry_budget_min_per_sec,
                RETRY_BUDGET_WINDOW,
            )),
        })
    }

    /// The circuit breaker's current state.
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// The URL B calls.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// Asks A for a token: the whole call, as the module docs list it. `request_id` is
    /// forwarded as `X-Request-ID` so A's log lines carry the same id.
    pub async fn issue_token(
        &self,
        request: &TokenRequest<'_>,
        request_id: &telemetry::RequestId,
    ) -> Result<Grant, ProviderError> {
        let permit = match self.breaker.admit() {
            Admission::Refused { retry_in, evidence } => {
                m::circuit_refused();
                return Err(ProviderError::CircuitOpen { retry_in, evidence });
            }
            Admission::Allowed(permit, entered) => {
                circuit_changed(entered);
                permit
            }
        };
        self.budget.deposit();
        let started = (Instant::now(), SystemTime::now());
        let deadline = started.0 + self.deadline;
        let mut failures = Vec::new();

        let stopped = loop {
            let number = failures.len() as u32 + 1;
            let timeout = self
                .attempt_timeout()
                .min(deadline.saturating_duration_since(Instant::now()));
            if timeout.is_zero() {
                break StopReason::Deadline;
            }
            let (outcome, result, took) = self.attempt(number, timeout, request, request_id).await;
            m::attempt(outcome, took);
            if !outcome.is_failure() {
                // Any answer from A, a refusal included, shows A is reachable.
                circuit_changed(permit.record(true));
                return read_answer(result);
            }
            failures.push(AttemptFailure {
                attempt: number,
                kind: outcome,
                summary: summary(outcome, &result, timeout),
            });
            if !outcome.is_retryable() {
                break StopReason::NotRetryable;
            }
            if number >= self.max_attempts {
                break StopReason::AttemptsSpent;
            }
            let wait = match self.backoff.should_retry(started.1, number - 1) {
                RetryDecision::Retry { execute_after } => execute_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default(),
                RetryDecision::DoNotRetry => break StopReason::AttemptsSpent,
            };
            if Instant::now() + wait >= deadline {
                break StopReason::Deadline;
            }
            if !self.budget.try_withdraw() {
                break StopReason::BudgetSpent;
            }
            tokio::time::sleep(wait).await;
        };

        let failures = Failures {
            attempts: failures,
            stopped,
            deadline: self.deadline,
        };
        telemetry::event!(
            WARN,
            "provider_gave_up",
            reason = stopped.label(),
            attempts = failures.attempts.len() as i64,
        );
        m::gave_up(failures.last_kind(), stopped);
        // A caller who asks A to wait at least as long as B waits has asked for a timeout:
        // it is answered as any timeout, but says nothing about A's health.
        let timeout_requested = request
            .delay_ms
            .is_some_and(|ms| Duration::from_millis(ms) >= self.attempt_timeout())
            && failures
                .attempts
                .iter()
                .all(|f| f.kind == AttemptOutcome::Timeout);
        if timeout_requested {
            drop(permit);
        } else {
            circuit_changed(permit.record(false));
        }
        Err(ProviderError::Unavailable(failures))
    }

    /// Attempt number `number` of `POST /token`: the JSON body, `User-Agent`, the attempt's
    /// number and timeout for A, the request id, and room for the trace context headers
    /// [`AttemptSpan`] adds (a header map that grows is copied and rehashed).
    fn token_request(
        &self,
        number: u32,
        timeout: Duration,
        request: &TokenRequest<'_>,
        request_id: &telemetry::RequestId,
    ) -> Result<reqwest::Request, serde_json::Error> {
        let mut headers = http::HeaderMap::with_capacity(16);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        headers.insert(ATTEMPT_HEADER, http::HeaderValue::from(number));
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        headers.insert(TIMEOUT_HEADER, http::HeaderValue::from(timeout_ms));
        if let Some(id) = request_id.header_value() {
            headers.insert(telemetry::observe::REQUEST_ID_HEADER, id);
        }
        let mut built = reqwest::Request::new(http::Method::POST, self.token_url.clone());
        *built.body_mut() = Some(serde_json::to_vec(request)?.into());
        *built.headers_mut() = headers;
        *built.timeout_mut() = Some(timeout);
        Ok(built)
    }

    /// One attempt: sends it and reads A's whole answer within `timeout` (a body that
    /// stalls or breaks off fails the attempt like a missing answer), then classifies and
    /// records what happened (the attempt's span, its `provider_call_failed` line, the client
    /// duration histogram).
    async fn attempt(
        &self,
        number: u32,
        timeout: Duration,
        request: &TokenRequest<'_>,
        request_id: &telemetry::RequestId,
    ) -> (AttemptOutcome, AttemptResult, Duration) {
        let sent = Instant::now();
        let mut extensions = Extensions::new();
        extensions.insert(AttemptNumber(number));
        let result = match self.token_request(number, timeout, request, request_id) {
            Ok(built) => match self
                .http
                .execute_with_extensions(built, &mut extensions)
                .await
            {
                Ok(response) => read_whole(response).await,
                Err(e) => Err(AttemptError::Send(e)),
            },
            Err(e) => Err(AttemptError::Send(reqwest_middleware::Error::middleware(e))),
        };
        let took = sent.elapsed();
        let outcome = classify(&result);
        let span = extensions
            .remove::<AttemptSpanHandle>()
            .map_or_else(Span::none, |s| s.span);
        record_on_span(&span, outcome, &result);
        if outcome.is_failure() {
            let failure = AttemptFailure {
                attempt: number,
                kind: outcome,
                summary: summary(outcome, &result, timeout),
            };
            span.in_scope(|| log_failure(&failure, timeout));
        }
        if let Some(ids) = extensions.remove::<telemetry::observe::SpanIds>() {
            let status = result.as_ref().ok().map(|a| a.status.as_u16());
            let (histogram, exemplars) = client_duration(status, error_type(outcome, &result));
            histogram.record(took.as_secs_f64());
            if let Some(slots) = exemplars.filter(|_| ids.sampled) {
                slots.record(took.as_secs_f64(), ids.trace_id(), ids.span_id());
            }
        }
        (outcome, result, took)
    }
}

/// The largest answer B reads from A, in bytes. A's answers are a few dozen bytes; anything
/// near this is not A speaking its API, and is refused before it is read (by its
/// `Content-Length`) or as soon as it grows past this.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A's answer to one attempt, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Retry-After`, if any.
    pub retry_after: Option<http::HeaderValue>,
    /// Its body, at most [`MAX_ANSWER_BYTES`].
    pub body: bytes::Bytes,
}

/// Why an attempt got no whole answer.
#[derive(Debug)]
pub enum AttemptError {
    /// The request was not sent, or no answer head came back.
    Send(reqwest_middleware::Error),
    /// The answer's body stalled or broke off.
    Body(reqwest::Error),
    /// The answer is larger than [`MAX_ANSWER_BYTES`] (its announced or read size).
    TooLarge(u64),
}

/// What one attempt came to.
pub type AttemptResult = Result<Answer, AttemptError>;

/// Reads `response` whole, refusing more than [`MAX_ANSWER_BYTES`]. Runs within the
/// attempt's timeout, which reqwest applies to the body too.
async fn read_whole(mut response: Response) -> AttemptResult {
    let limit = MAX_ANSWER_BYTES as u64;
    if let Some(announced) = response.content_length().filter(|n| *n > limit) {
        return Err(AttemptError::TooLarge(announced));
    }
    let status = response.status();
    let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(AttemptError::Body)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(AttemptError::TooLarge((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        retry_after,
        body: body.freeze(),
    })
}

/// Logs, counts and exports a breaker state change, if there was one.
fn circuit_changed(entered: Option<CircuitState>) {
    let Some(to) = entered else {
        return;
    };
    match to {
        CircuitState::Open => telemetry::event!(WARN, "circuit_opened"),
        CircuitState::HalfOpen => telemetry::event!(INFO, "circuit_half_open"),
        CircuitState::Closed => telemetry::event!(INFO, "circuit_closed"),
    }
    m::circuit_transition(to);
}

/// How an attempt ended, decided once.
pub fn classify(result: &AttemptResult) -> AttemptOutcome {
    use reqwest_middleware::Error;
    match result {
        Ok(answer) if answer.status.is_success() => AttemptOutcome::Ok,
        Ok(answer) if answer.status.is_server_error() => AttemptOutcome::BadStatus,
        Ok(_) => AttemptOutcome::Rejected,
        Err(AttemptError::Send(Error::Reqwest(e)) | AttemptError::Body(e)) if e.is_timeout() => {
            AttemptOutcome::Timeout
        }
        Err(AttemptError::Send(Error::Reqwest(e)) | AttemptError::Body(e))
            if e.is_connect() || e.is_body() || broke(e) =>
        {
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

/// What happened, for people.
fn summary(outcome: AttemptOutcome, result: &AttemptResult, timeout: Duration) -> String {
    match (outcome, result) {
        (AttemptOutcome::Timeout, _) => format!("timed out after {}", humanize(timeout)),
        (_, Ok(answer)) => format!("provider answered {}", answer.status),
        (_, Err(AttemptError::Send(e))) => telemetry::edge::innermost(e),
        (_, Err(AttemptError::Body(e))) => {
            format!("answer broke off: {}", telemetry::edge::innermost(e))
        }
        (_, Err(AttemptError::TooLarge(size))) => {
            format!("answer of {size} bytes is over the {MAX_ANSWER_BYTES}-byte limit")
        }
    }
}

/// `error.type`: the status code of a 4xx or 5xx answer, else the failure's kind.
fn error_type(outcome: AttemptOutcome, result: &AttemptResult) -> Option<String> {
    match result {
        Ok(answer) if answer.status.is_client_error() || answer.status.is_server_error() => {
            Some(answer.status.as_str().to_owned())
        }
        Ok(_) => None,
        Err(_) => Some(outcome.label().to_owned()),
    }
}

/// The attempt's outcome on its span: status code, and for any 4xx, 5xx or failure, ERROR
/// with `error.type`.
fn record_on_span(span: &Span, outcome: AttemptOutcome, result: &AttemptResult) {
    if let Ok(answer) = result {
        span.record(
            "http.response.status_code",
            i64::from(answer.status.as_u16()),
        );
    }
    if let Some(error_type) = error_type(outcome, result) {
        span.record("error.type", error_type.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// The lab's `provider_call_failed` line, with the fields that fit the kind. Called inside
/// the attempt's span, so the line's `span_id` and the span event are the attempt's.
fn log_failure(failure: &AttemptFailure, timeout: Duration) {
    let attempt = i64::from(failure.attempt);
    let error = failure.kind.label();
    match failure.kind {
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
            details = %failure.summary,
            attempt,
        ),
    }
}

/// Turns A's answer (not a failure: 2xx or 4xx) into a grant or the matching error. When A
/// refuses the request for any reason but wrong credentials or throttling, B's log says
/// why (`provider_refused`): the status and A's own words, if it gave any.
fn read_answer(result: AttemptResult) -> Result<Grant, ProviderError> {
    let answer = match result {
        Ok(answer) => answer,
        Err(AttemptError::Send(e)) => {
            return Err(ProviderError::BadAnswer(telemetry::edge::innermost(&e)));
        }
        Err(AttemptError::Body(e)) => {
            return Err(ProviderError::BadAnswer(telemetry::edge::innermost(&e)));
        }
        Err(AttemptError::TooLarge(size)) => {
            return Err(ProviderError::BadAnswer(format!("answer of {size} bytes")));
        }
    };
    match answer.status {
        status if status.is_success() => serde_json::from_slice::<Grant>(&answer.body)
            .map_err(|e| ProviderError::BadAnswer(format!("token body: {e}"))),
        StatusCode::UNAUTHORIZED => Err(ProviderError::InvalidCredentials),
        StatusCode::TOO_MANY_REQUESTS => Err(ProviderError::Throttled {
            retry_after: answer.retry_after,
        }),
        status => {
            let reason = serde_json::from_slice::<ErrorBody>(&answer.body)
                .ok()
                .map(|b| b.error);
            telemetry::event!(
                WARN,
                "provider_refused",
                status = i64::from(status.as_u16()),
                reason = reason.as_deref().unwrap_or("(no reason given)"),
            );
            match status {
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                    Err(ProviderError::InvalidRequest(reason.unwrap_or_else(|| {
                        "the provider refused the request".to_owned()
                    })))
                }
                status => Err(ProviderError::BadAnswer(match reason {
                    Some(reason) => format!("provider answered {status}: {reason}"),
                    None => format!("provider answered {status}"),
                })),
            }
        }
    }
}

/// A's error body: `{"error": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// "1s", "250ms".
fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The number of the attempt being sent, for [`AttemptSpan`].
#[derive(Debug, Clone, Copy)]
struct AttemptNumber(u32);

/// The attempt's span, handed back to [`Provider::attempt`] to record the outcome on.
#[derive(Debug, Clone)]
struct AttemptSpanHandle {
    span: Span,
}

/// The client's one middleware: one OpenTelemetry HTTP client span per attempt (semantic
/// conventions 1.26), named `POST /token` after its `url.template`, numbers as integers,
/// `http.request.resend_count` only on resends, and the span's trace context injected into
/// the request (`traceparent`, and the `baggage` carrying the request id). The span is not
/// entered while the request runs: nothing inside logs, and entering it on every poll was
/// most of what a middleware cost. [`Provider::attempt`] records the outcome on it and ends
/// it; log lines inside it carry the attempt's own span id.
#[derive(Debug, Clone, Copy)]
pub struct AttemptSpan;

#[async_trait::async_trait]
impl Middleware for AttemptSpan {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let attempt = extensions.get::<AttemptNumber>().map_or(1, |a| a.0);
        let request_id = telemetry::RequestId::from_headers(request.headers()).0;
        let span = attempt_span(&request, attempt, &request_id);
        let ids = telemetry::observe::inject(&span, request.headers_mut(), &request_id);
        telemetry::observe::LogContext { request_id, ids }.attach_to(&span);
        extensions.insert(ids);
        extensions.insert(AttemptSpanHandle { span });
        next.run(request, extensions).await
    }
}

/// The span of attempt number `attempt`, sending `request` for request `request_id`.
fn attempt_span(request: &reqwest::Request, attempt: u32, request_id: &str) -> Span {
    let url = request.url();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{} {}", request.method(), url.path()),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        http.request.method = request.method().as_str(),
        http.response.status_code = tracing::field::Empty,
        http.request.resend_count = (attempt > 1).then(|| i64::from(attempt - 1)),
        url.full = url.as_str(),
        url.template = url.path(),
        server.address = url.host_str(),
        server.port = url.port_or_known_default().map(i64::from),
        network.protocol.version = "1.1",
        user_agent.original = header("user-agent"),
        request.id = request_id,
        attempt = i64::from(attempt),
    )
}

/// `http_client_request_duration_seconds` (OpenTelemetry `http.client.request.duration`) for
/// an attempt that ended with `status` (none: no answer) and `error_type`, and its exemplar
/// slots; registered once per outcome. The server is always A, so its address and port
/// come from the one provider URL.
fn client_duration(
    status: Option<u16>,
    error_type: Option<String>,
) -> (metrics::Histogram, Option<Arc<telemetry::observe::Slots>>) {
    type Handles = (metrics::Histogram, Option<Arc<telemetry::observe::Slots>>);
    type ByOutcome = std::collections::HashMap<(Option<u16>, Option<String>), Handles>;
    static HANDLES: std::sync::OnceLock<std::sync::RwLock<ByOutcome>> = std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let key = (status, error_type);
    if let Some(found) = handles.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return found.clone();
    }
    let (address, port, template) = PROVIDER_SERVER.get().cloned().unwrap_or_default();
    let mut labels = vec![
        ("http_request_method", "POST".to_owned()),
        ("server_address", address),
        ("server_port", port.to_string()),
        ("url_template", template),
    ];
    if let Some(status) = key.0 {
        labels.push(("http_response_status_code", status.to_string()));
    }
    if let Some(error_type) = &key.1 {
        labels.push(("error_type", error_type.clone()));
    }
    let created = (
        metrics::histogram!(telemetry::observe::CLIENT_DURATION, &labels),
        telemetry::observe::exemplar_store()
            .map(|e| e.slots(telemetry::observe::CLIENT_DURATION, &labels)),
    );
    handles
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(created)
        .clone()
}

/// A's host, port and token path (the `url.template`: it has no parameters), for the client
/// histogram's labels; set when the provider is built (one per process).
static PROVIDER_SERVER: std::sync::OnceLock<(String, u16, String)> = std::sync::OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(attempt: u32, kind: AttemptOutcome, summary: &str) -> AttemptFailure {
        AttemptFailure {
            attempt,
            kind,
            summary: summary.to_owned(),
        }
    }

    fn failures(attempts: Vec<AttemptFailure>, stopped: StopReason) -> Failures {
        Failures {
            attempts,
            stopped,
            deadline: Duration::from_millis(1500),
        }
    }

    #[test]
    fn alike_failures_are_summarised_once() {
        let both = [
            failure(1, AttemptOutcome::Timeout, "timed out after 1s"),
            failure(2, AttemptOutcome::Timeout, "timed out after 1s"),
        ];
        assert_eq!(describe(&both), "timed out after 1s on both attempts");
        assert_eq!(
            describe(&both[..1]),
            "timed out after 1s on the only attempt"
        );
        assert_eq!(
            failures(both.to_vec(), StopReason::AttemptsSpent).details(),
            "timed out after 1s on both attempts",
            "the seed's details, when B simply ran out of attempts"
        );
    }

    #[test]
    fn different_failures_are_listed_by_attempt() {
        let mixed = vec![
            failure(1, AttemptOutcome::Timeout, "timed out after 1s"),
            failure(
                2,
                AttemptOutcome::ConnectionError,
                "Connection refused (os error 111)",
            ),
        ];
        assert_eq!(
            describe(&mixed),
            "attempt 1: timed out after 1s; attempt 2: Connection refused (os error 111)"
        );
        assert_eq!(
            failures(mixed, StopReason::AttemptsSpent).last_kind(),
            AttemptOutcome::ConnectionError
        );
    }

    #[test]
    fn details_say_why_b_stopped_early() {
        let timeout = vec![failure(1, AttemptOutcome::Timeout, "timed out after 1s")];
        assert_eq!(
            failures(timeout, StopReason::Deadline).details(),
            "timed out after 1s on the only attempt; gave up at the 1500ms deadline"
        );
        let refused = vec![failure(
            1,
            AttemptOutcome::BadStatus,
            "provider answered 500",
        )];
        assert_eq!(
            failures(refused, StopReason::BudgetSpent).details(),
            "provider answered 500 on the only attempt; not retried: retry budget spent"
        );
        let garbage = vec![failure(
            1,
            AttemptOutcome::ProtocolError,
            "invalid HTTP version",
        )];
        assert_eq!(
            failures(garbage, StopReason::NotRetryable).details(),
            "invalid HTTP version on the only attempt; not retried: a protocol error would recur"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(humanize(Duration::from_secs(1)), "1s");
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn the_token_url_is_built_from_the_base() {
        use clap::Parser as _;
        for (base, expected) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/token"),
            ("http://a:1/prefix/", "http://a:1/prefix/token"),
        ] {
            let config =
                crate::config::Config::try_parse_from(["service-b", "--provider-url", base])
                    .expect("parses");
            let provider = Provider::new(&config.provider).expect("client");
            assert_eq!(provider.token_url().as_str(), expected);
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let password: Password = serde_json::from_str("\"pass123\"").expect("password");
        let request = TokenRequest {
            username: "divya",
            password: &password,
            delay_ms: None,
        };
        assert!(!format!("{request:?}").contains("pass123"));
    }
}
