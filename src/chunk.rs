//! One chat chunk (the `data` of a Chat Completions stream event) read into the fields the
//! fold uses, and judged on the way: either understood or not.
//!
//! The parse validates the whole chunk but keeps only the named fields, skipping the rest
//! unallocated (Azure's content-filter results alone are most of a chunk's bytes). Shapes the
//! real servers send are decoded as they mean them: `content` as a list of parts (Mistral and
//! others: text parts joined, `thinking` parts read as reasoning), tool-call `arguments` as a
//! JSON object (serialised), a lone UTF-16 surrogate escape (`"\ud83d"`, which serde_json
//! refuses in a string) as U+FFFD, counted in `repaired` so that the caller can say so. A
//! field the fold reads holding anything else (`content: 7`, `finish_reason: {}`, a choice
//! that is not an object) is an error: the chunk is malformed, never read as empty. Fields it
//! does not read (`id`, `usage`, unknown keys) are kept as given or skipped, never judged.
//! It does not fold chunks together (`fold.rs`) and does no I/O.

use std::fmt;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

/// The fields of a chunk that the fold reads.
#[derive(Debug, Default, PartialEq)]
pub struct Chunk {
    /// `type` is `"keepalive"`: a ping, no part of the answer.
    pub keepalive: bool,
    /// `id`, `created`, `model`, `system_fingerprint`, `service_tier`, as given, when not null.
    pub meta: Vec<(&'static str, Value)>,
    pub usage: Option<Value>,
    pub prompt_filter_results: Option<Value>,
    /// `error`, when present and not null.
    pub error: Option<Value>,
    pub choices: Vec<Choice>,
    /// How many lone surrogate escapes were read as U+FFFD.
    pub repaired: usize,
}

/// One entry of `choices`.
#[derive(Debug, Default, PartialEq)]
pub struct Choice {
    /// `index`, 0 when absent.
    pub index: u64,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
    pub delta: Delta,
}

/// A choice's `delta`.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub role: Option<String>,
    pub content: Option<String>,
    /// `reasoning_content`, `reasoning`, or the `thinking` parts of `content`.
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<CallDelta>,
    /// The legacy `function_call`.
    pub function_call: Option<CallDelta>,
}

/// One entry of `tool_calls` (or a legacy `function_call`): its pieces, as given.
#[derive(Debug, Default, PartialEq)]
pub struct CallDelta {
    pub index: Option<u64>,
    pub id: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    /// A string as given; a JSON object or array serialised.
    pub arguments: Option<String>,
}

/// What a parse (and a fold) keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Everything the answer says.
    Everything,
    /// What the rules need, every field still judged: the read-time check, which must not
    /// hold the answer twice (`meta`, `usage`, `prompt_filter_results` and `logprobs` are
    /// skipped, texts are not kept by the fold).
    Shape,
}

/// The chunk in `data`, or why it is not one: not JSON, not an object, or a field of a shape
/// that no server means (`[DONE]` is the fold's business, not a chunk).
pub fn parse(data: &[u8], keep: Keep) -> Result<Chunk, String> {
    let first = match parse_exact(data, keep) {
        Ok(chunk) => return Ok(chunk),
        Err(e) => e,
    };
    let (repaired, count) = repair_surrogates(data);
    if count == 0 {
        return Err(first.to_string());
    }
    let mut chunk = parse_exact(&repaired, keep).map_err(|e| e.to_string())?;
    chunk.repaired = count;
    Ok(chunk)
}

fn parse_exact(data: &[u8], keep: Keep) -> Result<Chunk, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let chunk = (&mut de).deserialize_map(ChunkVisitor(keep))?;
    de.end()?;
    Ok(chunk)
}

/// `data` with every `\uXXXX` escape of a UTF-16 surrogate that is not half of a pair
/// replaced by `\ufffd`, and how many were. A backslash only occurs in JSON inside a string,
/// as the start of an escape, so escapes are read in order without tracking strings.
fn repair_surrogates(data: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut count = 0;
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'\\' {
            out.push(data[i]);
            i += 1;
            continue;
        }
        let take = match unicode_escape(data, i) {
            Some(0xD800..=0xDBFF) if matches!(unicode_escape(data, i + 6), Some(0xDC00..=0xDFFF)) => 12,
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                count += 1;
                i += 6;
                continue;
            }
            Some(_) => 6,
            None => 2, // `\n`, `\\`... (or a broken escape, left for the parser to refuse)
        };
        let end = (i + take).min(data.len());
        out.extend_from_slice(&data[i..end]);
        i = end;
    }
    (out, count)
}

