//! The one fold of a chat stream: its chunks, in order, → one answer, or the reason it is
//! malformed.
//!
//! Every consumer of a chat answer reads it through here: the read-time check
//! (`check::Progress`, which keeps only the answer's shape, or all of it for a translated
//! client, whose Responses stream `translate/events.rs` then makes from that same fold) and
//! the `chat.completion` of a non-streaming client (`assemble.rs`). So a chunk is understood the same way everywhere, or the answer
//! is malformed everywhere (and so retried before anyone gets it), never dropped in silence.
//!
//! The rules, beyond reading each chunk (`chunk.rs`): `[DONE]` ends the answer and nothing
//! after it belongs to it; an answer needs at least one choice (or an error); choices fold by
//! `index`; a tool call goes by its `index`, or without one by its `id` (a new id is a new
//! call, no id continues the last call); its first piece must carry a name; a name repeated
//! whole is not doubled; text, refusal, reasoning and arguments keep their pieces in order;
//! `id`, `created`, `model`... are the first non-empty values, `usage` the last. Pure: no
//! I/O, no clock.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use crate::chunk::Keep;
use crate::chunk::{self, CallDelta, Chunk};
use crate::sse::{Event, Fed, Parser};

/// A whole chat answer, folded.
#[derive(Debug, Default)]
pub struct Answer {
    /// The first non-empty `id`, `created`, `model`, `system_fingerprint`, `service_tier`.
    pub meta: Map<String, Value>,
    /// The last non-null `usage`.
    pub usage: Option<Value>,
    pub prompt_filter_results: Option<Value>,
    /// The last non-null `error` a chunk carried.
    pub error: Option<Value>,
    pub choices: BTreeMap<u64, Choice>,
    /// How many lone surrogate escapes were read as U+FFFD (the caller says so in its log).
    pub repaired: usize,
}

/// One choice, folded.
#[derive(Debug, Default)]
pub struct Choice {
    pub role: Option<String>,
    pub content: Text,
    pub reasoning: Text,
    pub refusal: Text,
    /// By index, in index order.
    pub tool_calls: BTreeMap<u64, Call>,
    pub function_call: Option<Call>,
    pub finish_reason: Option<String>,
    /// The items of every `logprobs.content`.
    pub logprobs: Vec<Value>,
}

/// A text field: whether any chunk had it (even empty or null-free `""`), and its non-empty
/// pieces in order (empty in a `Keep::Shape` fold).
#[derive(Debug, Default)]
pub struct Text {
    pub present: bool,
    pub pieces: Vec<String>,
}

impl Text {
    /// The whole text, `None` if no chunk had the field.
    pub fn joined(&self) -> Option<String> {
        self.present.then(|| self.pieces.concat())
    }

    fn push(&mut self, piece: Option<String>, keep: bool) {
        if let Some(piece) = piece {
            self.present = true;
            if keep && !piece.is_empty() {
                self.pieces.push(piece);
            }
        }
    }
}

/// One tool call, folded.
#[derive(Debug, Default)]
pub struct Call {
    /// The first non-empty id.
    pub id: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    /// The non-empty pieces of the arguments (empty in a `Keep::Shape` fold).
    pub arguments: Vec<String>,
}

/// What one event of a chat stream was, for a fold that understood it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A chunk, folded in; with the error it carried, if any.
    Chunk(Option<Value>),
    /// An empty event or a `{"type":"keepalive"}` ping: no part of the answer.
    KeepAlive,
    /// `[DONE]` after a whole answer: the end. Nothing after it belongs to the answer.
    Done,
}

/// A chat answer being folded, event by event.
#[derive(Debug)]
pub struct Fold {
    keep: Keep,
    answer: Answer,
    /// About what the kept pieces hold (`held`).
    held: usize,
}

/// What a kept piece holds beyond its text: its `String` in its list, the allocator's rounding.
const PIECE: usize = 32;

/// What a kept `logprobs` item holds, per byte of its JSON text (a `Value` tree of small maps).
const VALUE: usize = 4;

impl Default for Fold {
    fn default() -> Self {
        Fold::new(Keep::Shape)
    }
}

impl Fold {
    pub fn new(keep: Keep) -> Fold {
        Fold { keep, answer: Answer::default(), held: 0 }
    }

