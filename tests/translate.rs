//! The chat → Responses synthesis (`translate::events`), end to end on bytes.
//!
//! Golden fixtures (`tests/fixtures/translate/NAME.chat.sse` in, `NAME.responses.sse` the exact
//! stream out; `UPDATE_GOLDEN=1` rewrites the expected files, to be read before committing) and
//! property tests: for any chat answer, split anywhere, the synthesised stream is well formed.

use std::collections::{HashMap, HashSet};

use codex_shield::sse;
use codex_shield::translate::events::{to_responses, Ids, Status, Synthesis};
use codex_shield::translate::request::to_chat;
use codex_shield::translate::ToolMap;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::split;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/translate");

/// The Responses request the fixtures answer: a function, a namespace (MCP) and a custom tool.
fn request() -> Value {
    json!({
        "model": "client-model",
        "input": "q",
        "tools": [
            {"type": "function", "name": "shell", "parameters": {"type": "object"}},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
            {"type": "namespace", "name": "mcp__files__", "tools": [{"type": "function", "name": "read", "parameters": {"type": "object"}}]},
            {"type": "web_search"}
        ]
    })
}

fn synthesise(pieces: &[&[u8]]) -> Synthesis {
    let req = request();
    let (_, map) = to_chat(&req).unwrap();
    to_responses(pieces, &map, &req, &mut Ids::new(42))
}

/// The stream's events as JSON, after checking that it is well formed (see `well_formed`).
fn events(stream: &[u8]) -> Vec<Value> {
    let parsed = sse::events([stream]);
    let events: Vec<Value> = parsed
        .iter()
        .map(|(name, data)| {
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"], name.as_str(), "event name and type differ");
            v
        })
        .collect();
    well_formed(&events);
    events
}

/// Open item state while checking: its id, type, and the text its deltas built, per kind.
struct Open {
    id: String,
    kind: String,
    texts: HashMap<(String, u64), String>,
}

/// The invariants of a Responses stream, as a strict client (the `openai` SDK's accumulator,
/// Codex) relies on them.
fn well_formed(events: &[Value]) {
    assert!(events.len() >= 3, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "sequence number of event {i}");
    }
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events[1]["type"], "response.in_progress");
    let terminal = &events[events.len() - 1];
    let terminals = ["response.completed", "response.incomplete", "response.failed"];
    assert!(terminals.contains(&terminal["type"].as_str().unwrap()), "{terminal}");
    let id = &events[0]["response"]["id"];
    assert!(id.as_str().unwrap().starts_with("resp_"));
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut done: Vec<Value> = Vec::new();
    let mut ids = HashSet::new();
    let mut call_ids = HashSet::new();
    for e in &events[1..events.len() - 1] {
        let kind = e["type"].as_str().unwrap();
        assert!(!terminals.contains(&kind) && kind != "response.created", "{kind} in the middle");
        if kind == "response.in_progress" {
            assert_eq!(&e["response"]["id"], id);
            continue;
        }
        let index = e["output_index"].as_u64().unwrap();
        match kind {
            "response.output_item.added" => {
                assert_eq!(index as usize, done.len() + open.len(), "items are added in order");
                assert!(open.is_empty(), "one item at a time");
                let item_id = e["item"]["id"].as_str().unwrap().to_string();
                assert!(ids.insert(item_id.clone()), "duplicate item id {item_id}");
                let kind = e["item"]["type"].as_str().unwrap().to_string();
                open.insert(index, Open { id: item_id, kind, texts: HashMap::new() });
            }
            "response.output_item.done" => {
                let item = open.remove(&index).expect("done for an item not open");
                assert_eq!(e["item"]["id"], item.id.as_str());
                assert_eq!(e["item"]["type"], item.kind.as_str());
                check_item_text(&e["item"], &item);
                if let Some(call_id) = e["item"]["call_id"].as_str() {
                    assert!(call_ids.insert(call_id.to_string()), "duplicate call id {call_id}");
                }
                done.push(e["item"].clone());
            }
            _ => {
                let item = open.get_mut(&index).unwrap_or_else(|| panic!("{kind} for an item not open"));
                assert_eq!(e["item_id"], item.id.as_str(), "{kind}");
                let content = e["content_index"].as_u64().unwrap_or(0);
                let (family, end) = kind.rsplit_once('.').unwrap();
                let text = item.texts.entry((family.to_string(), content)).or_default();
                match end {
                    "delta" => text.push_str(e["delta"].as_str().unwrap()),
                    "done" if family.ends_with("content_part") => {}
                    "done" => {
                        let field = ["text", "arguments", "input", "refusal"]
                            .into_iter()
                            .find(|f| e[*f].is_string())
                            .unwrap_or_else(|| panic!("{kind} without its text"));
                        assert_eq!(e[field].as_str().unwrap(), text.as_str(), "{kind} != its deltas");
                    }
                    "added" => {}
                    _ => panic!("unexpected event {kind}"),
                }
            }
        }
    }
    assert!(open.is_empty(), "items never done");
    assert_eq!(&terminal["response"]["id"], id);
    assert_eq!(terminal["response"]["output"], Value::Array(done), "output != done items");
}

