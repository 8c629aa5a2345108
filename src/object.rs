//! A client's JSON body parsed at its top level only: each member's key, and where its value
//! lies in the body's own bytes, which stay as they came.
//!
//! A request is mostly one big member (`input` with thousands of items, `tools`, `messages`)
//! that the proxy passes on untouched. Parsing the whole body into a `serde_json::Value`
//! tree costs 10 to 30 times the body (a map and a string allocation per item), and cloning
//! it costs that again; here a request costs its bytes plus a few dozen bytes per top-level
//! member. The whole body is still checked to be valid JSON (serde_json's raw values), keys
//! keep their order (the order of first appearance; a repeated key keeps its first place and
//! its last value, as `serde_json::Map` did), and a value is parsed only when someone asks for
//! that member (`value`), or for the items of an array one by one (`items`).
//!
//! It also carries the few raw-JSON helpers the proxy needs around it: writing a body with
//! some members replaced (`to_vec`), building one member by member (`write` / `insert_span`),
//! and echoing big members into serialized output without a `Value` of them (`Echo`). No I/O.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Top-level members beyond this many are refused: a request has a few dozen, and the
/// duplicate check is a linear search.
pub const MAX_MEMBERS: usize = 1024;

/// Nesting beyond this many levels is refused, as serde_json does: so any member or item of
/// an accepted body can later be parsed into a `Value`.
pub const MAX_DEPTH: usize = 127;

/// A JSON object whose member values are kept raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    bytes: Vec<u8>,
    /// Key (unescaped) and where its value is in `bytes`, in order.
    members: Vec<(String, Range<usize>)>,
}

/// Why a body is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON at all (the parser's message).
    Syntax(String),
    /// JSON, but not an object.
    NotAnObject,
    /// More than `MAX_MEMBERS` top-level members.
    TooManyMembers,
    /// Nested deeper than `MAX_DEPTH`.
    TooDeep,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Syntax(e) => write!(f, "the body is not valid JSON: {e}"),
            Invalid::NotAnObject => write!(f, "the body must be a JSON object"),
            Invalid::TooManyMembers => write!(f, "the body has more than {MAX_MEMBERS} top-level members"),
            Invalid::TooDeep => write!(f, "the body is nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

impl Object {
    /// Parse `bytes` (kept as they are) as a JSON object, its top level only.
    pub fn parse(bytes: Vec<u8>) -> Result<Object, Invalid> {
        let starts_an_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !starts_an_object {
            return match serde_json::from_slice::<IgnoredAny>(&bytes) {
                Ok(_) => Err(Invalid::NotAnObject),
                Err(e) => Err(Invalid::Syntax(e.to_string())),
            };
        }
        let members = {
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            let found = de.deserialize_map(Members { base: bytes.as_ptr() as usize });
            let found = found.and_then(|m| de.end().map(|()| m));
            match found {
                Ok(members) => members,
                Err(e) if e.to_string().starts_with(TOO_MANY) => return Err(Invalid::TooManyMembers),
                Err(e) => return Err(Invalid::Syntax(e.to_string())),
            }
        };
        if too_deep(&bytes) {
            return Err(Invalid::TooDeep);
        }
        Ok(Object { bytes, members })
    }

    /// The JSON text of `value`, parsed at its top level (tests and small bodies).
    pub fn from_value(value: &Value) -> Result<Object, Invalid> {
        Object::parse(serde_json::to_vec(value).unwrap_or_default())
    }

    /// The raw JSON of member `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let (_, span) = self.members.iter().find(|(k, _)| k == key)?;
        Some(&self.bytes[span.clone()])
    }

    /// Member `key` parsed (meant for small members; `None` if absent or deeper than
    /// serde_json's nesting limit).
    pub fn value(&self, key: &str) -> Option<Value> {
        serde_json::from_slice(self.get(key)?).ok()
    }

    /// Whether member `key` is JSON `true`.
    pub fn is_true(&self, key: &str) -> bool {
        self.get(key) == Some(b"true")
    }

    /// The raw items of member `key` when it is an array.
    pub fn items(&self, key: &str) -> Option<Vec<&RawValue>> {
        items(self.get(key)?)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_str())
    }

    /// The body's bytes (the raw text of every value is in it).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The object as JSON text: each member's raw value, or the one `overrides` gives for its
    /// key; overrides for absent keys come last, in their order. Top-level whitespace goes.
    pub fn to_vec(&self, overrides: &[(&str, &[u8])]) -> Vec<u8> {
        let over = |key: &str| overrides.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let size = self.members.iter().map(|(k, s)| k.len() + s.len() + 4).sum::<usize>()
            + overrides.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        let kept = self.members.iter().map(|(k, s)| (k.as_str(), over(k).unwrap_or(&self.bytes[s.clone()])));
        let added = overrides.iter().filter(|(k, _)| self.get(k).is_none()).map(|(k, v)| (*k, *v));
        for (i, (key, value)) in kept.chain(added).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, key);
            out.extend_from_slice(value);
        }
        out.push(b'}');
        out
    }

    /// Write a value at the end of the bytes with `f` (which must write one JSON value); its
    /// span, for `insert_span`. Members may come in any order of their bytes.
    pub fn write<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> (Range<usize>, R) {
        let start = self.bytes.len();
        let r = f(&mut self.bytes);
        (start..self.bytes.len(), r)
    }

    /// Make `span` (from `write`) the value of `key`: in its place if present, else last.
    pub fn insert_span(&mut self, key: &str, span: Range<usize>) {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = span,
            None => self.members.push((key.to_string(), span)),
        }
    }

    /// Set member `key` to the raw JSON `value`.
    pub fn insert_raw(&mut self, key: &str, value: &[u8]) {
        let (span, ()) = self.write(|out| out.extend_from_slice(value));
        self.insert_span(key, span);
    }

    /// Set member `key` to `value`.
    pub fn insert(&mut self, key: &str, value: &Value) {
        let (span, _) = self.write(|out| serde_json::to_writer(out, value));
        self.insert_span(key, span);
    }

    /// Remove member `key` (its bytes stay until the object is written out).
    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }
}

