//! Connections the edge refuses or closes because of what the client did, by kind: each
//! counted in `http_connection_errors_total{kind}`, and logged (`connection_rejected`) at
//! most once a second per kind with the number left unlogged, so a flood cannot flood the
//! log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Connections refused or closed because of what the client did, by kind.
pub const CONNECTION_ERRORS: &str = "http_connection_errors_total";

/// A connection-level event worth counting and logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    HeaderTooLarge,
    UriTooLong,
    MalformedRequest,
    HeaderTimeout,
    OverCapacity,
    Evicted,
    AcceptFailed,
}

impl ConnEvent {
    const ALL: [Self; 7] = [
        Self::HeaderTooLarge,
        Self::UriTooLong,
        Self::MalformedRequest,
        Self::HeaderTimeout,
        Self::OverCapacity,
        Self::Evicted,
        Self::AcceptFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::HeaderTooLarge => "header_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::MalformedRequest => "malformed_request",
            Self::HeaderTimeout => "header_timeout",
            Self::OverCapacity => "over_capacity",
            Self::Evicted => "evicted",
            Self::AcceptFailed => "accept_failed",
        }
    }
}

/// Counts every connection event, and logs at most one line a second per kind, carrying
/// how many went unlogged since the previous line.
#[derive(Debug)]
pub(crate) struct EventLog {
    /// Per kind: its `http_connection_errors_total` series, registered once.
    counted: [metrics::Counter; ConnEvent::ALL.len()],
    /// Per kind: the second (since the first event) of the last line, plus one (0: never).
    last_logged: [AtomicU64; ConnEvent::ALL.len()],
    /// Per kind: events not logged since the last line.
    unlogged: [AtomicU64; ConnEvent::ALL.len()],
}

impl EventLog {
    /// The log, its series described and registered (at zero from the start).
    pub(crate) fn new() -> Self {
        metrics::describe_counter!(
            CONNECTION_ERRORS,
            "Connections refused or closed because of what the client sent or how many there were, by kind"
        );
        let counted = ConnEvent::ALL.map(|event| {
            let counter = metrics::counter!(CONNECTION_ERRORS, "kind" => event.label());
            counter.increment(0);
            counter
        });
        Self {
            counted,
            last_logged: Default::default(),
            unlogged: Default::default(),
        }
    }

    pub(crate) fn record(&self, event: ConnEvent, peer: Option<SocketAddr>) {
        self.counted[event as usize].increment(1);
        if event == ConnEvent::AcceptFailed {
            return; // the accept loop logs its bursts itself
        }
        let index = event as usize;
        let second = seconds_since_start() + 1;
        let last = self.last_logged[index].load(Relaxed);
        let due = last != second
            && self.last_logged[index]
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_ok();
        if !due {
            self.unlogged[index].fetch_add(1, Relaxed);
            return;
        }
        let unlogged = self.unlogged[index].swap(0, Relaxed);
        crate::event!(
            WARN,
            "connection_rejected",
            kind = event.label(),
            peer = peer.map(|p| p.to_string()),
            unlogged,
        );
    }
}

/// Whole seconds since the first call: the clock the one-line-a-second rule counts in.
fn seconds_since_start() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
}
