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

use serde_json::{json, Value};

use super::tools::{ToolKind, ToolMap};
use crate::fold;
use crate::hash::splitmix64;

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
        let a = splitmix64(self.seed.wrapping_add(self.count.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let b = splitmix64(a ^ self.seed);
        format!("{prefix}_{a:016x}{:08x}", b as u32)
    }
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
    /// The `response` object of the terminal event, as JSON (a client that did not stream
    /// gets it as the body).
    pub object: Vec<u8>,
    pub status: Status,
    /// Lone surrogate escapes of the chat answer read as U+FFFD (see `chunk.rs`), for the log.
    pub repaired: usize,
}

impl Synthesis {
    /// The terminal `response` object as a `Value` (tests, logs).
    pub fn response(&self) -> Value {
        serde_json::from_slice(&self.object).unwrap_or_default()
    }
}

/// Translate a complete chat answer, given in pieces, for the client's Responses request.
///
/// Written straight into bytes, each event once, without a `Value` of it. `response.created`
/// and `response.in_progress` carry the response's identity and state only (`id`, `object`,
/// `created_at`, `status`, `model`, an empty `output`): no client reads more of them (Codex
/// only sees that they came; the SDKs keep the id and the output list), and repeating the
/// request's `instructions` and `tools` there tripled a short answer to Codex. The terminal
/// object is the whole `Response`, with the request's settings echoed once.
pub fn to_responses(chat_sse: &[&[u8]], map: &ToolMap, req: &Value, ids: &mut Ids) -> Synthesis {
    let size = chat_sse.iter().map(|p| p.len()).sum::<usize>();
    from_fold(fold::fold(chat_sse.iter().copied()), size, map, req, ids)
}

/// `to_responses` for an answer already folded (`fold::fold`'s result; `size`, the chat
/// answer's length, only sizes the output). Folding is most of a translation's CPU: the
/// proxy hands it the read-time check's fold (`shield::translated`), so the answer is
/// parsed once.
pub fn from_fold(
    folded: Result<fold::Answer, String>,
    size: usize,
    map: &ToolMap,
    req: &Value,
    ids: &mut Ids,
) -> Synthesis {
    let (answer, repaired) = match folded {
        Ok(folded) => {
            let repaired = folded.repaired;
            (Answer::new(folded), repaired)
        }
        // Not for an answer that passed `check.rs`, which judges every chunk the same way.
        Err(reason) => (Answer::malformed(reason), 0),
    };
    let mut out = Writer::with_capacity(size + 1024);
    let id = ids.next("resp");
    let model = answer.model.as_deref().unwrap_or_else(|| req["model"].as_str().unwrap_or(""));
    let shell = Shell { id: &id, model, created: answer.created.unwrap_or(0), req };
    for kind in ["response.created", "response.in_progress"] {
        out.event(kind, |e| shell.lifecycle(e.key("response")));
    }
    let status = status(&answer);
    let mut output = Output::default();
    if !matches!(status, Status::Failed { .. }) {
        write_items(&answer, map, ids, &mut out, &mut output);
    }
    let (kind, state) = match &status {
        Status::Completed => ("response.completed", "completed"),
        Status::Incomplete(_) => ("response.incomplete", "incomplete"),
        Status::Failed { .. } => ("response.failed", "failed"),
    };
    let mut object = Vec::with_capacity(output.bytes.len() + 1024);
    shell.terminal(&mut object, state, &status, &output.bytes, answer.usage.as_ref());
    out.event(kind, |e| {
        e.raw("response", &object);
    });
    Synthesis { stream: out.bytes, object, status, repaired }
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
fn usage(u: &Value, out: &mut Vec<u8>) {
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let (input, output) = (count(&u["prompt_tokens"]), count(&u["completion_tokens"]));
    let mut o = Obj::open(out);
    o.num("input_tokens", input);
    o.key("input_tokens_details");
    Obj::open(o.out).num("cached_tokens", count(&u["prompt_tokens_details"]["cached_tokens"])).close();
    o.num("output_tokens", output);
    o.key("output_tokens_details");
    Obj::open(o.out)
        .num("reasoning_tokens", count(&u["completion_tokens_details"]["reasoning_tokens"]))
        .close();
    o.num("total_tokens", u["total_tokens"].as_u64().unwrap_or(input + output));
    o.close();
}

// ---- writing the Responses stream -----------------------------------------------------------

/// A JSON object written straight into bytes, member by member. Keys are plain ASCII names
/// (never escaped); strings go through serde_json's escaping, so the bytes are exactly what
/// serialising the same `Value` gives.
struct Obj<'b> {
    out: &'b mut Vec<u8>,
    empty: bool,
}

