//! Service B's settings: each flag has an environment fallback and a documented default;
//! `service-b --help` prints them all.
//!
//! # How long a failing call to A can take
//!
//! Every attempt is cut off after `--provider-timeout-ms`. Before retry *n* (counting from 0)
//! B waits a random time between `min / 2` and `min(max, min × 2ⁿ)`, where min and max are
//! `--retry-backoff-min-ms` and `--retry-backoff-max-ms`. With the defaults:
//!
//! ```text
//! worst case = attempts × timeout + backoff before retry 0
//!            = 2 × 1000 ms      + 10 ms                 = 2010 ms
//! ```
//!
//! which is the lab's "503 after about 2.01 s with two logged timeouts". With A down, both
//! connects are refused at once and the 503 takes about the backoff alone (5–10 ms).
//!
//! On top of that, `--provider-deadline-ms` bounds the whole call (default: the worst case
//! plus 40 ms, 2050 ms): no attempt starts after it, and each attempt's timeout is the lesser
//! of `--provider-timeout-ms` and what remains. So the defaults change nothing in the lab's
//! figures, while a slower backoff or more attempts can never stretch a call past it.

use std::time::Duration;

use reqwest::Url;

/// B's default `--max-in-flight` (A's is 512): see [`Config`].
pub const MAX_IN_FLIGHT: &str = "256";

/// Service B, the consumer: calls service A with a per-attempt timeout and retries.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "service-b", version, about, long_about = None)]
// B's default in-flight limit is half A's: each request B holds also holds a call to A
// (its connection, buffers and span), about 85 KB more, and 512 of them at once took B past
// the 64 MiB its deployments give it (docs/limits.md, "At the connection edge").
#[command(mut_arg("max_in_flight", |arg| arg.default_value(MAX_IN_FLIGHT)))]
pub struct Config {
    /// Where to listen, and the health probe.
    #[command(flatten)]
    pub serve: telemetry::edge::ListenArgs<8081>,

    /// How B calls A: URL, timeouts, retries, budget, breaker, pool.
    #[command(flatten)]
    pub provider: ProviderConfig,

    /// Teaching knob, off by default: also listen on this loopback address (e.g.
    /// 127.0.0.1:9181) for `PUT`/`DELETE /faults`, which switch faults on and off at run time
    /// (the labs use it). Never part of B's API; refused on any other address.
    #[arg(long, env = "B_FAULT_LISTEN_ADDR", value_parser = telemetry::edge::parse_listen)]
    pub fault_listen: Option<std::net::SocketAddr>,

    /// Teaching knob, off by default: a lab's fault from the start, as the fault endpoint's
    /// JSON, e.g. '{"scenario":"b-misconfigured","provider_timeout_ms":25}' (how the labs
    /// break the compose stack). Empty: none.
    #[arg(long, env = "B_FAULT", value_parser = crate::faults::parse_fault)]
    pub fault: Option<crate::faults::StartupFault>,

    /// Largest `delay_ms` B passes on to A, in milliseconds; a larger one gets 400 from B
    /// itself. The same variable as A's ceiling, so one setting bounds both.
    #[arg(long, env = "MAX_DELAY_MS", default_value_t = 5000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(0, 3_600_000), allow_negative_numbers = true)]
    pub max_delay_ms: u64,

    /// Connection limits, timeouts and the shutdown grace, shared with the other service.
    #[command(flatten)]
    pub edge: telemetry::edge::EdgeArgs,

    /// Telemetry settings, shared with the other service.
    #[command(flatten)]
    pub telemetry: telemetry::TelemetryArgs,
}

