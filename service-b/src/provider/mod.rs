//! The client for service A, and everything B does when A is slow, down or failing. The
//! whole call is [`Provider::issue_token`], one loop that sends, asks and records:
//!
//! 1. ask the circuit breaker (open: 503 at once, A is not called);
//! 2. choose an endpoint of A for the attempt (`crate::fleet`: another than the attempts
//!    before it, whenever one is in the choice) and send it, its timeout bounded by what is
//!    left of the deadline ([`attempt`]: the request, A's answer read whole, the attempt
//!    counted, reported to the fleet, and a failure built once and logged inside the
//!    attempt's span);
//! 3. on an answer, stop; on a failure, ask [`decision::next_step`] whether to retry after
//!    a wait or to stop and why ([`StopReason`]), and record it.
//!
//! How the call ended is a [`ProviderError`] ([`answer`]); the route turns it into B's
//! answer.

pub mod answer;
pub mod attempt;
pub mod decision;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{RetryDecision, RetryPolicy as _};
use serde::Serialize;
use telemetry::edge::Password;
use telemetry::observe::ClientCalls;
use tokio::time::Instant;

pub use answer::{Failures, Grant, ProviderError, describe};
pub use attempt::{AttemptFailure, MAX_ANSWER_BYTES};

use crate::config::ProviderConfig;
use crate::fleet::{Connect, Fleet};
use crate::metrics::ProviderMetrics;
use crate::outcome::StopReason;
use crate::resilience::{Admission, CircuitBreaker, CircuitState, RetryBudget};
use attempt::{Attempt, ReadWhole};
use decision::{Pace, Situation, Step};

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

/// The client for service A.
#[derive(Debug, Clone)]
pub struct Provider {
    fleet: Fleet,
    timeout: Duration,
    /// A per-attempt timeout switched on at run time (the labs' misconfigured B), in
    /// milliseconds; 0 when none is.
    timeout_override: Arc<AtomicU64>,
    deadline: Duration,
    max_attempts: u32,
    backoff: ExponentialBackoff,
    breaker: Arc<CircuitBreaker>,
    /// The retries of calls paced by B alone.
    budget: Arc<RetryBudget>,
    /// The retries of calls whose caller asked for their slowness: the same rule, counted
    /// apart, so those callers can never spend the retries everyone else needs.
    callers_budget: Arc<RetryBudget>,
    metrics: Arc<ProviderMetrics>,
}

impl Provider {
    /// A client for A with the endpoints, timeouts, retry policy, budget and breaker of
    /// `config`, recording into `metrics`, each attempt observed with `observe`. Names in
    /// `--provider-url` are resolved once here (one that does not resolve yet is retried in
    /// the background).
    pub async fn start(
        config: &ProviderConfig,
        observe: &telemetry::observe::Settings,
        metrics: Arc<ProviderMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let timeout = config.provider_timeout();
        let fleet = Fleet::start(config.fleet_settings(), connector(config, observe)).await?;
        let (min, max) = config.retry_backoff();
        Ok(Self {
            fleet,
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
            callers_budget: Arc::new(RetryBudget::new(
                config.retry_budget_ratio,
                config.retry_budget_min_per_sec,
                RETRY_BUDGET_WINDOW,
            )),
            metrics,
        })
    }

    /// A's endpoints.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The per-attempt timeout: `--provider-timeout-ms`, unless one was switched on at run
    /// time through the fault endpoint.
    pub fn attempt_timeout(&self) -> Duration {
        match self.timeout_override.load(Relaxed) {
            0 => self.timeout,
            ms => Duration::from_millis(ms),
        }
    }

    /// Switches the per-attempt timeout to `timeout` (`None`: back to the flag's).
    pub fn override_timeout(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.timeout_override.store(ms, Relaxed);
    }

