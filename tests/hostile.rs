//! Hostile and careless clients against a real proxy: connection floods, half-sent requests,
//! garbage, malformed HTTP, absolute-form targets, huge headers, clients that hang up, and the
//! in-flight limit. The proxy must keep answering, never crash, and give its threads back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Piece, Step};
use crate::support::{post, request, Proxy, RESPONSES_STREAM};

/// A field of `/proc/PID/status` (`Threads`, `VmRSS`), as its first number.
fn proc_status(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn threads(proxy: &Proxy) -> usize {
    proc_status(proxy.child.id(), "Threads")
}

/// Poll until `ok()` holds, for at most `limit`; whether it did.
fn eventually(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// The proxy answers `/healthz`; its in-flight count (`/healthz` itself never counts).
fn healthy(proxy: &Proxy) -> u64 {
    let got = request("GET", &proxy.url("/healthz"), &[], b"");
    assert_eq!(got.status, 200, "healthz: {}", got.text());
    got.json()["in_flight"].as_u64().unwrap()
}

fn assert_alive(proxy: &mut Proxy) {
    assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy exited:\n{}", proxy.log());
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Send `bytes`, close our sending side, and read until the proxy closes: what it answered.
fn exchange(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut s = connect(proxy);
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn raw_post(path: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n{extra_headers}\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn clean_mock() -> (Mock, Vec<u8>) {
    let ok = fixtures::responses(ANSWER, false);
    let step = Step::stream(&ok);
    (Mock::generated(move |_, _| step.clone()), ok)
}

/// 300 idle connections, 50 half-sent requests and 50 garbage senders held open at once: a
/// normal request still gets its complete answer, and once they close the threads go away.
#[test]
fn floods_do_not_block_requests_and_threads_come_back() {
    let (mock, ok) = clean_mock();
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).body, ok);
    healthy(&proxy);
    let baseline = threads(&proxy);

    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(connect(&proxy));
    }
    for i in 0..50 {
        let mut s = connect(&proxy);
        let half: &[u8] = if i % 2 == 0 {
            b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: appli"
        } else {
            b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 100000\r\n\r\n{\"model\":"
        };
        s.write_all(half).unwrap();
        held.push(s);
    }
    for i in 0..50u32 {
        let mut s = connect(&proxy);
        let garbage: Vec<u8> = (0..4096u32).map(|j| (j.wrapping_mul(2_654_435_761) ^ i) as u8).collect();
        let _ = s.write_all(&garbage);
        held.push(s);
    }
    eventually(Duration::from_secs(10), || threads(&proxy) >= baseline + 350);
    let during = threads(&proxy);
    eprintln!("flood: threads {baseline} before, {during} during");

    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((got.status, got.body == ok), (200, true), "{}", got.text());
    healthy(&proxy);

    drop(held);
    let settled = eventually(Duration::from_secs(15), || threads(&proxy) <= baseline + 4);
    assert!(
        settled,
        "threads: {baseline} before, {during} during the flood, {} 15 s after it ended",
        threads(&proxy)
    );
    assert!(eventually(Duration::from_secs(5), || healthy(&proxy) == 0), "in-flight requests leaked");
    assert_alive(&mut proxy);
}

/// Malformed HTTP gets an error status or a closed connection, never a crash.
#[test]
fn malformed_http_gets_an_error_or_a_close() {
    let (mock, ok) = clean_mock();
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon in this header\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
        b"GET /healthz HTTP/1.1\n\n",
        b"GET /healthz HTTP/7.3\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /v1/../../etc/passwd HTTP/1.1\r\n\r\n",
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        b"POST /v1/responses HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"POST /v1/responses HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
        b"POST /v1/responses HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde",
        b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
        b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"POST /v1/responses HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n",
        b"POST /v1/responses HTTP/1.1\r\ncontent-length: 10\r\n\r\n{\"a\":",
        b"POST /v1/responses HTTP/1.1\r\ncontent-length: 4\r\n\r\n\xff\xfe\x00\x01",
        b"POST /v1/responses HTTP/1.1\r\ncontent-length: 2\r\n\r\n[]",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\nGARBAGE AFTER A GOOD REQUEST\r\n\r\n",
    ];
    let mut answers = Vec::new();
    for case in cases {
        let answer = exchange(&proxy, case);
        let status = status_of(&answer);
        answers.push(format!("{status:>3} {:?}", String::from_utf8_lossy(case)));
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1."),
            "not HTTP for {:?}: {answer:.200}",
            String::from_utf8_lossy(case)
        );
        assert_alive(&mut proxy);
    }
    // Nothing malformed may reach the upstream as a success.
    for line in &answers {
        assert!(!line.starts_with("200 \"POST"), "malformed request was forwarded: {line}\n{answers:#?}");
    }
    eprintln!("malformed requests, status (0: closed):\n{}", answers.join("\n"));
    assert_eq!(healthy(&proxy), 0, "{answers:#?}");
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).body, ok);
}

