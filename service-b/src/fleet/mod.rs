//! A's endpoints, and which one each attempt goes to. B knows A by `--provider-url`: one or
//! more base URLs, each an endpoint or, for a name, one endpoint per address. Three parts,
//! kept apart, and one [`Fleet`] that holds them together:
//!
//! | file | what |
//! |---|---|
//! | [`discovery`] | where endpoints come from: the URLs as given, names resolved again every few seconds |
//! | [`endpoint`] | one endpoint: its client, how loaded it looks, where it stands, what its attempts came to |
//! | [`load`] | how loaded an endpoint looks: Peak-EWMA latency times attempts in flight, failures counted as slow |
//! | [`picker`] | which endpoint an attempt goes to: the cheaper of two random ones, never one just tried while another is in the choice |
//! | [`ejection`] | when an endpoint is taken out of the choice, and when it comes back (outlier ejection) |
//! | [`probe`] | the `/health` probes that bring back an endpoint that refused a connection or was never reached |
//!
//! With one URL naming an address (`http://127.0.0.1:8080`, or `localhost`), the fleet is
//! that one endpoint and nothing else happens: no discovery, no probes, no ejection, no
//! per-endpoint series; every log line, metric and 503 is as with no fleet at all. Log
//! lines and 503s name the endpoint of each attempt only while B knows two or more.

pub mod discovery;
pub mod ejection;
pub mod endpoint;
pub mod load;
pub mod picker;
pub mod probe;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use reqwest::Url;
use reqwest_middleware::ClientWithMiddleware;
use tokio::time::Instant;

use crate::outcome::AttemptOutcome;
use discovery::{Resolver, Source};
use ejection::{EjectionPolicy, Reason, State, Verdict};
pub use endpoint::{Endpoint, Return};
use picker::Candidate;

/// How long the series of an endpoint that discovery no longer finds are kept: long enough
/// for a dashboard's rate over the last minutes to see its last attempts.
pub const RETIRED_KEPT: Duration = Duration::from_secs(300);

/// The latency an endpoint starts with when nothing is known of any (loopback and
/// in-cluster calls take a few milliseconds).
const FIRST_ESTIMATE: Duration = Duration::from_millis(5);

/// Builds the two clients of an endpoint: the one attempts go through (observed, A's answer
/// read whole) and the plain one probes use; `peer` pins the URL's host to that address.
pub type Connect = Arc<
    dyn Fn(
            &Url,
            Option<SocketAddr>,
        ) -> Result<(ClientWithMiddleware, reqwest::Client), reqwest::Error>
        + Send
        + Sync,
>;

/// How the fleet finds and judges A's endpoints.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--provider-url`.
    pub urls: Vec<Url>,
    /// `--provider-resolve-interval-ms`.
    pub resolve_interval: Duration,
    /// `--provider-dns`, or the system's resolver.
    pub resolver: Resolver,
    /// The `--eject-*` flags.
    pub ejection: EjectionPolicy,
}

/// A's endpoints: see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Fleet(Arc<Shared>);

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("endpoints", &self.0.snapshot().len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// The one endpoint, when `--provider-url` names one address: nothing else happens.
    single: Option<Arc<Endpoint>>,
    /// The endpoints known now.
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    /// Endpoints discovery no longer finds, and since when: their series are kept for
    /// [`RETIRED_KEPT`].
    retired: Mutex<Vec<(Arc<Endpoint>, Instant)>>,
    /// Held while an ejection is decided, so two at once cannot pass the cap together.
    ejecting: Mutex<()>,
    /// Why names do not resolve, while one does not.
    unresolved: Mutex<Option<String>>,
    sources: Vec<Source>,
    settings: Settings,
    connect: Connect,
    next_id: AtomicU64,
}

impl Fleet {
    /// The fleet `settings` describe: the URLs' endpoints, names resolved once now (a name
    /// that does not resolve yet is said in the log and retried in the background), and,
    /// when there are names, discovery running every `resolve_interval`.
    pub async fn start(settings: Settings, connect: Connect) -> Result<Self, reqwest::Error> {
        let sources: Vec<Source> = settings.urls.iter().map(Source::of).collect();
        let single = match sources.as_slice() {
            [Source::Fixed { base, peer }] => {
                let clients = connect(base, *peer)?;
                Some(Arc::new(Endpoint::new(
                    0,
                    base,
                    *peer,
                    clients,
                    State::InUse,
                    FIRST_ESTIMATE,
                )))
            }
            _ => None,
        };
        let named = sources.iter().any(|s| matches!(s, Source::Named { .. }));
        let fleet = Self(Arc::new(Shared {
            single,
            endpoints: RwLock::default(),
            retired: Mutex::default(),
            ejecting: Mutex::default(),
            unresolved: Mutex::default(),
            sources,
            settings,
            connect,
            next_id: AtomicU64::new(1),
        }));
        if fleet.0.single.is_none() {
            fleet.0.refresh(State::InUse).await;
            if named {
                discover(Arc::downgrade(&fleet.0));
            }
        }
        Ok(fleet)
    }

