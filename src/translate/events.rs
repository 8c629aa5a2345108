//! A complete chat answer (its SSE stream, already checked) → the Responses stream a Responses
//! client accepts, and the final `response` object for a client that did not stream.
//!
//! The chat chunks are first folded into one answer by the fold every chat consumer shares
//! (`fold.rs`; choice 0 is used: reasoning, content and refusal pieces, tool calls by
//! `index`, finish reason, usage, a final error), then written
//! out in the Responses order: `response.created`, `response.in_progress`, each output item
//! from `output_item.added` to `output_item.done` (reasoning, then the message, then the tool
//! calls in index order), and the terminal event. Text deltas keep the upstream's pieces.
//!
//! Outcomes, chosen from what Codex 0.169.0 did with each terminal event when its binary was
//! run against a scripted server (`codex exec`, `stream_max_retries = 1`): `stop`/`tool_calls` → `response.completed`;
//! `length` → `response.incomplete` (`max_output_tokens`), which Codex reports without
//! retrying; `content_filter` → `response.failed` with code `invalid_prompt`, the one
//! failure code Codex shows with its message and does not retry (a `content_filter` code or
//! incomplete reason makes it resend the same request); an upstream `error` chunk →
//! `response.failed` with the upstream's code and message.

use serde_json::{json, Map, Value};

use super::tools::{ToolKind, ToolMap};
use crate::fold;

/// A deterministic source of unique ids (`resp_…`, `msg_…`, `fc_…`, `ctc_…`, `rs_…`, `call_…`).
#[derive(Debug, Clone)]
pub struct Ids {
    seed: u64,
    count: u64,
}

impl Ids {
    pub fn new(seed: u64) -> Self {
        Ids { seed, count: 0 }
    }

