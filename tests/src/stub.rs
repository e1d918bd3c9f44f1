//! A stand-in provider that answers every request with a canned raw HTTP reply, which a test
//! can change at any time. It speaks HTTP/1.1 keep-alive (and closes a connection that stays
//! idle for `idle_close`, like a server's keep-alive timeout), counts the requests it gets,
//! keeps the head of the last one, and with an empty reply closes the connection without
//! answering.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A reply with an empty body and the given status line (`"503 Service Unavailable"`).
pub fn status_reply(status: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n")
}

/// A 200 with the token body service A would send.
pub fn token_reply() -> String {
    let body = r#"{"token":"token-divya","user":"divya"}"#;
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The running stub.
#[derive(Debug, Clone)]
pub struct StubProvider {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    seen: Arc<AtomicUsize>,
    last_head: Arc<Mutex<String>>,
    reply: Arc<Mutex<String>>,
    hang_up_on_reuse: Arc<std::sync::atomic::AtomicBool>,
}

impl StubProvider {
    /// Starts a stub answering `reply`, closing connections idle for `idle_close`.
    pub fn start(reply: impl Into<String>, idle_close: Duration) -> Self {
        Self::start_on("127.0.0.1:0", reply, idle_close)
    }

    /// [`Self::start`], listening on `addr`.
    pub fn start_on(addr: &str, reply: impl Into<String>, idle_close: Duration) -> Self {
        let listener = TcpListener::bind(addr).expect("bind");
        let stub = Self {
            url: format!("http://{}", listener.local_addr().expect("addr")),
            seen: Arc::default(),
            last_head: Arc::default(),
            reply: Arc::new(Mutex::new(reply.into())),
            hang_up_on_reuse: Arc::default(),
        };
        let shared = stub.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let stub = shared.clone();
                std::thread::spawn(move || stub.serve(stream, idle_close));
            }
        });
        stub
    }

    /// Requests received so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// The head (request line and headers) of the last request, as sent.
    pub fn last_head(&self) -> String {
        self.last_head.lock().expect("head lock").clone()
    }

    /// Answers `reply` from now on.
    pub fn set_reply(&self, reply: impl Into<String>) {
        *self.reply.lock().expect("reply lock") = reply.into();
    }

    /// From now on, a second request on a connection is read and then answered by closing
    /// the connection: what a client sees when the server's keep-alive timeout fires just
    /// as it sends on a pooled connection.
    pub fn hang_up_on_reuse(&self) {
        self.hang_up_on_reuse.store(true, Ordering::SeqCst);
    }

    fn serve(&self, mut stream: TcpStream, idle_close: Duration) {
        let mut served_here = 0;
        let _ = stream.set_read_timeout(Some(idle_close));
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // Read one request: the head, then content-length bytes of body.
            let head_end = loop {
                if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return, // closed by the client, or idle too long
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            };
            let sent = String::from_utf8_lossy(&pending[..head_end]).into_owned();
            let head = sent.to_ascii_lowercase();
            *self.last_head.lock().expect("head lock") = sent;
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while pending.len() < head_end + body_len {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
            pending.drain(..head_end + body_len);
            self.seen.fetch_add(1, Ordering::SeqCst);
            served_here += 1;
            if served_here > 1 && self.hang_up_on_reuse.load(Ordering::SeqCst) {
                return;
            }
            let reply = self.reply.lock().expect("reply lock").clone();
            if reply.is_empty() || stream.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }
}
