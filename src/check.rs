//! What one SSE event means for the answer: still going, complete, or failed.
//!
//! Decisions are made on the parsed JSON of each event, never on substrings of raw bytes:
//! model output may contain any words, and every Responses API object carries `"error": null`.
//! This module knows both wire APIs (Responses and Chat Completions) and which error codes are
//! worth another attempt. It does not read sockets and does not decide how long to wait.
//!
//! `Progress` adds up the events of one stream. A chat stream is folded as it arrives by the
//! same fold that later makes the client's answer (`fold.rs`, keeping only the answer's
//! shape, or the whole answer when a translation is to be made from it), so a chunk that fold would not understand fails the attempt as malformed (and it
//! is retried) instead of reaching the client as a silently wrong answer; `[DONE]` before any
//! choice is malformed too. A chat stream that ends cleanly without `data: [DONE]` (older
//! llama.cpp, TGI, mistral.rs, some gateways) is complete when every choice that appeared (by
//! `index`) has a `finish_reason`. Empty events and
//! `{"type":"keepalive"}` pings are `KeepAlive`: they show the connection is alive, not that
//! the answer moves on, so they do not reset the event-stall clock in `upstream/read.rs`.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

pub use crate::api::Api;
use crate::error::StreamError;
use crate::fold::{self, Fold, Keep, Step};
use crate::retry;
use crate::sse::Event;
use crate::usage::{self, Usage};

/// What an event says about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing decisive: keep reading.
    Pending,
    /// No news: an empty event or a keep-alive ping. Not progress.
    KeepAlive,
    /// The terminal event of a complete answer.
    Complete,
    /// The stream reports an error.
    Failed(StreamError),
    /// The event's data is not what the API sends (not JSON): the stream is corrupt.
    Malformed(String),
}

/// The verdict of one event of an `api` stream, on its own: what a whole chat answer needs
/// (a choice before `[DONE]`, a name in a tool call's first piece) is `Progress`'s to judge.
pub fn observe(api: Api, event: &Event) -> Verdict {
    if api == Api::Chat && event.data.trim_ascii() == b"[DONE]" {
        return Verdict::Complete;
    }
    Progress::default().observe(api, event)
}

/// What the events of one stream add up to so far.
#[derive(Debug, Default)]
pub struct Progress {
    /// Chat: the answer's shape, folded by the same rules as every consumer of it.
    chat: Fold,
    /// Responses: the usage of the last terminal (or failed) event that had one.
    usage: Option<Usage>,
}

impl Progress {
    /// A stream's progress whose chat fold keeps `keep`: `Everything` when the answer is to be
    /// made from that fold (a translation), so that it is not parsed a second time.
    pub fn new(keep: Keep) -> Progress {
        Progress { chat: Fold::new(keep), usage: None }
    }

    /// About what the chat fold holds (`Fold::held`).
    pub fn held(&self) -> usize {
        self.chat.held()
    }

    /// The chat answer folded so far, if it is a whole one (`Fold::finish`).
    pub fn finish(self) -> Result<fold::Answer, String> {
        self.chat.finish()
    }

    /// The verdict of the next event of the stream; remembers the chat answer's shape.
    pub fn observe(&mut self, api: Api, event: &Event) -> Verdict {
        let data = event.data;
        if data.iter().all(u8::is_ascii_whitespace) {
            return Verdict::KeepAlive;
        }
        if api == Api::Chat {
            return match self.chat.event(data) {
                Ok(Step::Done) => Verdict::Complete,
                Ok(Step::KeepAlive) => Verdict::KeepAlive,
                Ok(Step::Chunk(None)) => Verdict::Pending,
                Ok(Step::Chunk(Some(error))) => chat(&error),
                Err(reason) => Verdict::Malformed(reason),
            };
        }
        let (verdict, usage) = match quick(event.name, data) {
            Some(quick) => quick,
            None => match serde_json::from_slice::<Value>(data) {
                Ok(value) if value["type"] == "keepalive" => (Verdict::KeepAlive, None),
                Ok(value) => (responses(event.name, &value), Usage::from_value(&value["response"]["usage"])),
                Err(e) => (Verdict::Malformed(format!("event data is not JSON: {e}")), None),
            },
        };
        // An end (complete or failed) says what the answer cost.
        if matches!(verdict, Verdict::Complete | Verdict::Failed(_)) {
            self.usage = usage.or(self.usage);
        }
        verdict
    }

