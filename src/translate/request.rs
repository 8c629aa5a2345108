//! A Responses API request body → the Chat Completions request body that asks for the same.
//!
//! Pure: JSON in, JSON out, plus the `ToolMap` that `events.rs` needs to name the calls the
//! model makes. What cannot be expressed for a chat server is dropped with one debug line
//! (hosted tools, reasoning items, server-side state fields), never failed, except what would
//! silently change the answer (`previous_response_id`, `conversation`, `prompt`): a 400.
//!
//! System and developer messages, wherever they appear, are gathered in order into ONE system
//! message at the start, after `instructions`. Codex sends several developer messages and
//! adds more later in a conversation; many chat templates (Mistral, Gemma, some Qwen and Llama
//! templates in llama.cpp and vLLM) reject a system message that is not the first message,
//! and some reject two. Their text is kept whole and in order; only their position moves.

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::tools::{ToolKind, ToolMap};
use crate::object::{self, Object};

/// Tool types with no chat equivalent: executed by the Responses server itself.
const HOSTED: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "image_generation",
    "code_interpreter",
    "computer_use_preview",
    "computer_use",
    "local_shell",
    "mcp",
    "tool_search",
];

/// Fields that would change the answer if dropped: the chat server has no stored state.
const STATEFUL: &[&str] = &["previous_response_id", "conversation", "prompt"];

/// Translate `req` (a Responses request object) into a chat request and the tool names used.
/// `Err` is a message for a 400 `invalid_request_error`. `Value`s in and out, for tests and
/// small requests; the proxy calls `chat_body`.
pub fn to_chat(req: &Value) -> Result<(Value, ToolMap), String> {
    let req = Object::from_value(req).map_err(|_| "the request body must be a JSON object".to_string())?;
    let (chat, map) = chat_body(&req, None, false)?;
    let chat = serde_json::from_slice(&chat).map_err(|e| e.to_string())?;
    Ok((chat, map))
}

