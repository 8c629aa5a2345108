//! Clients that take their answers slowly or not at all (issue 17): a request counts against
//! `MAX_CONCURRENT` until its answer is written, a client too slow for its answer is cut off,
//! and shutdown neither waits on a slow reader past its grace nor goes silent for the
//! keepalive clients it is draining.
//!
//! The slow clients are raw sockets with a 4 KiB receive buffer, so an 8 MB answer stays
//! mostly in the proxy while they hold it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Piece, Step};
use crate::support::*;

/// A Responses stream of about 8 MB: text deltas of 16 KB (the text shows up five times).
fn big_answer() -> Vec<u8> {
    let word = format!("{} ", "x".repeat(16_000));
    fixtures::responses(&word.repeat(100), false)
}

/// An upstream that answers model `big` with 8 MB at once, `wait` after a minute, and
/// anything else with a short answer at once.
fn upstream() -> Mock {
    let (big, ok) = (big_answer(), fixtures::responses(ANSWER, false));
    Mock::generated(move |_, seen| match seen.json()["model"].as_str() {
        Some("big") => Step::stream(&big),
        Some("wait") => Step::stream(&ok).before(Piece::Pause(Duration::from_secs(60))),
        _ => Step::stream(&ok),
    })
}

/// A proxy in front of `mock` whose upstream may stay silent (the `wait` answers).
fn proxy(mock: &Mock, env: &[(&str, &str)]) -> Proxy {
    let mut all = vec![("IDLE_TIMEOUT_SECONDS", "120")];
    all.extend_from_slice(env);
    Proxy::start(&mock.v1(), &all)
}

/// A client socket with a 4 KiB receive buffer that has sent its Responses request.
fn client(proxy: &Proxy, model: &str, stream: bool) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    shrink_receive_buffer(&socket);
    let body = format!(r#"{{"model":"{model}","input":"hi","stream":{stream}}}"#);
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(format!("{head}{body}").as_bytes()).unwrap();
    socket
}

fn shrink_receive_buffer(socket: &TcpStream) {
    socket2::SockRef::from(socket).set_recv_buffer_size(4096).expect("setsockopt(SO_RCVBUF)");
}

/// Read 2 KB every `every` until the connection ends, reporting the size of each read; the
/// channel disconnects when the connection has ended.
fn read_slowly(mut socket: TcpStream, every: Duration) -> Receiver<usize> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n @ 1..) = socket.read(&mut buf) {
            if tx.send(n).is_err() {
                return;
            }
            thread::sleep(every); // the client's own slowness, not a wait for the proxy
        }
    });
    rx
}

/// The status of the answer `socket` gets, and when it came (status 0: none, the
/// connection ended first).
fn status_of(mut socket: TcpStream) -> Receiver<(u16, Instant)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = [0u8; 12];
        let status = socket
            .read_exact(&mut head)
            .ok()
            .and_then(|()| std::str::from_utf8(&head[9..12]).ok().and_then(|code| code.parse().ok()));
        let _ = tx.send((status.unwrap_or(0), Instant::now()));
    });
    rx
}

