//! A scripted mock upstream that speaks HTTP/1.1 like the real APIs: keep-alive, chunked SSE
//! written piece by piece (so events split across reads), pauses, cuts and stalls; and like
//! the stranger ones: bodies ended by closing the connection, a stream held open after its
//! last event (silent or with `: keep-alive` comments), redirects, gzip-encoded bodies.
//!
//! Each incoming request takes the next `Step` of the script; when the script runs out the
//! mock answers 599 so that an unexpected extra attempt shows up in the test's diff.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the mock saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One piece of a scripted answer body.
#[derive(Clone)]
pub enum Piece {
    /// Written as one HTTP chunk (or raw bytes when not chunked) and flushed.
    Bytes(Vec<u8>),
    Pause(Duration),
    /// Wait until `n` requests have reached this point (or 10 s pass).
    Gather(Arc<Gather>),
}

/// How a scripted answer ends.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum End {
    /// Properly terminated (final chunk), connection kept alive.
    Complete,
    /// Connection closed without the final chunk.
    Cut,
    /// Nothing more is sent for this long, then the connection closes.
    Stall(Duration),
    /// The connection stays open, without the end of the body, until the proxy closes it or
    /// `max` passes (then it counts in `Mock::held_out`); with `comments`, a `: keep-alive`
    /// comment is sent at that interval meanwhile, as some servers do.
    Hold { comments: Option<Duration>, max: Duration },
}

/// How the body's end is marked.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`, each piece one chunk.
    Chunked,
    /// `Content-Length`.
    Length,
    /// Neither: the body ends when the connection closes (HTTP/1.1 allows it).
    Close,
}

/// The answer to one upstream attempt.
#[derive(Clone)]
pub struct Step {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub pieces: Vec<Piece>,
    pub framing: Framing,
    pub end: End,
}

impl Step {
    /// A 200 SSE stream sent as chunks of `step` bytes (0: one chunk per given piece).
    pub fn stream(body: &[u8]) -> Step {
        Step {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream; charset=utf-8".into())],
            pieces: vec![Piece::Bytes(body.to_vec())],
            framing: Framing::Chunked,
            end: End::Complete,
        }
    }

    /// A stream split into pieces of `size` bytes with a short pause between them, so that
    /// the proxy reads them separately.
    pub fn stream_split(body: &[u8], size: usize) -> Step {
        let mut pieces = Vec::new();
        for part in body.chunks(size.max(1)) {
            pieces.push(Piece::Bytes(part.to_vec()));
            pieces.push(Piece::Pause(Duration::from_micros(300)));
        }
        Step { pieces, ..Step::stream(b"") }
    }

    /// A JSON answer with a Content-Length.
    pub fn json(status: u16, body: &str) -> Step {
        Step {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            pieces: vec![Piece::Bytes(body.as_bytes().to_vec())],
            framing: Framing::Length,
            end: End::Complete,
        }
    }

    /// The first `keep` bytes of a stream, then the connection closes.
    pub fn cut(body: &[u8], keep: usize) -> Step {
        Step { end: End::Cut, ..Step::stream(&body[..keep]) }
    }

    /// The first `keep` bytes of a stream, then silence.
    pub fn stall(body: &[u8], keep: usize) -> Step {
        Step { end: End::Stall(Duration::from_secs(5)), ..Step::stream(&body[..keep]) }
    }

    /// All of `body`, then the connection stays open (see `End::Hold`): silent, or with a
    /// `: keep-alive` comment every 50 ms.
    pub fn hold(body: &[u8], comments: bool) -> Step {
        let comments = comments.then_some(Duration::from_millis(50));
        Step { end: End::Hold { comments, max: Duration::from_secs(10) }, ..Step::stream(body) }
    }

    /// A redirect to `location`, with an empty body.
    pub fn redirect(status: u16, location: &str) -> Step {
        Step { headers: vec![("location".into(), location.into())], ..Step::json(status, "") }
    }

    /// A success with no body and no content type (`204 No Content`, or a `200` like it).
    pub fn empty(status: u16) -> Step {
        Step { headers: vec![], ..Step::json(status, "") }
    }

    /// The same answer, body ended by closing the connection (no chunking, no length).
    pub fn unframed(self) -> Step {
        Step { framing: Framing::Close, ..self }
    }

    /// The same answer with another content type (`""`: none at all).
    pub fn content_type(mut self, value: &str) -> Step {
        self.headers.retain(|(name, _)| name != "content-type");
        if !value.is_empty() {
            self.headers.push(("content-type".into(), value.into()));
        }
        self
    }

    /// No answer at all: the connection closes before any status line.
    pub fn hangup() -> Step {
        Step { status: 0, ..Step::json(0, "") }
    }

    pub fn header(mut self, name: &str, value: &str) -> Step {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn before(mut self, piece: Piece) -> Step {
        self.pieces.insert(0, piece);
        self
    }
}

/// A rendezvous for `n` concurrent requests.
pub struct Gather {
    n: usize,
    arrived: Mutex<usize>,
    cv: Condvar,
    pub timed_out: Mutex<bool>,
}

impl Gather {
    pub fn new(n: usize) -> Arc<Gather> {
        Arc::new(Gather { n, arrived: Mutex::new(0), cv: Condvar::new(), timed_out: Mutex::new(false) })
    }

