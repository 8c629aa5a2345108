//! A Chat Completions request body → the Responses request body that asks for the same, for an
//! upstream that speaks only the Responses API (`UPSTREAM_API=responses-only`).
//!
//! Pure: the client's object in, the Responses body's bytes out. Every member of a chat request
//! is named in `rule`: mapped, copied, or refused. A member that asks for something the
//! Responses API cannot give (`n` > 1, `logprobs`, `stop`, `seed`, penalties, audio...) is a
//! 400 naming it (`Refusal`), never dropped: dropping it would change the answer. A member
//! whose value asks for nothing (`n: 1`, `logprobs: false`, `null`) is accepted.
//!
//! Messages become input items one at a time: the leading system/developer messages become
//! `instructions`, later ones stay in place as developer/system messages; an assistant's
//! `tool_calls` become `function_call` (or `custom_tool_call`) items with the tool call id as
//! `call_id`, and a tool message the matching `*_output` item. The reasoning items the proxy
//! kept from the turn that made those calls (`reasoning.rs`), asked for through `recall`, are
//! put back in front of that turn's items: a chat client cannot carry them. The request
//! always asks for `store: false` (unless the client set `store`) and, when reasoning is kept,
//! `include: ["reasoning.encrypted_content"]`, so that the items can be sent back.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::object::Object;

/// What the translation is asked to add beyond the client's request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Ask for the reasoning items' encrypted content (the proxy keeps them).
    pub encrypted: bool,
    /// Ask for reasoning summaries (`reasoning.summary: "auto"`), for `reasoning_content`.
    pub summaries: bool,
}

/// A member the Responses API has no form for: the 400's `param` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub param: String,
    pub reason: String,
}

fn refuse(param: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal { param: param.into(), reason: reason.into() }
}

/// The translated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The Responses body (always `stream: true`).
    pub body: Vec<u8>,
    /// Assistant tool-call turns whose reasoning was put back, and those without.
    pub recalled: usize,
    pub missed: usize,
}

/// What the client asked about the answer, read from the chat request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// `stop`: the Responses API has none, so the proxy cuts the complete answer's text at
    /// the first of them itself (`chat_answer`).
    pub stop: Vec<String>,
}

/// What each member of a chat request becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Read by the translation itself.
    Handled,
    /// Copied under this Responses name.
    Copy(&'static str),
    /// No Responses form: refused unless its value asks for nothing.
    Refuse(&'static str),
}

/// The members of a chat request (OpenAI's `chat.completions.create`), and their fate.
fn rule(key: &str) -> Option<Rule> {
    use Rule::*;
    Some(match key {
        "model"
        | "messages"
        | "stream"
        | "stream_options"
        | "tools"
        | "tool_choice"
        | "response_format"
        | "max_tokens"
        | "max_completion_tokens"
        | "reasoning_effort"
        | "verbosity"
        | "store"
        | "n"
        | "stop"
        | "modalities" => Handled,
        "temperature" => Copy("temperature"),
        "top_p" => Copy("top_p"),
        "parallel_tool_calls" => Copy("parallel_tool_calls"),
        "user" => Copy("user"),
        "prompt_cache_key" => Copy("prompt_cache_key"),
        "prompt_cache_retention" => Copy("prompt_cache_retention"),
        "safety_identifier" => Copy("safety_identifier"),
        "service_tier" => Copy("service_tier"),
        "metadata" => Copy("metadata"),
        "logprobs" | "top_logprobs" => Refuse("log probabilities are not translated from the Responses API"),
        "logit_bias" => Refuse("the Responses API has no logit bias"),
        "seed" => Refuse("the Responses API has no seed"),
        "frequency_penalty" | "presence_penalty" => Refuse("the Responses API has no penalties"),
        "audio" => Refuse("audio output is not translated from the Responses API"),
        "prediction" => Refuse("the Responses API has no predicted outputs"),
        "web_search_options" => Refuse("hosted web search is not translated; declare a function tool"),
        "functions" | "function_call" => Refuse("the deprecated functions are not translated; use `tools`"),
        _ => return None,
    })
}

/// Whether a refused member's value asks for nothing (`web_search_options: {}` asks for a
/// search: only its `null` asks nothing).
fn asks_nothing(key: &str, value: &Value) -> bool {
    if key == "web_search_options" {
        return value.is_null();
    }
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(_) | Value::Bool(true) => false,
    }
}

