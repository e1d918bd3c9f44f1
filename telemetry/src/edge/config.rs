//! The edge's flags (where a service listens, its limits and timeouts) and what they come
//! to on this machine: the connection and in-flight limits, fitted to the process's
//! open-files limit ([`ConnectionLimits::for_this_process`]).

use std::net::SocketAddr;
use std::time::Duration;

/// Where a service listens, and its container health probe: both services flatten these
/// into their flags, each with its own default port.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ListenArgs<const PORT: u16> {
    /// Address and port to listen on (default 127.0.0.1 and the service's port), as IP:PORT
    /// or localhost:PORT. Use `0.0.0.0:<port>` in a container; port 0 picks a free port (the chosen address is logged
    /// in the `listening` event).
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT)),
          value_parser = crate::edge::cli::parse_listen)]
    pub listen: SocketAddr,

    /// Instead of serving, check that the server on --listen answers GET /health with 200,
    /// and exit 0 if so, 1 if not. For container healthchecks: no curl needed in the image.
    #[arg(long)]
    pub healthcheck: bool,
}

/// The server's limits and timeouts; both services flatten these into their flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EdgeArgs {
    /// Largest request head (request line and headers) in bytes; a larger one gets 431 and
    /// the connection is closed.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1024, 1024 * 1024), allow_negative_numbers = true)]
    pub max_header_bytes: u32,

    /// How long a client may take to send a request head once it has started, in
    /// milliseconds (slow-loris defence); then 408 and the connection is closed.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub header_timeout_ms: u64,

    /// How long a client may take to send a request body after its head, in milliseconds;
    /// then 408.
    #[arg(long, env = "BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub body_timeout_ms: u64,

    /// How long a keep-alive connection may sit with no request before it is closed, in
    /// milliseconds. Keep callers' pool idle timeouts shorter (B's is 15 s), so they never
    /// reuse a connection the server is closing.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(1, 86_400_000), allow_negative_numbers = true)]
    pub idle_timeout_ms: u64,

    /// Most connections open at once (lowered to fit the open-files limit: see
    /// docs/limits.md). A new connection beyond it closes an idle or slowly sending one, or
    /// gets 503 if every one is handling a request.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub max_connections: u32,

    /// Most requests in flight at once (`/health` and `/metrics` excepted, so probes and
    /// scrapes still answer under overload); beyond it, 503 with `Retry-After`. Lowered to
    /// --max-connections if above it, and with it to fit the open-files limit.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub max_in_flight: u32,

    /// Most `GET /metrics` requests served at once (a scrape every few seconds needs one);
    /// beyond it, 503 with `Retry-After`, so scrapes can never crowd out requests.
    #[arg(long, env = "MAX_SCRAPES", default_value_t = 2,
          value_parser = crate::edge::cli::parse_whole_in::<u32>(1, 1024), allow_negative_numbers = true)]
    pub max_scrapes: u32,

    /// How long in-flight requests may run after SIGTERM before they are answered 503 and
    /// cut off, in milliseconds. Idle connections are closed at once.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = crate::edge::cli::parse_whole_in::<u64>(0, 3_600_000), allow_negative_numbers = true)]
    pub shutdown_grace_ms: u64,
}

impl Default for EdgeArgs {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_in_flight: 512,
            max_scrapes: 2,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl EdgeArgs {
    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// File descriptors kept free for everything that is not an inbound connection and not
/// counted by the caller of [`serve`]: the runtime, the listener, log output, the span
/// exporter, and connections refused over capacity while they linger.
const RESERVED_FDS: u64 = 64;

/// The fewest connections and in-flight places a service can work with: probes, a scrape
/// and a few callers at once. An open-files limit too low for them is refused at start.
const MIN_CONNECTIONS: u64 = 32;
const MIN_IN_FLIGHT: u64 = 8;

/// The connection and in-flight limits a service runs with, and why: see
/// [`ConnectionLimits::for_this_process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: u64,
    /// Most requests in flight at once.
    pub max_in_flight: u64,
    /// How they were chosen, said in the `edge_limits` line at start.
    pub why: String,
}

/// The open-files limit is too low for the service to work (the message names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitsError(pub String);

impl ConnectionLimits {
    /// The limits `edge` asks for, fitted to this process's open-files limit where each
    /// request in flight may also hold `outbound_per_request` connections of its own (B:
    /// one, to call A; A: none). See [`Self::derive`].
    pub fn for_this_process(
        edge: &EdgeArgs,
        outbound_per_request: u32,
    ) -> Result<Self, LimitsError> {
        Self::derive(edge, fd_limit(), outbound_per_request).map_err(LimitsError)
    }

