//! The adapter end to end: a Responses client (Codex's request shape) through the proxy to a
//! chat-only upstream, with the shield's retries underneath.

use serde_json::{json, Value};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Step};
use crate::support::*;

/// The events of a Responses stream, as (type, data).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| {
            let v: Value = serde_json::from_str(data).unwrap();
            (v["type"].as_str().unwrap_or("").to_string(), v)
        })
        .collect()
}

const CODEX_LIKE: &str = r#"{"model":"gpt-5-codex","instructions":"You are Codex.","stream":true,
 "input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"list files"}]}],
 "tools":[{"type":"function","name":"shell","description":"run","parameters":{"type":"object","properties":{"command":{"type":"array","items":{"type":"string"}}}}},
          {"type":"web_search"}],
 "tool_choice":"auto","parallel_tool_calls":false,"store":false,"include":["reasoning.encrypted_content"],
 "prompt_cache_key":"abc","reasoning":{"effort":"medium"}}"#;

#[test]
fn a_responses_client_on_a_chat_upstream() {
    let ok = fixtures::chat(ANSWER, true);
    let mock = Mock::start(vec![
        Step::json(429, &fixtures::error_body("429", "slow down")).header("retry-after-ms", "10"),
        Step::cut(&ok, ok.len() / 2),
        Step::stream(&ok),
    ]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat"), ("FORCED_MODEL", "local-model")]);
    let got = post(&proxy.url("/v1/responses"), CODEX_LIKE);
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.header("content-type").unwrap().starts_with("text/event-stream"));
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "429 and a cut retried");
    assert!(seen.iter().all(|s| s.path == "/v1/chat/completions"), "{:?}", seen[0].path);
    let sent = seen[2].json();
    assert_eq!(sent["model"], "local-model");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "You are Codex."}));
    assert_eq!(sent["messages"][1]["role"], "user");
    assert_eq!(sent["tools"].as_array().map(Vec::len), Some(1), "the hosted tool is dropped");
    for dropped in ["store", "include", "prompt_cache_key", "input", "instructions"] {
        assert!(sent.get(dropped).is_none(), "{dropped} sent to a chat server");
    }
    let events = events(&got.text());
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"response.completed"), "{kinds:?}");
    let text: String = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, ANSWER);
    let completed = &events.last().unwrap().1["response"];
    assert!(completed["id"].as_str().unwrap().starts_with("resp_"), "{completed}");
    assert_eq!(completed["usage"]["total_tokens"], 60);
    let seqs: Vec<u64> = events.iter().map(|(_, v)| v["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_tool_call_and_a_non_streaming_client() {
    let mock = Mock::start(vec![Step::stream(&fixtures::chat_tool_call())]);
    let chat_url = format!("{}/chat/completions?api-version=2024-10-21", mock.v1());
    let proxy = Proxy::start(&chat_url, &[]);
    let body = CODEX_LIKE.replace("\"stream\":true", "\"stream\":false");
    let got = post(&proxy.url("/v1/responses"), &body);
    assert_eq!(got.status, 200, "{}", got.text());
    let response = got.json();
    assert_eq!(response["object"], "response", "{response}");
    assert_eq!(response["status"], "completed");
    let call = &response["output"][0];
    assert_eq!(call["type"], "function_call", "{response}");
    assert_eq!(call["name"], "shell");
    assert_eq!(call["call_id"], "call_abc");
    assert_eq!(call["arguments"], "{\"command\": [\"ls\", \"-la\"]}");
    let seen = mock.seen();
    assert_eq!(seen[0].path, "/v1/chat/completions?api-version=2024-10-21", "auto picks chat for a chat URL");
}

#[test]
fn a_final_chat_error_becomes_response_failed() {
    let final_error = fixtures::chat_error("context_length_exceeded", "Too long.");
    let mock = Mock::start(vec![Step::stream(&final_error), Step::stream(&final_error)]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat")]);
    let got = post(&proxy.url("/v1/responses"), CODEX_LIKE);
    assert_eq!(got.status, 200);
    let events = events(&got.text());
    let (kind, last) = events.last().unwrap();
    assert_eq!(kind, "response.failed", "{}", got.text());
    assert_eq!(last["response"]["error"]["code"], "context_length_exceeded");
    let plain = post(&proxy.url("/v1/responses"), &CODEX_LIKE.replace("\"stream\":true", "\"stream\":false"));
    assert_eq!((plain.status, plain.error_code().as_str()), (400, "context_length_exceeded"));
    assert_eq!(mock.attempts(), 2, "final: not retried");
}

#[test]
fn chat_clients_and_refused_fields_on_a_chat_upstream() {
    let ok = fixtures::chat(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat")]);
    let got = post(&proxy.url("/v1/chat/completions"), CHAT_STREAM);
    // unchanged, but for the usage chunk it did not ask for
    assert_eq!((got.status, got.body == fixtures::unasked(&ok)), (200, true), "chat clients pass through");
    let stateful = r#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#;
    let refused = post(&proxy.url("/v1/responses"), stateful);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("previous_response_id"), "{}", refused.text());
    assert_eq!(mock.attempts(), 1, "nothing sent for a refused request");
}
