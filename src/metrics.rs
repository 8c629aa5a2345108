//! What the shield did, counted: lock-free counters, fixed-bucket histograms, the last 50
//! requests, and a `Snapshot` of them all as plain numbers, which `/metrics` (the Prometheus
//! text format, `metrics/exposition.rs`) and `/status` (`local.rs`) render.
//!
//! The request path only touches atomics (relaxed `fetch_add`) and, once per request, a
//! short mutex around the ring of recent requests: no allocation, no string formatting. A
//! request's own story (its attempts, each retry's reason and wait) travels in a `Tally`, a
//! fixed-size value carried by the request and folded in by `request_done`. Every dimension
//! is a fixed set (routes, statuses, `Outcome`s, upstream numbers), so counters are arrays
//! indexed by it and a label value is never a request id, a client-chosen model, a path or a
//! key. Two exceptions are per client, a name of `CLIENT_KEYS_FILE` (or `-`): its request
//! counters live in a small map under a short lock, allocated once per name; and the tokens an
//! attempt cost (`tokens`), by upstream and client, in a short list under a lock taken once per
//! attempt that reported usage. This module does no I/O and formats nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::check::Api;
use crate::error::Outcome;
use crate::route::Route;
use crate::usage::{Spent, Usage};

mod exposition;

pub use exposition::{render, CONTENT_TYPE};

const OUTCOMES: usize = Outcome::ALL.len();
/// Statuses are counted by exact code, 0..=599 (an array index, no map).
const STATUSES: usize = 600;
/// How many requests `/status` shows.
pub const RECENT: usize = 50;
/// How many retries of one request are remembered for `/status` (all are counted).
pub const SHOWN_RETRIES: usize = 12;

/// Request durations and upstream times to complete, in seconds: LLM answers take from a
/// fraction of a second to minutes.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0];
/// Answer sizes, in bytes: from an error body to the 64 MiB `MAX_RESPONSE_BYTES` default.
pub const SIZE_BUCKETS: [f64; 11] = [
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 33554432.0,
    67108864.0,
];

/// The `route` label: which kind of call a request was (a fixed set, never the raw path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteKind {
    Responses,
    Chat,
    /// Any other `/v1/...` call, forwarded.
    Other,
    /// No route (404).
    #[default]
    None,
}

impl RouteKind {
    pub const ALL: [RouteKind; 4] =
        [RouteKind::Responses, RouteKind::Chat, RouteKind::Other, RouteKind::None];

    pub fn of(route: &Route) -> RouteKind {
        match route {
            Route::Shielded(Api::Responses, _) => RouteKind::Responses,
            Route::Shielded(Api::Chat, _) => RouteKind::Chat,
            Route::Forward(_) => RouteKind::Other,
            Route::NotFound => RouteKind::None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RouteKind::Responses => "responses",
            RouteKind::Chat => "chat",
            RouteKind::Other => "other",
            RouteKind::None => "none",
        }
    }
}

/// One request's attempts, carried by the request (fixed size, `Copy`, no heap).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tally {
    pub attempts: u32,
    /// Failed attempts by outcome.
    failed: [u32; OUTCOMES],
    last: Option<Outcome>,
    /// The first `SHOWN_RETRIES` retries: why, and how long the proxy waited (ms).
    retries: [Option<(Outcome, u32)>; SHOWN_RETRIES],
    n_retries: u32,
}

impl Tally {
    fn attempt(&mut self, outcome: Outcome) {
        self.attempts += 1;
        self.last = Some(outcome);
        if outcome != Outcome::Ok {
            self.failed[outcome.index()] += 1;
        }
    }

    fn retry(&mut self, reason: Outcome, wait: Duration) {
        if let Some(slot) = self.retries.get_mut(self.n_retries as usize) {
            *slot = Some((reason, millis(wait)));
        }
        self.n_retries += 1;
    }

    /// The request ended with a complete answer.
    fn answered(&self) -> bool {
        self.last == Some(Outcome::Ok)
    }

