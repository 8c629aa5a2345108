//! The usage-only chunk a streaming chat client did not ask for: found at the end of its
//! answer and cut out before the answer is written.
//!
//! To count the tokens of a streaming chat client that did not ask for
//! `stream_options.include_usage`, the proxy asks the upstream for it (`shield.rs`); the stream
//! then ends with a chunk of its own, `"choices": []` and the `usage`, before `data: [DONE]`.
//! The client did not ask for it (clients index `choices[0]`), so it is cut here: only an
//! event whose `choices` is an empty array, whose `usage` has counts and whose other members
//! only name the answer (`ENVELOPE`) or are null. A usage on a chunk with choices (some
//! servers put it on the finish chunk), Azure's `prompt_filter_results` chunk, an upstream
//! that ignored `include_usage`: all left as they are. `locate` is pure and looks only at the
//! answer's last bytes (a copy of at most `LONGEST_LOOK`); `cut` applies it to a `Body`
//! without copying the rest. The `usage: null` OpenAI then puts on every other chunk stays:
//! many servers always send it. Counting the usage is not done here (`check.rs` reads it
//! while the stream arrives).

use std::ops::Range;

use serde_json::{Map, Value};

use crate::body::Body;
use crate::usage::Usage;

/// Members of a chat chunk that only say which answer it belongs to.
const ENVELOPE: [&str; 7] =
    ["id", "object", "created", "model", "system_fingerprint", "service_tier", "obfuscation"];

/// The first look at an answer's end: a usage chunk and `[DONE]` take a few hundred bytes.
const FIRST_LOOK: usize = 2 * 1024;

/// The widest look: a last event longer than that is no usage-only chunk.
const LONGEST_LOOK: usize = 64 * 1024;

/// What the last bytes of an answer show.
#[derive(Debug, PartialEq, Eq)]
enum Find {
    /// The usage-only chunk's event, from its first line to the end of its blank line.
    Cut(Range<usize>),
    /// The last data event (`[DONE]` and comments aside) is not a usage-only chunk, or there
    /// is none.
    Keep,
    /// The last data event may start before these bytes.
    Wider,
}

/// Where, in the answer made of `pieces`, the usage-only chunk is, if its last data event
/// (`[DONE]` and comment lines aside) is one: the bytes of that event, blank line included.
pub fn locate(pieces: &[&[u8]]) -> Option<Range<usize>> {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut look = FIRST_LOOK;
    loop {
        let n = look.min(len);
        let end = last_bytes(pieces, n);
        match find(&end, n == len) {
            Find::Cut(range) => return Some(len - n + range.start..len - n + range.end),
            Find::Keep => return None,
            Find::Wider if n == len || look >= LONGEST_LOOK => return None,
            Find::Wider => look = (look * 4).min(LONGEST_LOOK),
        }
    }
}

/// Cut the usage-only chunk out of `body`, if it ends with one (`locate`): only the bytes
/// after it are copied. Whether there was one.
pub fn cut(body: &mut Body) -> bool {
    let pieces: Vec<&[u8]> = body.chunks().collect();
    let Some(range) = locate(&pieces) else { return false };
    let after = last_bytes(&pieces, body.len() - range.end);
    drop(pieces);
    body.truncate(range.start);
    body.push(&after);
    true
}

/// The last `n` bytes of `pieces`, copied.
fn last_bytes(pieces: &[&[u8]], n: usize) -> Vec<u8> {
    let mut parts = Vec::new();
    let mut left = n;
    for piece in pieces.iter().rev() {
        if left == 0 {
            break;
        }
        let take = left.min(piece.len());
        parts.push(&piece[piece.len() - take..]);
        left -= take;
    }
    parts.iter().rev().flat_map(|p| p.iter().copied()).collect()
}

/// `find` on an answer's last bytes `end`; `whole`: they are all of it (else the first line
/// may be part of one, and the first event part of one).
fn find(end: &[u8], whole: bool) -> Find {
    let events = events(end, whole);
    for (i, range) in events.iter().enumerate().rev() {
        if i == 0 && !whole {
            return Find::Wider;
        }
        let Some(data) = data(&end[range.clone()]) else { continue };
        if data.trim_ascii() == b"[DONE]" {
            continue;
        }
        return match usage_only(&data) {
            true => Find::Cut(range.clone()),
            false => Find::Keep,
        };
    }
    match whole {
        true => Find::Keep,
        false => Find::Wider,
    }
}