    /// `prefix_` and 24 hex digits; distinct for every call on one `Ids` (splitmix64 of a
    /// counter is a bijection).
    pub fn next(&mut self, prefix: &str) -> String {
        self.count += 1;
        let a = splitmix(self.seed.wrapping_add(self.count.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let b = splitmix(a ^ self.seed);
        format!("{prefix}_{a:016x}{:08x}", b as u32)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How the translated answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `response.completed`.
    Completed,
    /// `response.incomplete`, with the reason given in `incomplete_details`.
    Incomplete(&'static str),
    /// `response.failed`; a non-streaming client should get an OpenAI error with these.
    Failed { code: String, message: String },
}

/// The translated answer.
#[derive(Debug, Clone)]
pub struct Synthesis {
    /// The Responses SSE stream (`event:` and `data:` lines).
    pub stream: Vec<u8>,
    /// The `response` object of the terminal event.
    pub response: Value,
    pub status: Status,
    /// Lone surrogate escapes of the chat answer read as U+FFFD (see `chunk.rs`), for the log.
    pub repaired: usize,
}

/// Translate a complete chat answer, given in pieces, for the client's Responses request.
pub fn to_responses(chat_sse: &[&[u8]], map: &ToolMap, req: &Value, ids: &mut Ids) -> Synthesis {
    let (answer, repaired) = match fold::fold(chat_sse.iter().copied()) {
        Ok(folded) => {
            let repaired = folded.repaired;
            (Answer::new(folded), repaired)
        }
        // Not for an answer that passed `check.rs`, which judges every chunk the same way.
        Err(reason) => (Answer::malformed(reason), 0),
    };
    let mut out = Writer::default();
    let id = ids.next("resp");
    let model = answer.model.clone().unwrap_or_else(|| req["model"].as_str().unwrap_or("").to_string());
    let shell = Shell { id: &id, model: &model, created: answer.created, req };
    let first = shell.object("in_progress", Vec::new(), Value::Null);
    out.event("response.created", json!({"response": first}));
    out.event("response.in_progress", json!({"response": first}));
    let status = status(&answer);
    let mut output = Vec::new();
    if !matches!(status, Status::Failed { .. }) {
        write_items(&answer, map, ids, &mut out, &mut output);
    }
    let usage = answer.usage.as_ref().map(usage).unwrap_or(Value::Null);
    let (kind, response) = match &status {
        Status::Completed => ("response.completed", shell.object("completed", output, usage)),
        Status::Incomplete(reason) => {
            let mut r = shell.object("incomplete", output, usage);
            r["incomplete_details"] = json!({"reason": reason});
            ("response.incomplete", r)
        }
        Status::Failed { code, message } => {
            let mut r = shell.object("failed", output, usage);
            r["error"] = json!({"code": code, "message": message});
            ("response.failed", r)
        }
    };
    out.event(kind, json!({"response": response}));
    Synthesis { stream: out.bytes, response, status, repaired }
}

fn status(answer: &Answer) -> Status {
    if let Some((code, message)) = &answer.error {
        return Status::Failed { code: code.clone(), message: message.clone() };
    }
    match answer.choice.finish_reason.as_deref() {
        Some("length") => Status::Incomplete("max_output_tokens"),
        Some("content_filter") => Status::Failed {
            code: "invalid_prompt".into(),
            message: "The upstream's content filter stopped this answer (finish_reason: content_filter)."
                .into(),
        },
        _ => Status::Completed,
    }
}

/// Choice 0 of a folded chat answer, with what the Responses object takes from the rest.
#[derive(Debug, Default)]
struct Answer {
    model: Option<String>,
    created: Option<i64>,
    choice: fold::Choice,
    usage: Option<Value>,
    error: Option<(String, String)>,
}

impl Answer {
    fn new(mut folded: fold::Answer) -> Answer {
        Answer {
            model: folded.meta.get("model").and_then(Value::as_str).map(str::to_string),
            created: folded.meta.get("created").and_then(Value::as_i64).filter(|c| *c > 0),
            choice: folded.choices.remove(&0).unwrap_or_default(),
            usage: folded.usage.filter(Value::is_object),
            error: folded.error.as_ref().map(error),
        }
    }

    fn malformed(reason: String) -> Answer {
        let message = format!("the upstream's chat answer is malformed: {reason}");
        Answer { error: Some(("server_error".into(), message)), ..Answer::default() }
    }
}

/// Code and message of a chat error (`{"error": {...}}` or `{"error": "text"}`).
fn error(error: &Value) -> (String, String) {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let code =
        text(&error["code"]).or_else(|| text(&error["type"])).unwrap_or_else(|| "upstream_error".into());
    let message = text(error).or_else(|| text(&error["message"])).unwrap_or_else(|| "upstream error".into());
    (code, message)
}

/// Chat usage → Responses usage; the detail counts are 0 when the upstream gave none.
fn usage(u: &Value) -> Value {
    let input = u["prompt_tokens"].as_u64().unwrap_or(0);
    let output = u["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": u["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap_or(0)},
        "total_tokens": u["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

// ---- writing the Responses stream -----------------------------------------------------------

/// The SSE bytes being written, with the next sequence number.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
    seq: u64,
}

impl Writer {
    /// One event: `type` first, then `fields`, then `sequence_number`.
    fn event(&mut self, kind: &str, fields: Value) {
        let mut body = Map::new();
        body.insert("type".into(), json!(kind));
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        body.insert("sequence_number".into(), json!(self.seq));
        self.seq += 1;
        crate::sse::write_event(&mut self.bytes, kind, &body);
    }
}

/// What every `response` object of one answer shares.
struct Shell<'a> {
    id: &'a str,
    model: &'a str,
    created: Option<i64>,
    req: &'a Value,
}

impl Shell<'_> {
    fn object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let req = self.req;
        let or = |key: &str, default: Value| if req[key].is_null() { default } else { req[key].clone() };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created.unwrap_or(0),
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": or("instructions", Value::Null),
            "max_output_tokens": or("max_output_tokens", Value::Null),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": or("parallel_tool_calls", json!(true)),
            "previous_response_id": null,
            "reasoning": or("reasoning", Value::Null),
            "store": false,
            "temperature": or("temperature", Value::Null),
            "text": or("text", json!({"format": {"type": "text"}})),
            "tool_choice": or("tool_choice", json!("auto")),
            "tools": or("tools", json!([])),
            "top_p": or("top_p", Value::Null),
            "usage": usage,
            "metadata": or("metadata", json!({})),
        })
    }
}

/// Every output item of the answer, in order; each done item is pushed to `output`.
fn write_items(answer: &Answer, map: &ToolMap, ids: &mut Ids, out: &mut Writer, output: &mut Vec<Value>) {
    let choice = &answer.choice;
    if !choice.reasoning.pieces.is_empty() {
        let item = reasoning(&choice.reasoning.pieces, ids.next("rs"), output.len(), out);
        output.push(item);
    }
    if !choice.content.pieces.is_empty() || !choice.refusal.pieces.is_empty() {
        let item = message(answer, ids.next("msg"), output.len(), out);
        output.push(item);
    }
    let mut call_ids: Vec<String> = Vec::new();
    for call in choice.tool_calls.values() {
        let call_id = match &call.id {
            Some(id) if !call_ids.contains(id) => id.clone(),
            _ => ids.next("call"),
        };
        call_ids.push(call_id.clone());
        let item = match map.get(&call.name) {
            Some(tool) if tool.kind == ToolKind::ToolSearch => {
                let head = json!({"type": "tool_search_call", "id": ids.next("tsc"), "call_id": call_id, "execution": "client"});
                search_call(head, &call.arguments.concat(), output.len(), out)
            }
            Some(tool) if tool.kind == ToolKind::Custom => {
                let input = custom_input(&call.arguments.concat());
                let head = json!({"type": "custom_tool_call", "id": ids.next("ctc"), "call_id": call_id});
                custom_call(head, tool.namespace.as_deref(), &tool.name, &input, output.len(), out)
            }
            tool => {
                let (namespace, name) = match tool {
                    Some(t) => (t.namespace.as_deref(), t.name.as_str()),
                    None => (None, call.name.as_str()), // a name the model made up: Codex answers it
                };
                let head = json!({"type": "function_call", "id": ids.next("fc"), "call_id": call_id});
                function_call(head, namespace, name, &call.arguments, output.len(), out)
            }
        };
        output.push(item);
    }
}

fn reasoning(pieces: &[String], id: String, index: usize, out: &mut Writer) -> Value {
    let added = json!({"id": id, "type": "reasoning", "summary": [], "content": []});
    out.event("response.output_item.added", json!({"output_index": index, "item": added}));
    for delta in pieces {
        let ev = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta});
        out.event("response.reasoning_text.delta", ev);
    }
    let text = pieces.concat();
    let ev = json!({"item_id": id, "output_index": index, "content_index": 0, "text": text});
    out.event("response.reasoning_text.done", ev);
    let done = json!({"id": id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]});
    out.event("response.output_item.done", json!({"output_index": index, "item": done}));
    done
}

