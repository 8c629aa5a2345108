//! Long answers: one proxy holding hundreds to thousands of concurrent answers that each take
//! about ten seconds upstream, as LLM traffic does (`make longstreams`, bench/longstreams.sh).
//!
//! For each level (LONG_LEVELS, default 500,1000,2000) a fresh proxy starts in front of a
//! mock upstream (tests/support/mock.rs) that trickles a complete Responses stream over
//! LONG_SECONDS (10). All clients connect at once, each on its own socket; while every answer
//! is being buffered the proxy's RSS, threads and file descriptors are read from /proc and
//! `/healthz` is timed. Then every answer is compared byte for byte with the stream. One line
//! per level: errors, peak RSS, RSS per in-flight answer, threads, fds, CPU, /healthz latency.
//! Knobs: SHIELD_BIN, LONG_LEVELS, LONG_SECONDS, LONG_EVENTS (pieces per answer, 40),
//! LONG_RAMP_MS (pause per client while connecting, 1; 0 connects all at once).

#[allow(dead_code)] // the bench uses part of the test fixtures
#[path = "../tests/support/fixtures.rs"]
mod fixtures;
#[allow(dead_code)] // the bench uses part of the test mock
#[path = "../tests/support/mock.rs"]
mod mock;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mock::{End, Framing, Mock, Piece, Step};

const REQUEST: &str = r#"{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_text","text":"explain this repository"}]}],"stream":true}"#;
/// Client threads only copy bytes: a small stack lets the bench itself hold thousands.
const CLIENT_STACK: usize = 64 * 1024;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let bin = env_or("SHIELD_BIN", "target/release/codex-shield");
    let levels: Vec<usize> =
        env_or("LONG_LEVELS", "500,1000,2000").split(',').filter_map(|v| v.trim().parse().ok()).collect();
    let seconds: f64 = env_or("LONG_SECONDS", "10").parse().expect("LONG_SECONDS");
    let events: usize = env_or("LONG_EVENTS", "40").parse().expect("LONG_EVENTS");
    let ramp =
        Duration::from_secs_f64(env_or("LONG_RAMP_MS", "1").parse::<f64>().expect("LONG_RAMP_MS") / 1000.0);
    let answer = fixtures::responses(fixtures::ANSWER, false);
    let mock = trickling_mock(&answer, Duration::from_secs_f64(seconds), events);
    println!(
        "binary: {bin}; answer: {} bytes in {events} pieces over {seconds} s; connects {:?} apart",
        answer.len(),
        ramp
    );
    println!(
        "| in flight | ok | errors | wall s | idle RSS MB | peak RSS MB | KB per answer | threads | fds | CPU s | /healthz p50 ms | /healthz max ms |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let mut failed = false;
    for n in levels {
        let row = level(&bin, &mock, &answer, n, ramp);
        failed |= row.errors > 0;
        println!("{}", row.line(n));
    }
    if failed {
        std::process::exit(1);
    }
}

/// A mock whose every answer is `answer`, cut into `events` pieces spread over `duration`.
fn trickling_mock(answer: &[u8], duration: Duration, events: usize) -> Mock {
    let pause = Piece::Pause(duration / events as u32);
    let mut pieces = Vec::new();
    for part in answer.chunks(answer.len().div_ceil(events)) {
        pieces.push(pause.clone());
        pieces.push(Piece::Bytes(part.to_vec()));
    }
    let step = Step {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        pieces,
        framing: Framing::Chunked,
        end: End::Complete,
    };
    Mock::generated(move |_, _| step.clone())
}

#[derive(Default)]
struct Row {
    ok: usize,
    errors: usize,
    wall: f64,
    idle_rss_kb: u64,
    peak_rss_kb: u64,
    threads: u64,
    fds: usize,
    cpu: f64,
    health_ms: Vec<f64>,
    first_error: Option<String>,
}

impl Row {
    fn line(&self, n: usize) -> String {
        let mut h = self.health_ms.clone();
        h.sort_by(f64::total_cmp);
        let p50 = h.get(h.len() / 2).copied().unwrap_or(f64::NAN);
        let max = h.last().copied().unwrap_or(f64::NAN);
        let per = (self.peak_rss_kb.saturating_sub(self.idle_rss_kb)) as f64 * 1.024 / n as f64;
        let mut line = format!(
            "| {n} | {} | {} | {:.1} | {:.1} | {:.1} | {per:.0} | {} | {} | {:.2} | {p50:.2} | {max:.2} |",
            self.ok,
            self.errors,
            self.wall,
            self.idle_rss_kb as f64 / 1024.0,
            self.peak_rss_kb as f64 / 1024.0,
            self.threads,
            self.fds,
            self.cpu,
        );
        if let Some(e) = &self.first_error {
            line.push_str(&format!(" first error: {e}"));
        }
        line
    }
}

