//! A complete, checked Responses stream → the chat answer a Chat Completions client accepts:
//! a `chat.completion.chunk` stream ending in `data: [DONE]`, or one `chat.completion`.
//!
//! Pure: bytes in, bytes out. The stream is read once: the finished output items
//! (`response.output_item.done`, in output order; the terminal `response`'s `output` when a
//! server sent no item events) and the terminal event (status, `incomplete_details`, usage,
//! error). Deltas are not replayed: the client gets the answer in one piece anyway, so each
//! text part is one chunk. Each event's `type` is read first, borrowed from the parser's
//! buffer; only the few kept events are built as a `Value` (the deltas, most of a stream,
//! are not). What is written:
//! - message text → `content`, refusal parts → `refusal`;
//! - `function_call` items → `tool_calls` (`call_id` as the id, indexes dense from 0),
//!   `custom_tool_call` items → custom tool calls;
//! - reasoning items → kept aside for the reasoning store (`Answer::reasoning`), and their
//!   summaries → `reasoning_content` when asked (`Form::summaries`);
//! - `finish_reason`: `tool_calls` when the model called a tool, `stop` when it completed,
//!   `length` for `incomplete` with `max_output_tokens`, `content_filter` for `content_filter`;
//! - usage in the chat form (cached and reasoning tokens in their `_details`), on the last
//!   chunk of its own when `stream_options.include_usage` asked (`null` on the others, as
//!   OpenAI does), and always on a `chat.completion`.
//!
//! A failed answer (`response.failed`, an `error` event) has no chat form: `Answer::failed`
//! says so and the shield answers with the error instead.

use serde_json::{json, Map, Value};

use crate::sse;

/// What the client asked the answer to look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// A chunk stream (`stream: true`) rather than one `chat.completion`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Reasoning summaries as `reasoning_content` (`REASONING_SUMMARIES`).
    pub summaries: bool,
    /// The chat request's `stop` sequences, applied here (the Responses API has none).
    pub stop: Vec<String>,
}

/// The reasoning items of a turn that called tools, keyed by those calls' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reasoning {
    pub call_ids: Vec<String>,
    /// Each item as JSON text, `encrypted_content` included.
    pub items: Vec<String>,
}

/// The translated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The chat SSE stream, or the `chat.completion` JSON.
    pub body: Vec<u8>,
    /// The turn's reasoning, when it carries reasoning items and tool calls.
    pub reasoning: Option<Reasoning>,
    /// The upstream's error (code, message) when the answer failed: no chat form.
    pub failed: Option<(String, String)>,
}

/// What the Responses stream said, read once.
#[derive(Default)]
struct Read {
    /// Finished output items by `output_index`.
    items: Vec<(u64, Value)>,
    /// The terminal event's `response`.
    response: Value,
    /// The terminal event's type.
    end: String,
    /// An `error` event's error.
    error: Option<Value>,
}

fn read(pieces: &[&[u8]]) -> Read {
    let mut r = Read::default();
    let mut parser = sse::Parser::new();
    for piece in pieces {
        parser.feed(piece, |ev| {
            r.take(ev);
            true
        });
    }
    if r.items.is_empty() {
        if let Some(output) = r.response["output"].as_array() {
            r.items = output.iter().cloned().enumerate().map(|(i, item)| (i as u64, item)).collect();
        }
    }
    r.items.sort_by_key(|(i, _)| *i);
    r
}

/// The event types `read` keeps; every other event (the deltas, most of a stream) is
/// skipped after reading its `type`, without building it.
const KEPT: [&str; 5] =
    ["response.output_item.done", "response.completed", "response.incomplete", "response.failed", "error"];

impl Read {
    /// One event: its `type` (the event's name when the data has none), then, for a kept
    /// type, the event as a `Value`. Data that is not an object with a plain string `type`
    /// is read whole, as it always was. Only a kept event's data is checked as UTF-8 (and
    /// mended): a byte that is not cannot stand in a `type` or a member name, which are
    /// checked, nor move where a string ends.
    fn take(&mut self, ev: sse::Event) {
        let value = || serde_json::from_str::<Value>(&String::from_utf8_lossy(ev.data)).ok();
        match serde_json::from_slice::<Kind>(ev.data) {
            Ok(Kind(Some(kind))) if KEPT.contains(&kind) => {
                if let Some(v) = value() {
                    self.keep(kind, v);
                }
            }
            Ok(Kind(Some(_))) => {}
            Ok(Kind(None)) => {
                let name = String::from_utf8_lossy(ev.name);
                if KEPT.contains(&&*name) {
                    if let Some(v) = value() {
                        self.keep(&name, v);
                    }
                }
            }
            Err(_) => {
                let Some(v) = value() else { return };
                let name = String::from_utf8_lossy(ev.name);
                let kind = v["type"].as_str().map(str::to_string).unwrap_or_else(|| name.into_owned());
                self.keep(&kind, v);
            }
        }
    }

