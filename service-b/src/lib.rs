//! Service B, the consumer: `POST /protected-action` calls service A's `POST /token` over
//! HTTP with a strict per-attempt timeout and a retry policy, and answers a combined body:
//! B's own result with A's token, A's 401 passed through, or 503 when A cannot be reached.
//!
//! - [`config`]: flags, environment fallbacks, and the worst-case timing arithmetic.
//! - [`provider`]: the client for A: the whole call in `Provider::issue_token`, top to
//!   bottom. Timeouts, retries and how each attempt is classified, logged and counted all
//!   live there.
//! - [`fleet`]: A's endpoints (one URL, several, or a name's addresses), which one each
//!   attempt goes to, and which are out of the choice for failing.
//! - [`outcome`]: how an attempt ended and why B stopped, the two facts everything records.
//! - [`metrics`]: B's own series, as typed helpers.
//! - [`resilience`]: the retry budget and circuit breaker that keep retries from making an
//!   outage worse.
//! - [`routes`]: `GET /health`, `POST /protected-action`, `GET /metrics`, `GET /openapi.json`.
//! - [`error`]: every error B answers, and its status.
//! - [`faults`]: the misconfiguration B plays on purpose for the labs (`--fault-listen`).
//! - [`openapi`]: the API description of B's routes.
//! - [`startup`]: binds the listener and serves until told to stop.
//!
//! B knows A only as URLs (`--provider-url`).
//!
//! "The lab" in comments is the walkthrough the README shows with this implementation's real
//! output (README.md, "The walkthrough"): its bodies, statuses, log lines and timings.

pub mod config;
pub mod error;
pub mod faults;
pub mod fleet;
pub mod metrics;
pub mod openapi;
pub mod outcome;
pub mod provider;
pub mod resilience;
pub mod routes;
pub mod startup;

/// The name this service logs, traces and scrapes under.
pub const SERVICE_NAME: &str = "service-b";
