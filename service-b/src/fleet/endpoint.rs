//! One endpoint of A: where its attempts go (a base URL, and the address a name resolved
//! to), the client that sends them, how loaded it looks, where it stands with ejection, and
//! what its attempts came to.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use reqwest::Url;
use reqwest_middleware::ClientWithMiddleware;

use super::ejection::{Health, Reason, State};
use super::load::Load;
use crate::outcome::AttemptOutcome;

/// One endpoint of A.
#[derive(Debug)]
pub struct Endpoint {
    /// Unique in the life of the process: what an attempt loop remembers as tried.
    pub id: u64,
    /// How logs and metric labels name it: the replica's `address:port` (or the URL's
    /// `host:port` when B leaves the name to its client, as for `localhost`).
    pub name: String,
    /// The replica's address, when B chose it (a name resolved by B, or an IP in the URL).
    pub peer: Option<SocketAddr>,
    /// `<base>/token`.
    pub token_url: Url,
    /// `<base>/health`, for probes.
    pub health_url: Url,
    /// Sends attempts (with telemetry's client span and A's answer read whole).
    pub http: ClientWithMiddleware,
    /// Sends probes, unobserved.
    pub probe_client: reqwest::Client,
    /// How loaded it looks.
    pub load: Load,
    /// Where it stands with ejection.
    pub health: Mutex<Health>,
    /// What its attempts came to, per [`AttemptOutcome::ALL`].
    pub attempts: [AtomicU64; AttemptOutcome::ALL.len()],
    /// Its ejections, per [`Reason::ALL`].
    pub ejections: [AtomicU64; Reason::ALL.len()],
    /// Its returns: after a probe answered, after an ejection's time.
    pub returns: [AtomicU64; 2],
}

/// How an endpoint came back into the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// A `/health` probe answered.
    Probe,
    /// Its ejection's time was up.
    Ejection,
}

impl Return {
    /// Both ways, in the order of [`Endpoint::returns`].
    pub const ALL: [Self; 2] = [Self::Probe, Self::Ejection];

    /// The name in logs (`after`) and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Ejection => "ejection",
        }
    }
}

impl Endpoint {
    /// An endpoint for `base` (a base URL whose path `/token` and `/health` are appended
    /// to), reached at `peer` when B chose the address, sending through `http`.
    pub fn new(
        id: u64,
        base: &Url,
        peer: Option<SocketAddr>,
        clients: (ClientWithMiddleware, reqwest::Client),
        state: State,
        estimate: Duration,
    ) -> Self {
        let name = match peer {
            Some(peer) => peer.to_string(),
            None => format!(
                "{}:{}",
                base.host_str().unwrap_or_default(),
                base.port_or_known_default().unwrap_or(80)
            ),
        };
        let (http, probe_client) = clients;
        Self {
            id,
            name,
            peer,
            token_url: joined(base, "token"),
            health_url: joined(base, "health"),
            http,
            probe_client,
            load: Load::new(estimate),
            health: Mutex::new(Health::new(state)),
            attempts: Default::default(),
            ejections: Default::default(),
            returns: Default::default(),
        }
    }

    /// Counts an attempt that ended as `outcome`.
    pub fn count(&self, outcome: AttemptOutcome) {
        if let Some(index) = AttemptOutcome::ALL.iter().position(|o| *o == outcome) {
            self.attempts[index].fetch_add(1, Relaxed);
        }
    }

    /// Its ejection record, locked.
    pub fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `base` with `segment` appended to its path (`http://a:1/prefix/` → `…/prefix/token`).
pub fn joined(base: &Url, segment: &str) -> Url {
    let mut url = base.clone();
    // Only http:// URLs with a host reach here, and those always have a path.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(segment);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_to_the_base() {
        for (base, expected) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/token"),
            ("http://a:1/prefix/", "http://a:1/prefix/token"),
            ("http://a:1/prefix", "http://a:1/prefix/token"),
        ] {
            let base = Url::parse(base).expect("url");
            assert_eq!(joined(&base, "token").as_str(), expected);
        }
    }
}
