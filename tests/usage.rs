//! Token usage through a real proxy: counted per upstream and client in `/metrics`, written in
//! the log line, on every path (Responses and chat passed through, a Responses client on a
//! chat upstream, a chat client on a Responses-only upstream) and for the attempts the shield
//! discarded.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::support::mock::{Mock, Step};
use crate::support::{post, request, Proxy, CHAT_PLAIN, RESPONSES_PLAIN, RESPONSES_STREAM};

/// `[input, cached, output, reasoning]`.
type Counts = [u64; 4];

const KINDS: [&str; 4] = ["input", "cached_input", "output", "reasoning"];

/// A Responses `usage` object with details.
fn responses_usage([input, cached, output, reasoning]: Counts) -> Value {
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
           "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
           "total_tokens": input + output})
}

/// An Azure chat `usage` object with details.
fn chat_usage([input, cached, output, reasoning]: Counts) -> Value {
    json!({"completion_tokens": output, "completion_tokens_details": {"accepted_prediction_tokens": 0,
           "audio_tokens": 0, "reasoning_tokens": reasoning, "rejected_prediction_tokens": 0},
           "prompt_tokens": input, "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cached},
           "total_tokens": input + output})
}

fn response(status: &str, usage: Value) -> Value {
    let message = json!({"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                         "content": [{"type": "output_text", "annotations": [], "text": "usage is a word"}]});
    let output = if status == "completed" { json!([message]) } else { json!([]) };
    json!({"id": "resp_1", "object": "response", "created_at": 1764080432, "status": status,
           "error": null, "model": "gpt-5-codex", "output": output, "usage": usage})
}

fn event(kind: &str, mut data: Value) -> String {
    data["type"] = json!(kind);
    format!("event: {kind}\ndata: {data}\n\n")
}

/// The opening of a Responses stream: created (with `usage: null`), a delta.
fn opening() -> String {
    event("response.created", json!({"response": response("in_progress", Value::Null)}))
        + &event("response.output_text.delta", json!({"delta": "usage is a word", "output_index": 0}))
}

/// A complete Responses stream that cost `counts`.
fn responses_stream(counts: Counts) -> Vec<u8> {
    let done =
        event("response.completed", json!({"response": response("completed", responses_usage(counts))}));
    (opening() + &done).into_bytes()
}

/// The same with a long text in its delta and in its `response`.
fn responses_long(counts: Counts, text: &str) -> Vec<u8> {
    let mut done = response("completed", responses_usage(counts));
    done["output"][0]["content"][0]["text"] = json!(text);
    let delta = event("response.output_text.delta", json!({"delta": text, "output_index": 0}));
    (opening() + &delta + &event("response.completed", json!({"response": done}))).into_bytes()
}

/// A Responses stream that fails with `code`, with the usage of what it generated.
fn responses_failed(code: &str, counts: Counts) -> Vec<u8> {
    let mut failed = response("failed", responses_usage(counts));
    failed["error"] = json!({"code": code, "message": "it went wrong"});
    (opening() + &event("response.failed", json!({"response": failed}))).into_bytes()
}

fn chunk(choices: Value) -> Value {
    json!({"choices": choices, "created": 1764080432, "id": "chatcmpl-1", "model": "gpt-4o",
           "object": "chat.completion.chunk", "system_fingerprint": "fp_1", "usage": null})
}

/// The chunks of an Azure chat answer up to its usage chunk (`None`: no usage chunk, as
/// without `include_usage`), then `tail` (`[DONE]`, or an error).
fn chat_stream(counts: Option<Counts>, tail: &str) -> Vec<u8> {
    let mut chunks = vec![
        json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
               "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}),
        chunk(json!([{"content_filter_results": {}, "delta": {"content": "", "role": "assistant"},
                      "finish_reason": null, "index": 0, "logprobs": null}])),
        chunk(json!([{"content_filter_results": {}, "delta": {"content": "usage is a word"},
                      "finish_reason": null, "index": 0, "logprobs": null}])),
        chunk(json!([{"content_filter_results": {}, "delta": {}, "finish_reason": "stop", "index": 0,
                      "logprobs": null}])),
    ];
    if let Some(counts) = counts {
        let mut usage = chunk(json!([]));
        usage["usage"] = chat_usage(counts);
        chunks.push(usage);
    }
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str(&format!("data: {tail}\n\n"));
    out.into_bytes()
}

fn chat_done(counts: Counts) -> Vec<u8> {
    chat_stream(Some(counts), "[DONE]")
}

/// The token counters of `/metrics` for upstream 1, client `-`: (delivered, discarded); a
/// family without the series reads 0.
fn tokens(proxy: &Proxy) -> (Counts, Counts) {
    let text = request("GET", &proxy.url("/metrics"), &[], b"").text();
    let samples: BTreeMap<&str, f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series, value.parse().unwrap()))
        .collect();
    let read = |family: &str| {
        KINDS.map(|kind| {
            let series = format!(r#"{family}{{upstream="1",client="-",kind="{kind}"}}"#);
            samples.get(series.as_str()).copied().unwrap_or(0.0) as u64
        })
    };
    (read("codex_shield_tokens_total"), read("codex_shield_discarded_tokens_total"))
}

/// Adds counts, kind by kind.
fn sum(all: &[Counts]) -> Counts {
    let mut total = [0; 4];
    for counts in all {
        for (t, n) in total.iter_mut().zip(counts) {
            *t += n;
        }
    }
    total
}

const A: Counts = [1200, 1024, 300, 192];
const B: Counts = [5000, 0, 70, 0];
const C: Counts = [2006, 1920, 42, 8];
const D: Counts = [333, 0, 11, 0];

/// Responses passed through: a stream, an assembled object, and a final error that carries
/// usage (the client gets it: delivered).
#[test]
fn responses_pass_through_is_counted() {
    let script = vec![
        Step::stream(&responses_stream(A)),
        Step::stream(&responses_stream(B)),
        Step::stream(&responses_failed("context_length_exceeded", D)),
    ];
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[]);
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    proxy.wait_for_log("tokens=1200/1024/300/192");
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_PLAIN).status, 200);
    proxy.wait_for_log("tokens=5000/0/70/0");
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_PLAIN).status, 400);
    proxy.wait_for_log("status=400");
    assert_eq!(tokens(&proxy), (sum(&[A, B, D]), [0; 4]));
    assert!(!proxy.log().contains("discarded_tokens="), "{}", proxy.log());
}