    /// The circuit breaker's current state.
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Asks A for a token: the whole call, as the module docs list it. `request_id` is
    /// forwarded as `X-Request-ID` so A's log lines carry the same id; `caller_deadline` is
    /// how long B's caller said it will wait (`x-request-timeout-ms`), which can shorten the
    /// call's deadline, never lengthen it.
    pub async fn issue_token(
        &self,
        request: &TokenRequest<'_>,
        request_id: &telemetry::RequestId,
        caller_deadline: Option<Duration>,
    ) -> Result<Grant, ProviderError> {
        let pace = Pace::of(request.delay_ms, caller_deadline, self.deadline);
        let heard = decision::heard_by_breaker(pace);
        let permit = match self.breaker.admit(heard) {
            Admission::Refused { retry_in, evidence } => {
                // One line per refused call, as `provider_failures_total{kind="circuit_open"}`
                // counts it, and an event on the request's span: A was not called.
                telemetry::event!(
                    WARN,
                    "circuit_open",
                    retry_in_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
                    evidence = %evidence,
                );
                self.metrics.circuit_refused();
                return Err(ProviderError::CircuitOpen { retry_in, evidence });
            }
            Admission::Allowed(permit, entered) => {
                self.circuit_changed(entered);
                permit
            }
        };
        self.budget(pace).deposit();
        let call_deadline = caller_deadline.map_or(self.deadline, |d| d.min(self.deadline));
        let deadline = Instant::now() + call_deadline;
        let mut failures: Vec<AttemptFailure> = Vec::new();
        let mut tried: Vec<u64> =
            Vec::with_capacity(usize::try_from(self.max_attempts).unwrap_or(2));

        let stopped = loop {
            let number = failures.len() as u32 + 1;
            let timeout = self
                .attempt_timeout()
                .min(deadline.saturating_duration_since(Instant::now()));
            if timeout.is_zero() {
                break StopReason::Deadline;
            }
            let Some(endpoint) = self.fleet.pick(&tried) else {
                break StopReason::NoEndpoint;
            };
            tried.push(endpoint.id);
            let attempt = Attempt {
                number,
                timeout,
                endpoint: &endpoint,
                several: self.fleet.several(),
                heard,
            };
            let built =
                self.token_request(&endpoint.token_url, number, timeout, request, request_id);
            let failure = match attempt
                .run(built, request_id, &self.fleet, &self.metrics)
                .await
            {
                Ok(answer) => {
                    // Any answer from A, a refusal included, shows A is reachable.
                    if let Some(permit) = permit {
                        self.circuit_changed(permit.record(true));
                    }
                    return answer::read_answer(answer).await;
                }
                Err(failure) => failure,
            };
            let situation = Situation {
                outcome: failure.kind,
                attempts: number,
                max_attempts: self.max_attempts,
                now: Instant::now(),
                deadline,
                backoff: backoff_wait(&self.backoff, number - 1),
                breaker_open: self.breaker.state() == CircuitState::Open,
                pace,
                refused_with_another_in_use: failure.refused && self.fleet.untried_in_use(&tried),
            };
            failures.push(failure);
            match decision::next_step(&situation, |share| self.budget(share).try_withdraw()) {
                Step::RetryAfter(wait) => tokio::time::sleep(wait).await,
                Step::Stop(reason) => break reason,
            }
        };

        let callers_deadline = stopped == StopReason::Deadline && call_deadline < self.deadline;
        let failures = Failures {
            attempts: failures,
            stopped,
            deadline: call_deadline,
            unresolved: self.fleet.unresolved(),
        };
        telemetry::event!(
            WARN,
            "provider_gave_up",
            reason = stopped.label(),
            attempts = failures.attempts.len() as i64,
        );
        self.metrics
            .gave_up(failures.last_kind(), stopped, !callers_deadline);
        // A call that never reached A (no endpoint known) says nothing about A's health.
        if let Some(permit) = permit.filter(|_| stopped != StopReason::NoEndpoint) {
            self.circuit_changed(permit.record(false));
        }
        if callers_deadline {
            return Err(ProviderError::CallerDeadline(failures));
        }
        Err(ProviderError::Unavailable(failures))
    }

    /// The retry budget a call of `pace` deposits into and takes its retries from: a
    /// caller's asked-for slowness spends a share of its own (see [`decision`]).
    fn budget(&self, pace: Pace) -> &RetryBudget {
        match pace {
            Pace::Ours => &self.budget,
            Pace::Callers => &self.callers_budget,
        }
    }

