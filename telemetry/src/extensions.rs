//! What the server puts on each request for the layers above it: the caller's address,
//! the body deadline, the in-flight cap, and the shutdown cut-off. A leaf: it imports
//! nothing of this crate, so [`crate::server`], [`crate::observe`] and [`crate::http`] can all
//! read it without importing each other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// What the server knows of a request, put into its extensions as one value by
/// [`crate::server`] (one insert instead of four: each costs an allocation).
#[derive(Debug, Clone)]
pub struct Served {
    /// The caller's IP as text, for the span's `client.address` (written once per
    /// connection).
    pub peer_ip: Arc<str>,
    /// When the body must have arrived.
    pub body_deadline: BodyDeadline,
    /// The shutdown cut-off.
    pub cut_off: CutOff,
    /// The in-flight cap.
    pub in_flight_limit: InFlightLimit,
}

/// When the request's body must have arrived (`--body-timeout-ms` after its head); read by
/// [`crate::http::JsonBody`].
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    /// The instant.
    pub at: Instant,
    /// The timeout it was made from, for the error message.
    pub timeout: Duration,
}

/// Fires when the shutdown grace has run out: requests still running are answered 503.
/// Part of every request's [`Served`].
#[derive(Debug, Clone)]
pub struct CutOff(pub watch::Receiver<bool>);

/// The process-wide cap on requests in flight (`--max-in-flight`), part of every request's
/// [`Served`]; requests without one are never shed.
#[derive(Debug, Clone)]
pub struct InFlightLimit(Arc<Semaphore>);

impl InFlightLimit {
    /// A cap of `max` requests.
    pub fn new(max: u32) -> Self {
        Self(Arc::new(Semaphore::new(max as usize)))
    }

    /// A place for one more request, unless the cap is reached.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}