/// What the client asked about the answer's form.
pub fn asked(req: &Object) -> Asked {
    Asked { include_usage: include_usage(req), stop: stop_sequences(req).unwrap_or_default() }
}

/// Whether the chat request asks for a last chunk with the usage
/// (`stream_options.include_usage: true`).
pub fn include_usage(req: &Object) -> bool {
    req.value("stream_options").is_some_and(|o| o["include_usage"] == true)
}

/// The chat request's `stop`: null, a string, or an array of at most 4 strings (OpenAI's
/// limits); empty strings stop nothing and are left out.
fn stop_sequences(req: &Object) -> Result<Vec<String>, Refusal> {
    let wrong = || refuse("stop", "must be a string or an array of at most 4 strings");
    let sequences = match req.value("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) if items.len() <= 4 => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(wrong))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong()),
    };
    Ok(sequences.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Translate `req` (a chat request object) for a Responses upstream, with `model` instead of
/// the client's if given. `recall` is asked, once per assistant turn with tool calls, for the
/// reasoning items kept for those call ids (each item one JSON text).
pub fn responses_body(
    req: &Object,
    model: Option<&str>,
    options: Options,
    recall: &mut dyn FnMut(&[&str]) -> Option<Vec<String>>,
) -> Result<Translated, Refusal> {
    // Small members go here; `messages` and `tools` are read an item at a time below.
    let mut out = Map::new();
    for key in req.keys() {
        let value = || req.value(key).unwrap_or(Value::Null);
        match rule(key) {
            Some(Rule::Handled) => {}
            Some(Rule::Copy(name)) => {
                let value = value();
                if !value.is_null() {
                    out.insert(name.into(), value);
                }
            }
            Some(Rule::Refuse(reason)) if !asks_nothing(key, &value()) => return Err(refuse(key, reason)),
            Some(Rule::Refuse(_)) => {}
            None => return Err(refuse(key, "it has no Responses API form")),
        }
    }
    if let Some(n) = req.value("n").filter(|n| !n.is_null() && n.as_f64() != Some(1.0)) {
        return Err(refuse("n", format!("the Responses API gives one answer per request, not {n}")));
    }
    stop_sequences(req)?;
    if let Some(m) = req.value("modalities").filter(|m| !m.is_null() && *m != json!(["text"])) {
        return Err(refuse("modalities", format!("only text output is translated, not {m}")));
    }
    let max = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|k| req.value(k).filter(|v| !v.is_null()));
    if let Some(max) = max {
        out.insert("max_output_tokens".into(), max);
    }
    let mut reasoning = Map::new();
    if let Some(effort) = req.value("reasoning_effort").filter(|e| !e.is_null()) {
        reasoning.insert("effort".into(), effort);
    }
    if options.summaries {
        reasoning.insert("summary".into(), json!("auto"));
    }
    if !reasoning.is_empty() {
        out.insert("reasoning".into(), Value::Object(reasoning));
    }
    let mut text = Map::new();
    if let Some(format) = req.value("response_format").filter(|f| !f.is_null()) {
        text.insert("format".into(), text_format(&format)?);
    }
    if let Some(verbosity) = req.value("verbosity").filter(|v| !v.is_null()) {
        text.insert("verbosity".into(), verbosity);
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }
    let tools = tools_of(req)?;
    if let Some(choice) = req.value("tool_choice").filter(|c| !c.is_null()) {
        out.insert("tool_choice".into(), tool_choice(&choice)?);
    }
    let store = req.value("store").filter(|s| !s.is_null()).unwrap_or(json!(false));
    out.insert("store".into(), store);
    if options.encrypted {
        out.insert("include".into(), json!(["reasoning.encrypted_content"]));
    }
    let messages = req.items("messages").ok_or_else(|| refuse("messages", "must be an array of messages"))?;
    let (instructions, leading) = leading_system(&messages)?;
    let mut body = Vec::with_capacity(req.len() + tools.len() + 256);
    body.extend_from_slice(b"{\"model\":");
    match model {
        Some(m) => write(&mut body, &json!(m)),
        None => body.extend_from_slice(req.get("model").unwrap_or(b"null")),
    }
    if let Some(text) = instructions {
        body.extend_from_slice(b",\"instructions\":");
        write(&mut body, &json!(text));
    }
    body.extend_from_slice(b",\"input\":[");
    let mut input = Input { body, count: 0, recalled: 0, missed: 0 };
    let mut kinds = HashMap::new();
    for (i, raw) in messages.iter().enumerate().skip(leading) {
        let message = parse(raw, i)?;
        add_message(&message, i, &mut kinds, recall, &mut input)?;
    }
    let Input { mut body, recalled, missed, .. } = input;
    body.push(b']');
    if !tools.is_empty() {
        body.extend_from_slice(b",\"tools\":");
        body.extend_from_slice(&tools);
    }
    for (key, value) in &out {
        body.push(b',');
        write(&mut body, &json!(key));
        body.push(b':');
        write(&mut body, value);
    }
    body.extend_from_slice(b",\"stream\":true}");
    Ok(Translated { body, recalled, missed })
}

fn write(buf: &mut Vec<u8>, value: &Value) {
    serde_json::to_writer(buf, value).unwrap_or_default();
}

fn parse(raw: &RawValue, i: usize) -> Result<Value, Refusal> {
    serde_json::from_str(raw.get())
        .map_err(|e| refuse(format!("messages[{i}]"), format!("cannot be read: {e}")))
}

/// The body being written, inside its `input` array: the items so far, and how the
/// reasoning store answered.
struct Input {
    body: Vec<u8>,
    count: usize,
    recalled: usize,
    missed: usize,
}

impl Input {
    fn push(&mut self, item: Value) {
        self.next();
        write(&mut self.body, &item);
    }

    /// An item kept as JSON text.
    fn push_raw(&mut self, item: &str) {
        self.next();
        self.body.extend_from_slice(item.as_bytes());
    }

    fn next(&mut self) {
        if self.count > 0 {
            self.body.push(b',');
        }
        self.count += 1;
    }
}

/// The text of the system and developer messages before any other, joined, and how many
/// there were.
fn leading_system(messages: &[&RawValue]) -> Result<(Option<String>, usize), Refusal> {
    let mut texts = Vec::new();
    for (i, raw) in messages.iter().enumerate() {
        let message = parse(raw, i)?;
        if !matches!(message["role"].as_str(), Some("system" | "developer")) {
            return Ok((join(texts), i));
        }
        texts.push(plain_text(&message["content"], i)?);
    }
    Ok((join(texts), messages.len()))
}

fn join(texts: Vec<String>) -> Option<String> {
    Some(texts.join("\n\n")).filter(|t| !t.is_empty())
}

/// The text of a system, developer or tool message's content (a string or text parts).
fn plain_text(content: &Value, i: usize) -> Result<String, Refusal> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(refuse(
                            format!("messages[{i}].content[{j}]"),
                            "only text parts are allowed here",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Value::Bool(_) | Value::Number(_) | Value::Object(_) => {
            Err(refuse(format!("messages[{i}].content"), "must be a string or an array of parts"))
        }
    }
}

/// A tool call's kind, by its id, for the output that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Function,
    Custom,
}

