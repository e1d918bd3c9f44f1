//! A lab's "the provider is down", as a layer the lab adds around the server's listener:
//! while unplugged, new connections are closed as soon as they are accepted, and every open
//! one fails its next read or write (a waiting one is woken to fail), so callers see
//! connections refused or reset, as if the process were gone, and monitoring sees a
//! target down. The production server knows nothing of it: a service wraps its listener in
//! [`Pluggable`] only when a lab may break it ([`super::Lab::asked`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::edge::server::Listener;

/// Switches the wrapped listener's connections off and on.
#[derive(Debug, Clone)]
pub struct Plug(watch::Sender<bool>);

impl Default for Plug {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Plug {
    /// Unplugs (`true`) or plugs back in (`false`).
    pub fn set_unplugged(&self, unplugged: bool) {
        self.0.send_replace(unplugged);
    }

    /// `listener`, switched by this plug.
    pub fn wrap<L: Listener>(&self, listener: L) -> Pluggable<L> {
        Pluggable {
            inner: listener,
            unplugged: self.0.subscribe(),
        }
    }
}

/// A listener whose connections a [`Plug`] can cut.
#[derive(Debug)]
pub struct Pluggable<L> {
    inner: L,
    unplugged: watch::Receiver<bool>,
}

impl<L: Listener> Listener for Pluggable<L> {
    type Io = PluggableIo<L::Io>;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        loop {
            let (io, peer) = self.inner.accept().await?;
            if *self.unplugged.borrow() {
                continue; // closed unanswered
            }
            let mut unplugged = self.unplugged.clone();
            let cut = Box::pin(async move {
                let _ = unplugged.wait_for(|u| *u).await;
            });
            return Ok((PluggableIo { io, cut }, peer));
        }
    }
}

/// A connection that fails once unplugged.
pub struct PluggableIo<I> {
    io: I,
    /// Resolves when the plug is pulled.
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<I> std::fmt::Debug for PluggableIo<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluggableIo")
    }
}

impl<I> PluggableIo<I> {
    /// An error when the plug has been pulled (the waker is registered either way).
    fn check(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.cut
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::ConnectionReset, "unplugged"))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for PluggableIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for PluggableIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
