//! The brake on wrong inbound keys: a peer that sends `AUTH_FAILURE_LIMIT` wrong
//! `PROXY_API_KEY`s within a minute gets a 429 with `retry-after` for a minute, without its
//! key being checked, and its log lines are counted instead of written.
//!
//! `Table` is the pure state machine, with the clock passed in, and bounded: at most
//! `MAX_PEERS` peers are remembered, an IPv6 peer by its /64 (one host's usual share). `Brake`
//! adds the lock, the clock and the summary lines. It does not check keys (that is
//! `inbound.rs`) nor write the request's own line (that is `server.rs`, told whether to).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

/// Failures are counted over this long from a peer's first one.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a braked peer gets 429s.
pub const BRAKED: Duration = Duration::from_secs(60);
/// Most peers remembered at once.
pub const MAX_PEERS: usize = 4096;

/// A peer as the brake knows it: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(IpAddr);

impl Peer {
    pub fn of(ip: IpAddr) -> Peer {
        match ip {
            IpAddr::V4(_) => Peer(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer(IpAddr::V4(v4)),
                None => Peer(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "{ip}/64"),
        }
    }
}

/// What the table remembers of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    /// Start of the current window of failures.
    since: Instant,
    failures: u32,
    /// Braked until then.
    until: Option<Instant>,
    /// Requests not logged since the last line about this peer.
    unlogged: u64,
}

impl Record {
    /// Whether this record still matters at `now`.
    fn live(&self, now: Instant) -> bool {
        match self.until {
            Some(until) => now < until,
            None => now.duration_since(self.since) < WINDOW,
        }
    }
}

/// Before a request's key is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Check the key as usual.
    Pass,
    /// The peer's brake has just ended: check the key; `refused` requests got a 429 meanwhile.
    Released { refused: u64 },
    /// Braked: a 429 without checking, and no log line.
    Refuse { retry_after: Duration },
}

/// After a wrong key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The first of a window: log it; `unlogged` failures of the previous window were not.
    First { unlogged: u64 },
    /// Counted, not logged.
    Quiet,
    /// The limit is reached: the peer is braked from now on (`unlogged` failures not logged).
    Braked { failures: u32, over: Duration, unlogged: u64 },
}

/// The peers with recent failures.
#[derive(Debug)]
pub struct Table {
    limit: u32,
    peers: HashMap<Peer, Record>,
    /// Expired records are swept when the table is full, at most once a second.
    next_sweep: Option<Instant>,
}

impl Table {
    pub fn new(limit: u32) -> Table {
        Table { limit, peers: HashMap::new(), next_sweep: None }
    }

    pub fn admit(&mut self, peer: Peer, now: Instant) -> Admit {
        let Some(record) = self.peers.get_mut(&peer) else {
            return Admit::Pass;
        };
        match record.until {
            Some(until) if now < until => {
                record.unlogged += 1;
                Admit::Refuse { retry_after: until - now }
            }
            Some(_) => {
                let refused = record.unlogged;
                self.peers.remove(&peer);
                Admit::Released { refused }
            }
            None => Admit::Pass,
        }
    }

    pub fn fail(&mut self, peer: Peer, now: Instant) -> Failure {
        let fresh = Record { since: now, failures: 0, until: None, unlogged: 0 };
        let carried = match self.peers.get(&peer) {
            Some(r) if r.until.is_none() && now.duration_since(r.since) < WINDOW => None,
            Some(r) => Some(r.unlogged),
            None => {
                self.make_room(now);
                Some(0)
            }
        };
        let record = self.peers.entry(peer).or_insert(fresh);
        if let Some(unlogged) = carried {
            *record = Record { unlogged, ..fresh };
        }
        record.failures += 1;
        if record.failures >= self.limit {
            let braked = Failure::Braked {
                failures: record.failures,
                over: now.duration_since(record.since),
                unlogged: record.unlogged,
            };
            *record = Record { until: Some(now + BRAKED), unlogged: 0, ..*record };
            return braked;
        }
        match carried {
            Some(unlogged) => {
                record.unlogged = 0;
                Failure::First { unlogged }
            }
            None => {
                record.unlogged += 1;
                Failure::Quiet
            }
        }
    }

