//! Several upstreams: failover around a rate-limited or failing upstream without waiting,
//! shared cooldowns, the circuit breaker and its single probe, refusals for one deployment;
//! and the opt-in keepalive that holds a streaming client while the shield works.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Gather, Mock, Piece, Step};
use crate::support::*;

fn rate_limited(retry_after: &str) -> Step {
    Step::json(429, &fixtures::error_body("429", "Rate limit reached.")).header("retry-after", retry_after)
}

/// `n` requests one after the other; their statuses.
fn sequential(proxy: &Proxy, n: usize) -> Vec<u16> {
    (0..n).map(|_| post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status).collect()
}

#[test]
fn a_rate_limited_upstream_is_skipped_without_waiting() {
    let ok = fixtures::responses(ANSWER, false);
    let first = Mock::generated(|_, _| rate_limited("30"));
    let ok2 = ok.clone();
    let second = Mock::generated(move |_, _| Step::stream(&ok2));
    let env = [
        ("AZURE_ENDPOINT_2", second.v1()),
        ("AZURE_API_KEY_2", "k2".into()),
        ("RETRY_WAIT_SECONDS", "1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = Proxy::start(&first.v1(), &env);
    assert_eq!(sequential(&proxy, 6), vec![200; 6], "{}", proxy.log());
    let log = proxy.wait_for_log("req=6 ");
    assert_eq!((first.attempts(), second.attempts()), (1, 6), "upstream 1 rests for its 30 s:\n{log}");
    assert!(
        log.contains("attempts=2 upstream=2 retries=[u1 429 +0.00s]"),
        "no wait before upstream 2:\n{log}"
    );
    assert!(log.contains("req=2 POST /v1/responses status=200 attempts=1 upstream=2 "), "{log}");
}

#[test]
fn when_every_upstream_rests_the_shorter_hint_wins() {
    let ok = fixtures::responses(ANSWER, false);
    let first = Mock::start(vec![rate_limited("3"), Step::stream(&ok)]);
    let second = Mock::start(vec![Step::json(429, "{}").header("retry-after-ms", "300"), Step::stream(&ok)]);
    let proxy = Proxy::start(&first.v1(), &[("AZURE_ENDPOINT_2", &second.v1()), ("AZURE_API_KEY_2", "k2")]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((got.status, got.body == ok), (200, true), "{}", proxy.log());
    // Waiting for the longer hint would have sent the retry to upstream 1 (failover order).
    assert_eq!((first.attempts(), second.attempts()), (1, 2), "{}", proxy.log());
    let log = proxy.wait_for_log("req=1 ");
    assert!(log.contains("attempts=3 upstream=2 retries=[u1 429 +0.00s, u2 429 +0.3"), "{log}");
}

#[test]
fn a_refusing_upstream_opens_its_circuit_and_is_probed_by_one_request() {
    let ok = fixtures::responses(ANSWER, false);
    // It takes 300 ms to hang up: long enough for the other clients to pile on, if they could.
    let broken = Mock::generated(|_, _| {
        thread::sleep(Duration::from_millis(300));
        Step::hangup()
    });
    let ok2 = ok.clone();
    let slow =
        Mock::generated(move |_, _| Step::stream(&ok2).before(Piece::Pause(Duration::from_millis(40))));
    let proxy = Proxy::start(
        &broken.v1(),
        &[
            ("AZURE_ENDPOINT_2", &slow.v1()),
            ("AZURE_API_KEY_2", "none"),
            ("RETRY_WAIT_SECONDS", "0.5"),
            ("RETRY_MAX_WAIT_SECONDS", "4"),
        ],
    );
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    let until = Instant::now() + Duration::from_millis(1300);
    let statuses: Vec<u16> = thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut statuses = Vec::new();
                    while Instant::now() < until {
                        statuses.push(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status);
                    }
                    statuses
                })
            })
            .collect();
        clients.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}\n{}", proxy.log());
    // The first request opens the circuit for 0.4-0.6 s; one probe then (failing after
    // 300 ms: 0.8-1.2 s more); four clients asking all the time never pile onto it.
    assert_eq!(broken.attempts(), 2, "{} requests, log:\n{}", statuses.len(), proxy.log());
    assert!(slow.attempts() > statuses.len(), "{}", proxy.log());
}

#[test]
fn a_refusal_for_one_deployment_puts_it_aside() {
    let ok = fixtures::responses(ANSWER, false);
    let denied = fixtures::error_body("401", "Access denied due to invalid subscription key.");
    let first = Mock::generated(move |_, _| Step::json(401, &denied));
    let ok2 = ok.clone();
    let second = Mock::generated(move |_, _| Step::stream(&ok2));
    let proxy = Proxy::start(&first.v1(), &[("AZURE_ENDPOINT_2", &second.v1()), ("AZURE_API_KEY_2", "k2")]);
    assert_eq!(sequential(&proxy, 4), vec![200; 4], "{}", proxy.log());
    assert_eq!((first.attempts(), second.attempts()), (1, 4), "{}", proxy.log());
    assert_eq!(second.seen()[0].header("authorization"), Some("Bearer k2"), "upstream 2's own key");
}