    /// The request ended on a failure the proxy would have retried: it gave up.
    fn gave_up(&self) -> Option<Outcome> {
        self.last.filter(|o| !matches!(o, Outcome::Ok | Outcome::Final))
    }
}

/// A finished request, as `/status` lists it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Recent {
    /// Milliseconds since the Unix epoch, when the request ended.
    pub at_ms: u64,
    pub route: RouteKind,
    pub status: u16,
    pub attempts: u32,
    pub retries: [Option<(Outcome, u32)>; SHOWN_RETRIES],
    pub n_retries: u32,
    pub bytes: u64,
    pub duration_ms: u64,
    pub client_gone: bool,
}

/// How one upstream is doing, as the pool sees it: filled by the caller at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamHealth {
    /// 1..N, the `upstream` label.
    pub number: usize,
    /// Where it is, for people (`Endpoint::display`: query values masked, never a key).
    pub endpoint: String,
    /// `Some(left)` while the upstream is cooling down.
    pub cooling_down: Option<Duration>,
}

/// The tokens one upstream reported for one client's attempts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    /// 1..N, the `upstream` label.
    pub upstream: usize,
    /// The client's name (CLIENT_KEYS_FILE); `None` without one, the label `-`.
    pub client: Option<Arc<str>>,
    /// Attempts whose answer (or final error) the client got.
    pub delivered: Usage,
    /// Attempts the shield discarded: retried, given up, or abandoned.
    pub discarded: Usage,
}

impl Tokens {
    /// The `client` label's value.
    pub fn client_label(&self) -> &str {
        self.client.as_deref().unwrap_or("-")
    }
}

/// A fixed-bucket histogram of `u64` observations (microseconds or bytes).
struct Histogram {
    /// Upper bounds in the observation's unit.
    bounds: Vec<u64>,
    /// Per bucket (not cumulative), the last one is +Inf.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64], unit: f64) -> Histogram {
        let bounds: Vec<u64> = bounds.iter().map(|b| (b / unit).round() as u64).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, counts, sum: AtomicU64::new(0) }
    }

    fn observe(&self, value: u64) {
        let i = self.bounds.iter().position(|&b| value <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    fn snapshot(&self, unit: f64) -> HistogramSnapshot {
        HistogramSnapshot { counts: load_all(&self.counts), sum: self.sum.load(Relaxed) as f64 * unit }
    }
}

/// Every counter of the process. One value, shared by every connection thread.
pub struct Metrics {
    started: Instant,
    start_time: SystemTime,
    requests: Vec<AtomicU64>,
    delivered: Vec<AtomicU64>,
    given_up: Vec<AtomicU64>,
    /// Per upstream, per outcome.
    attempts: Vec<AtomicU64>,
    absorbed: Vec<AtomicU64>,
    retries: Vec<AtomicU64>,
    waited_us: AtomicU64,
    busy: AtomicU64,
    hangups: AtomicU64,
    /// The reasoning store (`reasoning.rs`): turns recalled, turns not found, turns evicted.
    reasoning: [AtomicU64; 3],
    durations: Vec<Histogram>,
    sizes: Vec<Histogram>,
    upstream_durations: Vec<Histogram>,
    recent: Mutex<Ring>,
    /// Per client name (`-`: none), requests by status class and refusals past `max=`.
    clients: Mutex<BTreeMap<Arc<str>, ClientCounts>>,
    /// By upstream and client, in the order first seen.
    tokens: Mutex<Vec<Tokens>>,
}

/// The status classes counted per client: 1xx to 5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The label of requests without a client name (`PROXY_API_KEY`, an open proxy, a wrong key).
pub const NO_CLIENT: &str = "-";

/// One client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Requests answered, by status class (`STATUS_CLASSES` order).
    pub requests: [u64; 5],
    /// Requests refused with 429 because the client's key had `max=` requests in flight.
    pub limited: u64,
}

