//! The Prometheus text exposition format (0.0.4), rendered from a `Snapshot`: one table of
//! families (name, type, help, and the function that reads its samples from the snapshot)
//! and one writer for all of them. A new family is one row. Pure: no I/O, no clock, no
//! atomics; the counting lives in `metrics.rs` and never waits on this module. The strings
//! built here are paid for at scrape time only.

use std::fmt::Write as _;

use super::{
    ClientRow, HistogramSnapshot, RouteKind, Snapshot, Tokens, UpstreamHealth, DURATION_BUCKETS, NO_CLIENT,
    SIZE_BUCKETS, STATUS_CLASSES,
};
use crate::error::Outcome;
use crate::usage::{Usage, KINDS};
use Kind::{Counter, Gauge, Histogram};

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: `# HELP`, `# TYPE`, then its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
}

/// A family's type, and how its samples are read from a snapshot.
enum Kind {
    Counter(fn(&Snapshot) -> Vec<Sample>),
    Gauge(fn(&Snapshot) -> Vec<Sample>),
    /// One histogram per label value, over these bucket bounds.
    Histogram(&'static [f64], fn(&Snapshot) -> Vec<(Label, &HistogramSnapshot)>),
}

/// A label's name and value (values come from fixed sets, and are escaped all the same).
type Label = (&'static str, String);

/// A counter's or a gauge's value for one set of labels.
struct Sample(Vec<Label>, f64);

/// Every family, in the order `/metrics` lists them.
const FAMILIES: &[Family] = &[
    Family {
        name: "codex_shield_build_info",
        help: "Always 1; the version is a label.",
        kind: Gauge(|s| vec![Sample(vec![("version", s.version.to_string())], 1.0)]),
    },
    Family {
        name: "codex_shield_start_time_seconds",
        help: "Start time of the process since the Unix epoch.",
        kind: Gauge(|s| one(s.start_unix_ms as f64 / 1000.0)),
    },
    Family {
        name: "codex_shield_requests_total",
        help: "Client requests answered, by route and final status.",
        kind: Counter(requests),
    },
    Family {
        name: "codex_shield_answers_delivered_total",
        help: "Complete, checked answers delivered to clients, by route.",
        kind: Counter(|s| per_route(&s.delivered)),
    },
    Family {
        name: "codex_shield_requests_given_up_total",
        help: "Requests that ended in an error after failed attempts (retries spent, or too large), by the last failure.",
        kind: Counter(|s| per_failure("reason", &s.given_up)),
    },
    Family {
        name: "codex_shield_upstream_attempts_total",
        help: "Upstream attempts, by upstream and outcome.",
        kind: Counter(attempts),
    },
    Family {
        name: "codex_shield_failures_absorbed_total",
        help: "Failed upstream attempts whose request was still answered completely, by outcome.",
        kind: Counter(|s| per_failure("outcome", &s.absorbed)),
    },
    Family {
        name: "codex_shield_retries_total",
        help: "Retries, by the failure that caused them.",
        kind: Counter(|s| per_failure("reason", &s.retries)),
    },
    Family {
        name: "codex_shield_retry_wait_seconds_total",
        help: "Time spent waiting between attempts.",
        kind: Counter(|s| one(s.waited_seconds)),
    },
    Family {
        name: "codex_shield_tokens_total",
        help: "Tokens upstreams reported for the answers clients got, by upstream, client and kind (cached_input is part of input, reasoning part of output).",
        kind: Counter(|s| tokens(s, |t| t.delivered)),
    },
    Family {
        name: "codex_shield_discarded_tokens_total",
        help: "Tokens upstreams reported for attempts the shield discarded (retried, given up, client gone), by upstream, client and kind.",
        kind: Counter(|s| tokens(s, |t| t.discarded)),
    },
    Family {
        name: "codex_shield_busy_rejections_total",
        help: "Requests refused with 503 because MAX_CONCURRENT requests were in flight.",
        kind: Counter(|s| one(s.busy as f64)),
    },
    Family {
        name: "codex_shield_client_hangups_total",
        help: "Clients that closed their connection before their answer was written.",
        kind: Counter(|s| one(s.hangups as f64)),
    },
    Family {
        name: "codex_shield_reasoning_store_total",
        help: "Chat clients on responses-only upstreams: tool-call turns whose reasoning was put back (hit) or not found (miss), and turns evicted.",
        kind: Counter(|s| {
            let events = ["hit", "miss", "eviction"].into_iter().zip(s.reasoning);
            events.map(|(event, n)| Sample(vec![("event", event.to_string())], n as f64)).collect()
        }),
    },
    Family {
        name: "codex_shield_in_flight_requests",
        help: "Requests being worked on (counted against MAX_CONCURRENT).",
        kind: Gauge(|s| one(s.gauges.in_flight as f64)),
    },
    Family {
        name: "codex_shield_max_concurrent_requests",
        help: "MAX_CONCURRENT.",
        kind: Gauge(|s| one(s.gauges.max_concurrent as f64)),
    },
    Family {
        name: "codex_shield_memory_budget_bytes",
        help: "MEMORY_BUDGET_MB or the cgroup's limit; 0: none.",
        kind: Gauge(|s| one(s.memory.0 as f64)),
    },
    Family {
        name: "codex_shield_memory_held_bytes",
        help: "Bytes request bodies and answers hold against it.",
        kind: Gauge(|s| one(s.memory.1 as f64)),
    },
    Family {
        name: "codex_shield_upstream_cooling_down",
        help: "1 while the upstream is cooling down, else 0.",
        kind: Gauge(|s| per_upstream(s, |u| f64::from(u8::from(u.cooling_down.is_some())))),
    },
    Family {
        name: "codex_shield_upstream_cooldown_remaining_seconds",
        help: "Seconds until the upstream is tried again (0 when it is not cooling down).",
        kind: Gauge(|s| per_upstream(s, |u| u.cooling_down.map_or(0.0, |d| d.as_secs_f64()))),
    },
    Family {
        name: "codex_shield_client_requests_total",
        help: "Client requests answered, by client name (CLIENT_KEYS_FILE; -: none) and status class.",
        kind: Counter(client_requests),
    },
    Family {
        name: "codex_shield_client_limited_total",
        help: "Requests refused with 429 because the client's key had its max= requests in flight.",
        kind: Counter(|s| per_client(s, |c| c.counts.limited as f64)),
    },
    Family {
        name: "codex_shield_client_in_flight_requests",
        help: "Requests of the client being worked on now.",
        kind: Gauge(|s| per_client(s, |c| c.in_flight as f64)),
    },
    Family {
        name: "codex_shield_request_duration_seconds",
        help: "Time from a request's arrival to its reply, by route.",
        kind: Histogram(&DURATION_BUCKETS, |s| by_route(&s.durations)),
    },
    Family {
        name: "codex_shield_response_size_bytes",
        help: "Size of the reply body sent to the client, by route.",
        kind: Histogram(&SIZE_BUCKETS, |s| by_route(&s.sizes)),
    },
    Family {
        name: "codex_shield_upstream_attempt_duration_seconds",
        help: "Time for one upstream attempt to complete or fail, by upstream.",
        kind: Histogram(&DURATION_BUCKETS, |s| by_upstream(&s.upstream_durations)),
    },
];

/// The Prometheus text exposition format, version 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let mut out = Exposition(String::with_capacity(16 * 1024));
    for family in FAMILIES {
        out.family(family, s);
    }
    out.0
}

/// Requests by route and status; a status never seen is left out.
fn requests(s: &Snapshot) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (r, by_status) in RouteKind::ALL.into_iter().zip(&s.requests) {
        for (status, &n) in by_status.iter().enumerate().filter(|(_, &n)| n > 0) {
            samples.push(Sample(vec![route(r), ("status", status.to_string())], n as f64));
        }
    }
    samples
}