#[test]
fn one_upstream_delivers_a_refusal_as_before() {
    let denied = fixtures::error_body("401", "Access denied.");
    let mock = Mock::start(vec![Step::json(401, &denied), Step::json(401, &denied)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    assert_eq!(sequential(&proxy, 2), vec![401, 401], "{}", proxy.log());
    assert_eq!(mock.attempts(), 2, "never put aside when there is nowhere else to go");
}

/// What a raw client saw: when the head arrived, and the de-chunked body.
struct Streamed {
    head: String,
    head_after: Duration,
    body: Vec<u8>,
    done_after: Duration,
}

fn stream_raw(port: u16, body: &str) -> Streamed {
    stream_raw_as(port, body, "")
}

/// The same, with extra request header lines (`originator: codex_exec\r\n`).
fn stream_raw_as(port: u16, body: &str, extra_headers: &str) -> Streamed {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let request = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(socket);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let head_after = started.elapsed();
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
    }
    Streamed { head, head_after, body, done_after: started.elapsed() }
}

/// Codex's keepalive: a data event (its idle timer ignores comments).
fn codex_keepalive(n: u64) -> String {
    format!("data: {{\"type\":\"keepalive\",\"sequence_number\":{n}}}\n\n")
}

/// The opening of a held answer: (head arrived after, pings before the answer, the answer).
fn held_answer(extra_headers: &str, ok: &[u8]) -> (Streamed, String, String) {
    let mock = Mock::start(vec![Step::stream(ok).before(Piece::Pause(Duration::from_millis(3000)))]);
    let proxy = Proxy::start(&mock.v1(), &[("KEEPALIVE_SECONDS", "1"), ("IDLE_TIMEOUT_SECONDS", "10")]);
    let got = stream_raw_as(proxy.port, RESPONSES_STREAM, extra_headers);
    assert!(got.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", got.head);
    assert!(got.head.contains("content-type: text/event-stream"), "{}", got.head);
    assert!(got.head_after < Duration::from_millis(2500), "head after {:?}", got.head_after);
    assert!(got.done_after >= Duration::from_millis(3000), "answer after {:?}", got.done_after);
    let text = String::from_utf8(got.body.clone()).unwrap();
    let (pings, answer) = text.split_at(text.find("event: response.created").expect("the answer"));
    (got, pings.to_string(), answer.to_string())
}

#[test]
fn keepalive_holds_a_streaming_client_then_delivers_the_whole_answer() {
    let ok = fixtures::responses(ANSWER, false);
    // Any client: SSE comments (the openai SDK's stream helper refuses data events before
    // `response.created`).
    let (_, pings, answer) = held_answer("", &ok);
    let n = pings.matches(": keepalive").count();
    assert!(n >= 2, "{pings:?}");
    assert_eq!(pings, ": keepalive\n\n".repeat(n), "only keepalive comments before the answer");
    assert_eq!(answer.as_bytes(), ok.as_slice(), "the whole upstream answer, unchanged");
    // Codex: data events, since its idle timer counts only those.
    let (_, pings, answer) = held_answer("originator: codex_exec\r\n", &ok);
    let n = pings.matches("keepalive").count() as u64;
    assert!(n >= 2, "{pings:?}");
    assert_eq!(pings, (0..n).map(codex_keepalive).collect::<String>());
    assert_eq!(answer.as_bytes(), ok.as_slice());
}

#[test]
fn keepalive_then_an_exhausted_budget_is_an_in_stream_failure() {
    let slow_429 = Step::json(429, &fixtures::error_body("429", "Rate limit reached."))
        .before(Piece::Pause(Duration::from_millis(700)));
    let mock = Mock::start(vec![slow_429; 3]);
    let proxy = Proxy::start(&mock.v1(), &[("KEEPALIVE_SECONDS", "0.5"), ("RETRY_ATTEMPTS", "3")]);
    let got = stream_raw(proxy.port, RESPONSES_STREAM);
    assert!(got.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", got.head);
    let text = String::from_utf8(got.body).unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let data: serde_json::Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(data["type"], "response.failed", "{text}");
    assert_eq!(data["response"]["error"]["code"], "rate_limit_exceeded", "{text}");
    assert_eq!(data["error"]["code"], "rate_limit_exceeded", "{text}");
    let message = data["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 attempt(s)"), "{message}");
    assert_eq!(mock.attempts(), 3);
}

#[test]
fn keepalive_is_only_for_streaming_responses_clients() {
    let ok = fixtures::chat(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok).before(Piece::Pause(Duration::from_millis(1200)))]);
    let proxy = Proxy::start(&mock.v1(), &[("KEEPALIVE_SECONDS", "0.3")]);
    let got = post(&proxy.url("/v1/chat/completions"), CHAT_STREAM);
    assert_eq!((got.status, got.body == fixtures::unasked(&ok)), (200, true), "{}", got.text());
    assert!(got.header("content-length").is_some(), "a chat client gets its answer in one piece");
}