/// The events of `end`, each from its first line to the end of the blank line after it (or
/// to the end of `end`). Not `whole`: the first line is skipped (it may be a piece of one,
/// even the `\n` of a `\r\n`) and what follows it up to a blank line is the first event.
/// Lines end in `\n` or `\r\n`.
fn events(end: &[u8], whole: bool) -> Vec<Range<usize>> {
    let mut at = match whole {
        true => 0,
        false => end.iter().position(|&b| b == b'\n').map_or(end.len(), |i| i + 1),
    };
    let mut events = Vec::new();
    let mut start = at;
    while at < end.len() {
        let line_end = end[at..].iter().position(|&b| b == b'\n').map_or(end.len(), |i| at + i + 1);
        let line = end[at..line_end].strip_suffix(b"\n").unwrap_or(&end[at..line_end]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at = line_end;
        if line.is_empty() {
            events.push(start..at);
            start = at;
        }
    }
    if start < end.len() {
        events.push(start..end.len());
    }
    events
}

/// The data of one event's lines, `None` without a `data` line (comments, nothing).
fn data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else { continue };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &mut data {
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

/// Whether a chunk's `data` is a usage-only chunk: `choices` empty, a `usage` with counts,
/// nothing else but `ENVELOPE` members and nulls.
fn usage_only(data: &[u8]) -> bool {
    let Ok(chunk) = serde_json::from_slice::<Map<String, Value>>(data) else { return false };
    let no_choices = chunk.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
    let usage = chunk.get("usage").and_then(Usage::from_value).is_some();
    let only_names = chunk
        .iter()
        .all(|(k, v)| k == "choices" || k == "usage" || ENVELOPE.contains(&k.as_str()) || v.is_null());
    no_choices && usage && only_names
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = r#"{"choices":[],"created":1764080432,"id":"chatcmpl-1","model":"gpt-4o","object":"chat.completion.chunk","system_fingerprint":"fp_1","usage":{"completion_tokens":42,"prompt_tokens":2006,"prompt_tokens_details":{"cached_tokens":1920},"total_tokens":2048}}"#;
    const TEXT: &str = r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null,"index":0}],"id":"chatcmpl-1","object":"chat.completion.chunk","usage":null}"#;
    const STOP: &str = r#"{"choices":[{"delta":{},"finish_reason":"stop","index":0}],"id":"chatcmpl-1","object":"chat.completion.chunk","usage":null}"#;
    const STOP_USAGE: &str = r#"{"choices":[{"delta":{},"finish_reason":"stop","index":0}],"id":"c","usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11}}"#;
    const AZURE_FILTER: &str = r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#;
    const AZURE_STOP: &str = r#"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1764080432,"id":"chatcmpl-1","model":"gpt-4o","object":"chat.completion.chunk","system_fingerprint":"fp_1","usage":null}"#;
    const AZURE_USAGE_FILTER: &str = r#"{"choices":[],"id":"c","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
    const VLLM_USAGE: &str = r#"{"id":"cmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"total_tokens":11,"completion_tokens":2,"prompt_tokens_details":null}}"#;
    const NULL_USAGE: &str = r#"{"choices":[],"id":"c","usage":null}"#;

    /// An SSE stream of `events` (a data payload, or a line starting with `:`), lines ending
    /// in `eol`.
    fn sse(events: &[&str], eol: &str) -> String {
        let line = |e: &str| match e.starts_with(':') {
            true => format!("{e}{eol}{eol}"),
            false => format!("data: {e}{eol}{eol}"),
        };
        events.iter().map(|e| line(e)).collect()
    }

    /// The stream of `events` without the one at `cut`.
    fn without(events: &[&str], cut: Option<usize>, eol: &str) -> String {
        let kept: Vec<&str> =
            events.iter().enumerate().filter(|(i, _)| Some(*i) != cut).map(|(_, e)| *e).collect();
        sse(&kept, eol)
    }

    /// `bytes` in pieces of `size` (the last shorter).
    fn pieces(bytes: &[u8], size: usize) -> Vec<&[u8]> {
        bytes.chunks(size).collect()
    }

    #[test]
    fn the_usage_only_chunk_and_nothing_else_is_cut() {
        let long_text =
            format!(r#"{{"choices":[{{"delta":{{"content":"{}"}},"index":0}}]}}"#, "x".repeat(5000));
        let big_usage = USAGE.replace(r#""id":"chatcmpl-1""#, &format!(r#""id":"{}""#, "i".repeat(70_000)));
        // (name, events, index of the one cut)
        let cases: &[(&str, Vec<&str>, Option<usize>)] = &[
            ("openai", vec![TEXT, STOP, USAGE, "[DONE]"], Some(2)),
            ("azure", vec![AZURE_FILTER, TEXT, AZURE_STOP, USAGE, "[DONE]"], Some(3)),
            ("vllm, no [DONE]", vec![TEXT, STOP, VLLM_USAGE], Some(2)),
            ("a trailing comment", vec![TEXT, STOP, USAGE, "[DONE]", ": done"], Some(2)),
            ("a comment before [DONE]", vec![TEXT, STOP, USAGE, ": ping", "[DONE]"], Some(2)),
            ("a long answer before it", vec![TEXT, &long_text, STOP, USAGE, "[DONE]"], Some(3)),
            ("no usage chunk: include_usage ignored", vec![TEXT, STOP, "[DONE]"], None),
            ("usage on the finish chunk", vec![TEXT, STOP_USAGE, "[DONE]"], None),
            (
                "azure: usage beside prompt_filter_results",
                vec![TEXT, STOP, AZURE_USAGE_FILTER, "[DONE]"],
                None,
            ),
            ("azure's filter chunk has no usage", vec![TEXT, STOP, AZURE_FILTER, "[DONE]"], None),
            ("usage: null", vec![TEXT, STOP, NULL_USAGE, "[DONE]"], None),
            ("usage chunk not last", vec![TEXT, USAGE, STOP, "[DONE]"], None),
            ("a usage chunk longer than the widest look", vec![TEXT, STOP, &big_usage, "[DONE]"], None),
            ("only the usage chunk", vec![USAGE, "[DONE]"], Some(0)),
            ("not JSON", vec![TEXT, STOP, "{\"choices\":[],", "[DONE]"], None),
            ("nothing", vec![], None),
        ];
        for (name, events, cut) in cases {
            for eol in ["\n", "\r\n"] {
                let stream = sse(events, eol);
                let expected = without(events, *cut, eol);
                for size in [1, 7, 100, 4096, stream.len().max(1)] {
                    let pieces = pieces(stream.as_bytes(), size);
                    let got = match locate(&pieces) {
                        Some(r) => [&stream[..r.start], &stream[r.end..]].concat(),
                        None => stream.clone(),
                    };
                    assert!(got == expected, "{name} ({eol:?}, pieces of {size}): got {got:?}");
                }
            }
        }
    }

    /// The event is found from any first byte of the look: in a line, between `\r` and `\n`,
    /// at a blank line; a multi-line event is cut whole.
    #[test]
    fn a_look_that_starts_anywhere() {
        let stream = format!("data: {TEXT}\r\n\r\ndata: {{\"choices\":[],\r\ndata: \"usage\":{{\"prompt_tokens\":1}}}}\r\n\r\ndata: [DONE]\r\n\r\n");
        let start = stream.find("data: {\"choices\":[],").unwrap();
        let expected = start..stream.len() - "data: [DONE]\r\n\r\n".len();
        let bytes = stream.as_bytes();
        for from in 0..bytes.len() {
            let got = find(&bytes[from..], from == 0);
            // A look that starts at the blank line before the event, or in it, cannot tell
            // where it starts.
            let want = match from {
                0 => Find::Cut(expected.clone()),
                f if f + 2 < start => Find::Cut(expected.start - f..expected.end - f),
                _ => Find::Wider,
            };
            assert_eq!(got, want, "look from {from}");
        }
    }

    #[test]
    fn cut_keeps_the_rest_of_a_body() {
        let mut text = String::new();
        while text.len() < 3 * crate::body::CHUNK - 400 {
            text.push_str(&format!("data: {TEXT}\n\n"));
        }
        let tail = format!("data: {USAGE}\n\ndata: [DONE]\n\n");
        // the chunks' boundary falls before, in and after the usage chunk
        for pad in [0, 20, 40, 60, 80, 100] {
            let before = format!("{text}{}", ": x\n\n".repeat(pad));
            let mut body = Body::new();
            body.push(format!("{before}{tail}").as_bytes());
            assert!(cut(&mut body));
            assert_eq!(body.to_vec(), format!("{before}data: [DONE]\n\n").into_bytes());
            assert!(!cut(&mut body), "nothing left to cut");
        }
    }
}