fn add_message(
    m: &Value,
    i: usize,
    kinds: &mut HashMap<String, CallKind>,
    recall: &mut dyn FnMut(&[&str]) -> Option<Vec<String>>,
    out: &mut Input,
) -> Result<(), Refusal> {
    let role = m["role"].as_str().unwrap_or("");
    match role {
        "system" | "developer" => {
            let text = plain_text(&m["content"], i)?;
            out.push(json!({"type": "message", "role": role, "content": text}));
        }
        "user" => {
            out.push(json!({"type": "message", "role": "user", "content": user_parts(&m["content"], i)?}))
        }
        "assistant" => assistant(m, i, kinds, recall, out)?,
        "tool" => {
            let id = m["tool_call_id"].as_str().ok_or_else(|| {
                refuse(format!("messages[{i}].tool_call_id"), "a tool message needs its call's id")
            })?;
            let output = plain_text(&m["content"], i)?;
            let kind = match kinds.get(id) {
                Some(CallKind::Custom) => "custom_tool_call_output",
                Some(CallKind::Function) | None => "function_call_output",
            };
            out.push(json!({"type": kind, "call_id": id, "output": output}));
        }
        "function" => {
            return Err(refuse(
                format!("messages[{i}].role"),
                "the deprecated `function` role is not translated; use `tool`",
            ))
        }
        other => return Err(refuse(format!("messages[{i}].role"), format!("unknown role {other:?}"))),
    }
    Ok(())
}

