//! Chat clients on a Responses-only upstream (`UPSTREAM_API=responses-only`) through the real
//! proxy: the mock answers 404 on chat completions, as Azure does for its codex models, and
//! a 429 and a cut before each answer. A two-turn tool loop, streamed and not: the second
//! request reaches the upstream with the first turn's reasoning item (encrypted content and
//! all) in front of its function calls and their outputs.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::support::fixtures;
use crate::support::mock::{Mock, Step};
use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat_on_responses");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}.responses.sse")).unwrap()
}

/// A Responses-only upstream: 404 on chat completions; on `/v1/responses`, `answers` in
/// order, each after a 429 and a cut.
fn responses_only(answers: &[Vec<u8>]) -> Mock {
    let mut script = VecDeque::new();
    for answer in answers {
        script.push_back(
            Step::json(429, &fixtures::error_body("429", "Rate limit reached"))
                .header("retry-after-ms", "10"),
        );
        script.push_back(Step::cut(answer, answer.len() / 2));
        script.push_back(Step::stream(answer));
    }
    let script = Mutex::new(script);
    Mock::generated(move |_, seen| {
        if seen.path.ends_with("/chat/completions") {
            let body = r#"{"error":{"code":"OperationNotSupported","message":"The chatCompletion operation does not work with the specified model, gpt-5-codex. Please choose different model and try again."}}"#;
            return Step::json(404, body);
        }
        let next = script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| {
            Step::json(599, r#"{"error":{"message":"mock script exhausted","type":"mock","code":"mock"}}"#)
        })
    })
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}])
}

fn first_turn(stream: bool) -> Value {
    json!({"model": "gpt-5-codex", "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Read README.md and Cargo.toml."}],
        "tools": tools(), "tool_choice": "auto", "max_completion_tokens": 2000, "reasoning_effort": "medium"})
}

/// The client's next request: the first turn, its tool calls as the client saw them, outputs.
fn second_turn(first: &Value, calls: &Value) -> Value {
    let mut next = first.clone();
    let messages = next["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
    for (call, output) in calls.as_array().unwrap().iter().zip(["# codex-shield", "[package]"]) {
        messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": output}));
    }
    next
}

/// The chunks of a chat stream, checked to end in `[DONE]`.
fn chunks(text: &str) -> Vec<Value> {
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.last(), Some(&"data: [DONE]"), "{text}");
    blocks[..blocks.len() - 1]
        .iter()
        .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

/// The tool calls a client assembles from a chat stream.
fn streamed_calls(chunks: &[Value]) -> Value {
    let mut calls: Vec<Value> = Vec::new();
    for c in chunks {
        for d in c["choices"].get(0).and_then(|ch| ch["delta"]["tool_calls"].as_array()).into_iter().flatten()
        {
            let i = d["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push(json!({"id": d["id"], "type": "function", "function": {"name": d["function"]["name"], "arguments": ""}}));
            }
            let args = calls[i]["function"]["arguments"].as_str().unwrap().to_string()
                + d["function"]["arguments"].as_str().unwrap_or("");
            calls[i]["function"]["arguments"] = json!(args);
        }
    }
    Value::Array(calls)
}

fn tool_loop(stream: bool) {
    let mock = responses_only(&[fixture("parallel_calls"), fixture("text_azure_crlf")]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "responses-only")]);
    let url = proxy.url("/v1/chat/completions");
    let first = first_turn(stream);
    let got = post(&url, &first.to_string());
    assert_eq!(got.status, 200, "{}", got.text());
    let calls = match stream {
        true => {
            assert!(got.header("content-type").unwrap().starts_with("text/event-stream"));
            let chunks = chunks(&got.text());
            let usage = &chunks.last().unwrap()["usage"];
            assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1920, "{usage}");
            assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 128, "{usage}");
            streamed_calls(&chunks)
        }
        false => {
            let completion = got.json();
            assert_eq!(completion["object"], "chat.completion", "{completion}");
            assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
            completion["choices"][0]["message"]["tool_calls"].clone()
        }
    };
    let ids: Vec<&str> = calls.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["call_Ab12Cd34Ef56", "call_Gh78Ij90Kl12"]);
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "a 429 and a cut retried");
    assert!(
        seen.iter().all(|s| s.path == "/v1/responses"),
        "{:?}",
        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    let sent = seen[2].json();
    assert_eq!(sent["instructions"], "You are terse.");
    assert_eq!(sent["input"][0]["role"], "user");
    assert_eq!(sent["tools"][0]["name"], "read_file");
    assert_eq!(
        (sent["store"].clone(), sent["include"].clone()),
        (json!(false), json!(["reasoning.encrypted_content"]))
    );
    assert_eq!(
        (sent["max_output_tokens"].clone(), sent["reasoning"]["effort"].clone()),
        (json!(2000), json!("medium"))
    );
    assert_eq!(sent["stream"], true);

    let got = post(&url, &second_turn(&first, &calls).to_string());
    assert_eq!(got.status, 200, "{}", got.text());
    let text = match stream {
        true => chunks(&got.text())
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_string))
            .collect(),
        false => got.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string(),
    };
    assert_eq!(text, "Hello! The answer is \"error\": null, not an error.");
    let seen = mock.seen();
    assert_eq!(seen.len(), 6);
    let input = seen[5].json()["input"].clone();
    let kinds: Vec<&str> = input.as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "reasoning",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output"
        ]
    );
    assert_eq!(input[1]["id"], "rs_0a1b2c3d4e5f6071");
    assert!(input[1]["encrypted_content"].as_str().unwrap().starts_with("gAAAA"), "{}", input[1]);
    assert_eq!(input[2]["call_id"], "call_Ab12Cd34Ef56");
    assert_eq!(input[4]["call_id"], "call_Ab12Cd34Ef56");
    let metrics = request("GET", &proxy.url("/metrics"), &[], b"").text();
    assert!(metrics.contains("codex_shield_reasoning_store_total{event=\"hit\"} 1"), "{metrics}");
    assert!(metrics.contains("codex_shield_reasoning_store_total{event=\"miss\"} 0"), "{metrics}");
}

