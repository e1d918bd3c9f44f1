//! Where A's endpoints come from: `--provider-url`, one base URL or several separated by
//! commas. A URL whose host is an IP address, or `localhost` (left to the client, as any
//! single-host client does), is one endpoint as it is. A URL whose host is a name is as many
//! endpoints as the name has addresses, resolved again every
//! `--provider-resolve-interval-ms` so replicas that come and go are found without a
//! restart (a Kubernetes headless Service, compose's service name). Names are resolved by
//! the system's resolver (which reads `/etc/hosts` and the search domains too), or by the
//! DNS server `--provider-dns` names, queried directly. A name that is gone (no such name,
//! no address) takes its endpoints with it; a failure that may pass (no answer in time, a
//! DNS server's SERVFAIL) keeps the ones last found.

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

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The name is gone (no such name, or no address): its endpoints go too. Otherwise the
    /// failure may pass (a DNS server that did not answer, or answered SERVFAIL): its
    /// endpoints are kept meanwhile.
    pub gone: bool,
    /// What the resolver said.
    pub why: String,
}

impl Unresolved {
    fn gone(why: impl Into<String>) -> Self {
        Self {
            gone: true,
            why: why.into(),
        }
    }

    fn passing(why: impl Into<String>) -> Self {
        Self {
            gone: false,
            why: why.into(),
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
    /// Every address of `host`, in order; an error says why there are none, and whether
    /// the name is gone or the failure may pass.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, Unresolved> {
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, async {
            match self {
                Self::System => tokio::net::lookup_host((host, 0))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
                    .map_err(|e| system_failure(&e.to_string())),
                Self::Dns(server) => dns::addresses(*server, host).await,
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(Unresolved::passing(format!(
                "no answer within {} ms",
                RESOLVE_TIMEOUT.as_millis()
            )))
        })?;
        let addresses: BTreeSet<IpAddr> = found.into_iter().collect();
        if addresses.is_empty() {
            return Err(Unresolved::gone("the name has no address"));
        }
        Ok(addresses.into_iter().collect())
    }
}

/// What the system resolver's failure (getaddrinfo's words) says: a temporary failure
/// (`EAI_AGAIN`: no DNS server answered) may pass; anything else (`EAI_NONAME`: no such
/// name, `EAI_NODATA`: no address) is a name that is gone.
fn system_failure(said: &str) -> Unresolved {
    if said.contains("Temporary failure") || said.contains("try again") {
        Unresolved::passing(said)
    } else {
        Unresolved::gone(said)
    }
}

/// A DNS query of our own, with hickory-proto's message types: A and AAAA records of one
/// name from one server, over UDP. (hickory-resolver would do it too, with a cache and a
/// dozen crates more; B asks one server for one name every few seconds.)
mod dns {
    use std::net::{IpAddr, SocketAddr};

    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    use super::Unresolved;

    /// The A and AAAA records of `host` at `server`.
    pub async fn addresses(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, Unresolved> {
        let mut name =
            Name::from_ascii(host).map_err(|e| Unresolved::gone(format!("not a DNS name: {e}")))?;
        name.set_fqdn(true);
        let mut found = ask(server, &name, RecordType::A).await?;
        found.extend(ask(server, &name, RecordType::AAAA).await?);
        Ok(found)
    }

    async fn ask(
        server: SocketAddr,
        name: &Name,
        kind: RecordType,
    ) -> Result<Vec<IpAddr>, Unresolved> {
        let passing = |e: &dyn std::fmt::Display| Unresolved::passing(format!("{server}: {e}"));
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name.clone(), kind));
        let bytes = query.to_vec().map_err(|e| passing(&e))?;
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| passing(&e))?;
        socket
            .send_to(&bytes, server)
            .await
            .map_err(|e| passing(&e))?;
        let mut buffer = vec![0u8; 4096];
        loop {
            let (read, from) = socket
                .recv_from(&mut buffer)
                .await
                .map_err(|e| passing(&e))?;
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
                ResponseCode::NXDomain => Err(Unresolved::gone(format!("{server}: no such name"))),
                code => Err(passing(&code)),
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
        assert!(missing.as_ref().is_err_and(|e| e.gone), "{missing:?}");
    }
}
