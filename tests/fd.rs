//! Running out of file descriptors, slow request heads and wrong-key floods (issue 17): the
//! proxy under a low open-files limit turns connections away with a 503 and serves again
//! once they close, never panics; a head that trickles in gets a 408 at its deadline and an
//! idle connection is closed; an address trying keys gets 429s and few log lines, while
//! another address is served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Step};
use crate::support::{command, request, Proxy, RESPONSES_STREAM};

fn clean_mock() -> (Mock, Vec<u8>) {
    let ok = fixtures::responses(ANSWER, false);
    let step = Step::stream(&ok);
    (Mock::generated(move |_, _| step.clone()), ok)
}

/// `inner` (the proxy and its environment) run under an open-files limit of `nofile`, soft
/// and hard alike, so that the proxy's raise to the hard limit cannot lift it.
fn under_limit(inner: Command, nofile: u32) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("ulimit -n {nofile} && exec \"$0\"")).arg(inner.get_program());
    cmd.env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd
}

/// An answer read off a raw connection: its status, head and body (by `content-length`);
/// `None` if the connection ended (or failed) before a whole answer.
fn read_answer(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, head, bytes[end + 4..end + 4 + length].to_vec()));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn post_bytes(key: &str) -> Vec<u8> {
    format!(
        "POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         authorization: Bearer {key}\r\ncontent-length: {}\r\n\r\n{RESPONSES_STREAM}",
        RESPONSES_STREAM.len()
    )
    .into_bytes()
}

/// The status of one keep-alive exchange on `s` (`None`: the connection ended instead).
fn exchange(s: &mut TcpStream, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    s.write_all(bytes).ok()?;
    read_answer(s).map(|(status, _, body)| (status, body))
}

fn assert_alive_without_panic(proxy: &mut Proxy) {
    assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy exited:\n{}", proxy.log());
    assert!(!proxy.log().contains("panicked"), "a thread panicked:\n{}", proxy.log());
}