    /// About how many bytes the answer's kept pieces hold (text, arguments, `logprobs`), for
    /// the memory budget: 0 for a `Keep::Shape` fold, which keeps none.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Fold in the data of the next event; `Err` says why the answer is malformed.
    pub fn event(&mut self, data: &[u8]) -> Result<Step, String> {
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Step::KeepAlive);
        }
        if data.trim_ascii() == b"[DONE]" {
            return self.whole().map(|()| Step::Done);
        }
        let chunk =
            chunk::parse(data, self.keep).map_err(|e| format!("a chat chunk that is not understood: {e}"))?;
        if chunk.keepalive {
            return Ok(Step::KeepAlive);
        }
        let error = chunk.error.as_deref().cloned();
        self.chunk(chunk)?;
        Ok(Step::Chunk(error))
    }

    /// Whether at least one choice appeared and every one has a `finish_reason` (a chat
    /// stream that ends cleanly without `[DONE]` is whole then).
    pub fn all_choices_finished(&self) -> bool {
        let choices = &self.answer.choices;
        !choices.is_empty() && choices.values().all(|c| c.finish_reason.is_some())
    }

    /// The last non-null `usage` so far (kept in both folds: it is small, and what the
    /// answer cost).
    pub fn usage(&self) -> Option<&Value> {
        self.answer.usage.as_ref()
    }

    /// The folded answer, if it is a whole one.
    pub fn finish(self) -> Result<Answer, String> {
        self.whole()?;
        Ok(self.answer)
    }

    /// An answer has a choice (or reports an error): `[DONE]` alone is not an answer.
    fn whole(&self) -> Result<(), String> {
        if self.answer.choices.is_empty() && self.answer.error.is_none() {
            return Err("the chat answer has no choice (nothing but [DONE] or empty chunks)".into());
        }
        Ok(())
    }

    fn chunk(&mut self, chunk: Chunk) -> Result<(), String> {
        if self.keep == Keep::Everything {
            self.held += kept_bytes(&chunk);
        }
        let answer = &mut self.answer;
        answer.repaired += chunk.repaired;
        for (key, value) in chunk.meta {
            let empty = value == "" || value == 0;
            if !empty && !answer.meta.contains_key(key) {
                answer.meta.insert(key.to_string(), value);
            }
        }
        answer.usage = chunk.usage.map(|v| *v).or(answer.usage.take());
        answer.prompt_filter_results =
            chunk.prompt_filter_results.map(|v| *v).or(answer.prompt_filter_results.take());
        answer.error = chunk.error.map(|v| *v).or(answer.error.take());
        let keep = self.keep == Keep::Everything;
        for c in chunk.choices {
            let choice = answer.choices.entry(c.index).or_default();
            let delta = c.delta;
            if delta.role.is_some() {
                choice.role = delta.role;
            }
            choice.content.push(delta.content, keep);
            choice.reasoning.push(delta.reasoning, keep);
            choice.refusal.push(delta.refusal, keep);
            for call in delta.tool_calls {
                let index = call_index(&choice.tool_calls, &call);
                merge_call(choice.tool_calls.entry(index).or_default(), call, keep)?;
            }
            if let Some(call) = delta.function_call {
                merge_call(choice.function_call.get_or_insert_with(Call::default), *call, keep)?;
            }
            if c.finish_reason.is_some() {
                choice.finish_reason = c.finish_reason;
            }
            if let Some(items) = c.logprobs.as_ref().and_then(|l| l["content"].as_array()).filter(|_| keep) {
                choice.logprobs.extend(items.iter().cloned());
            }
        }
        Ok(())
    }
}

/// About what a chunk's pieces hold once kept (see `Fold::held`).
fn kept_bytes(chunk: &Chunk) -> usize {
    let piece = |p: &Option<String>| p.as_ref().filter(|p| !p.is_empty()).map_or(0, |p| PIECE + p.len());
    let call = |c: &CallDelta| piece(&c.arguments);
    let logprobs = |l: &Value| {
        l["content"]
            .as_array()
            .map_or(0, |items| items.iter().map(|i| PIECE + VALUE * i.to_string().len()).sum())
    };
    let choice = |c: &chunk::Choice| {
        let d = &c.delta;
        piece(&d.content)
            + piece(&d.reasoning)
            + piece(&d.refusal)
            + d.tool_calls.iter().map(call).sum::<usize>()
            + d.function_call.as_deref().map_or(0, call)
            + c.logprobs.as_deref().map_or(0, logprobs)
    };
    chunk.choices.iter().map(choice).sum()
}

/// A tool-call delta's call: its `index`; without one, the call with its `id`, a new call for
/// a new id, or the last call.
fn call_index(calls: &BTreeMap<u64, Call>, call: &CallDelta) -> u64 {
    if let Some(index) = call.index {
        return index;
    }
    let next = calls.keys().next_back().map_or(0, |k| k + 1);
    match call.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => calls.iter().find(|(_, c)| c.id.as_deref() == Some(id)).map_or(next, |(k, _)| *k),
        None => next.saturating_sub(1),
    }
}