/// The assistant message: an `output_text` part, then a `refusal` part, each with its events.
fn message(answer: &Answer, id: String, index: usize, out: &mut Writer) -> Value {
    let item = |status: &str, content: Vec<Value>| json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content});
    out.event(
        "response.output_item.added",
        json!({"output_index": index, "item": item("in_progress", vec![])}),
    );
    let mut parts = Vec::new();
    for (pieces, kind, field, prefix) in [
        (&answer.choice.content.pieces, "output_text", "text", "response.output_text"),
        (&answer.choice.refusal.pieces, "refusal", "refusal", "response.refusal"),
    ] {
        if pieces.is_empty() {
            continue;
        }
        let at = json!({"item_id": id, "output_index": index, "content_index": parts.len()});
        let part = |text: &str| match kind {
            "output_text" => json!({"type": kind, "text": text, "annotations": [], "logprobs": []}),
            _ => json!({"type": kind, field: text}),
        };
        out.event("response.content_part.added", merge(&at, json!({"part": part("")})));
        for delta in pieces {
            out.event(&format!("{prefix}.delta"), merge(&at, json!({"delta": delta})));
        }
        let text = pieces.concat();
        out.event(&format!("{prefix}.done"), merge(&at, json!({field: text})));
        out.event("response.content_part.done", merge(&at, json!({"part": part(&text)})));
        parts.push(part(&text));
    }
    let done = item("completed", parts);
    out.event("response.output_item.done", json!({"output_index": index, "item": done}));
    done
}

