//! What the shield did, counted: lock-free counters, fixed-bucket histograms, the last 50
//! requests, and the Prometheus text exposition format (0.0.4) rendered from a snapshot.
//!
//! The request path only touches atomics (relaxed `fetch_add`) and, once per request, a
//! short mutex around the ring of recent requests: no allocation, no string formatting. A
//! request's own story (its attempts, each retry's reason and wait) travels in a `Tally`, a
//! fixed-size value carried by the request and folded in by `request_done`. Rendering works
//! on a `Snapshot` of plain numbers, so the format is tested as a pure function. Label values
//! all come from fixed sets (routes, statuses, `Outcome` labels, upstream numbers): never a
//! request id, a client-chosen model, a path or a key. This module does no I/O.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::check::Api;
use crate::error::Outcome;
use crate::target::Route;

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
            Route::Health | Route::NotFound => RouteKind::None,
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
    durations: Vec<Histogram>,
    sizes: Vec<Histogram>,
    upstream_durations: Vec<Histogram>,
    recent: Mutex<Ring>,
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
            durations: (0..routes).map(|_| Histogram::new(&DURATION_BUCKETS, MICROS)).collect(),
            sizes: (0..routes).map(|_| Histogram::new(&SIZE_BUCKETS, 1.0)).collect(),
            upstream_durations: (0..upstreams).map(|_| Histogram::new(&DURATION_BUCKETS, MICROS)).collect(),
            recent: Mutex::new(Ring::default()),
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

    /// The proxy is about to wait `wait` before retrying after a `reason` failure.
    pub fn retry(&self, tally: &mut Tally, reason: Outcome, wait: Duration) {
        self.retries[reason.index()].fetch_add(1, Relaxed);
        self.waited_us.fetch_add(micros(wait), Relaxed);
        tally.retry(reason, wait);
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
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
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
            durations: self.durations.iter().map(|h| h.snapshot(MICROS)).collect(),
            sizes: self.sizes.iter().map(|h| h.snapshot(1.0)).collect(),
            upstream_durations: self.upstream_durations.iter().map(|h| h.snapshot(MICROS)).collect(),
            recent: self.recent.lock().unwrap_or_else(|e| e.into_inner()).newest_first(),
        }
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
    pub durations: Vec<HistogramSnapshot>,
    pub sizes: Vec<HistogramSnapshot>,
    pub upstream_durations: Vec<HistogramSnapshot>,
    pub recent: Vec<Recent>,
}

