//! The Responses → chat translation (`translate::chat_answer`), end to end on bytes.
//!
//! Golden fixtures (`tests/fixtures/chat_on_responses/NAME.responses.sse` in, written in the
//! real API's shape; `NAME.chat.sse` the exact stream out with usage and summaries asked,
//! `NAME.completion.json` the `chat.completion`, `NAME.failed.txt` for an answer with no chat
//! form; `UPDATE_GOLDEN=1` rewrites the expected files, to be read before committing) and a
//! property test: for any Responses answer, split anywhere, the chat stream is well formed.

use std::path::Path;

use codex_shield::translate::chat_answer::{to_chat, Answer, Form};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::split;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat_on_responses");

const STREAM: Form = Form { stream: true, include_usage: true, summaries: true, stop: Vec::new() };
const COMPLETION: Form = Form { stream: false, include_usage: false, summaries: false, stop: Vec::new() };

/// Compare `got` with the golden file `name` (or write it under `UPDATE_GOLDEN`).
fn golden(name: &str, got: &str) {
    let path = Path::new(FIXTURES).join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(got == want, "{} differs; got:\n{got}", path.display());
}

#[test]
fn golden_fixtures() {
    let names = [
        "text_azure_crlf",
        "parallel_calls",
        "reasoning_text",
        "incomplete_length",
        "incomplete_filter",
        "refusal",
        "failed",
    ];
    for name in names {
        let input = std::fs::read(Path::new(FIXTURES).join(format!("{name}.responses.sse"))).unwrap();
        let streamed = to_chat(&[&input], STREAM);
        match &streamed.failed {
            Some((code, message)) => golden(&format!("{name}.failed.txt"), &format!("{code}: {message}\n")),
            None => {
                well_formed(&streamed.body, STREAM).unwrap_or_else(|e| panic!("{name}: {e}"));
                golden(&format!("{name}.chat.sse"), std::str::from_utf8(&streamed.body).unwrap());
                let completion: Value = serde_json::from_slice(&to_chat(&[&input], COMPLETION).body).unwrap();
                golden(&format!("{name}.completion.json"), &format!("{completion:#}\n"));
            }
        }
    }
}

#[test]
fn the_reasoning_of_parallel_calls_is_kept_with_its_encrypted_content() {
    let input = std::fs::read(Path::new(FIXTURES).join("parallel_calls.responses.sse")).unwrap();
    let reasoning = to_chat(&[&input], COMPLETION).reasoning.unwrap();
    assert_eq!(reasoning.call_ids, ["call_Ab12Cd34Ef56", "call_Gh78Ij90Kl12"]);
    let item: Value = serde_json::from_str(&reasoning.items[0]).unwrap();
    assert_eq!(item["type"], "reasoning");
    assert!(item["encrypted_content"].as_str().unwrap().starts_with("gAAAA"), "{item}");
}