/// A 1 MB header line, and many headers: an error or a close, and the proxy keeps serving.
#[test]
fn oversized_headers_do_not_break_the_proxy() {
    let (mock, ok) = clean_mock();
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    let big = format!("x-big: {}\r\n", "a".repeat(1 << 20));
    let answer =
        exchange(&proxy, format!("GET /healthz HTTP/1.1\r\n{big}connection: close\r\n\r\n").as_bytes());
    assert!(answer.is_empty() || status_of(&answer) == 431, "{answer:.200}");
    let many: String = (0..20_000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer =
        exchange(&proxy, format!("GET /healthz HTTP/1.1\r\n{many}connection: close\r\n\r\n").as_bytes());
    assert!(answer.is_empty() || status_of(&answer) == 431, "{answer:.200}");
    let answer = exchange(&proxy, &raw_post("/v1/responses", &big, RESPONSES_STREAM));
    assert!(answer.is_empty() || status_of(&answer) == 431, "{answer:.200}");
    // A header line that never ends must not grow the proxy without bound.
    let rss = proc_status(proxy.child.id(), "VmRSS");
    let mut s = connect(&proxy);
    s.write_all(b"GET /healthz HTTP/1.1\r\nx-endless: ").unwrap();
    let chunk = vec![b'a'; 1 << 16];
    let sent = (0..1024).take_while(|_| s.write_all(&chunk).is_ok()).count();
    drop(s);
    let grown = proc_status(proxy.child.id(), "VmRSS").saturating_sub(rss);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB after {sent} x 64 KiB of one header line");
    assert_alive(&mut proxy);
    assert_eq!(healthy(&proxy), 0);
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).body, ok);
}

/// With MAX_CONCURRENT=2 and two requests held upstream, a third gets 503 proxy_busy with
/// `retry-after`; once they finish, requests succeed again.
#[test]
fn max_concurrent_refuses_with_503_then_recovers() {
    let ok = fixtures::responses(ANSWER, false);
    let slow = Step::stream(&ok).before(Piece::Pause(Duration::from_millis(1500)));
    let mock = Mock::start(vec![slow.clone(), slow, Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[("MAX_CONCURRENT", "2")]);
    let url = proxy.url("/v1/responses");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || post(&url, RESPONSES_STREAM))
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || mock.attempts() == 2), "the slow requests never arrived");
    let busy = post(&url, RESPONSES_STREAM);
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.error_code(), "proxy_busy");
    assert!(busy.header("retry-after").is_some(), "{:?}", busy.headers);
    for h in held {
        let got = h.join().unwrap();
        assert_eq!((got.status, got.body == ok), (200, true));
    }
    assert!(eventually(Duration::from_secs(5), || healthy(&proxy) == 0));
    let got = post(&url, RESPONSES_STREAM);
    assert_eq!((got.status, got.body == ok, mock.attempts()), (200, true, 3));
}

