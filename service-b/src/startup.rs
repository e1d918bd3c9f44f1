//! Builds service B from its configuration: the client for A, bind, then the routes over
//! its state, ready to serve until told to stop (and drain).
//! B starts whether or not A is up: it learns about A one request at a time.

use crate::config::Config;
use crate::provider::Provider;
use crate::routes::{AppState, router};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The HTTP client for A could not be built.
    #[error("cannot build the client for service A: {0}")]
    Client(#[from] reqwest::Error),
    /// The listen address or the fault endpoint's cannot be bound.
    #[error(transparent)]
    Bind(#[from] telemetry::service::BoundError),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

/// Service B bound and ready to serve (the shape both services share).
pub type Application = telemetry::service::Application<crate::faults::Injected>;

/// Builds the client for A, binds the listener (port 0 picks a free port: see
/// [`Application::local_addr`]) and builds B's routes, observed with `settings`.
pub async fn build(
    config: Config,
    settings: telemetry::observe::Settings,
) -> Result<Application, StartupError> {
    let provider = Provider::start(
        &config.provider,
        &settings,
        std::sync::Arc::new(crate::metrics::ProviderMetrics::register(
            settings.metrics(),
        )),
    )
    .await?;
    settings.metrics().expose(provider.fleet().exposition());
    let knobs = provider.clone();
    let bound = telemetry::service::Bound::bind(
        // Each request in flight may hold one connection to A.
        (&config.edge, 1),
        config.serve.listen,
        config.fault_listen,
        crate::faults::switch(knobs),
        config
            .fault
            .clone()
            .and_then(|crate::faults::StartupFault(fault)| fault),
        // B's faults never take it down.
        None,
    )
    .await?;
    telemetry::event!(
        INFO,
        "listening",
        addr = %bound.local_addr()?,
        provider_url = %config.provider.provider_url.0.iter()
            .map(|base| crate::fleet::endpoint::joined(base, "token").to_string())
            .collect::<Vec<_>>()
            .join(","),
        provider_timeout_ms = config.provider.provider_timeout_ms,
        provider_attempts = config.provider.provider_attempts,
        worst_case_call_ms = u64::try_from(config.provider.worst_case_call().as_millis()).unwrap_or(u64::MAX),
    );
    let state = AppState {
        provider,
        max_delay_ms: config.max_delay_ms,
    };
    let description = crate::openapi::description(state.max_delay_ms);
    let routes = router(state, settings.metrics().clone(), description);
    Ok(Application::new(
        bound,
        routes,
        config.edge,
        // B is an edge anyone may call: a caller cannot write its own attempt number.
        telemetry::observe::AttemptHeader::Ignored,
        settings,
    ))
}
