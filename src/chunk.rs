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

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
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
    /// Boxed, as the other rare values: a chunk is moved a few times on its way.
    pub usage: Option<Box<Value>>,
    pub prompt_filter_results: Option<Box<Value>>,
    /// `error`, when present and not null.
    pub error: Option<Box<Value>>,
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
    /// Boxed, as `function_call`: a choice is moved a few times per chunk, and these are rare.
    pub logprobs: Option<Box<Value>>,
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
    pub function_call: Option<Box<CallDelta>>,
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
    /// What the rules need, every field still judged exactly as `Everything` judges it: the
    /// read-time check, which must not hold the answer twice. `meta`, `prompt_filter_results`
    /// and `logprobs` are judged and dropped (`usage`, small, is kept); the texts (`role`,
    /// `content`, `reasoning`, `refusal`, `finish_reason`, a call's `type` and `arguments`)
    /// are judged and read as `""` (present, not allocated); a call's `id` and `name` are
    /// kept (the fold tells calls apart by id and judges whether a name came).
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
        let keep = self.0;
        let mut chunk = Chunk::default();
        fields(map, CHUNK, |name, map| {
            match name {
                "type" => chunk.keepalive = map.next_value::<Value>()? == "keepalive",
                // Kept in both parses: small, and what the answer cost (`usage.rs`).
                "usage" => chunk.usage = map.next_value_seed(Kept(Keep::Everything))?.map(Box::new),
                "prompt_filter_results" => {
                    chunk.prompt_filter_results = map.next_value_seed(Kept(keep))?.map(Box::new)
                }
                "error" => chunk.error = map.next_value()?,
                "choices" => chunk.choices = map.next_value_seed(List(ChoiceVisitor(keep)))?,
                meta => {
                    if let Some(value) = map.next_value_seed(Kept(keep))? {
                        chunk.meta.push((meta, value));
                    }
                }
            }
            Ok(())
        })?;
        Ok(chunk)
    }
}

#[derive(Clone, Copy)]
struct ChoiceVisitor(Keep);

impl<'de> Visitor<'de> for ChoiceVisitor {
    type Value = Choice;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Choice, M::Error> {
        let keep = self.0;
        let mut choice = Choice::default();
        fields(map, CHOICE, |name, map| {
            match name {
                "index" => choice.index = map.next_value::<Option<Index>>()?.map_or(0, |i| i.0),
                "finish_reason" => choice.finish_reason = map.next_value_seed(Maybe(Text(keep)))?,
                "logprobs" => choice.logprobs = map.next_value_seed(Kept(keep))?.map(Box::new),
                _ => choice.delta = map.next_value_seed(Maybe(DeltaVisitor(keep)))?.unwrap_or_default(),
            }
            Ok(())
        })?;
        Ok(choice)
    }
}

#[derive(Clone, Copy)]
struct DeltaVisitor(Keep);