/// How B calls A: everything the client for A needs, and nothing else (see
/// [`crate::provider::Provider::start`]). Its flags are part of `service-b --help`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProviderConfig {
    /// Base URL of service A (plain http), or several separated by commas, one per replica.
    /// B calls `<provider-url>/token` on one of them per attempt. A host name (other than
    /// localhost) is as many endpoints as it has addresses, resolved again every
    /// --provider-resolve-interval-ms (a Kubernetes headless Service, compose's service name).
    #[arg(long, env = "PROVIDER_URL", default_value = "http://127.0.0.1:8080",
          value_parser = parse_provider_urls)]
    pub provider_url: ProviderUrls,

    /// How often host names in --provider-url are resolved again, in milliseconds, so
    /// replicas of A that come and go are found without a restart.
    #[arg(long, env = "PROVIDER_RESOLVE_INTERVAL_MS", default_value_t = 5000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(100, 3_600_000), allow_negative_numbers = true)]
    pub provider_resolve_interval_ms: u64,

    /// The DNS server (IP:PORT) that resolves host names in --provider-url, asked directly;
    /// unset: the system's resolver (which also reads /etc/hosts and the search domains).
    #[arg(long, env = "PROVIDER_DNS", value_parser = parse_dns_server)]
    pub provider_dns: Option<std::net::SocketAddr>,

    /// Timeout of each attempt to call A, in milliseconds (connect, send and read the whole
    /// answer). The lab's "strict 1 s timeout".
    #[arg(long, env = "PROVIDER_TIMEOUT_MS", default_value_t = 1000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(1, 60_000), allow_negative_numbers = true)]
    pub provider_timeout_ms: u64,

    /// Attempts in total per request (1 means no retry). Timeouts, refused or reset
    /// connections and 5xx answers are retried; A's 4xx answers never are.
    #[arg(long, env = "PROVIDER_ATTEMPTS", default_value_t = 2,
          value_parser = telemetry::edge::parse_whole_in::<u32>(1, 10), allow_negative_numbers = true)]
    pub provider_attempts: u32,

    /// Base of the wait before a retry, in milliseconds. The wait before retry n (from 0) is
    /// jittered between half of this and min(max, this × 2ⁿ): 5–10 ms with the defaults.
    #[arg(long, env = "RETRY_BACKOFF_MIN_MS", default_value_t = 10,
          value_parser = telemetry::edge::parse_whole_in::<u64>(0, 60_000), allow_negative_numbers = true)]
    pub retry_backoff_min_ms: u64,

    /// Upper bound of the wait before a retry, in milliseconds (raised to the base if lower).
    #[arg(long, env = "RETRY_BACKOFF_MAX_MS", default_value_t = 50,
          value_parser = telemetry::edge::parse_whole_in::<u64>(0, 60_000), allow_negative_numbers = true)]
    pub retry_backoff_max_ms: u64,

    /// Deadline over all attempts of one call to A, in milliseconds. Default: the worst case
    /// of the settings above plus 40 ms (2050 ms with the defaults). B tells A how long it
    /// will wait (header x-request-timeout-ms), so A can stop work nobody waits for.
    #[arg(long, env = "PROVIDER_DEADLINE_MS",
          value_parser = telemetry::edge::parse_whole_in::<u64>(1, 600_000), allow_negative_numbers = true)]
    pub provider_deadline_ms: Option<u64>,

    /// Retries may add at most this share of calls (0.0–1.0; 0.2: 20%), over a 10 s
    /// window...
    #[arg(long, env = "RETRY_BUDGET_RATIO", default_value_t = 0.2,
          value_parser = telemetry::edge::parse_share, allow_negative_numbers = true)]
    pub retry_budget_ratio: f64,

    /// ...plus this many retries per second whatever the traffic, so a single call still
    /// retries. When the budget is spent, failed attempts are not retried
    /// (`provider_gave_up` with reason `retry_budget_exhausted` in the log).
    #[arg(long, env = "RETRY_BUDGET_MIN_PER_SEC", default_value_t = 1.0,
          value_parser = telemetry::edge::non_negative, allow_negative_numbers = true)]
    pub retry_budget_min_per_sec: f64,

    /// Failed calls in a row (every attempt failed) that open the breaker when nothing in
    /// --breaker-window-ms succeeded: B then stops calling A for --breaker-cooldown-ms and
    /// answers 503 at once. 0 turns the breaker off.
    #[arg(long, env = "BREAKER_THRESHOLD", default_value_t = 5,
          value_parser = telemetry::edge::parse_whole_in::<u32>(0, 10_000), allow_negative_numbers = true)]
    pub breaker_threshold: u32,

    /// Share of failed calls over --breaker-window-ms (0.0–1.0) that opens the breaker once
    /// at least --breaker-min-calls calls were made in it. Well above one half: a provider
    /// failing half its answers fails about 40% of B's calls (some are retried), and over a
    /// few dozen calls chance alone often lifts that to 50%; it must not look dead.
    #[arg(long, env = "BREAKER_FAILURE_RATE", default_value_t = 0.8,
          value_parser = telemetry::edge::parse_share, allow_negative_numbers = true)]
    pub breaker_failure_rate: f64,

    /// Calls in --breaker-window-ms before the failure rate can open the breaker.
    #[arg(long, env = "BREAKER_MIN_CALLS", default_value_t = 20,
          value_parser = telemetry::edge::parse_whole_in::<u32>(1, 1_000_000), allow_negative_numbers = true)]
    pub breaker_min_calls: u32,

    /// The sliding window the breaker measures calls over, in milliseconds.
    #[arg(long, env = "BREAKER_WINDOW_MS", default_value_t = 10_000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(10, 3_600_000), allow_negative_numbers = true)]
    pub breaker_window_ms: u64,

    /// How long the open breaker refuses calls before letting one probe through, in ms.
    #[arg(long, env = "BREAKER_COOLDOWN_MS", default_value_t = 1000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub breaker_cooldown_ms: u64,

    /// With two or more endpoints of A: failed attempts in a row (timeouts, broken
    /// connections, 5xx) that take an endpoint out of the choice for a while (outlier
    /// ejection; a refused connection takes it out at once, until it answers a probe of
    /// /health). 0 turns ejection off.
    #[arg(long, env = "EJECT_AFTER_FAILURES", default_value_t = 5,
          value_parser = telemetry::edge::parse_whole_in::<u32>(0, 10_000), allow_negative_numbers = true)]
    pub eject_after_failures: u32,

    /// With two or more endpoints: the share (0.0–1.0) of an endpoint's attempts over the
    /// last 10 s (at least 10 of them) that failed, at which it is taken out of the choice.
    #[arg(long, env = "EJECT_FAILURE_RATE", default_value_t = 0.5,
          value_parser = telemetry::edge::parse_share, allow_negative_numbers = true)]
    pub eject_failure_rate: f64,

    /// How long an endpoint is out the first time, in milliseconds; each ejection in a row
    /// lasts twice as long, at most --eject-max-ms.
    #[arg(long, env = "EJECT_BASE_MS", default_value_t = 1000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub eject_base_ms: u64,

    /// The longest one ejection lasts, in milliseconds: a replica that recovered serves again
    /// within it.
    #[arg(long, env = "EJECT_MAX_MS", default_value_t = 8000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub eject_max_ms: u64,

    /// Most endpoints out of the choice at once, in percent of those known (at least one of
    /// two or more, never all).
    #[arg(long, env = "MAX_EJECTION_PERCENT", default_value_t = 50,
          value_parser = telemetry::edge::parse_whole_in::<u32>(0, 100), allow_negative_numbers = true)]
    pub max_ejection_percent: u32,

    /// How long an idle pooled connection to A is kept, in milliseconds. Keep it below A's
    /// (or a proxy's) idle keep-alive timeout, so B never reuses a connection A has closed.
    #[arg(long, env = "POOL_IDLE_TIMEOUT_MS", default_value_t = 15_000,
          value_parser = telemetry::edge::parse_whole_in::<u64>(1, 3_600_000), allow_negative_numbers = true)]
    pub pool_idle_timeout_ms: u64,
}