/// Attempts by upstream (1..N) and outcome, every outcome.
fn attempts(s: &Snapshot) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (u, by_outcome) in s.attempts.iter().enumerate() {
        for o in Outcome::ALL {
            samples.push(Sample(vec![upstream(u + 1), outcome("outcome", o)], by_outcome[o.index()] as f64));
        }
    }
    samples
}

/// Requests by client and status class; a class never seen is left out.
fn client_requests(s: &Snapshot) -> Vec<Sample> {
    let mut samples = Vec::new();
    for c in &s.clients {
        for (class, &n) in STATUS_CLASSES.iter().zip(&c.counts.requests).filter(|(_, &n)| n > 0) {
            samples.push(Sample(vec![client(&c.name), ("status_class", class.to_string())], n as f64));
        }
    }
    samples
}

/// Tokens by upstream, client (`-`: none) and kind, of one fate; only pairs that reported any.
fn tokens(s: &Snapshot, usage: fn(&Tokens) -> Usage) -> Vec<Sample> {
    let mut samples = Vec::new();
    for t in &s.tokens {
        for (kind, n) in KINDS.into_iter().zip(usage(t).counts()) {
            let labels =
                vec![upstream(t.upstream), ("client", t.client_label().to_string()), ("kind", kind.into())];
            samples.push(Sample(labels, n as f64));
        }
    }
    samples
}

/// One sample per named client (not `-`).
fn per_client(s: &Snapshot, value: fn(&ClientRow) -> f64) -> Vec<Sample> {
    let named = s.clients.iter().filter(|c| c.name != NO_CLIENT);
    named.map(|c| Sample(vec![client(&c.name)], value(c))).collect()
}

/// The `client` label: a name of `CLIENT_KEYS_FILE`, or `-`.
fn client(name: &str) -> Label {
    ("client", name.to_string())
}

/// One sample without labels.
fn one(value: f64) -> Vec<Sample> {
    vec![Sample(Vec::new(), value)]
}

