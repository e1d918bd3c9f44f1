//! Builds service A from its configuration and runs it: bind, serve, drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::faults::{Faults, Injected, StartupFault, Teaching};
use crate::routes::{AppState, router};
use crate::throttle::LoginThrottle;
use crate::users::{DEMO_USER, Users};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The users file is unreadable or malformed.
    #[error(transparent)]
    Users(#[from] crate::users::UsersError),
    /// `--no-demo-user` without any other user: every request would be refused.
    #[error("no users: --no-demo-user needs --users-file")]
    NoUsers,
    /// The listen address or the fault endpoint's cannot be bound.
    #[error(transparent)]
    Bind(#[from] telemetry::service::BoundError),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

/// A bound, ready-to-serve service A.
#[derive(Debug)]
pub struct Application {
    bound: telemetry::service::Bound<Injected>,
    config: Config,
    state: AppState,
    metrics: telemetry::observe::Metrics,
}

impl Application {
    /// Loads users and binds the listener (port 0 picks a free port: see [`Self::local_addr`]).
    pub async fn build(
        config: Config,
        metrics: telemetry::observe::Metrics,
    ) -> Result<Self, StartupError> {
        let mut users = Users::default();
        if !config.no_demo_user {
            users.insert(DEMO_USER.0, DEMO_USER.1);
        }
        if let Some(path) = &config.users_file {
            users.load_file(path)?;
        }
        if users.is_empty() {
            return Err(StartupError::NoUsers);
        }
        // What a lab's "A is down" pulls (see `telemetry::faults::unplug`).
        let plug = telemetry::faults::Plug::default();
        let throttle = Arc::new(LoginThrottle::new(
            config.max_login_failures,
            Duration::from_millis(config.login_failure_window_ms),
        ));
        let bound = telemetry::service::Bound::bind(
            // A opens no connections of its own per request.
            (&config.edge, 0),
            config.serve.listen,
            config.fault_listen,
            crate::faults::switch(plug.clone(), throttle.clone()),
            config.fault.clone().and_then(|StartupFault(fault)| fault),
            Some(plug),
        )
        .await?;
        let state = AppState {
            users: Arc::new(users),
            throttle,
            max_delay_ms: config.max_delay_ms,
            token_metrics: Arc::new(crate::metrics::TokenMetrics::register()),
            faults: Arc::new(Teaching::new(
                Faults {
                    extra_latency: Duration::from_millis(config.extra_latency_ms),
                    failure_rate: config.failure_rate,
                    allow_fail_status: config.allow_fail_status,
                },
                bound.faults(),
            )),
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
            users = self.state.users.len(),
            max_delay_ms = self.config.max_delay_ms,
            extra_latency_ms = self.config.extra_latency_ms,
            failure_rate = self.config.failure_rate,
        );
        let description = crate::openapi::description(
            self.state.max_delay_ms,
            self.state.faults.flags().allow_fail_status,
        );
        let app = router(self.state, self.metrics, description);
        let serving = telemetry::edge::Serving {
            edge: &self.config.edge,
            // B numbers its attempts; A shows the number on its span and log line.
            attempt_header: telemetry::observe::AttemptHeader::Trusted,
        };
        self.bound.serve(app, stop, serving).await?;
        Ok(())
    }
}
