//! What of a caller's trace context goes on to a callee, and within which bounds, so that no
//! caller's headers can fail or fill a call onwards (a 16 KB `tracestate` passed on as
//! received once made A answer 431 and B 502):
//!
//! - `tracestate` as W3C Trace Context allows it ([`bounded_tracestate`]): at most 32
//!   members, keys well formed and unique, cut to 512 characters as the specification says;
//!   anything else is dropped whole, never forwarded as received.
//! - `baggage` with this service's own `request.id` first, then the caller's entries in key
//!   order while they fit ([`baggage`]).

use http::HeaderMap;
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::BaggagePropagator;

use crate::observe::requests::id::BAGGAGE_KEY as REQUEST_ID_BAGGAGE;
use crate::observe::traces::propagation::{BAGGAGE, TRACESTATE};

/// Most list members a `tracestate` may have (W3C Trace Context, "tracestate Header Field
/// Values": "There can be a maximum of 32 list-members in a list").
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The length a kept `tracestate` is cut to. W3C: "Vendors SHOULD propagate at least 512
/// characters of a combined header"; beyond it, members longer than
/// [`LONG_TRACESTATE_MEMBER`] go first, then members from the end.
pub const MAX_TRACESTATE_LENGTH: usize = 512;

/// A member longer than this goes first when a `tracestate` is cut (W3C: "entries larger
/// than 128 characters long SHOULD be removed first").
pub const LONG_TRACESTATE_MEMBER: usize = 128;

/// The caller's `tracestate` (every `tracestate` header, joined, as W3C combines them) as
/// it may be kept and passed on: `None` when there is none, or when it is not a valid
/// list (a malformed member or key, a duplicate key, more than [`MAX_TRACESTATE_MEMBERS`]
/// members): an invalid header is dropped whole. A valid one longer than
/// [`MAX_TRACESTATE_LENGTH`] is cut as W3C says (see [`LONG_TRACESTATE_MEMBER`]).
pub fn bounded_tracestate(headers: &HeaderMap) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        let value = value.to_str().ok()?;
        for member in value.split(',').map(|m| m.trim_matches([' ', '\t'])) {
            // Empty members are allowed (and not members): W3C, "Empty and whitespace-only
            // list members are allowed".
            if member.is_empty() {
                continue;
            }
            if members.len() == MAX_TRACESTATE_MEMBERS {
                return None;
            }
            let (key, value) = member.split_once('=')?;
            if !is_tracestate_key(key) || !is_tracestate_value(value) {
                return None;
            }
            if members
                .iter()
                .any(|m| m.split_once('=').is_some_and(|(k, _)| k == key))
            {
                return None;
            }
            members.push(member);
        }
    }
    if members.is_empty() {
        return None;
    }
    let length = |members: &[&str]| members.iter().map(|m| m.len() + 1).sum::<usize>() - 1;
    if length(&members) > MAX_TRACESTATE_LENGTH {
        members.retain(|m| m.len() <= LONG_TRACESTATE_MEMBER);
        while !members.is_empty() && length(&members) > MAX_TRACESTATE_LENGTH {
            members.pop();
        }
    }
    (!members.is_empty()).then(|| members.join(","))
}

/// A W3C `tracestate` key: `simple-key`, or `tenant-id@system-id`.
fn is_tracestate_key(key: &str) -> bool {
    let rest = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b);
    let part = |text: &str, first: fn(u8) -> bool, max: usize| {
        let bytes = text.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= max
            && first(bytes[0])
            && bytes[1..].iter().all(|b| rest(*b))
    };
    match key.split_once('@') {
        None => part(key, |b| b.is_ascii_lowercase(), 256),
        Some((tenant, system)) => {
            part(
                tenant,
                |b| b.is_ascii_lowercase() || b.is_ascii_digit(),
                241,
            ) && part(system, |b| b.is_ascii_lowercase(), 14)
        }
    }
}

/// A W3C `tracestate` value: 1 to 256 printable ASCII characters but `,` and `=`, the last
/// not a space.
fn is_tracestate_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=256).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| matches!(b, 0x20..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E))
        && bytes.last() != Some(&b' ')
}

/// The largest `baggage` header passed on to a callee, in bytes. W3C Baggage asks that at
/// least 8192 bytes be propagated, but a caller's entries re-encoded can grow past what the
/// callee accepts in a whole request head (16 KiB by default here); a baggage that large is
/// not what this system uses baggage for (the request id), so it is cut here.
pub const MAX_BAGGAGE_BYTES: usize = 4096;

/// Most `baggage` members passed on to a callee, this service's own included: W3C
/// Baggage's "at least 64 list-members" (and the OpenTelemetry SDK's own limit).
pub const MAX_BAGGAGE_MEMBERS: usize = 64;

/// The `baggage` a call onwards carries, and what was left out of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Baggage {
    /// The header's value (empty: no header).
    pub header: String,
    /// The caller's entries in it.
    pub kept: usize,
    /// The caller's entries left out.
    pub dropped: usize,
}