/// An assistant message: its kept reasoning (if it made tool calls), its text, its calls.
fn assistant(
    m: &Value,
    i: usize,
    kinds: &mut HashMap<String, CallKind>,
    recall: &mut dyn FnMut(&[&str]) -> Option<Vec<String>>,
    out: &mut Input,
) -> Result<(), Refusal> {
    let calls = m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default();
    let ids: Vec<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    if !ids.is_empty() {
        match recall(&ids) {
            Some(items) => {
                out.recalled += 1;
                items.iter().for_each(|item| out.push_raw(item));
            }
            None => out.missed += 1,
        }
    }
    let text = match &m["content"] {
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str(), part["refusal"].as_str()) {
                    (Some("text"), Some(t), _) | (Some("refusal"), _, Some(t)) => text.push_str(t),
                    _ => {
                        return Err(refuse(
                            format!("messages[{i}].content[{j}]"),
                            "only text and refusal parts are allowed here",
                        ))
                    }
                }
            }
            text
        }
        other => plain_text(other, i)?,
    };
    let text = if text.is_empty() { m["refusal"].as_str().unwrap_or("").to_string() } else { text };
    if !text.is_empty() {
        out.push(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}));
    }
    for (j, call) in calls.iter().enumerate() {
        let id = call["id"].as_str().unwrap_or("");
        let param = || format!("messages[{i}].tool_calls[{j}]");
        match call["type"].as_str() {
            Some("function") | None => {
                kinds.insert(id.into(), CallKind::Function);
                let name = call["function"]["name"]
                    .as_str()
                    .ok_or_else(|| refuse(param(), "a function call needs a name"))?;
                let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                out.push(
                    json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}),
                );
            }
            Some("custom") => {
                kinds.insert(id.into(), CallKind::Custom);
                let name = call["custom"]["name"]
                    .as_str()
                    .ok_or_else(|| refuse(param(), "a custom call needs a name"))?;
                let input = call["custom"]["input"].as_str().unwrap_or("");
                out.push(json!({"type": "custom_tool_call", "call_id": id, "name": name, "input": input}));
            }
            Some(other) => return Err(refuse(param(), format!("unknown tool call type {other:?}"))),
        }
    }
    Ok(())
}

