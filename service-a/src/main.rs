//! Service A's binary: read the configuration, then serve with telemetry until SIGTERM/Ctrl-C.

use clap::Parser as _;
use service_a::{SERVICE_NAME, config::Config, startup::Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if config.serve.healthcheck {
        return telemetry::edge::probe_exit_code(config.serve.listen);
    }
    let args = config.telemetry.clone();
    telemetry::run(SERVICE_NAME, &args, &[], |metrics| async move {
        Application::build(config, metrics)
            .await?
            .run_until_stopped(telemetry::edge::signal())
            .await
    })
    .await
}