/// `to_chat` for a request parsed at its top level (`object.rs`), written straight into the
/// chat body's bytes (with `model` instead of the client's, if given; with its
/// `prompt_cache_key` if `cache_key`: OpenAI's and Azure's chat completions take it). Input items and tools
/// are read one at a time, so a translation holds the two bodies, the tool names and one
/// item, never a `Value` of the conversation: one pass over the tools for their chat names
/// (the messages name calls by them), one over `input` for the system text (it leads the
/// messages), then the messages and the tools are written.
pub fn chat_body(req: &Object, model: Option<&str>, cache_key: bool) -> Result<(Vec<u8>, ToolMap), String> {
    for field in STATEFUL {
        if req.get(field).is_some_and(|raw| raw != b"null") {
            return Err(format!(
                "`{field}` is not supported: the upstream speaks Chat Completions and keeps no state; send the whole conversation in `input`"
            ));
        }
    }
    let input = Input::of(req)?;
    let mut map = ToolMap::default();
    let count = all_tools(req, &input, &mut map, &mut List::counting())?;
    let mut system: Vec<String> = Vec::new();
    if let Some(Value::String(text)) = req.value("instructions").filter(|t| t.as_str() != Some("")) {
        system.push(text);
    }
    for item in input.items() {
        system_text(&parse(item)?, &mut system)?;
    }
    let mut out = Members::new(req.len() + 1024);
    match model {
        Some(model) => out.value("model", &json!(model)),
        None => out.raw("model", req.get("model").unwrap_or(b"null")),
    }
    out.with("messages", |buf| messages(&input, system, &map, buf))?;
    if count > 0 {
        out.with("tools", |buf| {
            let mut list = List::new(buf);
            all_tools(req, &input, &mut map, &mut list)?;
            list.finish();
            Ok::<(), String>(())
        })?;
        if let Some(choice) = req.value("tool_choice").and_then(|c| tool_choice(&c, &map)) {
            out.value("tool_choice", &choice);
        }
        copy(req, "parallel_tool_calls", &mut out, "parallel_tool_calls");
    }
    copy(req, "temperature", &mut out, "temperature");
    copy(req, "top_p", &mut out, "top_p");
    copy(req, "max_output_tokens", &mut out, "max_tokens");
    copy(req, "user", &mut out, "user");
    if cache_key {
        copy(req, "prompt_cache_key", &mut out, "prompt_cache_key");
    }
    if let Some(reasoning) = req.value("reasoning") {
        if let Some(effort) = reasoning.get("effort").filter(|e| !e.is_null()) {
            out.value("reasoning_effort", effort);
        }
    }
    if let Some(format) = req.value("text").and_then(|t| response_format(&t["format"])) {
        out.value("response_format", &format);
    }
    out.raw("stream", b"true");
    out.raw("stream_options", br#"{"include_usage":true}"#);
    Ok((out.finish(), map))
}

/// Every tool of the request, registered in `map` and written to `out` (in the same order
/// each time); how many were written.
fn all_tools(req: &Object, input: &Input, map: &mut ToolMap, out: &mut List) -> Result<usize, String> {
    for tool in req.items("tools").into_iter().flatten() {
        add_tool(&parse(tool)?, None, map, out);
    }
    // Tools Codex made available during the conversation: by an `additional_tools` item, or
    // as the result of a tool search the model ran.
    for item in input.items().filter(|i| offers_tools(i)) {
        let item = parse(item)?;
        if item["type"] == "additional_tools" || is_client_search(&item, "tool_search_output") {
            add_tools(item.get("tools"), map, out);
        }
    }
    Ok(out.count)
}

/// The request's `input`: absent, a text, or items (kept raw).
enum Input<'r> {
    None,
    Text(String),
    Items(Vec<&'r RawValue>),
}

impl<'r> Input<'r> {
    fn of(req: &'r Object) -> Result<Input<'r>, String> {
        let wrong = || "`input` must be a string or an array of items".to_string();
        match req.get("input") {
            None | Some(b"null") => Ok(Input::None),
            Some(raw) if raw.first() == Some(&b'[') => req.items("input").map(Input::Items).ok_or_else(wrong),
            Some(raw) => match serde_json::from_slice(raw) {
                Ok(Value::String(text)) => Ok(Input::Text(text)),
                _ => Err(wrong()),
            },
        }
    }

    fn items(&self) -> impl Iterator<Item = &'r RawValue> + '_ {
        let items = match self {
            Input::Items(items) => items.as_slice(),
            Input::None | Input::Text(_) => &[],
        };
        items.iter().copied()
    }
}

/// One item of `input` or `tools`, parsed (it was checked to be JSON with the body; only
/// serde_json's nesting limit can refuse it).
fn parse(item: &RawValue) -> Result<Value, String> {
    serde_json::from_str(item.get()).map_err(|e| format!("an item of the request cannot be read: {e}"))
}

/// Whether an item may carry tools, by its `type` alone (read without parsing the item).
fn offers_tools(item: &RawValue) -> bool {
    let kind = object::string_member(item.get().as_bytes(), "type");
    matches!(kind.as_deref(), Some("additional_tools" | "tool_search_output"))
}

fn copy(from: &Object, key: &str, to: &mut Members, as_key: &str) {
    if let Some(raw) = from.get(key).filter(|raw| *raw != b"null") {
        to.raw(as_key, raw);
    }
}

/// A JSON object written member by member.
struct Members {
    buf: Vec<u8>,
}

impl Members {
    fn new(capacity: usize) -> Members {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(b'{');
        Members { buf }
    }

    fn with<R>(&mut self, key: &str, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, key).unwrap_or_default();
        self.buf.push(b':');
        f(&mut self.buf)
    }

    fn raw(&mut self, key: &str, value: &[u8]) {
        self.with(key, |buf| buf.extend_from_slice(value));
    }

    fn value(&mut self, key: &str, value: &Value) {
        self.with(key, |buf| serde_json::to_writer(buf, value).unwrap_or_default());
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// A JSON array written item by item (or only counted).
struct List<'b> {
    buf: Option<&'b mut Vec<u8>>,
    count: usize,
}

impl<'b> List<'b> {
    fn new(buf: &'b mut Vec<u8>) -> List<'b> {
        buf.push(b'[');
        List { buf: Some(buf), count: 0 }
    }

    fn counting() -> List<'b> {
        List { buf: None, count: 0 }
    }

    fn push(&mut self, value: &Value) {
        if let Some(buf) = self.buf.as_deref_mut() {
            if self.count > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut *buf, value).unwrap_or_default();
        }
        self.count += 1;
    }

    fn finish(self) {
        if let Some(buf) = self.buf {
            buf.push(b']');
        }
    }
}

// ---- tools ----------------------------------------------------------------------------------

fn add_tools(tools: Option<&Value>, map: &mut ToolMap, out: &mut List) {
    for tool in tools.and_then(Value::as_array).into_iter().flatten() {
        add_tool(tool, None, map, out);
    }
}

fn add_tool(tool: &Value, namespace: Option<&str>, map: &mut ToolMap, out: &mut List) {
    let name = tool["name"].as_str().unwrap_or("");
    match tool["type"].as_str().unwrap_or("") {
        "function" if !name.is_empty() => {
            let chat = map.add(namespace, name, ToolKind::Function);
            let parameters = match &tool["parameters"] {
                Value::Null => json!({"type": "object", "properties": {}}),
                p => p.clone(),
            };
            out.push(&function(&chat, &tool["description"], parameters, tool["strict"] == true));
        }
        "custom" if !name.is_empty() => {
            let chat = map.add(namespace, name, ToolKind::Custom);
            let description = custom_description(tool);
            let parameters = json!({
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The raw input, not JSON-encoded beyond this string."}},
                "required": ["input"],
                "additionalProperties": false,
            });
            out.push(&function(&chat, &json!(description), parameters, false));
        }
        "namespace" if !name.is_empty() => {
            for inner in tool["tools"].as_array().into_iter().flatten() {
                add_tool(inner, Some(name), map, out);
            }
        }
        // Codex runs this search itself: the model asks, Codex answers with the tools it found.
        "tool_search" if tool["execution"] == "client" => {
            let chat = map.add(namespace, "tool_search", ToolKind::ToolSearch);
            out.push(&function(&chat, &tool["description"], tool["parameters"].clone(), false));
        }
        kind if HOSTED.contains(&kind) => {
            crate::debug!("translate: dropped the hosted `{kind}` tool: a chat server cannot run it")
        }
        kind => crate::debug!("translate: dropped a tool of unknown type `{kind}`"),
    }
}

fn function(name: &str, description: &Value, parameters: Value, strict: bool) -> Value {
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    if let Some(d) = description.as_str().filter(|d| !d.is_empty()) {
        f.insert("description".into(), json!(d));
    }
    f.insert("parameters".into(), parameters);
    if strict {
        f.insert("strict".into(), json!(true));
    }
    json!({"type": "function", "function": f})
}

/// A custom tool's description with its input format spelled out for a function-calling model.
fn custom_description(tool: &Value) -> String {
    let mut text = tool["description"].as_str().unwrap_or("").to_string();
    let format = &tool["format"];
    if format["type"] == "grammar" {
        let syntax = format["syntax"].as_str().unwrap_or("lark");
        let definition = format["definition"].as_str().unwrap_or("");
        text.push_str(&format!(
            "\n\nPut the whole input, exactly as this {syntax} grammar defines it, in the `input` string:\n```\n{definition}\n```"
        ));
    } else {
        text.push_str("\n\nPut the whole free-form input in the `input` string.");
    }
    text
}

fn tool_choice(choice: &Value, map: &ToolMap) -> Option<Value> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(choice.clone()),
        Value::Object(o) if matches!(o.get("type").and_then(Value::as_str), Some("function" | "custom")) => {
            let name = o.get("name").and_then(Value::as_str)?;
            let namespace = o.get("namespace").and_then(Value::as_str);
            Some(json!({"type": "function", "function": {"name": map.chat_name(namespace, name)}}))
        }
        Value::Object(o) if o.get("mode").is_some() => o.get("mode").cloned(), // allowed_tools: its mode
        other => {
            crate::debug!("translate: dropped tool_choice {other}: no chat equivalent");
            None
        }
    }
}