impl<'b> Obj<'b> {
    fn open(out: &'b mut Vec<u8>) -> Obj<'b> {
        out.push(b'{');
        Obj { out, empty: true }
    }

    /// `"key":`, after a comma when needed; the value is the caller's to write next.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, key: &str, text: &str) -> &mut Self {
        string(self.key(key), text);
        self
    }

    fn num(&mut self, key: &str, n: u64) -> &mut Self {
        json(self.key(key), &n);
        self
    }

    /// A member whose value is already JSON.
    fn raw(&mut self, key: &str, raw: &[u8]) -> &mut Self {
        self.key(key).extend_from_slice(raw);
        self
    }

    fn value(&mut self, key: &str, value: &Value) -> &mut Self {
        json(self.key(key), value);
        self
    }

    fn close(&mut self) {
        self.out.push(b'}');
    }
}

fn string(out: &mut Vec<u8>, text: &str) {
    json(out, text);
}

fn json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    // Strings, numbers and maps with string keys always serialise.
    serde_json::to_writer(out, value).unwrap_or_default();
}

/// The SSE bytes being written, with the next sequence number.
struct Writer {
    bytes: Vec<u8>,
    seq: u64,
}

impl Writer {
    fn with_capacity(capacity: usize) -> Writer {
        Writer { bytes: Vec::with_capacity(capacity), seq: 0 }
    }

    /// One event (`sse::write_event`'s bytes): `type` first, then `fields`, then
    /// `sequence_number`.
    fn event(&mut self, kind: &str, fields: impl FnOnce(&mut Obj)) {
        let seq = self.seq;
        self.seq += 1;
        let out = &mut self.bytes;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        let mut data = Obj::open(out);
        data.str("type", kind);
        fields(&mut data);
        data.num("sequence_number", seq);
        data.close();
        out.extend_from_slice(b"\n\n");
    }
}

/// The done items, as the terminal object's `output` list (without its brackets).
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    count: usize,
}

impl Output {
    fn push(&mut self, item: &[u8]) {
        if self.count > 0 {
            self.bytes.push(b',');
        }
        self.bytes.extend_from_slice(item);
        self.count += 1;
    }
}

/// What every `response` object of one answer shares.
struct Shell<'a> {
    id: &'a str,
    model: &'a str,
    created: i64,
    req: &'a Value,
}