/// Chat passed through: a streaming client that asked for usage (its stream as sent), a
/// non-streaming client (the proxy asks for it upstream, to assemble the answer's `usage`),
/// and a streaming client that did not ask: the proxy asks for it upstream too, counts it,
/// and cuts the usage-only chunk from the client's stream (CRLF, split reads); from an
/// upstream that ignores `include_usage` the stream comes as sent and nothing is counted.
#[test]
fn chat_pass_through_is_counted() {
    let crlf = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap().replace('\n', "\r\n").into_bytes();
    let ignored = chat_stream(None, "[DONE]");
    let script = vec![
        Step::stream(&chat_done(C)),
        Step::stream(&chat_done(B)),
        Step::stream_split(&crlf(chat_done(D)), 7),
        Step::stream(&ignored),
    ];
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let asked = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let got = post(&proxy.url("/v1/chat/completions"), asked);
    assert_eq!((got.status, got.body), (200, chat_done(C)));
    proxy.wait_for_log("tokens=2006/1920/42/8");
    let got = post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN);
    assert_eq!((got.status, &got.json()["usage"]["prompt_tokens"]), (200, &json!(5000)));
    proxy.wait_for_log("tokens=5000/0/70/0");
    let not_asked = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let got = post(&proxy.url("/v1/chat/completions"), not_asked);
    assert_eq!(got.status, 200);
    assert!(
        got.body == crlf(chat_stream(None, "[DONE]")),
        "the usage chunk is cut, all else kept: {}",
        got.text()
    );
    proxy.wait_for_log("tokens=333/0/11/0");
    let got = post(&proxy.url("/v1/chat/completions"), not_asked);
    assert_eq!((got.status, &got.body), (200, &ignored));
    for seen in &mock.seen()[2..] {
        assert_eq!(seen.json()["stream_options"], json!({"include_usage": true}), "asked for upstream");
    }
    // counted before the reply is written: the last answer added nothing
    assert_eq!(tokens(&proxy), (sum(&[C, B, D]), [0; 4]));
}