/// A client as `/metrics` and `/status` show it: its counters, and what `server.rs` knows now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientRow {
    pub name: String,
    pub counts: ClientCounts,
    /// Its requests in flight now, and its `max=` (named clients of the file in effect).
    pub in_flight: usize,
    pub limit: Option<usize>,
}

/// A named client's live numbers, from `server.rs` at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientGauge {
    pub name: Arc<str>,
    pub in_flight: usize,
    pub limit: Option<usize>,
}

const MICROS: f64 = 1e-6;

fn counters(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn load_all(v: &[AtomicU64]) -> Vec<u64> {
    v.iter().map(|c| c.load(Relaxed)).collect()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Metrics {
    /// Counters for `upstreams` upstreams, numbered 1..=upstreams.
    pub fn new(upstreams: usize) -> Metrics {
        let routes = RouteKind::ALL.len();
        let upstreams = upstreams.max(1);
        Metrics {
            started: Instant::now(),
            start_time: SystemTime::now(),
            requests: counters(routes * STATUSES),
            delivered: counters(routes),
            given_up: counters(OUTCOMES),
            attempts: counters(upstreams * OUTCOMES),
            absorbed: counters(OUTCOMES),
            retries: counters(OUTCOMES),
            waited_us: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            hangups: AtomicU64::new(0),
            reasoning: Default::default(),
            durations: (0..routes).map(|_| Histogram::new(&DURATION_BUCKETS, MICROS)).collect(),
            sizes: (0..routes).map(|_| Histogram::new(&SIZE_BUCKETS, 1.0)).collect(),
            upstream_durations: (0..upstreams).map(|_| Histogram::new(&DURATION_BUCKETS, MICROS)).collect(),
            recent: Mutex::new(Ring::default()),
            clients: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(Vec::new()),
        }
    }

    /// A request of `client` (`None`: no name) was answered with `status`.
    pub fn client_done(&self, client: Option<&str>, status: u16) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        self.with_client(client.unwrap_or(NO_CLIENT), |c| c.requests[class] += 1);
    }

    /// A request of `client` was refused past its `max=` (it is also counted by `client_done`).
    pub fn client_limited(&self, client: &str) {
        self.with_client(client, |c| c.limited += 1);
    }

    /// Change one client's counters; the name is copied only the first time it is seen.
    fn with_client(&self, name: &str, change: impl FnOnce(&mut ClientCounts)) {
        let mut clients = crate::sync::lock(&self.clients);
        match clients.get_mut(name) {
            Some(counts) => change(counts),
            None => change(clients.entry(Arc::from(name)).or_default()),
        }
    }

    fn upstreams(&self) -> usize {
        self.upstream_durations.len()
    }

    /// One upstream attempt ended (`upstream` is 1-based), after `took`.
    pub fn attempt(&self, tally: &mut Tally, upstream: usize, outcome: Outcome, took: Duration) {
        let u = upstream.clamp(1, self.upstreams()) - 1;
        self.attempts[u * OUTCOMES + outcome.index()].fetch_add(1, Relaxed);
        self.upstream_durations[u].observe(micros(took));
        tally.attempt(outcome);
    }

    /// What an attempt on `upstream` (1-based) for `client` cost, as its upstream reported it,
    /// and whether the client got what it produced.
    pub fn tokens(&self, upstream: usize, client: Option<&Arc<str>>, usage: Usage, spent: Spent) {
        let upstream = upstream.clamp(1, self.upstreams());
        let mut rows = crate::sync::lock(&self.tokens);
        let i = match rows.iter().position(|t| t.upstream == upstream && t.client.as_ref() == client) {
            Some(i) => i,
            None => {
                rows.push(Tokens { upstream, client: client.cloned(), ..Tokens::default() });
                rows.len() - 1
            }
        };
        match spent {
            Spent::Delivered => rows[i].delivered += usage,
            Spent::Discarded => rows[i].discarded += usage,
        }
    }

    /// The proxy is about to wait `wait` before retrying after a `reason` failure.
    pub fn retry(&self, tally: &mut Tally, reason: Outcome, wait: Duration) {
        self.retries[reason.index()].fetch_add(1, Relaxed);
        self.waited_us.fetch_add(micros(wait), Relaxed);
        tally.retry(reason, wait);
    }

    /// The reasoning store recalled `hits` turns, missed `misses`, evicted `evictions`.
    pub fn reasoning(&self, hits: usize, misses: usize, evictions: usize) {
        for (counter, n) in self.reasoning.iter().zip([hits, misses, evictions]) {
            if n > 0 {
                counter.fetch_add(n as u64, Relaxed);
            }
        }
    }

    /// A request was refused because `MAX_CONCURRENT` requests were in flight.
    pub fn busy(&self) {
        self.busy.fetch_add(1, Relaxed);
    }

    /// A request's reply was written (`delivered`) or the client was gone.
    pub fn request_done(&self, done: &Done) {
        let (route, tally) = (done.route as usize, &done.tally);
        let status = usize::from(done.status).min(STATUSES - 1);
        self.requests[route * STATUSES + status].fetch_add(1, Relaxed);
        self.durations[route].observe(micros(done.duration));
        self.sizes[route].observe(done.bytes as u64);
        let client_gone = !done.delivered || done.status == 499;
        if client_gone {
            self.hangups.fetch_add(1, Relaxed);
        }
        if tally.answered() {
            self.delivered[route].fetch_add(1, Relaxed);
            for (absorbed, &n) in self.absorbed.iter().zip(&tally.failed) {
                if n > 0 {
                    absorbed.fetch_add(u64::from(n), Relaxed);
                }
            }
        } else if let Some(reason) = tally.gave_up().filter(|_| !client_gone) {
            self.given_up[reason.index()].fetch_add(1, Relaxed);
        }
        let entry = Recent {
            at_ms: unix_ms(SystemTime::now()),
            route: done.route,
            status: done.status,
            attempts: tally.attempts,
            retries: tally.retries,
            n_retries: tally.n_retries,
            bytes: done.bytes as u64,
            duration_ms: done.duration.as_millis() as u64,
            client_gone,
        };
        crate::sync::lock(&self.recent).push(entry);
    }

    /// Every number, copied; `in_flight` and the upstreams' health come from their owners.
    pub fn snapshot(&self, gauges: Gauges, upstreams: &[UpstreamHealth]) -> Snapshot {
        let routes = RouteKind::ALL.len();
        let requests = load_all(&self.requests);
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            start_unix_ms: unix_ms(self.start_time),
            uptime: self.started.elapsed(),
            gauges,
            memory: (crate::memory::budget(), crate::memory::held()),
            upstreams: upstreams.to_vec(),
            requests: (0..routes).map(|r| requests[r * STATUSES..(r + 1) * STATUSES].to_vec()).collect(),
            delivered: load_all(&self.delivered),
            given_up: load_all(&self.given_up),
            attempts: load_all(&self.attempts).chunks(OUTCOMES).map(<[u64]>::to_vec).collect(),
            absorbed: load_all(&self.absorbed),
            retries: load_all(&self.retries),
            waited_seconds: self.waited_us.load(Relaxed) as f64 * MICROS,
            busy: self.busy.load(Relaxed),
            hangups: self.hangups.load(Relaxed),
            reasoning: self.reasoning.each_ref().map(|c| c.load(Relaxed)),
            durations: self.durations.iter().map(|h| h.snapshot(MICROS)).collect(),
            sizes: self.sizes.iter().map(|h| h.snapshot(1.0)).collect(),
            upstream_durations: self.upstream_durations.iter().map(|h| h.snapshot(MICROS)).collect(),
            recent: crate::sync::lock(&self.recent).newest_first(),
            clients: crate::sync::lock(&self.clients)
                .iter()
                .map(|(name, &counts)| ClientRow { name: name.to_string(), counts, ..ClientRow::default() })
                .collect(),
            tokens: self.tokens_by_upstream_and_client(),
        }
    }

    /// The token rows, by upstream then client (`-` first).
    fn tokens_by_upstream_and_client(&self) -> Vec<Tokens> {
        let mut rows = crate::sync::lock(&self.tokens).clone();
        rows.sort_by(|a, b| (a.upstream, &a.client).cmp(&(b.upstream, &b.client)));
        rows
    }
}