impl Shell<'_> {
    /// The object of `response.created` and `response.in_progress`.
    fn lifecycle(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.str("id", self.id).str("object", "response");
        json(o.key("created_at"), &self.created);
        o.str("status", "in_progress").str("model", self.model).raw("output", b"[]");
        o.close();
    }

    /// The terminal object: the whole `Response`, the request's settings echoed.
    fn terminal(
        &self,
        out: &mut Vec<u8>,
        state: &str,
        status: &Status,
        items: &[u8],
        usage_: Option<&Value>,
    ) {
        let req = self.req;
        let echo = |o: &mut Obj, key: &str, default: &[u8]| {
            match &req[key] {
                Value::Null => o.raw(key, default),
                v => o.value(key, v),
            };
        };
        let mut o = Obj::open(out);
        o.str("id", self.id).str("object", "response");
        json(o.key("created_at"), &self.created);
        o.str("status", state);
        match status {
            Status::Failed { code, message } => {
                Obj::open(o.key("error")).str("code", code).str("message", message).close();
            }
            Status::Completed | Status::Incomplete(_) => {
                o.raw("error", b"null");
            }
        }
        match status {
            Status::Incomplete(reason) => {
                Obj::open(o.key("incomplete_details")).str("reason", reason).close()
            }
            Status::Completed | Status::Failed { .. } => {
                o.raw("incomplete_details", b"null");
            }
        }
        echo(&mut o, "instructions", b"null");
        echo(&mut o, "max_output_tokens", b"null");
        o.str("model", self.model);
        let list = o.key("output");
        list.push(b'[');
        list.extend_from_slice(items);
        list.push(b']');
        echo(&mut o, "parallel_tool_calls", b"true");
        o.raw("previous_response_id", b"null");
        echo(&mut o, "reasoning", b"null");
        o.raw("store", b"false");
        echo(&mut o, "temperature", b"null");
        echo(&mut o, "text", br#"{"format":{"type":"text"}}"#);
        echo(&mut o, "tool_choice", br#""auto""#);
        echo(&mut o, "tools", b"[]");
        echo(&mut o, "top_p", b"null");
        match usage_ {
            Some(u) => usage(u, o.key("usage")),
            None => {
                o.raw("usage", b"null");
            }
        }
        echo(&mut o, "metadata", b"{}");
        o.close();
    }
}

/// Every output item of the answer, in order; each done item is added to `output`.
fn write_items(answer: &Answer, map: &ToolMap, ids: &mut Ids, out: &mut Writer, output: &mut Output) {
    let choice = &answer.choice;
    if !choice.reasoning.pieces.is_empty() {
        let item = reasoning(&choice.reasoning.pieces, &ids.next("rs"), output.count, out);
        output.push(&item);
    }
    if !choice.content.pieces.is_empty() || !choice.refusal.pieces.is_empty() {
        let item = message(answer, &ids.next("msg"), output.count, out);
        output.push(&item);
    }
    let mut call_ids: Vec<String> = Vec::new();
    for call in choice.tool_calls.values() {
        let call_id = match &call.id {
            Some(id) if !call_ids.contains(id) => id.clone(),
            _ => ids.next("call"),
        };
        call_ids.push(call_id.clone());
        let index = output.count;
        let item = match map.get(&call.name) {
            Some(tool) if tool.kind == ToolKind::ToolSearch => {
                let head = Head {
                    kind: "tool_search_call",
                    id: ids.next("tsc"),
                    call_id: &call_id,
                    namespace: None,
                };
                search_call(&head, &call.arguments.concat(), index, out)
            }
            Some(tool) if tool.kind == ToolKind::Custom => {
                let input = custom_input(&call.arguments.concat());
                let namespace = tool.namespace.as_deref();
                let head =
                    Head { kind: "custom_tool_call", id: ids.next("ctc"), call_id: &call_id, namespace };
                custom_call(&head, &tool.name, &input, index, out)
            }
            tool => {
                let (namespace, name) = match tool {
                    Some(t) => (t.namespace.as_deref(), t.name.as_str()),
                    None => (None, call.name.as_str()), // a name the model made up: Codex answers it
                };
                let head = Head { kind: "function_call", id: ids.next("fc"), call_id: &call_id, namespace };
                function_call(&head, name, &call.arguments, index, out)
            }
        };
        output.push(&item);
    }
}

/// The `{"item_id", "output_index"[, "content_index"]}` members of an item's events.
fn at<'o, 'b>(e: &'o mut Obj<'b>, id: &str, index: usize, content: Option<usize>) -> &'o mut Obj<'b> {
    e.str("item_id", id).num("output_index", index as u64);
    if let Some(c) = content {
        e.num("content_index", c as u64);
    }
    e
}

fn reasoning(pieces: &[String], id: &str, index: usize, out: &mut Writer) -> Vec<u8> {
    let item = |out: &mut Vec<u8>, text: Option<&str>| {
        let mut o = Obj::open(out);
        o.str("id", id).str("type", "reasoning").raw("summary", b"[]");
        let list = o.key("content");
        match text {
            None => list.extend_from_slice(b"[]"),
            Some(text) => {
                list.push(b'[');
                Obj::open(list).str("type", "reasoning_text").str("text", text).close();
                list.push(b']');
            }
        }
        o.close();
    };
    out.event("response.output_item.added", |e| {
        e.num("output_index", index as u64);
        item(e.key("item"), None);
    });
    for delta in pieces {
        out.event("response.reasoning_text.delta", |e| {
            at(e, id, index, Some(0)).str("delta", delta);
        });
    }
    let text = pieces.concat();
    out.event("response.reasoning_text.done", |e| {
        at(e, id, index, Some(0)).str("text", &text);
    });
    let mut done = Vec::with_capacity(text.len() + 128);
    item(&mut done, Some(&text));
    out.event("response.output_item.done", |e| {
        e.num("output_index", index as u64).raw("item", &done);
    });
    done
}

/// One content part of a message: `output_text` or `refusal`.
#[derive(Clone, Copy)]
struct Part {
    kind: &'static str,
    field: &'static str,
    delta: &'static str,
    done: &'static str,
}

const TEXT: Part = Part {
    kind: "output_text",
    field: "text",
    delta: "response.output_text.delta",
    done: "response.output_text.done",
};
const REFUSAL: Part = Part {
    kind: "refusal",
    field: "refusal",
    delta: "response.refusal.delta",
    done: "response.refusal.done",
};

impl Part {
    fn write(self, out: &mut Vec<u8>, text: &str) {
        let mut o = Obj::open(out);
        o.str("type", self.kind).str(self.field, text);
        if self.kind == TEXT.kind {
            o.raw("annotations", b"[]").raw("logprobs", b"[]");
        }
        o.close();
    }
}

/// The assistant message: an `output_text` part, then a `refusal` part, each with its events.
fn message(answer: &Answer, id: &str, index: usize, out: &mut Writer) -> Vec<u8> {
    let item = |out: &mut Vec<u8>, status: &str, parts: &[u8]| {
        let mut o = Obj::open(out);
        o.str("id", id).str("type", "message").str("status", status).str("role", "assistant");
        let list = o.key("content");
        list.push(b'[');
        list.extend_from_slice(parts);
        list.push(b']');
        o.close();
    };
    out.event("response.output_item.added", |e| {
        e.num("output_index", index as u64);
        item(e.key("item"), "in_progress", b"");
    });
    let mut parts: Vec<u8> = Vec::new();
    let mut count = 0;
    for (pieces, part) in [(&answer.choice.content.pieces, TEXT), (&answer.choice.refusal.pieces, REFUSAL)] {
        if pieces.is_empty() {
            continue;
        }
        out.event("response.content_part.added", |e| {
            at(e, id, index, Some(count));
            part.write(e.key("part"), "");
        });
        for delta in pieces {
            out.event(part.delta, |e| {
                at(e, id, index, Some(count)).str("delta", delta);
            });
        }
        let text = pieces.concat();
        out.event(part.done, |e| {
            at(e, id, index, Some(count)).str(part.field, &text);
        });
        let mut written = Vec::with_capacity(text.len() + 64);
        part.write(&mut written, &text);
        out.event("response.content_part.done", |e| {
            at(e, id, index, Some(count)).raw("part", &written);
        });
        if count > 0 {
            parts.push(b',');
        }
        parts.extend_from_slice(&written);
        count += 1;
    }
    let mut done = Vec::with_capacity(parts.len() + 128);
    item(&mut done, "completed", &parts);
    out.event("response.output_item.done", |e| {
        e.num("output_index", index as u64).raw("item", &done);
    });
    done
}

/// What a call item starts with: `type`, `id`, `call_id` (and `"execution": "client"` for
/// a tool search); its `namespace`, if any, ends it.
struct Head<'a> {
    kind: &'static str,
    id: String,
    call_id: &'a str,
    namespace: Option<&'a str>,
}