/// A client that hangs up while its answer is buffered: no crash, in-flight back to 0.
#[test]
fn client_hanging_up_during_buffering_is_harmless() {
    let ok = fixtures::responses(ANSWER, false);
    let slow = Step::stream(&ok).before(Piece::Pause(Duration::from_millis(800)));
    let mock = Mock::start(vec![slow.clone(), slow, Step::stream(&ok)]);
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    for n in 1..=2 {
        let mut s = connect(&proxy);
        s.write_all(&raw_post("/v1/responses", "", RESPONSES_STREAM)).unwrap();
        assert!(eventually(Duration::from_secs(5), || mock.attempts() == n));
        if n == 2 {
            let _ = s.shutdown(Shutdown::Both); // the second one says goodbye explicitly
        }
        drop(s);
    }
    // The answer fits in the socket buffer, so the write may not notice the hang-up: no
    // "client-gone" is required, only that both requests end.
    proxy.wait_for_log("req=2 ");
    assert!(
        eventually(Duration::from_secs(5), || healthy(&proxy) == 0),
        "in-flight leaked:\n{}",
        proxy.log()
    );
    assert_alive(&mut proxy);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((got.status, got.body == ok), (200, true));
}

/// Absolute-form targets and foreign `Host` headers never send the proxy anywhere but the
/// configured upstream: the answer is a 404, or the mock got the request at its own path.
#[test]
fn absolute_form_and_host_headers_cannot_redirect_the_proxy() {
    let (mock, _ok) = clean_mock();
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    let cases = [
        raw_post("http://evil.example/v1/responses", "", RESPONSES_STREAM),
        raw_post("http://evil.example:80/v1/models", "", "{}"),
        raw_post("//evil.example/v1/responses", "", RESPONSES_STREAM),
        raw_post("/v1/responses", "x-forwarded-host: evil.example\r\n", RESPONSES_STREAM),
        b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: evil.example\r\nconnection: close\r\n\r\n"
            .to_vec(),
        b"GET /v1/models HTTP/1.1\r\nHost: evil.example\r\nconnection: close\r\n\r\n".to_vec(),
        b"GET /v1/@evil.example/x HTTP/1.1\r\nHost: evil.example\r\nconnection: close\r\n\r\n".to_vec(),
    ];
    let mut statuses = Vec::new();
    for case in &cases {
        let case = String::from_utf8_lossy(case).replace("Host: 127.0.0.1", "Host: evil.example");
        statuses.push(status_of(&exchange(&proxy, case.as_bytes())));
    }
    let host = mock.origin.trim_start_matches("http://").to_string();
    for seen in mock.seen() {
        assert_eq!(seen.header("host"), Some(host.as_str()), "{seen:?}");
        assert!(seen.path.starts_with("/v1/"), "{seen:?}");
    }
    assert!(statuses.iter().all(|&s| s == 404 || s == 200 || s == 400), "{statuses:?}");
    assert_eq!(statuses[0], 404, "absolute-form target was served: {statuses:?}");
    assert_alive(&mut proxy);
}

/// Clients stuck in the middle of their body hold a thread, not one of the `MAX_CONCURRENT`
/// slots: `/healthz` and real requests still get through.
#[test]
fn half_sent_bodies_do_not_take_the_slots() {
    let (mock, ok) = clean_mock();
    let proxy = Proxy::start(&mock.v1(), &[("MAX_CONCURRENT", "2")]);
    let stuck: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&proxy);
            s.write_all(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
                .unwrap();
            s
        })
        .collect();
    // the stuck requests have arrived (each waits for its body) but hold no slot
    let open = || request("GET", &proxy.url("/healthz"), &[], b"").json()["open_requests"].as_u64();
    assert!(eventually(Duration::from_secs(10), || open() == Some(4)), "stuck requests never arrived");
    assert_eq!(healthy(&proxy), 0);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((got.status, got.body == ok), (200, true), "{}", got.text());
    drop(stuck);
}

/// A body that claims to be enormous is refused unread, and the proxy lives on.
#[test]
fn an_enormous_content_length_is_refused_not_fatal() {
    let (mock, ok) = clean_mock();
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    for length in ["100000000000", "18446744073709551615"] {
        let head = format!("POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}");
        let answer = exchange(&proxy, head.as_bytes());
        assert!(matches!(status_of(&answer), 413 | 400 | 0), "{answer}");
        assert_alive(&mut proxy);
    }
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((got.status, got.body == ok), (200, true));
    assert_eq!(mock.attempts(), 1);
}