    fn keep(&mut self, kind: &str, mut v: Value) {
        match kind {
            "response.output_item.done" => {
                let index = v["output_index"].as_u64().unwrap_or(self.items.len() as u64);
                self.items.push((index, v["item"].take()));
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.response = v["response"].take();
                self.end = kind.to_string();
            }
            "error" => {
                let error = match v.get_mut("error") {
                    Some(e) if e.is_object() => e.take(),
                    _ => v,
                };
                self.error = Some(error);
            }
            _ => {}
        }
    }
}

/// An event's `type`, read without building the event: `None` when it has none (or `null`).
/// Anything unusual (not an object, a `type` that is not a plain string, a repeated `type`)
/// is an error, and the event is then read whole.
struct Kind<'a>(Option<&'a str>);

impl<'de> serde::Deserialize<'de> for Kind<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> serde::de::Visitor<'de> for KindVisitor {
    type Value = Kind<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Kind<'de>, A::Error> {
        let mut kind = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type if kind.is_some() => return Err(serde::de::Error::duplicate_field("type")),
                Key::Type => kind = Some(map.next_value::<Option<&'de str>>()?),
                Key::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Kind(kind.flatten()))
    }
}

/// A member name of an event: `type` or another.
enum Key {
    Type,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl serde::de::Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(if name == "type" { Key::Type } else { Key::Other })
    }
}