/// The status of the answer `socket` has started to receive, without consuming it.
fn status_peeked(socket: &TcpStream) -> u16 {
    let mut head = [0u8; 12];
    let n = socket.peek(&mut head).unwrap_or(0);
    std::str::from_utf8(&head[9.min(n)..n]).ok().and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Whether `socket` has received a byte yet, without consuming it.
fn has_bytes(socket: &TcpStream) -> bool {
    socket.set_nonblocking(true).unwrap();
    let peeked = socket.peek(&mut [0u8; 1]);
    socket.set_nonblocking(false).unwrap();
    matches!(peeked, Ok(1..))
}

fn sigterm(proxy: &Proxy) {
    let pid = proxy.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
}

/// The proxy's exit, polled for up to `limit`, and how long after `since` it came.
fn exit_within(proxy: &mut Proxy, since: Instant, limit: Duration) -> Option<(ExitStatus, Duration)> {
    while since.elapsed() < limit {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            return Some((status, since.elapsed()));
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A client reading 2 KB every 200 ms of an 8 MB answer (an hour's work) does not keep the
/// proxy past its grace period: the requests still waiting get their 503 when the grace
/// ends, and the process exits, the slow reader still reading.
#[test]
fn a_slow_reader_does_not_hold_shutdown_past_the_grace() {
    let mock = upstream();
    let mut proxy = proxy(&mock, &[("SHUTDOWN_GRACE_SECONDS", "2")]);
    let reads = read_slowly(client(&proxy, "big", true), Duration::from_millis(200));
    let waiting: Vec<_> = (0..3).map(|_| status_of(client(&proxy, "wait", false))).collect();
    reads.recv_timeout(Duration::from_secs(30)).expect("the slow reader got the start of its answer");
    wait_for("four requests upstream", Duration::from_secs(10), || mock.attempts() == 4);
    let signalled = Instant::now();
    sigterm(&proxy);
    let limit = Duration::from_secs(2 + 8);
    let exited = exit_within(&mut proxy, signalled, limit);
    let (status, took) =
        exited.unwrap_or_else(|| panic!("still running {limit:?} after SIGTERM:\n{}", proxy.log()));
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    for answer in waiting {
        let (status, at) = answer.recv_timeout(Duration::from_secs(5)).expect("an answer");
        assert_eq!((status, at.duration_since(signalled) < limit), (503, true), "{}", proxy.log());
    }
    assert!(took >= Duration::from_secs(2), "the grace was kept: exit after {took:?}");
}

/// A second signal ends the wait at once, even with a slow reader being written to: the
/// waiting request gets its 503 and the process exits, well before the 60 s grace.
#[test]
fn a_second_signal_ends_the_wait_despite_a_slow_reader() {
    let mock = upstream();
    let mut proxy = proxy(&mock, &[("SHUTDOWN_GRACE_SECONDS", "60")]);
    let reads = read_slowly(client(&proxy, "big", true), Duration::from_millis(200));
    let waiting = status_of(client(&proxy, "wait", false));
    reads.recv_timeout(Duration::from_secs(30)).expect("the slow reader got the start of its answer");
    wait_for("two requests upstream", Duration::from_secs(10), || mock.attempts() == 2);
    let signalled = Instant::now();
    sigterm(&proxy);
    wait_for("the drain to start", Duration::from_secs(5), || proxy.log().contains("shutting down: waiting"));
    sigterm(&proxy);
    let limit = Duration::from_secs(10);
    let exited = exit_within(&mut proxy, signalled, limit);
    let (status, _) =
        exited.unwrap_or_else(|| panic!("still running {limit:?} after two signals:\n{}", proxy.log()));
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    let (status, at) = waiting.recv_timeout(Duration::from_secs(5)).expect("an answer");
    assert_eq!((status, at.duration_since(signalled) < limit), (503, true), "{}", proxy.log());
}

/// With `MAX_CONCURRENT=2`, two clients that do not read their 8 MB answers hold both places
/// until their answers are written or they hang up: two more get a 503 and are never sent
/// upstream; once the first two close, a request gets through again.
#[test]
fn a_request_counts_until_its_answer_is_written() {
    let mock = upstream();
    let proxy = proxy(&mock, &[("MAX_CONCURRENT", "2")]);
    let holding: Vec<_> = (0..2).map(|_| client(&proxy, "big", true)).collect();
    wait_for("both answers started", Duration::from_secs(30), || holding.iter().all(has_bytes));
    for _ in 0..2 {
        let (status, _) =
            status_of(client(&proxy, "big", true)).recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(status, 503, "{}", proxy.log());
    }
    assert_eq!(mock.attempts(), 2, "answers fetched for clients over the limit");
    drop(holding);
    let url = proxy.url("/v1/responses");
    wait_for("a place again", Duration::from_secs(10), || post(&url, RESPONSES_STREAM).status == 200);
    assert_eq!(mock.attempts(), 3, "{}", proxy.log());
}

/// A client reading far slower than `CLIENT_MIN_BYTES_PER_SECOND` is cut off when its
/// answer's time is up (1 s + 8 MB at 4 MiB/s), and one that reads nothing after
/// `CLIENT_WRITE_TIMEOUT_SECONDS`: the proxy stops writing, and their place is free again.
/// (The kernel still sends what it had queued, then closes the connection.)
#[test]
fn a_client_too_slow_for_its_answer_is_cut_off() {
    let mock = upstream();
    let env = [
        ("CLIENT_WRITE_TIMEOUT_SECONDS", "1"),
        ("CLIENT_MIN_BYTES_PER_SECOND", "4194304"),
        ("MAX_CONCURRENT", "1"),
    ];
    let proxy = proxy(&mock, &env);
    let reads = read_slowly(client(&proxy, "big", true), Duration::from_millis(100));
    reads.recv_timeout(Duration::from_secs(30)).expect("the start of the answer");
    let cut = || proxy.log().contains("too slow to take its answer");
    wait_for("the slow reader cut off", Duration::from_secs(15), cut);
    let url = proxy.url("/v1/responses");
    wait_for("a place again", Duration::from_secs(5), || post(&url, RESPONSES_STREAM).status == 200);
    // The place is free once the previous answer is written: a request on a new connection
    // sent in that instant still finds it taken (503); the silent client is one that got in.
    let silent = (0..50)
        .map(|_| {
            let silent = client(&proxy, "big", true);
            wait_for("its answer started", Duration::from_secs(30), || has_bytes(&silent));
            silent
        })
        .find(|silent| status_peeked(silent) == 200)
        .expect("the silent client never got in");
    wait_for("a place again", Duration::from_secs(15), || post(&url, RESPONSES_STREAM).status == 200);
    // the log reaches the test through a pipe read by another thread: wait for the lines
    let cuts = || proxy.log().matches("too slow to take its answer").count();
    wait_for("both cuts logged", Duration::from_secs(5), || cuts() >= 2);
    let log = proxy.log();
    assert_eq!(log.matches("too slow to take its answer").count(), 2, "{log}");
    drop((reads, silent));
}

/// With `KEEPALIVE_SECONDS`, a streaming client waiting through the drain keeps getting its
/// keepalive events until the drain answers it with `response.failed`.
#[test]
fn keepalives_go_on_while_draining() {
    let mock = upstream();
    let env = [("SHUTDOWN_GRACE_SECONDS", "3"), ("KEEPALIVE_SECONDS", "0.5")];
    let mut proxy = proxy(&mock, &env);
    let socket = client(&proxy, "wait", true);
    let (tx, events) = mpsc::channel();
    let mut reader = socket.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send((Instant::now(), text)).is_err() {
                return;
            }
        }
    });
    let first = events.recv_timeout(Duration::from_secs(10)).expect("the head and a keepalive").1;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let signalled = Instant::now();
    sigterm(&proxy);
    let (mut keepalives, mut failed) = (0, false);
    while let Ok((at, text)) = events.recv_timeout(Duration::from_secs(10)) {
        if at > signalled {
            keepalives += text.matches(": keepalive").count();
        }
        failed |= text.contains("response.failed");
        if failed {
            break;
        }
    }
    assert!(failed, "the drain's response.failed:\n{}", proxy.log());
    assert!(keepalives >= 3, "{keepalives} keepalive(s) during a 3 s drain at one per 0.5 s");
    assert!(exit_within(&mut proxy, signalled, Duration::from_secs(10)).is_some(), "{}", proxy.log());
    drop(socket);
}