/// One level: a fresh proxy, `n` clients at once, measurements while all are in flight.
fn level(bin: &str, mock: &Mock, answer: &[u8], n: usize, ramp: Duration) -> Row {
    let seen_before = mock.attempts();
    let proxy = Proxy::start(bin, &mock.v1(), n);
    let mut row = Row { idle_rss_kb: proxy.status("VmRSS:"), ..Row::default() };
    let cpu_before = proxy.cpu_seconds();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        // a burst of new connections beyond the listen backlog (128) is refused or reset by
        // the kernel, not by the proxy: spread the connects, all still land within one answer
        if ramp > Duration::ZERO && i % 50 == 49 {
            thread::sleep(ramp * 50);
        }
        let (client_tx, port) = (tx.clone(), proxy.port);
        let spawned = thread::Builder::new().stack_size(CLIENT_STACK).spawn(move || {
            let _ = client_tx.send(one_request(port));
        });
        if let Err(e) = spawned {
            let _ = tx.send(Err(format!("client thread: {e}")));
        }
    }
    drop(tx);
    // All answers in flight: every request has reached the mock.
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.attempts() < seen_before + n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    row.threads = proxy.status("Threads:");
    row.fds = proxy.fds();
    for _ in 0..20 {
        row.health_ms.push(proxy.time_healthz());
        thread::sleep(Duration::from_millis(100));
    }
    for result in rx {
        match result {
            Ok(body) if body == answer => row.ok += 1,
            Ok(body) => {
                row.errors += 1;
                row.first_error.get_or_insert_with(|| format!("wrong body ({} bytes)", body.len()));
            }
            Err(e) => {
                row.errors += 1;
                row.first_error.get_or_insert(e);
            }
        }
    }
    row.wall = started.elapsed().as_secs_f64();
    row.cpu = proxy.cpu_seconds() - cpu_before;
    row.peak_rss_kb = proxy.status("VmHWM:");
    row
}

/// POST one request on its own connection and read the whole answer: its body, or why not.
fn one_request(port: u16) -> Result<Vec<u8>, String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        REQUEST.len()
    );
    socket
        .write_all(head.as_bytes())
        .and_then(|()| socket.write_all(REQUEST.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::new(socket);
    let (mut status, mut length, mut line) = (String::new(), None, String::new());
    reader.read_line(&mut status).map_err(|e| format!("status line: {e}"))?;
    while reader.read_line(&mut line).map_err(|e| format!("head: {e}"))? > 2 {
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        line.clear();
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status {}", status.trim()));
    }
    let mut body = Vec::with_capacity(length.unwrap_or(0));
    reader.read_to_end(&mut body).map_err(|e| format!("body: {e}"))?;
    if length != Some(body.len()) {
        return Err(format!("cut: {} of {length:?} bytes", body.len()));
    }
    Ok(body)
}

struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(bin: &str, upstream: &str, n: usize) -> Proxy {
        let mut child = Command::new(bin)
            .env_clear()
            .envs([
                ("AZURE_ENDPOINT", upstream),
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("LOG_LEVEL", "warn"),
                ("IDLE_TIMEOUT_SECONDS", "60"),
                ("MAX_CONCURRENT", &(n + 64).to_string()),
            ])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(port) =
                    line.split("listening on http://").nth(1).and_then(|a| a.rsplit(':').next())
                {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                } else if !line.starts_with("  ") {
                    eprintln!("proxy: {line}");
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(10)).expect("the proxy did not start");
        Proxy { child, port }
    }

    /// A `/proc/PID/status` field in its unit (kB for memory).
    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, Iterator::count)
    }

    /// User + system CPU time so far (clock ticks are 100 per second on Linux).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Milliseconds for one `GET /healthz` on a new connection.
    fn time_healthz(&self) -> f64 {
        let started = Instant::now();
        let answered = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            Ok(out.starts_with(b"HTTP/1.1 200"))
        });
        match answered {
            Ok(true) => started.elapsed().as_secs_f64() * 1000.0,
            _ => f64::INFINITY,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