    /// Before a new peer is remembered: forget the expired ones if the table is full (at
    /// most once a second), and any one if it is still full.
    fn make_room(&mut self, now: Instant) {
        if self.peers.len() < MAX_PEERS {
            return;
        }
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.peers.retain(|_, r| r.live(now));
            self.next_sweep = Some(now + Duration::from_secs(1));
        }
        if self.peers.len() >= MAX_PEERS {
            if let Some(&any) = self.peers.keys().next() {
                self.peers.remove(&any);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

/// The table behind a lock, with the clock and the summary lines; off when
/// `AUTH_FAILURE_LIMIT` is 0.
#[derive(Debug)]
pub struct Brake(Option<Mutex<Table>>);

impl Brake {
    pub fn new(limit: u32) -> Brake {
        Brake((limit > 0).then(|| Mutex::new(Table::new(limit))))
    }

    fn table(&self) -> Option<std::sync::MutexGuard<'_, Table>> {
        Some(crate::sync::lock(self.0.as_ref()?))
    }

    /// Before the key is checked: an error (429) while `peer` is braked.
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<(), Error> {
        let (Some(ip), Some(mut table)) = (peer, self.table()) else {
            return Ok(());
        };
        let peer = Peer::of(ip);
        match table.admit(peer, Instant::now()) {
            Admit::Pass => Ok(()),
            Admit::Released { refused } => {
                drop(table);
                crate::info!("wrong-key brake on {peer} released; it got {refused} more 429s (not logged)");
                Ok(())
            }
            Admit::Refuse { retry_after } => Err(Error::Braked { retry_after }),
        }
    }

    /// After a wrong key from `peer`: whether the request's own line is to be written.
    pub fn failed(&self, peer: Option<IpAddr>) -> bool {
        let (Some(ip), Some(mut table)) = (peer, self.table()) else {
            return true;
        };
        let peer = Peer::of(ip);
        let failure = table.fail(peer, Instant::now());
        drop(table);
        match failure {
            Failure::First { unlogged: 0 } => true,
            Failure::First { unlogged } => {
                crate::warn!(
                    "{unlogged} more wrong proxy API keys from {peer} in the minute before (not logged)"
                );
                true
            }
            Failure::Quiet => false,
            Failure::Braked { failures, over, unlogged } => {
                crate::warn!(
                    "{failures} wrong proxy API keys from {peer} in {:.1}s ({unlogged} not logged): \
                     429 without checking for {}s; further lines for it are counted, not written",
                    over.as_secs_f64(),
                    BRAKED.as_secs()
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> Peer {
        Peer::of(text.parse().unwrap())
    }

    #[test]
    fn peers_are_addresses_or_ipv6_64s() {
        assert_eq!(peer("2001:db8:1:2:aaaa::1"), peer("2001:db8:1:2:bbbb::9"));
        assert_ne!(peer("2001:db8:1:2::1"), peer("2001:db8:1:3::1"));
        assert_eq!(peer("::ffff:127.0.0.2"), peer("127.0.0.2"));
        assert_ne!(peer("127.0.0.1"), peer("127.0.0.2"));
        assert_eq!(peer("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(peer("127.0.0.2").to_string(), "127.0.0.2");
    }

    /// One peer's story, step by step: (seconds since the start, what happened, the verdict).
    #[test]
    fn a_peer_is_braked_after_the_limit_then_released() {
        #[derive(Debug, PartialEq)]
        enum Step {
            In(Admit),
            Fail(Failure),
        }
        use Step::{Fail, In};
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let a = peer("10.0.0.1");
        let mut table = Table::new(3);
        let start = Instant::now();
        let script: Vec<(Duration, bool, Step)> = vec![
            (secs(0), false, In(Admit::Pass)),
            (secs(0), true, Fail(Failure::First { unlogged: 0 })),
            (secs(1), true, Fail(Failure::Quiet)),
            (secs(2), false, In(Admit::Pass)),
            (secs(2), true, Fail(Failure::Braked { failures: 3, over: secs(2), unlogged: 1 })),
            (secs(3), false, In(Admit::Refuse { retry_after: secs(59) })),
            (ms(61_500), false, In(Admit::Refuse { retry_after: ms(500) })),
            (secs(62), false, In(Admit::Released { refused: 2 })),
            (secs(62), false, In(Admit::Pass)),
            (secs(63), true, Fail(Failure::First { unlogged: 0 })),
            (secs(64), true, Fail(Failure::Quiet)),
            // a new window: the limit is counted afresh, the unlogged one reported
            (secs(123), true, Fail(Failure::First { unlogged: 1 })),
            (secs(124), true, Fail(Failure::Quiet)),
        ];
        for (i, (at, failed, expected)) in script.into_iter().enumerate() {
            let got = match failed {
                true => Fail(table.fail(a, start + at)),
                false => In(table.admit(a, start + at)),
            };
            assert_eq!(got, expected, "step {i} at {at:?}");
        }
    }

    #[test]
    fn peers_are_braked_apart() {
        let (a, b) = (peer("10.0.0.1"), peer("10.0.0.2"));
        let mut table = Table::new(2);
        let now = Instant::now();
        table.fail(a, now);
        assert!(matches!(table.fail(a, now), Failure::Braked { .. }));
        assert!(matches!(table.admit(a, now), Admit::Refuse { .. }));
        assert_eq!(table.admit(b, now), Admit::Pass);
        assert_eq!(table.fail(b, now), Failure::First { unlogged: 0 });
    }

    #[test]
    fn a_limit_of_one_brakes_at_the_first_failure() {
        let mut table = Table::new(1);
        let now = Instant::now();
        let a = peer("10.0.0.1");
        assert_eq!(table.fail(a, now), Failure::Braked { failures: 1, over: Duration::ZERO, unlogged: 0 });
        assert_eq!(table.admit(a, now), Admit::Refuse { retry_after: BRAKED });
    }

    #[test]
    fn memory_is_bounded() {
        let mut table = Table::new(5);
        let start = Instant::now();
        for n in 0..(MAX_PEERS as u32 + 100) {
            table.fail(Peer::of(IpAddr::V4(n.into())), start);
        }
        assert_eq!(table.len(), MAX_PEERS, "full: one forgotten for each new one");
        // a minute on, the expired ones are swept for the next new peer
        let later = start + WINDOW + Duration::from_secs(1);
        table.fail(peer("192.168.0.1"), later);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_off_brake_passes_everything() {
        let brake = Brake::new(0);
        let ip = Some("10.0.0.1".parse().unwrap());
        for _ in 0..100 {
            assert!(brake.failed(ip));
        }
        assert_eq!(brake.admit(ip), Ok(()));
    }
}
