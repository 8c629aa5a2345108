//! Realistic upstream streams, shaped like the OpenAI and Azure OpenAI documentation shows
//! them: `event:` + `data:` lines, full response objects carrying `"error": null`, Azure's
//! first chat chunk with `"choices": []` and `prompt_filter_results`, `[DONE]`.

use serde_json::{json, Value};

/// The text the model "says"; it mentions errors on purpose, to catch substring checks.
pub const ANSWER: &str = "Here is the fix. Note: an \"error\": null field, the word response.failed, \
a rate_limit_exceeded string and data: [DONE] inside the text are just words, not events.";

fn response_object(status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_68af4c2b7a1c8190a1b2c3d4e5f60718", "object": "response", "created_at": 1764080432,
        "status": status, "background": false, "error": null, "incomplete_details": null,
        "instructions": "You are Codex.", "max_output_tokens": null, "max_tool_calls": null,
        "model": "gpt-5-codex", "output": output, "parallel_tool_calls": false,
        "previous_response_id": null, "prompt_cache_key": null,
        "reasoning": {"effort": "medium", "summary": null}, "safety_identifier": null,
        "service_tier": "auto", "store": false, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null, "metadata": {}
    })
}

fn event(out: &mut String, seq: &mut u64, kind: &str, mut data: Value) {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(*seq);
    *seq += 1;
    out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
}

fn eol(s: String, crlf: bool) -> Vec<u8> {
    if crlf {
        s.replace('\n', "\r\n").into_bytes()
    } else {
        s.into_bytes()
    }
}

/// The opening events of a Responses stream, up to and including the text deltas.
fn responses_opening(out: &mut String, seq: &mut u64, text: &str) {
    let item = "msg_68af4c2c1b0c8190b7e6d5c4b3a29180";
    event(
        out,
        seq,
        "response.created",
        json!({"response": response_object("in_progress", json!([]), Value::Null)}),
    );
    event(
        out,
        seq,
        "response.in_progress",
        json!({"response": response_object("in_progress", json!([]), Value::Null)}),
    );
    event(
        out,
        seq,
        "response.output_item.added",
        json!({"output_index": 0,
        "item": {"id": item, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}}),
    );
    event(
        out,
        seq,
        "response.content_part.added",
        json!({"item_id": item, "output_index": 0, "content_index": 0,
        "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
    );
    for word in text.split_inclusive(' ') {
        event(
            out,
            seq,
            "response.output_text.delta",
            json!({"item_id": item, "output_index": 0,
            "content_index": 0, "delta": word, "logprobs": [], "obfuscation": "x1y2"}),
        );
    }
}

/// A complete Responses API stream answering `text`.
pub fn responses(text: &str, crlf: bool) -> Vec<u8> {
    let (mut out, mut seq) = (String::new(), 0);
    responses_opening(&mut out, &mut seq, text);
    let item = "msg_68af4c2c1b0c8190b7e6d5c4b3a29180";
    let part = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    let done_item = json!({"id": item, "type": "message", "status": "completed", "content": [part.clone()], "role": "assistant"});
    event(
        &mut out,
        &mut seq,
        "response.output_text.done",
        json!({"item_id": item, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
    );
    event(
        &mut out,
        &mut seq,
        "response.content_part.done",
        json!({"item_id": item, "output_index": 0, "content_index": 0, "part": part}),
    );
    event(
        &mut out,
        &mut seq,
        "response.output_item.done",
        json!({"output_index": 0, "item": done_item.clone()}),
    );
    let usage = json!({"input_tokens": 1234, "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 56, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1290});
    event(
        &mut out,
        &mut seq,
        "response.completed",
        json!({"response": response_object("completed", json!([done_item]), usage)}),
    );
    eol(out, crlf)
}

/// A Responses stream that ends with `response.incomplete` (max_output_tokens).
pub fn responses_incomplete(text: &str) -> Vec<u8> {
    let (mut out, mut seq) = (String::new(), 0);
    responses_opening(&mut out, &mut seq, text);
    let mut response = response_object("incomplete", json!([]), Value::Null);
    response["incomplete_details"] = json!({"reason": "max_output_tokens"});
    event(&mut out, &mut seq, "response.incomplete", json!({"response": response}));
    out.into_bytes()
}

/// A Responses stream that starts, then fails with `response.failed`.
pub fn responses_failed(code: &str, message: &str) -> Vec<u8> {
    let (mut out, mut seq) = (String::new(), 0);
    responses_opening(&mut out, &mut seq, "Partial answer that must never reach the client");
    let mut response = response_object("failed", json!([]), Value::Null);
    response["error"] = json!({"code": code, "message": message});
    event(&mut out, &mut seq, "response.failed", json!({"response": response}));
    out.into_bytes()
}

/// A Responses stream that starts, then carries an `error` event (flat or nested shape).
pub fn responses_error(code: &str, message: &str, nested: bool) -> Vec<u8> {
    let (mut out, mut seq) = (String::new(), 0);
    responses_opening(&mut out, &mut seq, "Partial answer that must never reach the client");
    let data = if nested {
        json!({"error": {"type": "server_error", "code": code, "message": message, "param": null}})
    } else {
        json!({"code": code, "message": message, "param": null})
    };
    event(&mut out, &mut seq, "error", data);
    out.into_bytes()
}

fn chunk(id: &str, choices: Value) -> Value {
    json!({"choices": choices, "created": 1764080432, "id": id, "model": "gpt-4o-2024-11-20",
           "object": "chat.completion.chunk", "system_fingerprint": "fp_b705f0c291"})
}

fn azure_prompt_filter() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
           "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
               "hate": safe, "self_harm": safe, "sexual": safe, "violence": safe,
               "jailbreak": {"filtered": false, "detected": false}}}]})
}

