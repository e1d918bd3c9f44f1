//! One shape for a layer that runs around each request as an async function: the request
//! layer ([`crate::observe::requests::Observation`]) and the protections
//! ([`crate::edge::limits::Protections`]) are each an [`Around`], and [`Wrapped`] is the
//! tower service both become, written once.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower::Service;

/// What runs around each request: given the request and the service inside (made ready),
/// it answers, calling the service or not. Cloned once per request (keep it an `Arc`).
pub trait Around: Clone + Send + Sync + 'static {
    /// Answers `request`, around `inner`.
    fn around<S>(self, request: Request, inner: S) -> impl Future<Output = Response> + Send
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send;
}

/// A service (a route) with `A` around each of its requests.
#[derive(Debug, Clone)]
pub struct Wrapped<S, A> {
    inner: S,
    around: A,
}

impl<S, A> Wrapped<S, A> {
    /// `inner` with `around` around it.
    pub fn new(inner: S, around: A) -> Self {
        Self { inner, around }
    }
}

impl<S, A> Service<Request> for Wrapped<S, A>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    A: Around,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone made ready serves this request; a fresh one waits for the next.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let around = self.around.clone();
        Box::pin(async move { Ok(around.around(request, inner).await) })
    }
}