/// A Responses client on a chat upstream: the chat stream's usage, streaming or not.
#[test]
fn translated_answers_are_counted() {
    let mock = Mock::start(vec![Step::stream(&chat_done(C)), Step::stream(&chat_done(D))]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat")]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert!(got.status == 200 && got.text().contains("response.completed"), "{}", got.text());
    proxy.wait_for_log("tokens=2006/1920/42/8");
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_PLAIN).status, 200);
    proxy.wait_for_log("tokens=333/0/11/0");
    for seen in mock.seen() {
        assert_eq!(
            seen.json()["stream_options"]["include_usage"],
            json!(true),
            "the translation asks for usage"
        );
    }
    assert_eq!(tokens(&proxy), (sum(&[C, D]), [0; 4]));
}

/// A chat client on a Responses-only upstream: the Responses stream's usage, streaming or not
/// (and the chat usage the client gets says the same).
#[test]
fn chat_clients_on_a_responses_only_upstream_are_counted() {
    let mock = Mock::start(vec![Step::stream(&responses_stream(A)), Step::stream(&responses_stream(B))]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "responses-only")]);
    let streamed = r#"{"model":"gpt-5-codex","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let got = post(&proxy.url("/v1/chat/completions"), streamed);
    assert!(got.status == 200 && got.text().contains("data: [DONE]"), "{}", got.text());
    proxy.wait_for_log("tokens=1200/1024/300/192");
    let got = post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN);
    let usage = &got.json()["usage"];
    assert_eq!(
        (got.status, &usage["prompt_tokens"], &usage["completion_tokens"]),
        (200, &json!(5000), &json!(70))
    );
    proxy.wait_for_log("tokens=5000/0/70/0");
    assert!(mock.seen().iter().all(|s| s.path.ends_with("/responses")), "every attempt went to /responses");
    assert_eq!(tokens(&proxy), (sum(&[A, B]), [0; 4]));
}

/// What the shield threw away is counted apart: a `response.failed` with usage, a chat error
/// after the usage chunk, a chat stream cut after it; each retried to a complete answer.
#[test]
fn discarded_attempts_are_counted_apart() {
    let failed = responses_failed("server_error", D);
    let chat_error = chat_stream(Some(C), r#"{"error":{"code":"server_error","message":"boom"}}"#);
    let cut = chat_done(B);
    let before_done = cut.len() - "data: [DONE]\n\n".len();
    let script = vec![
        Step::stream(&failed),
        Step::stream(&responses_stream(A)),
        Step::stream(&chat_error),
        Step::cut(&cut, before_done),
        Step::stream(&chat_done(A)),
    ];
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[]);
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    proxy.wait_for_log("tokens=1200/1024/300/192 discarded_tokens=333/0/11/0");
    assert_eq!(post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN).status, 200);
    proxy.wait_for_log("tokens=1200/1024/300/192 discarded_tokens=7006/1920/112/8");
    assert_eq!(mock.attempts(), 5);
    assert_eq!(tokens(&proxy), (sum(&[A, A]), sum(&[D, C, B])));
}

/// A complete answer the shield cannot give its client (assembling the JSON object would take
/// the memory budget over 3/4) cost its tokens all the same: discarded, not delivered.
#[test]
fn a_complete_answer_not_delivered_is_discarded() {
    let big = responses_long(B, &"y".repeat(3 << 19));
    let mock = Mock::start(vec![Step::stream(&big)]);
    let proxy = Proxy::start(&mock.v1(), &[("MEMORY_BUDGET_MB", "8")]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_PLAIN);
    assert_eq!((got.status, got.error_code()), (503, "proxy_overloaded".to_string()), "{}", got.text());
    proxy.wait_for_log("discarded_tokens=5000/0/70/0");
    assert!(!proxy.log().contains(" tokens="), "nothing delivered: {}", proxy.log());
    assert_eq!(tokens(&proxy), ([0; 4], B));
}

/// The alert rules docs/monitoring.md shows are the ones `make monitoring` checks and tests
/// with promtool (tests/monitoring/rules.yml).
#[test]
fn the_documented_alert_rules_are_the_checked_ones() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs = std::fs::read_to_string(format!("{root}/docs/monitoring.md")).unwrap();
    let rules = std::fs::read_to_string(format!("{root}/tests/monitoring/rules.yml")).unwrap();
    let alerts = docs.split("\n## Alerts\n").nth(1).expect("an Alerts section");
    let block = alerts.split("```yaml\n").nth(1).and_then(|b| b.split("```").next());
    assert_eq!(
        block,
        Some(rules.as_str()),
        "docs/monitoring.md's rules differ from tests/monitoring/rules.yml"
    );
    for alert in ["CodexShieldPromptCacheFalling", "CodexShieldDiscardedTokens"] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}
