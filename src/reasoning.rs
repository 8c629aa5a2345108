//! The reasoning store: what a chat client cannot carry from one turn to the next.
//!
//! A reasoning model on the Responses API does best in a tool loop when the reasoning items of
//! its previous turn are sent back in front of that turn's function calls (with `store: false`,
//! their `encrypted_content`). A Responses client does that; a chat client drops them, since
//! chat has no place for them. For chat clients on a responses-only upstream the proxy keeps
//! them here, keyed by the call ids of the turn that made them (`translate::chat_answer`
//! hands them over), and the next request whose assistant message carries those ids gets them
//! back (`translate::chat_request` asks through `recall`).
//!
//! Bounded in bytes (`REASONING_STORE_MB`, oldest out first) and time
//! (`REASONING_STORE_SECONDS`); the clock is passed in. One store per process: with several
//! replicas behind a balancer, a request that lands on another replica than its previous turn
//! misses, and a miss only costs quality (the model reasons again), never correctness.
//! Not here: what the items contain (they are kept as the upstream wrote them) and the counting
//! (`metrics.rs`, from what these functions return).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config;
use crate::translate::chat_answer::Reasoning;

/// One turn's reasoning items.
#[derive(Debug)]
struct Entry {
    call_ids: Vec<String>,
    items: Vec<String>,
    bytes: usize,
    at: Instant,
}

/// The kept turns, oldest first, and the call ids that find them. Pure: the clock is passed in.
#[derive(Debug, Default)]
pub struct Kept {
    /// By insertion number, which is also age order.
    entries: BTreeMap<u64, Entry>,
    by_call: HashMap<String, u64>,
    next: u64,
    bytes: usize,
}

/// What a turn's items cost beside their text: the ids and the maps' entries.
const OVERHEAD: usize = 64;

impl Kept {
    /// Keep `turn` at `now`; entries older than `ttl`, then the oldest while over `max_bytes`,
    /// go. How many were evicted. A turn larger than the whole store is not kept.
    pub fn put(&mut self, turn: Reasoning, now: Instant, limits: &config::Reasoning) -> usize {
        let bytes = turn.items.iter().chain(&turn.call_ids).map(|s| s.len() + OVERHEAD).sum::<usize>();
        let mut evicted = self.expire(now, limits.ttl);
        if bytes > limits.store_bytes {
            return evicted;
        }
        while self.bytes + bytes > limits.store_bytes {
            let Some((&oldest, _)) = self.entries.iter().next() else { break };
            self.remove(oldest);
            evicted += 1;
        }
        let n = self.next;
        self.next += 1;
        for id in &turn.call_ids {
            if let Some(previous) = self.by_call.insert(id.clone(), n) {
                // The same call id again (a client replaying a turn): the newer turn wins.
                self.remove_unless(previous, n);
            }
        }
        self.bytes += bytes;
        self.entries.insert(n, Entry { call_ids: turn.call_ids, items: turn.items, bytes, at: now });
        evicted
    }

    /// The items kept for the turn that made any of `call_ids`, if still fresh at `now`.
    pub fn recall(&self, call_ids: &[&str], now: Instant, ttl: Duration) -> Option<Vec<String>> {
        let n = call_ids.iter().find_map(|id| self.by_call.get(*id))?;
        let entry = self.entries.get(n)?;
        (now.saturating_duration_since(entry.at) < ttl).then(|| entry.items.clone())
    }

    /// Entries older than `ttl` at `now` go; how many.
    fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut evicted = 0;
        while let Some((&oldest, entry)) = self.entries.iter().next() {
            if now.saturating_duration_since(entry.at) < ttl {
                break;
            }
            self.remove(oldest);
            evicted += 1;
        }
        evicted
    }

    fn remove(&mut self, n: u64) {
        let Some(entry) = self.entries.remove(&n) else { return };
        self.bytes -= entry.bytes;
        for id in &entry.call_ids {
            if self.by_call.get(id) == Some(&n) {
                self.by_call.remove(id);
            }
        }
    }

    /// Remove entry `n` when no call id finds it any more (all moved to `newer`).
    fn remove_unless(&mut self, n: u64, newer: u64) {
        let still_found = self.entries.get(&n).is_some_and(|e| {
            e.call_ids.iter().any(|id| self.by_call.get(id).is_some_and(|&m| m == n && m != newer))
        });
        if !still_found {
            self.remove(n);
        }
    }

    /// Bytes held, and turns kept.
    pub fn size(&self) -> (usize, usize) {
        (self.bytes, self.entries.len())
    }
}

