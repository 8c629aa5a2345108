//! Every fault the shield handles, for both APIs, as one table: the mock's script, and what
//! the client must get (status, number of upstream attempts, body).

use std::thread;
use std::time::Duration;

use crate::support::fixtures::{self, unasked, ANSWER};
use crate::support::mock::{gzip, Mock, Step};
use crate::support::{post, Proxy, CHAT_STREAM, RESPONSES_STREAM};

/// Where a row's proxy sends its requests.
#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// The scripted mock.
    Mock,
    /// A port where nothing listens: every connection is refused.
    Refused,
}

struct Case {
    name: &'static str,
    path: &'static str,
    body: &'static str,
    script: Vec<Step>,
    upstream: Upstream,
    /// The body the client must receive byte for byte, when it is not an error.
    exact: Vec<u8>,
    env: Vec<(&'static str, &'static str)>,
    expect: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    script: Vec<Step>,
    exact: Vec<u8>,
    expect: &'static str,
) -> Case {
    let body = if path.contains("chat") { CHAT_STREAM } else { RESPONSES_STREAM };
    Case { name, path, body, script, upstream: Upstream::Mock, exact, env: vec![], expect }
}

impl Case {
    /// Extra settings for this row's proxy.
    fn env(mut self, env: &[(&'static str, &'static str)]) -> Case {
        self.env.extend_from_slice(env);
        self
    }

    /// Send this row's requests where nothing listens.
    fn refused(mut self) -> Case {
        self.upstream = Upstream::Refused;
        self
    }
}

/// `STATUS attempts=N BODY` where BODY is `exact`, `error:CODE` or a short description. N is
/// the proxy's own count (its log line); when it differs from the requests the mock saw, both
/// are shown. ` held` is added when the proxy kept reading an answer held open (`End::Hold`)
/// until the mock gave up on it.
fn summary(c: &Case) -> String {
    let mock = Mock::start(c.script.clone());
    let endpoint = match c.upstream {
        Upstream::Mock => mock.v1(),
        Upstream::Refused => "http://127.0.0.1:9/v1".to_string(),
    };
    let proxy = Proxy::start(&endpoint, &c.env);
    let got = post(&proxy.url(c.path), c.body);
    let body = if got.body == c.exact {
        "exact".to_string()
    } else if got.json()["error"].is_object() {
        format!("error:{}", got.error_code())
    } else {
        format!("other:{}B:{:.80}", got.body.len(), got.text())
    };
    let attempts = logged_attempts(&proxy);
    let seen = mock.attempts();
    let attempts = match c.upstream {
        Upstream::Mock if seen.to_string() != attempts => format!("{attempts}(mock saw {seen})"),
        _ => attempts.to_string(),
    };
    let held = if mock.held_out() > 0 { " held" } else { "" };
    format!("{:<34} {} attempts={attempts} {body}{held}", c.name, got.status)
}