/// The message the answer builds, in chat terms.
#[derive(Default)]
struct Message {
    content: String,
    refusal: String,
    reasoning: String,
    tool_calls: Vec<Value>,
    /// The texts in output order, for the stream: (delta member, text).
    pieces: Vec<(&'static str, String)>,
}

/// Translate a complete Responses stream, given in pieces, for a chat client.
pub fn to_chat(pieces: &[&[u8]], form: Form) -> Answer {
    let r = read(pieces);
    if let Some(failed) = failure(&r) {
        return Answer { body: Vec::new(), reasoning: None, failed: Some(failed) };
    }
    let mut m = Message::default();
    let mut reasoning_items = Vec::new();
    let mut call_ids = Vec::new();
    for (_, item) in &r.items {
        match item["type"].as_str().unwrap_or("") {
            "message" => message(item, &mut m),
            "reasoning" => {
                if form.summaries {
                    let summary: Vec<&str> = item["summary"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["text"].as_str())
                        .collect();
                    let summary = summary.join("\n\n");
                    if !summary.is_empty() {
                        m.reasoning.push_str(&summary);
                        m.pieces.push(("reasoning_content", summary));
                    }
                }
                reasoning_items.push(item.to_string());
            }
            "function_call" => {
                let id = item["call_id"].as_str().unwrap_or("").to_string();
                let arguments = item["arguments"].as_str().unwrap_or("");
                m.tool_calls.push(json!({"id": id, "type": "function", "function": {"name": item["name"], "arguments": arguments}}));
                call_ids.push(id);
            }
            "custom_tool_call" => {
                let id = item["call_id"].as_str().unwrap_or("").to_string();
                m.tool_calls.push(json!({"id": id, "type": "custom", "custom": {"name": item["name"], "input": item["input"]}}));
                call_ids.push(id);
            }
            other => crate::debug!("translate: a `{other}` output item has no chat form; left out"),
        }
    }
    let stopped = cut_at_stop(&mut m, &form.stop);
    if stopped {
        call_ids.clear();
    }
    let finish = if stopped { "stop" } else { finish_reason(&r, !m.tool_calls.is_empty()) };
    let usage = usage(&r.response["usage"]);
    let head = Head {
        id: format!("chatcmpl-{}", r.response["id"].as_str().unwrap_or("").trim_start_matches("resp_")),
        created: r.response["created_at"].as_u64().unwrap_or(0),
        model: r.response["model"].clone(),
    };
    let body = match form.stream {
        true => stream(&head, &m, finish, usage, form.include_usage),
        false => completion(&head, m, finish, usage),
    };
    let reasoning = Some(Reasoning { call_ids, items: reasoning_items })
        .filter(|r| !r.call_ids.is_empty() && !r.items.is_empty());
    Answer { body, reasoning, failed: None }
}

/// The upstream's error, when the answer failed.
fn failure(r: &Read) -> Option<(String, String)> {
    let error = match (&r.error, r.end.as_str()) {
        (Some(e), _) => e,
        (None, "response.failed") => &r.response["error"],
        (None, _) => return None,
    };
    let code = error["code"].as_str().or(error["type"].as_str()).unwrap_or("server_error").to_string();
    let message = error["message"].as_str().unwrap_or("the upstream failed the response").to_string();
    Some((code, message))
}

fn message(item: &Value, m: &mut Message) {
    for part in item["content"].as_array().into_iter().flatten() {
        match (part["type"].as_str(), part["text"].as_str(), part["refusal"].as_str()) {
            (Some("output_text"), Some(text), _) => {
                m.content.push_str(text);
                m.pieces.push(("content", text.to_string()));
            }
            (Some("refusal"), _, Some(refusal)) => {
                m.refusal.push_str(refusal);
                m.pieces.push(("refusal", refusal.to_string()));
            }
            (kind, _, _) => {
                crate::debug!("translate: a message part of type {kind:?} has no chat form; left out")
            }
        }
    }
}

/// Cut the answer at the first of the client's stop sequences in its text, as a chat server
/// stops generating there: the sequence and everything after it (later text, the tool calls)
/// are left out. Whether one was found.
fn cut_at_stop(m: &mut Message, stop: &[String]) -> bool {
    let Some(at) = stop.iter().filter(|s| !s.is_empty()).filter_map(|s| m.content.find(s.as_str())).min()
    else {
        return false;
    };
    m.content.truncate(at);
    let mut left = at;
    let mut kept = Vec::new();
    for (member, text) in std::mem::take(&mut m.pieces) {
        if member != "content" {
            kept.push((member, text));
            continue;
        }
        if left == 0 {
            break;
        }
        if text.len() > left {
            kept.push((member, text[..left].to_string()));
            break;
        }
        left -= text.len();
        kept.push((member, text));
    }
    m.pieces = kept;
    m.tool_calls.clear();
    true
}

fn finish_reason(r: &Read, called: bool) -> &'static str {
    match (r.end.as_str(), r.response["incomplete_details"]["reason"].as_str()) {
        ("response.incomplete", Some("content_filter")) => "content_filter",
        ("response.incomplete", _) => "length",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// Responses usage → chat usage.
fn usage(u: &Value) -> Value {
    if !u.is_object() {
        return Value::Null;
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (input, output) = (n(&u["input_tokens"]), n(&u["output_tokens"]));
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": u["total_tokens"].as_u64().unwrap_or(input + output),
        "prompt_tokens_details": {"cached_tokens": n(&u["input_tokens_details"]["cached_tokens"])},
        "completion_tokens_details": {"reasoning_tokens": n(&u["output_tokens_details"]["reasoning_tokens"])},
    })
}

/// What every chunk (and the completion) repeats.
struct Head {
    id: String,
    created: u64,
    model: Value,
}

impl Head {
    fn object(&self, object: &str) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("object".into(), json!(object));
        o.insert("created".into(), json!(self.created));
        o.insert("model".into(), self.model.clone());
        o
    }
}

fn stream(head: &Head, m: &Message, finish: &str, usage: Value, include_usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = |delta: Value, finish: Option<&str>| {
        let mut c = head.object("chat.completion.chunk");
        c.insert(
            "choices".into(),
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        );
        if include_usage {
            c.insert("usage".into(), Value::Null);
        }
        data(&mut out, &Value::Object(c));
    };
    chunk(json!({"role": "assistant", "content": ""}), None);
    for (member, text) in &m.pieces {
        chunk(json!({ *member: text }), None);
    }
    for (index, call) in m.tool_calls.iter().enumerate() {
        // A function call as OpenAI streams one: its id and name with empty arguments, then
        // the arguments (here in one piece).
        let (id, kind) = (&call["id"], &call["type"]);
        let function = &call["function"];
        match function["arguments"].as_str() {
            Some(arguments) => {
                let name = &function["name"];
                let head = json!({"index": index, "id": id, "type": kind, "function": {"name": name, "arguments": ""}});
                chunk(json!({"tool_calls": [head]}), None);
                if !arguments.is_empty() {
                    chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                        None,
                    );
                }
            }
            None => chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": kind, "custom": call["custom"]}]}),
                None,
            ),
        }
    }
    chunk(json!({}), Some(finish));
    if include_usage {
        let mut c = head.object("chat.completion.chunk");
        c.insert("choices".into(), json!([]));
        c.insert("usage".into(), usage);
        data(&mut out, &Value::Object(c));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn data(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, value).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
}