/// The code unit of a `\uXXXX` escape starting at `at`.
fn unicode_escape(data: &[u8], at: usize) -> Option<u16> {
    let escape = data.get(at..at + 6)?;
    let hex = escape.strip_prefix(b"\\u").filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
    u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// The keys read at each level; any other key is skipped.
const CHUNK: &[&str] = &[
    "type",
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
    "usage",
    "prompt_filter_results",
    "error",
    "choices",
];
/// The keys of `CHUNK` that the rules read.
const CHUNK_SHAPE: &[&str] = &["type", "error", "choices"];
const CHOICE: &[&str] = &["index", "finish_reason", "logprobs", "delta"];
const DELTA: &[&str] =
    &["role", "content", "reasoning_content", "reasoning", "refusal", "tool_calls", "function_call"];
const CALL: &[&str] = &["index", "id", "type", "function", "name", "arguments"];
const PART: &[&str] = &["type", "text", "thinking"];

/// An object's fields, each as one of the names in `keep` (or `None`: skip it).
fn fields<'de, M: MapAccess<'de>>(
    mut map: M,
    keep: &'static [&'static str],
    mut field: impl FnMut(&'static str, &mut M) -> Result<(), M::Error>,
) -> Result<(), M::Error> {
    while let Some(key) = map.next_key_seed(Key(keep))? {
        match key {
            Some(name) => field(name, &mut map)?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

struct ChunkVisitor(Keep);

impl<'de> Visitor<'de> for ChunkVisitor {
    type Value = Chunk;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat chunk object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Chunk, M::Error> {
        let mut chunk = Chunk::default();
        let keep = if self.0 == Keep::Everything { CHUNK } else { CHUNK_SHAPE };
        fields(map, keep, |name, map| {
            match name {
                "type" => chunk.keepalive = map.next_value::<Value>()? == "keepalive",
                "usage" => chunk.usage = map.next_value()?,
                "prompt_filter_results" => chunk.prompt_filter_results = map.next_value()?,
                "error" => chunk.error = map.next_value()?,
                "choices" => chunk.choices = map.next_value::<Option<Vec<Choice>>>()?.unwrap_or_default(),
                meta => {
                    if let Some(value) = map.next_value::<Option<Value>>()? {
                        chunk.meta.push((meta, value));
                    }
                }
            }
            Ok(())
        })?;
        Ok(chunk)
    }
}

impl<'de> Deserialize<'de> for Choice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ChoiceVisitor)
    }
}

struct ChoiceVisitor;

impl<'de> Visitor<'de> for ChoiceVisitor {
    type Value = Choice;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Choice, M::Error> {
        let mut choice = Choice::default();
        fields(map, CHOICE, |name, map| {
            match name {
                "index" => choice.index = map.next_value::<Option<Index>>()?.map_or(0, |i| i.0),
                "finish_reason" => choice.finish_reason = map.next_value()?,
                "logprobs" => choice.logprobs = map.next_value()?,
                _ => choice.delta = map.next_value::<Option<Delta>>()?.unwrap_or_default(),
            }
            Ok(())
        })?;
        Ok(choice)
    }
}

impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(DeltaVisitor)
    }
}

struct DeltaVisitor;

impl<'de> Visitor<'de> for DeltaVisitor {
    type Value = Delta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Delta, M::Error> {
        let mut delta = Delta::default();
        // Some servers send the same text under both names: `reasoning_content` wins.
        let (mut named, mut other, mut thinking) = (None, None, None);
        fields(map, DELTA, |name, map| {
            match name {
                "role" => delta.role = map.next_value()?,
                "content" => {
                    if let Some(content) = map.next_value::<Option<Content>>()? {
                        delta.content = Some(content.text);
                        thinking = content.thinking;
                    }
                }
                "reasoning_content" => named = map.next_value()?,
                "reasoning" => other = map.next_value()?,
                "refusal" => delta.refusal = map.next_value()?,
                "tool_calls" => {
                    delta.tool_calls = map.next_value::<Option<Vec<CallDelta>>>()?.unwrap_or_default()
                }
                _ => delta.function_call = map.next_value()?,
            }
            Ok(())
        })?;
        delta.reasoning = named.or(other);
        append(&mut delta.reasoning, thinking);
        Ok(delta)
    }
}

fn append(target: &mut Option<String>, text: Option<String>) {
    match (target.as_mut(), text) {
        (Some(t), Some(text)) => t.push_str(&text),
        (None, text) => *target = text,
        (Some(_), None) => {}
    }
}

impl<'de> Deserialize<'de> for CallDelta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CallVisitor)
    }
}

/// A tool call, or its `function` object (whose `name` and `arguments` are read into the same
/// `CallDelta`).
struct CallVisitor;

