//! Builds service A from its configuration: bind, then the routes over its state, ready to
//! serve until told to stop (and drain).

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

/// Service A bound and ready to serve (the shape both services share).
pub type Application = telemetry::service::Application<Injected>;

/// Loads users, binds the listener (port 0 picks a free port: see
/// [`Application::local_addr`]) and builds A's routes, observed with `settings`.
pub async fn build(
    config: Config,
    settings: telemetry::observe::Settings,
) -> Result<Application, StartupError> {
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
        token_metrics: Arc::new(crate::metrics::TokenMetrics::register(settings.metrics())),
        faults: Arc::new(Teaching::new(
            Faults {
                extra_latency: Duration::from_millis(config.extra_latency_ms),
                failure_rate: config.failure_rate,
                allow_fail_status: config.allow_fail_status,
            },
            bound.faults(),
        )),
    };
    telemetry::event!(
        INFO,
        "listening",
        addr = %bound.local_addr()?,
        users = state.users.len(),
        max_delay_ms = config.max_delay_ms,
        extra_latency_ms = config.extra_latency_ms,
        failure_rate = config.failure_rate,
    );
    let description =
        crate::openapi::description(state.max_delay_ms, state.faults.flags().allow_fail_status);
    let routes = router(state, settings.metrics().clone(), description);
    Ok(Application::new(
        bound,
        routes,
        config.edge,
        // B numbers its attempts; A shows the number on its span and log line.
        telemetry::observe::AttemptHeader::Trusted,
        settings,
    ))
}