#[test]
fn a_streaming_chat_client_in_a_tool_loop_on_a_responses_only_upstream() {
    tool_loop(true);
}

#[test]
fn a_non_streaming_chat_client_in_a_tool_loop_on_a_responses_only_upstream() {
    tool_loop(false);
}

#[test]
fn what_has_no_responses_form_is_refused_before_any_attempt() {
    let mock = responses_only(&[]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "responses-only")]);
    for (extra, param) in
        [(json!({"n": 2}), "n"), (json!({"logprobs": true}), "logprobs"), (json!({"stop": ["\n"]}), "stop")]
    {
        let mut body = first_turn(false);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let got = post(&proxy.url("/v1/chat/completions"), &body.to_string());
        assert_eq!(
            (got.status, got.error_code()),
            (400, "unsupported_parameter".to_string()),
            "{}",
            got.text()
        );
        assert_eq!(got.json()["error"]["param"], param);
    }
    assert_eq!(mock.attempts(), 0);
}

#[test]
fn a_failed_answer_is_an_error_for_the_chat_client() {
    let failed = fixtures::responses_failed("invalid_prompt", "Invalid prompt: flagged");
    let mock = Mock::start(vec![Step::stream(&failed)]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "responses-only")]);
    let got = post(&proxy.url("/v1/chat/completions"), &first_turn(true).to_string());
    assert_eq!((got.status, got.error_code()), (400, "invalid_prompt".to_string()), "{}", got.text());
    assert!(!got.text().contains("Partial answer"), "{}", got.text());
}

#[test]
fn responses_clients_still_pass_through() {
    let mock = Mock::start(vec![Step::stream(&fixture("text_azure_crlf"))]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "responses-only")]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, fixture("text_azure_crlf"), "the upstream's bytes, untouched");
    assert_eq!(mock.seen()[0].json()["input"], json!([{"role": "user", "content": "hi"}]));
}