impl<'de> Visitor<'de> for CallVisitor {
    type Value = CallDelta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool call object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<CallDelta, M::Error> {
        let mut call = CallDelta::default();
        fields(map, CALL, |name, map| {
            match name {
                "index" => call.index = map.next_value::<Option<Index>>()?.map(|i| i.0),
                "id" => call.id = map.next_value()?,
                "type" => call.kind = map.next_value()?,
                "function" => {
                    if let Some(function) = map.next_value::<Option<CallDelta>>()? {
                        call.name = function.name;
                        call.arguments = function.arguments;
                    }
                }
                "name" => call.name = map.next_value()?,
                _ => call.arguments = map.next_value::<Option<Arguments>>()?.map(|a| a.0),
            }
            Ok(())
        })?;
        Ok(call)
    }
}

/// An `index`: a non-negative integer, or one written as a string of digits.
struct Index(u64);

impl<'de> Deserialize<'de> for Index {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IndexVisitor)
    }
}

struct IndexVisitor;

impl Visitor<'_> for IndexVisitor {
    type Value = Index;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an index")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Index, E> {
        Ok(Index(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Index, E> {
        v.parse().map(Index).map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Tool-call `arguments`: a string as given, a JSON object or array serialised.
struct Arguments(String);

impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Arguments(s)),
            v @ (Value::Object(_) | Value::Array(_)) => Ok(Arguments(v.to_string())),
            v @ (Value::Null | Value::Bool(_) | Value::Number(_)) => {
                Err(de::Error::custom(format!("tool-call arguments are {v}, not a string or an object")))
            }
        }
    }
}

/// A delta's `content`: a string, or a list of parts (`text` parts joined; the text parts of
/// `thinking` parts, in `thinking`).
#[derive(Default)]
struct Content {
    text: String,
    thinking: Option<String>,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of text parts")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content { text: v.to_string(), thinking: None })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
        Ok(Content { text: v, thinking: None })
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Content, S::Error> {
        let mut content = Content::default();
        while let Some(part) = seq.next_element::<Part>()? {
            match part {
                Part::Text(text) => content.text.push_str(&text),
                Part::Thinking(parts) => {
                    let text: String = parts.into_iter().map(|p| p.text).collect();
                    append(&mut content.thinking, Some(text));
                }
            }
        }
        Ok(content)
    }
}

/// One part of a `content` list.
enum Part {
    /// `{"type": "text", "text": "..."}` (`type` may be absent).
    Text(String),
    /// `{"type": "thinking", "thinking": [text parts]}` (Mistral's reasoning models).
    Thinking(Vec<TextPart>),
}

/// A part that must be text (inside `thinking`).
struct TextPart {
    text: String,
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PartVisitor)
    }
}

impl<'de> Deserialize<'de> for TextPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_map(PartVisitor)? {
            Part::Text(text) => Ok(TextPart { text }),
            Part::Thinking(_) => Err(de::Error::custom("a thinking part inside a thinking part")),
        }
    }
}

struct PartVisitor;

impl<'de> Visitor<'de> for PartVisitor {
    type Value = Part;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a content part object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Part, M::Error> {
        let (mut kind, mut text, mut thinking) = (None::<String>, None::<String>, None::<Vec<TextPart>>);
        fields(map, PART, |name, map| {
            match name {
                "type" => kind = map.next_value()?,
                "text" => text = map.next_value()?,
                _ => thinking = map.next_value()?,
            }
            Ok(())
        })?;
        match (kind.as_deref(), text, thinking) {
            (Some("text") | None, Some(text), _) => Ok(Part::Text(text)),
            (Some("thinking"), _, Some(parts)) => Ok(Part::Thinking(parts)),
            (kind, _, _) => Err(de::Error::custom(format!(
                "a content part of type {} is not text",
                kind.unwrap_or("(none)")
            ))),
        }
    }
}