/// The invariants of a chat stream, as a strict client reads it: every event a `data:` line
/// of JSON (or the final `[DONE]`), one id, model and `created`, the assistant role first,
/// tool call indexes dense from 0 (a new index opens with its id, type and name), exactly one
/// `finish_reason` on the last choice chunk, the usage chunk (no choices) last before
/// `[DONE]` when asked and `usage: null` on the others, nothing after `[DONE]`.
fn well_formed(stream: &[u8], form: Form) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(stream).map_err(|e| e.to_string())?;
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let (last, blocks) = blocks.split_last().ok_or("empty")?;
    if !last.is_empty() {
        return Err(format!("the stream does not end with a blank line: {last:?}"));
    }
    let (done, blocks) = blocks.split_last().ok_or("no [DONE]")?;
    if *done != "data: [DONE]" {
        return Err(format!("the stream does not end with [DONE]: {done:?}"));
    }
    let mut chunks = Vec::new();
    for block in blocks {
        let data = block.strip_prefix("data: ").ok_or(format!("not a data line: {block:?}"))?;
        if data.contains('\n') {
            return Err(format!("a multi-line event: {block:?}"));
        }
        chunks.push(serde_json::from_str::<Value>(data).map_err(|e| format!("{e}: {data}"))?);
    }
    let first = chunks.first().ok_or("no chunk")?;
    let (usage_chunk, choice_chunks) = match form.include_usage {
        true => {
            let (u, rest) = chunks.split_last().ok_or("no usage chunk")?;
            (Some(u), rest)
        }
        false => (None, chunks.as_slice()),
    };
    let mut finishes = 0;
    let mut next_index = 0;
    for (n, c) in chunks.iter().enumerate() {
        for key in ["id", "created", "model"] {
            if c[key] != first[key] {
                return Err(format!("chunk {n}: {key} {} differs from {}", c[key], first[key]));
            }
        }
        if c["object"] != "chat.completion.chunk"
            || !c["id"].as_str().is_some_and(|i| i.starts_with("chatcmpl-"))
        {
            return Err(format!("chunk {n}: not a chat.completion.chunk: {c}"));
        }
        match (form.include_usage, c.get("usage")) {
            (false, None) => {}
            (true, Some(u)) if u.is_null() == (Some(c) != usage_chunk) => {}
            (_, u) => return Err(format!("chunk {n}: usage {u:?} out of place")),
        }
    }
    if let Some(u) = usage_chunk {
        if u["choices"] != json!([]) || !u["usage"]["total_tokens"].is_u64() {
            return Err(format!("the usage chunk: {u}"));
        }
    }
    for (n, c) in choice_chunks.iter().enumerate() {
        let choices = c["choices"].as_array().ok_or(format!("chunk {n}: no choices"))?;
        let [choice] = choices.as_slice() else {
            return Err(format!("chunk {n}: {} choices", choices.len()));
        };
        if choice["index"] != 0 {
            return Err(format!("chunk {n}: choice index {}", choice["index"]));
        }
        let delta = &choice["delta"];
        if (n == 0) != (delta["role"] == "assistant") {
            return Err(format!("chunk {n}: the role in the wrong place: {delta}"));
        }
        if !choice["finish_reason"].is_null() {
            finishes += 1;
            if n + 1 != choice_chunks.len() {
                return Err(format!("chunk {n}: a finish_reason before the last choice chunk"));
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().ok_or(format!("chunk {n}: a call without index"))?;
            if index == next_index {
                let opens = call["id"].is_string() && call["type"].is_string();
                if !opens {
                    return Err(format!("chunk {n}: call {index} opens without id and type: {call}"));
                }
                next_index += 1;
            } else if index + 1 != next_index {
                return Err(format!("chunk {n}: call index {index} after {next_index} opened"));
            } else if call.get("id").is_some() {
                return Err(format!("chunk {n}: call {index} opened twice"));
            }
        }
    }
    if finishes != 1 {
        return Err(format!("{finishes} finish_reasons"));
    }
    Ok(chunks)
}

/// One output item of a generated answer.
#[derive(Debug, Clone)]
enum Item {
    Text(Vec<String>),
    Refusal(String),
    Reasoning(String),
    Call(String, String),
    Custom(String),
}

fn item() -> impl Strategy<Value = Item> {
    let text = "[a-z \"\\\\\n{}é😀]{0,12}";
    prop_oneof![
        proptest::collection::vec(text, 0..4).prop_map(Item::Text),
        text.prop_map(Item::Refusal),
        text.prop_map(Item::Reasoning),
        ("[a-z_]{1,8}", text).prop_map(|(name, args)| Item::Call(name, args)),
        text.prop_map(Item::Custom),
    ]
}

/// A Responses stream of `items` ending with `end` (`completed`, or an incomplete reason).
fn responses_stream(items: &[Item], end: &str, crlf: bool) -> String {
    let mut out = String::new();
    let mut seq = 0;
    let mut ev = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    };
    let response = |status: &str, output: Value| {
        json!({"id": "resp_p", "object": "response", "created_at": 1, "model": "m", "status": status, "error": null,
               "incomplete_details": null, "output": output, "usage": null})
    };
    ev("response.created", json!({"response": response("in_progress", json!([]))}));
    let mut done = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let item = match it {
            Item::Text(pieces) => {
                let id = format!("msg_{i}");
                ev(
                    "response.output_item.added",
                    json!({"output_index": i, "item": {"id": id, "type": "message", "content": []}}),
                );
                for p in pieces {
                    ev(
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": i, "content_index": 0, "delta": p}),
                    );
                }
                json!({"id": id, "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": pieces.concat(), "annotations": []}]})
            }
            Item::Refusal(r) => {
                json!({"id": format!("msg_{i}"), "type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": r}]})
            }
            Item::Reasoning(s) => {
                json!({"id": format!("rs_{i}"), "type": "reasoning", "encrypted_content": "gAAAA", "summary": [{"type": "summary_text", "text": s}]})
            }
            Item::Call(name, args) => {
                json!({"id": format!("fc_{i}"), "type": "function_call", "call_id": format!("call_{i}"), "name": name, "arguments": args})
            }
            Item::Custom(input) => {
                json!({"id": format!("ctc_{i}"), "type": "custom_tool_call", "call_id": format!("call_{i}"), "name": "patch", "input": input})
            }
        };
        ev("response.output_item.done", json!({"output_index": i, "item": item}));
        done.push(item);
    }
    let mut r = response("completed", json!(done));
    r["usage"] = json!({"input_tokens": 5, "output_tokens": 7, "total_tokens": 12});
    let kind = match end {
        "completed" => "response.completed",
        reason => {
            r["status"] = json!("incomplete");
            r["incomplete_details"] = json!({"reason": reason});
            "response.incomplete"
        }
    };
    ev(kind, json!({"response": r}));
    if crlf {
        out.replace('\n', "\r\n")
    } else {
        out
    }
}

