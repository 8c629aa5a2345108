//! Upstreams that drip, echo keys, or misbehave (issue 17): an attempt ends within a bound
//! whatever trickles in (one byte of one event, or one header line, at a time) and as soon as
//! its client has left; an upstream key quoted back by the upstream reaches neither the
//! client nor the log; a head too large and a refused certificate are named and not retried.
//! The dripping upstreams are raw sockets here (the scripted mock writes a head whole); they
//! report when the proxy closed the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fixtures::{self, error_body};
use crate::support::mock::{Mock, Step};
use crate::support::*;

/// How long a dripping upstream goes on before it gives up on the proxy closing.
const DRIP_FOR: Duration = Duration::from_secs(12);

/// One connection of a raw upstream: when its request had arrived, and when the proxy closed
/// it (`None`: still open after `DRIP_FOR`).
struct Lived {
    asked: Instant,
    closed: Option<Instant>,
}

impl Lived {
    fn seconds(&self) -> f64 {
        self.closed.map_or(f64::INFINITY, |c| (c - self.asked).as_secs_f64())
    }
}

/// A raw upstream: for each connection it reads the request, writes `head`, then `drip(i)`
/// every `every` (i = 0, 1, ...) until a write fails; each connection's story goes to the
/// channel, and a note goes to `arrived` as soon as a request is in.
fn dripping(
    head: &'static str,
    every: Duration,
    drip: fn(usize) -> Vec<u8>,
) -> (String, mpsc::Receiver<Lived>, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}/v1", listener.local_addr().unwrap());
    let (lived, arrived) = (mpsc::channel(), mpsc::channel());
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (lived, arrived) = (lived.0.clone(), arrived.0.clone());
            thread::spawn(move || {
                let mut stream = stream;
                read_request(&stream);
                let asked = Instant::now();
                let _ = arrived.send(());
                let closed = write_until_closed(&mut stream, head.as_bytes(), every, drip);
                let _ = lived.send(Lived { asked, closed });
            });
        }
    });
    (origin, lived.1, arrived.1)
}

/// The request's head and its `Content-Length` body.
fn read_request(stream: &TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let _ = reader.read_exact(&mut vec![0; length]);
}