#[test]
fn one_upstream_keeps_each_requests_wait_its_own() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![rate_limited("2"), Step::stream(&ok), Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let url = proxy.url("/v1/responses");
    let waiting = {
        let url = url.clone();
        thread::spawn(move || post(&url, RESPONSES_STREAM))
    };
    while mock.attempts() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    // Another request while the first waits out its retry-after: as before several
    // upstreams existed, it is not held back by the first one's wait.
    let other = post(&url, RESPONSES_STREAM);
    assert_eq!(other.status, 200);
    assert_eq!(mock.attempts(), 2, "the second request went straight to the upstream");
    assert_eq!(waiting.join().unwrap().status, 200);
    let log = proxy.wait_for_log("req=1 ");
    assert!(log.contains("req=2 POST /v1/responses status=200 attempts=1 upstream=1 bytes"), "{log}");
}

#[test]
fn a_cut_answer_rests_the_upstream_for_that_request_only() {
    let ok = fixtures::responses(ANSWER, false);
    let first = Mock::start(vec![Step::cut(&ok, ok.len() / 2), Step::stream(&ok)]);
    let second = Mock::start(vec![Step::stream(&ok)]);
    let proxy = Proxy::start(
        &first.v1(),
        &[("AZURE_ENDPOINT_2", &second.v1()), ("AZURE_API_KEY_2", "k2"), ("RETRY_WAIT_SECONDS", "5")],
    );
    assert_eq!(sequential(&proxy, 2), vec![200, 200], "{}", proxy.log());
    // Request 1: cut on upstream 1, at once to upstream 2. Request 2: upstream 1 again, since
    // one cut answer says nothing about the upstream's other requests.
    assert_eq!((first.attempts(), second.attempts()), (2, 1), "{}", proxy.log());
    let log = proxy.wait_for_log("req=2 ");
    assert!(log.contains("attempts=2 upstream=2 retries=[u1 cut +0.00s]"), "{log}");
}

/// Wait until the proxy has read the rest of `n` answers' bodies (after each answer, on the
/// request's own thread), so the next request finds their connections in the pool.
fn wait_for_reuse(proxy: &Proxy, n: usize) {
    let reusable = |log: &str| log.matches("its connection can be reused").count();
    for _ in 0..1000 {
        if reusable(&proxy.log()) >= n {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("{n} connections never became reusable: {}", proxy.log());
}

/// A chunked upstream (as OpenAI and Azure answer) keeps its connection: the body's last
/// chunk is read once the answer is out, so the next request finds the connection in the
/// pool instead of opening a new one.
#[test]
fn a_chunked_upstream_connection_is_reused() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok); 4]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    for n in 1..=4 {
        assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
        wait_for_reuse(&proxy, n);
    }
    assert_eq!(mock.attempts(), 4);
    assert_eq!(mock.connections(), 1, "one upstream connection for four chunked answers");
}

/// Under concurrency too: 32 chunked answers at once keep their 32 connections, and the
/// next 32 requests use them (no connection given up because too many rests were being
/// read at once, no new connection per request).
#[test]
fn concurrent_chunked_answers_keep_their_connections() {
    const N: usize = 32;
    let ok = fixtures::responses(ANSWER, false);
    let (first, second) = (Gather::new(N), Gather::new(N));
    let script = (0..2 * N)
        .map(|i| Step::stream(&ok).before(Piece::Gather(if i < N { first.clone() } else { second.clone() })))
        .collect();
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[("MAX_CONCURRENT", "64")]);
    let url = proxy.url("/v1/responses");
    for wave in 1..=2 {
        let statuses: Vec<u16> = thread::scope(|s| {
            let handles: Vec<_> = (0..N).map(|_| s.spawn(|| post(&url, RESPONSES_STREAM).status)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(statuses, vec![200; N], "{}", proxy.log());
        wait_for_reuse(&proxy, wave * N);
    }
    assert!(!*first.timed_out.lock().unwrap() && !*second.timed_out.lock().unwrap(), "not {N} at once");
    assert_eq!(mock.attempts(), 2 * N);
    assert_eq!(mock.connections(), N, "{N} connections for {} chunked answers, {N} at a time", 2 * N);
}