/// The `attempts=N` of the proxy's request log line.
fn logged_attempts(proxy: &Proxy) -> String {
    let log = proxy.wait_for_log(" attempts=");
    let line = log.lines().find(|l| l.contains(" attempts=")).unwrap_or_default();
    line.split(" attempts=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("?").to_string()
}

fn check(cases: Vec<Case>) {
    let expected: Vec<String> = cases.iter().map(|c| format!("{:<34} {}", c.name, c.expect)).collect();
    let got: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = cases.iter().map(|c| s.spawn(move || summary(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if got != expected {
        let mut diff = String::from("\n   expected | actual\n");
        for (e, g) in expected.iter().zip(&got) {
            let mark = if e == g { "  " } else { "✗ " };
            diff.push_str(&format!("{mark}{e}\n{}{g}\n", " ".repeat(mark.chars().count())));
        }
        panic!("{diff}");
    }
}

/// A short idle timeout for the stall rows.
const QUICK_IDLE: &[(&str, &str)] = &[("IDLE_TIMEOUT_SECONDS", "0.3")];
/// An idle timeout longer than `Step::hold` holds: only the proxy's own rules can end a read.
const LONG_IDLE: &[(&str, &str)] = &[("IDLE_TIMEOUT_SECONDS", "30")];

fn status(code: u16) -> Step {
    Step::json(code, &fixtures::error_body(&code.to_string(), "transient failure, please retry"))
}

#[test]
#[rustfmt::skip] // one row per case
fn responses_faults() {
    let ok = fixtures::responses(ANSWER, false);
    let crlf = fixtures::responses(ANSWER, true);
    let half = ok.len() / 2;
    let r = "/v1/responses";
    let failed_final = fixtures::responses_failed(
        "context_length_exceeded",
        "Your input exceeds the context window of this model.",
    );
    let error_final = fixtures::responses_error("invalid_prompt", "Invalid prompt: flagged.", true);
    let incomplete = fixtures::responses_incomplete(ANSWER);
    let bad_request = fixtures::error_body("invalid_value", "Invalid value for 'input'.");
    let quota = fixtures::error_body("insufficient_quota", "You exceeded your current quota.");
    let cases = vec![
        case("clean", r, vec![Step::stream(&ok)], ok.clone(), "200 attempts=1 exact"),
        case("clean crlf", r, vec![Step::stream(&crlf)], crlf.clone(), "200 attempts=1 exact"),
        case("split every 7 bytes", r, vec![Step::stream_split(&ok, 7)], ok.clone(), "200 attempts=1 exact"),
        case("crlf split every 5 bytes", r, vec![Step::stream_split(&crlf, 5)], crlf.clone(), "200 attempts=1 exact"),
        case("429 retry-after-ms, ok", r, vec![status(429).header("retry-after-ms", "20"), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("429 retry-after 0, ok", r, vec![status(429).header("retry-after", "0"), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("every retryable status, ok", r, [500, 502, 503, 504, 408, 409, 429].iter().map(|&s| status(s)).chain([Step::stream(&ok)]).collect(), ok.clone(), "200 attempts=8 exact").env(&[("RETRY_ATTEMPTS", "10")]),
        case("cut mid-stream, ok", r, vec![Step::cut(&ok, half), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("cut after headers, ok", r, vec![Step::cut(&ok, 0), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("cut inside last event, ok", r, vec![Step::cut(&ok, ok.len() - 3), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("stall mid-stream, ok", r, vec![Step::stall(&ok, half), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact").env(QUICK_IDLE),
        case("error event flat, ok", r, vec![Step::stream(&fixtures::responses_error("rate_limit_exceeded", "Rate limit reached. Please try again in 20ms.", false)), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("error event nested, ok", r, vec![Step::stream(&fixtures::responses_error("server_error", "The server had an error.", true)), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("response.failed server_error, ok", r, vec![Step::stream(&fixtures::responses_failed("server_error", "boom")), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("faults in a row, ok", r, vec![status(429), Step::cut(&ok, 100), Step::stream(&fixtures::responses_error("rate_limit_exceeded", "slow down", false)), Step::stream(&fixtures::responses_failed("server_error", "x")), Step::stream(&ok)], ok.clone(), "200 attempts=5 exact"),
        case("malformed event data, ok", r, vec![Step::stream(b"event: response.created\ndata: {\"type\":\"response.cre\n\n"), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("response.failed final", r, vec![Step::stream(&failed_final)], failed_final.clone(), "200 attempts=1 exact"),
        case("error event final", r, vec![Step::stream(&error_final)], error_final.clone(), "200 attempts=1 exact"),
        case("response.incomplete", r, vec![Step::stream(&incomplete)], incomplete.clone(), "200 attempts=1 exact"),
        case("400 passes through", r, vec![Step::json(400, &bad_request)], bad_request.clone().into_bytes(), "400 attempts=1 exact"),
        case("401 passes through", r, vec![Step::json(401, &bad_request)], bad_request.clone().into_bytes(), "401 attempts=1 exact"),
        case("404 passes through", r, vec![Step::json(404, &bad_request)], bad_request.clone().into_bytes(), "404 attempts=1 exact"),
        case("429 insufficient_quota final", r, vec![Step::json(429, &quota)], quota.clone().into_bytes(), "429 attempts=1 exact"),
        case("always 503", r, vec![status(503); 5], vec![], "503 attempts=5 error:upstream_retries_exhausted"),
        case("always 429", r, vec![status(429); 5], vec![], "429 attempts=5 error:rate_limit_exceeded"),
        case("hint beyond the deadline", r, vec![status(429).header("retry-after", "3600")], vec![], "429 attempts=1 error:rate_limit_exceeded"),
        case("always cut", r, vec![Step::cut(&ok, half); 5], vec![], "502 attempts=5 error:upstream_retries_exhausted"),
        case("connect refused", r, vec![], vec![], "502 attempts=5 error:upstream_retries_exhausted").refused(),
        case("connect refused, 3 attempts", r, vec![], vec![], "502 attempts=3 error:upstream_retries_exhausted").refused().env(&[("RETRY_ATTEMPTS", "3")]),
        case("larger than MAX_RESPONSE_BYTES", r, vec![Step::stream(&ok)], vec![], "502 attempts=1 error:response_too_large").env(&[("MAX_RESPONSE_BYTES", "4096")]),
        // the terminal event is the end: nothing after it is waited for
        case("completed, then held open", r, vec![Step::hold(&ok, false)], ok.clone(), "200 attempts=1 exact").env(LONG_IDLE),
        case("completed, then keep-alives", r, vec![Step::hold(&ok, true)], ok.clone(), "200 attempts=1 exact").env(LONG_IDLE),
        // a stream that only sends comments has stalled
        case("keep-alives only mid-stream, ok", r, vec![Step::hold(&ok[..half], true), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact").env(&[("IDLE_TIMEOUT_SECONDS", "0.5")]),
        case("keep-alives before any event, ok", r, vec![Step::hold(b"", true), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact").env(&[("IDLE_TIMEOUT_SECONDS", "0.5")]),
        // a clean end is an end: no framing, or a last event without its blank line
        case("unframed body", r, vec![Step::stream(&ok).unframed()], ok.clone(), "200 attempts=1 exact"),
        case("last event without blank line", r, vec![Step::stream(&ok[..ok.len() - 2])], ok.clone(), "200 attempts=1 exact"),
        case("same, crlf", r, vec![Step::stream(&crlf[..crlf.len() - 4])], [&crlf[..crlf.len() - 4], b"\n\n"].concat(), "200 attempts=1 exact"),
        case("same, unframed", r, vec![Step::stream(&ok[..ok.len() - 2]).unframed()], ok.clone(), "200 attempts=1 exact"),
        case("same, then cut, ok", r, vec![Step::cut(&ok, ok.len() - 2), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        // a success that is not an event stream
        case("200 html page", r, vec![Step::stream(b"<html><title>Sign in</title></html>").content_type("text/html"); 5], vec![], "502 attempts=5 error:upstream_not_event_stream"),
        case("200 json object", r, vec![Step::json(200, "{\"id\":\"resp_1\",\"status\":\"completed\",\"error\":null}"); 5], vec![], "502 attempts=5 error:upstream_not_event_stream"),
        case("200 json error server_error, ok", r, vec![Step::json(200, &fixtures::error_body("server_error", "oops")), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("200 json error final", r, vec![Step::json(200, &fixtures::error_body("context_length_exceeded", "too long"))], vec![], "400 attempts=1 error:context_length_exceeded"),
        case("204 no content", r, vec![Step::empty(204); 5], vec![], "502 attempts=5 error:upstream_not_event_stream"),
        case("200 stream without content type", r, vec![Step::stream(&ok).content_type(""); 5], vec![], "502 attempts=5 error:upstream_not_event_stream"),
        case("Text/Event-Stream is checked", r, vec![Step::stream(&fixtures::responses_failed("server_error", "boom")).content_type("Text/Event-Stream; Charset=UTF-8"), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        // redirects and encodings are reported at once
        case("302 to a login page", r, vec![Step::redirect(302, "https://login.example.com/portal")], vec![], "502 attempts=1 error:upstream_redirect"),
        case("gzip-encoded stream", r, vec![Step::stream(&gzip(&ok)).header("content-encoding", "gzip")], vec![], "502 attempts=1 error:upstream_encoded_body"),
    ];
    check(cases);
}

/// A streaming chat client that did not ask for usage (`CHAT_STREAM`) gets the upstream's
/// stream without its usage-only chunk (`fixtures::unasked`).
#[test]
#[rustfmt::skip] // one row per case
fn chat_faults() {
    let ok = fixtures::chat(ANSWER, false);
    let crlf = fixtures::chat(ANSWER, true);
    let c = "/v1/chat/completions";
    let final_error = fixtures::chat_error(
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens.",
    );
    let no_done = &ok[..ok.len() - "data: [DONE]\n\n".len()];
    // the last two chunks are the finish_reason and the usage
    let before_finish = {
        let events: Vec<&[u8]> = no_done.split_inclusive(|&b| b == b'\n').collect();
        let keep: usize = events[..events.len() - 4].iter().map(|e| e.len()).sum();
        &no_done[..keep]
    };
    let html = Step::stream(b"<!doctype html><html>Gateway login</html>").content_type("text/html; charset=utf-8");
    let cases = vec![
        case("clean azure chat", c, vec![Step::stream(&ok)], unasked(&ok), "200 attempts=1 exact"),
        case("crlf split every 3 bytes", c, vec![Step::stream_split(&crlf, 3)], unasked(&crlf), "200 attempts=1 exact"),
        case("tool call", c, vec![Step::stream(&fixtures::chat_tool_call())], fixtures::chat_tool_call(), "200 attempts=1 exact"),
        case("in-stream 429 error, ok", c, vec![Step::stream(&fixtures::chat_error("429", "Requests have exceeded the call rate limit. Please retry after 1 second.", )), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact"),
        case("in-stream server_error, ok", c, vec![Step::stream(&fixtures::chat_error("server_error", "oops")), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact"),
        case("ends without [DONE] after finish", c, vec![Step::stream(no_done)], unasked(no_done), "200 attempts=1 exact"),
        case("same, unframed", c, vec![Step::stream(no_done).unframed()], unasked(no_done), "200 attempts=1 exact"),
        case("same, cut, ok", c, vec![Step::cut(no_done, no_done.len()), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact"),
        case("ends before finish_reason, ok", c, vec![Step::stream(before_finish), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact"),
        case("[DONE], then keep-alives", c, vec![Step::hold(&ok, true)], unasked(&ok), "200 attempts=1 exact").env(LONG_IDLE),
        case("keep-alives only, ok", c, vec![Step::hold(before_finish, true), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact").env(&[("IDLE_TIMEOUT_SECONDS", "0.5")]),
        case("200 html page", c, vec![html; 5], vec![], "502 attempts=5 error:upstream_not_event_stream"),
        case("cut mid-stream, ok", c, vec![Step::cut(&ok, ok.len() / 3), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact"),
        case("stall, ok", c, vec![Step::stall(&ok, 10), Step::stream(&ok)], unasked(&ok), "200 attempts=2 exact").env(QUICK_IDLE),
        case("503 twice, ok", c, vec![status(503), status(503), Step::stream(&ok)], unasked(&ok), "200 attempts=3 exact"),
        case("final in-stream error", c, vec![Step::stream(&final_error)], final_error.clone(), "200 attempts=1 exact"),
        case("always 500", c, vec![status(500); 5], vec![], "500 attempts=5 error:upstream_retries_exhausted"),
    ];
    check(cases);
}

/// The upstream's hint wins over a shorter computed backoff.
#[test]
fn retry_hint_is_honoured() {
    let ok = fixtures::responses(ANSWER, false);
    for (name, value) in [("retry-after-ms", "400"), ("x-ms-retry-after-ms", "400")] {
        let mock = Mock::start(vec![status(429).header(name, value), Step::stream(&ok)]);
        let proxy = Proxy::start(&mock.v1(), &[]);
        let started = std::time::Instant::now();
        let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
        assert_eq!((got.status, mock.attempts()), (200, 2));
        assert!(started.elapsed() >= Duration::from_millis(400), "{name} was not honoured");
    }
    // OpenAI and Azure send both forms: the millisecond one is the precise hint, not the
    // coarser (here: longer) whole seconds, nor the message's rounded figure.
    let message = fixtures::error_body("429", "Rate limit reached. Please try again in 3s.");
    let both = Step::json(429, &message).header("retry-after", "3").header("retry-after-ms", "300");
    let mock = Mock::start(vec![both, Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let started = std::time::Instant::now();
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    let waited = started.elapsed();
    let log = proxy.wait_for_log("req=1 ");
    assert!(log.contains("retries=[u1 429 +0.30s]"), "{log}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");
    let message = fixtures::error_body("429", "Rate limit is exceeded. Try again in 1 seconds.");
    let mock = Mock::start(vec![Step::json(429, &message), Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let started = std::time::Instant::now();
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    assert!(started.elapsed() >= Duration::from_secs(1), "message hint was not honoured");
}