/// A user message's content as Responses input parts.
fn user_parts(content: &Value, i: usize) -> Result<Value, Refusal> {
    let Value::Array(parts) = content else {
        return Ok(json!([{"type": "input_text", "text": plain_text(content, i)?}]));
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        let item = match part["type"].as_str() {
            Some("text") => json!({"type": "input_text", "text": part["text"]}),
            Some("image_url") => {
                let image = &part["image_url"];
                let url = image
                    .as_str()
                    .or_else(|| image["url"].as_str())
                    .ok_or_else(|| refuse(param(), "an image needs a url"))?;
                let detail = image["detail"].as_str().unwrap_or("auto");
                json!({"type": "input_image", "image_url": url, "detail": detail})
            }
            Some("file") => {
                let mut file = Map::new();
                file.insert("type".into(), json!("input_file"));
                for key in ["file_id", "file_data", "filename"] {
                    if let Some(v) = part["file"].get(key).filter(|v| !v.is_null()) {
                        file.insert(key.into(), v.clone());
                    }
                }
                Value::Object(file)
            }
            Some("input_audio") => {
                return Err(refuse(param(), "audio input is not translated to the Responses API"))
            }
            other => return Err(refuse(param(), format!("unknown content part type {other:?}"))),
        };
        out.push(item);
    }
    Ok(Value::Array(out))
}

/// Chat tools → the Responses `tools` array's JSON (the function's members move up one
/// level), read and written one tool at a time; empty without tools.
fn tools_of(req: &Object) -> Result<Vec<u8>, Refusal> {
    if req.get("tools").is_none_or(|raw| raw == b"null") {
        return Ok(Vec::new());
    }
    let list = req.items("tools").ok_or_else(|| refuse("tools", "must be an array"))?;
    let mut out = vec![b'['];
    for (j, raw) in list.iter().enumerate() {
        let tool: Value =
            serde_json::from_str(raw.get()).map_err(|e| refuse(format!("tools[{j}]"), e.to_string()))?;
        let (kind, inner) = match tool["type"].as_str() {
            Some("function") => ("function", &tool["function"]),
            Some("custom") => ("custom", &tool["custom"]),
            other => {
                return Err(refuse(
                    format!("tools[{j}].type"),
                    format!("{other:?} has no Responses form here"),
                ))
            }
        };
        let Value::Object(inner) = inner else {
            return Err(refuse(format!("tools[{j}].{kind}"), "must be an object"));
        };
        let mut t = Map::new();
        t.insert("type".into(), json!(kind));
        for (key, value) in inner {
            t.insert(key.clone(), value.clone());
        }
        if kind == "function" && !t.contains_key("parameters") {
            t.insert("parameters".into(), json!({"type": "object", "properties": {}}));
        }
        if j > 0 {
            out.push(b',');
        }
        write(&mut out, &Value::Object(t));
    }
    out.push(b']');
    Ok(out)
}

/// Chat `tool_choice` → Responses `tool_choice`.
fn tool_choice(choice: &Value) -> Result<Value, Refusal> {
    let named = |kind: &str, inner: &Value| -> Result<Value, Refusal> {
        let name =
            inner["name"].as_str().ok_or_else(|| refuse("tool_choice", "a named tool needs its name"))?;
        Ok(json!({"type": kind, "name": name}))
    };
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => Ok(choice.clone()),
        Value::Object(_) => match choice["type"].as_str() {
            Some("function") => named("function", &choice["function"]),
            Some("custom") => named("custom", &choice["custom"]),
            Some("allowed_tools") => {
                let allowed = &choice["allowed_tools"];
                let tools = allowed["tools"].as_array().map(Vec::as_slice).unwrap_or_default();
                let tools: Result<Vec<Value>, Refusal> = tools
                    .iter()
                    .map(|t| match t["type"].as_str() {
                        Some("custom") => named("custom", &t["custom"]),
                        _ => named("function", &t["function"]),
                    })
                    .collect();
                Ok(
                    json!({"type": "allowed_tools", "mode": allowed["mode"].as_str().unwrap_or("auto"), "tools": tools?}),
                )
            }
            other => Err(refuse("tool_choice", format!("type {other:?} has no Responses form"))),
        },
        other => Err(refuse("tool_choice", format!("{other} has no Responses form"))),
    }
}

