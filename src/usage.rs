//! What an answer cost, as its upstream reported it: the tokens of a `usage` object, read the
//! same way for both wire APIs.
//!
//! A Responses stream carries `usage` in its terminal event (`response.completed`,
//! `response.incomplete`, `response.failed`: `response.usage`, with
//! `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`); a chat
//! stream in a chunk of its own near the end (`prompt_tokens_details.cached_tokens`,
//! `completion_tokens_details.reasoning_tokens`), when the request had
//! `stream_options.include_usage` (the fold keeps the last non-null one). Cached input is part
//! of input and reasoning part of output, as the APIs count them. A missing or null count reads
//! as 0; a `usage` that is not an object, or has no count at all, is no usage. Pure: no I/O,
//! no clock; the reading (`check::Progress`) and the counting (`metrics.rs`) live elsewhere.

use std::fmt;
use std::ops::AddAssign;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Whether the client got what an attempt produced (its answer, or its final error), or the
/// shield discarded it (retried, gave up, or the client left): what it saved, what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    Delivered,
    Discarded,
}

/// Tokens of one answer (or a sum of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    /// Part of `input`, read from the upstream's prompt cache.
    pub cached: u64,
    pub output: u64,
    /// Part of `output`, spent on reasoning.
    pub reasoning: u64,
}

/// The four kinds, in the order of the `kind` label and the log line.
pub const KINDS: [&str; 4] = ["input", "cached_input", "output", "reasoning"];

impl Usage {
    /// A `usage` object of either API; `None` when it is null, not an object, or holds none
    /// of the counts.
    pub fn from_value(usage: &Value) -> Option<Usage> {
        // The same reader as the check's, over a `Value` (its members in the order they came).
        Counts.deserialize(usage).unwrap_or(None)
    }

    /// The counts in `KINDS` order.
    pub fn counts(&self) -> [u64; 4] {
        [self.input, self.cached, self.output, self.reasoning]
    }

    /// Cached input over input, `None` without input.
    pub fn cache_ratio(&self) -> Option<f64> {
        (self.input > 0).then(|| self.cached as f64 / self.input as f64)
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input += other.input;
        self.cached += other.cached;
        self.output += other.output;
        self.reasoning += other.reasoning;
    }
}

/// `in/cached/out/reasoning`, as the log line writes it.
impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.input, self.cached, self.output, self.reasoning)
    }
}

/// A visitor's answer to any value but an object: none (arrays skipped whole).
macro_rules! none_but_maps {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    };
}

/// Reads a Responses event's `response` for its `usage`, straight into a `Usage`: nothing is
/// built, every other member is skipped. The check reads each `response` with it in the one
/// parse it makes of an event (`check::quick`), so usage costs no second parse of a terminal
/// event that repeats the whole answer. `None` when the value is not an object or has no
/// usage (`usage: null` while the answer is in progress).
pub struct InResponse;

impl<'de> DeserializeSeed<'de> for InResponse {
    type Value = Option<Usage>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Usage>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InResponse {
    type Value = Option<Usage>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a response object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<Usage>, M::Error> {
        let mut usage = None;
        while let Some(key) = map.next_key_seed(Key(&["usage"]))? {
            match key {
                Some(_) => usage = map.next_value_seed(Counts)?.or(usage),
                None => skip(&mut map)?,
            }
        }
        Ok(usage)
    }

    none_but_maps!();
}

/// A `usage` object of either API read into a `Usage`, straight from the parse or from a `Value`
/// (`Usage::from_value`): for each count, the first of its two names that holds one.
struct Counts;

impl<'de> DeserializeSeed<'de> for Counts {
    type Value = Option<Usage>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Usage>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The keys of a `usage` object, in `Counts`'s order: either API's name for each.
const COUNT_KEYS: &[&str] = &[
    "input_tokens",
    "prompt_tokens",
    "output_tokens",
    "completion_tokens",
    "input_tokens_details",
    "prompt_tokens_details",
    "output_tokens_details",
    "completion_tokens_details",
];

impl<'de> Visitor<'de> for Counts {
    type Value = Option<Usage>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<Usage>, M::Error> {
        // input, output, cached, reasoning: the first name of each that holds a count
        let mut found: [Option<u64>; 4] = [None; 4];
        while let Some(key) = map.next_key_seed(Key(COUNT_KEYS))? {
            let (slot, value) = match key {
                Some(i @ 0..=3) => (i / 2, map.next_value_seed(Count)?),
                Some(4..=5) => (2, map.next_value_seed(Detail(&["cached_tokens"]))?),
                Some(_) => (3, map.next_value_seed(Detail(&["reasoning_tokens"]))?),
                None => {
                    skip(&mut map)?;
                    continue;
                }
            };
            found[slot] = found[slot].or(value);
        }
        let [input, output, cached, reasoning] = found;
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        let n = |v: Option<u64>| v.unwrap_or(0);
        Ok(Some(Usage { input: n(input), cached: n(cached), output: n(output), reasoning: n(reasoning) }))
    }

    none_but_maps!();
}

/// A `*_tokens_details` object's count named `.0` (a one-name list, as `Key` takes it).
struct Detail(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Detail {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Detail {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a details object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<u64>, M::Error> {
        let mut count = None;
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            match key {
                Some(_) => count = map.next_value_seed(Count)?.or(count),
                None => skip(&mut map)?,
            }
        }
        Ok(count)
    }

    none_but_maps!();
}

/// A count: a non-negative integer; anything else is no count.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a count")
    }