    /// Whether B knows two endpoints or more now: log lines and 503s then say which one
    /// each attempt went to.
    pub fn several(&self) -> bool {
        self.0.single.is_none() && self.0.snapshot().len() >= 2
    }

    /// Whether this is one fixed endpoint (see the module docs).
    pub fn is_single(&self) -> bool {
        self.0.single.is_some()
    }

    /// Why no endpoint is known, when none is (a name that does not resolve).
    pub fn unresolved(&self) -> Option<String> {
        self.0
            .unresolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The endpoint the next attempt of a call goes to, given the ids of those it already
    /// tried (see [`picker`]); `None` when no endpoint is known.
    pub fn pick(&self, tried: &[u64]) -> Option<Arc<Endpoint>> {
        if let Some(single) = &self.0.single {
            return Some(single.clone());
        }
        let endpoints = self.0.snapshot();
        let now = Instant::now();
        let candidates: Vec<Candidate> = endpoints
            .iter()
            .map(|endpoint| {
                let (state, returned, probation) = {
                    let mut health = endpoint.health();
                    let (state, returned) = health.state(now);
                    (state, returned, health.on_probation())
                };
                if returned {
                    self.0.returned(endpoint, Return::Ejection);
                }
                // On probation: one attempt at a time.
                let busy_on_probation = probation && endpoint.load.in_flight() > 0;
                Candidate {
                    in_use: state == State::InUse && !busy_on_probation,
                    tried: tried.contains(&endpoint.id),
                    cost: endpoint.load.cost(),
                }
            })
            .collect();
        picker::pick(&candidates, |n| rand::random_range(0..n)).map(|i| endpoints[i].clone())
    }

    /// Whether an endpoint in the choice remains that a call which tried `tried` has not.
    pub fn untried_in_use(&self, tried: &[u64]) -> bool {
        self.0.single.is_none()
            && self
                .0
                .snapshot()
                .iter()
                .any(|e| !tried.contains(&e.id) && e.health().in_use())
    }

    /// Records how an attempt to `endpoint` ended: counted for its series, and, when the
    /// attempt was paced by B alone (`heard`), for its load and its ejection record.
    pub fn report(
        &self,
        endpoint: &Arc<Endpoint>,
        outcome: AttemptOutcome,
        refused: bool,
        took: Duration,
        heard: bool,
    ) {
        if self.0.single.is_some() {
            return;
        }
        endpoint.count(outcome);
        if !heard {
            return;
        }
        if outcome.is_failure() {
            endpoint.load.failed();
        } else {
            endpoint.load.answered(took);
        }
        let verdict = if refused {
            Verdict::Refused
        } else if outcome.is_failure() {
            Verdict::Failed
        } else {
            Verdict::Answered
        };
        let policy = self.0.settings.ejection;
        let Some(reason) = endpoint.health().report(verdict, &policy) else {
            return;
        };
        self.0.eject(endpoint, reason);
    }

    /// The fleet's series, for `/metrics` (none for a single fixed endpoint).
    pub fn exposition(&self) -> Arc<dyn telemetry::observe::Exposition> {
        Arc::new(Series(Arc::downgrade(&self.0)))
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes `endpoint` out for `reason`, unless the cap on endpoints out forbids it.
    fn eject(self: &Arc<Self>, endpoint: &Arc<Endpoint>, reason: Reason) {
        let policy = self.settings.ejection;
        let _deciding = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let endpoints = self.snapshot();
        let out = endpoints.iter().filter(|e| !e.health().in_use()).count();
        if out >= policy.most_out(endpoints.len()) {
            return;
        }
        let lasts = endpoint.health().eject(reason, &policy, Instant::now());
        if let Some(index) = Reason::ALL.iter().position(|r| *r == reason) {
            endpoint.ejections[index].fetch_add(1, Relaxed);
        }
        let for_ms = lasts.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        telemetry::event!(
            WARN,
            "endpoint_ejected",
            endpoint = %endpoint.name,
            reason = reason.label(),
            for_ms,
            until = if lasts.is_some() { "its time is up" } else { "a probe answers" },
        );
        if lasts.is_none() {
            probe(Arc::downgrade(self), endpoint.clone(), probe::INTERVAL);
        }
    }

    /// `endpoint` is back in the choice: logged and counted, with a fresh latency estimate
    /// (its last one may be the slowness that took it out).
    fn returned(&self, endpoint: &Endpoint, after: Return) {
        endpoint.load.reset(self.typical_estimate());
        if let Some(index) = Return::ALL.iter().position(|r| *r == after) {
            endpoint.returns[index].fetch_add(1, Relaxed);
        }
        telemetry::event!(
            INFO,
            "endpoint_returned",
            endpoint = %endpoint.name,
            after = after.label(),
        );
    }

    /// The mean latency estimate of the endpoints in the choice: what a new or returning
    /// endpoint starts with, so it is neither flooded nor starved.
    fn typical_estimate(&self) -> Duration {
        let endpoints = self.snapshot();
        let in_use: Vec<Duration> = endpoints
            .iter()
            .filter(|e| e.health().in_use())
            .map(|e| e.load.estimate())
            .collect();
        match u32::try_from(in_use.len()) {
            Ok(n) if n > 0 => in_use.iter().sum::<Duration>() / n,
            _ => FIRST_ESTIMATE,
        }
    }

    /// Resolves the names again and makes the endpoint set what the sources say now: new
    /// endpoints start in `fresh` (in use at start; waiting for a probe when found later),
    /// those no longer found retire, with those of a name that is gone; a resolution that
    /// failed in a way that may pass keeps the endpoints last found.
    async fn refresh(self: &Arc<Self>, fresh: State) {
        let current = self.snapshot();
        let mut wanted: Vec<(Url, Option<SocketAddr>)> = Vec::new();
        let mut failures = Vec::new();
        for source in &self.sources {
            match source {
                Source::Fixed { base, peer } => wanted.push((base.clone(), *peer)),
                Source::Named { base, host, port } => {
                    match self.settings.resolver.resolve(host).await {
                        Ok(addresses) => wanted.extend(
                            addresses
                                .into_iter()
                                .map(|ip| (base.clone(), Some(SocketAddr::new(ip, *port)))),
                        ),
                        Err(unresolved) => {
                            failures.push(format!("{host}: {}", unresolved.why));
                            if !unresolved.gone {
                                wanted.extend(
                                    current
                                        .iter()
                                        .filter(|e| e.token_url.host_str() == Some(host))
                                        .map(|e| (base.clone(), e.peer)),
                                );
                            }
                        }
                    }
                }
            }
        }
        self.note_resolution(failures);

        let known = |base: &Url, peer: &Option<SocketAddr>| {
            current
                .iter()
                .find(|e| e.peer == *peer && e.token_url == endpoint::joined(base, "token"))
        };
        let mut next = Vec::with_capacity(wanted.len());
        let mut added = Vec::new();
        for (base, peer) in &wanted {
            if let Some(endpoint) = known(base, peer) {
                if !next.iter().any(|e: &Arc<Endpoint>| e.id == endpoint.id) {
                    next.push(endpoint.clone());
                }
                continue;
            }
            let clients = match (self.connect)(base, *peer) {
                Ok(clients) => clients,
                Err(error) => {
                    telemetry::event!(WARN, "endpoint_unusable", url = %base, error = %error);
                    continue;
                }
            };
            let id = self.next_id.fetch_add(1, Relaxed);
            let endpoint = Arc::new(Endpoint::new(
                id,
                base,
                *peer,
                clients,
                fresh,
                self.typical_estimate(),
            ));
            added.push(endpoint.name.clone());
            if fresh == State::Probing {
                probe(Arc::downgrade(self), endpoint.clone(), Duration::ZERO);
            }
            next.push(endpoint);
        }
        let removed: Vec<Arc<Endpoint>> = current
            .iter()
            .filter(|e| !next.iter().any(|n| n.id == e.id))
            .cloned()
            .collect();
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        retired.retain(|(_, since)| now.saturating_duration_since(*since) < RETIRED_KEPT);
        if added.is_empty() && removed.is_empty() {
            return;
        }
        retired.extend(removed.iter().map(|e| (e.clone(), now)));
        drop(retired);
        let names = |list: &[String]| list.join(", ");
        let gone: Vec<String> = removed.iter().map(|e| e.name.clone()).collect();
        telemetry::event!(
            INFO,
            "endpoints_changed",
            known = next.len() as i64,
            added = names(&added),
            removed = names(&gone),
        );
        *self.endpoints.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    /// Says in the log when names stop or start resolving (once per change, not per try).
    fn note_resolution(&self, failures: Vec<String>) {
        let now = (!failures.is_empty()).then(|| failures.join("; "));
        let mut unresolved = self.unresolved.lock().unwrap_or_else(|p| p.into_inner());
        match (&*unresolved, &now) {
            (None, Some(error)) => telemetry::event!(WARN, "provider_unresolved", error = %error),
            (Some(_), None) => telemetry::event!(INFO, "provider_resolved"),
            _ => {}
        }
        *unresolved = now;
    }

    fn knows(&self, endpoint: &Endpoint) -> bool {
        self.snapshot().iter().any(|e| e.id == endpoint.id)
    }
}

/// Runs discovery every `resolve_interval` (every second while nothing resolves) for as long
/// as the fleet lives.
fn discover(fleet: Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            let Some(interval) = fleet.upgrade().map(|f| {
                let every = f.settings.resolve_interval;
                if f.snapshot().is_empty() {
                    every.min(Duration::from_secs(1))
                } else {
                    every
                }
            }) else {
                return;
            };
            tokio::time::sleep(interval).await;
            let Some(fleet) = fleet.upgrade() else {
                return;
            };
            fleet.refresh(State::Probing).await;
        }
    });
}

