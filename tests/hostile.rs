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
    // the 350 idle and half-sent connections hold a thread each while they are open
    let arrived = eventually(Duration::from_secs(10), || threads(&proxy) >= baseline + 350);
    let during = threads(&proxy);
    assert!(arrived, "the flood never held its connections: threads {baseline} before, {during} during");
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

/// Every status line in what a connection received, 1xx included, space-separated, or
/// "closed" when it received nothing ("200 400": an answer, then a refusal).
fn statuses(answer: &str) -> String {
    let found: Vec<&str> = answer
        .match_indices("HTTP/1.")
        .filter_map(|(i, _)| answer.get(i + 9..i + 12))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    if found.is_empty() {
        "closed".to_string()
    } else {
        found.join(" ")
    }
}

/// Compare a table of `(case, expected, actual)` rows; on a difference, show every row that
/// differs as expected versus actual.
fn check_table(rows: &[(String, &str, String)]) {
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(_, expected, actual)| expected != actual)
        .map(|(case, expected, actual)| format!("  expected {expected:<9} got {actual:<9} for {case}"))
        .collect();
    assert!(wrong.is_empty(), "{} of {} rows differ:\n{}", wrong.len(), rows.len(), wrong.join("\n"));
}

/// Malformed, ambiguous and unusual requests, one per connection (which then shuts down its
/// sending side): each gets exactly the answers of its row, and only the rows that are
/// well-formed reach the upstream. Smuggling cases follow RFC 9112: `Transfer-Encoding` with
/// `Content-Length`, differing lengths, line folding, bare LF/CR: a 400, then the close.
#[test]
fn malformed_http_gets_the_expected_answer() {
    let (mock, ok) = clean_mock();
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    let h2c =
        "connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    let h2c = raw_post("/v1/responses", h2c, RESPONSES_STREAM);
    let gzip = raw_post("/v1/responses", "content-encoding: gzip\r\n", RESPONSES_STREAM);
    #[rustfmt::skip]
    let cases: &[(&[u8], &str)] = &[
        (b"GARBAGE\r\n\r\n", "400"),
        (b"GET\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nno colon in this header\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nx-nul: a\x00b\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\n\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\ry: z\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nx-a: b\r\n  folded: c\r\n\r\n", "400"),
        (b"GET /healthz HTTP/7.3\r\n\r\n", "400"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", "505"),
        (b"GET * HTTP/1.1\r\n\r\n", "404"),
        (b"GET /v1/../../etc/passwd HTTP/1.1\r\n\r\n", "404"),
        (b"GET /v1/%2e%2e/x HTTP/1.1\r\n\r\n", "404"),
        (b"GET /v1/.%2E/x HTTP/1.1\r\n\r\n", "404"),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", "404"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: -5\r\n\r\n", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}", "200"),
        (b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n", "400"),
        (b"POST /v1/responses HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n", "100 400"),
        (b"POST /v1/responses HTTP/1.1\r\nexpect: something-else\r\ncontent-length: 2\r\n\r\n{}", "417"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 10\r\n\r\n{\"a\":", "closed"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 4\r\n\r\n\xff\xfe\x00\x01", "400"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 2\r\n\r\n[]", "400"),
        (&gzip, "415"),
        (b"GET /v1/responses HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "426"),
        (&h2c, "200"),
        (b"GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", "200"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\r\n\r\n", "400"),
        (b"\r\n\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\n\r\nGARBAGE AFTER A GOOD REQUEST\r\n\r\n", "200 400"),
        (b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n", "200 200"),
        (b"POST /v1/responses HTTP/1.1\r\ncontent-length: 2000\r\n\r\n{}", "400"),
    ];
    let mut rows = Vec::new();
    for (case, expected) in cases {
        let answer = exchange(&proxy, case);
        let shown = format!("{:?}", String::from_utf8_lossy(case));
        assert!(answer.is_empty() || answer.starts_with("HTTP/1."), "not HTTP for {shown}: {answer:.200}");
        rows.push((shown, *expected, statuses(&answer)));
        assert_alive(&mut proxy);
    }
    check_table(&rows);
    // Only the three well-formed API calls (the repeated equal length, the h2c offer, the
    // chunked body) went out.
    assert_eq!(mock.attempts(), 3, "{:#?}", mock.seen());
    assert_eq!(healthy(&proxy), 0);
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

/// Send `bytes` on a connection that stays open for sending, and read what comes back until
/// the proxy closes it or `limit` passes: the answer, and whether the proxy closed.
fn converse(proxy: &Proxy, bytes: &[u8], limit: Duration) -> (String, bool) {
    let mut s = connect(proxy);
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(bytes).unwrap();
    read_until_closed(&mut s)
}

fn read_until_closed(s: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn has_header(answer: &str, name: &str, value: &str) -> bool {
    answer
        .lines()
        .take_while(|l| !l.is_empty())
        .any(|l| l.split_once(':').is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value))
}

/// A refusal before the body (wrong key, unknown route, too large) is written at once, says
/// `Connection: close` and closes: no wait for a body the proxy will not read, no second
/// answer made of the rest of that body. `100 Continue` is a bare status line.
#[test]
fn refusals_before_the_body_close_at_once() {
    let (mock, ok) = clean_mock();
    let proxy = Proxy::start(&mock.v1(), &[("PROXY_API_KEY", "inbound-key"), ("MAX_REQUEST_BYTES", "4096")]);
    let limit = Duration::from_secs(10);
    // A wrong key, with 64 KiB sent of a 2 MB body.
    let mut head = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nauthorization: Bearer wrong\r\ncontent-length: 2000000\r\n\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'x', 64 << 10));
    let (answer, closed) = converse(&proxy, &head, limit);
    assert_eq!((statuses(&answer).as_str(), closed), ("401", true), "{answer:.300}");
    assert!(has_header(&answer, "connection", "close"), "{answer:.300}");
    // An unknown route with the whole 1.5 MB body sent: one answer, not a 404 then a 400.
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(limit)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let head = "POST /nowhere HTTP/1.1\r\nHost: x\r\nauthorization: Bearer inbound-key\r\ncontent-length: 1500000\r\n\r\n";
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b'y'; 1_500_000]);
    });
    let (answer, closed) = read_until_closed(&mut s);
    let _ = sender.join();
    assert_eq!((statuses(&answer).as_str(), closed), ("404", true), "{answer:.300}");
    assert!(has_header(&answer, "connection", "close"), "{answer:.300}");
    // Too large, announced with Expect: 100-continue: a 413 at once, no 100 first.
    let head = "POST /v1/responses HTTP/1.1\r\nHost: x\r\nauthorization: Bearer inbound-key\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n";
    let (answer, closed) = converse(&proxy, head.as_bytes(), limit);
    assert_eq!((statuses(&answer).as_str(), closed), ("413", true), "{answer:.300}");
    // A request that may go on gets a bare `100 Continue`, then its answer.
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(limit)).unwrap();
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nauthorization: Bearer inbound-key\r\nexpect: 100-continue\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        RESPONSES_STREAM.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(String::from_utf8_lossy(&interim), "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(RESPONSES_STREAM.as_bytes()).unwrap();
    let (answer, closed) = read_until_closed(&mut s);
    assert_eq!((statuses(&answer).as_str(), closed), ("200", true), "{answer:.300}");
    assert!(answer.as_bytes().ends_with(&ok));
}

