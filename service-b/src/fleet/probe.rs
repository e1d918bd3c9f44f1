//! The `/health` probes that bring an endpoint back once it answers: one that refused a
//! connection (a replica stopped or restarting), or one discovery found and B never
//! reached. A probe is marked as one, so A can tell it from a user: its `User-Agent` says
//! `endpoint probe` and its request id starts with `probe-` (in A's log line), and it asks
//! for `/health`, never a token (A's metrics count it under that route).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::endpoint::Endpoint;

/// How often an endpoint out of the choice is probed.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// How long one probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// What a probe says it is, in `User-Agent`.
pub const USER_AGENT: &str = concat!("service-b/", env!("CARGO_PKG_VERSION"), " (endpoint probe)");

/// Whether `endpoint` answers `GET /health` with 200 now.
pub async fn answers(endpoint: &Endpoint) -> bool {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let request_id = format!("probe-{}-{}", endpoint.id, SENT.fetch_add(1, Relaxed));
    let probe = endpoint
        .probe_client
        .get(endpoint.health_url.clone())
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(telemetry::observe::REQUEST_ID_HEADER, request_id)
        .timeout(TIMEOUT)
        .send();
    matches!(probe.await, Ok(answer) if answer.status() == http::StatusCode::OK)
}
