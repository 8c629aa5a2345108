//! The JSON answer for a client that asked for `"stream": false`, built from a checked stream.
//!
//! The shield always streams upstream; a non-streaming client gets what the API would have
//! returned: for Responses the `response` object of the terminal event, for Chat Completions a
//! `chat.completion` assembled from the chunks (content, refusal, tool calls with their
//! arguments joined, finish reasons, usage). Pure: bytes in, JSON out.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::body::Body;
use crate::sse;

/// The `response` object of the last terminal event of a Responses stream.
pub fn responses(stream: &Body) -> Option<Value> {
    let mut last = None;
    for (name, data) in sse::events(stream.chunks()) {
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else { continue };
        let kind = v["type"].as_str().unwrap_or(&name).to_string();
        if matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed") {
            last = Some(v["response"].take());
        }
    }
    last.filter(Value::is_object)
}

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    function_call: Option<ToolCall>,
    finish_reason: Value,
    logprobs: Vec<Value>,
}

#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

/// A `chat.completion` object from the chunks of a Chat Completions stream.
pub fn chat(stream: &Body) -> Value {
    let mut top = Map::new();
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    for (_, data) in sse::events(stream.chunks()) {
        let Ok(chunk) = serde_json::from_str::<Value>(&data) else { continue };
        for key in ["id", "created", "model", "system_fingerprint", "service_tier"] {
            let v = &chunk[key];
            let empty = v.is_null() || v == "" || v == 0;
            if !empty && !top.contains_key(key) {
                top.insert(key.to_string(), v.clone());
            }
        }
        for key in ["usage", "prompt_filter_results"] {
            if !chunk[key].is_null() {
                top.insert(key.to_string(), chunk[key].clone());
            }
        }
        for c in chunk["choices"].as_array().into_iter().flatten() {
            let choice = choices.entry(c["index"].as_u64().unwrap_or(0)).or_default();
            merge_choice(choice, c);
        }
    }
    let choices: Vec<Value> = choices.into_iter().map(|(i, c)| choice_json(i, c)).collect();
    let mut out = Map::new();
    out.insert("id".into(), top.remove("id").unwrap_or_else(|| json!("")));
    out.insert("object".into(), json!("chat.completion"));
    out.insert("created".into(), top.remove("created").unwrap_or_else(|| json!(0)));
    out.insert("model".into(), top.remove("model").unwrap_or_else(|| json!("")));
    out.insert("choices".into(), Value::Array(choices));
    out.insert("usage".into(), top.remove("usage").unwrap_or(Value::Null));
    out.extend(top);
    Value::Object(out)
}

fn merge_choice(choice: &mut Choice, c: &Value) {
    let delta = &c["delta"];
    if let Some(role) = delta["role"].as_str() {
        choice.role = Some(role.to_string());
    }
    append(&mut choice.content, &delta["content"]);
    append(&mut choice.refusal, &delta["refusal"]);
    for call in delta["tool_calls"].as_array().into_iter().flatten() {
        let index = call["index"].as_u64().unwrap_or(choice.tool_calls.len() as u64);
        merge_call(choice.tool_calls.entry(index).or_default(), call);
    }
    if delta["function_call"].is_object() {
        merge_call(choice.function_call.get_or_insert_with(Default::default), delta);
    }
    if !c["finish_reason"].is_null() {
        choice.finish_reason = c["finish_reason"].clone();
    }
    if let Some(items) = c["logprobs"]["content"].as_array() {
        choice.logprobs.extend(items.iter().cloned());
    }
}

fn merge_call(call: &mut ToolCall, v: &Value) {
    if let Some(id) = v["id"].as_str() {
        call.id = Some(id.to_string());
    }
    if let Some(kind) = v["type"].as_str() {
        call.kind = Some(kind.to_string());
    }
    let function = if v["function"].is_object() { &v["function"] } else { &v["function_call"] };
    if let Some(name) = function["name"].as_str() {
        call.name.push_str(name);
    }
    if let Some(args) = function["arguments"].as_str() {
        call.arguments.push_str(args);
    }
}

fn append(target: &mut Option<String>, piece: &Value) {
    if let Some(text) = piece.as_str() {
        target.get_or_insert_with(String::new).push_str(text);
    }
}

fn choice_json(index: u64, c: Choice) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!(c.role.unwrap_or_else(|| "assistant".into())));
    message.insert("content".into(), json!(c.content));
    message.insert("refusal".into(), json!(c.refusal));
    if !c.tool_calls.is_empty() {
        let calls: Vec<Value> = c
            .tool_calls
            .into_values()
            .map(|t| {
                json!({
                    "id": t.id,
                    "type": t.kind.unwrap_or_else(|| "function".into()),
                    "function": {"name": t.name, "arguments": t.arguments},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(f) = c.function_call {
        message.insert("function_call".into(), json!({"name": f.name, "arguments": f.arguments}));
    }
    let logprobs = if c.logprobs.is_empty() { Value::Null } else { json!({"content": c.logprobs}) };
    json!({
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": c.finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_takes_the_terminal_response() {
        let stream = concat!(
            "event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\",\"status\":\"in_progress\"}}\r\n\r\n",
            "event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r1\",\"status\":\"completed\",\"error\":null}}\r\n\r\n",
        );
        let v = responses(&Body::from(stream.as_bytes().to_vec())).unwrap();
        assert_eq!(v["status"], "completed");
        assert_eq!(v["id"], "r1");
        let no_terminal = b"data: {\"type\":\"response.created\",\"response\":{}}\n\n".to_vec();
        assert!(responses(&Body::from(no_terminal)).is_none());
    }

    #[test]
    fn chat_assembles_content_tools_and_usage() {
        let chunks = [
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"shell","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"cmd\":"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"ls\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            "[DONE]",
        ];
        let stream: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        let v = chat(&Body::from(stream.into_bytes()));
        assert_eq!(v["id"], "c1");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["created"], 7);
        assert_eq!(v["model"], "gpt");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["id"], "call_1");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "shell");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 7);
        assert_eq!(v["prompt_filter_results"][0]["prompt_index"], 0);
    }
}
