//! What service A and service B share, written once. Two parts, each with one entry point:
//!
//! - [`observe`]: **what happens is seen**. JSON log lines, request ids, one server span
//!   and one set of metric samples per request, traces joined across services and exported
//!   over OTLP, `/metrics` in three formats, and the count of everything telemetry itself
//!   lost. A service calls [`run`], which starts it, and gets its [`observe::Metrics`].
//! - [`edge`]: **what comes in is bounded**. The HTTP/1.1 server every request arrives
//!   through, with every quantity a client controls limited, the protections as one layer
//!   it owns, JSON errors for every bad input, the operational routes (`/health`,
//!   `/metrics`, `/openapi.json`), flag parsers, and graceful shutdown on a signal.
//!
//! The edge observes every request it serves through [`observe`]; [`observe`] knows nothing
//! of the edge. [`faults`] holds the labs' ways to break a service, which it adds only
//! when asked to (`--fault-listen`, `--fault`); [`service`] is the shape both services
//! start in (bind, then serve, with the lab when asked). Nothing here knows which service it runs in beyond the
//! name it is given.
//!
//! "The lab" in comments is the walkthrough the README shows with this implementation's real
//! output (README.md, "The walkthrough"): its bodies, statuses, log lines and timings.

pub mod edge;
pub mod faults;
pub mod observe;
pub mod service;

pub use observe::{RequestId, TelemetryArgs};

/// A service's whole life after its flags are read: start telemetry (see [`init`]), run
/// `serve` with the process's metrics until it returns (it serves until SIGTERM/Ctrl-C and
/// drains), log a fatal error if it failed, flush logs and spans, and say how to exit.
/// Both services' `main` is this call.
pub async fn run<F, Fut, E>(
    service: &'static str,
    args: &TelemetryArgs,
    timeouts: &[std::time::Duration],
    serve: F,
) -> std::process::ExitCode
where
    F: FnOnce(observe::Metrics) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let telemetry = match observe::init(service, args, timeouts) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{service}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = serve(telemetry.metrics.clone()).await;
    if let Err(e) = &outcome {
        tracing::error!(event = "fatal", error = %e);
    }
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    /// The direction of the two parts: the edge uses observe, observe names nothing of the
    /// edge (two folders of one crate, so this test is what holds it).
    #[test]
    fn observe_names_nothing_of_the_edge() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/observe");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("src/observe") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("source");
            read += 1;
            for (n, line) in text.lines().enumerate() {
                assert!(
                    !line.contains("crate::edge") && !line.contains("super::super::edge"),
                    "{}:{}: observe names the edge: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        assert!(read >= 10, "read observe's files: {read}");
    }
}
