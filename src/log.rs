//! A tiny leveled logger: one line per call on stderr, with a UTC timestamp, as text or as
//! one JSON object per line (`LOG_FORMAT=json`, for journald, Loki, Datadog...).
//!
//! Callers pass text that never contains a key (keys are never formatted anywhere; see
//! ARCHITECTURE.md), and every leveled line still goes through the upstream keys' scrubber
//! (`set_scrubber`), in case an upstream's text quoted one. The request line has its own
//! fields (`RequestLine`), the same in both formats. No buffering, no files, no framework.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::date;
use crate::scrub::Scrubber;
use crate::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// How a line is written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `2026-11-25T14:20:32.123Z INFO  message`
    Text = 0,
    /// `{"ts":"2026-11-25T14:20:32.123Z","level":"info","msg":"message"}`
    Json = 1,
}

static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" | "trace" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

static SCRUBBER: OnceLock<Scrubber> = OnceLock::new();

/// The upstream keys that no leveled line may show (set once, at start-up).
pub fn set_scrubber(scrubber: Scrubber) {
    let _ = SCRUBBER.set(scrubber);
}

/// Write one line if `level` is enabled.
pub fn write(level: Level, args: std::fmt::Arguments) {
    if enabled(level) {
        let line = line(format(), &date::timestamp(SystemTime::now()), level, args);
        match SCRUBBER.get() {
            Some(scrubber) => emit(&scrubber.text(&line)),
            None => emit(&line),
        }
    }
}

/// Write one line to stderr as it is (the banner, a fatal error). A failed write (stderr
/// closed) is ignored: logging never ends the program.
pub fn raw(line: &str) {
    let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

/// Write text to stdout (`--help`, `--check`); a closed stdout is ignored.
pub fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn emit(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// One line (with its newline) in `format`.
fn line(format: Format, ts: &str, level: Level, args: std::fmt::Arguments) -> String {
    match format {
        Format::Text => format!("{ts} {:<5} {args}\n", level.name().to_ascii_uppercase()),
        Format::Json => {
            let msg = args.to_string();
            json!({"ts": ts, "level": level.name(), "msg": msg}).to_string() + "\n"
        }
    }
}

/// At most one line per `every` for an event that can come by the thousand a second
/// (connections turned away, accept errors, heads that timed out): the first is written, the
/// others are counted and the count goes with the next line written.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// When the last line was written, and how many were not since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, state: Mutex::new((None, 0)) }
    }

    /// An event at `now`: `Some(n)` to write its line (`n` events were not logged since the
    /// last one), `None` to count it.
    pub fn tick(&self, now: Instant) -> Option<u64> {
        let mut state = crate::sync::lock(&self.state);
        let (last, unlogged) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            *unlogged += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(unlogged))
    }
}

/// What the log says about one finished request (never a key, a query or a body).
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub id: u64,
    pub method: &'a str,
    /// The path without its query.
    pub path: &'a str,
    /// The client's name from `CLIENT_KEYS_FILE` (never its key).
    pub client: Option<&'a str>,
    pub status: u16,
    pub attempts: u32,
    /// The upstream (1-based) of the last attempt.
    pub upstream: Option<usize>,
    /// One entry per failed attempt: its upstream, what it came to, the wait that followed
    /// ("u1 429 +1.00s").
    pub retries: &'a [String],
    pub bytes: usize,
    pub ms: u128,
    /// The client closed its connection before its answer was written.
    pub client_gone: bool,
    /// The request id the client got (`x-request-id`) and the W3C trace id of the request.
    pub rid: &'a str,
    pub trace: &'a str,
    /// The upstream's own request id on the answer, if it sent one.
    pub upstream_rid: Option<&'a str>,
    /// What the answer the client got cost, when its upstream said.
    pub tokens: Option<Usage>,
    /// What the attempts the shield discarded cost, when their upstreams said.
    pub discarded_tokens: Option<Usage>,
}

