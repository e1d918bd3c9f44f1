//! The client for service A, and everything B does when A is slow, down or failing.
//!
//! One call to [`Provider::issue_token`] first asks the circuit breaker (open: 503 at once,
//! A is not called). Then it is up to `--provider-attempts` attempts within the call's
//! deadline, each cut off after `--provider-timeout-ms` or at the deadline, whichever comes
//! first, with a jittered backoff between them. The middleware stack, outermost first:
//!
//! 1. [`RetryTransientMiddleware`] (reqwest-retry) decides whether to try again:
//!    timeouts, refused or reset connections and 5xx answers are retried ([`RetryTransient`]);
//!    any 4xx from A is A's final word and is not. The backoff policy ([`BudgetedBackoff`])
//!    also asks the retry budget, and gives up when it is spent.
//! 2. [`AttemptObserver`] runs once per attempt: refuses to start one past the deadline,
//!    numbers it (`x-attempt`), tells A how long B will wait (`x-request-timeout-ms`),
//!    classifies its outcome ([`FailureKind`]), logs each failure as one
//!    `provider_call_failed` event and counts `provider_attempts_total{outcome}`.
//! 3. reqwest-tracing's `TracingMiddleware` opens one client span per attempt ([`AttemptSpan`])
//!    and injects `traceparent`, so A's span hangs under the attempt that reached it.
//!
//! How the whole call ended is a [`ProviderError`]; the route turns it into B's answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use http::Extensions;
use reqwest::{Response, StatusCode, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_retry::{
    RetryDecision, RetryPolicy, RetryTransientMiddleware, Retryable, RetryableStrategy,
    default_on_request_failure, policies::ExponentialBackoff,
};
use reqwest_tracing::{ReqwestOtelSpanBackend, TracingMiddleware};
use serde::{Deserialize, Serialize};
use tracing::Span;

use crate::config::Config;
use crate::resilience::{Admission, CircuitBreaker, RetryBudget};

/// Header that tells A which attempt it is serving (1-based).
pub const ATTEMPT_HEADER: &str = telemetry::observe::ATTEMPT_HEADER;

/// Header that tells A how many milliseconds B will wait for this attempt (like Envoy's
/// `x-envoy-expected-rq-timeout-ms` or gRPC's `grpc-timeout`), so A can drop work nobody
/// will wait for.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// What B says it is, in `User-Agent` (and so in A's spans as `user_agent.original`).
pub const USER_AGENT: &str = concat!("service-b/", env!("CARGO_PKG_VERSION"));

/// Sliding window of the retry budget.
const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// What B sends to A's `POST /token`. Its `Debug` output never shows the password.
#[derive(Serialize)]
pub struct TokenRequest<'a> {
    /// Who asks.
    pub username: &'a str,
    /// Their password, passed through untouched.
    pub password: &'a str,
    /// Simulated latency to ask A for, when the caller asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl std::fmt::Debug for TokenRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("delay_ms", &self.delay_ms)
            .finish()
    }
}

/// A's answer to valid credentials.
#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    /// The token A issued.
    pub token: String,
    /// Whom it was issued to.
    pub user: String,
}

/// Why one attempt failed. The three kinds stay distinct in logs (`error`), metrics
/// (`outcome`, `kind`), spans (`error.type`) and B's 503 `details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No complete answer within the per-attempt timeout.
    Timeout,
    /// Could not connect, or the connection broke (refused, reset, closed early).
    ConnectionError,
    /// A answered with a 5xx status.
    BadStatus,
}

impl FailureKind {
    /// The name used in logs, metric labels and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
            Self::BadStatus => "bad_status",
        }
    }

    /// Every kind, for registering metric series.
    pub const ALL: [Self; 3] = [Self::Timeout, Self::ConnectionError, Self::BadStatus];
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// Which attempt, from 1.
    pub attempt: u32,
    /// What kind of failure.
    pub kind: FailureKind,
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
    /// Every attempt failed, or the deadline passed.
    #[error("provider unavailable: {}", .0.details())]
    Unavailable(Failures),
    /// The circuit breaker is open: A was not called.
    #[error("provider unavailable: circuit open")]
    CircuitOpen {
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
        /// The calls that opened it.
        evidence: crate::resilience::Evidence,
    },
    /// A answered, but not with anything B can use (an unexpected 4xx, or a body without a
    /// token): a configuration or version mismatch, not an outage.
    #[error("unusable answer from provider: {0}")]
    BadAnswer(String),
}