    fn wait(&self) {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cv.notify_all();
        let (_guard, result) =
            self.cv.wait_timeout_while(arrived, Duration::from_secs(10), |a| *a < self.n).unwrap();
        if result.timed_out() {
            *self.timed_out.lock().unwrap() = true;
        }
    }
}

/// The running mock: its base URL and what it saw.
pub struct Mock {
    pub origin: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    held_out: Arc<AtomicUsize>,
    /// Connections accepted so far (how well the proxy reuses them).
    accepted: Arc<AtomicUsize>,
}

impl Mock {
    /// Start a mock that answers its requests with `script`, in order.
    pub fn start(script: Vec<Step>) -> Mock {
        let script = Mutex::new(script.into_iter());
        Mock::generated(move |_, _| {
            script.lock().unwrap().next().unwrap_or_else(|| {
                Step::json(
                    599,
                    r#"{"error":{"message":"mock script exhausted","type":"mock","code":"mock"}}"#,
                )
            })
        })
    }

    /// Start a mock whose answer to each request comes from `step`, given the request's index
    /// (in arrival order, from 0) and what the mock saw of it.
    pub fn generated(step: impl Fn(usize, &Seen) -> Step + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let held_out = Arc::new(AtomicUsize::new(0));
        let step: Arc<Generator> = Arc::new(step);
        let (log, held) = (Arc::clone(&seen), Arc::clone(&held_out));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (step, log, held) = (Arc::clone(&step), Arc::clone(&log), Arc::clone(&held));
                thread::spawn(move || serve_connection(stream, &*step, &log, &held));
            }
        });
        Mock { origin, seen, held_out, accepted }
    }

    /// Connections the mock has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Base URL in the `.../v1` form.
    pub fn v1(&self) -> String {
        format!("{}/v1", self.origin)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many `End::Hold` answers the proxy did not hang up on before their `max` ran out.
    pub fn held_out(&self) -> usize {
        self.held_out.load(Ordering::SeqCst)
    }
}

type Generator = dyn Fn(usize, &Seen) -> Step + Send + Sync;

fn serve_connection(stream: TcpStream, step: &Generator, log: &Mutex<Vec<Seen>>, held_out: &AtomicUsize) {
    stream.set_nodelay(true).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(seen) = read_request(&mut reader) {
        let index = {
            let mut log = log.lock().unwrap();
            log.push(seen.clone());
            log.len() - 1
        };
        if !write_step(&mut writer, &step(index, &seen), held_out) {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen { method, path, headers, body })
}

/// Write one scripted answer; `false` when the connection must close.
fn write_step(w: &mut TcpStream, step: &Step, held_out: &AtomicUsize) -> bool {
    if step.status == 0 {
        let _ = w.shutdown(std::net::Shutdown::Both);
        return false;
    }
    let reason = if step.status == 200 { "OK" } else { "Scripted" };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", step.status);
    for (name, value) in &step.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match step.framing {
        Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
        Framing::Length => {
            let len: usize = step
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Bytes(b) => b.len(),
                    _ => 0,
                })
                .sum();
            head.push_str(&format!("content-length: {len}\r\n"));
        }
        Framing::Close => head.push_str("connection: close\r\n"),
    }
    head.push_str("\r\n");
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for piece in &step.pieces {
        let ok = match piece {
            Piece::Bytes(b) => write_piece(w, b, step.framing),
            Piece::Pause(d) => {
                thread::sleep(*d);
                true
            }
            Piece::Gather(g) => {
                g.wait();
                true
            }
        };
        if !ok {
            return false;
        }
    }
    match step.end {
        End::Complete if step.framing == Framing::Chunked => {
            w.write_all(b"0\r\n\r\n").and_then(|_| w.flush()).is_ok()
        }
        End::Complete if step.framing == Framing::Close => {
            let _ = w.shutdown(std::net::Shutdown::Write);
            false
        }
        End::Complete => true,
        End::Cut => {
            let _ = w.shutdown(std::net::Shutdown::Both);
            false
        }
        End::Stall(d) => {
            thread::sleep(d);
            false
        }
        End::Hold { comments, max } => {
            if !hold(w, step.framing, comments, max) {
                held_out.fetch_add(1, Ordering::SeqCst);
            }
            let _ = w.shutdown(std::net::Shutdown::Both);
            false
        }
    }
}

/// One piece of body: a chunk, or raw bytes.
fn write_piece(w: &mut TcpStream, bytes: &[u8], framing: Framing) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    if framing == Framing::Chunked {
        out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
    }
    out.extend_from_slice(bytes);
    if framing == Framing::Chunked {
        out.extend_from_slice(b"\r\n");
    }
    w.write_all(&out).and_then(|_| w.flush()).is_ok()
}

/// Keep the connection open (sending comments if asked) until the peer closes it (`true`)
/// or `max` passes (`false`).
fn hold(w: &mut TcpStream, framing: Framing, comments: Option<Duration>, max: Duration) -> bool {
    let until = Instant::now() + max;
    let tick = comments.unwrap_or(Duration::from_millis(50));
    let _ = w.set_read_timeout(Some(tick));
    let mut probe = [0u8; 1];
    while Instant::now() < until {
        match w.read(&mut probe) {
            Ok(0) => return true,
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return true
            }
            _ => {}
        }
        if comments.is_some() && !write_piece(w, b": keep-alive\n\n", framing) {
            return true;
        }
    }
    false
}

/// `body` as a real gzip member: stored (uncompressed) deflate blocks, CRC-32 and size.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let blocks: Vec<&[u8]> = if body.is_empty() { vec![&[][..]] } else { body.chunks(65_535).collect() };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
