//! Every fault the shield handles, for both APIs, as one table: the mock's script, and what
//! the client must get (status, number of upstream attempts, body).

use std::thread;
use std::time::Duration;

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Step};
use crate::support::{post, Proxy, CHAT_STREAM, RESPONSES_STREAM};

struct Case {
    name: &'static str,
    path: &'static str,
    body: &'static str,
    script: Vec<Step>,
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
    Case { name, path, body, script, exact, env: vec![], expect }
}

/// `STATUS attempts=N BODY` where BODY is `exact`, `error:CODE` or a short description.
fn summary(c: &Case) -> String {
    let mock = Mock::start(c.script.clone());
    let endpoint =
        if c.name.starts_with("connect") { "http://127.0.0.1:9/v1".to_string() } else { mock.v1() };
    let proxy = Proxy::start(&endpoint, &c.env);
    let got = post(&proxy.url(c.path), c.body);
    let body = if got.body == c.exact {
        "exact".to_string()
    } else if got.json()["error"].is_object() {
        format!("error:{}", got.error_code())
    } else {
        format!("other:{}B:{:.80}", got.body.len(), got.text())
    };
    let attempts = if c.name.starts_with("connect") { 5 } else { mock.attempts() };
    format!("{:<34} {} attempts={attempts} {body}", c.name, got.status)
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
    let mut cases = vec![
        case("clean", r, vec![Step::stream(&ok)], ok.clone(), "200 attempts=1 exact"),
        case("clean crlf", r, vec![Step::stream(&crlf)], crlf.clone(), "200 attempts=1 exact"),
        case("split every 7 bytes", r, vec![Step::stream_split(&ok, 7)], ok.clone(), "200 attempts=1 exact"),
        case("crlf split every 5 bytes", r, vec![Step::stream_split(&crlf, 5)], crlf.clone(), "200 attempts=1 exact"),
        case("429 retry-after-ms, ok", r, vec![status(429).header("retry-after-ms", "20"), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("429 retry-after 0, ok", r, vec![status(429).header("retry-after", "0"), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("every retryable status, ok", r, [500, 502, 503, 504, 408, 409, 429].iter().map(|&s| status(s)).chain([Step::stream(&ok)]).collect(), ok.clone(), "200 attempts=8 exact"),
        case("cut mid-stream, ok", r, vec![Step::cut(&ok, half), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("cut after headers, ok", r, vec![Step::cut(&ok, 0), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("cut inside last event, ok", r, vec![Step::cut(&ok, ok.len() - 3), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("stall mid-stream, ok", r, vec![Step::stall(&ok, half), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
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
        case("connect refused", r, vec![], vec![], "502 attempts=5 error:upstream_retries_exhausted"),
        case("not SSE passes through", r, vec![Step::json(200, "{\"id\":\"resp_1\",\"status\":\"completed\",\"error\":null}")], b"{\"id\":\"resp_1\",\"status\":\"completed\",\"error\":null}".to_vec(), "200 attempts=1 exact"),
    ];
    let mut too_large = case(
        "larger than MAX_RESPONSE_BYTES",
        r,
        vec![Step::stream(&ok)],
        vec![],
        "502 attempts=1 error:response_too_large",
    );
    too_large.env = vec![("MAX_RESPONSE_BYTES", "4096")];
    cases.push(too_large);
    for c in cases.iter_mut().filter(|c| c.name.starts_with("stall")) {
        c.env = vec![("IDLE_TIMEOUT_SECONDS", "0.3")];
    }
    cases[6].env = vec![("RETRY_ATTEMPTS", "10")];
    check(cases);
}

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
    let mut cases = vec![
        case("clean azure chat", c, vec![Step::stream(&ok)], ok.clone(), "200 attempts=1 exact"),
        case("crlf split every 3 bytes", c, vec![Step::stream_split(&crlf, 3)], crlf.clone(), "200 attempts=1 exact"),
        case("tool call", c, vec![Step::stream(&fixtures::chat_tool_call())], fixtures::chat_tool_call(), "200 attempts=1 exact"),
        case("in-stream 429 error, ok", c, vec![Step::stream(&fixtures::chat_error("429", "Requests have exceeded the call rate limit. Please retry after 1 second.", )), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("in-stream server_error, ok", c, vec![Step::stream(&fixtures::chat_error("server_error", "oops")), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("ends without [DONE], ok", c, vec![Step::stream(no_done), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("cut mid-stream, ok", c, vec![Step::cut(&ok, ok.len() / 3), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("stall, ok", c, vec![Step::stall(&ok, 10), Step::stream(&ok)], ok.clone(), "200 attempts=2 exact"),
        case("503 twice, ok", c, vec![status(503), status(503), Step::stream(&ok)], ok.clone(), "200 attempts=3 exact"),
        case("final in-stream error", c, vec![Step::stream(&final_error)], final_error.clone(), "200 attempts=1 exact"),
        case("always 500", c, vec![status(500); 5], vec![], "500 attempts=5 error:upstream_retries_exhausted"),
    ];
    for c in cases.iter_mut().filter(|c| c.name.starts_with("stall")) {
        c.env = vec![("IDLE_TIMEOUT_SECONDS", "0.3")];
    }
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
    let message = fixtures::error_body("429", "Rate limit is exceeded. Try again in 1 seconds.");
    let mock = Mock::start(vec![Step::json(429, &message), Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let started = std::time::Instant::now();
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    assert!(started.elapsed() >= Duration::from_secs(1), "message hint was not honoured");
}
