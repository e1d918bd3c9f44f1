//! The values of `OTEL_*` variables that need more than a comparison: endpoints, headers,
//! resource attributes (W3C baggage syntax, percent-encoded).

/// The SDK's default queue size (`OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BLRP_MAX_QUEUE_SIZE`).
pub(crate) const DEFAULT_QUEUE_SIZE: u32 = 2048;

/// Why `value` is not an endpoint this build can export to: an `http://` URL with a host.
pub(crate) fn check_endpoint(value: &str) -> Result<(), &'static str> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| "not a URL (e.g. http://localhost:4318)")?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Some("http") => Err("a URL with a host (e.g. http://localhost:4318)"),
        Some("https") => Err("https needs TLS, which this build does not have: use http://"),
        _ => Err("an http:// URL (e.g. http://localhost:4318)"),
    }
}

/// Why `value` is not a list of export headers: `name=value` members, comma-separated,
/// each name a header name and each value, percent-decoded, a header value. Says which
/// member, never what it holds.
pub(crate) fn check_headers(value: &str) -> Result<(), String> {
    for (n, member) in members(value).enumerate() {
        let n = n + 1;
        let (name, value) = member
            .split_once('=')
            .ok_or_else(|| format!("member {n} has no '=': name=value,… expected"))?;
        if http::HeaderName::from_bytes(name.trim().as_bytes()).is_err() {
            return Err(format!("member {n} does not start with a header name"));
        }
        let decoded = percent_decode(value.trim()).ok_or_else(|| {
            format!("member {n}'s value is not percent-encoded text (a % not followed by two hex digits)")
        })?;
        if decoded.is_empty() || http::HeaderValue::from_str(&decoded).is_err() {
            return Err(format!("member {n}'s value is empty or not a header value"));
        }
    }
    Ok(())
}

/// The members of a comma-separated list, trimmed; blank ones (a trailing comma) skipped.
fn members(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|m| !m.is_empty())
}

/// `OTEL_RESOURCE_ATTRIBUTES` decoded: `key=value` members, comma-separated, as W3C Baggage
/// writes them (without properties); each key a token, each value percent-decoded. Any
/// malformed member makes the whole value an error, as the resource specification says.
pub(crate) fn resource_attributes(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut attributes = Vec::new();
    for (n, member) in members(value).enumerate() {
        let n = n + 1;
        let (key, value) = member
            .split_once('=')
            .ok_or_else(|| format!("member {n} has no '='"))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || !key.bytes().all(is_token_byte) {
            return Err(format!("member {n}'s key is not a token"));
        }
        if !value.bytes().all(is_baggage_octet_or_percent) {
            return Err(format!(
                "member {n}'s value has a character that must be percent-encoded (a space, quote, comma, semicolon or backslash)"
            ));
        }
        let decoded = percent_decode(value)
            .ok_or_else(|| format!("member {n}'s value does not percent-decode to UTF-8"))?;
        attributes.push((key.to_owned(), decoded));
    }
    Ok(attributes)
}

/// An RFC 9110 token character.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// W3C Baggage's `baggage-octet` (printable ASCII but space, `"`, `,`, `;` and `\`); `%`
/// is one, as the start of an escape.
fn is_baggage_octet_or_percent(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// `%XX` escapes decoded; `None` when one is cut short or not hex, or the result is not
/// UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}
