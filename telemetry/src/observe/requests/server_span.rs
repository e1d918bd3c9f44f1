//! The OpenTelemetry HTTP server span of a sampled request (semantic conventions 1.26,
//! stable attributes): method, route, host, client and protocol, read from the request.
//!
//! A query string can carry a credential (`?password=…`), so the span's `url.query` keeps
//! every parameter's name but shows its value as `REDACTED`, except the parameters the
//! route declares ([`DeclaredQuery`]): the HTTP conventions' "sensitive content provided in
//! `url.query` SHOULD be scrubbed", done for every value the service does not know to be
//! harmless.

use std::sync::Arc;

use ::http::{HeaderMap, Version, header};
use axum::extract::Request;
use tracing::field;

use crate::observe::requests::layer::ClientAddress;
use crate::observe::requests::series::OTHER_METHOD;

/// The query parameters each route declares, whose values a span shows as sent; every
/// other value is [`REDACTED`].
#[derive(Debug, Clone)]
pub struct DeclaredQuery(pub(crate) Arc<[(&'static str, &'static [&'static str])]>);

impl Default for DeclaredQuery {
    /// `/metrics?format=…`, the one query parameter the shared routes take.
    fn default() -> Self {
        Self(Arc::new([("/metrics", &["format"][..])]))
    }
}

impl DeclaredQuery {
    /// The names `route` declares (none for a path no route matched).
    pub(crate) fn of(&self, route: Option<&str>) -> &'static [&'static str] {
        route
            .and_then(|route| self.0.iter().find(|(r, _)| *r == route))
            .map_or(&[], |(_, names)| names)
    }
}

/// What a query parameter's value becomes on a span when the route does not declare it
/// (the word the semantic conventions use).
pub const REDACTED: &str = "REDACTED";

/// `query` with the value of every parameter outside `declared` replaced by [`REDACTED`]
/// (`password=hunter2&format=json` → `password=REDACTED&format=json`): names stay, as the
/// HTTP conventions ask, and so does a parameter without a value. Borrowed when nothing
/// needs replacing.
pub fn redacted_query<'a>(query: &'a str, declared: &[&str]) -> std::borrow::Cow<'a, str> {
    let hidden = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(name, value)| !value.is_empty() && !declared.contains(&name))
    };
    if !query.split('&').any(hidden) {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut redacted = String::with_capacity(query.len());
    for (n, pair) in query.split('&').enumerate() {
        if n > 0 {
            redacted.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if hidden(pair) => {
                redacted.push_str(name);
                redacted.push('=');
                redacted.push_str(REDACTED);
            }
            _ => redacted.push_str(pair),
        }
    }
    std::borrow::Cow::Owned(redacted)
}

/// The OpenTelemetry HTTP server span of a sampled request (semantic conventions 1.26,
/// stable attributes), its query's values redacted but those of the `declared` parameters.
/// Numbers are recorded as i64: tracing-opentelemetry exports unsigned ones as text.
pub(crate) fn server_span(
    request: &Request,
    name: &str,
    method: &'static str,
    route: Option<&str>,
    version: &'static str,
    request_id: &str,
    declared: &[&str],
) -> tracing::Span {
    let query = request
        .uri()
        .query()
        .map(|query| redacted_query(query, declared));
    let method_original = (method == OTHER_METHOD).then(|| request.method().as_str());
    let headers = request.headers();
    let (server_address, server_port) = host_and_port(headers);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let client = request.extensions().get::<ClientAddress>();
    let client_address = client.map(|client| &*client.ip);
    let client_port = client.map(|client| i64::from(client.port));
    tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = field::Empty,
        error.type = field::Empty,
        http.request.method = method,
        http.request.method_original = method_original,
        http.route = route,
        http.response.status_code = field::Empty,
        url.scheme = "http",
        url.path = request.uri().path(),
        url.query = query.as_deref(),
        server.address = server_address,
        server.port = server_port,
        client.address = client_address,
        client.port = client_port,
        network.peer.address = client_address,
        network.peer.port = client_port,
        user_agent.original = user_agent,
        network.protocol.version = version,
        request.id = request_id,
    )
}

/// `server.address` and `server.port` from the `Host` header (port 80 when it names none);
/// neither when the header is not a valid `host[:port]` (RFC 9110 7.2: a registered name or
/// IPv4 address, or an IP literal in brackets). An IP literal's address is the address
/// alone, as the conventions write `server.address` (`::1`, not `[::1]`). Read in place,
/// never copied into an `Authority`.
fn host_and_port(headers: &HeaderMap) -> (Option<&str>, Option<i64>) {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(split_host)
        .map_or((None, None), |(name, port)| {
            (Some(name), Some(i64::from(port)))
        })
}

fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let literal = &host[1..end - 1];
        let ip_literal = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        (ip_literal.then_some(literal)?, &host[end..])
    } else {
        let end = host.find(':').unwrap_or(host.len());
        let name = &host[..end];
        let reg_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
        (reg_name.then_some(name)?, &host[end..])
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => 80,
        None => return None,
        Some("") => 80,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

/// `network.protocol.version`: "1.1", "1.0", ….
pub(crate) fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted_but_the_declared_ones() {
        for (query, declared, expected) in [
            ("password=hunter2", &[][..], "password=REDACTED"),
            ("format=json", &["format"][..], "format=json"),
            (
                "format=json&token=t1",
                &["format"][..],
                "format=json&token=REDACTED",
            ),
            ("x=1&&flag&y=", &[][..], "x=REDACTED&&flag&y="),
            ("a=b=c", &[][..], "a=REDACTED"),
            ("", &[][..], ""),
        ] {
            assert_eq!(redacted_query(query, declared), expected, "{query}");
        }
        assert!(matches!(
            redacted_query("format=json&flag", &["format"]),
            std::borrow::Cow::Borrowed(_)
        ));
        let declared = DeclaredQuery::default();
        assert_eq!(declared.of(Some("/metrics")), ["format"]);
        assert!(declared.of(Some("/token")).is_empty() && declared.of(None).is_empty());
    }

    #[test]
    fn host_header_gives_address_and_port() {
        for (host, expected) in [
            ("localhost:8080", Some(("localhost", 8080))),
            ("service-a", Some(("service-a", 80))),
            ("127.0.0.1:8081", Some(("127.0.0.1", 8081))),
            ("[::1]:8081", Some(("::1", 8081))),
            ("[::1]", Some(("::1", 80))),
            ("example.com:", Some(("example.com", 80))),
            ("example.com:65535", Some(("example.com", 65535))),
            ("example.com:65536", None),
            ("example.com:80a", None),
            ("example.com:-1", None),
            ("a:1:2", None),
            (":8080", None),
            ("", None),
            ("a b", None),
            ("user@host", None),
            ("[::1", None),
            ("[]:80", None),
            ("[::1]x", None),
            ("[::1]:80:80", None),
            ("host/path", None),
        ] {
            assert_eq!(split_host(host), expected, "{host:?}");
        }
    }
}