/// One sample per route (`RouteKind::ALL` order).
fn per_route(values: &[u64]) -> Vec<Sample> {
    RouteKind::ALL.into_iter().zip(values).map(|(r, &n)| Sample(vec![route(r)], n as f64)).collect()
}

/// One sample per failure (every outcome but `Ok`), the outcome under `label`.
fn per_failure(label: &'static str, values: &[u64]) -> Vec<Sample> {
    let failures = Outcome::ALL.into_iter().filter(|o| *o != Outcome::Ok);
    failures.map(|o| Sample(vec![outcome(label, o)], values[o.index()] as f64)).collect()
}

/// One sample per upstream the pool reported, by its number.
fn per_upstream(s: &Snapshot, value: fn(&UpstreamHealth) -> f64) -> Vec<Sample> {
    s.upstreams.iter().map(|u| Sample(vec![upstream(u.number)], value(u))).collect()
}

/// One histogram per route (`RouteKind::ALL` order).
fn by_route(histograms: &[HistogramSnapshot]) -> Vec<(Label, &HistogramSnapshot)> {
    RouteKind::ALL.into_iter().map(route).zip(histograms).collect()
}

/// One histogram per upstream, numbered from 1.
fn by_upstream(histograms: &[HistogramSnapshot]) -> Vec<(Label, &HistogramSnapshot)> {
    histograms.iter().enumerate().map(|(u, h)| (upstream(u + 1), h)).collect()
}

/// The `route` label.
fn route(r: RouteKind) -> Label {
    ("route", r.label().to_string())
}

/// The `upstream` label: the upstream's number, 1..N.
fn upstream(number: usize) -> Label {
    ("upstream", number.to_string())
}

/// An outcome under `label` (`outcome` or `reason`).
fn outcome(label: &'static str, o: Outcome) -> Label {
    (label, o.label().to_string())
}

impl Kind {
    /// The `# TYPE` word.
    fn name(&self) -> &'static str {
        match self {
            Counter(_) => "counter",
            Gauge(_) => "gauge",
            Histogram(..) => "histogram",
        }
    }
}

/// The text being written, one line at a time.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, family: &Family, s: &Snapshot) {
        let (name, help, kind) = (family.name, family.help, family.kind.name());
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        match &family.kind {
            Counter(read) | Gauge(read) => {
                for Sample(labels, value) in read(s) {
                    self.sample(name, &labels, value);
                }
            }
            Histogram(bounds, read) => {
                for (label, h) in read(s) {
                    self.histogram(name, label, bounds, h);
                }
            }
        }
    }

    fn sample(&mut self, name: &str, labels: &[Label], value: f64) {
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

    /// Cumulative buckets (`le`, the last `+Inf`), then `_sum` and `_count`.
    fn histogram(&mut self, name: &str, label: Label, bounds: &[f64], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut labels = [label, ("le", String::new())];
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            labels[1].1 = bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
            self.sample(&bucket, &labels, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), &labels[..1], h.sum);
        self.sample(&format!("{name}_count"), &labels[..1], cumulative as f64);
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
    use std::time::Duration;

    use super::*;
    use crate::metrics::{ClientCounts, Done, Gauges, Metrics, Tally, OUTCOMES, STATUSES};

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
            reasoning: [11, 3, 1],
            durations: (0..4).map(|r| histogram(DURATION_BUCKETS.len(), r, 12.25 + r as f64)).collect(),
            sizes: (0..4).map(|r| histogram(SIZE_BUCKETS.len(), r + 1, 17_700.0 * (r + 1) as f64)).collect(),
            upstream_durations: (0..2)
                .map(|u| histogram(DURATION_BUCKETS.len(), u + 2, 0.5 + u as f64))
                .collect(),
            recent: vec![],
            clients: vec![
                ClientRow {
                    name: "-".into(),
                    counts: ClientCounts { requests: [0, 3, 0, 12, 0], limited: 0 },
                    ..ClientRow::default()
                },
                ClientRow {
                    name: "alice".into(),
                    counts: ClientCounts { requests: [0, 40, 0, 2, 1], limited: 2 },
                    in_flight: 3,
                    limit: Some(4),
                },
                ClientRow { name: "ci-bot@build".into(), ..ClientRow::default() },
            ],
            tokens: vec![
                Tokens {
                    upstream: 1,
                    client: None,
                    delivered: usage(1200, 1024, 300, 192),
                    discarded: usage(0, 0, 0, 0),
                },
                Tokens {
                    upstream: 1,
                    client: Some("ci \"bot\"".into()),
                    delivered: usage(5000, 0, 70, 0),
                    discarded: usage(4000, 2048, 35, 16),
                },
                Tokens {
                    upstream: 2,
                    client: Some("alice".into()),
                    delivered: usage(0, 0, 0, 0),
                    discarded: usage(9, 1, 8, 2),
                },
            ],
        }
    }

    fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Usage {
        Usage { input, cached, output, reasoning }
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
        assert_eq!(families.len(), FAMILIES.len(), "{families:?}");
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