impl Head<'_> {
    /// The item: the head, `status`, then `rest`, then the namespace.
    fn item(&self, out: &mut Vec<u8>, status: &str, rest: impl FnOnce(&mut Obj)) {
        let mut o = Obj::open(out);
        o.str("type", self.kind).str("id", &self.id).str("call_id", self.call_id);
        if self.kind == "tool_search_call" {
            o.str("execution", "client");
        }
        o.str("status", status);
        rest(&mut o);
        if let Some(ns) = self.namespace {
            o.str("namespace", ns);
        }
        o.close();
    }

    /// `output_item.added` with the item in progress.
    fn added(&self, index: usize, out: &mut Writer, rest: impl FnOnce(&mut Obj)) {
        out.event("response.output_item.added", |e| {
            e.num("output_index", index as u64);
            self.item(e.key("item"), "in_progress", rest);
        });
    }

    /// `output_item.done` with the completed item, which is returned.
    fn done(&self, index: usize, out: &mut Writer, rest: impl FnOnce(&mut Obj)) -> Vec<u8> {
        let mut done = Vec::with_capacity(256);
        self.item(&mut done, "completed", rest);
        out.event("response.output_item.done", |e| {
            e.num("output_index", index as u64).raw("item", &done);
        });
        done
    }
}

fn function_call(head: &Head, name: &str, pieces: &[String], index: usize, out: &mut Writer) -> Vec<u8> {
    head.added(index, out, |o| {
        o.str("name", name).str("arguments", "");
    });
    for delta in pieces {
        out.event("response.function_call_arguments.delta", |e| {
            at(e, &head.id, index, None).str("delta", delta);
        });
    }
    let arguments = pieces.concat();
    out.event("response.function_call_arguments.done", |e| {
        at(e, &head.id, index, None).str("name", name).str("arguments", &arguments);
    });
    head.done(index, out, |o| {
        o.str("name", name).str("arguments", &arguments);
    })
}

