//! File descriptors: the process's limit, raised at start to the hard limit (as nginx's
//! `worker_rlimit_nofile` and Go's runtime do), and what it leaves room for: the default
//! `MAX_CONCURRENT` and the connections served at once.
//!
//! `raise` is the only I/O here; `room` is a pure function of the limit, tested as such. It
//! does not count descriptors at run time nor refuse anything itself: tiny_http's accept loop
//! turns away connections past `Room::max_connections`, and `server.rs` requests past
//! `MAX_CONCURRENT`.

/// `MAX_CONCURRENT` when it is not set and the descriptor limit has room for it.
pub const DEFAULT_MAX_CONCURRENT: usize = 256;

/// Most connections served at once, whatever the limit: each holds a thread.
pub const MAX_CONNECTIONS: usize = 4096;

/// Descriptors that belong to no connection: stdin/out/err, the listener, the signal
/// handler's pipe, the resolver's and the CA file's while they are read (measured: 6 at
/// start), and the answers' rests still draining after their requests ended (at most 16,
/// `upstream.rs`), with some slack.
pub const RESERVED: u64 = 32;

/// Descriptors a request in flight needs beyond its client's connection: its upstream
/// connection, and one that the client pool may keep idle for another upstream host (the
/// pool keeps up to `MAX_CONCURRENT` idle connections).
pub const UPSTREAM_PER_REQUEST: u64 = 2;

/// Most connections past `max_connections` answered `503` at once (tiny_http closes the
/// others without a word); an eighth of the free descriptors when there are fewer.
const TURNED_AWAY: u64 = 64;

/// The soft and hard `RLIMIT_NOFILE`, and the soft one before `raise` changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
    pub raised_from: Option<u64>,
}

/// Raise the soft limit to the hard one. `None` if the limit cannot be read (then nothing
/// is derived from it).
pub fn raise() -> Option<Limit> {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    let soft = rlimit::increase_nofile_limit(hard).unwrap_or(before);
    Some(Limit { soft, hard, raised_from: Some(before).filter(|&b| b != soft) })
}

/// Where `MAX_CONCURRENT` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `DEFAULT_MAX_CONCURRENT`: the limit has room for it (or is unknown).
    Default,
    /// The default was lowered to what the limit has room for.
    Limit,
    /// Set by `MAX_CONCURRENT`; `fits` says whether the limit has room for it.
    Set { fits: bool },
}

/// What the descriptor limit leaves room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The limit it was computed for (`None`: unknown).
    pub limit: Option<Limit>,
    pub max_concurrent: usize,
    pub source: Source,
    /// Connections served at once, idle ones included (tiny_http's `max_connections`).
    pub max_connections: usize,
    /// Connections past those answered `503` at once (tiny_http's `turn_away`).
    pub turn_away: usize,
}

/// The room `limit` leaves, for `MAX_CONCURRENT` as `set`. Of the descriptors left after
/// `RESERVED` and those for connections being turned away, each request in flight needs one
/// for its client and `UPSTREAM_PER_REQUEST`, and as many again are kept for idle
/// connections: so the default is a quarter of them, at most `DEFAULT_MAX_CONCURRENT`. An
/// explicit value wins; if it does not fit, connections still get a third of them.
pub fn room(limit: Option<Limit>, set: Option<usize>) -> Room {
    let Some(known) = limit else {
        let max_concurrent = set.unwrap_or(DEFAULT_MAX_CONCURRENT);
        let source = set.map_or(Source::Default, |_| Source::Set { fits: true });
        let turn_away = TURNED_AWAY as usize;
        return Room { limit, max_concurrent, source, max_connections: MAX_CONNECTIONS, turn_away };
    };
    let free = known.soft.saturating_sub(RESERVED);
    let turned_away = (free / 8).min(TURNED_AWAY);
    let usable = free - turned_away;
    let per_request = 1 + UPSTREAM_PER_REQUEST;
    let fit = usize::try_from(usable / (per_request + 1)).unwrap_or(usize::MAX).max(1);
    let (max_concurrent, source) = match set {
        Some(n) => (n, Source::Set { fits: n <= fit }),
        None if fit >= DEFAULT_MAX_CONCURRENT => (DEFAULT_MAX_CONCURRENT, Source::Default),
        None => (fit, Source::Limit),
    };
    let upstream = (max_concurrent as u64).saturating_mul(UPSTREAM_PER_REQUEST);
    let connections = usable.saturating_sub(upstream).max(usable / 3).max(1);
    let max_connections = usize::try_from(connections).unwrap_or(usize::MAX).min(MAX_CONNECTIONS);
    Room { limit, max_concurrent, source, max_connections, turn_away: turned_away as usize }
}

