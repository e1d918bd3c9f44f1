//! Services started inside the test process (zero2prod's `spawn_app`): A and B as libraries,
//! each on a free loopback port with its own flags and its own observation settings, served
//! on a task of the test's runtime until dropped. Driven over HTTP only, with the same
//! calls as a [`crate::Service`] (`at`, `url`, `token`, `protected_action`), so a test that
//! needs nothing but HTTP changes only how it starts its services.
//!
//! What such a service cannot show: one process has one `tracing` subscriber, one `metrics`
//! recorder and one propagator, and none is installed here, so its log lines, the values on
//! its `/metrics` and its spans are not observable (its `/metrics` answers, but counts
//! nothing). Neither has it a pid, a stdout, signals or environment variables of its
//! own. Tests of those keep the real binaries ([`crate::Service`]).
//!
//! The service runs on the test's runtime: a test that blocks a runtime thread (a
//! synchronous wait, a child process waited for) starves it.

use std::net::SocketAddr;

use clap::Parser as _;
use serde_json::Value;
use telemetry::observe::Settings;

use crate::{Reply, post_json};

/// A service served on a task of the test's runtime until dropped.
#[derive(Debug)]
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl InProcess {
    /// Service A on a free loopback port with extra `flags`, as [`crate::Service::a`].
    pub async fn a(flags: &[&str]) -> Self {
        Self::a_with(flags, Settings::in_process()).await
    }

    /// [`Self::a`], observed with `settings` (e.g. which W3C headers it reads).
    pub async fn a_with(flags: &[&str], settings: Settings) -> Self {
        let args = ["service-a", "--listen", "127.0.0.1:0"].iter().chain(flags);
        let config = service_a::config::Config::try_parse_from(args).expect("A's flags");
        Self::serve(
            service_a::startup::build(config, settings)
                .await
                .expect("A starts"),
        )
    }

    /// Service B on a free loopback port calling A at `provider`, with extra `flags`, as
    /// [`crate::Service::b`].
    pub async fn b(provider: &str, flags: &[&str]) -> Self {
        let base = [
            "service-b",
            "--listen",
            "127.0.0.1:0",
            "--provider-url",
            provider,
        ];
        let args = base.iter().chain(flags);
        let config = service_b::config::Config::try_parse_from(args).expect("B's flags");
        Self::serve(
            service_b::startup::build(config, Settings::in_process())
                .await
                .expect("B starts"),
        )
    }

    fn serve<F: telemetry::faults::Fault>(app: telemetry::service::Application<F>) -> Self {
        let addr = app.local_addr().expect("bound");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://<addr><path>`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// `POST /protected-action` on this service (B) with `body` and an optional request id.
    pub fn protected_action(
        &self,
        body: Value,
        request_id: Option<&str>,
    ) -> impl Future<Output = Reply> + Send + 'static + use<> {
        post_json(&self.at("/protected-action"), body, request_id)
    }

    /// `POST /token` on this service (A) with `body` and an optional request id.
    pub fn token(
        &self,
        body: Value,
        request_id: Option<&str>,
    ) -> impl Future<Output = Reply> + Send + 'static + use<> {
        post_json(&self.at("/token"), body, request_id)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