/// The process's store: `Kept` under a lock, with its limits.
#[derive(Debug)]
pub struct Store {
    kept: Mutex<Kept>,
    limits: config::Reasoning,
}

impl Store {
    pub fn new(limits: config::Reasoning) -> Store {
        Store { kept: Mutex::new(Kept::default()), limits }
    }

    /// Whether anything is kept at all (`REASONING_STORE_MB` > 0).
    pub fn on(&self) -> bool {
        self.limits.store_bytes > 0
    }

    /// Keep `turn`; how many turns were evicted for it.
    pub fn put(&self, turn: Reasoning, now: Instant) -> usize {
        crate::sync::lock(&self.kept).put(turn, now, &self.limits)
    }

    pub fn recall(&self, call_ids: &[&str], now: Instant) -> Option<Vec<String>> {
        crate::sync::lock(&self.kept).recall(call_ids, now, self.limits.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(ids: &[&str], item: &str) -> Reasoning {
        Reasoning { call_ids: ids.iter().map(|s| s.to_string()).collect(), items: vec![item.to_string()] }
    }

    fn limits(store_bytes: usize, secs: u64) -> config::Reasoning {
        config::Reasoning { store_bytes, ttl: Duration::from_secs(secs), summaries: false }
    }

    #[test]
    fn kept_by_any_call_id_until_its_time() {
        let (t0, l) = (Instant::now(), limits(1 << 20, 60));
        let mut k = Kept::default();
        assert_eq!(k.put(turn(&["a", "b"], "R1"), t0, &l), 0);
        let s = Duration::from_secs;
        let cases: [(&[&str], Duration, Option<&str>); 5] = [
            (&["a"], s(0), Some("R1")),
            (&["x", "b"], s(59), Some("R1")),
            (&["x"], s(1), None),
            (&[], s(1), None),
            (&["a"], s(60), None),
        ];
        for (ids, after, expected) in cases {
            let got = k.recall(ids, t0 + after, l.ttl);
            assert_eq!(got, expected.map(|e| vec![e.to_string()]), "{ids:?} after {after:?}");
        }
        // the next put expires it
        assert_eq!(k.put(turn(&["c"], "R2"), t0 + s(61), &l), 1);
        assert_eq!(k.size().1, 1);
        assert_eq!(k.recall(&["a"], t0 + s(61), l.ttl), None);
    }

    #[test]
    fn bounded_in_bytes_oldest_out_first() {
        let t0 = Instant::now();
        let item = "x".repeat(1000);
        let one = item.len() + OVERHEAD + 1 + OVERHEAD;
        let l = limits(3 * one, 3600);
        let mut k = Kept::default();
        let evicted: Vec<usize> =
            ["a", "b", "c", "d", "e"].iter().map(|id| k.put(turn(&[id], &item), t0, &l)).collect();
        assert_eq!(evicted, [0, 0, 0, 1, 1]);
        assert_eq!(k.size(), (3 * one, 3));
        let found: Vec<bool> =
            ["a", "b", "c", "d", "e"].iter().map(|id| k.recall(&[id], t0, l.ttl).is_some()).collect();
        assert_eq!(found, [false, false, true, true, true]);
        // larger than the whole store: not kept, nothing evicted for it
        assert_eq!(k.put(turn(&["big"], &"y".repeat(4 * one)), t0, &l), 0);
        assert_eq!(k.recall(&["big"], t0, l.ttl), None);
        assert_eq!(k.size().1, 3);
    }

    #[test]
    fn a_replayed_call_id_finds_the_newer_turn() {
        let (t0, l) = (Instant::now(), limits(1 << 20, 60));
        let mut k = Kept::default();
        k.put(turn(&["a"], "old"), t0, &l);
        k.put(turn(&["a"], "new"), t0, &l);
        assert_eq!(k.recall(&["a"], t0, l.ttl), Some(vec!["new".to_string()]));
        assert_eq!(k.size().1, 1, "the old turn, found by no id, is gone");
    }
}
