//! One chat chunk parsed into only the fields the translation reads.
//!
//! `events.rs` folds every chunk of the answer; a full `Value` of each one cost most of the
//! translation's CPU (every key and map allocated and hashed, Azure's content-filter results
//! alone are most of a chunk's bytes). This parser still reads and validates the whole chunk
//! but keeps only a few named fields per level, skipping the rest unallocated. The result is
//! an ordinary `Value` with the same meaning for the fold; a field of an unexpected type
//! inside `choices` or `delta` becomes `null` rather than failing the chunk.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The fields kept at each level: the chunk, a choice, a delta.
const CHUNK: &[&str] = &["model", "created", "usage", "error", "choices"];
const CHOICE: &[&str] = &["index", "delta", "finish_reason"];
const DELTA: &[&str] = &["content", "reasoning_content", "reasoning", "refusal", "tool_calls"];

/// The chunk's kept fields, or `None` when `data` is not a JSON object (`[DONE]`, garbage).
pub fn parse(data: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(data);
    let value = Sparse::object(CHUNK).deserialize(&mut de).ok()?;
    de.end().ok()?;
    value.is_object().then_some(value)
}

/// An object keeping only the listed keys, or (`list`) an array of such objects (`choices`);
/// a value of any other shape is `null`.
#[derive(Clone, Copy)]
struct Sparse {
    keep: &'static [&'static str],
    list: bool,
}

impl Sparse {
    fn object(keep: &'static [&'static str]) -> Sparse {
        Sparse { keep, list: false }
    }

    fn list(keep: &'static [&'static str]) -> Sparse {
        Sparse { keep, list: true }
    }
}

/// A key as one of the listed names, or `None` for a key to skip (no allocation either way).
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Sparse {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Sparse {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Value, M::Error> {
        let keep = if self.list { &[][..] } else { self.keep };
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key(keep))? {
            let Some(name) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value = match name {
                "choices" => map.next_value_seed(Sparse::list(CHOICE))?,
                "delta" => map.next_value_seed(Sparse::object(DELTA))?,
                _ => map.next_value::<Value>()?,
            };
            out.insert(name.to_string(), value);
        }
        Ok(if self.list { Value::Null } else { Value::Object(out) })
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Value, S::Error> {
        if !self.list {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Null);
        }
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(Sparse::object(self.keep))? {
            out.push(item);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<&'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
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

    #[test]
    fn keeps_only_what_the_fold_reads() {
        let cases: &[(&str, Option<Value>)] = &[
            (
                r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","system_fingerprint":"fp",
                   "choices":[{"index":0,"delta":{"role":"assistant","content":"Hi","refusal":null},"logprobs":null,
                   "finish_reason":null,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
                Some(
                    json!({"created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi","refusal":null},"finish_reason":null}]}),
                ),
            ),
            (
                r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0}],"created":0,"model":""}"#,
                Some(json!({"choices":[],"created":0,"model":""})),
            ),
            (
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"x","function":{"name":"f","arguments":"{}"}}],"reasoning_content":"t"}}]}"#,
                Some(
                    json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"x","function":{"name":"f","arguments":"{}"}}],"reasoning_content":"t"}}]}),
                ),
            ),
            (
                r#"{"usage":{"prompt_tokens":3,"completion_tokens":2},"choices":null,"error":{"code":"x","message":"m"}}"#,
                Some(
                    json!({"usage":{"prompt_tokens":3,"completion_tokens":2},"choices":null,"error":{"code":"x","message":"m"}}),
                ),
            ),
            // odd shapes where the fold reads objects: null, not an error
            (
                r#"{"choices":[{"delta":null},{"delta":"x"},5,[1],{"delta":{"content":7}}]}"#,
                Some(json!({"choices":[{"delta":null},{"delta":null},null,null,{"delta":{"content":7}}]})),
            ),
            (r#"{"c\u0068oices":[{"ind\u0065x":1}]}"#, Some(json!({"choices":[{"index":1}]}))),
            (r#"{"choices":{"index":0}}"#, Some(json!({"choices":null}))),
            (r#"[DONE]"#, None),
            (r#"[1]"#, None),
            (r#"{"choices":[]} trailing"#, None),
            (r#"{"choices":[{"delta":{"content":"unterminated"#, None),
        ];
        for (data, expected) in cases {
            assert_eq!(&parse(data), expected, "{data}");
        }
    }
}