    /// `--max-connections` and `--max-in-flight`, kept coherent: the in-flight limit never
    /// above the connection limit, and both lowered together to fit the open-files limit
    /// `fd_limit` less [`RESERVED_FDS`], where each request in flight may also hold
    /// `outbound_per_request` connections of its own. Lowered, a third of the descriptors
    /// left (B) or a half (A) go to in-flight places and the rest to connections, so
    /// connections always outnumber places and a new one finds room. Refused, naming the
    /// limit, when it leaves fewer than [`MIN_CONNECTIONS`] or [`MIN_IN_FLIGHT`].
    fn derive(
        edge: &EdgeArgs,
        fd_limit: Option<u64>,
        outbound_per_request: u32,
    ) -> Result<Self, String> {
        let outbound = u64::from(outbound_per_request);
        let connections = u64::from(edge.max_connections);
        let in_flight = u64::from(edge.max_in_flight).min(connections);
        let configured = if in_flight < u64::from(edge.max_in_flight) {
            "as configured, --max-in-flight lowered to --max-connections"
        } else {
            "as configured"
        };
        let as_configured = Self {
            max_connections: connections,
            max_in_flight: in_flight,
            why: configured.to_owned(),
        };
        let Some(limit) = fd_limit else {
            return Ok(as_configured);
        };
        let budget = limit.saturating_sub(RESERVED_FDS);
        if connections + in_flight * outbound <= budget {
            return Ok(as_configured);
        }
        let workable = |budget| {
            let (c, f) = Self::shared_out(connections, in_flight, budget, outbound);
            (c >= MIN_CONNECTIONS && f >= MIN_IN_FLIGHT).then_some((c, f))
        };
        let Some((max_connections, max_in_flight)) = workable(budget) else {
            // The least limit that works (what was asked for always does).
            let needed = (budget..=connections + in_flight * outbound)
                .find(|more| workable(*more).is_some())
                .map_or(limit, |budget| budget + RESERVED_FDS);
            let onwards = if outbound > 0 {
                " each with its own connection onwards"
            } else {
                ""
            };
            return Err(format!(
                "the open-files limit (ulimit -n) is {limit}: too low to serve, at least \
                 {needed} needed ({RESERVED_FDS} for the process, {MIN_CONNECTIONS} \
                 connections, {MIN_IN_FLIGHT} requests in flight{onwards}); raise it, e.g. \
                 ulimit -n 1024"
            ));
        };
        let onwards = if outbound > 0 {
            format!(", {} for connections onwards", max_in_flight * outbound)
        } else {
            String::new()
        };
        Ok(Self {
            max_connections,
            max_in_flight,
            why: format!(
                "lowered to fit the open-files limit of {limit}: {RESERVED_FDS} kept for the \
                 process{onwards}"
            ),
        })
    }

    /// `budget` descriptors shared out between connections and in-flight places (see
    /// [`Self::derive`]), neither above what was asked.
    fn shared_out(connections: u64, in_flight: u64, budget: u64, outbound: u64) -> (u64, u64) {
        let in_flight = in_flight.min(budget / (2 + outbound));
        let connections = connections.min(budget.saturating_sub(in_flight * outbound));
        (connections, in_flight)
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux; `None` elsewhere).
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (max_connections, max_in_flight) for the default flags at `fd_limit`, for A (no
    /// connections onwards) and B (one per request in flight).
    fn derived(fd_limit: Option<u64>, outbound: u32) -> Result<(u64, u64), String> {
        ConnectionLimits::derive(&EdgeArgs::default(), fd_limit, outbound)
            .map(|l| (l.max_connections, l.max_in_flight))
    }

    #[test]
    fn limits_fit_the_descriptors_and_stay_coherent() {
        // Room enough: as configured.
        assert_eq!(derived(None, 1), Ok((1024, 512)));
        assert_eq!(derived(Some(20_000), 1), Ok((1024, 512)));
        assert_eq!(
            derived(Some(1024 + 64), 0),
            Ok((1024, 512)),
            "A needs no room onwards"
        );
        // systemd's default soft limit: both lowered, connections above places.
        assert_eq!(derived(Some(1024), 0), Ok((960, 480)));
        assert_eq!(derived(Some(1024), 1), Ok((640, 320)));
        // A small limit still works.
        assert_eq!(derived(Some(256), 0), Ok((192, 96)));
        assert_eq!(derived(Some(256), 1), Ok((128, 64)));
        for fd_limit in (0..100_000).step_by(7) {
            for outbound in [0, 1, 2] {
                if let Ok((connections, in_flight)) = derived(Some(fd_limit), outbound) {
                    assert!(in_flight <= connections, "{fd_limit}, {outbound}");
                    assert!(connections >= MIN_CONNECTIONS && in_flight >= MIN_IN_FLIGHT);
                    assert!(
                        connections + in_flight * u64::from(outbound) + RESERVED_FDS <= fd_limit,
                        "{fd_limit}, {outbound}: over the limit"
                    );
                }
            }
        }
    }

    #[test]
    fn a_limit_too_low_to_work_is_refused_by_name() {
        let refusal = derived(Some(64), 1).expect_err("refused");
        assert!(
            refusal.contains("open-files limit (ulimit -n) is 64"),
            "{refusal}"
        );
        assert!(refusal.contains("at least 111 needed"), "{refusal}");
        assert!(derived(Some(110), 1).is_err());
        assert!(derived(Some(111), 1).is_ok());
        assert!(derived(Some(95), 0).is_err());
        assert!(derived(Some(96), 0).is_ok());
    }

    #[test]
    fn in_flight_never_exceeds_connections() {
        let edge = EdgeArgs {
            max_connections: 100,
            max_in_flight: 512,
            ..EdgeArgs::default()
        };
        let limits = ConnectionLimits::derive(&edge, None, 1).expect("works");
        assert_eq!((limits.max_connections, limits.max_in_flight), (100, 100));
        assert!(limits.why.contains("lowered"), "{}", limits.why);
    }

    #[test]
    fn the_fd_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(fd_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn edge_defaults_match_the_flags() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            edge: EdgeArgs,
        }
        let cli = Cli::try_parse_from(["x"]).expect("defaults parse");
        assert_eq!(cli.edge, EdgeArgs::default());
        assert!(Cli::try_parse_from(["x", "--max-header-bytes", "10"]).is_err());
    }
}
