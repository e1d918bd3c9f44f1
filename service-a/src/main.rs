//! Service A's binary: read the configuration, start telemetry, serve until SIGTERM/Ctrl-C.

use clap::Parser as _;
use service_a::{SERVICE_NAME, config::Config, startup::Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if config.serve.healthcheck {
        return telemetry::health::probe_exit_code(config.serve.listen);
    }
    let telemetry = match telemetry::init(SERVICE_NAME, &config.telemetry, &[]) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{SERVICE_NAME}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match Application::build(config, telemetry.metrics.clone()).await {
        Ok(app) => app.run_until_stopped(telemetry::server::signal()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        tracing::error!(event = "fatal", error = %e);
    }
    telemetry.shutdown().await;
    if outcome.is_ok() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