impl Snapshot {
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }
}

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text exposition format, version 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let mut out = Exposition(String::with_capacity(16 * 1024));
    out.family("codex_shield_build_info", "gauge", "Always 1; the version is a label.");
    out.sample("codex_shield_build_info", &[("version", s.version)], 1.0);
    out.family("codex_shield_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
    out.sample("codex_shield_start_time_seconds", &[], s.start_unix_ms as f64 / 1000.0);

    out.family(
        "codex_shield_requests_total",
        "counter",
        "Client requests answered, by route and final status.",
    );
    for (route, by_status) in RouteKind::ALL.iter().zip(&s.requests) {
        for (status, &n) in by_status.iter().enumerate().filter(|(_, &n)| n > 0) {
            let status = status.to_string();
            out.sample(
                "codex_shield_requests_total",
                &[("route", route.label()), ("status", &status)],
                n as f64,
            );
        }
    }
    out.family(
        "codex_shield_answers_delivered_total",
        "counter",
        "Complete, checked answers delivered to clients, by route.",
    );
    for (route, &n) in RouteKind::ALL.iter().zip(&s.delivered) {
        out.sample("codex_shield_answers_delivered_total", &[("route", route.label())], n as f64);
    }
    out.family(
        "codex_shield_requests_given_up_total",
        "counter",
        "Requests that ended in an error after failed attempts (retries spent, or too large), by the last failure.",
    );
    per_outcome(&mut out, "codex_shield_requests_given_up_total", "reason", &s.given_up, failures());
    out.family(
        "codex_shield_upstream_attempts_total",
        "counter",
        "Upstream attempts, by upstream and outcome.",
    );
    for (u, by_outcome) in s.attempts.iter().enumerate() {
        let upstream = (u + 1).to_string();
        for o in Outcome::ALL {
            let labels = [("upstream", upstream.as_str()), ("outcome", o.label())];
            out.sample("codex_shield_upstream_attempts_total", &labels, by_outcome[o.index()] as f64);
        }
    }
    out.family(
        "codex_shield_failures_absorbed_total",
        "counter",
        "Failed upstream attempts whose request was still answered completely, by outcome.",
    );
    per_outcome(&mut out, "codex_shield_failures_absorbed_total", "outcome", &s.absorbed, failures());
    out.family("codex_shield_retries_total", "counter", "Retries, by the failure that caused them.");
    per_outcome(&mut out, "codex_shield_retries_total", "reason", &s.retries, failures());
    out.family("codex_shield_retry_wait_seconds_total", "counter", "Time spent waiting between attempts.");
    out.sample("codex_shield_retry_wait_seconds_total", &[], s.waited_seconds);
    out.family(
        "codex_shield_busy_rejections_total",
        "counter",
        "Requests refused with 503 because MAX_CONCURRENT requests were in flight.",
    );
    out.sample("codex_shield_busy_rejections_total", &[], s.busy as f64);
    out.family(
        "codex_shield_client_hangups_total",
        "counter",
        "Clients that closed their connection before their answer was written.",
    );
    out.sample("codex_shield_client_hangups_total", &[], s.hangups as f64);
    out.family(
        "codex_shield_in_flight_requests",
        "gauge",
        "Requests being worked on (counted against MAX_CONCURRENT).",
    );
    out.sample("codex_shield_in_flight_requests", &[], s.gauges.in_flight as f64);
    out.family("codex_shield_max_concurrent_requests", "gauge", "MAX_CONCURRENT.");
    out.sample("codex_shield_max_concurrent_requests", &[], s.gauges.max_concurrent as f64);
    let (budget, held) = s.memory;
    out.family(
        "codex_shield_memory_budget_bytes",
        "gauge",
        "MEMORY_BUDGET_MB or the cgroup's limit; 0: none.",
    );
    out.sample("codex_shield_memory_budget_bytes", &[], budget as f64);
    out.family(
        "codex_shield_memory_held_bytes",
        "gauge",
        "Bytes request bodies and answers hold against it.",
    );
    out.sample("codex_shield_memory_held_bytes", &[], held as f64);
    out.family(
        "codex_shield_upstream_cooling_down",
        "gauge",
        "1 while the upstream is cooling down, else 0.",
    );
    for u in &s.upstreams {
        let n = u.number.to_string();
        out.sample(
            "codex_shield_upstream_cooling_down",
            &[("upstream", &n)],
            f64::from(u8::from(u.cooling_down.is_some())),
        );
    }
    out.family(
        "codex_shield_upstream_cooldown_remaining_seconds",
        "gauge",
        "Seconds until the upstream is tried again (0 when it is not cooling down).",
    );
    for u in &s.upstreams {
        let n = u.number.to_string();
        let left = u.cooling_down.map_or(0.0, |d| d.as_secs_f64());
        out.sample("codex_shield_upstream_cooldown_remaining_seconds", &[("upstream", &n)], left);
    }

    out.family(
        "codex_shield_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its reply, by route.",
    );
    for (route, h) in RouteKind::ALL.iter().zip(&s.durations) {
        out.histogram(
            "codex_shield_request_duration_seconds",
            ("route", route.label()),
            &DURATION_BUCKETS,
            h,
        );
    }
    out.family(
        "codex_shield_response_size_bytes",
        "histogram",
        "Size of the reply body sent to the client, by route.",
    );
    for (route, h) in RouteKind::ALL.iter().zip(&s.sizes) {
        out.histogram("codex_shield_response_size_bytes", ("route", route.label()), &SIZE_BUCKETS, h);
    }
    out.family(
        "codex_shield_upstream_attempt_duration_seconds",
        "histogram",
        "Time for one upstream attempt to complete or fail, by upstream.",
    );
    for (u, h) in s.upstream_durations.iter().enumerate() {
        let n = (u + 1).to_string();
        out.histogram(
            "codex_shield_upstream_attempt_duration_seconds",
            ("upstream", &n),
            &DURATION_BUCKETS,
            h,
        );
    }
    out.0
}

/// The outcomes that are failures (every one but `Ok`).
fn failures() -> impl Iterator<Item = Outcome> {
    Outcome::ALL.into_iter().filter(|o| *o != Outcome::Ok)
}

fn per_outcome(
    out: &mut Exposition,
    name: &str,
    label: &str,
    values: &[u64],
    which: impl Iterator<Item = Outcome>,
) {
    for o in which {
        out.sample(name, &[(label, o.label())], values[o.index()] as f64);
    }
}

/// The text being written, one line at a time.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(self.0, "{sep}{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn histogram(&mut self, name: &str, label: (&str, &str), bounds: &[f64], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
            self.sample(&bucket, &[label, ("le", &le)], cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), &[label], h.sum);
        self.sample(&format!("{name}_count"), &[label], cumulative as f64);
    }
}