/// Added to the worst case to make the default deadline: room for the scheduling noise of a
/// busy machine, so the deadline never cuts short an attempt the timeout would have allowed.
const DEADLINE_MARGIN: Duration = Duration::from_millis(40);

/// `--provider-url`: one base URL of A or more, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrls(pub Vec<Url>);

impl std::fmt::Display for ProviderUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.0.iter().map(Url::as_str).collect();
        f.write_str(&urls.join(","))
    }
}

/// One `http://` URL with a host, or several separated by commas: none empty, none twice.
fn parse_provider_urls(text: &str) -> Result<ProviderUrls, String> {
    if text.trim().is_empty() {
        return Err("expected an http:// URL with a host, or several separated by commas".into());
    }
    let mut urls: Vec<Url> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!("an empty entry in the list {text:?}"));
        }
        let url = parse_provider_url(entry)?;
        if urls.contains(&url) {
            return Err(format!("{url} is in the list twice"));
        }
        urls.push(url);
    }
    Ok(ProviderUrls(urls))
}

/// A DNS server's `IP:PORT`.
fn parse_dns_server(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected a DNS server's IP:PORT, e.g. 10.96.0.10:53".to_owned())
}

/// An `http://` URL with a host. TLS is not built in: between two services on one host or
/// one cluster network, plain HTTP keeps the example small; put TLS in a mesh or proxy.
fn parse_provider_url(text: &str) -> Result<Url, String> {
    let expected = "expected an http:// URL with a host, e.g. http://127.0.0.1:8080";
    let url = match Url::parse(text) {
        Ok(url) => url,
        // "127.0.0.1:8080" parses as a relative URL, "localhost:8080" as scheme "localhost":
        // both are a host and port the user meant as http://host:port.
        Err(_) if !text.contains("://") => {
            return Err(format!("{expected}; did you mean http://{text}?"));
        }
        Err(e) => return Err(format!("{e}; {expected}")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        // A takes no credentials in its URL, and a URL's user and password would be
        // written wherever the URL is (B's `listening` line): refused rather than hidden.
        return Err("a user or password in the URL is not supported: A takes none".into());
    }
    if url.scheme() != "http" || url.host().is_none() {
        if !text.contains("://") {
            return Err(format!("{expected}; did you mean http://{text}?"));
        }
        return Err(expected.into());
    }
    Ok(url)
}

impl ProviderConfig {
    /// Timeout of one attempt.
    pub fn provider_timeout(&self) -> Duration {
        Duration::from_millis(self.provider_timeout_ms)
    }

    /// Bounds of the wait between attempts, `min <= max`.
    pub fn retry_backoff(&self) -> (Duration, Duration) {
        let min = self.retry_backoff_min_ms;
        let max = self.retry_backoff_max_ms.max(min);
        (Duration::from_millis(min), Duration::from_millis(max))
    }

    /// The longest a call to A can take with these settings (see the module docs).
    pub fn worst_case_call(&self) -> Duration {
        let (min, max) = self.retry_backoff();
        let backoff: Duration = (0..self.provider_attempts.saturating_sub(1))
            .map(|n| max.min(min.saturating_mul(2u32.saturating_pow(n))))
            .sum();
        self.provider_timeout() * self.provider_attempts + backoff
    }

    /// When the circuit breaker opens, and for how long.
    pub fn breaker_policy(&self) -> crate::resilience::BreakerPolicy {
        crate::resilience::BreakerPolicy {
            consecutive: self.breaker_threshold,
            failure_rate: self.breaker_failure_rate,
            min_calls: self.breaker_min_calls,
            window: Duration::from_millis(self.breaker_window_ms),
            cooldown: Duration::from_millis(self.breaker_cooldown_ms),
        }
    }

    /// How the fleet of A's endpoints is found and judged (see `crate::fleet`).
    pub fn fleet_settings(&self) -> crate::fleet::Settings {
        crate::fleet::Settings {
            urls: self.provider_url.0.clone(),
            resolve_interval: Duration::from_millis(self.provider_resolve_interval_ms),
            resolver: match self.provider_dns {
                Some(server) => crate::fleet::discovery::Resolver::Dns(server),
                None => crate::fleet::discovery::Resolver::System,
            },
            ejection: crate::fleet::ejection::EjectionPolicy {
                consecutive: self.eject_after_failures,
                failure_rate: self.eject_failure_rate,
                base: Duration::from_millis(self.eject_base_ms),
                max: Duration::from_millis(self.eject_max_ms.max(self.eject_base_ms)),
                max_percent: self.max_ejection_percent,
            },
        }
    }

    /// The deadline over all attempts (see the module docs).
    pub fn provider_deadline(&self) -> Duration {
        self.provider_deadline_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.worst_case_call() + DEADLINE_MARGIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn defaults_reproduce_the_labs_timing() {
        let config = Config::try_parse_from(["service-b"]).expect("defaults parse");
        assert_eq!(
            config.provider.provider_url.to_string(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(config.provider.provider_timeout(), Duration::from_secs(1));
        assert_eq!(config.provider.provider_attempts, 2);
        assert_eq!(
            config.provider.worst_case_call(),
            Duration::from_millis(2010)
        );
        assert_eq!(
            config.provider.provider_deadline(),
            Duration::from_millis(2050)
        );
        assert_eq!(config.provider.breaker_threshold, 5);
        assert_eq!(
            (
                config.provider.breaker_failure_rate,
                config.provider.breaker_min_calls
            ),
            (0.8, 20)
        );
    }

    #[test]
    fn backoff_is_capped_by_the_maximum() {
        let config = Config::try_parse_from([
            "service-b",
            "--provider-attempts=4",
            "--retry-backoff-min-ms=20",
            "--retry-backoff-max-ms=30",
        ])
        .expect("parses");
        // 4 × 1000 + 20 + min(30, 40) + min(30, 80)
        assert_eq!(
            config.provider.worst_case_call(),
            Duration::from_millis(4080)
        );
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(Config::try_parse_from(["service-b", "--provider-attempts=0"]).is_err());
        assert!(Config::try_parse_from(["service-b", "--provider-timeout-ms=0"]).is_err());
        assert!(Config::try_parse_from(["service-b", "--provider-url=not a url"]).is_err());
        assert!(Config::try_parse_from(["service-b", "--provider-url=https://a:1"]).is_err());
        assert!(Config::try_parse_from(["service-b", "--provider-url=mailto:x@y"]).is_err());
    }

    /// The error text a user sees for `service-b <args>`.
    fn refusal(args: &[&str]) -> String {
        let mut argv = vec!["service-b"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn refusals_teach() {
        // Negative numbers reach the range check instead of looking like flags.
        let negative = refusal(&["--provider-timeout-ms", "-5"]);
        assert!(negative.contains("from 1 to 60000"), "{negative}");
        let share = refusal(&["--breaker-failure-rate", "-0.1"]);
        assert!(
            share.contains("0.0 to 1.0") || share.contains("0 to 1"),
            "{share}"
        );
        let ratio = refusal(&["--retry-budget-ratio", "2"]);
        assert!(ratio.contains("--retry-budget-ratio"), "{ratio}");
        let rate = refusal(&["--retry-budget-min-per-sec", "-1"]);
        assert!(rate.contains("at least 0"), "{rate}");
        // A host and port without a scheme gets the fix spelled out.
        for bare in ["127.0.0.1:8080", "localhost:8080"] {
            let hint = refusal(&["--provider-url", bare]);
            assert!(
                hint.contains(&format!("did you mean http://{bare}?")),
                "{hint}"
            );
        }
        let listen = Config::try_parse_from(["service-b", "--listen", "localhost:9"]).expect("ok");
        assert_eq!(listen.serve.listen, "127.0.0.1:9".parse().expect("addr"));
        assert!(refusal(&["--listen", "8081"]).contains("localhost:PORT"));
    }

    #[test]
    fn a_list_of_urls_is_several_endpoints_and_bad_lists_are_refused_by_name() {
        let config = Config::try_parse_from([
            "service-b",
            "--provider-url",
            "http://127.0.0.1:8080, http://127.0.0.1:8082,http://a:9000/x",
        ])
        .expect("a list");
        assert_eq!(
            config.provider.provider_url.to_string(),
            "http://127.0.0.1:8080/,http://127.0.0.1:8082/,http://a:9000/x"
        );
        for (list, says) in [
            ("", "at least one"),
            ("http://a:1,,http://b:1", "an empty entry"),
            ("http://a:1,http://a:1/", "twice"),
            ("http://a:1,https://b:1", "expected an http:// URL"),
            ("http://a:1,b:1", "did you mean http://b:1?"),
            ("http://user:secret@a:1", "a user or password"),
        ] {
            let refused = refusal(&["--provider-url", list]);
            assert!(refused.contains("--provider-url"), "{refused}");
            assert!(
                refused.contains(says) || (says == "at least one" && refused.contains("several")),
                "{list}: {refused}"
            );
        }
        assert!(refusal(&["--provider-dns", "dns.example"]).contains("IP:PORT"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        <Config as clap::CommandFactory>::command().debug_assert();
    }
}