/// A key as one of the listed names, or `None` for a key to skip (no allocation either way).
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<&'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().copied().find(|k| *k == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The chunk's content, reasoning and calls as one short line, or `malformed`.
    fn short(data: &str) -> String {
        match parse(data.as_bytes(), Keep::Everything) {
            Err(_) => "malformed".into(),
            Ok(chunk) => {
                let mut out = Vec::new();
                for c in &chunk.choices {
                    let d = &c.delta;
                    out.push(format!("#{}", c.index));
                    if let Some(t) = &d.content {
                        out.push(format!("content={t:?}"));
                    }
                    if let Some(t) = &d.reasoning {
                        out.push(format!("reasoning={t:?}"));
                    }
                    for call in &d.tool_calls {
                        out.push(format!("call {:?} {:?} {:?}", call.index, call.name, call.arguments));
                    }
                    if let Some(f) = &c.finish_reason {
                        out.push(format!("finish={f}"));
                    }
                }
                if chunk.repaired > 0 {
                    out.push(format!("repaired={}", chunk.repaired));
                }
                out.join(" ")
            }
        }
    }

    #[test]
    #[rustfmt::skip] // one row per case
    fn chunks_are_understood_or_malformed() {
        let cases: &[(&str, &str)] = &[
            (r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi","refusal":null},"logprobs":null,"finish_reason":null,"content_filter_results":{"hate":{"filtered":false}}}]}"#, r#"#0 content="Hi""#),
            (r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0}],"created":0,"model":""}"#, ""),
            (r#"{"choices":null,"usage":{"prompt_tokens":3}}"#, ""),
            (r#"{"c\u0068oices":[{"ind\u0065x":1,"delta":{"content":"x"}}]}"#, r#"#1 content="x""#),
            (r#"{"choices":[{"delta":null,"finish_reason":"stop"}]}"#, "#0 finish=stop"),
            (r#"{"choices":[{"index":"1","delta":{}}]}"#, "#1"),
            // content as a list of parts: text joined, thinking read as reasoning
            (r#"{"choices":[{"delta":{"content":[{"type":"text","text":"a"},{"text":"b"}]}}]}"#, r#"#0 content="ab""#),
            (r#"{"choices":[{"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":"hm"}]},{"type":"text","text":"ok"}]}}]}"#, r#"#0 content="ok" reasoning="hm""#),
            (r#"{"choices":[{"delta":{"reasoning_content":"a","reasoning":"a"}}]}"#, r#"#0 reasoning="a""#),
            (r#"{"choices":[{"delta":{"reasoning":"b"}}]}"#, r#"#0 reasoning="b""#),
            // arguments as an object: serialised
            (r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"x","function":{"name":"f","arguments":{"a":[1,"b"]}}}]}}]}"#, r#"#0 call Some(0) Some("f") Some("{\"a\":[1,\"b\"]}")"#),
            (r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#, r#"#0 call None None Some("{}")"#),
            // lone surrogates read as U+FFFD; pairs and escaped backslashes untouched
            (r#"{"choices":[{"delta":{"content":"half \ud83d"}}]}"#, "#0 content=\"half \u{fffd}\" repaired=1"),
            (r#"{"choices":[{"delta":{"content":"\udc00\ud83d\ude00\ud800x\\ud800"}}]}"#, "#0 content=\"\u{fffd}\u{1f600}\u{fffd}x\\\\ud800\" repaired=2"),
            (r#"{"choices":[{"delta":{"content":"\ud83d\n"}}]}"#, "#0 content=\"\u{fffd}\\n\" repaired=1"),
            (r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#, "#0 content=\"\u{1f600}\""),
            // malformed: shapes no server means
            (r#"{"choices":[{"delta":{"content":7}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"content":true}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"content":{"text":"x"}}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"content":[{"type":"image_url","image_url":{}}]}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"content":[{"type":"text"}]}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":5}}]}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"tool_calls":{"index":0}}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":"x"}]}"#, "malformed"),
            (r#"{"choices":[5]}"#, "malformed"),
            (r#"{"choices":{"index":0}}"#, "malformed"),
            (r#"{"choices":[{"index":-1}]}"#, "malformed"),
            (r#"{"choices":[{"finish_reason":{}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"refusal":1}}]}"#, "malformed"),
            (r#"{"choices":[{"delta":{"content":"\ud83d"}}]"#, "malformed"),
            ("[DONE]", "malformed"),
            ("[1]", "malformed"),
            (r#"{"choices":[]} trailing"#, "malformed"),
            (r#"{"choices":[{"delta":{"content":"unterminated"#, "malformed"),
        ];
        for (data, expected) in cases {
            assert_eq!(short(data), *expected, "{data}");
        }
    }

    #[test]
    fn what_each_keep_reads() {
        let data = br#"{"type":"x","id":"c1","created":7,"model":"m","usage":{"total_tokens":3},"error":null,
            "prompt_filter_results":[],"choices":[{"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#;
        let all = parse(data, Keep::Everything).unwrap();
        let meta: Vec<&str> = all.meta.iter().map(|(k, _)| *k).collect();
        assert_eq!(meta, ["id", "created", "model"]);
        assert_eq!(
            (all.usage, all.prompt_filter_results, all.error),
            (Some(json!({"total_tokens":3})), Some(json!([])), None)
        );
        assert_eq!(all.choices[0].logprobs, Some(json!({"content": []})));
        let shape = parse(data, Keep::Shape).unwrap();
        assert!(shape.meta.is_empty() && shape.usage.is_none() && shape.prompt_filter_results.is_none());
        assert_eq!(shape.choices[0].delta.content.as_deref(), Some("a"));
        let ping = parse(br#"{"type":"keepalive"}"#, Keep::Shape).unwrap();
        assert!(ping.keepalive);
    }
}