impl ProviderError {
    /// The kind of the last failed attempt, when every attempt failed.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            Self::Unavailable(failures) => failures.attempts.last().map(|f| f.kind),
            _ => None,
        }
    }
}

/// What went wrong on a call where no attempt succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// Each failed attempt, in order.
    pub attempts: Vec<AttemptFailure>,
    /// The call's deadline, when it cut the call short.
    pub deadline: Option<Duration>,
    /// Whether the retry budget refused a retry.
    pub budget_exhausted: bool,
}

impl Failures {
    /// The 503's `details`: what happened on the attempts, then why B stopped early.
    pub fn details(&self) -> String {
        let mut details = if self.attempts.is_empty() {
            String::new()
        } else {
            describe(&self.attempts)
        };
        let mut add = |note: String| {
            if !details.is_empty() {
                details.push_str("; ");
            }
            details.push_str(&note);
        };
        if self.budget_exhausted {
            add("not retried: retry budget spent".to_owned());
        }
        if let Some(deadline) = self.deadline {
            add(format!("gave up at the {} deadline", humanize(deadline)));
        }
        details
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
    deadline: Duration,
    breaker: Arc<CircuitBreaker>,
    budget: Arc<RetryBudget>,
    attempt_timeout: Duration,
    max_attempts: u32,
}

impl Provider {
    /// A client with the timeout, retry policy and observers from `config`.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let timeout = config.provider_timeout();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            // B talks to A directly; a proxy from the environment would only add a hop
            // that fails on its own.
            .no_proxy()
            .build()?;
        let (min, max) = config.retry_backoff();
        let budget = Arc::new(RetryBudget::new(
            config.retry_budget_ratio,
            config.retry_budget_min_per_sec,
            RETRY_BUDGET_WINDOW,
        ));
        let policy = BudgetedBackoff {
            backoff: ExponentialBackoff::builder()
                .retry_bounds(min, max)
                .jitter(reqwest_retry::Jitter::Bounded)
                .build_with_max_retries(config.provider_attempts - 1),
            budget: budget.clone(),
        };
        let http = ClientBuilder::new(client)
            .with(
                // Its own unstructured "Retry attempt #0" WARN line is superseded by
                // AttemptObserver's events; telemetry's default log filter hides it.
                RetryTransientMiddleware::new_with_policy_and_strategy(policy, RetryTransient),
            )
            .with(AttemptObserver { timeout })
            .with(TracingMiddleware::<AttemptSpan>::new())
            .build();
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
            deadline: config.provider_deadline(),
            breaker: Arc::new(CircuitBreaker::new(config.breaker_policy())),
            budget,
            attempt_timeout: timeout,
            max_attempts: config.provider_attempts,
        })
    }

    /// The circuit breaker's current state.
    pub fn circuit_state(&self) -> crate::resilience::CircuitState {
        self.breaker.state()
    }

    /// The URL B calls.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// Asks A for a token, retrying as configured. `request_id` is forwarded as
    /// `X-Request-ID` so A's log lines carry the same id.
    pub async fn issue_token(
        &self,
        request: &TokenRequest<'_>,
        request_id: &telemetry::RequestId,
    ) -> Result<Grant, ProviderError> {
        // A caller who asks A to wait at least as long as B waits has asked for a timeout:
        // it is answered as any timeout, but says nothing about A's health.
        let timeout_requested = request
            .delay_ms
            .is_some_and(|ms| Duration::from_millis(ms) >= self.attempt_timeout);
        let mut builder = self
            .http
            .post(self.token_url.clone())
            .header(http::header::USER_AGENT, USER_AGENT)
            .json(request);
        if let Some(id) = request_id.header_value() {
            builder = builder.header(telemetry::request_id::HEADER, id);
        }
        let request = builder
            .build()
            .map_err(|e| ProviderError::BadAnswer(format!("cannot build the request: {e}")))?;

        let permit = match self.breaker.admit() {
            Admission::Allowed(permit) => permit,
            Admission::Refused { retry_in, evidence } => {
                count_failed_call("circuit_open");
                return Err(ProviderError::CircuitOpen { retry_in, evidence });
            }
        };
        self.budget.deposit();
        let mut extensions = Extensions::new();
        extensions.insert(Deadline(Instant::now() + self.deadline));
        // The deadline also bounds what the middleware does not: reading A's answer.
        let result = tokio::time::timeout(
            self.deadline,
            self.http.execute_with_extensions(request, &mut extensions),
        )
        .await;
        let log = extensions.remove::<AttemptLog>().unwrap_or_default();
        let outcome = match result {
            Ok(Ok(response)) if !response.status().is_server_error() => {
                Ok(self.read_answer(response).await)
            }
            // Every attempt failed: connection errors and timeouts end in Err, a last 5xx in
            // Ok, the deadline in Err or the timeout above. Attempts were logged one by one.
            other => {
                let deadline_hit = other.is_err() || log.deadline_hit;
                Err(Failures {
                    // Transient failures are retried until the attempts run out, unless the
                    // deadline or the retry budget stops them: this tells which.
                    budget_exhausted: !deadline_hit && log.attempts < self.max_attempts,
                    attempts: log.failures,
                    deadline: deadline_hit.then_some(self.deadline),
                })
            }
        };
        match outcome {
            Ok(answer) => {
                // Any answer from A, a refusal included, shows A is reachable.
                permit.record(true);
                answer
            }
            Err(failures) => {
                let as_requested = timeout_requested
                    && !failures.attempts.is_empty()
                    && failures
                        .attempts
                        .iter()
                        .all(|f| f.kind == FailureKind::Timeout);
                if as_requested {
                    drop(permit); // not evidence against A
                } else {
                    permit.record(false);
                }
                if failures.deadline.is_some() {
                    metrics::counter!(crate::metrics::DEADLINE_EXCEEDED).increment(1);
                }
                let kind = failures
                    .attempts
                    .last()
                    .map_or(FailureKind::Timeout, |f| f.kind);
                count_failed_call(kind.as_str());
                Err(ProviderError::Unavailable(failures))
            }
        }
    }

    /// Turns A's (non-5xx) answer into a grant or the matching error.
    async fn read_answer(&self, response: Response) -> Result<Grant, ProviderError> {
        match response.status() {
            status if status.is_success() => response
                .json::<Grant>()
                .await
                .map_err(|e| ProviderError::BadAnswer(format!("token body: {}", innermost(&e)))),
            StatusCode::UNAUTHORIZED => Err(ProviderError::InvalidCredentials),
            StatusCode::TOO_MANY_REQUESTS => Err(ProviderError::Throttled {
                retry_after: response.headers().get(http::header::RETRY_AFTER).cloned(),
            }),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                let reason = response
                    .json::<ErrorBody>()
                    .await
                    .map(|b| b.error)
                    .unwrap_or_else(|_| "the provider refused the request".to_owned());
                Err(ProviderError::InvalidRequest(reason))
            }
            status => Err(ProviderError::BadAnswer(format!(
                "provider answered {status}"
            ))),
        }
    }
}