#[test]
fn each_attempt_translates_for_its_upstream() {
    let first = Mock::start(vec![Step::json(500, &fixtures::error_body("server_error", "boom"))]);
    let second = Mock::start(vec![Step::stream(&fixtures::chat("Hi there", false))]);
    let env = [
        ("UPSTREAM_API", "responses-only"),
        ("AZURE_ENDPOINT_2", &second.v1()),
        ("AZURE_API_KEY_2", "none"),
        ("UPSTREAM_API_2", "responses"),
    ];
    let proxy = Proxy::start(&first.v1(), &env);
    let got = post(&proxy.url("/v1/chat/completions"), &first_turn(false).to_string());
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["choices"][0]["message"]["content"], "Hi there");
    let (one, two) = (first.seen(), second.seen());
    assert_eq!((one.len(), one[0].path.as_str()), (1, "/v1/responses"));
    assert!(one[0].json()["input"].is_array(), "a Responses request for upstream 1");
    assert_eq!((two.len(), two[0].path.as_str()), (1, "/v1/chat/completions"));
    assert_eq!(
        two[0].json()["messages"],
        first_turn(false)["messages"],
        "the chat request as sent, for upstream 2"
    );
}

#[test]
fn reasoning_summaries_reach_chat_clients_when_asked() {
    for (summaries, expected) in [("true", Some("It is arithmetic.")), ("false", None)] {
        let mock = Mock::start(vec![Step::stream(&fixture("reasoning_text"))]);
        let env = [("UPSTREAM_API", "responses-only"), ("REASONING_SUMMARIES", summaries)];
        let proxy = Proxy::start(&mock.v1(), &env);
        let got = post(&proxy.url("/v1/chat/completions"), &first_turn(true).to_string());
        let reasoning: String = chunks(&got.text())
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"]["reasoning_content"].as_str().map(str::to_string))
            .collect();
        match expected {
            Some(summary) => assert!(reasoning.ends_with(summary), "{reasoning:?}"),
            None => assert_eq!(reasoning, ""),
        }
        let asked = mock.seen()[0].json()["reasoning"]["summary"].clone();
        assert_eq!(asked == "auto", expected.is_some(), "{asked}");
    }
}

#[test]
fn a_turn_is_counted_once_however_many_upstreams_it_tried() {
    let failing = || Step::json(500, &fixtures::error_body("server_error", "boom"));
    let first = Mock::start(vec![failing(), failing()]);
    let second =
        Mock::start(vec![Step::stream(&fixture("parallel_calls")), Step::stream(&fixture("reasoning_text"))]);
    let env =
        [("UPSTREAM_API", "responses-only"), ("AZURE_ENDPOINT_2", &second.v1()), ("AZURE_API_KEY_2", "none")];
    let proxy = Proxy::start(&first.v1(), &env);
    let url = proxy.url("/v1/chat/completions");
    let turn = first_turn(false);
    let calls = post(&url, &turn.to_string()).json()["choices"][0]["message"]["tool_calls"].clone();
    // Upstream 1 rests after its 500 (RETRY_MAX_WAIT_SECONDS is 0.05 here): the next turn
    // tries it again once it is back.
    let rested = r#"codex_shield_upstream_cooling_down{upstream="1"} 0"#;
    let back = (0..200).any(|_| {
        let ready = request("GET", &proxy.url("/metrics"), &[], b"").text().contains(rested);
        if !ready {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ready
    });
    assert!(back, "upstream 1 still resting after 2 s");
    let got = post(&url, &second_turn(&turn, &calls).to_string());
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!((first.attempts(), second.attempts()), (2, 2));
    let input = &second.seen()[1].json()["input"];
    assert_eq!(input[1]["type"], "reasoning", "{input}");
    let metrics = request("GET", &proxy.url("/metrics"), &[], b"").text();
    assert!(metrics.contains("codex_shield_reasoning_store_total{event=\"hit\"} 1"), "{metrics}");
}