fn function_call(
    head: Value,
    namespace: Option<&str>,
    name: &str,
    pieces: &[String],
    index: usize,
    out: &mut Writer,
) -> Value {
    let id = head["id"].clone();
    let item = |status: &str, arguments: &str| {
        let mut item = merge(&head, json!({"status": status, "name": name, "arguments": arguments}));
        if let Some(ns) = namespace {
            item["namespace"] = json!(ns);
        }
        item
    };
    out.event("response.output_item.added", json!({"output_index": index, "item": item("in_progress", "")}));
    for delta in pieces {
        out.event(
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": delta}),
        );
    }
    let arguments = pieces.concat();
    let ev = json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments});
    out.event("response.function_call_arguments.done", ev);
    let done = item("completed", &arguments);
    out.event("response.output_item.done", json!({"output_index": index, "item": done}));
    done
}

fn custom_call(
    head: Value,
    namespace: Option<&str>,
    name: &str,
    input: &str,
    index: usize,
    out: &mut Writer,
) -> Value {
    let id = head["id"].clone();
    let item = |status: &str, input: &str| {
        let mut item = merge(&head, json!({"status": status, "name": name, "input": input}));
        if let Some(ns) = namespace {
            item["namespace"] = json!(ns);
        }
        item
    };
    out.event("response.output_item.added", json!({"output_index": index, "item": item("in_progress", "")}));
    if !input.is_empty() {
        out.event(
            "response.custom_tool_call_input.delta",
            json!({"item_id": id, "output_index": index, "delta": input}),
        );
    }
    out.event(
        "response.custom_tool_call_input.done",
        json!({"item_id": id, "output_index": index, "input": input}),
    );
    let done = item("completed", input);
    out.event("response.output_item.done", json!({"output_index": index, "item": done}));
    done
}

/// Codex's client-run tool search: `arguments` is a JSON object here, and the item has no
/// delta events (Codex reads the done item).
fn search_call(head: Value, arguments: &str, index: usize, out: &mut Writer) -> Value {
    let arguments = match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({"query": arguments}),
    };
    let item = |status: &str| merge(&head, json!({"status": status, "arguments": arguments}));
    out.event("response.output_item.added", json!({"output_index": index, "item": item("in_progress")}));
    let done = item("completed");
    out.event("response.output_item.done", json!({"output_index": index, "item": done}));
    done
}

/// A custom tool's input from the chat call's arguments: `{"input": "..."}` as asked, or
/// whatever a model sent instead (the raw patch, a JSON string, an object with one string).
pub fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => match (o.get("input"), o.len()) {
            (Some(Value::String(s)), _) => s.clone(),
            (None, 1) => match o.values().next() {
                Some(Value::String(s)) => s.clone(),
                _ => arguments.to_string(),
            },
            _ => arguments.to_string(),
        },
        Ok(Value::String(s)) => s,
        _ => arguments.to_string(),
    }
}