/// Counts a call that ended in 503, by why.
fn count_failed_call(kind: &'static str) {
    metrics::counter!(crate::metrics::PROVIDER_FAILURES, "kind" => kind).increment(1);
}

/// When the whole call must be over, for [`AttemptObserver`].
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant);

/// The attempt that was not started because the call's deadline had passed.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed before attempt {0}")]
struct DeadlineExceeded(u32);

/// reqwest-retry's exponential backoff, plus the retry budget: a retry the backoff allows
/// is still refused when the budget is spent.
#[derive(Debug)]
pub struct BudgetedBackoff {
    backoff: ExponentialBackoff,
    budget: Arc<RetryBudget>,
}

impl RetryPolicy for BudgetedBackoff {
    fn should_retry(&self, started: SystemTime, past_retries: u32) -> RetryDecision {
        match self.backoff.should_retry(started, past_retries) {
            RetryDecision::Retry { .. } if !self.budget.try_withdraw() => {
                telemetry::event!(
                    WARN,
                    "retry_budget_exhausted",
                    attempt = i64::from(past_retries + 1)
                );
                metrics::counter!(crate::metrics::RETRY_BUDGET_EXHAUSTED).increment(1);
                RetryDecision::DoNotRetry
            }
            decision => decision,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// Retries what a second attempt can fix: timeouts, connection failures (reqwest-retry's
/// own classification) and 5xx answers. Unlike reqwest-retry's default, 408 and 429 are not
/// retried: they are A's answer about load, and retrying would add to it.
#[derive(Debug, Clone, Copy)]
pub struct RetryTransient;

impl RetryableStrategy for RetryTransient {
    fn handle(&self, result: &reqwest_middleware::Result<Response>) -> Option<Retryable> {
        match result {
            Ok(response) if response.status().is_success() => None,
            Ok(response) if response.status().is_server_error() => Some(Retryable::Transient),
            Ok(_) => Some(Retryable::Fatal),
            Err(error) => default_on_request_failure(error),
        }
    }
}

/// The per-call record [`AttemptObserver`] keeps in the request's extensions (the retry
/// middleware hands the same extensions to every attempt).
#[derive(Debug, Clone, Default)]
struct AttemptLog {
    attempts: u32,
    failures: Vec<AttemptFailure>,
    deadline_hit: bool,
}

/// The number of the attempt in flight, for [`AttemptSpan`].
#[derive(Debug, Clone, Copy)]
struct AttemptNumber(u32);

/// The timeout of the attempt in flight, for [`AttemptSpan`]'s failure line.
#[derive(Debug, Clone, Copy)]
struct AttemptTimeout(Duration);

/// When the attempt in flight started, and its span's ids, for the client duration
/// histogram and its exemplar.
#[derive(Debug, Clone)]
struct AttemptStarted(Instant, telemetry::traces::SpanIds);

/// Numbers, classifies, logs and counts each attempt. See the module docs.
#[derive(Debug, Clone)]
pub struct AttemptObserver {
    timeout: Duration,
}

#[async_trait::async_trait]
impl Middleware for AttemptObserver {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // Each attempt gets the per-attempt timeout or what is left of the deadline.
        let remaining = extensions.get::<Deadline>().map_or(self.timeout, |d| {
            d.0.saturating_duration_since(Instant::now())
        });
        let timeout = self.timeout.min(remaining);
        let log = extensions.get_or_insert_default::<AttemptLog>();
        if timeout.is_zero() {
            log.deadline_hit = true;
            telemetry::event!(
                WARN,
                "provider_deadline_exceeded",
                attempts = i64::from(log.attempts)
            );
            return Err(reqwest_middleware::Error::middleware(DeadlineExceeded(
                log.attempts + 1,
            )));
        }
        log.attempts += 1;
        let attempt = log.attempts;
        *request.timeout_mut() = Some(timeout);
        let headers = request.headers_mut();
        headers.insert(ATTEMPT_HEADER, http::HeaderValue::from(attempt));
        headers.insert(
            TIMEOUT_HEADER,
            http::HeaderValue::from(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        );
        extensions.insert(AttemptNumber(attempt));
        extensions.insert(AttemptTimeout(timeout));

        let started = Instant::now();
        let result = next.run(request, extensions).await;
        let failure = classify(&result, attempt, timeout);
        let outcome = match (&failure, &result) {
            (Some(f), _) => f.kind.as_str(),
            (None, Ok(r)) if r.status().is_success() => "ok",
            (None, _) => "rejected",
        };
        metrics::counter!(crate::metrics::PROVIDER_ATTEMPTS, "outcome" => outcome).increment(1);
        metrics::histogram!(crate::metrics::PROVIDER_ATTEMPT_DURATION, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());

        if let Some(failure) = failure {
            // Logged by AttemptSpan, inside the attempt's span; recorded here for the 503.
            extensions
                .get_or_insert_default::<AttemptLog>()
                .failures
                .push(failure);
        }
        result
    }
}

/// The lab's `provider_call_failed` line, with the fields that fit the kind. Called inside
/// the attempt's span, so the line's `span_id` and the span event are the attempt's.
fn log_failure(failure: &AttemptFailure, timeout: Duration) {
    let attempt = i64::from(failure.attempt);
    match failure.kind {
        FailureKind::Timeout => telemetry::event!(
            ERROR,
            "provider_call_failed",
            error = "timeout",
            timeout_secs = timeout.as_secs_f64(),
            attempt,
        ),
        FailureKind::ConnectionError => telemetry::event!(
            ERROR,
            "provider_call_failed",
            error = "connection_error",
            details = %failure.summary,
            attempt,
        ),
        FailureKind::BadStatus => telemetry::event!(
            ERROR,
            "provider_call_failed",
            error = "bad_status",
            details = %failure.summary,
            attempt,
        ),
    }
}

/// Whether an attempt failed, and how. A 4xx is an answer, not a failure.
pub fn failure_kind(result: &reqwest_middleware::Result<Response>) -> Option<FailureKind> {
    match result {
        Ok(response) if response.status().is_server_error() => Some(FailureKind::BadStatus),
        Ok(_) => None,
        Err(reqwest_middleware::Error::Reqwest(e)) if e.is_timeout() => Some(FailureKind::Timeout),
        Err(_) => Some(FailureKind::ConnectionError),
    }
}

/// The failure of attempt number `attempt`, if it failed, with a summary for people.
fn classify(
    result: &reqwest_middleware::Result<Response>,
    attempt: u32,
    timeout: Duration,
) -> Option<AttemptFailure> {
    let kind = failure_kind(result)?;
    let summary = match (kind, result) {
        (FailureKind::Timeout, _) => format!("timed out after {}", humanize(timeout)),
        (_, Ok(response)) => format!("provider answered {}", response.status()),
        (_, Err(e)) => innermost(e),
    };
    Some(AttemptFailure {
        attempt,
        kind,
        summary,
    })
}

/// "1s", "250ms".
fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The root cause of an error chain ("Connection refused (os error 111)"), which says more
/// than reqwest's top line ("error sending request for url …").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// One OpenTelemetry HTTP client span per attempt (semantic conventions 1.26): named
/// `POST /token` after its `url.template`, numbers as integers, `http.request.resend_count`
/// only on resends, and on failure status ERROR with `error.type` (the status code for a
/// 4xx or 5xx answer, `timeout` or `connection_error` for none). Log lines inside it carry
/// the attempt's own span id: the `provider_call_failed` line is written here.
#[derive(Debug, Clone, Copy)]
pub struct AttemptSpan;

impl ReqwestOtelSpanBackend for AttemptSpan {
    fn on_request_start(request: &reqwest::Request, extensions: &mut Extensions) -> Span {
        let attempt = extensions.get::<AttemptNumber>().map_or(1, |a| a.0);
        let url = request.url();
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
        };
        let request_id = header("x-request-id").unwrap_or_default();
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format_args!("{} {}", request.method(), url.path()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            http.request.method = request.method().as_str(),
            http.response.status_code = tracing::field::Empty,
            http.request.resend_count = (attempt > 1).then(|| i64::from(attempt - 1)),
            url.full = %url,
            url.template = url.path(),
            server.address = url.host_str(),
            server.port = url.port_or_known_default().map(i64::from),
            network.protocol.version = "1.1",
            user_agent.original = header("user-agent"),
            request.id = request_id,
            attempt = i64::from(attempt),
        );
        let ids = telemetry::traces::span_ids(&span);
        telemetry::logging::LogContext {
            request_id: request_id.to_owned(),
            trace_id: ids.trace_id.clone(),
            span_id: ids.span_id.clone(),
            sampled: ids.sampled,
        }
        .attach_to(&span);
        extensions.insert(AttemptStarted(Instant::now(), ids));
        span
    }

    fn on_request_end(
        span: &Span,
        outcome: &reqwest_middleware::Result<Response>,
        extensions: &mut Extensions,
    ) {
        let error_type = match outcome {
            Ok(response) => {
                let status = response.status();
                span.record("http.response.status_code", i64::from(status.as_u16()));
                (status.is_client_error() || status.is_server_error())
                    .then(|| status.as_str().to_owned())
            }
            Err(_) => failure_kind(outcome).map(|kind| kind.as_str().to_owned()),
        };
        if let Some(error_type) = &error_type {
            span.record("error.type", error_type.as_str());
            span.record("otel.status_code", "ERROR");
        }
        if let Some(AttemptStarted(started, ids)) = extensions.get::<AttemptStarted>() {
            let status = outcome.as_ref().ok().map(|r| r.status().as_u16());
            let (histogram, exemplars) = client_duration(status, error_type);
            let seconds = started.elapsed().as_secs_f64();
            histogram.record(seconds);
            if let Some(slots) = exemplars.filter(|_| ids.sampled) {
                slots.record(seconds, &ids.trace_id, &ids.span_id);
            }
        }
        let attempt = extensions.get::<AttemptNumber>().map_or(1, |a| a.0);
        let timeout = extensions
            .get::<AttemptTimeout>()
            .map_or(Duration::ZERO, |t| t.0);
        if let Some(failure) = classify(outcome, attempt, timeout) {
            log_failure(&failure, timeout);
        }
    }
}

/// `http_client_request_duration_seconds` (OpenTelemetry `http.client.request.duration`) for
/// an attempt that ended with `status` (none: no answer) and `error_type`, and its exemplar
/// slots; registered once per outcome. The server is always A, so its address and port
/// come from the one provider URL.
fn client_duration(
    status: Option<u16>,
    error_type: Option<String>,
) -> (metrics::Histogram, Option<Arc<telemetry::exemplars::Slots>>) {
    type Handles = (metrics::Histogram, Option<Arc<telemetry::exemplars::Slots>>);
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
        metrics::histogram!(telemetry::metrics::CLIENT_DURATION, &labels),
        telemetry::metrics::exemplars()
            .map(|e| e.slots(telemetry::metrics::CLIENT_DURATION, &labels)),
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

    fn failure(attempt: u32, kind: FailureKind, summary: &str) -> AttemptFailure {
        AttemptFailure {
            attempt,
            kind,
            summary: summary.to_owned(),
        }
    }

    #[test]
    fn alike_failures_are_summarised_once() {
        let both = [
            failure(1, FailureKind::Timeout, "timed out after 1s"),
            failure(2, FailureKind::Timeout, "timed out after 1s"),
        ];
        assert_eq!(describe(&both), "timed out after 1s on both attempts");
        assert_eq!(
            describe(&both[..1]),
            "timed out after 1s on the only attempt"
        );
    }

    #[test]
    fn different_failures_are_listed_by_attempt() {
        let mixed = [
            failure(1, FailureKind::Timeout, "timed out after 1s"),
            failure(
                2,
                FailureKind::ConnectionError,
                "Connection refused (os error 111)",
            ),
        ];
        assert_eq!(
            describe(&mixed),
            "attempt 1: timed out after 1s; attempt 2: Connection refused (os error 111)"
        );
        let failures = Failures {
            attempts: mixed.to_vec(),
            ..Failures::default()
        };
        assert_eq!(
            ProviderError::Unavailable(failures).failure_kind(),
            Some(FailureKind::ConnectionError)
        );
    }

    #[test]
    fn details_say_why_b_stopped_early() {
        let one = Failures {
            attempts: vec![failure(1, FailureKind::Timeout, "timed out after 1s")],
            deadline: Some(Duration::from_millis(1500)),
            budget_exhausted: false,
        };
        assert_eq!(
            one.details(),
            "timed out after 1s on the only attempt; gave up at the 1500ms deadline"
        );
        let refused = Failures {
            attempts: vec![failure(1, FailureKind::BadStatus, "provider answered 500")],
            deadline: None,
            budget_exhausted: true,
        };
        assert_eq!(
            refused.details(),
            "provider answered 500 on the only attempt; not retried: retry budget spent"
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
                Config::try_parse_from(["service-b", "--provider-url", base]).expect("parses");
            let provider = Provider::new(&config).expect("client");
            assert_eq!(provider.token_url().as_str(), expected);
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let request = TokenRequest {
            username: "divya",
            password: "pass123",
            delay_ms: None,
        };
        assert!(!format!("{request:?}").contains("pass123"));
    }
}
