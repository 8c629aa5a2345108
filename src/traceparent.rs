//! Following one request from client to upstream and back: its W3C trace context and its
//! request id.
//!
//! A request carries the client's `traceparent` (W3C Trace Context:
//! `version-traceid-parentid-flags`) or, without one or with a malformed one, starts a trace
//! of its own. Every attempt sends the upstream a `traceparent` with the same trace id and a
//! new parent id (the attempt is a span of its own), so retries and failovers of one turn
//! share a trace. Each request also gets a request id, returned to the client as
//! `x-request-id` on every answer (the upstream's own id, if any, travels on as
//! `x-upstream-request-id`); the log line shows both ids (`rid=`, `trace=`).
//!
//! Parsing and formatting are pure; `random` is the one source of new ids (std's
//! `RandomState`, seeded once per process, hashing a counter: no crate, no clock).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The header the trace context travels in.
pub const HEADER: &str = "traceparent";

/// The client's answer header with the request id, and the name the upstream's id is given.
pub const REQUEST_ID: &str = "x-request-id";
pub const UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";

/// One request's trace and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// 128 bits, never zero.
    pub trace: u128,
    /// The trace flags (bit 0: sampled), kept as the client sent them.
    pub flags: u8,
    /// The request id (64 bits, never zero).
    pub request: u64,
}

/// A request's context before its `traceparent` is read: a new trace (see `fresh`).
impl Default for Context {
    fn default() -> Context {
        Context::fresh()
    }
}

/// A parsed `traceparent`: trace id, parent id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace: u128,
    pub parent: u64,
    pub flags: u8,
}

/// Parse a `traceparent` value; `None` if it is malformed (then the request starts a new
/// trace). Version 00 is exactly 55 characters; a later version may carry more fields after
/// a `-`, which are ignored; version `ff`, upper-case hex and all-zero ids are invalid.
pub fn parse(value: &str) -> Option<Parent> {
    let v = value.trim().as_bytes();
    let version = hex(v.get(0..2)?)? as u8;
    let valid_length = match version {
        0x00 => v.len() == 55,
        0xff => false,
        _ => v.len() == 55 || (v.len() > 55 && v[55] == b'-'),
    };
    if !valid_length || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace = hex(&v[3..35])?;
    let parent = hex(&v[36..52])? as u64;
    let flags = hex(&v[53..55])? as u8;
    (trace != 0 && parent != 0).then_some(Parent { trace, parent, flags })
}

/// Lower-case hex digits as a number (at most 32 of them).
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &d| {
        let value = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((n << 4) | u128::from(value))
    })
}

impl Context {
    /// The context of a request whose `traceparent` header is `incoming`; `random` gives the
    /// new ids.
    pub fn new(incoming: Option<&str>, mut random: impl FnMut() -> u64) -> Context {
        let request = nonzero(random());
        match incoming.and_then(parse) {
            Some(p) => Context { trace: p.trace, flags: p.flags, request },
            None => {
                let trace = (u128::from(random()) << 64) | u128::from(random());
                Context { trace: trace.max(1), flags: 0x01, request }
            }
        }
    }

    /// A new trace and id, for an answer that has no request behind it (a local page).
    pub fn fresh() -> Context {
        Context::new(None, random)
    }

    /// The `traceparent` for one attempt: this trace, `span` as its parent id.
    pub fn child(&self, span: u64) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace, nonzero(span), self.flags)
    }

    /// The trace id as the log shows it.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace)
    }

    /// The request id as the client and the log see it.
    pub fn request_id(&self) -> String {
        format!("{:016x}", self.request)
    }
}

fn nonzero(n: u64) -> u64 {
    n.max(1)
}

/// Put the request id on an answer's headers: an upstream's own `x-request-id` is kept
/// under `x-upstream-request-id` (and returned, for the log), and ours is the one
/// `x-request-id`.
pub fn stamp(headers: &mut Vec<(String, String)>, request_id: &str) -> Option<String> {
    let mut upstream = None;
    for (name, value) in headers.iter_mut() {
        if name.eq_ignore_ascii_case(REQUEST_ID) {
            *name = UPSTREAM_REQUEST_ID.into();
            upstream.get_or_insert_with(|| value.clone());
        }
    }
    headers.push((REQUEST_ID.into(), request_id.into()));
    upstream
}

/// 64 new random bits: a per-process `RandomState` hashing a counter.
pub fn random() -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = KEYS.get_or_init(RandomState::new).build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parsing() {
        let ok =
            Some(Parent { trace: 0x4bf92f3577b34da6a3ce929d0e0e4736, parent: 0x00f067aa0ba902b7, flags: 1 });
        let cases: Vec<(String, Option<Parent>)> = vec![
            (GOOD.into(), ok),
            (format!(" {GOOD} "), ok),
            (GOOD.replace("-01", "-00"), ok.map(|p| Parent { flags: 0, ..p })),
            (GOOD.replacen("00-", "01-", 1) + "-what-comes-next", ok),
            (GOOD.replacen("00-", "01-", 1), ok),
            (GOOD.to_string() + "-x", None),
            (GOOD.replacen("00-", "ff-", 1), None),
            (GOOD.to_uppercase(), None),
            (GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)), None),
            (GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)), None),
            (GOOD.replace("-00f0", "_00f0"), None),
            (GOOD[..54].into(), None),
            (GOOD.replace('b', "g"), None),
            ("".into(), None),
            ("00-é".into(), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(&value), expected, "{value:?}");
        }
    }

    /// A request keeps the client's trace (and flags) or starts its own; every attempt is a
    /// new span of it; the ids are never zero.
    #[test]
    fn contexts_and_children() {
        let mut n = 0u64;
        let counter = || {
            n += 1;
            n
        };
        let kept = Context::new(Some(GOOD), counter);
        assert_eq!(
            (kept.trace_id(), kept.request_id()),
            ("4bf92f3577b34da6a3ce929d0e0e4736".into(), "0000000000000001".into())
        );
        assert_eq!(kept.child(0xab), "00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000ab-01");
        let mut script = [9u64, 2, 3].into_iter();
        let fresh = Context::new(Some("garbage"), || script.next().unwrap());
        assert_eq!(fresh, Context { trace: (2u128 << 64) | 3, flags: 1, request: 9 });
        assert_eq!(fresh.child(0), "00-00000000000000020000000000000003-0000000000000001-01");
        assert!(parse(&fresh.child(5)).is_some(), "what we send is valid");
        let zero = Context::new(None, || 0);
        assert_eq!((zero.trace, zero.request), (1, 1));
    }

    #[test]
    fn stamping() {
        let mut mine = vec![("x-ratelimit-remaining-requests".to_string(), "9".to_string())];
        assert_eq!(stamp(&mut mine, "r1"), None);
        assert_eq!(mine.last(), Some(&("x-request-id".to_string(), "r1".to_string())));
        let mut theirs = vec![("x-request-id".to_string(), "req_up".to_string())];
        assert_eq!(stamp(&mut theirs, "r2"), Some("req_up".into()));
        let names: Vec<(&str, &str)> = theirs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(names, vec![("x-upstream-request-id", "req_up"), ("x-request-id", "r2")]);
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| random()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