    /// Attempt number `number` of `POST /token` to `url`: the JSON body, `User-Agent`, the
    /// attempt's number and timeout for A, and the request id, with room for the trace
    /// context headers telemetry adds (a header map that grows is copied and rehashed).
    fn token_request(
        &self,
        url: &Url,
        number: u32,
        timeout: Duration,
        request: &TokenRequest<'_>,
        request_id: &telemetry::RequestId,
    ) -> reqwest::Request {
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
        let mut built = reqwest::Request::new(http::Method::POST, url.clone());
        // A struct of two strings and a number always serialises.
        *built.body_mut() = Some(serde_json::to_vec(request).unwrap_or_default().into());
        *built.headers_mut() = headers;
        *built.timeout_mut() = Some(timeout);
        built
    }
}

/// How each endpoint's clients are built: a connect timeout of one attempt's, idle pooled
/// connections dropped after `--pool-idle-timeout-ms`, no proxy; the URL's host pinned to
/// the endpoint's address when B resolved it (so the URL and `Host` stay the name); and for
/// attempts, telemetry's client span (one per base URL, so each target's series are its own)
/// and A's answer read whole.
fn connector(config: &ProviderConfig, observe: &telemetry::observe::Settings) -> Connect {
    let observe = observe.clone();
    let timeout = config.provider_timeout();
    let idle = Duration::from_millis(config.pool_idle_timeout_ms);
    let observers: Mutex<HashMap<Url, Arc<ClientCalls>>> = Mutex::default();
    Arc::new(move |base: &Url, peer: Option<SocketAddr>| {
        let mut client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(idle)
            // B talks to A directly; a proxy from the environment would only add a hop
            // that fails on its own.
            .no_proxy();
        if let (Some(url::Host::Domain(name)), Some(peer)) = (base.host(), peer) {
            // Port 0: the URL's own port is used.
            client = client.resolve(name, SocketAddr::new(peer.ip(), 0));
        }
        let client = client.build()?;
        let token_url = crate::fleet::endpoint::joined(base, "token");
        let observer = observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(base.clone())
            .or_insert_with(|| {
                Arc::new(ClientCalls::new(
                    &observe,
                    &token_url,
                    attempt::error_type,
                    &attempt::known_outcomes(),
                ))
            })
            .clone();
        let http: ClientWithMiddleware = ClientBuilder::new(client.clone())
            .with_arc(observer)
            .with(ReadWhole)
            .build();
        Ok((http, client))
    })
}

impl Provider {
    /// Logs, counts and exports a breaker state change, if there was one.
    fn circuit_changed(&self, entered: Option<CircuitState>) {
        let Some(to) = entered else {
            return;
        };
        match to {
            CircuitState::Open => telemetry::event!(WARN, "circuit_opened"),
            CircuitState::HalfOpen => telemetry::event!(INFO, "circuit_half_open"),
            CircuitState::Closed => telemetry::event!(INFO, "circuit_closed"),
        }
        self.metrics.circuit_transition(to);
    }
}

impl crate::faults::Knobs for Provider {
    fn set_timeout(&self, timeout: Option<Duration>) {
        self.override_timeout(timeout);
    }

    fn forget_past(&self) {
        if self.breaker.reset() {
            self.circuit_changed(Some(CircuitState::Closed));
        }
        self.budget.reset();
        self.callers_budget.reset();
    }
}

/// The wait before retry number `past_retries + 1` reqwest-retry's exponential backoff asks
/// for, or `None` when it allows no more. The policy speaks in wall-clock times; the wait
/// is their difference, and B's own clock takes it from here.
fn backoff_wait(policy: &ExponentialBackoff, past_retries: u32) -> Option<Duration> {
    let now = SystemTime::now();
    match policy.should_retry(now, past_retries) {
        RetryDecision::Retry { execute_after } => {
            Some(execute_after.duration_since(now).unwrap_or_default())
        }
        RetryDecision::DoNotRetry => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_waits_within_its_bounds_and_ends() {
        let policy = ExponentialBackoff::builder()
            .retry_bounds(Duration::from_millis(10), Duration::from_millis(50))
            .jitter(reqwest_retry::Jitter::Bounded)
            .build_with_max_retries(1);
        let wait = backoff_wait(&policy, 0).expect("one retry");
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        assert_eq!(backoff_wait(&policy, 1), None);
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