/// `baggage` with `request.id` first (this service's own entry, so no caller can push it
/// out), then the caller's entries in key order, each as the W3C propagator writes it,
/// while the next one fits in [`MAX_BAGGAGE_MEMBERS`] members and
/// [`MAX_BAGGAGE_BYTES`] bytes: the same baggage always keeps the same entries.
pub fn baggage(caller: &opentelemetry::baggage::Baggage, request_id: &str) -> Baggage {
    let encode = |key: &opentelemetry::Key,
                  value: &opentelemetry::StringValue,
                  metadata: &opentelemetry::baggage::BaggageMetadata| {
        let mut one = opentelemetry::baggage::Baggage::new();
        let _ = one.insert_with_metadata(key.clone(), value.clone(), metadata.clone());
        let mut headers = HeaderMap::new();
        BaggagePropagator::new().inject_context(
            &opentelemetry::Context::new().with_baggage(one),
            &mut HeaderInjector(&mut headers),
        );
        headers
            .get(BAGGAGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut members: Vec<String> = Vec::new();
    if !request_id.is_empty() {
        let own = opentelemetry::Key::from_static_str(REQUEST_ID_BAGGAGE);
        members.extend(encode(
            &own,
            &request_id.to_owned().into(),
            &Default::default(),
        ));
    }
    let mut theirs: Vec<_> = caller
        .iter()
        .filter(|(key, _)| key.as_str() != REQUEST_ID_BAGGAGE || request_id.is_empty())
        .collect();
    theirs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut length = members.iter().map(String::len).sum::<usize>();
    let mut dropped = 0;
    for (key, (value, metadata)) in &theirs {
        let member = encode(key, value, metadata);
        let fits = member.as_ref().is_some_and(|m| {
            members.len() < MAX_BAGGAGE_MEMBERS
                && length + usize::from(!members.is_empty()) + m.len() <= MAX_BAGGAGE_BYTES
        });
        match member {
            Some(member) if fits && dropped == 0 => {
                length += usize::from(!members.is_empty()) + member.len();
                members.push(member);
            }
            _ => dropped += 1,
        }
    }
    Baggage {
        header: members.join(","),
        kept: theirs.len() - dropped,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn tracestate_of(values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("tracestate", HeaderValue::from_str(value).expect("header"));
        }
        bounded_tracestate(&headers)
    }

    /// W3C Trace Context: at most 32 members, unique well-formed keys, values of printable
    /// characters; an invalid header is dropped whole.
    #[test]
    fn a_tracestate_is_kept_only_as_w3c_allows() {
        assert_eq!(tracestate_of(&[]), None);
        assert_eq!(tracestate_of(&[" , "]), None, "only empty members");
        assert_eq!(
            tracestate_of(&["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7", "t@sys=x y"]).as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,t@sys=x y"),
            "two headers are one list"
        );
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(tracestate_of(&[&members(32)]).is_some());
        for invalid in [
            members(33),
            "a=1,b=2,a=3".to_owned(),
            "Upper=1".to_owned(),
            "1abc=1".to_owned(),
            "a=".to_owned(),
            "a=b=c".to_owned(),
            "novalue".to_owned(),
            "t@Sys=1".to_owned(),
            format!("a={}", "x".repeat(257)),
        ] {
            assert_eq!(tracestate_of(&[&invalid]), None, "{invalid}");
        }
    }

    /// A valid `tracestate` longer than 512 characters is cut as W3C says: members over 128
    /// characters first, then from the end.
    #[test]
    fn a_long_tracestate_is_cut_long_members_first_then_from_the_end() {
        let long = format!("long={}", "x".repeat(200));
        let mut members: Vec<String> = (0..20)
            .map(|i| format!("k{i:02}={}", "v".repeat(36)))
            .collect();
        members.insert(3, long.clone());
        let kept = tracestate_of(&[&members.join(",")]).expect("kept");
        assert!(kept.len() <= MAX_TRACESTATE_LENGTH, "{}", kept.len());
        assert!(!kept.contains("long="), "the long member went first");
        assert!(
            kept.starts_with("k00=") && kept.contains("k11=") && !kept.contains("k12="),
            "{kept}"
        );
    }

    /// The request id is this service's own entry: no caller's baggage can push it out,
    /// and what of the caller's goes on is always the same.
    #[test]
    fn the_request_id_goes_on_first_and_the_callers_entries_are_capped_the_same_way_each_time() {
        let mut caller = opentelemetry::baggage::Baggage::new();
        for i in 0..64 {
            let _ = caller.insert(format!("k{i:03}"), "v".repeat(40));
        }
        let forwarded = baggage(&caller, "ours");
        assert!(
            forwarded.header.starts_with("request.id=ours,"),
            "{}",
            forwarded.header
        );
        assert!(forwarded.header.len() <= MAX_BAGGAGE_BYTES);
        assert_eq!(forwarded.kept + forwarded.dropped, 64);
        assert!(forwarded.dropped > 0);
        let keys: Vec<&str> = forwarded
            .header
            .split(',')
            .skip(1)
            .map(|m| m.split('=').next().expect("key"))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "in key order");
        assert_eq!(keys.first(), Some(&"k000"));
        assert_eq!(baggage(&caller, "ours"), forwarded, "the same each time");

        let mut many = opentelemetry::baggage::Baggage::new();
        for i in 0..63 {
            let _ = many.insert(format!("k{i:03}"), "v");
        }
        let _ = many.insert("request.id", "theirs");
        let forwarded = baggage(&many, "ours");
        assert_eq!(forwarded.header.split(',').count(), MAX_BAGGAGE_MEMBERS);
        assert!(forwarded.header.starts_with("request.id=ours,"));
        assert!(!forwarded.header.contains("theirs"));
        assert_eq!(forwarded.dropped, 0);
    }
}