/// A done item's full text equals what its deltas built.
fn check_item_text(item: &Value, open: &Open) {
    let built = |family: &str, index: u64| open.texts.get(&(family.to_string(), index)).cloned();
    match open.kind.as_str() {
        "message" => {
            for (i, part) in item["content"].as_array().unwrap().iter().enumerate() {
                let (family, field) = match part["type"].as_str().unwrap() {
                    "output_text" => ("response.output_text", "text"),
                    _ => ("response.refusal", "refusal"),
                };
                assert_eq!(Some(part[field].as_str().unwrap().to_string()), built(family, i as u64));
            }
        }
        "function_call" => {
            let args = built("response.function_call_arguments", 0).unwrap_or_default();
            assert_eq!(item["arguments"].as_str().unwrap(), args);
        }
        "custom_tool_call" => {
            let input = built("response.custom_tool_call_input", 0).unwrap_or_default();
            assert_eq!(item["input"].as_str().unwrap(), input);
        }
        "reasoning" => {
            let text = built("response.reasoning_text", 0).unwrap_or_default();
            assert_eq!(item["content"][0]["text"].as_str().unwrap(), text);
        }
        other => panic!("unexpected item type {other}"),
    }
}

// ---- golden fixtures ----------------------------------------------------------------------

fn golden(name: &str) -> Synthesis {
    let input = std::fs::read(format!("{FIXTURES}/{name}.chat.sse")).unwrap();
    let got = synthesise(&[&input]);
    let path = format!("{FIXTURES}/{name}.responses.sse");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got.stream).unwrap();
    }
    let expected = std::fs::read(&path).unwrap_or_default();
    assert!(
        got.stream == expected,
        "{name}: synthesised stream differs from {path}\n--- got:\n{}",
        String::from_utf8_lossy(&got.stream)
    );
    events(&got.stream);
    // Split anywhere, the same answer.
    for cut in (0..input.len()).step_by(7) {
        let (a, b) = input.split_at(cut);
        assert_eq!(synthesise(&[a, b]).stream, got.stream, "{name} split at {cut}");
    }
    got
}

#[test]
fn golden_text_azure_crlf_usage_last() {
    let got = golden("text_azure_crlf");
    assert_eq!(got.status, Status::Completed);
    let r = &got.response();
    assert_eq!(r["model"], "gpt-4o-2024-11-20", "the upstream's model, not Azure's empty first chunk");
    assert_eq!(r["output"][0]["content"][0]["text"], "Hello, world!");
    let usage = json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 16});
    assert_eq!(r["usage"], usage);
}