/// A complete Azure-style Chat Completions stream answering `text`, with a usage chunk.
pub fn chat(text: &str, crlf: bool) -> Vec<u8> {
    let id = "chatcmpl-AbC123xyz";
    let mut chunks = vec![azure_prompt_filter()];
    chunks.push(chunk(id, json!([{"content_filter_results": {}, "delta": {"content": "", "refusal": null, "role": "assistant"}, "finish_reason": null, "index": 0, "logprobs": null}])));
    for word in text.split_inclusive(' ') {
        chunks.push(chunk(id, json!([{"content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}, "delta": {"content": word}, "finish_reason": null, "index": 0, "logprobs": null}])));
    }
    chunks.push(chunk(id, json!([{"content_filter_results": {}, "delta": {}, "finish_reason": "stop", "index": 0, "logprobs": null}])));
    let mut usage = chunk(id, json!([]));
    usage["usage"] = json!({"completion_tokens": 40, "prompt_tokens": 20, "total_tokens": 60});
    chunks.push(usage);
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    eol(out, crlf)
}

/// A chat stream as a streaming client that did not ask for `stream_options.include_usage`
/// gets it: the proxy asks the upstream for usage and leaves the usage-only chunk out.
pub fn unasked(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut event = Vec::new();
    for line in stream.split_inclusive(|&b| b == b'\n') {
        event.extend_from_slice(line);
        if line == b"\n" || line == b"\r\n" {
            let text = String::from_utf8_lossy(&event);
            let data = text.trim().strip_prefix("data: ").unwrap_or("");
            let chunk: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            if !(chunk["choices"] == json!([]) && chunk["usage"].is_object()) {
                out.extend_from_slice(&event);
            }
            event.clear();
        }
    }
    out.extend_from_slice(&event);
    out
}

/// A chat stream with a tool call whose arguments arrive in pieces.
pub fn chat_tool_call() -> Vec<u8> {
    let id = "chatcmpl-Tool42";
    let call = |args: &str, first: bool| {
        let mut c = json!({"index": 0, "function": {"arguments": args}});
        if first {
            c = json!({"index": 0, "id": "call_abc", "type": "function", "function": {"name": "shell", "arguments": args}});
        }
        chunk(id, json!([{"delta": {"tool_calls": [c]}, "finish_reason": null, "index": 0}]))
    };
    let chunks = [
        azure_prompt_filter(),
        chunk(
            id,
            json!([{"delta": {"role": "assistant", "content": null}, "finish_reason": null, "index": 0}]),
        ),
        call("", true),
        call("{\"command\": ", false),
        call("[\"ls\", \"-la\"]}", false),
        chunk(id, json!([{"delta": {}, "finish_reason": "tool_calls", "index": 0}])),
    ];
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// A chat stream that starts, then reports an error in a data object.
pub fn chat_error(code: &str, message: &str) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&format!("data: {}\n\n", azure_prompt_filter()));
    out.push_str(&format!(
        "data: {}\n\n",
        chunk("chatcmpl-x", json!([{"delta": {"content": "Partial"}, "finish_reason": null, "index": 0}]))
    ));
    let error = json!({"error": {"code": code, "message": message, "type": "server_error", "param": null}});
    out.push_str(&format!("data: {error}\n\n"));
    out.into_bytes()
}

/// An OpenAI-shaped error body.
pub fn error_body(code: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message, "type": "requests", "param": null}}).to_string()
}