    fn visit_u64<E>(self, n: u64) -> Result<Option<u64>, E> {
        Ok(Some(n))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<u64>, M::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            skip(&mut map)?;
        }
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
}

/// Skip the value of the current member.
fn skip<'de, M: MapAccess<'de>>(map: &mut M) -> Result<(), M::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// Which of `.0` a key is (`None`: another), read without allocating it.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == key))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const fn u(input: u64, cached: u64, output: u64, reasoning: u64) -> Option<Usage> {
        Some(Usage { input, cached, output, reasoning })
    }

    /// `usage` objects as the real servers send them.
    #[test]
    #[rustfmt::skip] // one row per shape
    fn usage_objects() {
        let cases: &[(&str, Value, Option<Usage>)] = &[
            ("responses, with details", json!({"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024},
                "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 192}, "total_tokens": 1500}), u(1200, 1024, 300, 192)),
            ("responses, details null", json!({"input_tokens": 5, "input_tokens_details": null, "output_tokens": 7,
                "output_tokens_details": null, "total_tokens": 12}), u(5, 0, 7, 0)),
            ("responses, no details", json!({"input_tokens": 5, "output_tokens": 7}), u(5, 0, 7, 0)),
            ("azure chat, with details", json!({"completion_tokens": 42, "completion_tokens_details":
                {"accepted_prediction_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 0, "rejected_prediction_tokens": 0},
                "prompt_tokens": 2006, "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 1920}, "total_tokens": 2048}),
                u(2006, 1920, 42, 0)),
            ("vllm chat, no details", json!({"prompt_tokens": 10, "total_tokens": 30, "completion_tokens": 20}), u(10, 0, 20, 0)),
            ("o-series chat, reasoning", json!({"prompt_tokens": 10, "completion_tokens": 500,
                "completion_tokens_details": {"reasoning_tokens": 448}}), u(10, 0, 500, 448)),
            ("null", Value::Null, None),
            ("not an object", json!("12 tokens"), None),
            ("no count", json!({"total_tokens": 12}), None),
            ("counts of the wrong type", json!({"prompt_tokens": "10", "completion_tokens": -1}), None),
        ];
        for (name, value, expected) in cases {
            assert_eq!(read(value), *expected, "{name}");
        }
    }

    /// A Responses event read for `response.usage` only, as the check reads it.
    fn of_responses_event(data: &[u8]) -> Option<Usage> {
        let value: Value = serde_json::from_slice(data).ok()?;
        let usage = InResponse.deserialize(&value["response"]).ok()?;
        // the same as reading the `Value`
        assert_eq!(usage, Usage::from_value(&value["response"]["usage"]), "{value}");
        usage
    }

    /// Both readings of a `usage` object, which must agree.
    fn read(value: &Value) -> Option<Usage> {
        let counted = Counts.deserialize(value).unwrap();
        assert_eq!(counted, Usage::from_value(value), "{value}");
        counted
    }

    /// Terminal events, read for `response.usage` only.
    #[test]
    #[rustfmt::skip] // one row per event
    fn responses_events() {
        let usage = r#"{"input_tokens":30,"input_tokens_details":{"cached_tokens":20},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":39}"#;
        let completed = format!(r#"{{"type":"response.completed","sequence_number":9,"response":{{"id":"r","output":[{{"type":"message","content":[{{"text":"usage"}}]}}],"usage":{usage},"error":null}}}}"#);
        let failed = format!(r#"{{"type":"response.failed","response":{{"status":"failed","error":{{"code":"server_error"}},"usage":{usage}}}}}"#);
        let cases: Vec<(&str, String, Option<Usage>)> = vec![
            ("completed", completed, u(30, 20, 9, 4)),
            ("failed with usage", failed, u(30, 20, 9, 4)),
            ("usage before the rest", format!(r#"{{"response":{{"usage":{usage},"output":[1,2]}},"type":"response.incomplete"}}"#), u(30, 20, 9, 4)),
            ("usage null", r#"{"type":"response.completed","response":{"usage":null}}"#.into(), None),
            ("no usage", r#"{"type":"response.completed","response":{"id":"r"}}"#.into(), None),
            ("usage at the top, not in response", format!(r#"{{"type":"error","usage":{usage}}}"#), None),
            ("response not an object", r#"{"type":"x","response":[{"usage":{"input_tokens":1}}]}"#.into(), None),
            ("escaped key", format!(r#"{{"type":"response.completed","\u0072esponse":{{"usage":{usage}}}}}"#), u(30, 20, 9, 4)),
            ("not JSON", "{oops".into(), None),
        ];
        for (name, data, expected) in cases {
            assert_eq!(of_responses_event(data.as_bytes()), expected, "{name}");
        }
    }

    #[test]
    fn sums_ratio_and_text() {
        let mut total = Usage::default();
        assert_eq!(total.cache_ratio(), None);
        total += u(100, 80, 10, 4).unwrap();
        total += u(300, 0, 20, 0).unwrap();
        assert_eq!(total, u(400, 80, 30, 4).unwrap());
        assert_eq!(total.cache_ratio(), Some(0.2));
        assert_eq!(total.to_string(), "400/80/30/4");
        assert_eq!(total.counts(), [400, 80, 30, 4]);
    }
}