/// With 128 descriptors, soft and hard: connections past what the limit has room for get a
/// 503 (OpenAI-shaped) or are closed, the process lives, a request on a connection already
/// open still reaches the upstream, and once the idle connections close new ones are served.
/// Before the fix the accept thread panicked (EMFILE in `try_clone().unwrap()`) and the
/// listener was gone for good.
#[test]
fn at_the_descriptor_limit_connections_get_503_and_are_served_again() {
    let (mock, ok) = clean_mock();
    let env = [
        ("AZURE_ENDPOINT", mock.v1()),
        ("CLIENT_HEADER_TIMEOUT_SECONDS", "60".into()),
        ("CLIENT_IDLE_TIMEOUT_SECONDS", "60".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut proxy = Proxy::spawn(under_limit(command(&env), 128));
    let port = proxy.port;

    let mut held = Vec::new();
    let mut refusal = None;
    for _ in 0..300 {
        let answer = connect(port).ok().and_then(|mut s| exchange(&mut s, HEALTHZ).map(|a| (s, a)));
        match answer {
            Some((s, (200, _))) => held.push(s),
            other => {
                refusal = Some(other.map(|(_, a)| a));
                break;
            }
        }
    }
    let served = held.len();
    let refusal = refusal.unwrap_or_else(|| panic!("300 connections and no refusal:\n{}", proxy.log()));
    assert_alive_without_panic(&mut proxy);
    let (status, body) =
        refusal.unwrap_or_else(|| panic!("closed instead of a 503 after {served}:\n{}", proxy.log()));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("proxy_busy")), "{v}");
    assert!((20..=80).contains(&served), "{served} connections served under 128 descriptors");

    // at the limit, a request on an open connection still gets its upstream socket
    let on_held = exchange(&mut held[0], &post_bytes("any"));
    assert_eq!(on_held.map(|(s, b)| (s, b == ok)), Some((200, true)));

    drop(held);
    let closed = Instant::now();
    let mut again = None;
    while again.is_none() && closed.elapsed() < Duration::from_secs(10) {
        let mut s = connect(port).unwrap();
        match exchange(&mut s, HEALTHZ) {
            Some((200, _)) => again = Some(s),
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut again = again.unwrap_or_else(|| panic!("not served 10 s after the connections closed"));
    eprintln!(
        "{served} connections served at 128 descriptors; served again {:?} after they closed",
        closed.elapsed()
    );
    let got = exchange(&mut again, &post_bytes("any"));
    assert_eq!(got.map(|(s, b)| (s, b == ok)), Some((200, true)));
    let got = request("GET", &proxy.url("/healthz"), &[], b"");
    assert_eq!(got.status, 200);
    assert_alive_without_panic(&mut proxy);
    let log = proxy.log();
    assert!(log.contains("MAX_CONCURRENT 21 (default 256 lowered to fit 128 descriptors)"), "{log}");
    assert!(log.contains("descriptors 128 (hard 128); up to 42 connections"), "{log}");
    proxy.wait_for_log("turning connections away");
}

/// A head sent a byte at a time (each read well within the per-read timeout) gets a 408 at
/// its deadline; a kept-alive connection left idle and one that never sends a byte are closed
/// quietly. Before, the trickle held its connection for as long as it went on.
#[test]
fn slow_heads_get_408_and_idle_connections_close() {
    let (mock, _) = clean_mock();
    let proxy = Proxy::start(
        &mock.v1(),
        &[("CLIENT_HEADER_TIMEOUT_SECONDS", "1"), ("CLIENT_IDLE_TIMEOUT_SECONDS", "1")],
    );

    let mut slow = connect(proxy.port).unwrap();
    let mut dribble = slow.try_clone().unwrap();
    let started = Instant::now();
    let writer = thread::spawn(move || {
        for byte in b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n" {
            if dribble.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(6) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let answer = read_answer(&mut slow);
    let took = started.elapsed();
    let (status, _, body) = answer.unwrap_or_else(|| panic!("no answer after {took:?}:\n{}", proxy.log()));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (408, Some("request_timeout")), "{v}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "408 after {took:?}");
    let _ = slow.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    proxy.wait_for_log("closed a connection: the request head did not arrive in time (408");

    // a kept-alive connection, idle after its answer, and a silent one: closed, no bytes
    let mut idle = connect(proxy.port).unwrap();
    assert_eq!(exchange(&mut idle, HEALTHZ).map(|(s, _)| s), Some(200));
    let mut silent = connect(proxy.port).unwrap();
    for (name, s) in [("idle", &mut idle), ("silent", &mut silent)] {
        let waited = Instant::now();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(read.is_ok() && rest.is_empty(), "{name}: {read:?}, {:?}", String::from_utf8_lossy(&rest));
        assert!(
            waited.elapsed() < Duration::from_secs(4),
            "{name} connection closed after {:?}",
            waited.elapsed()
        );
    }
}

/// A raw POST from `source` (another loopback address is another peer).
fn post_from(source: &str, port: u16, key: &str) -> (u16, String, Vec<u8>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(&to.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&post_bytes(key)).unwrap();
    read_answer(&mut s).expect("an answer")
}

/// After `AUTH_FAILURE_LIMIT` wrong keys an address gets 429s (with `retry-after`) without
/// its key being checked, and its tries are summed up in a line instead of one line each;
/// another address with the right key is served meanwhile. Before, every wrong key was a
/// 401 and a log line.
#[test]
fn wrong_keys_are_braked_per_address_and_logged_once() {
    let (mock, ok) = clean_mock();
    let proxy = Proxy::start(&mock.v1(), &[("PROXY_API_KEY", "inbound-secret"), ("AUTH_FAILURE_LIMIT", "5")]);
    let statuses: Vec<u16> = (0..30).map(|_| post_from("127.0.0.1", proxy.port, "wrong").0).collect();
    let expected: Vec<u16> = [401; 5].into_iter().chain([429; 25]).collect();
    assert_eq!(statuses, expected);
    let (status, head, body) = post_from("127.0.0.1", proxy.port, "inbound-secret");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("too_many_auth_failures")),
        "the right key unchecked"
    );
    let retry_after: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no retry-after: {head}"));
    assert!((55..=60).contains(&retry_after), "retry-after {retry_after}");

    let (status, _, body) = post_from("127.0.0.2", proxy.port, "inbound-secret");
    assert_eq!((status, body == ok), (200, true), "another address is served");
    assert_eq!(post_from("127.0.0.2", proxy.port, "wrong").0, 401, "and counted apart");

    proxy.wait_for_log("5 wrong proxy API keys from 127.0.0.1");
    let lines = |log: &str, needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    // the last request's line is written just after its answer
    let waited = Instant::now();
    while lines(&proxy.log(), "status=401") < 2 && waited.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    let log = proxy.log();
    let lines = |needle: &str| lines(&log, needle);
    assert_eq!(lines("status=401"), 2, "one request line per address:\n{log}");
    assert_eq!(lines("status=429"), 0, "braked requests write no line:\n{log}");
    assert_eq!(lines("wrong proxy API keys from"), 1, "{log}");
    assert!(!log.contains("inbound-secret"), "the key never shows");
}