fn completion(head: &Head, m: Message, finish: &str, usage: Value) -> Vec<u8> {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content =
        Some(m.content).filter(|c| !c.is_empty() || (m.refusal.is_empty() && m.tool_calls.is_empty()));
    message.insert("content".into(), json!(content));
    message.insert("refusal".into(), json!(Some(m.refusal).filter(|r| !r.is_empty())));
    if !m.reasoning.is_empty() {
        message.insert("reasoning_content".into(), json!(m.reasoning));
    }
    if !m.tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(m.tool_calls));
    }
    let mut c = head.object("chat.completion");
    c.insert(
        "choices".into(),
        json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}]),
    );
    c.insert("usage".into(), usage);
    serde_json::to_vec(&Value::Object(c)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, mut data: Value, seq: &mut u64) -> String {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(*seq);
        *seq += 1;
        format!("event: {kind}\r\ndata: {data}\r\n\r\n")
    }

    /// A Responses stream with these finished items and this terminal event.
    fn stream_of(items: &[Value], end: &str, extra: Value) -> Vec<u8> {
        let mut seq = 0;
        let mut response = json!({"id": "resp_1", "object": "response", "created_at": 1764000000, "model": "gpt-5-codex",
            "status": "in_progress", "error": null, "incomplete_details": null, "output": [], "usage": null});
        let mut out = ev("response.created", json!({"response": response.clone()}), &mut seq);
        for (i, item) in items.iter().enumerate() {
            out += &ev("response.output_item.done", json!({"output_index": i, "item": item}), &mut seq);
        }
        response["usage"] = json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 64},
            "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 130});
        for (k, v) in extra.as_object().unwrap() {
            response[k] = v.clone();
        }
        out += &ev(end, json!({"response": response}), &mut seq);
        out.into_bytes()
    }

    fn text(t: &str) -> Value {
        json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": t, "annotations": [], "logprobs": []}]})
    }

    fn call(id: &str, name: &str, args: &str) -> Value {
        json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": name, "arguments": args, "status": "completed"})
    }

    fn reasoning(summary: &str) -> Value {
        json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": summary}], "encrypted_content": "gAAAA"})
    }

    fn completion_of(body: &[u8], summaries: bool) -> Value {
        let a = to_chat(&[body], Form { stream: false, include_usage: false, summaries, stop: Vec::new() });
        serde_json::from_slice(&a.body).unwrap()
    }

    fn two_parts(a: &str, b: &str) -> Value {
        json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": a, "annotations": []}, {"type": "output_text", "text": b, "annotations": []}]})
    }

    #[test]
    fn stop_sequences_cut_the_answer() {
        let long = json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}});
        // (items, terminal event, its extra members, stop, expected content, tool calls left, finish_reason)
        let cases = [
            (
                vec![text("Thought: x\nObservation: y")],
                "response.completed",
                json!({}),
                vec!["\nObservation:"],
                "Thought: x",
                0,
                "stop",
            ),
            (
                vec![text("no match here")],
                "response.completed",
                json!({}),
                vec!["END"],
                "no match here",
                0,
                "stop",
            ),
            (
                vec![text("a END b STOP c")],
                "response.completed",
                json!({}),
                vec!["STOP", "END"],
                "a ",
                0,
                "stop",
            ),
            (
                vec![two_parts("abc", "deSTOPf")],
                "response.completed",
                json!({}),
                vec!["STOP"],
                "abcde",
                0,
                "stop",
            ),
            (vec![two_parts("abST", "OPx")], "response.completed", json!({}), vec!["STOP"], "ab", 0, "stop"),
            (vec![two_parts("abc", "STOP")], "response.completed", json!({}), vec!["STOP"], "abc", 0, "stop"),
            (vec![text("é STOP ü")], "response.completed", json!({}), vec!["STOP"], "é ", 0, "stop"),
            (
                vec![text("x END"), call("call_a", "ls", "{}")],
                "response.completed",
                json!({}),
                vec!["END"],
                "x ",
                0,
                "stop",
            ),
            (
                vec![text("x"), call("call_a", "ls", "{}")],
                "response.completed",
                json!({}),
                vec!["END"],
                "x",
                1,
                "tool_calls",
            ),
            (vec![text("Hal END lo")], "response.incomplete", long.clone(), vec!["END"], "Hal ", 0, "stop"),
            (vec![text("Hallo")], "response.incomplete", long, vec!["END"], "Hallo", 0, "length"),
        ];
        for (items, end, extra, stop, content, calls, finish) in cases {
            let body = stream_of(&items, end, extra);
            let stop: Vec<String> = stop.into_iter().map(String::from).collect();
            let form = Form { stream: false, include_usage: false, summaries: false, stop: stop.clone() };
            let a = to_chat(&[&body], form);
            let v: Value = serde_json::from_slice(&a.body).unwrap();
            let message = &v["choices"][0]["message"];
            assert_eq!(message["content"], json!(content), "{stop:?}");
            assert_eq!(message["tool_calls"].as_array().map_or(0, Vec::len), calls, "{stop:?}");
            assert_eq!(v["choices"][0]["finish_reason"], finish, "{stop:?}");
            assert!(a.reasoning.is_none() || calls > 0, "no reasoning kept for calls left out");
            // the stream says the same
            let form = Form { stream: true, include_usage: false, summaries: false, stop };
            let streamed = String::from_utf8(to_chat(&[&body], form).body).unwrap();
            let text: String = streamed
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                .collect();
            assert_eq!(text, content);
            assert!(streamed.contains(&format!("\"finish_reason\":\"{finish}\"")), "{streamed}");
        }
    }

    #[test]
    fn completions() {
        let refusal = json!({"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]});
        // (items, terminal event, its extra members, summaries, expected message, finish_reason)
        let cases = [
            (
                vec![text("Hi")],
                "response.completed",
                json!({}),
                false,
                json!({"role": "assistant", "content": "Hi", "refusal": null}),
                "stop",
            ),
            (
                vec![reasoning("Think."), text("Hi")],
                "response.completed",
                json!({}),
                true,
                json!({"role": "assistant", "content": "Hi", "refusal": null, "reasoning_content": "Think."}),
                "stop",
            ),
            (
                vec![reasoning("Think."), text("Hi")],
                "response.completed",
                json!({}),
                false,
                json!({"role": "assistant", "content": "Hi", "refusal": null}),
                "stop",
            ),
            (
                vec![reasoning("x"), call("call_a", "ls", "{}"), call("call_b", "cat", "{\"f\":1}")],
                "response.completed",
                json!({}),
                false,
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                 {"id": "call_a", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
                 {"id": "call_b", "type": "function", "function": {"name": "cat", "arguments": "{\"f\":1}"}}]}),
                "tool_calls",
            ),
            (
                vec![text("Hal")],
                "response.incomplete",
                json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}),
                false,
                json!({"role": "assistant", "content": "Hal", "refusal": null}),
                "length",
            ),
            (
                vec![],
                "response.incomplete",
                json!({"status": "incomplete", "incomplete_details": {"reason": "content_filter"}}),
                false,
                json!({"role": "assistant", "content": "", "refusal": null}),
                "content_filter",
            ),
            (
                vec![refusal],
                "response.completed",
                json!({}),
                false,
                json!({"role": "assistant", "content": null, "refusal": "I can't."}),
                "stop",
            ),
        ];
        for (items, end, extra, summaries, message, finish) in cases {
            let got = completion_of(&stream_of(&items, end, extra), summaries);
            let want = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1764000000, "model": "gpt-5-codex",
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
                          "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 12}}});
            assert_eq!(got, want, "{end} {items:?}");
        }
    }

    /// Each event's type is read without building the event; it must be the type the whole
    /// event says, as a `Value` reads it (the last `type`, escapes decoded, the event's name
    /// when the data has no string `type`), and a kept event's data is mended as UTF-8.
    #[test]
    fn the_type_read_first_is_the_type_of_the_whole_event() {
        // (items kept, terminal type, an error kept)
        type Outcome = (usize, &'static str, bool);
        let cases: &[(&[u8], Outcome)] = &[
            (b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n", (0, "", false)),
            (b"data: {\"type\":\"response.completed\",\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"data: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{}}\n\n", (1, "", false)),
            (b"event: response.completed\ndata: {\"type\":\"response.output_text.delta\",\"response\":{}}\n\n", (0, "", false)),
            (b"event: error\ndata: {\"code\":\"x\",\"message\":\"m\"}\n\n", (0, "", true)),
            (b"event: error\ndata: \"oops\"\n\n", (0, "", true)),
            (b"event: response.completed\ndata: {\"type\":null,\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"event: response.completed\ndata: {\"type\":7,\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"data: {\"type\":\"response.output_text.delta\",\"type\":\"response.completed\",\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"data: {\"type\":\"response.completed\",\"type\":\"response.output_text.delta\",\"response\":{}}\n\n", (0, "", false)),
            (b"data: {\"type\":\"response.complet\\u0065d\",\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"data: {\"typ\\u0065\":\"response.completed\",\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"data: {\"type\":\"response.completed\",\"note\":\"\xff\",\"response\":{}}\n\n", (0, "response.completed", false)),
            (b"event: error\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"\xff\"}\n\n", (0, "", false)),
            (b"event: error\ndata: {oops\n\n", (0, "", false)),
            (b"event: error\ndata: {\"code\":\"x\"}", (0, "", false)),
        ];
        for (event, want) in cases {
            let r = read(&[event]);
            let got = (r.items.len(), r.end.as_str(), r.error.is_some());
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(event));
        }
    }

    #[test]
    fn reasoning_is_kept_with_the_calls_of_its_turn() {
        let form = Form::default();
        let with_calls = stream_of(
            &[reasoning("x"), call("call_a", "ls", "{}"), call("call_b", "ls", "{}")],
            "response.completed",
            json!({}),
        );
        let got = to_chat(&[&with_calls], form.clone()).reasoning.unwrap();
        assert_eq!(got.call_ids, ["call_a", "call_b"]);
        let item: Value = serde_json::from_str(&got.items[0]).unwrap();
        assert_eq!(item, reasoning("x"));
        let text_only = stream_of(&[reasoning("x"), text("Hi")], "response.completed", json!({}));
        assert_eq!(to_chat(&[&text_only], form.clone()).reasoning, None, "no call to key it by");
        let no_reasoning = stream_of(&[call("call_a", "ls", "{}")], "response.completed", json!({}));
        assert_eq!(to_chat(&[&no_reasoning], form).reasoning, None);
    }

    #[test]
    fn failures_have_no_chat_form() {
        let failed = stream_of(
            &[],
            "response.failed",
            json!({"status": "failed", "error": {"code": "invalid_prompt", "message": "no"}}),
        );
        assert_eq!(to_chat(&[&failed], Form::default()).failed, Some(("invalid_prompt".into(), "no".into())));
        let mut seq = 0;
        let error = ev(
            "error",
            json!({"code": "context_length_exceeded", "message": "too long", "param": null}),
            &mut seq,
        );
        assert_eq!(
            to_chat(&[error.as_bytes()], Form::default()).failed,
            Some(("context_length_exceeded".into(), "too long".into()))
        );
    }

    #[test]
    fn a_stream_with_usage_last() {
        let body =
            stream_of(&[text("Hi"), call("call_a", "ls", "{\"d\":1}")], "response.completed", json!({}));
        let a =
            to_chat(&[&body], Form { stream: true, include_usage: true, summaries: false, stop: Vec::new() });
        let text = String::from_utf8(a.body).unwrap();
        let lines: Vec<&str> = text.split("\n\n").filter(|l| !l.is_empty()).collect();
        let deltas: Vec<String> = lines[..lines.len() - 2]
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["usage"], Value::Null);
                format!("{} {}", v["choices"][0]["delta"], v["choices"][0]["finish_reason"])
            })
            .collect();
        assert_eq!(
            deltas,
            [
                r#"{"role":"assistant","content":""} null"#,
                r#"{"content":"Hi"} null"#,
                r#"{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"ls","arguments":""}}]} null"#,
                r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"d\":1}"}}]} null"#,
                r#"{} "tool_calls""#,
            ]
        );
        let usage: Value =
            serde_json::from_str(lines[lines.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            (usage["choices"].clone(), usage["usage"]["total_tokens"].clone()),
            (json!([]), json!(130))
        );
        assert_eq!(lines[lines.len() - 1], "data: [DONE]");
    }
}