/// A sample value: integers without a fraction, others as Rust prints them (`0.05`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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

    fn sample_snapshot() -> Snapshot {
        let m = Metrics::new(1);
        let mut t = Tally::default();
        m.attempt(&mut t, 1, Outcome::RateLimited, Duration::from_millis(20));
        m.retry(&mut t, Outcome::RateLimited, Duration::from_millis(1500));
        m.attempt(&mut t, 1, Outcome::Ok, Duration::from_millis(700));
        m.request_done(&Done {
            route: RouteKind::Responses,
            status: 200,
            bytes: 17_700,
            duration: Duration::from_millis(2300),
            tally: t,
            delivered: true,
        });
        let up = UpstreamHealth { number: 1, endpoint: "https://x/v1".into(), cooling_down: None };
        let mut s = m.snapshot(Gauges { in_flight: 2, max_concurrent: 256 }, &[up]);
        s.start_unix_ms = 1_700_000_000_250;
        s.memory = (512 << 20, 3_000_000);
        s
    }

    /// A snapshot with every family populated: every route, statuses at both ends, two
    /// upstreams (one cooling down), distinct values per outcome including on `Ok`, which
    /// the failure families must leave out, fractional sums and gauges, and a version label
    /// that needs escaping. Built by hand, so it reads no clock and no global.
    fn rich_snapshot() -> Snapshot {
        let histogram = |bounds: usize, seed: u64, sum: f64| HistogramSnapshot {
            counts: (0..=bounds as u64).map(|i| (i * 7 + seed) % 5).collect(),
            sum,
        };
        let per_outcome = |base: u64| (0..OUTCOMES as u64).map(|i| base + i).collect::<Vec<u64>>();
        let mut requests = vec![vec![0; STATUSES]; RouteKind::ALL.len()];
        // (route index, status, count): statuses at both ends, some routes with several
        for (route, status, n) in [
            (0, 200, 41),
            (0, 499, 2),
            (0, 502, 3),
            (1, 200, 7),
            (1, 400, 1),
            (2, 0, 1),
            (2, 599, 5),
            (3, 404, 9),
        ] {
            requests[route][status] = n;
        }
        let cooling = Some(Duration::from_millis(12_500));
        Snapshot {
            version: "9.9.9-golden \"q\" \\ \n",
            start_unix_ms: 1_700_000_000_250,
            uptime: Duration::from_secs(3600),
            gauges: Gauges { in_flight: 3, max_concurrent: 256 },
            memory: (512 << 20, 3_000_000),
            upstreams: vec![
                UpstreamHealth { number: 1, endpoint: "https://a/v1".into(), cooling_down: None },
                UpstreamHealth { number: 2, endpoint: "https://b/v1".into(), cooling_down: cooling },
            ],
            requests,
            delivered: vec![40, 7, 1, 0],
            given_up: per_outcome(10),
            attempts: vec![per_outcome(100), per_outcome(200)],
            absorbed: per_outcome(20),
            retries: per_outcome(30),
            waited_seconds: 1.75,
            busy: 4,
            hangups: 2,
            durations: (0..4).map(|r| histogram(DURATION_BUCKETS.len(), r, 12.25 + r as f64)).collect(),
            sizes: (0..4).map(|r| histogram(SIZE_BUCKETS.len(), r + 1, 17_700.0 * (r + 1) as f64)).collect(),
            upstream_durations: (0..2)
                .map(|u| histogram(DURATION_BUCKETS.len(), u + 2, 0.5 + u as f64))
                .collect(),
            recent: vec![],
        }
    }

    /// The whole exposition of a rich snapshot, byte for byte, against a golden file: a
    /// changed name, help text, label, order or number format shows here. `UPDATE_GOLDEN=1`
    /// rewrites the file, to be read before committing.
    #[test]
    fn exposition_matches_the_golden_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics.prom");
        let text = render(&rich_snapshot());
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        let first = text.lines().zip(golden.lines()).position(|(a, b)| a != b);
        let first = first.unwrap_or(text.lines().count().min(golden.lines().count()));
        assert!(
            text == golden,
            "{path}, line {}: got {:?}, golden {:?}; the whole rendering:\n{text}",
            first + 1,
            text.lines().nth(first),
            golden.lines().nth(first)
        );
    }

    /// Exact lines of the exposition for a known snapshot.
    #[test]
    fn exposition_lines() {
        let text = render(&sample_snapshot());
        let expected = [
            "# HELP codex_shield_build_info Always 1; the version is a label.",
            "# TYPE codex_shield_build_info gauge",
            &format!("codex_shield_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
            "codex_shield_start_time_seconds 1700000000.25",
            "# TYPE codex_shield_requests_total counter",
            "codex_shield_requests_total{route=\"responses\",status=\"200\"} 1",
            "codex_shield_answers_delivered_total{route=\"responses\"} 1",
            "codex_shield_answers_delivered_total{route=\"chat\"} 0",
            "codex_shield_requests_given_up_total{reason=\"429\"} 0",
            "codex_shield_upstream_attempts_total{upstream=\"1\",outcome=\"429\"} 1",
            "codex_shield_upstream_attempts_total{upstream=\"1\",outcome=\"ok\"} 1",
            "codex_shield_upstream_attempts_total{upstream=\"1\",outcome=\"cut\"} 0",
            "codex_shield_failures_absorbed_total{outcome=\"429\"} 1",
            "codex_shield_failures_absorbed_total{outcome=\"5xx\"} 0",
            "codex_shield_retries_total{reason=\"429\"} 1",
            "codex_shield_retry_wait_seconds_total 1.5",
            "codex_shield_busy_rejections_total 0",
            "codex_shield_client_hangups_total 0",
            "codex_shield_in_flight_requests 2",
            "codex_shield_max_concurrent_requests 256",
            "# TYPE codex_shield_memory_budget_bytes gauge",
            "codex_shield_memory_budget_bytes 536870912",
            "# TYPE codex_shield_memory_held_bytes gauge",
            "codex_shield_memory_held_bytes 3000000",
            "codex_shield_upstream_cooling_down{upstream=\"1\"} 0",
            "codex_shield_upstream_cooldown_remaining_seconds{upstream=\"1\"} 0",
            "# TYPE codex_shield_request_duration_seconds histogram",
            "codex_shield_request_duration_seconds_bucket{route=\"responses\",le=\"1\"} 0",
            "codex_shield_request_duration_seconds_bucket{route=\"responses\",le=\"2.5\"} 1",
            "codex_shield_request_duration_seconds_bucket{route=\"responses\",le=\"+Inf\"} 1",
            "codex_shield_request_duration_seconds_sum{route=\"responses\"} 2.3",
            "codex_shield_request_duration_seconds_count{route=\"responses\"} 1",
            "codex_shield_request_duration_seconds_count{route=\"chat\"} 0",
            "codex_shield_response_size_bytes_bucket{route=\"responses\",le=\"16384\"} 0",
            "codex_shield_response_size_bytes_bucket{route=\"responses\",le=\"65536\"} 1",
            "codex_shield_response_size_bytes_sum{route=\"responses\"} 17700",
            "codex_shield_upstream_attempt_duration_seconds_bucket{upstream=\"1\",le=\"0.05\"} 1",
            "codex_shield_upstream_attempt_duration_seconds_bucket{upstream=\"1\",le=\"0.5\"} 1",
            "codex_shield_upstream_attempt_duration_seconds_bucket{upstream=\"1\",le=\"1\"} 2",
            "codex_shield_upstream_attempt_duration_seconds_count{upstream=\"1\"} 2",
        ];
        let lines: Vec<&str> = text.lines().collect();
        for line in expected {
            assert!(lines.contains(&line), "missing {line:?} in:\n{text}");
        }
        // the upstream's retry outcome "ok" is never a failure label
        assert!(!text.contains("codex_shield_failures_absorbed_total{outcome=\"ok\"}"));
        assert!(!text.contains("codex_shield_requests_total{route=\"chat\""), "zero statuses are left out");
    }

    /// The format's rules, line by line: every sample belongs to the family announced just
    /// before it, every family has HELP then TYPE once, values parse, buckets never decrease.
    #[test]
    fn exposition_is_well_formed() {
        let text = render(&sample_snapshot());
        assert!(text.ends_with('\n'));
        let mut families = std::collections::HashSet::new();
        let mut current = String::new();
        let mut last_bucket: Option<(String, f64)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(families.insert(current.clone()), "family {current} twice");
                assert!(current.starts_with("codex_shield_"), "{current}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name, current);
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
            assert!(name == current || base == Some(current.as_str()), "{line} outside {current}");
            if name.ends_with("_bucket") {
                let key = series.split(",le=").next().unwrap().to_string();
                if let Some((k, prev)) = &last_bucket {
                    if *k == key {
                        assert!(v >= *prev, "bucket decreased: {line}");
                    }
                }
                last_bucket = Some((key, v));
            }
        }
        assert!(families.len() >= 18, "{families:?}");
    }

    #[test]
    fn label_values_are_escaped_and_numbers_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let cases =
            [(1.0, "1"), (0.05, "0.05"), (300.0, "300"), (1.5e9, "1500000000"), (f64::INFINITY, "+Inf")];
        for (v, s) in cases {
            assert_eq!(number(v), s);
        }
    }
}