impl<'de> Visitor<'de> for DeltaVisitor {
    type Value = Delta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Delta, M::Error> {
        let keep = self.0;
        let mut delta = Delta::default();
        // Some servers send the same text under both names: `reasoning_content` wins.
        let (mut named, mut other, mut thinking) = (None, None, None);
        fields(map, DELTA, |name, map| {
            match name {
                "role" => delta.role = map.next_value_seed(Maybe(Text(keep)))?,
                "content" => {
                    if let Some(content) = map.next_value_seed(Maybe(ContentVisitor(keep)))? {
                        delta.content = Some(content.text);
                        thinking = content.thinking;
                    }
                }
                "reasoning_content" => named = map.next_value_seed(Maybe(Text(keep)))?,
                "reasoning" => other = map.next_value_seed(Maybe(Text(keep)))?,
                "refusal" => delta.refusal = map.next_value_seed(Maybe(Text(keep)))?,
                "tool_calls" => delta.tool_calls = map.next_value_seed(List(CallVisitor(keep)))?,
                _ => delta.function_call = map.next_value_seed(Maybe(CallVisitor(keep)))?.map(Box::new),
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

/// A tool call, or its `function` object (whose `name` and `arguments` are read into the same
/// `CallDelta`). Its `id` and `name` are kept in a `Keep::Shape` parse too: the fold tells
/// calls apart by id and judges whether a name came (both come once per call, not per piece).
#[derive(Clone, Copy)]
struct CallVisitor(Keep);

impl<'de> Visitor<'de> for CallVisitor {
    type Value = CallDelta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool call object")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<CallDelta, M::Error> {
        let keep = self.0;
        let mut call = CallDelta::default();
        fields(map, CALL, |name, map| {
            match name {
                "index" => call.index = map.next_value::<Option<Index>>()?.map(|i| i.0),
                "id" => call.id = map.next_value_seed(Maybe(Text(Keep::Everything)))?,
                "type" => call.kind = map.next_value_seed(Maybe(Text(keep)))?,
                "function" => {
                    if let Some(function) = map.next_value_seed(Maybe(self))? {
                        call.name = function.name;
                        call.arguments = function.arguments;
                    }
                }
                "name" => call.name = map.next_value_seed(Maybe(Text(Keep::Everything)))?,
                _ => call.arguments = map.next_value_seed(Maybe(Arguments(keep)))?,
            }
            Ok(())
        })?;
        Ok(call)
    }
}

/// The seed of each object visitor: the value is an object.
macro_rules! object_seed {
    ($($visitor:ident),*) => {$(
        impl<'de> DeserializeSeed<'de> for $visitor {
            type Value = <$visitor as Visitor<'de>>::Value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }
        }
    )*};
}
object_seed!(ChoiceVisitor, DeltaVisitor, CallVisitor);

/// `null` (`None`) or what the seed reads.
struct Maybe<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Maybe<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Maybe<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A list of what the seed reads (`null`: an empty list).
struct List<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for List<S> {
    type Value = Vec<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(Maybe(Items(self.0)).deserialize(d)?.unwrap_or_default())
    }
}

/// The items of a list, each read by the seed.
struct Items<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Items<S> {
    type Value = Vec<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for Items<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(item) = seq.next_element_seed(self.0)? {
            list.push(item);
        }
        Ok(list)
    }
}

/// A string: as given, or in a `Keep::Shape` parse judged the same (valid UTF-8, no lone
/// surrogate: serde_json checks both before the visitor sees it) and read as `""`.
#[derive(Clone, Copy)]
struct Text(Keep);

impl<'de> DeserializeSeed<'de> for Text {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(kept(self.0, v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(match self.0 {
            Keep::Everything => v,
            Keep::Shape => String::new(),
        })
    }
}

/// `text` as kept: itself, or nothing in a `Keep::Shape` parse (an empty string never allocates).
fn kept(keep: Keep, text: &str) -> String {
    match keep {
        Keep::Everything => text.to_string(),
        Keep::Shape => String::new(),
    }
}

/// A value the fold keeps only whole (`usage`, `logprobs`, `id`...): any JSON value, as a
/// `Value`; in a `Keep::Shape` parse judged as a `Value` would be and dropped (`None`).
#[derive(Clone, Copy)]
struct Kept(Keep);

impl<'de> DeserializeSeed<'de> for Kept {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        match self.0 {
            Keep::Everything => Option::<Value>::deserialize(d),
            Keep::Shape => d.deserialize_any(Judged).map(|()| None),
        }
    }
}

/// Any JSON value, judged as a `Value` would judge it but kept only when it is an object or a
/// list (which a `Value` reads by rules of its own, the raw-value key among them): scalars, the
/// common case (`"id"`, `"created"`, `null`), are not allocated. The strings serde_json checks
/// before the visitor sees them, the numbers before it picks the visitor's method.
struct Judged;

impl<'de> Visitor<'de> for Judged {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(drop)
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<(), M::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(drop)
    }
}

/// Tool-call `arguments`: a string as given, a JSON object or array serialised (read as a
/// `Value` first, in either keep: the rare form, and so judged exactly as a `Value`).
#[derive(Clone, Copy)]
struct Arguments(Keep);

impl<'de> DeserializeSeed<'de> for Arguments {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Arguments {
    fn of<E: de::Error>(self, value: Value) -> Result<String, E> {
        match value {
            Value::String(s) => Ok(kept(self.0, &s)),
            v @ (Value::Object(_) | Value::Array(_)) => Ok(match self.0 {
                Keep::Everything => v.to_string(),
                Keep::Shape => String::new(),
            }),
            v @ (Value::Null | Value::Bool(_) | Value::Number(_)) => {
                Err(E::custom(format!("tool-call arguments are {v}, not a string or an object")))
            }
        }
    }
}

impl<'de> Visitor<'de> for Arguments {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an object")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(kept(self.0, v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.of(Value::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.of(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.of(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.of(Value::from(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.of(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<String, A::Error> {
        self.of(Value::deserialize(SeqAccessDeserializer::new(seq))?)
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<String, M::Error> {
        self.of(Value::deserialize(MapAccessDeserializer::new(map))?)
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

/// A delta's `content`: a string, or a list of parts (`text` parts joined; the text parts of
/// `thinking` parts, in `thinking`). A list, the rare form, is read whole in either keep.
#[derive(Default)]
struct Content {
    text: String,
    thinking: Option<String>,
}

#[derive(Clone, Copy)]
struct ContentVisitor(Keep);

impl<'de> DeserializeSeed<'de> for ContentVisitor {
    type Value = Content;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of text parts")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content { text: kept(self.0, v), thinking: None })
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
/// Read as bytes: a listed name is plainly valid, so only a skipped key is checked to be a
/// string, as serde_json checks one (its escapes decoded, a lone surrogate among them, are
/// not UTF-8).
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<&'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Self::Value, E> {
        if let Some(name) = self.0.iter().copied().find(|k| k.as_bytes() == key) {
            return Ok(Some(name));
        }
        match std::str::from_utf8(key) {
            Ok(_) => Ok(None),
            Err(e) => Err(E::custom(format!("an object key that is not a string: {e}"))),
        }
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().copied().find(|k| *k == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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
            (all.usage.as_deref(), all.prompt_filter_results.as_deref(), all.error),
            (Some(&json!({"total_tokens":3})), Some(&json!([])), None)
        );
        assert_eq!(all.choices[0].logprobs.as_deref(), Some(&json!({"content": []})));
        let shape = parse(data, Keep::Shape).unwrap();
        assert!(shape.meta.is_empty() && shape.prompt_filter_results.is_none());
        assert_eq!(shape.usage.as_deref(), Some(&json!({"total_tokens":3})), "what it cost is kept");
        assert_eq!(shape.choices[0].delta.content.as_deref(), Some(""), "judged, not kept");
        let ping = parse(br#"{"type":"keepalive"}"#, Keep::Shape).unwrap();
        assert!(ping.keepalive);
    }

    /// Whether each keep understands `data`: `Shape` (the read-time check) and `Everything`
    /// (every consumer) must never disagree, or a chunk passes the check and fails the answer.
    fn judged(data: &[u8]) -> (bool, bool) {
        (parse(data, Keep::Shape).is_ok(), parse(data, Keep::Everything).is_ok())
    }

    #[test]
    #[rustfmt::skip] // one row per case
    fn shape_and_everything_judge_alike() {
        let deep = format!(r#"{{"usage":{}1{},"choices":[]}}"#, "[".repeat(200), "]".repeat(200));
        let cases: &[(&[u8], bool)] = &[
            (br#"{"choices":[{"delta":{"content":"a","role":"assistant"},"logprobs":null}]}"#, true),
            (br#"{"id":"\ud83d","choices":[{"delta":{"reasoning":"\udc00"}}]}"#, true),
            (br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"x","type":"function","function":{"name":"f","arguments":{"a":[1e3]}}}]}}]}"#, true),
            (br#"{"choices":[{"delta":{"content":7}}]}"#, false),
            (br#"{"choices":[{"delta":{"role":{}}}]}"#, false),
            (br#"{"choices":[{"finish_reason":1}]}"#, false),
            (br#"{"choices":[{"delta":{"function_call":{"name":"f","arguments":true}}}]}"#, false),
            (br#"{"choices":[{"delta":{"tool_calls":[{"type":[],"function":{"name":"f"}}]}}]}"#, false),
            (b"{\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}", false),
            (b"{\"choices\":[{\"delta\":{\"refusal\":\"\xc3\"}}]}", false),
            (b"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"\xff\"}}]}}]}", false),
            (b"{\"choices\":[{\"delt\xe1\":{}}]}", false),
            // fields the fold keeps whole: judged as a `Value` in either keep
            (b"{\"id\":\"\xff\",\"choices\":[]}", false),
            (br#"{"created":1e400,"choices":[]}"#, false),
            (br#"{"choices":[{"logprobs":-1e999}]}"#, false),
            (deep.as_bytes(), false),
            (br#"{"usage":{"$serde_json::private::RawValue":"[1"},"choices":[]}"#, false),
            (br#"{"usage":{"$serde_json::private::RawValue":"[1]"},"choices":[]}"#, true),
            (br#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":{"$serde_json::private::RawValue":"5"}}}]}}]}"#, false),
            // skipped in either keep: not judged
            (b"{\"object\":\"\xff\",\"x\":1e400,\"choices\":[]}", true),
        ];
        for (data, understood) in cases {
            assert_eq!(judged(data), (*understood, *understood), "{}", String::from_utf8_lossy(data));
        }
    }

    /// Any JSON value, the shapes that a field's judgement turns on among them.
    fn any_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("-1".to_string()),
            Just("2.5e400".to_string()),
            Just(r#""x""#.to_string()),
            Just(r#""""#.to_string()),
            Just(r#""\ud83d""#.to_string()),
            Just(r#""\ud83d\ude00\n""#.to_string()),
            Just("\"\u{e9}\"".to_string()),
            Just("\"\\u00e9\\\"\"".to_string()),
            Just(r#""$serde_json::private::RawValue""#.to_string()),
            Just(r#""7""#.to_string()),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            let key = prop_oneof![
                Just("type"),
                Just("text"),
                Just("thinking"),
                Just("a"),
                Just("$serde_json::private::RawValue")
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key, inner), 0..3).prop_map(|kv| {
                    let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// An object of some of these fields, each holding `value` or any value.
    fn object(
        names: &'static [&'static str],
        value: impl Strategy<Value = String> + Clone + 'static,
    ) -> BoxedStrategy<String> {
        let field = (proptest::sample::select(names), prop_oneof![3 => value, 1 => any_value()]);
        proptest::collection::vec(field, 0..4)
            .prop_map(|fields| {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            })
            .boxed()
    }

    /// A chat chunk whose every read field holds a likely value or any value at all.
    fn any_chunk() -> impl Strategy<Value = String> {
        let text =
            prop_oneof![Just(r#""hi""#.to_string()), Just("null".to_string()), Just(r#""""#.to_string())];
        let call = object(CALL, prop_oneof![text.clone(), object(CALL, text.clone()), Just("0".to_string())]);
        let calls = proptest::collection::vec(call.clone(), 0..3).prop_map(|c| format!("[{}]", c.join(",")));
        let delta = object(DELTA, prop_oneof![text.clone(), calls, call]);
        let choice = object(CHOICE, prop_oneof![text.clone(), delta, Just("0".to_string())]);
        let choices = proptest::collection::vec(choice, 0..3).prop_map(|c| format!("[{}]", c.join(",")));
        object(CHUNK, prop_oneof![text, choices])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn shape_and_everything_judge_every_chunk_alike(chunk in any_chunk()) {
            let (shape, everything) = judged(chunk.as_bytes());
            prop_assert_eq!(shape, everything, "{}", chunk);
        }
    }
}
