//! What the attack tests share (the `system` target's small attacks in `hostile` and
//! `crowding`, the `heavy` target's large ones): raw connections, trickling bodies, and the
//! checks that a process under attack stayed within its memory limit and kept answering.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{Service, TIMEOUT, eventually, send};

/// The memory limit `deploy/compose.yaml` and `deploy/kubernetes/` give each service.
pub const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

/// How fast `/health` must answer on a new connection while an attack runs
/// (docs/limits.md).
pub const HEALTHY_LATENCY: Duration = Duration::from_millis(100);

/// Asserts the process survived within its memory limit and still answers promptly.
pub async fn assert_unharmed(service: &mut Service, attack: &str) {
    assert!(service.is_alive(), "{attack}: the process died");
    let peak = service.peak_memory();
    assert!(
        peak < MEMORY_LIMIT,
        "{attack}: peak memory {} MiB is over the 64 MiB limit",
        peak / (1024 * 1024)
    );
    let latency = service.health_latency().await;
    assert!(
        latency < HEALTHY_LATENCY,
        "{attack}: /health took {latency:?}"
    );
}

/// Waits (bounded) until the Prometheus series reaches `at_least`, and returns its value: the
/// server counts a connection's end just after the client has seen it.
pub async fn wait_for_series(service: &Service, series: &str, at_least: f64) -> f64 {
    eventually(format!("{series} to reach {at_least}"))
        .every(Duration::from_millis(20))
        .until_async(async || {
            let value = service.series(series).await;
            if value >= at_least {
                Ok(value)
            } else {
                Err(value)
            }
        })
        .await
}

/// Waits (bounded) until an attack's requests answered so far reach `count`: it is under way.
pub async fn wait_under_way(answered: &AtomicUsize, count: usize) {
    eventually(format!("the attack to get going ({count} answered)"))
        .until_async(async || {
            let now = answered.load(Ordering::Relaxed);
            if now >= count { Ok(()) } else { Err(now) }
        })
        .await;
}

/// Connects and sends `bytes`, without reading; the connection stays open until dropped.
pub fn connect_and_send(service: &Service, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(service.addr).expect("connect");
    stream.write_all(bytes).expect("send");
    stream
}

/// Connections waiting in the kernel for `service` to accept them: the receive queue of its
/// listening socket in `/proc/net/tcp`.
pub fn accept_queue(service: &Service) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{:04X}", service.addr.port());
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            if !listening || !fields.get(1).is_some_and(|local| local.ends_with(&port)) {
                return None;
            }
            let (_, waiting) = fields.get(4)?.split_once(':')?;
            usize::from_str_radix(waiting, 16).ok()
        })
        .unwrap_or_else(|| panic!("no listening socket on {} in /proc/net/tcp", service.addr))
}

/// The bytes `client` sent that `service` has not read yet: the receive queue of the
/// server's end of that connection in `/proc/net/tcp` (`None` while it is not there).
pub fn unread_by(service: &Service, client: &TcpStream) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{:04X}", service.addr.port());
    let remote = format!(
        ":{:04X}",
        client.local_addr().expect("local address").port()
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ours = fields.get(1).is_some_and(|l| l.ends_with(&local))
            && fields.get(2).is_some_and(|r| r.ends_with(&remote))
            && fields.get(3) == Some(&"01");
        if !ours {
            return None;
        }
        let (_, unread) = fields.get(4)?.split_once(':')?;
        usize::from_str_radix(unread, 16).ok()
    })
}

/// Waits (bounded) until fewer than `below` connections wait for `service` to accept them.
pub fn wait_for_accept_queue_below(service: &Service, below: usize) {
    eventually(format!(
        "fewer than {below} connections waiting to be accepted"
    ))
    .every(Duration::from_millis(1))
    .until(|| {
        let waiting = accept_queue(service);
        if waiting < below {
            Ok(())
        } else {
            Err(waiting)
        }
    });
}

/// What the server wrote back before closing (empty if it closed without a word).
pub fn read_answer(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code and JSON body of a raw HTTP/1.1 answer.
pub fn status_and_body(answer: &str) -> (u16, Value) {
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// A token character string from a counter, e.g. "M17X".
pub fn made_up_method(n: u32) -> reqwest::Method {
    reqwest::Method::from_bytes(format!("M{n}X").as_bytes()).expect("a token")
}

/// Bodies trickling in a byte at a time (every `every`) on up to `count` connections to
/// `service`, until dropped. The byte rounds made so far are counted, so a test can wait
/// until the trickle is under way.
#[derive(Debug)]
pub struct Trickle {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    opened: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickle {
    /// A byte every 100 ms on each of `count` connections, each announcing a 1,000-byte body.
    pub fn start(service: &Service, path: &str, count: usize) -> Self {
        Self::start_every(service, path, count, Duration::from_millis(100))
    }

    /// A byte every `every` on each of `count` connections (those the service accepts).
    pub fn start_every(service: &Service, path: &str, count: usize, every: Duration) -> Self {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        );
        let mut streams: Vec<TcpStream> = (0..count)
            .filter_map(|_| {
                let mut stream = TcpStream::connect(service.addr).ok()?;
                stream.write_all(head.as_bytes()).ok()?;
                stream.set_nonblocking(true).ok()?;
                Some(stream)
            })
            .collect();
        let opened = streams.len();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (until, made) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            while !until.load(Ordering::Relaxed) {
                // A closed connection fails its write; the rest keep trickling.
                streams.retain_mut(|s| s.write_all(b" ").is_ok());
                made.fetch_add(1, Ordering::Relaxed);
                // Short sleeps, so that dropping the trickle never waits long.
                let mut slept = Duration::ZERO;
                while slept < every && !until.load(Ordering::Relaxed) {
                    let step = (every - slept).min(Duration::from_millis(50));
                    std::thread::sleep(step);
                    slept += step;
                }
            }
        });
        Self {
            stop,
            rounds,
            opened,
            thread: Some(thread),
        }
    }

    /// How many connections were opened.
    pub fn opened(&self) -> usize {
        self.opened
    }

    /// Waits (bounded) until `n` byte rounds have gone out.
    pub fn wait_rounds(&self, n: usize) {
        eventually(format!("{n} rounds of trickled bytes")).until(|| {
            let made = self.rounds.load(Ordering::Relaxed);
            if made >= n { Ok(()) } else { Err(made) }
        });
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client that opens a new connection for every request, like a newcomer.
pub fn newcomer() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

/// Sends `n` of the requests `make` builds, each on a new connection, with `/health` asked
/// in between; returns the share answered `expected` and the slowest `/health`.
pub async fn served_at_the_cap(
    service: &Service,
    n: usize,
    expected: u16,
    make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> (f64, Duration) {
    let client = newcomer();
    let mut served = 0;
    let mut slowest_health = Duration::ZERO;
    for _ in 0..n {
        if send(make(&client)).await.status == expected {
            served += 1;
        }
        slowest_health = slowest_health.max(service.health_latency().await);
    }
    (served as f64 / n as f64, slowest_health)
}