/// A finished request, for `Metrics::request_done`.
pub struct Done {
    pub route: RouteKind,
    pub status: u16,
    pub bytes: usize,
    pub duration: Duration,
    pub tally: Tally,
    /// The reply was written to the client.
    pub delivered: bool,
}

/// The gauges that live elsewhere (server.rs), read when a snapshot is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub in_flight: usize,
    pub max_concurrent: usize,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The last `RECENT` requests, overwritten in a circle.
#[derive(Default)]
struct Ring {
    entries: Vec<Recent>,
    next: usize,
}

impl Ring {
    fn push(&mut self, entry: Recent) {
        if self.entries.len() < RECENT {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
        }
        self.next = (self.next + 1) % RECENT;
    }

    fn newest_first(&self) -> Vec<Recent> {
        let (older, newer) = self.entries.split_at(self.next.min(self.entries.len()));
        newer.iter().chain(older).rev().copied().collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative; the last is +Inf.
    pub counts: Vec<u64>,
    /// In base units (seconds, bytes).
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Every number at one moment, as plain values: what `/metrics` and `/status` render.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: &'static str,
    pub start_unix_ms: u64,
    pub uptime: Duration,
    pub gauges: Gauges,
    /// The memory budget and the bytes held against it (`memory.rs`).
    pub memory: (usize, usize),
    pub upstreams: Vec<UpstreamHealth>,
    /// Per route (`RouteKind::ALL` order), per status code.
    pub requests: Vec<Vec<u64>>,
    /// Complete answers delivered, per route.
    pub delivered: Vec<u64>,
    /// Requests given up, per reason (`Outcome::ALL` order).
    pub given_up: Vec<u64>,
    /// Per upstream (index = number - 1), per outcome.
    pub attempts: Vec<Vec<u64>>,
    pub absorbed: Vec<u64>,
    pub retries: Vec<u64>,
    pub waited_seconds: f64,
    pub busy: u64,
    pub hangups: u64,
    /// Reasoning store hits, misses, evictions.
    pub reasoning: [u64; 3],
    pub durations: Vec<HistogramSnapshot>,
    pub sizes: Vec<HistogramSnapshot>,
    pub upstream_durations: Vec<HistogramSnapshot>,
    pub recent: Vec<Recent>,
    /// Every client name seen or in the file in effect, by name (`-` among them).
    pub clients: Vec<ClientRow>,
    /// Tokens by upstream and client.
    pub tokens: Vec<Tokens>,
}

impl Snapshot {
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// The clients' live numbers merged in: a name of the file without requests yet gets a
    /// row of zeros.
    pub fn with_clients(mut self, live: &[ClientGauge]) -> Snapshot {
        for gauge in live {
            let row = match self.clients.iter().position(|r| r.name == *gauge.name) {
                Some(i) => &mut self.clients[i],
                None => {
                    self.clients.push(ClientRow { name: gauge.name.to_string(), ..ClientRow::default() });
                    self.clients.last_mut().expect("just pushed")
                }
            };
            (row.in_flight, row.limit) = (gauge.in_flight, gauge.limit);
        }
        self.clients.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(route: RouteKind, status: u16, tally: Tally) -> Done {
        Done { route, status, bytes: 1000, duration: Duration::from_millis(1500), tally, delivered: true }
    }

    /// The numbers a known sequence of requests leaves behind.
    #[test]
    fn counting() {
        let m = Metrics::new(2);
        // absorbed: 429, cut, then a complete answer
        let mut t = Tally::default();
        m.attempt(&mut t, 1, Outcome::RateLimited, Duration::from_millis(30));
        m.retry(&mut t, Outcome::RateLimited, Duration::from_millis(1000));
        m.attempt(&mut t, 1, Outcome::Cut, Duration::from_millis(70));
        m.retry(&mut t, Outcome::Cut, Duration::from_millis(500));
        m.attempt(&mut t, 2, Outcome::Ok, Duration::from_secs(4));
        m.request_done(&done(RouteKind::Responses, 200, t));
        // given up after two 5xx
        let mut t = Tally::default();
        m.attempt(&mut t, 1, Outcome::ServerError, Duration::from_millis(10));
        m.retry(&mut t, Outcome::ServerError, Duration::from_millis(250));
        m.attempt(&mut t, 1, Outcome::ServerError, Duration::from_millis(10));
        m.request_done(&done(RouteKind::Chat, 502, t));
        // a final error passed on: neither delivered nor given up
        let mut t = Tally::default();
        m.attempt(&mut t, 1, Outcome::Final, Duration::from_millis(10));
        m.request_done(&done(RouteKind::Chat, 400, t));
        // a client that left during a wait
        let mut t = Tally::default();
        m.attempt(&mut t, 1, Outcome::Stall, Duration::from_secs(2));
        m.request_done(&done(RouteKind::Responses, 499, t));
        // a 404 and a busy refusal
        m.request_done(&done(RouteKind::None, 404, Tally::default()));
        m.busy();

        let s = m.snapshot(Gauges { in_flight: 3, max_concurrent: 256 }, &[]);
        let idx = |r: RouteKind| r as usize;
        assert_eq!(s.requests[idx(RouteKind::Responses)][200], 1);
        assert_eq!(s.requests[idx(RouteKind::Chat)][502], 1);
        assert_eq!(s.requests[idx(RouteKind::None)][404], 1);
        assert_eq!(s.total_requests(), 5);
        assert_eq!(s.delivered, vec![1, 0, 0, 0]);
        let by = |v: &[u64], o: Outcome| v[o.index()];
        assert_eq!(by(&s.absorbed, Outcome::RateLimited), 1);
        assert_eq!(by(&s.absorbed, Outcome::Cut), 1);
        assert_eq!(s.absorbed.iter().sum::<u64>(), 2);
        assert_eq!(by(&s.given_up, Outcome::ServerError), 1);
        assert_eq!(s.given_up.iter().sum::<u64>(), 1, "neither the final error nor the hang-up gave up");
        assert_eq!(by(&s.attempts[0], Outcome::ServerError), 2);
        assert_eq!(by(&s.attempts[1], Outcome::Ok), 1);
        assert_eq!(s.attempts.iter().flatten().sum::<u64>(), 7);
        assert_eq!(s.retries.iter().sum::<u64>(), 3);
        assert!((s.waited_seconds - 1.75).abs() < 1e-9, "{}", s.waited_seconds);
        assert_eq!((s.busy, s.hangups), (1, 1));
        assert_eq!(s.upstream_durations[1].count(), 1);
        assert_eq!(s.upstream_durations[0].count(), 6);
        // 4 s lands in the 5 s bucket (index 6)
        assert_eq!(s.upstream_durations[1].counts[6], 1);
        assert_eq!(s.recent.len(), 5);
        let first = s.recent.last().unwrap();
        assert_eq!((first.status, first.attempts, first.n_retries), (200, 3, 2));
        assert_eq!(first.retries[0], Some((Outcome::RateLimited, 1000)));
        assert_eq!(first.retries[1], Some((Outcome::Cut, 500)));
        assert!(s.recent[1].client_gone);
    }

    /// Requests per client by status class, refusals past `max=`, and the live numbers merged
    /// in: a name of the file without requests gets a row of zeros, rows sorted by name.
    #[test]
    fn clients_counted_and_merged() {
        let m = Metrics::new(1);
        for (client, status) in
            [(Some("bob"), 200), (Some("bob"), 429), (None, 401), (Some("bob"), 502), (None, 200)]
        {
            m.client_done(client, status);
        }
        m.client_limited("bob");
        let gauge = |name: &str, in_flight, limit| ClientGauge { name: name.into(), in_flight, limit };
        let live = [gauge("carol", 0, None), gauge("bob", 2, Some(3))];
        let s = m.snapshot(Gauges::default(), &[]).with_clients(&live);
        type Row<'a> = (&'a str, [u64; 5], u64, usize, Option<usize>);
        let rows: Vec<Row> = s
            .clients
            .iter()
            .map(|c| (&*c.name, c.counts.requests, c.counts.limited, c.in_flight, c.limit))
            .collect();
        let expected = vec![
            ("-", [0, 1, 0, 1, 0], 0, 0, None),
            ("bob", [0, 1, 0, 1, 1], 1, 2, Some(3)),
            ("carol", [0; 5], 0, 0, None),
        ];
        assert_eq!(rows, expected);
    }