/// Chat `response_format` → Responses `text.format` (the schema's members move up one level).
fn text_format(format: &Value) -> Result<Value, Refusal> {
    match format["type"].as_str() {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let Value::Object(schema) = &format["json_schema"] else {
                return Err(refuse("response_format.json_schema", "must be an object"));
            };
            let mut f = Map::new();
            f.insert("type".into(), json!("json_schema"));
            for (key, value) in schema {
                f.insert(key.clone(), value.clone());
            }
            Ok(Value::Object(f))
        }
        other => Err(refuse("response_format.type", format!("{other:?} has no Responses form"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The translation of `req` with no reasoning kept, as JSON, or the refused `param`.
    fn translate(req: Value, options: Options) -> Result<Value, String> {
        let object = Object::from_value(&req).unwrap();
        responses_body(&object, None, options, &mut |_| None)
            .map(|t| serde_json::from_slice(&t.body).unwrap())
            .map_err(|r| r.param)
    }

    const NONE: Options = Options { encrypted: false, summaries: false };

    #[test]
    fn members() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let user =
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]);
        // (extra request members, expected members of the Responses body beside model/input/store/stream)
        let cases: Vec<(Value, Value)> = vec![
            (json!({}), json!({})),
            (json!({"max_tokens": 50}), json!({"max_output_tokens": 50})),
            (json!({"max_completion_tokens": 70, "max_tokens": 50}), json!({"max_output_tokens": 70})),
            (
                json!({"temperature": 0.2, "top_p": 0.9, "user": "u1"}),
                json!({"temperature": 0.2, "top_p": 0.9, "user": "u1"}),
            ),
            (
                json!({"parallel_tool_calls": false, "prompt_cache_key": "k", "safety_identifier": "s"}),
                json!({"parallel_tool_calls": false, "prompt_cache_key": "k", "safety_identifier": "s"}),
            ),
            (
                json!({"metadata": {"a": "b"}, "service_tier": "flex"}),
                json!({"metadata": {"a": "b"}, "service_tier": "flex"}),
            ),
            (
                json!({"reasoning_effort": "high", "verbosity": "low"}),
                json!({"reasoning": {"effort": "high"}, "text": {"verbosity": "low"}}),
            ),
            (
                json!({"response_format": {"type": "json_object"}}),
                json!({"text": {"format": {"type": "json_object"}}}),
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}}}),
                json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}}}),
            ),
            (
                json!({"n": 1, "logprobs": false, "seed": null, "stop": null, "frequency_penalty": 0, "modalities": ["text"]}),
                json!({}),
            ),
            (json!({"stream": false, "stream_options": {"include_usage": true}}), json!({})),
            // the proxy applies `stop` to the complete answer: nothing of it goes upstream
            (json!({"stop": ["\n", "END"]}), json!({})),
            (json!({"stop": "END"}), json!({})),
            (json!({"store": true}), json!({"store": true})),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}},
                              {"type": "custom", "custom": {"name": "patch", "format": {"type": "text"}}}],
                    "tool_choice": {"type": "function", "function": {"name": "f"}}}),
                json!({"tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true},
                              {"type": "custom", "name": "patch", "format": {"type": "text"}}],
                    "tool_choice": {"type": "function", "name": "f"}}),
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "g"}}], "tool_choice": "required"}),
                json!({"tools": [{"type": "function", "name": "g", "parameters": {"type": "object", "properties": {}}}], "tool_choice": "required"}),
            ),
            (
                json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}}),
                json!({"tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}}),
            ),
        ];
        for (extra, expected) in cases {
            let mut req = json!({"model": "m", "messages": msgs});
            for (k, v) in extra.as_object().unwrap() {
                req[k] = v.clone();
            }
            let mut want = json!({"model": "m", "input": user, "store": false, "stream": true});
            for (k, v) in expected.as_object().unwrap() {
                want[k] = v.clone();
            }
            assert_eq!(translate(req, NONE), Ok(want), "{extra}");
        }
    }

    #[test]
    fn refused_members_are_named() {
        let cases = [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": 7}), "stop"),
            (json!({"stop": ["a", 1]}), "stop"),
            (json!({"seed": 7}), "seed"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"frequency_penalty": -1}), "frequency_penalty"),
            (json!({"audio": {"voice": "alloy"}}), "audio"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"prediction": {"type": "content", "content": "x"}}), "prediction"),
            (json!({"web_search_options": {}}), "web_search_options"),
            (json!({"web_search_options": {"search_context_size": "low"}}), "web_search_options"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"top_k": 40}), "top_k"),
            (json!({"response_format": {"type": "grammar"}}), "response_format.type"),
            (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
            (json!({"tools": {"type": "function"}}), "tools"),
            (json!({"tools": [{"type": "function", "function": "f"}]}), "tools[0].function"),
            (json!({"tool_choice": {"type": "file_search"}}), "tool_choice"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
                "messages[0].content[0]",
            ),
            (json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
            (json!({"messages": "hi"}), "messages"),
        ];
        for (extra, param) in cases {
            let mut req = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                req[k] = v.clone();
            }
            assert_eq!(translate(req, NONE), Err(param.to_string()), "{extra}");
        }
    }

    #[test]
    fn messages_become_items() {
        let req = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{\"d\":\".\"}"}},
                {"id": "call_2", "type": "custom", "custom": {"name": "patch", "input": "*** Begin"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "done"}]},
            {"role": "assistant", "content": "Two files."},
            {"role": "developer", "content": "Now summarise."}
        ]});
        let want = json!({"model": "gpt-5", "instructions": "Be brief.\n\nUse tools.", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
            {"type": "rs", "id": "rs_1"},
            {"type": "function_call", "call_id": "call_1", "name": "ls", "arguments": "{\"d\":\".\"}"},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "patch", "input": "*** Begin"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "done"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Two files.", "annotations": []}]},
            {"type": "message", "role": "developer", "content": "Now summarise."}
        ], "store": false, "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"}, "stream": true});
        let object = Object::from_value(&req).unwrap();
        let mut asked = Vec::new();
        let mut recall = |ids: &[&str]| {
            asked.push(ids.join(","));
            Some(vec![r#"{"type":"rs","id":"rs_1"}"#.to_string()])
        };
        let options = Options { encrypted: true, summaries: true };
        let t = responses_body(&object, Some("gpt-5"), options, &mut recall).unwrap();
        let got: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(got, want);
        assert_eq!(asked, ["call_1,call_2"]);
        assert_eq!((t.recalled, t.missed), (1, 0));
        let t = responses_body(&object, None, NONE, &mut |_| None).unwrap();
        assert_eq!((t.recalled, t.missed), (0, 1));
    }

    #[test]
    fn include_usage_is_read() {
        let cases = [
            (json!({"stream_options": {"include_usage": true}}), true),
            (json!({"stream_options": {"include_usage": false}}), false),
            (json!({"stream_options": null}), false),
            (json!({}), false),
        ];
        for (req, include_usage) in cases {
            assert_eq!(asked(&Object::from_value(&req).unwrap()).include_usage, include_usage, "{req}");
        }
    }

    #[test]
    fn stop_sequences_are_read() {
        let cases = [
            (json!({}), vec![]),
            (json!({"stop": null}), vec![]),
            (json!({"stop": "END"}), vec!["END"]),
            (json!({"stop": ["\n", "", "Observation:"]}), vec!["\n", "Observation:"]),
            (json!({"stop": []}), vec![]),
        ];
        for (req, stop) in cases {
            assert_eq!(asked(&Object::from_value(&req).unwrap()).stop, stop, "{req}");
        }
    }
}
