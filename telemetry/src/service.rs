//! The shape both services start in: bind the listener (and, when a lab asks, the fault
//! endpoint), then serve the service's routes until a signal. A service's `startup.rs`
//! binds with [`Bound`], builds its state and routes, and returns an [`Application`], which
//! serves them the same way for both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::edge::{BindError, ConnectionLimits, EdgeArgs, LimitsError, Serving};
use crate::faults::{Fault, FaultSwitch, Lab, ListenError, Plug};
use crate::observe::{AttemptHeader, Settings};

/// Why a service could not bind.
#[derive(Debug, thiserror::Error)]
pub enum BoundError {
    /// The listen address cannot be bound (in use, or not ours).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The fault endpoint cannot listen where `--fault-listen` says.
    #[error(transparent)]
    Faults(#[from] ListenError),
    /// The open-files limit is too low to serve.
    #[error(transparent)]
    Limits(#[from] LimitsError),
}

/// A service bound to its address, with its lab (fault endpoint and start-up fault, when
/// asked for), ready to serve.
#[derive(Debug)]
pub struct Bound<F> {
    listener: TcpListener,
    limits: ConnectionLimits,
    lab: Lab<F>,
    /// Pulled by a fault that takes the service down; the listener is wrapped in it only
    /// when a lab may ask.
    plug: Option<Plug>,
}

impl<F: Fault> Bound<F> {
    /// Fits `edge`'s connection limits to the process's open-files limit, where each request
    /// in flight may hold `outbound_per_request` connections of its own (refused, naming the
    /// limit, when too low to serve: see [`ConnectionLimits::for_this_process`]); binds
    /// `listen` (port 0 picks a free port); starts the lab with `switch` (the fault endpoint
    /// on `fault_listen`, and `startup` switched on); and keeps `plug` for a fault that takes
    /// the service down.
    pub async fn bind(
        (edge, outbound_per_request): (&EdgeArgs, u32),
        listen: SocketAddr,
        fault_listen: Option<SocketAddr>,
        switch: FaultSwitch<F>,
        startup: Option<F>,
        plug: Option<Plug>,
    ) -> Result<Self, BoundError> {
        let limits = ConnectionLimits::for_this_process(edge, outbound_per_request)?;
        let listener = crate::edge::bind(listen).await?;
        let lab = Lab::start(fault_listen, switch, startup).await?;
        Ok(Self {
            listener,
            limits,
            lab,
            plug,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The lab's switch, for the service's handlers.
    pub fn faults(&self) -> std::sync::Arc<FaultSwitch<F>> {
        self.lab.switch.clone()
    }

    /// Serves `routes` as `serving` says until `stop` resolves (see [`crate::edge::serve`]),
    /// with the fault endpoint beside it when there is one.
    async fn serve(
        mut self,
        routes: Router,
        stop: impl Future<Output = ()> + Send + 'static,
        serving: Serving<'_>,
    ) -> io::Result<()> {
        self.lab.serve();
        match self.plug.filter(|_| self.lab.asked()) {
            Some(plug) => {
                let listener = plug.wrap(self.listener);
                crate::edge::serve(listener, routes, stop, serving, &self.limits).await
            }
            None => crate::edge::serve(self.listener, routes, stop, serving, &self.limits).await,
        }
    }
}

/// A bound service with its routes, ready to serve: what each service's `startup::build`
/// returns (zero2prod's `Application`). Port 0 picks a free port: read it back with
/// [`Self::local_addr`].
#[derive(Debug)]
pub struct Application<F> {
    bound: Bound<F>,
    routes: Router,
    edge: EdgeArgs,
    attempt_header: AttemptHeader,
    settings: Settings,
}

impl<F: Fault> Application<F> {
    /// `routes` (the service's own, with their state) to be served on `bound` within the
    /// `edge` limits, every request observed with `settings`; `attempt_header` says
    /// whether a caller's `x-attempt` is shown.
    pub fn new(
        bound: Bound<F>,
        routes: Router,
        edge: EdgeArgs,
        attempt_header: AttemptHeader,
        settings: Settings,
    ) -> Self {
        Self {
            bound,
            routes,
            edge,
            attempt_header,
            settings,
        }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.bound.local_addr()
    }

    /// Serves until `stop` resolves, then drains in-flight requests (bounded by
    /// `--shutdown-grace-ms`).
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let serving = Serving {
            edge: &self.edge,
            attempt_header: self.attempt_header,
            observe: &self.settings,
        };
        self.bound.serve(self.routes, stop, serving).await
    }
}
