//! What a Codex client gets that other clients do not (rules in `src/codex.rs`, measured with
//! Codex 0.169): the give-up message in the one form Codex prints verbatim, data keepalives,
//! progress lines as its status line, and its "lite" body in the standard shape.

use serde_json::{json, Value};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Piece, Step};
use crate::support::*;

const CODEX: [(&str, &str); 3] = [
    ("content-type", "application/json"),
    ("authorization", "Bearer codex-placeholder-key"),
    ("originator", "codex_exec"),
];

fn rate_limited() -> Step {
    Step::json(429, &fixtures::error_body("429", "Rate limit reached.")).header("retry-after-ms", "300")
}

#[test]
fn a_codex_client_is_told_why_the_shield_gave_up() {
    let mock = Mock::start(vec![rate_limited(); 6]);
    let proxy = Proxy::start(&mock.v1(), &[("RETRY_ATTEMPTS", "2")]);
    let url = proxy.url("/v1/responses");
    let codex = request("POST", &url, &CODEX, RESPONSES_STREAM.as_bytes());
    assert_eq!(codex.status, 400, "Codex prints a 400's body and does not retry it");
    assert!(codex.header("content-type").unwrap().starts_with("text/plain"), "{:?}", codex.headers);
    let text = codex.text();
    assert!(text.starts_with("codex-shield: upstream failed 2 attempt(s)"), "{text}");
    assert!(text.contains("429"), "{text}");
    let sdk = post(&url, RESPONSES_STREAM);
    assert_eq!(
        (sdk.status, sdk.error_code().as_str()),
        (429, "rate_limit_exceeded"),
        "others: OpenAI-shaped"
    );
}

/// Streamed events of a Codex request held by keepalive, as (type, data).
fn codex_stream(proxy: &Proxy) -> (u16, Vec<(String, Value)>) {
    let got = request("POST", &proxy.url("/v1/responses"), &CODEX, RESPONSES_STREAM.as_bytes());
    let events = got
        .text()
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| {
            let v: Value = serde_json::from_str(data).unwrap();
            (v["type"].as_str().unwrap_or("").to_string(), v)
        })
        .collect();
    (got.status, events)
}

#[test]
fn progress_lines_then_the_answer_for_codex() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![
        rate_limited(),
        Step::stream(&ok).before(Piece::Pause(std::time::Duration::from_millis(400))),
    ]);
    let proxy = Proxy::start(
        &mock.v1(),
        &[("KEEPALIVE_SECONDS", "0.2"), ("CODEX_PROGRESS", "true"), ("RETRY_WAIT_SECONDS", "0.3")],
    );
    let (status, events) = codex_stream(&proxy);
    assert_eq!(status, 200);
    let summary: Vec<&str> = events
        .iter()
        .filter(|(k, _)| k == "response.reasoning_summary_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert!(
        summary.iter().any(|d| d.contains("upstream 1 rate-limited (429); retrying")),
        "no progress line in {summary:?}"
    );
    let first_answer = events.iter().position(|(k, _)| k == "response.created").expect("the answer");
    assert!(
        events[..first_answer].iter().all(|(k, _)| k != "response.output_text.delta"),
        "no answer before it"
    );
    let text: String = events[first_answer..]
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, ANSWER, "the whole answer follows");
}

#[test]
fn a_codex_give_up_after_the_head_is_an_invalid_prompt_failure() {
    let slow = rate_limited().before(Piece::Pause(std::time::Duration::from_millis(500)));
    let mock = Mock::start(vec![slow; 2]);
    let proxy = Proxy::start(&mock.v1(), &[("KEEPALIVE_SECONDS", "0.2"), ("RETRY_ATTEMPTS", "2")]);
    let (status, events) = codex_stream(&proxy);
    assert_eq!(status, 200);
    assert!(events.iter().any(|(k, _)| k == "keepalive"), "data keepalives for Codex: {events:?}");
    let (kind, last) = events.last().unwrap();
    assert_eq!(kind, "response.failed");
    assert_eq!(last["response"]["error"]["code"], "invalid_prompt", "the code Codex shows verbatim");
    let message = last["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("upstream failed 2 attempt(s)"), "{message}");
}

#[test]
fn a_lite_body_reaches_the_upstream_in_the_standard_shape() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[("FORCED_MODEL", "my-deployment")]);
    let exec = json!({"type": "function", "name": "exec_command", "parameters": {"type": "object"}});
    let lite = json!({
        "model": "gpt-6.1-sol", "stream": true,
        "input": [
            {"type": "additional_tools", "role": "developer",
             "tools": [{"type": "namespace", "name": "functions", "tools": [exec]}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
    });
    let mut headers = CODEX.to_vec();
    headers.push(("x-openai-internal-codex-responses-lite", "true"));
    let got = request("POST", &proxy.url("/v1/responses"), &headers, lite.to_string().as_bytes());
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = &mock.seen()[0];
    let sent = seen.json();
    assert_eq!(sent["model"], "my-deployment");
    assert_eq!(sent["tools"][0]["name"], "exec_command", "{sent}");
    assert_eq!(sent["input"].as_array().unwrap().len(), 1, "the additional_tools item is gone: {sent}");
    assert_eq!(seen.header("x-openai-internal-codex-responses-lite"), None);
}
