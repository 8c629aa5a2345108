//! The JSON answer for a client that asked for `"stream": false`, built from a checked stream.
//!
//! The shield always streams upstream; a non-streaming client gets what the API would have
//! returned: for Responses the `response` object of the terminal event, for Chat Completions a
//! `chat.completion` assembled from the chat fold (`fold.rs`: content, refusal, reasoning, tool
//! calls with their arguments joined, finish reasons, usage). Pure: bytes in, JSON out.

use serde_json::{json, Map, Value};

use crate::body::Body;
use crate::fold;
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

/// A chat answer for a non-streaming client.
#[derive(Debug)]
pub struct Chat {
    /// The `chat.completion` object.
    pub completion: Value,
    /// Lone surrogate escapes read as U+FFFD (see `chunk.rs`), for the log.
    pub repaired: usize,
}

/// The `chat.completion` from the chunks of a Chat Completions stream (up to its `[DONE]`),
/// or why the answer is malformed (see `fold.rs`).
pub fn chat(stream: &Body) -> Result<Chat, String> {
    let mut answer = fold::fold(stream.chunks())?;
    let choices = std::mem::take(&mut answer.choices);
    let choices: Vec<Value> = choices.into_iter().map(|(i, c)| choice_json(i, c)).collect();
    let mut top = std::mem::take(&mut answer.meta);
    let mut out = Map::new();
    out.insert("id".into(), top.remove("id").unwrap_or_else(|| json!("")));
    out.insert("object".into(), json!("chat.completion"));
    out.insert("created".into(), top.remove("created").unwrap_or_else(|| json!(0)));
    out.insert("model".into(), top.remove("model").unwrap_or_else(|| json!("")));
    out.insert("choices".into(), Value::Array(choices));
    out.insert("usage".into(), answer.usage.take().unwrap_or(Value::Null));
    out.extend(top);
    if let Some(results) = answer.prompt_filter_results.take() {
        out.insert("prompt_filter_results".into(), results);
    }
    Ok(Chat { completion: Value::Object(out), repaired: answer.repaired })
}

fn choice_json(index: u64, c: fold::Choice) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!(c.role.unwrap_or_else(|| "assistant".into())));
    message.insert("content".into(), json!(c.content.joined()));
    message.insert("refusal".into(), json!(c.refusal.joined()));
    if let Some(reasoning) = c.reasoning.joined() {
        message.insert("reasoning_content".into(), json!(reasoning));
    }
    if !c.tool_calls.is_empty() {
        let calls: Vec<Value> = c
            .tool_calls
            .into_values()
            .map(|t| {
                json!({
                    "id": t.id,
                    "type": t.kind.unwrap_or_else(|| "function".into()),
                    "function": {"name": t.name, "arguments": t.arguments.concat()},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(f) = c.function_call {
        message.insert("function_call".into(), json!({"name": f.name, "arguments": f.arguments.concat()}));
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
        let v = chat(&Body::from(stream.into_bytes())).unwrap().completion;
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