    /// The usage the stream reported so far: a Responses stream's terminal event's, a chat
    /// stream's last non-null `usage`.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.or_else(|| self.chat.usage().and_then(Usage::from_value))
    }

    /// Whether a chat stream whose body ends cleanly now holds a whole answer: at least one
    /// choice appeared and every one has finished.
    pub fn all_choices_finished(&self) -> bool {
        self.chat.all_choices_finished()
    }
}

/// The common case of a Responses event without building a tree: the event is parsed (and so
/// validated) with every value skipped but `type` and `response.usage`. `None` when the event
/// needs the full parse: an error, a failure, or anything unusual (escaped keys, a non-string
/// type).
fn quick(name: &[u8], data: &[u8]) -> Option<(Verdict, Option<Usage>)> {
    let mut json = serde_json::Deserializer::from_slice(data);
    let head = HeadSeed.deserialize(&mut json).ok()?;
    json.end().ok()?;
    let kind = match head.kind {
        Some("keepalive") => return Some((Verdict::KeepAlive, None)),
        Some(kind) => kind,
        None => std::str::from_utf8(name).ok()?,
    };
    let usage = head.usage;
    match kind {
        "response.completed" | "response.incomplete" => Some((Verdict::Complete, usage)),
        "response.failed" | "error" => None,
        _ => Some((Verdict::Pending, usage)),
    }
}

/// What `quick` needs from an event's top-level object.
#[derive(Default)]
struct Head<'a> {
    /// `type`, when it is a string without escapes.
    kind: Option<&'a str>,
    /// `response.usage`, read as it goes by.
    usage: Option<Usage>,
}

/// Reads a `Head`.
struct HeadSeed;

impl<'de> DeserializeSeed<'de> for HeadSeed {
    type Value = Head<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Head<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Head<'de>, M::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "type" => head.kind = Some(map.next_value()?),
                // Only an end says what the answer cost: the others' `response` is skipped
                // whole (when `type` came first, as servers write it).
                "response" if head.kind.is_none_or(is_end) => {
                    head.usage = map.next_value_seed(usage::InResponse)?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }
}

/// Whether a Responses event of this type ends the stream (complete or failed).
fn is_end(kind: &str) -> bool {
    matches!(kind, "response.completed" | "response.incomplete" | "response.failed")
}

fn responses(name: &[u8], value: &Value) -> Verdict {
    let kind = value["type"].as_str().unwrap_or_else(|| std::str::from_utf8(name).unwrap_or(""));
    match kind {
        "response.completed" | "response.incomplete" => Verdict::Complete,
        "response.failed" => Verdict::Failed(stream_error(&value["response"]["error"], "response failed")),
        // `{"type":"error","code":..,"message":..}` or `{"type":"error","error":{..}}`
        "error" if value["error"].is_object() => {
            Verdict::Failed(stream_error(&value["error"], "error event"))
        }
        "error" => Verdict::Failed(stream_error(value, "error event")),
        _ => Verdict::Pending,
    }
}

/// The verdict of a chat chunk's (or a JSON body's) `error`.
fn chat(error: &Value) -> Verdict {
    match error {
        Value::Null => Verdict::Pending,
        Value::String(message) => Verdict::Failed(stream_error(&Value::Null, message)),
        error => Verdict::Failed(stream_error(error, "error in stream")),
    }
}

/// The error a JSON body reports (`{"error": {...}}` or `{"error": "..."}`), judged like an
/// in-stream error: for a success status on a stream route that came without a stream.
pub fn body_error(body: &[u8]) -> Option<StreamError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    match chat(&value["error"]) {
        Verdict::Failed(e) => Some(e),
        _ => None,
    }
}