    /// Tokens add up per upstream and client, delivered apart from discarded; an upstream
    /// number out of range is the last one, as for attempts.
    #[test]
    fn tokens_by_upstream_client_and_fate() {
        let m = Metrics::new(2);
        let alice: Arc<str> = "alice".into();
        let u = |input, cached, output, reasoning| Usage { input, cached, output, reasoning };
        m.tokens(2, Some(&alice), u(100, 80, 10, 5), Spent::Delivered);
        m.tokens(1, None, u(7, 0, 3, 0), Spent::Discarded);
        m.tokens(2, Some(&alice), u(50, 0, 4, 0), Spent::Discarded);
        m.tokens(2, Some(&"alice".into()), u(100, 20, 10, 0), Spent::Delivered);
        m.tokens(9, None, u(1, 1, 1, 1), Spent::Delivered);
        let s = m.snapshot(Gauges::default(), &[]);
        let rows: Vec<(usize, &str, Usage, Usage)> =
            s.tokens.iter().map(|t| (t.upstream, t.client_label(), t.delivered, t.discarded)).collect();
        assert_eq!(
            rows,
            vec![
                (1, "-", u(0, 0, 0, 0), u(7, 0, 3, 0)),
                (2, "-", u(1, 1, 1, 1), u(0, 0, 0, 0)),
                (2, "alice", u(200, 100, 20, 5), u(50, 0, 4, 0)),
            ]
        );
    }