fn custom_call(head: &Head, name: &str, input: &str, index: usize, out: &mut Writer) -> Vec<u8> {
    head.added(index, out, |o| {
        o.str("name", name).str("input", "");
    });
    if !input.is_empty() {
        out.event("response.custom_tool_call_input.delta", |e| {
            at(e, &head.id, index, None).str("delta", input);
        });
    }
    out.event("response.custom_tool_call_input.done", |e| {
        at(e, &head.id, index, None).str("input", input);
    });
    head.done(index, out, |o| {
        o.str("name", name).str("input", input);
    })
}

/// Codex's client-run tool search: `arguments` is a JSON object here, and the item has no
/// delta events (Codex reads the done item).
fn search_call(head: &Head, arguments: &str, index: usize, out: &mut Writer) -> Vec<u8> {
    let arguments = match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({"query": arguments}),
    };
    head.added(index, out, |o| {
        o.value("arguments", &arguments);
    });
    head.done(index, out, |o| {
        o.value("arguments", &arguments);
    })
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
            let item = &got.response()["output"][0];
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
            assert_eq!(got.response()["status"], expected_status(expected), "{chunk}");
        }
        let filtered =
            r#"data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"content_filter"}]}"#;
        let got =
            to_responses(&[filtered.as_bytes(), b"\n\n"], &ToolMap::default(), &json!({}), &mut Ids::new(1));
        assert!(matches!(&got.status, Status::Failed { code, .. } if code == "invalid_prompt"));
        assert_eq!(got.response()["output"], json!([]));
    }

    fn expected_status(s: &Status) -> &'static str {
        match s {
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed { .. } => "failed",
        }
    }
}