/// A `StreamError` from an error object (`code`, `type`, `message`), with a fallback message.
fn stream_error(error: &Value, fallback: &str) -> StreamError {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let code = text(&error["code"]);
    let kind = text(&error["type"]).filter(|t| t != "error");
    let message = text(&error["message"]).unwrap_or_else(|| fallback.to_string());
    StreamError {
        retryable: is_retryable(code.as_deref(), kind.as_deref()),
        hint: retry::hint_from_message(&message),
        code,
        kind,
        message,
    }
}

/// Error codes that another attempt cannot fix: the client must see them.
const FINAL_CODES: &[&str] = &[
    "context_length_exceeded",
    "insufficient_quota",
    "invalid_prompt",
    "invalid_request_error",
    "invalid_api_key",
    "invalid_model",
    "model_not_found",
    "content_filter",
    "content_policy_violation",
    "responsibleaipolicyviolation",
    "unsupported_parameter",
    "unsupported_value",
    "invalid_value",
    "invalid_type",
    "missing_required_parameter",
    "string_above_max_length",
    "invalid_image",
    "invalid_image_url",
    "image_too_large",
    "deploymentnotfound",
    "400",
    "401",
    "403",
    "404",
];

/// Error codes that say "later may work".
const RETRY_CODES: &[&str] = &[
    "rate_limit_exceeded",
    "server_error",
    "server_is_overloaded",
    "overloaded",
    "service_unavailable",
    "engine_overloaded",
    "internal_error",
    "timeout",
    "too_many_requests",
    "429",
    "500",
    "502",
    "503",
    "504",
];

/// Error types (the `type` field) that another attempt cannot fix.
const FINAL_KINDS: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "insufficient_quota",
];