    #[test]
    fn ring_keeps_the_last_fifty_newest_first() {
        let mut ring = Ring::default();
        for i in 0..(RECENT as u64 + 7) {
            ring.push(Recent { at_ms: i, ..Recent::default() });
        }
        let got: Vec<u64> = ring.newest_first().iter().map(|r| r.at_ms).collect();
        let expected: Vec<u64> = (7..RECENT as u64 + 7).rev().collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn tally_remembers_only_the_first_retries_but_counts_all() {
        let mut t = Tally::default();
        for i in 0..20 {
            t.retry(Outcome::Cut, Duration::from_millis(i));
        }
        assert_eq!(t.n_retries, 20);
        assert_eq!(t.retries[SHOWN_RETRIES - 1], Some((Outcome::Cut, SHOWN_RETRIES as u32 - 1)));
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::new(&DURATION_BUCKETS, MICROS);
        for us in [0, 50_000, 50_001, 300_000_000, 300_000_001] {
            h.observe(us);
        }
        let s = h.snapshot(MICROS);
        assert_eq!(s.counts[0], 2, "0 and exactly 0.05 s");
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[DURATION_BUCKETS.len() - 1], 1, "exactly 300 s");
        assert_eq!(s.counts[DURATION_BUCKETS.len()], 1, "+Inf");
        assert!((s.sum - 600.100001).abs() < 1e-6, "{}", s.sum);
    }
}