/// The request's line, at level info. Out of line: its frame would otherwise be part of the
/// connection thread's stack under every attempt (docs/limits.md, memory per answer).
#[inline(never)]
pub fn request(r: &RequestLine) {
    if enabled(Level::Info) {
        emit(&request_line(format(), &date::timestamp(SystemTime::now()), r));
    }
}

fn request_line(format: Format, ts: &str, r: &RequestLine) -> String {
    if format == Format::Json {
        let mut v = json!({
            "ts": ts, "level": "info", "msg": "request", "req": r.id, "method": r.method,
            "path": r.path, "client": r.client, "status": r.status, "attempts": r.attempts, "upstream": r.upstream,
            "retries": r.retries,
            "bytes": r.bytes, "ms": r.ms as u64, "client_gone": r.client_gone,
            "rid": r.rid, "trace": r.trace, "upstream_rid": r.upstream_rid,
        });
        for (key, usage) in [("tokens", r.tokens), ("discarded_tokens", r.discarded_tokens)] {
            if let Some(u) = usage {
                v[key] = json!({"input": u.input, "cached_input": u.cached, "output": u.output, "reasoning": u.reasoning});
            }
        }
        return v.to_string() + "\n";
    }
    let retries =
        if r.retries.is_empty() { String::new() } else { format!(" retries=[{}]", r.retries.join(", ")) };
    let gone = if r.client_gone { " client-gone" } else { "" };
    let upstream = r.upstream.map_or(String::new(), |n| format!(" upstream={n}"));
    let client = r.client.map_or(String::new(), |name| format!(" client={name}"));
    let theirs = r.upstream_rid.map_or(String::new(), |id| format!(" upstream_rid={id:?}"));
    let tokens = r.tokens.map_or(String::new(), |u| format!(" tokens={u}"));
    let discarded = r.discarded_tokens.map_or(String::new(), |u| format!(" discarded_tokens={u}"));
    let text = format_args!(
        "req={} {} {}{client} status={} attempts={}{upstream}{retries} bytes={} ms={}{tokens}{discarded} rid={} trace={}{theirs}{gone}",
        r.id, r.method, r.path, r.status, r.attempts, r.bytes, r.ms, r.rid, r.trace
    );
    line(Format::Text, ts, Level::Info, text)
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(retries: &[String], client_gone: bool) -> RequestLine<'_> {
        RequestLine {
            id: 7,
            method: "POST",
            path: "/v1/responses",
            client: None,
            status: 200,
            attempts: 3,
            upstream: Some(2),
            retries,
            bytes: 17_700,
            ms: 2_345,
            client_gone,
            rid: "00f067aa0ba902b7",
            trace: "4bf92f3577b34da6a3ce929d0e0e4736",
            upstream_rid: client_gone.then_some("req_\"x"),
            tokens: None,
            discarded_tokens: None,
        }
    }

    const SPENT: Usage = Usage { input: 1200, cached: 1024, output: 300, reasoning: 192 };
    const LOST: Usage = Usage { input: 1200, cached: 0, output: 40, reasoning: 0 };

    const TS: &str = "2026-11-25T14:20:32.123Z";

    #[test]
    fn request_line_as_text() {
        let retries = ["u1 429 +1.00s".to_string(), "u2 cut +2.10s".to_string()];
        let cases = [
            (
                sample(&retries, false),
                "2026-11-25T14:20:32.123Z INFO  req=7 POST /v1/responses status=200 attempts=3 upstream=2 \
                 retries=[u1 429 +1.00s, u2 cut +2.10s] bytes=17700 ms=2345 rid=00f067aa0ba902b7 \
                 trace=4bf92f3577b34da6a3ce929d0e0e4736\n",
            ),
            (
                sample(&[], true),
                "2026-11-25T14:20:32.123Z INFO  req=7 POST /v1/responses status=200 attempts=3 upstream=2 \
                 bytes=17700 ms=2345 rid=00f067aa0ba902b7 trace=4bf92f3577b34da6a3ce929d0e0e4736 \
                 upstream_rid=\"req_\\\"x\" client-gone\n",
            ),
            (
                RequestLine { client: Some("ci-bot"), ..sample(&[], false) },
                "2026-11-25T14:20:32.123Z INFO  req=7 POST /v1/responses client=ci-bot status=200 attempts=3 \
                 upstream=2 bytes=17700 ms=2345 rid=00f067aa0ba902b7 trace=4bf92f3577b34da6a3ce929d0e0e4736\n",
            ),
            (
                RequestLine { tokens: Some(SPENT), ..sample(&[], false) },
                "2026-11-25T14:20:32.123Z INFO  req=7 POST /v1/responses status=200 attempts=3 upstream=2 \
                 bytes=17700 ms=2345 tokens=1200/1024/300/192 rid=00f067aa0ba902b7 \
                 trace=4bf92f3577b34da6a3ce929d0e0e4736\n",
            ),
            (
                RequestLine { tokens: Some(SPENT), discarded_tokens: Some(LOST), ..sample(&retries, true) },
                "2026-11-25T14:20:32.123Z INFO  req=7 POST /v1/responses status=200 attempts=3 upstream=2 \
                 retries=[u1 429 +1.00s, u2 cut +2.10s] bytes=17700 ms=2345 tokens=1200/1024/300/192 \
                 discarded_tokens=1200/0/40/0 rid=00f067aa0ba902b7 trace=4bf92f3577b34da6a3ce929d0e0e4736 \
                 upstream_rid=\"req_\\\"x\" client-gone\n",
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(request_line(Format::Text, TS, &r), expected);
        }
    }

    #[test]
    fn request_line_as_json() {
        let retries = ["429 +1.00s".to_string(), "event:\"quoted\"\n +0.50s".to_string()];
        let text =
            request_line(Format::Json, TS, &RequestLine { client: Some("alice"), ..sample(&retries, true) });
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "one line: {text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected = json!({
            "ts": TS, "level": "info", "msg": "request", "req": 7, "method": "POST",
            "path": "/v1/responses", "client": "alice", "status": 200, "attempts": 3, "upstream": 2,
            "retries": ["429 +1.00s", "event:\"quoted\"\n +0.50s"], "bytes": 17700, "ms": 2345,
            "client_gone": true, "rid": "00f067aa0ba902b7", "trace": "4bf92f3577b34da6a3ce929d0e0e4736",
            "upstream_rid": "req_\"x",
        });
        assert_eq!(v, expected, "no usage, no tokens");
        let line =
            RequestLine { tokens: Some(SPENT), discarded_tokens: Some(LOST), ..sample(&retries, true) };
        let v: serde_json::Value = serde_json::from_str(&request_line(Format::Json, TS, &line)).unwrap();
        let tokens = json!({"input": 1200, "cached_input": 1024, "output": 300, "reasoning": 192});
        let discarded = json!({"input": 1200, "cached_input": 0, "output": 40, "reasoning": 0});
        assert_eq!((&v["tokens"], &v["discarded_tokens"]), (&tokens, &discarded));
    }

    #[test]
    fn other_lines_in_both_formats() {
        let text = line(Format::Text, TS, Level::Warn, format_args!("refused: {}", "busy"));
        assert_eq!(text, "2026-11-25T14:20:32.123Z WARN  refused: busy\n");
        let json = line(Format::Json, TS, Level::Warn, format_args!("a \"b\"\nc"));
        assert_eq!(
            json,
            "{\"ts\":\"2026-11-25T14:20:32.123Z\",\"level\":\"warn\",\"msg\":\"a \\\"b\\\"\\nc\"}\n"
        );
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse("logfmt"), None);
    }

    #[test]
    fn a_throttle_writes_one_line_per_period_with_the_count() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        let script =
            [(0, Some(0)), (1, None), (9_999, None), (10_000, Some(2)), (10_001, None), (30_000, Some(1))];
        for (ms, expected) in script {
            assert_eq!(throttle.tick(start + Duration::from_millis(ms)), expected, "at {ms} ms");
        }
    }
}
