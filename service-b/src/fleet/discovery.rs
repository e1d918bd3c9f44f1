//! Where A's endpoints come from: `--provider-url`, one base URL or several separated by
//! commas. A URL whose host is an IP address, or `localhost` (left to the client, as any
//! single-host client does), is one endpoint as it is. A URL whose host is a name is as many
//! endpoints as the name has addresses, resolved again every
//! `--provider-resolve-interval-ms` so replicas that come and go are found without a
//! restart (a Kubernetes headless Service, compose's service name). Names are resolved by
//! the system's resolver (which reads `/etc/hosts` and the search domains too), or by the
//! DNS server `--provider-dns` names, queried directly.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

/// How long one resolution may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One URL of `--provider-url`, as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One endpoint as it is: an IP address in the URL (`peer`), or `localhost`.
    Fixed {
        /// The base URL.
        base: Url,
        /// The address, when the URL names one.
        peer: Option<SocketAddr>,
    },
    /// A name: one endpoint per address it resolves to.
    Named {
        /// The base URL.
        base: Url,
        /// The name.
        host: String,
        /// The URL's port.
        port: u16,
    },
}

impl Source {
    /// What `url` is for discovery.
    pub fn of(url: &Url) -> Self {
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => Self::Fixed {
                base: url.clone(),
                peer: Some(SocketAddr::new(IpAddr::V4(ip), port)),
            },
            Some(url::Host::Ipv6(ip)) => Self::Fixed {
                base: url.clone(),
                peer: Some(SocketAddr::new(IpAddr::V6(ip), port)),
            },
            Some(url::Host::Domain(name)) if !name.eq_ignore_ascii_case("localhost") => {
                Self::Named {
                    base: url.clone(),
                    host: name.to_owned(),
                    port,
                }
            }
            _ => Self::Fixed {
                base: url.clone(),
                peer: None,
            },
        }
    }
}

/// How names are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// The system's resolver (`getaddrinfo`).
    System,
    /// This DNS server, queried directly over UDP.
    Dns(SocketAddr),
}

impl Resolver {
    /// Every address of `host`, in order; an error says why there are none.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, async {
            match self {
                Self::System => tokio::net::lookup_host((host, 0))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
                    .map_err(|e| e.to_string()),
                Self::Dns(server) => dns::addresses(*server, host).await,
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} ms",
                RESOLVE_TIMEOUT.as_millis()
            ))
        })?;
        let addresses: BTreeSet<IpAddr> = found.into_iter().collect();
        if addresses.is_empty() {
            return Err("the name has no address".to_owned());
        }
        Ok(addresses.into_iter().collect())
    }
}

/// A DNS query of our own, with hickory-proto's message types: A and AAAA records of one
/// name from one server, over UDP. (hickory-resolver would do it too, with a cache and a
/// dozen crates more; B asks one server for one name every few seconds.)
mod dns {
    use std::net::{IpAddr, SocketAddr};

    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    /// The A and AAAA records of `host` at `server`.
    pub async fn addresses(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, String> {
        let mut name = Name::from_ascii(host).map_err(|e| format!("not a DNS name: {e}"))?;
        name.set_fqdn(true);
        let mut found = ask(server, &name, RecordType::A).await?;
        found.extend(ask(server, &name, RecordType::AAAA).await?);
        Ok(found)
    }

    async fn ask(server: SocketAddr, name: &Name, kind: RecordType) -> Result<Vec<IpAddr>, String> {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name.clone(), kind));
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| e.to_string())?;
        socket
            .send_to(&bytes, server)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let mut buffer = vec![0u8; 4096];
        loop {
            let (read, from) = socket
                .recv_from(&mut buffer)
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            let Ok(answer) = Message::from_vec(&buffer[..read]) else {
                continue;
            };
            // Only the answer to this query, from the server asked.
            if from != server || answer.metadata.id != query.metadata.id {
                continue;
            }
            return match answer.metadata.response_code {
                ResponseCode::NoError => Ok(answer
                    .answers
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect()),
                ResponseCode::NXDomain => Err(format!("{server}: no such name")),
                code => Err(format!("{server}: {code}")),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> Source {
        Source::of(&Url::parse(url).expect("url"))
    }

    #[test]
    fn addresses_and_localhost_are_fixed_names_are_resolved() {
        assert!(matches!(
            source("http://127.0.0.1:8080"),
            Source::Fixed { peer: Some(peer), .. } if peer == "127.0.0.1:8080".parse().expect("addr")
        ));
        assert!(matches!(
            source("http://[::1]:9000/"),
            Source::Fixed { peer: Some(peer), .. } if peer == "[::1]:9000".parse().expect("addr")
        ));
        assert!(matches!(
            source("http://LOCALHOST:8080"),
            Source::Fixed { peer: None, .. }
        ));
        assert!(matches!(
            source("http://service-a:8080"),
            Source::Named { host, port: 8080, .. } if host == "service-a"
        ));
        assert!(matches!(
            source("http://service-a.default.svc.cluster.local"),
            Source::Named { port: 80, .. }
        ));
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost_and_says_why_it_finds_nothing() {
        let found = Resolver::System
            .resolve("localhost")
            .await
            .expect("localhost");
        assert!(found.iter().all(IpAddr::is_loopback), "{found:?}");
        let missing = Resolver::System.resolve("no-such-name.invalid").await;
        assert!(missing.is_err(), "{missing:?}");
    }
}