/// Probes `endpoint` every [`probe::INTERVAL`] (the first after `first`) until it answers,
/// then brings it back; stops when it is back, gone, or the fleet is.
fn probe(fleet: Weak<Shared>, endpoint: Arc<Endpoint>, first: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(first).await;
        loop {
            {
                let Some(fleet) = fleet.upgrade() else {
                    return;
                };
                if !fleet.knows(&endpoint) || endpoint.health().in_use() {
                    return;
                }
            }
            if probe::answers(&endpoint).await {
                let Some(fleet) = fleet.upgrade() else {
                    return;
                };
                endpoint.health().come_back(Instant::now());
                fleet.returned(&endpoint, Return::Probe);
                return;
            }
            tokio::time::sleep(probe::INTERVAL).await;
        }
    });
}

/// The fleet's series, written at each scrape from the endpoints themselves, so those that
/// are gone go (see [`RETIRED_KEPT`]).
struct Series(Weak<Shared>);

impl telemetry::observe::Exposition for Series {
    fn render(&self, out: &mut String) {
        let Some(fleet) = self.0.upgrade() else {
            return;
        };
        if fleet.single.is_some() {
            return;
        }
        let now = Instant::now();
        let current = fleet.snapshot();
        let retired: Vec<Arc<Endpoint>> = fleet
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(*since) < RETIRED_KEPT)
            .map(|(e, _)| e.clone())
            .collect();
        let states: Vec<(&Arc<Endpoint>, &'static str)> = current
            .iter()
            .map(|e| (e, e.health().current(now).label()))
            .collect();
        let everyone: Vec<&Arc<Endpoint>> = current.iter().chain(retired.iter()).collect();

        family(
            out,
            ("provider_endpoints", "gauge"),
            "Endpoints of service A that B knows, by state (in_use, ejected, probing)",
            State::LABELS.iter().map(|state| {
                let n = states.iter().filter(|(_, s)| s == state).count();
                (format!("state=\"{state}\""), n as u64)
            }),
        );
        family(
            out,
            ("provider_endpoint_state", "gauge"),
            "Each endpoint of service A: 1 for the state it is in",
            states.iter().flat_map(|(endpoint, now)| {
                State::LABELS.iter().map(move |state| {
                    let labels = format!("endpoint=\"{}\",state=\"{state}\"", endpoint.name);
                    (labels, u64::from(now == state))
                })
            }),
        );
        family(
            out,
            ("provider_endpoint_attempts_total", "counter"),
            "Attempts to call service A, by endpoint and outcome",
            everyone.iter().flat_map(|endpoint| {
                AttemptOutcome::ALL
                    .iter()
                    .zip(&endpoint.attempts)
                    .map(|(outcome, n)| {
                        let labels = format!(
                            "endpoint=\"{}\",outcome=\"{}\"",
                            endpoint.name,
                            outcome.label()
                        );
                        (labels, n.load(Relaxed))
                    })
            }),
        );
        family(
            out,
            ("provider_endpoint_ejections_total", "counter"),
            "Endpoints of service A taken out of the choice, by endpoint and reason",
            everyone.iter().flat_map(|endpoint| {
                Reason::ALL
                    .iter()
                    .zip(&endpoint.ejections)
                    .map(|(reason, n)| {
                        let labels = format!(
                            "endpoint=\"{}\",reason=\"{}\"",
                            endpoint.name,
                            reason.label()
                        );
                        (labels, n.load(Relaxed))
                    })
            }),
        );
        family(
            out,
            ("provider_endpoint_returns_total", "counter"),
            "Endpoints of service A back in the choice, by endpoint and after what (a probe, or the ejection's time)",
            everyone.iter().flat_map(|endpoint| {
                Return::ALL.iter().zip(&endpoint.returns).map(|(after, n)| {
                    let labels =
                        format!("endpoint=\"{}\",after=\"{}\"", endpoint.name, after.label());
                    (labels, n.load(Relaxed))
                })
            }),
        );
    }
}

/// One metric family in the Prometheus text format: its help, type and samples.
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    samples: impl Iterator<Item = (String, u64)>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
    let _ = writeln!(out);
}