/// The raw items of a JSON array (`None` if `json` is not one).
pub fn items(json: &[u8]) -> Option<Vec<&RawValue>> {
    if json.first() != Some(&b'[') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// The raw value of member `key` of a JSON object (the last one if repeated); `None` if
/// absent or `json` is not an object. Reads nothing but that member.
pub fn member<'a>(json: &'a [u8], key: &str) -> Option<&'a RawValue> {
    if json.first() != Some(&b'{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    de.deserialize_map(Member { key }).ok().flatten()
}

/// The text of member `key` of a JSON object, when it is a string.
pub fn string_member(json: &[u8], key: &str) -> Option<String> {
    serde_json::from_str(member(json, key)?.get()).ok()
}

/// Whether valid JSON nests deeper than `MAX_DEPTH` (brackets outside strings).
fn too_deep(json: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            (false, b']' | b'}') => depth -= 1,
            (false, _) => {}
        }
    }
    false
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    serde_json::to_writer(&mut *out, key).unwrap_or_default();
    out.push(b':');
}

const TOO_MANY: &str = "codex-shield: too many members";

/// Collects the members of the top-level object, as spans from `base` (the body's address).
struct Members {
    base: usize,
}

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(String, Range<usize>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(String, Range<usize>)> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let raw: &'de RawValue = map.next_value()?;
            let start = raw.get().as_ptr() as usize - self.base;
            let span = start..start + raw.get().len();
            match members.iter().position(|(k, _)| *k == key) {
                Some(i) => members[i].1 = span,
                None if members.len() == MAX_MEMBERS => return Err(serde::de::Error::custom(TOO_MANY)),
                None => members.push((key.into_owned(), span)),
            }
        }
        Ok(members)
    }
}

