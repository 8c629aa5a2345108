//! The one fold of a chat stream: its chunks, in order, → one answer, or the reason it is
//! malformed.
//!
//! Every consumer of a chat answer reads it through here: the read-time check
//! (`check::Progress`, which keeps only the answer's shape), the `chat.completion` of a
//! non-streaming client (`assemble.rs`) and the Responses stream of a translated one
//! (`translate/events.rs`). So a chunk is understood the same way everywhere, or the answer
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

use crate::chunk::{self, CallDelta, Chunk};
use crate::sse::{Event, Parser};

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

/// What a fold keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Everything the answer says.
    Everything,
    /// Only what the rules need (choices, finish reasons, tool-call ids and names): the
    /// read-time check, which must not hold the answer's text twice.
    Shape,
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
}

impl Default for Fold {
    fn default() -> Self {
        Fold::new(Keep::Shape)
    }
}

impl Fold {
    pub fn new(keep: Keep) -> Fold {
        Fold { keep, answer: Answer::default() }
    }

    /// Fold in the data of the next event; `Err` says why the answer is malformed.
    pub fn event(&mut self, data: &[u8]) -> Result<Step, String> {
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Step::KeepAlive);
        }
        if data.trim_ascii() == b"[DONE]" {
            return self.whole().map(|()| Step::Done);
        }
        let chunk = chunk::parse(data).map_err(|e| format!("a chat chunk that is not understood: {e}"))?;
        if chunk.keepalive {
            return Ok(Step::KeepAlive);
        }
        let error = chunk.error.clone();
        self.chunk(chunk)?;
        Ok(Step::Chunk(error))
    }

    /// Whether at least one choice appeared and every one has a `finish_reason` (a chat
    /// stream that ends cleanly without `[DONE]` is whole then).
    pub fn all_choices_finished(&self) -> bool {
        let choices = &self.answer.choices;
        !choices.is_empty() && choices.values().all(|c| c.finish_reason.is_some())
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
        let answer = &mut self.answer;
        answer.repaired += chunk.repaired;
        for (key, value) in chunk.meta {
            let empty = value == "" || value == 0;
            if !empty && !answer.meta.contains_key(key) {
                answer.meta.insert(key.to_string(), value);
            }
        }
        answer.usage = chunk.usage.or(answer.usage.take());
        answer.prompt_filter_results = chunk.prompt_filter_results.or(answer.prompt_filter_results.take());
        answer.error = chunk.error.or(answer.error.take());
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
                merge_call(choice.function_call.get_or_insert_with(Call::default), call, keep)?;
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
        if !parser.feed(piece, &mut on_event) {
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