fn response_format(format: &Value) -> Option<Value> {
    match format["type"].as_str()? {
        "json_schema" => {
            let mut schema = Map::new();
            for key in ["name", "description", "schema", "strict"] {
                if !format[key].is_null() {
                    schema.insert(key.into(), format[key].clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

// ---- messages -------------------------------------------------------------------------------

/// The chat messages, written into `buf`: one leading system message (see the module doc),
/// then the conversation.
fn messages(input: &Input, system: Vec<String>, map: &ToolMap, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut out = Messages { list: List::new(buf), last: None };
    if !system.is_empty() {
        out.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    drop(system);
    match input {
        Input::None => {}
        Input::Text(text) => out.push(json!({"role": "user", "content": text})),
        Input::Items(items) => {
            for item in items {
                add_item(&parse(item)?, map, &mut out)?;
            }
        }
    }
    out.finish();
    Ok(())
}

/// The messages being written: each is written once the next one starts, because a tool call
/// joins the assistant message just before it.
struct Messages<'b> {
    list: List<'b>,
    last: Option<Value>,
}

impl Messages<'_> {
    fn push(&mut self, message: Value) {
        if let Some(last) = self.last.replace(message) {
            self.list.push(&last);
        }
    }

    fn last_mut(&mut self) -> Option<&mut Value> {
        self.last.as_mut()
    }

    fn finish(mut self) {
        if let Some(last) = self.last.take() {
            self.list.push(&last);
        }
        self.list.finish();
    }
}

/// What kind of input item this is (a bare `role` is a message).
fn kind(item: &Value) -> &str {
    item["type"].as_str().unwrap_or(if item.get("role").is_some() { "message" } else { "" })
}

/// The text of a system or developer message, gathered for the leading system message.
fn system_text(item: &Value, system: &mut Vec<String>) -> Result<(), String> {
    if kind(item) == "message" && matches!(item["role"].as_str(), Some("system" | "developer")) {
        system.push(text_of(&parts(&item["content"])?));
    }
    Ok(())
}

fn add_item(item: &Value, map: &ToolMap, out: &mut Messages) -> Result<(), String> {
    match kind(item) {
        "message" => message(item, out),
        "function_call" => {
            let name = map.chat_name(item["namespace"].as_str(), item["name"].as_str().unwrap_or(""));
            let arguments = item["arguments"].as_str().unwrap_or("{}");
            push_call(out, call_id(item), &name, arguments);
            Ok(())
        }
        "custom_tool_call" => {
            let name = map.chat_name(item["namespace"].as_str(), item["name"].as_str().unwrap_or(""));
            let arguments = json!({"input": item["input"].as_str().unwrap_or("")}).to_string();
            push_call(out, call_id(item), &name, &arguments);
            Ok(())
        }
        "tool_search_call" if is_client_search(item, "tool_search_call") => {
            let name = map.chat_name(None, "tool_search");
            let arguments = match &item["arguments"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            push_call(out, call_id(item), &name, &arguments);
            Ok(())
        }
        "tool_search_output" if is_client_search(item, "tool_search_output") => {
            let content = found_tools(&item["tools"], map);
            out.push(json!({"role": "tool", "tool_call_id": call_id(item), "content": content}));
            Ok(())
        }
        "function_call_output" | "custom_tool_call_output" => {
            let content = output_text(&item["output"]);
            out.push(json!({"role": "tool", "tool_call_id": call_id(item), "content": content}));
            Ok(())
        }
        "additional_tools" => Ok(()), // taken as tools by `to_chat`
        "reasoning" => Ok(()),        // the model's own earlier thoughts: never sent as text
        other => {
            crate::debug!("translate: dropped a `{other}` input item: no chat equivalent");
            Ok(())
        }
    }
}

/// A tool search item of `kind` that the client ran (a server-run search is a hosted tool).
fn is_client_search(item: &Value, kind: &str) -> bool {
    item["type"] == kind && item["execution"] != "server"
}

/// The `tool` message answering a tool search: the chat names of the tools it made available
/// (`to_chat` offers them as tools), so the model can call them next.
fn found_tools(tools: &Value, map: &ToolMap) -> String {
    let mut names = Vec::new();
    for tool in tools.as_array().into_iter().flatten() {
        let name = tool["name"].as_str().unwrap_or("");
        match tool["type"].as_str() {
            Some("namespace") => {
                for inner in tool["tools"].as_array().into_iter().flatten() {
                    names.push(map.chat_name(Some(name), inner["name"].as_str().unwrap_or("")));
                }
            }
            _ if !name.is_empty() => names.push(map.chat_name(None, name)),
            _ => {}
        }
    }
    if names.is_empty() {
        "No tools found.".to_string()
    } else {
        format!("Tools now available: {}.", names.join(", "))
    }
}

fn call_id(item: &Value) -> &str {
    item["call_id"].as_str().or_else(|| item["id"].as_str()).unwrap_or("")
}

/// Append a tool call to the assistant message just before (text or calls), or start one.
fn push_call(out: &mut Messages, id: &str, name: &str, arguments: &str) {
    let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}});
    if let Some(last) = out.last_mut().filter(|m| m["role"] == "assistant") {
        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => {
                last["tool_calls"] = json!([call]);
            }
        }
        return;
    }
    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

fn message(item: &Value, out: &mut Messages) -> Result<(), String> {
    let role = item["role"].as_str().unwrap_or("user");
    let parts = parts(&item["content"])?;
    match role {
        "system" | "developer" => {} // gathered first, by `system_text`
        "assistant" => {
            let text = text_of(&parts);
            // A message after tool calls is a new assistant turn, not part of the calls' message.
            out.push(json!({"role": "assistant", "content": text}));
        }
        "user" => {
            let content = if parts.iter().all(|p| p["type"] == "text") {
                json!(text_of(&parts))
            } else {
                Value::Array(parts)
            };
            out.push(json!({"role": "user", "content": content}));
        }
        other => return Err(format!("unknown message role `{other}`")),
    }
    Ok(())
}

/// Chat content parts of a Responses message content (a string or an array of parts).
fn parts(content: &Value) -> Result<Vec<Value>, String> {
    let items = match content {
        Value::String(text) => return Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        _ => return Err("message `content` must be a string or an array of parts".into()),
    };
    let mut out = Vec::new();
    for part in items {
        match part["type"].as_str().unwrap_or("") {
            "input_text" | "output_text" | "text" | "refusal" => {
                let text = part["text"].as_str().or_else(|| part["refusal"].as_str()).unwrap_or("");
                out.push(json!({"type": "text", "text": text}));
            }
            "input_image" => {
                let url = part["image_url"].as_str().or_else(|| part["file_id"].as_str()).unwrap_or("");
                let mut image = json!({"url": url});
                if let Some(detail) = part["detail"].as_str() {
                    image["detail"] = json!(detail);
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            "input_file" => {
                let mut file = Map::new();
                for key in ["file_data", "file_id", "filename"] {
                    if !part[key].is_null() {
                        file.insert(key.into(), part[key].clone());
                    }
                }
                out.push(json!({"type": "file", "file": file}));
            }
            other => crate::debug!("translate: dropped a `{other}` content part: no chat equivalent"),
        }
    }
    Ok(out)
}

/// The text of text parts, one part per line; other parts have none.
fn text_of(parts: &[Value]) -> String {
    let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    texts.join("\n")
}

/// A tool output as chat `tool` content: a string, or the text of an array of content items.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let texts: Vec<&str> = items
                .iter()
                .filter_map(|i| {
                    if i["type"] == "input_image" {
                        crate::debug!(
                            "translate: dropped an image from a tool output: chat tool messages carry text"
                        );
                    }
                    i["text"].as_str()
                })
                .collect();
            texts.join("\n")
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_chat` of `req`, compared with `expected` (both as JSON text).
    fn check(req: &str, expected: &str) {
        let req: Value = serde_json::from_str(req).unwrap();
        let (got, _) = to_chat(&req).unwrap();
        let mut expected: Value = serde_json::from_str(expected).unwrap();
        expected["stream"] = json!(true);
        expected["stream_options"] = json!({"include_usage": true});
        assert_eq!(got, expected, "\n got: {got}\nwant: {expected}");
    }

    /// `prompt_cache_key` travels only to a chat upstream that takes it.
    #[test]
    fn cache_key_kept_when_taken() {
        let req =
            Object::parse(br#"{"model":"m","input":"q","prompt_cache_key":"thread-1"}"#.to_vec()).unwrap();
        for (cache_key, expected) in [(true, Some(json!("thread-1"))), (false, None)] {
            let (body, _) = chat_body(&req, None, cache_key).unwrap();
            let chat: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(chat.get("prompt_cache_key"), expected.as_ref(), "cache_key {cache_key}");
        }
    }

    #[test]
    fn messages_and_parts() {
        let cases: &[(&str, &str)] = &[
            (r#"{"model":"m","input":"hi"}"#, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
            (
                r#"{"model":"m","instructions":"be brief","input":[
                    {"type":"message","role":"developer","content":[{"type":"input_text","text":"dev 1"}]},
                    {"role":"user","content":"q1"},
                    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"a1"}]},
                    {"type":"message","role":"system","content":"late system"},
                    {"type":"message","role":"user","content":[{"type":"input_text","text":"line 1"},{"type":"input_text","text":"line 2"}]}]}"#,
                r#"{"model":"m","messages":[
                    {"role":"system","content":"be brief\n\ndev 1\n\nlate system"},
                    {"role":"user","content":"q1"},
                    {"role":"assistant","content":"a1"},
                    {"role":"user","content":"line 1\nline 2"}]}"#,
            ),
            (
                r#"{"model":"m","input":[{"type":"message","role":"user","content":[
                    {"type":"input_text","text":"look"},
                    {"type":"input_image","image_url":"data:image/png;base64,AA","detail":"high"},
                    {"type":"input_image","image_url":"https://x/y.png"}]}]}"#,
                r#"{"model":"m","messages":[{"role":"user","content":[
                    {"type":"text","text":"look"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,AA","detail":"high"}},
                    {"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
            ),
            (
                r#"{"model":"m","input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"xyz"},
                    {"type":"web_search_call","id":"ws_1"},{"role":"user","content":"q"}]}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#,
            ),
        ];
        for (req, expected) in cases {
            check(req, expected);
        }
    }

    #[test]
    fn history_of_tool_calls() {
        let cases: &[(&str, &str)] = &[(
            // parallel calls after text: one assistant message; outputs as tool messages
            r#"{"model":"m","input":[{"role":"user","content":"q"},
                    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"let me look"}]},
                    {"type":"reasoning","summary":[]},
                    {"type":"function_call","call_id":"c1","name":"shell","arguments":"{\"cmd\":\"ls\"}"},
                    {"type":"function_call","call_id":"c2","name":"sleep","namespace":"clock","arguments":"{}"},
                    {"type":"function_call_output","call_id":"c1","output":"a.txt"},
                    {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"slept"},{"type":"input_image","image_url":"x"},{"type":"input_text","text":"ok"}]},
                    {"type":"custom_tool_call","call_id":"c3","name":"apply_patch","input":"*** Begin Patch\n*** End Patch"},
                    {"type":"custom_tool_call_output","call_id":"c3","output":"Done"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"q"},
                    {"role":"assistant","content":"let me look","tool_calls":[
                        {"id":"c1","type":"function","function":{"name":"shell","arguments":"{\"cmd\":\"ls\"}"}},
                        {"id":"c2","type":"function","function":{"name":"clock__sleep","arguments":"{}"}}]},
                    {"role":"tool","tool_call_id":"c1","content":"a.txt"},
                    {"role":"tool","tool_call_id":"c2","content":"slept\nok"},
                    {"role":"assistant","content":null,"tool_calls":[
                        {"id":"c3","type":"function","function":{"name":"apply_patch","arguments":"{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}}]},
                    {"role":"tool","tool_call_id":"c3","content":"Done"}]}"#,
        )];
        for (req, expected) in cases {
            check(req, expected);
        }
    }

    #[test]
    fn tools_and_options() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"model":"m","input":"q","store":false,"include":["reasoning.encrypted_content"],"prompt_cache_key":"k",
                    "text":{"verbosity":"low"},"reasoning":{"effort":"high","summary":"auto"},"temperature":0.2,"top_p":0.9,
                    "max_output_tokens":100,"parallel_tool_calls":true,"tool_choice":"auto","client_metadata":{"a":"b"}}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"temperature":0.2,"top_p":0.9,"max_tokens":100,"reasoning_effort":"high"}"#,
            ),
            (
                r#"{"model":"m","input":"q","reasoning":{"effort":null},"tools":[{"type":"web_search"},{"type":"tool_search","execution":"server"}],"tool_choice":"required"}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#,
            ),
            (
                r#"{"model":"m","input":"q","parallel_tool_calls":false,"tool_choice":{"type":"custom","name":"apply_patch"},"tools":[
                    {"type":"function","name":"shell","description":"run","strict":false,"parameters":{"type":"object","properties":{"cmd":{"type":"string"}}}},
                    {"type":"function","name":"noargs"},
                    {"type":"custom","name":"apply_patch","description":"Edit files.","format":{"type":"grammar","syntax":"lark","definition":"start: x"}},
                    {"type":"custom","name":"free"},
                    {"type":"namespace","name":"mcp__files__","description":"MCP","tools":[{"type":"function","name":"read","parameters":{"type":"object"},"strict":true}]},
                    {"type":"image_generation"}]}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"tools":[
                    {"type":"function","function":{"name":"shell","description":"run","parameters":{"type":"object","properties":{"cmd":{"type":"string"}}}}},
                    {"type":"function","function":{"name":"noargs","parameters":{"type":"object","properties":{}}}},
                    {"type":"function","function":{"name":"apply_patch","description":"Edit files.\n\nPut the whole input, exactly as this lark grammar defines it, in the `input` string:\n```\nstart: x\n```","parameters":
                        {"type":"object","properties":{"input":{"type":"string","description":"The raw input, not JSON-encoded beyond this string."}},"required":["input"],"additionalProperties":false}}},
                    {"type":"function","function":{"name":"free","description":"\n\nPut the whole free-form input in the `input` string.","parameters":
                        {"type":"object","properties":{"input":{"type":"string","description":"The raw input, not JSON-encoded beyond this string."}},"required":["input"],"additionalProperties":false}}},
                    {"type":"function","function":{"name":"mcp__files__read","parameters":{"type":"object"},"strict":true}}],
                    "tool_choice":{"type":"function","function":{"name":"apply_patch"}},"parallel_tool_calls":false}"#,
            ),
            (
                // Codex's "lite" shape: tools in an additional_tools input item, Codex's own in `functions`
                r#"{"model":"m","tool_choice":"auto","input":[{"type":"additional_tools","role":"developer","tools":[
                    {"type":"namespace","name":"functions","description":"","tools":[{"type":"function","name":"wait","parameters":{"type":"object"}}]},
                    {"type":"namespace","name":"clock","description":"time","tools":[{"type":"function","name":"sleep","parameters":{"type":"object"}}]}]},
                    {"role":"user","content":"q"}]}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"tools":[
                    {"type":"function","function":{"name":"wait","parameters":{"type":"object"}}},
                    {"type":"function","function":{"name":"clock__sleep","parameters":{"type":"object"}}}],"tool_choice":"auto"}"#,
            ),
            (
                r#"{"model":"m","input":"q","text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"},"strict":true}}}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"},"strict":true}}}"#,
            ),
            (
                r#"{"model":"m","input":"q","text":{"format":{"type":"text"}}}"#,
                r#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#,
            ),
        ];
        for (req, expected) in cases {
            check(req, expected);
        }
    }

    /// Codex 0.169 defers MCP tools behind its client-run `tool_search` for the models it knows:
    /// the search is a function, its call and output are history, the tools it found are tools.
    #[test]
    fn client_tool_search() {
        let search = r#"{"type":"tool_search","execution":"client","description":"Find tools.",
            "parameters":{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}}"#;
        let found = r#"[{"type":"namespace","name":"mcp__everything","description":"MCP server",
            "tools":[{"type":"function","name":"echo","description":"Echo back","parameters":{"type":"object"}}]}]"#;
        let search_fn = r#"{"type":"function","function":{"name":"tool_search","description":"Find tools.",
            "parameters":{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}}}"#;
        let cases: Vec<(String, String)> = vec![
            (
                format!(r#"{{"model":"m","input":"q","tools":[{search}]}}"#),
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"q"}}],"tools":[{search_fn}]}}"#
                ),
            ),
            (
                format!(
                    r#"{{"model":"m","tools":[{search}],"input":[{{"role":"user","content":"q"}},
                    {{"type":"tool_search_call","call_id":"s1","execution":"client","status":"completed","arguments":{{"query":"echo","limit":8}}}},
                    {{"type":"tool_search_output","call_id":"s1","execution":"client","status":"completed","tools":{found}}},
                    {{"type":"tool_search_call","call_id":"s2","execution":"client","arguments":{{"query":"nothing"}}}},
                    {{"type":"tool_search_output","call_id":"s2","execution":"client","tools":[]}},
                    {{"type":"tool_search_call","call_id":"s3","execution":"server","arguments":{{"query":"hosted"}}}},
                    {{"type":"tool_search_output","call_id":"s3","execution":"server","tools":{found}}}]}}"#
                ),
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"q"}},
                    {{"role":"assistant","content":null,"tool_calls":[{{"id":"s1","type":"function","function":{{"name":"tool_search","arguments":"{{\"query\":\"echo\",\"limit\":8}}"}}}}]}},
                    {{"role":"tool","tool_call_id":"s1","content":"Tools now available: mcp__everything__echo."}},
                    {{"role":"assistant","content":null,"tool_calls":[{{"id":"s2","type":"function","function":{{"name":"tool_search","arguments":"{{\"query\":\"nothing\"}}"}}}}]}},
                    {{"role":"tool","tool_call_id":"s2","content":"No tools found."}}],
                    "tools":[{search_fn},
                    {{"type":"function","function":{{"name":"mcp__everything__echo","description":"Echo back","parameters":{{"type":"object"}}}}}}]}}"#
                ),
            ),
        ];
        for (req, expected) in &cases {
            check(req, expected);
        }
        let (_, map) = to_chat(&serde_json::from_str(&cases[1].0).unwrap()).unwrap();
        assert_eq!(map.get("tool_search").map(|t| t.kind), Some(ToolKind::ToolSearch));
        let echo = map.get("mcp__everything__echo").unwrap();
        assert_eq!((echo.namespace.as_deref(), echo.name.as_str()), (Some("mcp__everything"), "echo"));
    }

    #[test]
    fn tool_map_names_calls_back() {
        let req = json!({"model":"m","input":"q","tools":[
            {"type":"custom","name":"apply_patch"},
            {"type":"namespace","name":"mcp__srv__","tools":[{"type":"function","name":"echo"}]}]});
        let (_, map) = to_chat(&req).unwrap();
        let patch = map.get("apply_patch").unwrap();
        assert_eq!((patch.namespace.as_deref(), patch.kind), (None, ToolKind::Custom));
        let echo = map.get("mcp__srv__echo").unwrap();
        assert_eq!((echo.namespace.as_deref(), echo.name.as_str()), (Some("mcp__srv__"), "echo"));
    }

    #[test]
    fn client_errors() {
        let cases = [
            json!([1]),
            json!({"model":"m","input":"q","previous_response_id":"resp_1"}),
            json!({"model":"m","input":"q","conversation":"conv_1"}),
            json!({"model":"m","input":7}),
            json!({"model":"m","input":[{"type":"message","role":"wizard","content":"x"}]}),
            json!({"model":"m","input":[{"type":"message","role":"user","content":7}]}),
        ];
        for req in cases {
            assert!(to_chat(&req).is_err(), "{req}");
        }
        assert!(to_chat(&json!({"model":"m","input":"q","previous_response_id":null})).is_ok());
    }
}
