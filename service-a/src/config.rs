//! Service A's settings: each flag has an environment fallback and a documented default;
//! `service-a --help` prints them all.

use std::path::PathBuf;

/// Service A, the provider: issues deterministic tokens for valid credentials.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "service-a", version, about, long_about = None)]
pub struct Config {
    /// Where to listen, and the health probe.
    #[command(flatten)]
    pub serve: telemetry::edge::ListenArgs<8080>,

    /// File of extra users, one `username:password` per line (blank lines and lines starting
    /// with `#` are skipped). They are added to the demo user divya / pass123.
    #[arg(long, env = "USERS_FILE")]
    pub users_file: Option<PathBuf>,

    /// Leave out the demo user divya / pass123 (then only --users-file users exist).
    #[arg(long, env = "NO_DEMO_USER")]
    pub no_demo_user: bool,

    /// Largest `delay_ms` a caller may ask for, in milliseconds. Larger values get 400, so a
    /// caller cannot hold a connection open for long.
    #[arg(long, env = "MAX_DELAY_MS", default_value_t = 5000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(0, 3_600_000), allow_negative_numbers = true)]
    pub max_delay_ms: u64,

    /// Teaching knob, off by default: latency added to every token request, in
    /// milliseconds, on top of any delay_ms (a provider that is slow for everyone).
    #[arg(long, env = "EXTRA_LATENCY_MS", default_value_t = 0,
          value_parser = telemetry::edge::parse_whole_in::<u64>(0, 600_000), allow_negative_numbers = true)]
    pub extra_latency_ms: u64,

    /// Teaching knob, off by default: share of token requests (0.0–1.0) answered with an
    /// injected 503, to act like a flaky provider.
    #[arg(long, env = "FAILURE_RATE", default_value_t = 0.0,
          value_parser = telemetry::edge::parse_share, allow_negative_numbers = true)]
    pub failure_rate: f64,

    /// Teaching knob, off by default: a lab's fault from the start, as the fault endpoint's
    /// JSON, e.g. '{"scenario":"a-slow","extra_latency_ms":300}' (how the labs break the
    /// compose stack, whose fault endpoints are out of reach). Empty: none.
    #[arg(long, env = "A_FAULT", value_parser = crate::faults::parse_fault)]
    pub fault: Option<crate::faults::StartupFault>,

    /// Teaching knob, off by default: honour a token request's "fail_status": 500–599 (A
    /// answers that 5xx instead of a token). Off, such a request gets 400: otherwise any
    /// caller could make A fail at will.
    #[arg(long, env = "ALLOW_FAIL_STATUS")]
    pub allow_fail_status: bool,

    /// Teaching knob, off by default: also listen on this loopback address (e.g.
    /// 127.0.0.1:9180) for `PUT`/`DELETE /faults`, which switch faults on and off at run time
    /// (the labs use it). Never part of A's API; refused on any other address.
    #[arg(long, env = "A_FAULT_LISTEN_ADDR", value_parser = telemetry::edge::parse_listen)]
    pub fault_listen: Option<std::net::SocketAddr>,

    /// Failed logins for one username within --login-failure-window-ms after which that
    /// username gets 429 with Retry-After until the window frees up. 0 turns it off.
    #[arg(long, env = "MAX_LOGIN_FAILURES", default_value_t = 10,
          value_parser = telemetry::edge::parse_whole_in::<u32>(0, 100_000), allow_negative_numbers = true)]
    pub max_login_failures: u32,

    /// The window over which failed logins are counted, in milliseconds.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_MS", default_value_t = 60_000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(10, 86_400_000), allow_negative_numbers = true)]
    pub login_failure_window_ms: u64,

    /// Connection limits, timeouts and the shutdown grace, shared with the other service.
    #[command(flatten)]
    pub edge: telemetry::edge::EdgeArgs,

    /// Telemetry settings, shared with the other service.
    #[command(flatten)]
    pub telemetry: telemetry::TelemetryArgs,
}

impl Config {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn defaults_match_the_lab() {
        let config = Config::try_parse_from(["service-a"]).expect("defaults parse");
        assert_eq!(config.serve.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.max_delay_ms, 5000);
        assert!(!config.no_demo_user);
        assert_eq!(
            (config.extra_latency_ms, config.failure_rate),
            (0, 0.0),
            "faults off"
        );
        assert_eq!(config.max_login_failures, 10);
    }

    #[test]
    fn failure_rate_must_be_a_share() {
        assert!(Config::try_parse_from(["service-a", "--failure-rate", "0.5"]).is_ok());
        assert!(Config::try_parse_from(["service-a", "--failure-rate", "1.5"]).is_err());
        assert!(Config::try_parse_from(["service-a", "--failure-rate", "-0.1"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        <Config as clap::CommandFactory>::command().debug_assert();
    }
}
