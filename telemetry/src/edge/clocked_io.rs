//! A connection's socket with its head and idle timers (`ClockedIo`), and the answers the
//! server writes on a socket itself, before or instead of hyper's (a JSON 408 for a head
//! that stalled, a JSON 503 for a connection over the limit).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::edge::connection::{Conn, Io, epoch};

/// Which timer of a connection is running: none while a request is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Waiting for a request; nothing of it has arrived.
    Idle = 1,
    /// Part of a request head has arrived.
    Head = 2,
}

/// The connection's socket, with its head and idle timers: while no request is in flight,
/// a read that would wait past the running timer's deadline fails instead (after a JSON
/// 408 for a head that stalled), which ends the connection. The timer is armed wherever
/// hyper touches the socket while waiting (a read that would block, the flush of a
/// response), so its expiry always wakes the connection.
pub(crate) struct ClockedIo<I> {
    pub(crate) io: I,
    pub(crate) conn: Arc<Conn>,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// When the current head started arriving, and the request count then.
    pub(crate) head: Option<(Instant, u64)>,
    /// Bytes read since the current head started arriving.
    pub(crate) head_bytes: usize,
    pub(crate) head_buffer: usize,
    pub(crate) sleep: Pin<Box<Sleep>>,
    pub(crate) armed: Option<Instant>,
}

impl<I: Io> ClockedIo<I> {
    /// The running timer's phase and deadline, or `None` while a request is in flight.
    fn deadline(&mut self) -> Option<(Phase, Instant)> {
        if self.conn.busy.load(Relaxed) > 0 {
            return None;
        }
        let requests = self.conn.requests.load(Relaxed);
        match self.head {
            Some((started, at)) if at == requests => {
                Some((Phase::Head, started + self.header_timeout))
            }
            _ => {
                self.head = None;
                let idle_since =
                    epoch() + Duration::from_millis(self.conn.idle_since.load(Relaxed));
                Some((Phase::Idle, idle_since + self.idle_timeout))
            }
        }
    }
}

impl<I: Io> ClockedIo<I> {
    /// Arms the running timer and polls it: the phase whose deadline has passed, if one has.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<Phase> {
        let (phase, deadline) = self.deadline()?;
        if self.armed != Some(deadline) {
            self.sleep.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready().then_some(phase)
    }
}

impl<I: Io> AsyncRead for ClockedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                let started_a_head =
                    read > 0 && this.head.is_none() && this.conn.busy.load(Relaxed) == 0;
                if started_a_head {
                    this.head = Some((Instant::now(), this.conn.requests.load(Relaxed)));
                    this.head_bytes = 0;
                    this.conn.started_receiving(read);
                } else if read > 0 && this.conn.receiving.load(Relaxed) {
                    this.conn.received.fetch_add(read as u64, Relaxed);
                }
                let in_head = this
                    .head
                    .is_some_and(|(_, at)| at == this.conn.requests.load(Relaxed));
                if in_head {
                    this.head_bytes = this.head_bytes.saturating_add(read);
                    // hyper reads a head into a buffer of this size at most: a head
                    // still incomplete when it is full is refused.
                    if this.head_bytes >= this.head_buffer {
                        this.conn.head_overflowed.store(true, Relaxed);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(phase) = this.poll_timer(cx) else {
                    return Poll::Pending;
                };
                this.conn.timed_out.store(phase as u8, Relaxed);
                if phase == Phase::Head {
                    let message = format!(
                        "request head not received within {} ms",
                        this.header_timeout.as_millis()
                    );
                    write_now(
                        &mut this.io,
                        &canned_response("408 Request Timeout", &message, false),
                    );
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match phase {
                        Phase::Idle => "idle timeout",
                        Phase::Head => "request head timeout",
                    },
                )))
            }
        }
    }
}

impl<I: Io> AsyncWrite for ClockedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        // A response has gone out. Hyper does not read again until the socket is readable,
        // so the idle timer is armed here, where it wakes the connection when it fires.
        if flushed.is_ready() && self.poll_timer(cx).is_some() {
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Writes what the socket takes of `bytes` now, without waiting: the best effort for an
/// answer written before closing (a client that reads nothing gets nothing).
pub(crate) fn write_now<I: Io>(io: &mut I, bytes: &[u8]) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let _ = Pin::new(io).poll_write(&mut cx, bytes);
}

/// A whole HTTP/1.1 response with a JSON error body, for the answers written before or
/// instead of hyper's (the connection closes after it).
pub(crate) fn canned_response(status: &str, error: &str, retry_after: bool) -> Vec<u8> {
    let body = crate::edge::http::error_body(error);
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if retry_after {
        response.push_str("retry-after: 1\r\n");
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The 503 for a connection over `--max-connections`, built once.
pub(crate) fn over_capacity_response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| {
        canned_response(
            "503 Service Unavailable",
            "server at its connection limit: try again later",
            true,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_are_whole_json_responses() {
        let response = String::from_utf8(canned_response("503 Service Unavailable", "busy", true))
            .expect("utf-8");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nretry-after: 1"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert_eq!(body, "{\"error\":\"busy\"}\n");
    }
}