fn merge_call(call: &mut Call, delta: CallDelta, keep: bool) -> Result<(), String> {
    if call.id.is_none() {
        call.id = delta.id.filter(|id| !id.is_empty());
    }
    if delta.kind.is_some() {
        call.kind = delta.kind;
    }
    // Names usually come whole, once; some servers repeat them, a few split them.
    match delta.name.filter(|n| !n.is_empty()) {
        Some(name) if name != call.name => call.name.push_str(&name),
        Some(_) => {}
        None if call.name.is_empty() => return Err("a tool call without a name".into()),
        None => {}
    }
    if let Some(arguments) = delta.arguments.filter(|a| keep && !a.is_empty()) {
        call.arguments.push(arguments);
    }
    Ok(())
}

/// Fold a complete chat stream, given in pieces: up to its `[DONE]` (or its end), nothing after.
pub fn fold<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Answer, String> {
    let mut fold = Fold::new(Keep::Everything);
    let mut failure = None;
    let mut parser = Parser::new();
    let mut on_event = |event: Event| match fold.event(event.data) {
        Ok(Step::Done) => false,
        Ok(Step::Chunk(_) | Step::KeepAlive) => true,
        Err(reason) => {
            failure = Some(reason);
            false
        }
    };
    let mut stopped = false;
    for piece in pieces {
        if let Fed::Stopped { .. } = parser.feed(piece, &mut on_event) {
            stopped = true;
            break;
        }
    }
    if !stopped {
        parser.finish(&mut on_event);
    }
    match failure {
        Some(reason) => Err(reason),
        None => fold.finish(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::body::Body;
    use crate::check::{Api, Progress, Verdict};
    use crate::sse::Parser;
    use crate::translate::events::{to_responses, Ids, Status};
    use crate::translate::ToolMap;
    use crate::{assemble, fold};

    /// A chat stream of these `data` payloads, each its own event.
    fn stream(datas: &[&str]) -> String {
        datas.iter().map(|d| format!("data: {d}\n\n")).collect()
    }

    fn content(text: &str) -> String {
        json!({"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            .to_string()
    }

    fn call(call: serde_json::Value) -> String {
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]}).to_string()
    }

    const STOP: &str = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;

    /// The read-time check's last verdict over the stream (it stops at the terminal event).
    fn checked(s: &str) -> String {
        let (mut parser, mut progress, mut last) = (Parser::new(), Progress::default(), Verdict::Pending);
        parser.feed(s.as_bytes(), |event| {
            last = progress.observe(Api::Chat, &event);
            matches!(last, Verdict::Pending | Verdict::KeepAlive)
        });
        match last {
            Verdict::Complete => "understood".into(),
            Verdict::Malformed(_) => "malformed".into(),
            other => format!("{other:?}"),
        }
    }

    /// `text | name(arguments) ...` from the `chat.completion` of a non-streaming client.
    fn assembled(s: &str) -> String {
        let Ok(chat) = assemble::chat(&Body::from(s.as_bytes().to_vec())) else { return "malformed".into() };
        let m = &chat.completion["choices"][0]["message"];
        let mut out = vec![m["content"].as_str().unwrap_or("").to_string()];
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}({})",
                c["function"]["name"].as_str().unwrap(),
                c["function"]["arguments"].as_str().unwrap()
            ));
        }
        out.join(" | ")
    }

    /// The same from the Responses object a translated client gets.
    fn translated(s: &str) -> String {
        let got = to_responses(&[s.as_bytes()], &ToolMap::default(), &json!({}), &mut Ids::new(1));
        if matches!(&got.status, Status::Failed { message, .. } if message.contains("malformed")) {
            return "malformed".into();
        }
        let response = got.response();
        let output = response["output"].as_array().unwrap();
        let text = output
            .iter()
            .find(|i| i["type"] == "message")
            .map_or("", |m| m["content"][0]["text"].as_str().unwrap());
        let mut out = vec![text.to_string()];
        for c in output.iter().filter(|i| i["type"] == "function_call") {
            out.push(format!("{}({})", c["name"].as_str().unwrap(), c["arguments"].as_str().unwrap()));
        }
        out.join(" | ")
    }

    /// Each shape of issue 17, through the fold and all three of its consumers: the read-time
    /// check, the non-streaming chat client, the translated Responses client.
    #[test]
    #[rustfmt::skip] // one row per case
    fn every_consumer_reads_a_chat_answer_the_same_way() {
        let parts = r#"{"choices":[{"index":0,"delta":{"content":[{"type":"text","text":"Hello"},{"type":"text","text":" world"}]}}]}"#;
        let number = r#"{"choices":[{"index":0,"delta":{"content":42}}]}"#;
        let object_args = call(json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": {"cmd": "ls"}}}));
        let nameless = call(json!({"index": 0, "id": "call_1", "function": {"arguments": "{}"}}));
        let named_first = call(json!({"index": 0, "id": "call_1", "function": {"name": "shell", "arguments": "{\"a\":"}}));
        let continued = call(json!({"index": 0, "function": {"arguments": "1}"}}));
        let repeated = call(json!({"index": 0, "function": {"name": "shell", "arguments": ""}}));
        // no `index`: a new id is a new call, no id continues the last one
        let first = call(json!({"id": "a", "function": {"name": "one", "arguments": "{"}}));
        let second = call(json!({"id": "b", "function": {"name": "two", "arguments": "["}}));
        let rest = call(json!({"function": {"arguments": "]"}}));
        let back = call(json!({"id": "a", "function": {"arguments": "}"}}));
        let lone = content("half \u{0}").replace("\\u0000", "\\ud83d");
        let cases: Vec<(&str, String, &str)> = vec![
            ("plain", stream(&[&content("a"), &content("b"), STOP, "[DONE]"]), "ab"),
            ("lone surrogate", stream(&[&content("before "), &lone, &content(" after"), STOP, "[DONE]"]), "before half \u{fffd} after"),
            ("content parts", stream(&[parts, STOP, "[DONE]"]), "Hello world"),
            ("content number", stream(&[&content("a"), number, STOP, "[DONE]"]), "malformed"),
            ("object arguments", stream(&[&object_args, STOP, "[DONE]"]), r#" | shell({"cmd":"ls"})"#),
            ("nameless call", stream(&[&nameless, STOP, "[DONE]"]), "malformed"),
            ("name came earlier", stream(&[&named_first, &continued, &repeated, STOP, "[DONE]"]), r#" | shell({"a":1})"#),
            ("calls without index", stream(&[&first, &second, &rest, &back, STOP, "[DONE]"]), " | one({}) | two([])"),
            ("data after [DONE]", stream(&[&content("x"), STOP, "[DONE]", &content("after done")]), "x"),
            ("garbage after [DONE]", stream(&[&content("x"), STOP, "[DONE]", "{oops"]), "x"),
            ("only [DONE]", stream(&["[DONE]"]), "malformed"),
            ("no choice, then [DONE]", stream(&[r#"{"choices":[],"prompt_filter_results":[]}"#, "[DONE]"]), "malformed"),
            ("no [DONE], every choice finished", stream(&[&content("x"), STOP]), "x"),
        ];
        for (name, s, expected) in cases {
            let verdict = if expected == "malformed" { "malformed" } else { "understood" };
            assert_eq!(fold::fold([s.as_bytes()]).is_ok(), verdict == "understood", "{name}: the fold");
            if name != "no [DONE], every choice finished" {
                assert_eq!(checked(&s), verdict, "{name}: the read-time check");
            }
            assert_eq!(assembled(&s), expected, "{name}: the chat client");
            assert_eq!(translated(&s), expected, "{name}: the Responses client");
        }
    }

    #[test]
    fn lone_surrogates_are_counted() {
        let lone = content("\u{0}").replace("\\u0000", "\\ud83d");
        let s = stream(&[&lone, &lone, STOP, "[DONE]"]);
        assert_eq!(fold::fold([s.as_bytes()]).unwrap().repaired, 2);
        assert_eq!(assemble::chat(&Body::from(s.clone().into_bytes())).unwrap().repaired, 2);
        let got = to_responses(&[s.as_bytes()], &ToolMap::default(), &json!({}), &mut Ids::new(1));
        assert_eq!(got.repaired, 2);
    }

    /// However the stream is cut into pieces, the answer is the same (data after `[DONE]`
    /// included, whichever piece it shares with it).
    #[test]
    fn the_answer_does_not_depend_on_the_reads() {
        let s = stream(&[&content("x"), STOP, "[DONE]", &content("after done")]);
        let whole = assembled(&s);
        for cut in 0..=s.len() {
            let pieces = [&s.as_bytes()[..cut], &s.as_bytes()[cut..]];
            let answer = fold::fold(pieces).unwrap();
            assert_eq!(answer.choices[&0].content.joined().as_deref(), Some("x"), "cut at {cut}");
        }
        assert_eq!(whole, "x");
    }
}