/// A client that shuts down its sending side after its request (HTTP/1.0-style tools) is
/// not gone: it gets its whole answer after the retries (an HTTP/1.1 client after one
/// interim `100 Continue`, the probe that tells it from a closed socket; an HTTP/1.0 client
/// never gets a 1xx). A client that closes its socket is gone: the retries stop.
#[test]
fn a_half_closed_client_gets_its_answer_and_a_closed_one_stops_the_retries() {
    let ok = fixtures::responses(ANSWER, false);
    let mock =
        Mock::start(vec![Step::json(503, "{}"), Step::stream(&ok), Step::json(503, "{}"), Step::stream(&ok)]);
    let env = [("RETRY_WAIT_SECONDS", "0.3"), ("RETRY_MAX_WAIT_SECONDS", "0.3")];
    let proxy = Proxy::start(&mock.v1(), &env);
    for (version, expected) in [("1.1", "100 200"), ("1.0", "200")] {
        let mut s = connect(&proxy);
        let head = format!(
            "POST /v1/responses HTTP/{version}\r\nHost: x\r\ncontent-length: {}\r\n\r\n{RESPONSES_STREAM}",
            RESPONSES_STREAM.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (answer, closed) = read_until_closed(&mut s);
        assert_eq!((statuses(&answer).as_str(), closed), (expected, true), "HTTP/{version}: {answer:.300}");
        assert!(answer.as_bytes().ends_with(&ok), "HTTP/{version}: {answer:.300}");
    }
    assert_eq!(mock.attempts(), 4);

    let mock = Mock::start(vec![Step::json(503, "{}"); 40]);
    let env = [("RETRY_ATTEMPTS", "40"), ("RETRY_WAIT_SECONDS", "0.2"), ("RETRY_MAX_WAIT_SECONDS", "0.2")];
    let proxy = Proxy::start(&mock.v1(), &env);
    let mut s = connect(&proxy);
    s.write_all(&raw_post("/v1/responses", "", RESPONSES_STREAM)).unwrap();
    assert!(eventually(Duration::from_secs(5), || mock.attempts() >= 1));
    drop(s);
    let log = proxy.wait_for_log("status=499");
    let line = log.lines().find(|l| l.contains("status=499")).unwrap();
    assert!(line.contains("client-gone"), "{line}");
    assert!(mock.attempts() <= 3, "{} attempts for a client that was gone:\n{log}", mock.attempts());
}

/// A WebSocket offer gets a 426 at once (Codex then falls back to HTTP for the session); an
/// h2c offer (`curl --http2` on plain HTTP) is served over HTTP/1.1 on a connection that
/// stays usable.
#[test]
fn upgrade_offers_are_answered_at_once() {
    let (mock, ok) = clean_mock();
    let proxy = Proxy::start(&mock.v1(), &[]);
    let limit = Duration::from_secs(10);
    let ws = "GET /v1/responses HTTP/1.1\r\nHost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(ws.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 426");
    // (`x-hop` is named hop-by-hop by the `Connection` header, so it does not travel either)
    let h2c = "connection: Upgrade, HTTP2-Settings, x-hop\r\nupgrade: h2c\r\n\
               http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\nx-hop: 1\r\n";
    let first = raw_post("/v1/responses", h2c, RESPONSES_STREAM);
    let first = String::from_utf8(first).unwrap().replace("connection: close\r\n", "");
    let second = raw_post("/v1/responses", "", RESPONSES_STREAM);
    let mut s = connect(&proxy);
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(first.as_bytes()).unwrap();
    let mut got = vec![0u8; 0];
    let mut buf = [0u8; 65536];
    while !got.ends_with(&ok) {
        let n = s.read(&mut buf).expect("the h2c offer was answered over HTTP/1.1 in time");
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(&second).unwrap();
    let (answer, closed) = read_until_closed(&mut s);
    assert_eq!(
        (statuses(&String::from_utf8_lossy(&got)).as_str(), statuses(&answer).as_str(), closed),
        ("200", "200", true)
    );
    let seen = mock.seen();
    assert!(
        seen.iter().all(|r| ["upgrade", "http2-settings", "x-hop"].iter().all(|h| r.header(h).is_none())),
        "{seen:?}"
    );
}

/// A header the proxy cannot read gets an OpenAI-shaped 400 and a log line, not a silent
/// close; an HTTP/1.0 client told `Connection: close` is closed at once even if it asked to
/// keep the connection alive; a compressed body gets a 415 that says what is accepted.
#[test]
fn bad_headers_http_1_0_and_encoded_bodies_get_clear_answers() {
    let (mock, _ok) = clean_mock();
    let proxy = Proxy::start(&mock.v1(), &[]);
    let limit = Duration::from_secs(10);
    let (answer, closed) = converse(&proxy, b"GET /healthz HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", limit);
    assert_eq!((statuses(&answer).as_str(), closed), ("400", true), "{answer:.300}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(json["error"]["code"], "invalid_request", "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("non-ASCII"), "{json}");
    proxy.wait_for_log("refused a request: non-ASCII");

    let (answer, closed) =
        converse(&proxy, b"GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", limit);
    assert_eq!((statuses(&answer).as_str(), closed), ("200", true), "{answer:.300}");
    assert!(has_header(&answer, "connection", "close"), "{answer:.300}");

    let gzip = raw_post("/v1/responses", "content-encoding: gzip\r\n", RESPONSES_STREAM);
    let (answer, _) = converse(&proxy, &gzip, limit);
    assert_eq!(statuses(&answer), "415", "{answer:.300}");
    assert!(has_header(&answer, "accept-encoding", "identity"), "{answer:.300}");
    assert!(answer.contains(r#"Content-Encoding \"gzip\""#), "{answer:.300}");
    assert_eq!(mock.attempts(), 0);
}
