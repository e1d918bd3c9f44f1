//! Builds service B from its configuration and runs it: bind, serve, drain on shutdown.
//! B starts whether or not A is up: it learns about A one request at a time.

use std::future::Future;
use std::net::SocketAddr;

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

/// A bound, ready-to-serve service B.
#[derive(Debug)]
pub struct Application {
    bound: telemetry::service::Bound<crate::faults::Injected>,
    config: Config,
    state: AppState,
    metrics: telemetry::observe::Metrics,
}

impl Application {
    /// Builds the client for A and binds the listener (port 0 picks a free port).
    pub async fn build(
        config: Config,
        metrics: telemetry::observe::Metrics,
    ) -> Result<Self, StartupError> {
        let provider = Provider::start(
            &config.provider,
            std::sync::Arc::new(crate::metrics::ProviderMetrics::register()),
        )
        .await?;
        metrics.expose(provider.fleet().exposition());
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
        let state = AppState {
            provider,
            max_delay_ms: config.max_delay_ms,
        };
        Ok(Self {
            bound,
            config,
            state,
            metrics,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.bound.local_addr()
    }

    /// Serves until `stop` resolves, then drains in-flight requests (bounded by
    /// `--shutdown-grace-ms`).
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let addr = self.local_addr()?;
        tracing::info!(
            event = "listening",
            addr = %addr,
            provider_url = %self.config.provider.provider_url.0.iter()
                .map(|base| crate::fleet::endpoint::joined(base, "token").to_string())
                .collect::<Vec<_>>()
                .join(","),
            provider_timeout_ms = self.config.provider.provider_timeout_ms,
            provider_attempts = self.config.provider.provider_attempts,
            worst_case_call_ms = u64::try_from(self.config.provider.worst_case_call().as_millis()).unwrap_or(u64::MAX),
        );
        let description = crate::openapi::description(self.state.max_delay_ms);
        let app = router(self.state, self.metrics, description);
        let serving = telemetry::edge::Serving {
            edge: &self.config.edge,
            // B is an edge anyone may call: a caller cannot write its own attempt number.
            attempt_header: telemetry::observe::AttemptHeader::Ignored,
        };
        self.bound.serve(app, stop, serving).await?;
        Ok(())
    }
}
