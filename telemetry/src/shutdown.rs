//! Graceful shutdown: on SIGTERM or Ctrl-C stop accepting, let in-flight requests finish
//! within a grace period, then return so `main` can flush logs and spans and exit 0.

use std::future::{Future, IntoFuture as _};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

/// Resolves on the first SIGTERM (what `kill`, Docker and Kubernetes send) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Serves `router` on `listener` until `stop` resolves, then drains: new connections are
/// refused, idle keep-alive connections closed, and in-flight requests get up to `grace` to
/// finish. Returns once drained or when the grace period runs out.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        stop.await;
        tracing::info!(
            event = "shutdown_started",
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)
        );
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .into_future();
    let grace_expired = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => {
            tracing::info!(event = "shutdown_complete");
            result
        }
        () = grace_expired => {
            tracing::warn!(event = "shutdown_grace_expired", "in-flight requests were cut off");
            Ok(())
        }
    }
}
