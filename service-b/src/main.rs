//! Service B's binary: read the configuration, then serve with telemetry until SIGTERM/Ctrl-C.

use clap::Parser as _;
use service_b::{SERVICE_NAME, config::Config, startup::Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if config.serve.healthcheck {
        return telemetry::edge::probe_exit_code(config.serve.listen);
    }
    // B's own timeouts get histogram bucket boundaries of their own.
    let timeouts = [
        config.provider.provider_timeout(),
        config.provider.provider_deadline(),
    ];
    let args = config.telemetry.clone();
    telemetry::run(SERVICE_NAME, &args, &timeouts, |metrics| async move {
        Application::build(config, metrics)
            .await?
            .run_until_stopped(telemetry::edge::signal())
            .await
    })
    .await
}
