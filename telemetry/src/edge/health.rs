//! A health probe for container healthchecks that need no curl in the image: the service's
//! own binary, run with `--healthcheck`, asks `GET /health` of the server on its `--listen`
//! address and exits 0 on 200, 1 otherwise.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the probe waits for the connection and for the answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the server listening on `listen` answers `GET /health` with 200. An unspecified
/// listen address (`0.0.0.0`, `::`) is probed on loopback.
pub fn probe(listen: SocketAddr) -> bool {
    let target = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    };
    let answer = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&target, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        // One write: a request split over several segments is still valid HTTP, but a small
        // server that reads once and closes would leave the rest unread and answer with RST.
        let request =
            format!("GET /health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        let mut status_line = [0u8; 12];
        stream.read_exact(&mut status_line)?;
        Ok(status_line.starts_with(b"HTTP/1.") && &status_line[8..12] == b" 200")
    };
    answer().unwrap_or(false)
}

/// [`probe`] as a process exit code.
pub fn probe_exit_code(listen: SocketAddr) -> std::process::ExitCode {
    if probe(listen) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_unhealthy() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr");
        drop(free);
        assert!(!probe(addr));
    }

    #[test]
    fn a_200_is_healthy_and_anything_else_is_not() {
        for (reply, healthy) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            ("garbage", false),
        ] {
            let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(reply.as_bytes());
            });
            assert_eq!(
                probe(addr),
                healthy,
                "{reply:?} via the unspecified address"
            );
            server.join().expect("server");
        }
    }
}