#[test]
fn golden_parallel_tools_by_index() {
    let got = golden("parallel_tools");
    let response = got.response();
    let out = response["output"].as_array().unwrap();
    let short: Vec<(&str, &str, &str)> = out
        .iter()
        .map(|i| {
            let field = |k: &str| i[k].as_str().unwrap_or("-");
            (field("type"), field("namespace"), field("name"))
        })
        .collect();
    let expected = [
        ("message", "-", "-"),
        ("function_call", "mcp__files__", "read"),
        ("custom_tool_call", "-", "apply_patch"),
        ("function_call", "-", "shell"),
    ];
    assert_eq!(short, expected);
    assert_eq!(out[0]["content"][0]["text"], "Reading and patching.");
    assert_eq!(out[1]["call_id"], "call_read");
    assert_eq!(out[1]["arguments"], r#"{"path":"a.txt"}"#);
    assert_eq!(out[2]["input"], "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n");
    assert_eq!(out[3]["arguments"], r#"{"cmd":["ls"]}"#);
}

#[test]
fn golden_reasoning_then_answer() {
    let got = golden("reasoning");
    let out = &got.response()["output"];
    assert_eq!(out[0]["type"], "reasoning");
    assert_eq!(out[0]["content"][0]["text"], "The user greets. I greet back.");
    assert_eq!(out[1]["content"][0]["text"], "Hi!");
    assert_eq!(got.response()["usage"]["output_tokens_details"]["reasoning_tokens"], 9);
}

#[test]
fn golden_raw_patch_arguments() {
    let got = golden("raw_patch");
    let item = &got.response()["output"][0];
    assert_eq!(item["type"], "custom_tool_call");
    assert_eq!(item["input"], "*** Begin Patch\n*** Delete File: old.txt\n*** End Patch");
}

#[test]
fn golden_final_error() {
    let got = golden("final_error");
    let expected = Status::Failed {
        code: "context_length_exceeded".into(),
        message: "This model's maximum context length is 8192 tokens.".into(),
    };
    assert_eq!(got.status, expected);
    assert_eq!(got.response()["error"]["code"], "context_length_exceeded");
    assert_eq!(got.response()["output"], json!([]));
}

#[test]
fn golden_length_is_incomplete() {
    let got = golden("length");
    assert_eq!(got.status, Status::Incomplete("max_output_tokens"));
    assert_eq!(got.response()["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(got.response()["output"][0]["content"][0]["text"], "The answer is cut");
}

/// `response.created` and `response.in_progress` carry the response's identity and state, not
/// the request's echo (Codex reads neither object; the SDKs keep its id and output list): the
/// terminal object echoes `instructions` and `tools` once.
#[test]
fn lifecycle_events_do_not_repeat_the_request() {
    let mut req = request();
    req["instructions"] = json!("Be brief.");
    let (_, map) = to_chat(&req).unwrap();
    let input = std::fs::read(format!("{FIXTURES}/text_azure_crlf.chat.sse")).unwrap();
    let got = to_responses(&[&input], &map, &req, &mut Ids::new(1));
    let evs = events(&got.stream);
    for e in &evs[..2] {
        let keys: Vec<&str> = e["response"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "object", "created_at", "status", "model", "output"], "{}", e["type"]);
    }
    let terminal = &evs[evs.len() - 1]["response"];
    assert_eq!((&terminal["instructions"], &terminal["tools"]), (&req["instructions"], &req["tools"]));
}

// ---- properties ---------------------------------------------------------------------------

/// One piece of a chat answer.
#[derive(Debug, Clone)]
enum Piece {
    Content(String),
    Reasoning(String),
    Refusal(String),
    /// A tool-call delta: index, whether it carries the id and name, an arguments fragment.
    Call(u64, bool, usize, String),
    /// A chunk with no delta text (role only, Azure's empty choices, keep-alive comment).
    Noise(u8),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "", " ", "a", "é", "\n", "\"", "\\", "data: x", "[DONE]", "{\"", "\r\n"
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => text().prop_map(Piece::Content),
        2 => text().prop_map(Piece::Reasoning),
        1 => text().prop_map(Piece::Refusal),
        3 => (0u64..4, any::<bool>(), 0usize..4, text()).prop_map(|(i, head, n, a)| Piece::Call(i, head, n, a)),
        1 => any::<u8>().prop_map(Piece::Noise),
    ]
}

const NAMES: [&str; 4] = ["shell", "apply_patch", "mcp__files__read", "invented"];

/// The chat SSE stream of `pieces`, ending with `finish`, usage and `[DONE]`; `crlf` line ends.
fn chat_stream(pieces: &[Piece], finish: &str, crlf: bool) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut chunks: Vec<Value> = Vec::new();
    let delta = |d: Value| json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": null}]});
    for p in pieces {
        chunks.push(match p {
            Piece::Content(t) => delta(json!({"content": t})),
            Piece::Reasoning(t) => delta(json!({"reasoning_content": t})),
            Piece::Refusal(t) => delta(json!({"refusal": t})),
            Piece::Call(i, head, n, args) => {
                let mut call = json!({"index": i, "function": {"arguments": args}});
                if *head {
                    call["id"] = json!(format!("call_{i}"));
                    call["function"]["name"] = json!(NAMES[*n]);
                }
                delta(json!({"tool_calls": [call]}))
            }
            Piece::Noise(n) if n % 3 == 0 => json!({"choices": [], "prompt_filter_results": []}),
            Piece::Noise(_) => delta(json!({"role": "assistant", "content": ""})),
        });
    }
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    chunks.push(
        json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
    );
    let mut out: String = chunks.iter().map(|c| format!("data: {c}{nl}{nl}")).collect();
    out.push_str(&format!(": keep-alive{nl}{nl}data: [DONE]{nl}{nl}"));
    out
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn any_chat_answer_makes_a_well_formed_stream(
        pieces in proptest::collection::vec(piece(), 0..24),
        finish in proptest::sample::select(vec!["stop", "tool_calls", "length", "content_filter"]),
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let input = chat_stream(&pieces, finish, crlf);
        let whole = synthesise(&[input.as_bytes()]);
        let got = synthesise(&split(input.as_bytes(), &cuts));
        prop_assert_eq!(&got.stream, &whole.stream, "split changed the answer");
        let evs = events(&got.stream);
        let terminal = evs.last().unwrap();
        prop_assert_eq!(&terminal["response"], &got.response());
        // A tool call whose first piece has no name is malformed (fold.rs): the shield retries
        // such an answer, and were it translated anyway, it would fail, not lose the call.
        let mut named = std::collections::BTreeMap::new();
        for p in &pieces {
            if let Piece::Call(i, head, ..) = p {
                named.entry(*i).or_insert(*head);
            }
        }
        if finish == "content_filter" || named.values().any(|head| !head) {
            prop_assert!(matches!(got.status, Status::Failed { .. }), "{:?}", got.status);
            prop_assert_eq!(&got.response()["output"], &json!([]));
            return Ok(());
        }
        // The answer's text survives: content, reasoning, and each call's arguments by index.
        let joined = |f: fn(&Piece) -> Option<&str>| pieces.iter().filter_map(f).collect::<String>();
        let content = joined(|p| if let Piece::Content(t) = p { Some(t) } else { None });
        let reasoning = joined(|p| if let Piece::Reasoning(t) = p { Some(t) } else { None });
        let response = got.response();
        let output = response["output"].as_array().unwrap();
        let of_type = |t: &str| output.iter().filter(|i| i["type"] == t).collect::<Vec<_>>();
        let text = of_type("message").first().map(|m| m["content"][0]["text"].as_str().unwrap_or("").to_string());
        if content.is_empty() { prop_assert!(text.is_none() || text == Some(String::new())); }
        else { prop_assert_eq!(text, Some(content)); }
        let thought = of_type("reasoning").first().map(|r| r["content"][0]["text"].as_str().unwrap().to_string());
        prop_assert_eq!(thought.unwrap_or_default(), reasoning);
        let indices: std::collections::BTreeSet<u64> =
            pieces.iter().filter_map(|p| if let Piece::Call(i, ..) = p { Some(*i) } else { None }).collect();
        let calls: Vec<&Value> = output.iter().filter(|i| i["type"].as_str().unwrap().ends_with("call")).collect();
        prop_assert_eq!(calls.len(), indices.len());
        for (call, index) in calls.iter().zip(&indices) {
            let args: String = pieces.iter().filter_map(|p| match p {
                Piece::Call(i, _, _, a) if i == index => Some(a.as_str()),
                _ => None,
            }).collect();
            if call["type"] == "function_call" {
                prop_assert_eq!(call["arguments"].as_str().unwrap(), args);
            }
        }
    }
}

#[test]
fn no_tools_in_the_request_means_no_tool_fields() {
    let (chat, map) =
        to_chat(&json!({"model": "m", "input": "q", "tool_choice": "auto", "tools": []})).unwrap();
    assert!(chat.get("tools").is_none() && chat.get("tool_choice").is_none());
    assert_eq!(map, ToolMap::default());
}