/// `a`'s fields followed by `b`'s.
fn merge(a: &Value, b: Value) -> Value {
    let mut out = a.as_object().cloned().unwrap_or_default();
    if let Value::Object(b) = b {
        out.extend(b);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_input_is_tolerant() {
        let cases = [
            (r#"{"input":"*** Begin Patch\n*** End Patch"}"#, "*** Begin Patch\n*** End Patch"),
            (r#"{"patch":"raw"}"#, "raw"),
            (r#""a json string""#, "a json string"),
            (
                "*** Begin Patch\n*** Add File: a\n+x\n*** End Patch",
                "*** Begin Patch\n*** Add File: a\n+x\n*** End Patch",
            ),
            (r#"{"a":"1","b":"2"}"#, r#"{"a":"1","b":"2"}"#),
            (r#"{"input":7}"#, r#"{"input":7}"#),
            ("", ""),
        ];
        for (arguments, expected) in cases {
            assert_eq!(custom_input(arguments), expected, "{arguments}");
        }
    }

    /// A call of Codex's client-run `tool_search` comes back as the item Codex runs itself.
    #[test]
    fn tool_search_call() {
        let mut map = ToolMap::default();
        map.add(None, "tool_search", ToolKind::ToolSearch);
        let cases = [
            (r#"{\"query\":\"echo\",\"limit\":8}"#, json!({"query": "echo", "limit": 8})),
            ("echo", json!({"query": "echo"})),
        ];
        for (arguments, expected) in cases {
            let stream = format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"c1\",\"function\":{{\"name\":\"tool_search\",\"arguments\":\"{arguments}\"}}}}]}},\"finish_reason\":\"tool_calls\"}}]}}\n\ndata: [DONE]\n\n"
            );
            let got = to_responses(&[stream.as_bytes()], &map, &json!({}), &mut Ids::new(1));
            let item = &got.response["output"][0];
            assert_eq!(item["type"], "tool_search_call", "{item}");
            assert_eq!((&item["call_id"], &item["execution"]), (&json!("c1"), &json!("client")));
            assert_eq!(item["arguments"], expected, "{arguments}");
            let text = String::from_utf8(got.stream).unwrap();
            let done = text.lines().filter(|l| l.starts_with("data: ") && l.contains("output_item.done"));
            assert_eq!(done.filter(|l| l.contains("tool_search_call")).count(), 1, "{text}");
        }
    }

    #[test]
    fn ids_are_unique_and_deterministic() {
        let mut a = Ids::new(7);
        let got: Vec<String> = (0..1000).map(|_| a.next("fc")).collect();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len());
        assert_eq!(Ids::new(7).next("fc"), got[0]);
        assert_ne!(Ids::new(8).next("fc"), got[0]);
        assert!(got[0].starts_with("fc_") && got[0].len() == 3 + 24, "{}", got[0]);
    }

    #[test]
    fn outcomes() {
        let cases: &[(&str, Status)] = &[
            (r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#, Status::Completed),
            (r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#, Status::Completed),
            (
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
                Status::Incomplete("max_output_tokens"),
            ),
            (
                r#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#,
                Status::Failed { code: "context_length_exceeded".into(), message: "too long".into() },
            ),
            (r#"{"error":"boom"}"#, Status::Failed { code: "upstream_error".into(), message: "boom".into() }),
        ];
        for (chunk, expected) in cases {
            let stream = format!("data: {chunk}\n\ndata: [DONE]\n\n");
            let got = to_responses(&[stream.as_bytes()], &ToolMap::default(), &json!({}), &mut Ids::new(1));
            assert_eq!(&got.status, expected, "{chunk}");
            assert_eq!(got.response["status"], expected_status(expected), "{chunk}");
        }
        let filtered =
            r#"data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"content_filter"}]}"#;
        let got =
            to_responses(&[filtered.as_bytes(), b"\n\n"], &ToolMap::default(), &json!({}), &mut Ids::new(1));
        assert!(matches!(&got.status, Status::Failed { code, .. } if code == "invalid_prompt"));
        assert_eq!(got.response["output"], json!([]));
    }

    fn expected_status(s: &Status) -> &'static str {
        match s {
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed { .. } => "failed",
        }
    }
}