impl Room {
    /// `MAX_CONCURRENT`'s value and where it came from, for `--check` and the banner.
    pub fn describe_concurrency(&self) -> String {
        let n = self.max_concurrent;
        let soft = self.limit.map_or(0, |l| l.soft);
        match self.source {
            Source::Default => format!("{n} (default)"),
            Source::Limit => {
                format!("{n} (default {DEFAULT_MAX_CONCURRENT} lowered to fit {soft} descriptors)")
            }
            Source::Set { fits: true } => format!("{n} (set)"),
            Source::Set { fits: false } => format!("{n} (set; more than {soft} descriptors have room for)"),
        }
    }

    /// The descriptor limit and what it serves, for `--check` and the banner.
    pub fn describe_limit(&self) -> String {
        let Some(l) = self.limit else {
            return format!("unknown; up to {} connections", self.max_connections);
        };
        let raised = l.raised_from.map_or(String::new(), |b| format!(", raised from {b}"));
        format!("{} (hard {}{raised}); up to {} connections", l.soft, l.hard, self.max_connections)
    }

    /// A warning when an explicit `MAX_CONCURRENT` does not fit the descriptor limit.
    pub fn warning(&self) -> Option<String> {
        let soft = self.limit?.soft;
        let per_request = 1 + UPSTREAM_PER_REQUEST;
        (self.source == Source::Set { fits: false }).then(|| {
            format!(
                "MAX_CONCURRENT={} needs up to {per_request} descriptors per request, more than the limit of \
                 {soft} has room for with idle connections: raise the limit (ulimit -n, LimitNOFILE=, \
                 --ulimit nofile=) or lower MAX_CONCURRENT; past {} connections new ones get a 503",
                self.max_concurrent, self.max_connections
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64) -> Option<Limit> {
        Some(Limit { soft, hard: soft, raised_from: None })
    }

    #[test]
    fn max_concurrent_and_connections_follow_the_limit() {
        // the limit, MAX_CONCURRENT as set; what is in force, where it came from, connections
        type Row = (Option<Limit>, Option<usize>, usize, Source, usize);
        let rows: [Row; 9] = [
            // the usual soft limit: the default no longer fits (256 requests x 4 > 1024)
            (limit(1024), None, 232, Source::Limit, 464),
            (limit(20_000), None, 256, Source::Default, MAX_CONNECTIONS),
            (limit(u64::MAX), None, 256, Source::Default, MAX_CONNECTIONS),
            (limit(128), None, 21, Source::Limit, 42),
            (limit(16), None, 1, Source::Limit, 1),
            (limit(1024), Some(100), 100, Source::Set { fits: true }, 728),
            (limit(1024), Some(1000), 1000, Source::Set { fits: false }, 309),
            (None, None, 256, Source::Default, MAX_CONNECTIONS),
            (None, Some(7), 7, Source::Set { fits: true }, MAX_CONNECTIONS),
        ];
        for (limit, set, concurrent, source, connections) in rows {
            let room = room(limit, set);
            let got = (room.max_concurrent, room.source, room.max_connections);
            assert_eq!(got, (concurrent, source, connections), "limit {limit:?}, MAX_CONCURRENT {set:?}");
        }
    }

    #[test]
    fn what_fits_leaves_descriptors_for_everything() {
        for soft in [64, 100, 128, 1024, 4096, 10_000, 65_536] {
            let room = room(limit(soft), None);
            let used = RESERVED
                + room.turn_away as u64
                + room.max_connections as u64
                + room.max_concurrent as u64 * UPSTREAM_PER_REQUEST;
            assert!(used <= soft, "{soft}: {room:?} needs {used}");
            assert!(room.max_connections >= 2 * room.max_concurrent, "{soft}: {room:?}");
        }
    }

    #[test]
    fn descriptions_say_where_the_value_came_from() {
        let lowered = room(limit(1024), None);
        assert_eq!(lowered.describe_concurrency(), "232 (default 256 lowered to fit 1024 descriptors)");
        assert_eq!(lowered.describe_limit(), "1024 (hard 1024); up to 464 connections");
        assert_eq!(lowered.warning(), None);
        let raised = Some(Limit { soft: 20_000, hard: 20_000, raised_from: Some(1024) });
        assert_eq!(
            room(raised, None).describe_limit(),
            "20000 (hard 20000, raised from 1024); up to 4096 connections"
        );
        assert_eq!(room(raised, None).describe_concurrency(), "256 (default)");
        let too_many = room(limit(1024), Some(1000));
        assert_eq!(too_many.describe_concurrency(), "1000 (set; more than 1024 descriptors have room for)");
        assert!(too_many.warning().is_some_and(|w| w.contains("MAX_CONCURRENT=1000") && w.contains("309")));
        assert_eq!(room(None, None).describe_limit(), "unknown; up to 4096 connections");
    }
}