/// What a client assembles from a chat stream: content, refusal, reasoning, calls, finish.
fn assemble(chunks: &[Value]) -> (String, String, String, Vec<String>, String) {
    let (mut content, mut refusal, mut reasoning, mut calls, mut finish) =
        (String::new(), String::new(), String::new(), Vec::<String>::new(), String::new());
    for c in chunks {
        let Some(choice) = c["choices"].get(0) else { continue };
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or(""));
        refusal.push_str(delta["refusal"].as_str().unwrap_or(""));
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push(
                    call["custom"]["input"].as_str().map(|s| format!("custom:{s}")).unwrap_or_default(),
                );
            }
            calls[i].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (content, refusal, reasoning, calls, finish)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn any_responses_answer_makes_a_well_formed_chat_stream(
        items in proptest::collection::vec(item(), 0..8),
        end in proptest::sample::select(vec!["completed", "max_output_tokens", "content_filter"]),
        crlf in any::<bool>(),
        include_usage in any::<bool>(),
        summaries in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let input = responses_stream(&items, end, crlf);
        let form = Form { stream: true, include_usage, summaries, stop: Vec::new() };
        let whole: Answer = to_chat(&[input.as_bytes()], form.clone());
        let got = to_chat(&split(input.as_bytes(), &cuts), form.clone());
        prop_assert_eq!(&got, &whole, "split changed the answer");
        let chunks = well_formed(&got.body, form.clone()).map_err(TestCaseError::fail)?;
        let (content, refusal, reasoning, calls, finish) = assemble(&chunks);
        let mut want = (String::new(), String::new(), String::new(), Vec::new());
        for it in &items {
            match it {
                Item::Text(p) => want.0.push_str(&p.concat()),
                Item::Refusal(r) => want.1.push_str(r),
                Item::Reasoning(s) if summaries && !s.is_empty() => want.2.push_str(s),
                Item::Reasoning(_) => {}
                Item::Call(_, args) => want.3.push(args.clone()),
                Item::Custom(input) => want.3.push(format!("custom:{input}")),
            }
        }
        prop_assert_eq!((content, refusal, reasoning, calls.clone()), want);
        let expected_finish = match end {
            "max_output_tokens" => "length",
            "content_filter" => "content_filter",
            _ if !calls.is_empty() => "tool_calls",
            _ => "stop",
        };
        prop_assert_eq!(finish, expected_finish);
        // the completion carries the same answer
        let completion: Value = serde_json::from_slice(&to_chat(&[input.as_bytes()], Form { stream: false, ..form.clone() }).body).unwrap();
        prop_assert_eq!(&completion["choices"][0]["finish_reason"], expected_finish);
        prop_assert_eq!(completion["choices"][0]["message"]["tool_calls"].as_array().map_or(0, Vec::len), calls.len());
    }
}

#[test]
fn the_checker_catches_broken_streams() {
    let good = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
    let finish = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    let call = |i: u64, id: bool| {
        let c = if id {
            json!({"index": i, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}})
        } else {
            json!({"index": i, "function": {"arguments": "x"}})
        };
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [c]}, "finish_reason": null}]})
        )
    };
    let form = Form { stream: true, include_usage: false, summaries: false, stop: Vec::new() };
    let cases = [
        (format!("{good}{finish}data: [DONE]\n\n"), true),
        (format!("{good}{finish}"), false),
        (format!("{good}data: [DONE]\n\n"), false),
        (format!("{good}{finish}{finish}data: [DONE]\n\n"), false),
        (format!("{good}{}{}{finish}data: [DONE]\n\n", call(0, true), call(0, false)), true),
        (format!("{good}{}{finish}data: [DONE]\n\n", call(1, true)), false),
        (format!("{good}{}{finish}data: [DONE]\n\n", call(0, false)), false),
        (format!("{good}{finish}data: [DONE]\n\ndata: {{}}\n\n"), false),
        (format!("{}{finish}data: [DONE]\n\n", good.replace("chatcmpl-1", "chatcmpl-2")), false),
    ];
    for (stream, ok) in cases {
        assert_eq!(well_formed(stream.as_bytes(), form.clone()).is_ok(), ok, "{stream}");
    }
}
