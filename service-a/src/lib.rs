//! Service A, the provider: issues a deterministic token for valid credentials, and can be
//! asked to answer slowly (`delay_ms`) so its callers' timeouts can be watched at work.
//!
//! - [`config`]: command-line flags and their environment fallbacks.
//! - [`users`]: who may have a token; passwords checked in constant time.
//! - [`throttle`]: brute-force protection, per username.
//! - [`faults`]: the latency and failures A plays on purpose, from flags or at run time.
//! - [`metrics`]: A's own series (token requests by outcome, requested delays) and the JSON
//!   view `/metrics` gives curl.
//! - [`routes`]: `GET /health`, `POST /token`, `GET /metrics`, `GET /openapi.json`.
//! - [`openapi`]: the API description of those routes.
//! - [`error`]: every error this service answers, and its status.
//! - [`startup`]: binds the listener and serves until told to stop.
//!
//! A knows nothing about its callers: service B is just one client among many.
//!
//! "The lab" in comments is the walkthrough the README shows with this implementation's real
//! output (README.md, "The walkthrough"): its bodies, statuses, log lines and timings.

pub mod config;
pub mod error;
pub mod faults;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod throttle;
pub mod users;

/// The name this service logs, traces and scrapes under.
pub const SERVICE_NAME: &str = "service-a";
