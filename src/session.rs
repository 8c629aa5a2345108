//! Sessions that keep their prompt cache: which conversation a request belongs to, and the
//! order in which that conversation prefers the upstreams.
//!
//! Codex resends the whole conversation every turn and names it: the body's
//! `prompt_cache_key` (its thread id), and the `session_id` header (older versions also
//! `conversation_id`). OpenAI and Azure discount the input a deployment has seen before,
//! on that deployment only, so a conversation spread round-robin over N upstreams finds its
//! prefix cached about once in N turns. Each session ranks the upstreams by rendezvous
//! (highest random weight) hashing of its key and the upstream's number: the pool takes the
//! first ready one in that order, so a session stays on one upstream while it is healthy,
//! and when that one rests only its own sessions move (each to its second choice, spread
//! evenly over the others). The hash is fixed (FNV-1a, then a SplitMix64 finaliser), so
//! every replica of the proxy, and every restart, ranks a session the same way.
//!
//! Pure: no I/O, no clock, no randomness. `pool.rs` asks for the order; it never reads a
//! request.

use crate::hash::{fnv1a, splitmix64};
use crate::object::Object;

/// The longest session key read (longer ones are cut here: still stable, still distinct
/// enough).
const MAX_KEY: usize = 256;

/// The headers that name a session when the body does not, in the order they are asked.
pub const HEADERS: [&str; 2] = ["session_id", "conversation_id"];

/// The session a request belongs to: the body's `prompt_cache_key` (a non-empty string),
/// else the first non-empty `session_id` or `conversation_id` header; `None` for a request
/// that names none (it is spread as the routing says).
pub fn key<'a>(body: Option<&'a Object>, headers: &'a [(String, String)]) -> Option<&'a str> {
    let from_body =
        body.and_then(|o| o.get("prompt_cache_key")).and_then(string_of).filter(|k| !k.is_empty());
    let from_headers = || {
        HEADERS.iter().find_map(|wanted| {
            headers.iter().find(|(name, _)| name == wanted).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
        })
    };
    from_body.or_else(from_headers).map(|k| &k[..floor(k, MAX_KEY)])
}

/// A raw JSON value's text if it is a string written without escapes (Codex's ids are
/// UUIDs); one with escapes is read as its raw bytes, which is just as stable.
fn string_of(raw: &[u8]) -> Option<&str> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    std::str::from_utf8(inner).ok()
}

/// The largest char boundary of `s` at or below `max`.
fn floor(s: &str, max: usize) -> usize {
    (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// The upstream indices (0-based) in the order session `key` prefers them, for upstreams
/// numbered `numbers` (their 1-based numbers, in index order): highest weight first.
pub fn ranked(key: &str, numbers: &[usize]) -> Vec<usize> {
    let k = fnv1a(key.as_bytes());
    let mut order: Vec<(u64, usize)> =
        numbers.iter().enumerate().map(|(i, &number)| (weight(k, number), i)).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, i)| i).collect()
}

/// The weight of upstream `number` for a session whose key hashes to `k`.
fn weight(k: u64, number: usize) -> u64 {
    splitmix64(k ^ splitmix64(number as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys() {
        let uuid = "0199a3c4-5b6e-7f80-9a1b-2c3d4e5f6071";
        let long = "x".repeat(300);
        // (body, headers, expected key)
        type Case<'a> = (&'a str, Vec<(String, String)>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                r#"{"prompt_cache_key":"0199a3c4-5b6e-7f80-9a1b-2c3d4e5f6071"}"#,
                h(&[("session_id", "s")]),
                Some(uuid),
            ),
            (r#"{"prompt_cache_key":""}"#, h(&[("session_id", "s1")]), Some("s1")),
            (r#"{"prompt_cache_key":null}"#, h(&[("conversation_id", "c1")]), Some("c1")),
            (r#"{"prompt_cache_key":7}"#, h(&[]), None),
            (r#"{"input":"hi"}"#, h(&[("conversation_id", "c1"), ("session_id", "s1")]), Some("s1")),
            (r#"{"input":"hi"}"#, h(&[("session_id", "  "), ("conversation_id", "c1")]), Some("c1")),
            (r#"{"input":"hi"}"#, h(&[("x-session", "s")]), None),
            (r#"{"prompt_cache_key":"a\"b"}"#, h(&[]), Some(r#"a\"b"#)),
        ];
        for (body, headers, expected) in cases {
            let object = Object::parse(body.as_bytes().to_vec()).unwrap();
            assert_eq!(key(Some(&object), &headers), expected, "{body} {headers:?}");
        }
        let object = Object::parse(format!(r#"{{"prompt_cache_key":"{long}"}}"#).into_bytes()).unwrap();
        assert_eq!(key(Some(&object), &[]).map(str::len), Some(MAX_KEY), "a long key is cut");
        assert_eq!(key(None, &h(&[("session_id", "s")])), Some("s"), "a forwarded call's header");
    }

    /// The same session gets the same order turn after turn, whatever else the proxy serves.
    #[test]
    fn a_session_keeps_its_upstream() {
        let numbers = [1, 2, 3];
        let first = ranked("thread-42", &numbers);
        for _ in 0..100 {
            assert_eq!(ranked("thread-42", &numbers), first);
        }
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "every upstream once");
        // fixed across processes and replicas: these values are the hash's, not a seed's
        assert_eq!(ranked("thread-42", &numbers), ranked(&String::from("thread-42"), &[1, 2, 3]));
    }

    /// 10,000 sessions over three upstreams: each gets about a third; when one of them
    /// rests (is skipped), only its own sessions move, and they spread over the other two.
    #[test]
    fn spread_and_moves() {
        let numbers = [1, 2, 3];
        let keys: Vec<String> = (0..10_000).map(|i| format!("019a{i:08x}-session")).collect();
        let mut counts = [0usize; 3];
        let mut moved_to = [0usize; 3];
        for key in &keys {
            let order = ranked(key, &numbers);
            counts[order[0]] += 1;
            // upstream index 1 rests: the first ready one in the session's order
            let resting = 1;
            let chosen = *order.iter().find(|&&i| i != resting).unwrap();
            if order[0] != resting {
                assert_eq!(chosen, order[0], "{key}: a session of a healthy upstream stays");
            } else {
                moved_to[chosen] += 1;
            }
        }
        println!("10,000 sessions over 3 upstreams: {counts:?}; upstream 2's moved to {moved_to:?}");
        for (i, n) in counts.iter().enumerate() {
            assert!((3_233..=3_433).contains(n), "upstream {i}: {n} of 10000 sessions ({counts:?})");
        }
        let moved = counts[1];
        assert_eq!(moved_to[0] + moved_to[2], moved);
        for i in [0, 2] {
            let share = moved_to[i] as f64 / moved as f64;
            assert!((0.45..=0.55).contains(&share), "moved sessions to {i}: {moved_to:?}");
        }
    }
}
