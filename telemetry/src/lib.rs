//! What service A and service B share, written once. Two parts, each with one entry point:
//!
//! - [`observe`]: **what happens is seen**. JSON log lines, request ids, one server span
//!   and one set of metric samples per request, traces joined across services and exported
//!   over OTLP, `/metrics` in three formats, and the count of everything telemetry itself
//!   lost. A service calls [`run`], which starts it, and gets its [`observe::Settings`].
//! - [`edge`]: **what comes in is bounded**. The HTTP/1.1 server every request arrives
//!   through, with every quantity a client controls limited, the protections as one layer
//!   it owns, JSON errors for every bad input, the operational routes (`/health`,
//!   `/metrics`, `/openapi.json`), flag parsers, and graceful shutdown on a signal.
//!
//! The edge observes every request it serves through [`observe`]; [`observe`] knows nothing
//! of the edge. [`faults`] holds the labs' ways to break a service, which it adds only
//! when asked to (`--fault-listen`, `--fault`); [`service`] is the shape both services
//! start in (bind, then serve, with the lab when asked: [`service::Application`]);
//! [`around`] is the one shape of a layer around each request; [`window`] the sliding
//! window every protection counts in. Nothing here knows which service it runs in beyond
//! the name it is given. docs/layout.md names every file.
//!
//! "The lab" in comments is the walkthrough the README shows with this implementation's real
//! output (README.md, "The walkthrough"): its bodies, statuses, log lines and timings.

pub mod around;
pub mod edge;
pub mod faults;
pub mod observe;
pub mod service;
pub mod window;

pub use observe::{RequestId, TelemetryArgs};

/// A service's whole life after its flags are read: start telemetry (see [`observe::init`]),
/// run `serve` with the service's observation settings until it returns (it serves until
/// SIGTERM/Ctrl-C and drains), log a fatal error if it failed, flush logs and spans, and
/// say how to exit.
/// Both services' `main` is this call.
pub async fn run<F, Fut, E>(
    service: &'static str,
    args: &TelemetryArgs,
    timeouts: &[std::time::Duration],
    serve: F,
) -> std::process::ExitCode
where
    F: FnOnce(observe::Settings) -> Fut,
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
    let outcome = serve(telemetry.settings.clone()).await;
    if let Err(e) = &outcome {
        crate::event!(ERROR, "fatal", error = %e);
    }
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, in every folder.
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("a source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                found.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
        found
    }

    /// The direction of the two parts: the edge uses observe, observe names nothing of the
    /// edge (two folders of one crate, so this test is what holds it).
    #[test]
    fn observe_names_nothing_of_the_edge() {
        let files = rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/observe"));
        for path in &files {
            let text = std::fs::read_to_string(path).expect("source");
            for (n, line) in text.lines().enumerate() {
                assert!(
                    !line.contains("crate::edge") && !line.contains("super::super::edge"),
                    "{}:{}: observe names the edge: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        assert!(files.len() >= 10, "read observe's files: {}", files.len());
    }

    /// `event!` is the way to name an event (see its docs): no raw `tracing` event with an
    /// `event` field anywhere in this crate or the two services.
    #[test]
    fn every_named_event_is_named_with_the_macro() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Written in two parts, so that this test does not find itself.
        let field = ["event", " ="].concat();
        let first_field = format!("({field}");
        let mut read = 0;
        for src in ["src", "../service-a/src", "../service-b/src"] {
            for path in rust_files(&root.join(src)) {
                let text = std::fs::read_to_string(&path).expect("source");
                read += 1;
                for (n, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    let raw = !code.starts_with("//")
                        && !code.contains("$name")
                        && (code.starts_with(&field) || code.contains(&first_field));
                    assert!(
                        !raw,
                        "{}:{}: an event named without telemetry::event!: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        assert!(read >= 60, "read the sources: {read}");
    }
}