/// Finds one member of an object, skipping the others.
struct Member<'k> {
    key: &'k str,
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.key {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The members of an object that are echoed into serialized output (the `response` objects
/// of a translated answer repeat the request's `tools`, `text`...): small members as a
/// `Value`, big ones as unique placeholder strings that `restore` replaces in the output with
/// their raw JSON, so no `Value` tree of a big member is ever built (or cloned).
pub struct Echo<'o> {
    /// The object to echo, with big members as placeholders.
    pub value: Value,
    /// The serialized placeholder (with its quotes) and the raw JSON it stands for.
    placeholders: Vec<(Vec<u8>, &'o [u8])>,
}

/// Members larger than this are echoed through a placeholder.
pub const ECHO_INLINE: usize = 4096;

impl<'o> Echo<'o> {
    /// Every member of `object` but those in `skip`; `nonce` makes the placeholders unique
    /// (a random number: the output holds text from the client and the model).
    pub fn new(object: &'o Object, skip: &[&str], nonce: u64) -> Echo<'o> {
        let mut value = Map::new();
        let mut placeholders = Vec::new();
        for (key, span) in object.members.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
            let raw = &object.bytes[span.clone()];
            let small = (raw.len() <= ECHO_INLINE).then(|| serde_json::from_slice::<Value>(raw).ok());
            match small.flatten() {
                Some(v) => {
                    value.insert(key.clone(), v);
                }
                None => {
                    let text = format!("\u{0}codex-shield echo {nonce:016x} {}\u{0}", placeholders.len());
                    let quoted = serde_json::to_vec(&text).unwrap_or_default();
                    placeholders.push((quoted, raw));
                    value.insert(key.clone(), Value::String(text));
                }
            }
        }
        Echo { value: Value::Object(value), placeholders }
    }

    /// `out` with every placeholder replaced by the raw JSON it stands for.
    pub fn restore(&self, out: Vec<u8>) -> Vec<u8> {
        if self.placeholders.is_empty() {
            return out;
        }
        let mut found: Vec<(usize, usize)> = Vec::new(); // (position, placeholder)
        for (i, (needle, _)) in self.placeholders.iter().enumerate() {
            found.extend(memchr::memmem::find_iter(&out, needle).map(|at| (at, i)));
        }
        if found.is_empty() {
            return out;
        }
        found.sort_unstable();
        let grow: usize = found.iter().map(|&(_, i)| self.placeholders[i].1.len()).sum();
        let mut restored = Vec::with_capacity(out.len() + grow);
        let mut at = 0;
        for (position, i) in found {
            let (needle, raw) = &self.placeholders[i];
            restored.extend_from_slice(&out[at..position]);
            restored.extend_from_slice(raw);
            at = position + needle.len();
        }
        restored.extend_from_slice(&out[at..]);
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Object, Invalid> {
        Object::parse(body.as_bytes().to_vec())
    }

    /// The top-level parse: keys in order, raw values as sent, model and stream replaced.
    #[test]
    fn top_level_parse() {
        type Case<'a> = (&'a str, Result<&'a str, Invalid>);
        let syntax = || Invalid::Syntax(String::new());
        let cases: &[Case] = &[
            (r#"{"model":"a","input":"hi"}"#, Ok(r#"{"model":"gpt-5","input":"hi","stream":true}"#)),
            (
                r#"{"stream":false,"z":[1,{"b":null}],"model":"a","a":0.7}"#,
                Ok(r#"{"stream":true,"z":[1,{"b":null}],"model":"gpt-5","a":0.7}"#),
            ),
            // whitespace: the top level's goes, the values' own stays as sent
            (
                " \n{ \"input\" : [ 1 , {\"b\" : 2} ] ,\t\"model\":\"a\" }\r\n",
                Ok(r#"{"input":[ 1 , {"b" : 2} ],"model":"gpt-5","stream":true}"#),
            ),
            // a repeated key keeps its first place and its last value
            (r#"{"model":"a","x":1,"x":2,"model":"b"}"#, Ok(r#"{"model":"gpt-5","x":2,"stream":true}"#)),
            // escaped keys are keys: `mo\u0064el` is `model`; values keep their escapes
            (
                r#"{"mo\u0064el":"a","t\u00e9":"caf\u00e9 \ud83d\ude00","\"q\"":"\n"}"#,
                Ok(r#"{"model":"gpt-5","té":"caf\u00e9 \ud83d\ude00","\"q\"":"\n","stream":true}"#),
            ),
            // nested objects and arrays stay whole, numbers as written
            (
                r#"{"input":[{"content":[{"type":"input_text","text":"{\"model\":1}"}]}],"n":1.0e2}"#,
                Ok(
                    r#"{"input":[{"content":[{"type":"input_text","text":"{\"model\":1}"}]}],"n":1.0e2,"stream":true,"model":"gpt-5"}"#,
                ),
            ),
            ("{}", Ok(r#"{"stream":true,"model":"gpt-5"}"#)),
            ("[1,2]", Err(Invalid::NotAnObject)),
            ("\"x\"", Err(Invalid::NotAnObject)),
            ("null", Err(Invalid::NotAnObject)),
            ("", Err(syntax())),
            ("{\"model\":", Err(syntax())),
            ("{\"a\":1}}", Err(syntax())),
            ("{\"a\":1} {}", Err(syntax())),
            ("{\"a\":[1,}", Err(syntax())),
            ("{\"a\":\"\u{1}\"}", Err(syntax())),
            ("{\"a\":\"\\x\"}", Err(syntax())),
            ("{\"a\":01}", Err(syntax())),
            ("{a:1}", Err(syntax())),
        ];
        for (body, expected) in cases {
            let got = parse(body).map(|o| {
                String::from_utf8(o.to_vec(&[("stream", b"true"), ("model", b"\"gpt-5\"")])).unwrap()
            });
            match (expected, &got) {
                (Ok(e), Ok(g)) => assert_eq!(g, e, "{body}"),
                (Err(Invalid::Syntax(_)), Err(Invalid::Syntax(_))) => {}
                (Err(e), Err(g)) => assert_eq!(g, e, "{body}"),
                _ => panic!("{body:?}: expected {expected:?}, got {got:?}"),
            }
        }
        let nested =
            |depth: usize| format!("{{\"a\":\"[{{\\\"\",\"x\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse(&nested(MAX_DEPTH - 1)).is_ok(), "brackets in strings do not count");
        assert_eq!(parse(&nested(MAX_DEPTH)), Err(Invalid::TooDeep));
        assert_eq!(
            parse("[1,").unwrap_err(),
            Invalid::Syntax("EOF while parsing a value at line 1 column 3".into())
        );
    }

    #[test]
    fn members_read_on_demand() {
        let o =
            parse(r#"{"stream":true,"input":[{"type":"a"},"b",[3]],"s":"x","m":{"k":1},"f":false}"#).unwrap();
        assert_eq!(o.keys().collect::<Vec<_>>(), ["stream", "input", "s", "m", "f"]);
        assert!(o.is_true("stream") && !o.is_true("f") && !o.is_true("absent"));
        assert_eq!(o.get("s"), Some(&b"\"x\""[..]));
        assert_eq!(o.value("m"), Some(serde_json::json!({"k": 1})));
        let items: Vec<&str> = o.items("input").unwrap().iter().map(|r| r.get()).collect();
        assert_eq!(items, [r#"{"type":"a"}"#, r#""b""#, "[3]"]);
        assert!(o.items("s").is_none());
        assert_eq!(
            member(br#"{"type":"x","type":"y","z":[{"type":1}]}"#, "type").map(RawValue::get),
            Some("\"y\"")
        );
        assert!(member(br#"{"z":{"type":1}}"#, "type").is_none());
        assert!(member(b"[1]", "type").is_none());
        assert_eq!(
            string_member(br#"{"type":"additional\u005ftools"}"#, "type").as_deref(),
            Some("additional_tools")
        );
        assert_eq!(string_member(br#"{"type":7}"#, "type"), None);
    }

    #[test]
    fn too_many_members() {
        let body =
            |n: usize| format!("{{{}}}", (0..n).map(|i| format!("\"k{i}\":0")).collect::<Vec<_>>().join(","));
        assert!(parse(&body(MAX_MEMBERS)).is_ok());
        assert_eq!(parse(&body(MAX_MEMBERS + 1)), Err(Invalid::TooManyMembers));
        let repeated = format!("{{{}}}", vec!["\"k\":0"; MAX_MEMBERS * 2].join(","));
        assert!(parse(&repeated).is_ok(), "a repeated key is one member");
    }

    #[test]
    fn built_member_by_member() {
        let mut o = Object::default();
        let (tools, ()) = o.write(|out| out.extend_from_slice(b"[1,2]"));
        o.insert("model", &Value::from("m"));
        o.insert_span("tools", tools);
        o.insert_raw("stream", b"true");
        o.insert("model", &Value::from("n"));
        o.remove("stream");
        assert_eq!(o.to_vec(&[]), br#"{"model":"n","tools":[1,2]}"#);
    }

    #[test]
    fn big_members_are_echoed_raw() {
        let big = format!("[{}]", vec![r#"{"name":"t","x":"\u00e9"}"#; 300].join(" , "));
        let body =
            format!(r#"{{"model":"m","input":[1],"tools":{big},"text":{{"format":{{"type":"text"}}}}}}"#);
        let o = parse(&body).unwrap();
        let echo = Echo::new(&o, &["input"], 7);
        assert_eq!(echo.value["model"], "m");
        assert!(echo.value.get("input").is_none());
        assert!(echo.value["tools"].is_string(), "a placeholder");
        let out =
            serde_json::to_vec(&serde_json::json!([{"tools": echo.value["tools"], "t": 1}, echo.value]))
                .unwrap();
        let restored = echo.restore(out);
        let v: Value = serde_json::from_slice(&restored).unwrap();
        let tools: Value = serde_json::from_str(&big).unwrap();
        assert_eq!(
            (&v[0]["tools"], &v[1]["tools"], &v[1]["text"]["format"]["type"]),
            (&tools, &tools, &Value::from("text"))
        );
        assert_eq!(echo.restore(b"no placeholder".to_vec()), b"no placeholder");
    }
}