/// Whether an in-stream error may go away on another attempt. Known final codes are final,
/// known transient codes are retried, then the `type` decides; an unknown error mid-stream is
/// treated as transient, since the request itself was accepted.
pub fn is_retryable(code: Option<&str>, kind: Option<&str>) -> bool {
    let lower = |s: Option<&str>| s.map(str::to_ascii_lowercase);
    let (code, kind) = (lower(code), lower(kind));
    if let Some(code) = code.as_deref() {
        if FINAL_CODES.contains(&code) {
            return false;
        }
        if RETRY_CODES.contains(&code) {
            return true;
        }
    }
    !kind.is_some_and(|k| FINAL_KINDS.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(api: Api, name: &str, data: &str) -> Verdict {
        let event = Event { name: name.as_bytes(), data: data.as_bytes() };
        observe(api, &event)
    }

    /// Short form of a verdict for the table below.
    fn short(v: &Verdict) -> String {
        match v {
            Verdict::Pending => "pending".into(),
            Verdict::KeepAlive => "keepalive".into(),
            Verdict::Complete => "complete".into(),
            Verdict::Malformed(_) => "malformed".into(),
            Verdict::Failed(e) => format!(
                "failed {} {}{}",
                e.code.as_deref().unwrap_or("-"),
                if e.retryable { "retry" } else { "final" },
                e.hint.map(|h| format!(" {}s", h.as_secs_f64())).unwrap_or_default()
            ),
        }
    }

    #[test]
    fn responses_events() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "response.created",
                r#"{"type":"response.created","response":{"status":"in_progress","error":null}}"#,
                "pending",
            ),
            (
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","delta":"response.failed error rate_limit_exceeded"}"#,
                "pending",
            ),
            (
                "response.completed",
                r#"{"type":"response.completed","response":{"status":"completed","error":null}}"#,
                "complete",
            ),
            (
                "response.incomplete",
                r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"error":null}}"#,
                "complete",
            ),
            ("", r#"{"type":"response.completed","response":{}}"#, "complete"),
            (
                "response.failed",
                r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"rate_limit_exceeded","message":"Please try again in 2s."}}}"#,
                "failed rate_limit_exceeded retry 2s",
            ),
            (
                "response.failed",
                r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"oops"}}}"#,
                "failed server_error retry",
            ),
            (
                "response.failed",
                r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"context_length_exceeded","message":"too long"}}}"#,
                "failed context_length_exceeded final",
            ),
            (
                "response.failed",
                r#"{"type":"response.failed","response":{"status":"failed","error":null}}"#,
                "failed - retry",
            ),
            (
                "error",
                r#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null,"sequence_number":3}"#,
                "failed rate_limit_exceeded retry",
            ),
            (
                "error",
                r#"{"type":"error","error":{"type":"invalid_request_error","code":"invalid_prompt","message":"no"}}"#,
                "failed invalid_prompt final",
            ),
            (
                "error",
                r#"{"type":"error","error":{"type":"insufficient_quota","code":"insufficient_quota","message":"pay"}}"#,
                "failed insufficient_quota final",
            ),
            (
                "error",
                r#"{"type":"error","error":{"type":"server_error","code":null,"message":"boom"}}"#,
                "failed - retry",
            ),
            ("", "not json", "malformed"),
            ("", "", "keepalive"),
            ("", " \n", "keepalive"),
            ("", r#"{"type":"keepalive"}"#, "keepalive"),
            ("", r#"{"type":"keep\u0061live"}"#, "keepalive"),
            ("keepalive", "{}", "pending"),
        ];
        for (name, data, expected) in cases {
            assert_eq!(short(&verdict(Api::Responses, name, data)), *expected, "{name} {data}");
        }
    }

    #[test]
    fn chat_events() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
                "pending",
            ),
            (
                r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"error: [DONE]"},"finish_reason":null}]}"#,
                "pending",
            ),
            (r#"{"id":"c1","choices":[],"error":null}"#, "pending"),
            ("[DONE]", "complete"),
            (" [DONE] ", "complete"),
            (
                r#"{"error":{"message":"Rate limit. Please retry after 3 seconds.","type":"requests","code":"429"}}"#,
                "failed 429 retry 3s",
            ),
            (
                r#"{"error":{"message":"context too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
                "failed context_length_exceeded final",
            ),
            (r#"{"error":{"message":"internal","code":500}}"#, "failed 500 retry"),
            (r#"{"error":"something broke"}"#, "failed - retry"),
            ("{truncated", "malformed"),
            (r#"{"type":"keepalive"}"#, "keepalive"),
            ("", "keepalive"),
        ];
        for (data, expected) in cases {
            assert_eq!(short(&verdict(Api::Chat, "", data)), *expected, "{data}");
        }
    }

    /// What a stream reports it cost, read from the events the check sees anyway: a
    /// Responses end (completed, incomplete, failed), a chat stream's last non-null `usage`
    /// (Azure's shape, OpenAI's `usage: null` in every chunk, an error after the usage chunk).
    #[test]
    #[rustfmt::skip] // one row per stream
    fn usage_of_a_stream() {
        use crate::usage::Usage;
        let u = |input, cached, output, reasoning| Some(Usage { input, cached, output, reasoning });
        let responses_usage = r#"{"input_tokens":1200,"input_tokens_details":{"cached_tokens":1024},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":192},"total_tokens":1500}"#;
        let created = r#"{"type":"response.created","response":{"status":"in_progress","usage":null,"error":null}}"#;
        let completed = format!(r#"{{"type":"response.completed","response":{{"status":"completed","error":null,"usage":{responses_usage}}}}}"#);
        let failed = format!(r#"{{"type":"response.failed","response":{{"status":"failed","error":{{"code":"server_error","message":"x"}},"usage":{responses_usage}}}}}"#);
        let failed_bare = r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"x"}}}"#;
        let azure_text = r#"{"choices":[{"content_filter_results":{},"delta":{"content":"hi"},"finish_reason":null,"index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":null}"#;
        let azure_stop = r#"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":null}"#;
        let azure_usage = r#"{"choices":[],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":{"completion_tokens":42,"completion_tokens_details":{"reasoning_tokens":0},"prompt_tokens":2006,"prompt_tokens_details":{"cached_tokens":1920},"total_tokens":2048}}"#;
        let error = r#"{"error":{"code":"server_error","message":"boom"}}"#;
        let type_after = format!(r#"{{"response":{{"usage":{responses_usage}}},"type":"response.incomplete"}}"#);
        let not_an_end = format!(r#"{{"type":"response.in_progress","response":{{"usage":{responses_usage}}}}}"#);
        let escaped = format!(r#"{{"type":"response.completed","\u0072esponse":{{"usage":{responses_usage}}}}}"#);
        let cases: Vec<(&str, Api, Vec<&str>, Option<Usage>)> = vec![
            ("responses completed", Api::Responses, vec![created, &completed], u(1200, 1024, 300, 192)),
            ("responses failed with usage", Api::Responses, vec![created, &failed], u(1200, 1024, 300, 192)),
            ("responses failed without", Api::Responses, vec![created, failed_bare], None),
            ("responses, created only", Api::Responses, vec![created], None),
            ("responses, type after response", Api::Responses, vec![&type_after], u(1200, 1024, 300, 192)),
            ("responses, usage on an event that is no end", Api::Responses, vec![&not_an_end], None),
            ("responses, escaped key: the full parse", Api::Responses, vec![&escaped], u(1200, 1024, 300, 192)),
            ("azure chat with usage", Api::Chat, vec![azure_text, azure_stop, azure_usage, "[DONE]"], u(2006, 1920, 42, 0)),
            ("chat without include_usage", Api::Chat, vec![azure_text, azure_stop, "[DONE]"], None),
            ("chat error after usage", Api::Chat, vec![azure_text, azure_usage, error], u(2006, 1920, 42, 0)),
            ("chat usage in the last choice chunk", Api::Chat, vec![azure_text, r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#], u(3, 0, 4, 0)),
        ];
        for (name, api, events, expected) in cases {
            let mut progress = Progress::default();
            for data in events {
                progress.observe(api, &Event { name: b"", data: data.as_bytes() });
            }
            assert_eq!(progress.usage(), expected, "{name}");
        }
    }

    /// A chat stream without `[DONE]` is whole when every choice seen has finished.
    #[test]
    fn chat_choices_finish() {
        let chunk =
            |choices: &str| format!(r#"{{"id":"c","object":"chat.completion.chunk","choices":{choices}}}"#);
        let open = |i: u32| format!(r#"{{"index":{i},"delta":{{"content":"x"}},"finish_reason":null}}"#);
        let done = |i: u32| format!(r#"{{"index":{i},"delta":{{}},"finish_reason":"stop"}}"#);
        let cases: Vec<(Vec<String>, bool)> = vec![
            (vec![], false),
            (vec![chunk("[]")], false),
            (vec![chunk(&format!("[{}]", open(0)))], false),
            (vec![chunk(&format!("[{}]", open(0))), chunk(&format!("[{}]", done(0)))], true),
            (vec![chunk(&format!("[{}]", done(0))), chunk("[]")], true),
            (vec![chunk(&format!("[{},{}]", open(0), open(1))), chunk(&format!("[{}]", done(0)))], false),
            (vec![chunk(&format!("[{},{}]", open(0), open(1))), chunk(&format!("[{}]", done(1))), chunk(&format!("[{}]", done(0)))], true),
            (vec![chunk(&format!("[{}]", open(1))), chunk(&format!("[{}]", done(0)))], false),
            (vec![chunk(r#"[{"delta":{},"finish_reason":"length"}]"#)], true),
            (vec![chunk(r#"null"#), chunk(&format!("[{}]", done(0)))], true),
            (vec![r#"{"choices":[{"index":0,"finish_reason":"stop","delta":{"content":"\u00e9"}}],"x":1e400}"#.to_string()], true),
            (vec![r#"{"choices":[{"index":"0","finish_reason":"stop"}]}"#.to_string()], true),
            (vec![r#"{"choices":[{"index":0,"finish_reason":"stop"}],"error":{"code":"server_error"}}"#.to_string()], true),
        ];
        for (events, expected) in cases {
            let mut progress = Progress::default();
            for data in &events {
                progress.observe(Api::Chat, &Event { name: b"", data: data.as_bytes() });
            }
            assert_eq!(progress.all_choices_finished(), expected, "{events:?}");
        }
    }
}