/// `head`, then the drip, until a write fails (the moment is returned) or `DRIP_FOR` passes.
fn write_until_closed(
    stream: &mut TcpStream,
    head: &[u8],
    every: Duration,
    drip: fn(usize) -> Vec<u8>,
) -> Option<Instant> {
    stream.set_nodelay(true).ok();
    let until = Instant::now() + DRIP_FOR;
    let mut next = Some(head.to_vec());
    let mut i = 0;
    while Instant::now() < until {
        let bytes = next.take().unwrap_or_else(|| {
            i += 1;
            drip(i - 1)
        });
        if stream.write_all(&bytes).and_then(|()| stream.flush()).is_err() {
            return Some(Instant::now());
        }
        thread::sleep(every);
    }
    None
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// One chunk of one byte of an event that never ends (its data grows by one `a` at a time).
fn event_byte(i: usize) -> Vec<u8> {
    const START: &[u8] = b"data: {\"type\":\"response.output_text.delta\",\"delta\":\"";
    let byte = START.get(i).copied().unwrap_or(b'a');
    let mut chunk = b"1\r\n".to_vec();
    chunk.extend_from_slice(&[byte, b'\r', b'\n']);
    chunk
}

/// One more header line of a head that never ends.
fn header_line(i: usize) -> Vec<u8> {
    format!("x-drip-{i}: one line at a time\r\n").into_bytes()
}

/// The proxy's answer to a streaming Responses request, and how long it took.
fn timed_post(proxy: &Proxy) -> (Got, f64) {
    let started = Instant::now();
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    (got, started.elapsed().as_secs_f64())
}

#[test]
fn an_upstream_dripping_one_event_is_cut_off_at_twice_the_idle_timeout() {
    let (endpoint, lived, _) = dripping(SSE_HEAD, Duration::from_millis(100), event_byte);
    let proxy = Proxy::start(&endpoint, &[("IDLE_TIMEOUT_SECONDS", "1"), ("RETRY_ATTEMPTS", "2")]);
    let (got, took) = timed_post(&proxy);
    assert_eq!((got.status, got.error_code().as_str()), (504, "upstream_timeout"), "{}", got.text());
    assert!(got.text().contains("trickled"), "{}", got.text());
    for attempt in 1..=2 {
        let lived = lived.recv_timeout(DRIP_FOR + Duration::from_secs(2)).unwrap();
        // twice IDLE_TIMEOUT_SECONDS, and the next drip to see the close
        assert!(
            lived.seconds() < 3.0,
            "attempt {attempt} lived {:.1}s with IDLE_TIMEOUT_SECONDS=1",
            lived.seconds()
        );
    }
    assert!(took < 7.0, "two attempts took {took:.1}s");
}

#[test]
fn an_upstream_dripping_its_head_is_cut_off_at_twice_the_idle_timeout() {
    let head = "HTTP/1.1 200 OK\r\n";
    let (endpoint, lived, _) = dripping(head, Duration::from_millis(200), header_line);
    let proxy = Proxy::start(&endpoint, &[("IDLE_TIMEOUT_SECONDS", "1"), ("RETRY_ATTEMPTS", "1")]);
    let (got, took) = timed_post(&proxy);
    assert_eq!((got.status, got.error_code().as_str()), (504, "upstream_timeout"), "{}", got.text());
    assert!(got.text().contains("its head"), "{}", got.text());
    let lived = lived.recv_timeout(DRIP_FOR + Duration::from_secs(2)).unwrap();
    assert!(lived.seconds() < 3.0, "the attempt lived {:.1}s with IDLE_TIMEOUT_SECONDS=1", lived.seconds());
    assert!(took < 4.0, "took {took:.1}s");
}

#[test]
fn an_attempt_stops_when_its_client_leaves() {
    let (endpoint, lived, arrived) = dripping(SSE_HEAD, Duration::from_millis(100), event_byte);
    let proxy = Proxy::start(&endpoint, &[("IDLE_TIMEOUT_SECONDS", "30"), ("RETRY_ATTEMPTS", "1")]);
    let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let body = RESPONSES_STREAM;
    write!(
        client,
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    arrived.recv_timeout(Duration::from_secs(10)).expect("the request never reached the upstream");
    thread::sleep(Duration::from_millis(300));
    drop(client);
    let left = Instant::now();
    let lived = lived.recv_timeout(DRIP_FOR + Duration::from_secs(2)).unwrap();
    let closed = lived.closed.map(|c| c.saturating_duration_since(left).as_secs_f64());
    // asked every second; a closed client is known at the second look (after the probe)
    assert!(closed.is_some_and(|s| s < 3.5), "upstream closed {closed:?}s after the client left");
    proxy.wait_for_log("client-gone");
}

/// A key the upstream quotes back; the proxy's own key and a second upstream's.
const SECOND_KEY: &str = "sk-second-SECRET-9876543210";

fn echo(key: &str) -> String {
    format!("Incorrect API key provided: {key}. Header was: Bearer {key}.")
}

/// The client's body and the whole log hold no key, and the message is still there.
fn assert_scrubbed(what: &str, got: &Got, proxy: &Proxy) {
    let log = proxy.wait_for_log("req=");
    for key in [UPSTREAM_KEY, SECOND_KEY] {
        assert!(!got.text().contains(key), "{what}: the client got the key: {}", got.text());
        assert!(!log.contains(key), "{what}: the log has the key:\n{log}");
    }
    assert!(got.text().contains("Incorrect API key provided: [key]"), "{what}: {}", got.text());
}

#[test]
fn an_echoed_key_reaches_neither_the_client_nor_the_log() {
    let mine = echo(UPSTREAM_KEY);
    let second = echo(SECOND_KEY);
    let json_200 = || Step::json(200, &error_body("invalid_api_key", &mine));
    let final_event = || Step::stream(&fixtures::responses_error("invalid_api_key", &mine, false));
    let retryable_event = || Step::stream(&fixtures::responses_error("server_error", &mine, true));
    let failed = || Step::stream(&fixtures::responses_failed("invalid_api_key", &mine));
    let chat_event = || Step::stream(&fixtures::chat_error("invalid_api_key", &mine));
    type Case<'a> = (&'a str, Step, &'a str, &'a str, u16);
    #[rustfmt::skip] // one row per case
    let cases: Vec<Case> = vec![
        ("200 JSON error", json_200(), "/v1/responses", RESPONSES_STREAM, 400),
        ("200 JSON error, not streaming", json_200(), "/v1/responses", RESPONSES_PLAIN, 400),
        ("final error event, streaming", final_event(), "/v1/responses", RESPONSES_STREAM, 200),
        ("final error event, not streaming", final_event(), "/v1/responses", RESPONSES_PLAIN, 400),
        ("response.failed, streaming", failed(), "/v1/responses", RESPONSES_STREAM, 200),
        ("chat error chunk", chat_event(), "/v1/chat/completions", CHAT_STREAM, 200),
        ("retryable error event", retryable_event(), "/v1/responses", RESPONSES_STREAM, 502),
        ("final 401", Step::json(401, &error_body("invalid_api_key", &mine)), "/v1/responses", RESPONSES_STREAM, 401),
        ("final 400, the other upstream's key", Step::json(400, &error_body("invalid_api_key", &second)), "/v1/responses", RESPONSES_STREAM, 400),
        ("retried 503", Step::json(503, &error_body("server_error", &mine)), "/v1/responses", RESPONSES_STREAM, 503),
        ("forwarded 403", Step::json(403, &error_body("invalid_api_key", &mine)), "/v1/models", "", 403),
    ];
    for (what, step, path, body, status) in cases {
        // both upstreams give the same answer to every attempt
        let again = step.clone();
        let (first, second) =
            (Mock::generated(move |_, _| step.clone()), Mock::generated(move |_, _| again.clone()));
        let env =
            [("RETRY_ATTEMPTS", "2"), ("AZURE_ENDPOINT_2", &second.v1()), ("AZURE_API_KEY_2", SECOND_KEY)];
        let proxy = Proxy::start(&first.v1(), &env);
        let got = match body {
            "" => request("GET", &proxy.url(path), &[], b""),
            body => post(&proxy.url(path), body),
        };
        assert_eq!(got.status, status, "{what}: {}", got.text());
        assert_scrubbed(what, &got, &proxy);
    }
    // A Responses client on a chat upstream gets a `response.failed` (or an error) made from
    // the fold the check kept as it read, not from the (scrubbed) bytes.
    for (what, body, status) in [
        ("translated chat error chunk", RESPONSES_STREAM, 200),
        ("translated, not streaming", RESPONSES_PLAIN, 400),
    ] {
        let step = chat_event();
        let mock = Mock::generated(move |_, _| step.clone());
        let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat"), ("RETRY_ATTEMPTS", "2")]);
        let got = post(&proxy.url("/v1/responses"), body);
        assert_eq!(got.status, status, "{what}: {}", got.text());
        assert_scrubbed(what, &got, &proxy);
    }
}

#[test]
fn a_response_head_too_large_is_named_and_not_retried() {
    let stream = fixtures::responses("ok", false);
    // the limit is 9 KiB (ureq's 10 KiB input buffer holds the head): 12 KiB passed at 15 KiB
    for (filler, status) in [(7 * 1024, 200), (12 * 1024, 502), (20 * 1024, 502)] {
        let mock = Mock::start(vec![Step::stream(&stream).header("x-filler", &"a".repeat(filler))]);
        let proxy = Proxy::start(&mock.v1(), &[("RETRY_ATTEMPTS", "5")]);
        let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
        assert_eq!((got.status, mock.attempts()), (status, 1), "{filler}-byte header: {}", got.text());
        if status == 502 {
            assert_eq!(got.error_code(), "upstream_head_too_large");
            assert!(got.text().contains("response head"), "{}", got.text());
        }
    }
}

#[test]
fn a_refused_certificate_is_named_and_not_retried() {
    let upstream = crate::tls::TlsUpstream::start();
    let proxy = Proxy::start(&upstream.endpoint(), &[("RETRY_ATTEMPTS", "5")]);
    let got = request("GET", &proxy.url("/v1/models"), &[], b"");
    assert_eq!((got.status, got.error_code().as_str()), (502, "upstream_tls_error"), "{}", got.text());
    let message = got.json()["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("TLS certificate") && message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("UPSTREAM_CA_FILE"), "{message}");
    let log = proxy.wait_for_log("req=");
    assert!(log.contains(" attempts=1 "), "{log}");
}
