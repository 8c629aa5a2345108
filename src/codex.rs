//! What Codex CLI (0.169) needs from the proxy beyond plain OpenAI compatibility, as pure functions.
//!
//! Each rule here was measured with the real `codex` binary against a scripted mock (see
//! `tests/e2e/run.sh` and docs/codex.md):
//! - who is Codex: its `originator` / `User-Agent` headers (`is_codex`);
//! - the "lite" request body some model names make Codex send, turned back into the standard
//!   Responses shape (`normalize`);
//! - the one answer form Codex shows verbatim and does not retry: `400` with a `text/plain` body
//!   before the head is sent, `response.failed` with code `invalid_prompt` after (`give_up_*`);
//! - the events that put a progress line in the TUI's status line without touching the answer
//!   or the conversation history (`progress_event`), and the keep-alive that resets Codex's
//!   stream idle timer (`keepalive_event`).
//!
//! Other clients must never get these forms: the `openai` SDK's `responses.stream()` helper
//! raises on any data event before `response.created` (an SSE comment is the only keep-alive
//! it accepts), and it needs OpenAI-shaped JSON errors. This module does no I/O.

use serde_json::{json, Map, Value};

use crate::reply::Reply;
use crate::sse;

/// The header Codex adds to a "lite" body.
pub const LITE_HEADER: &str = "x-openai-internal-codex-responses-lite";

/// Whether the request comes from Codex CLI (any of its front ends: `codex_exec`,
/// `codex-tui`, `codex_vscode`...), from its `originator` or `User-Agent` header.
/// `headers` names are lowercase.
pub fn is_codex(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(name, value)| {
        (name == "originator" || name == "user-agent")
            && value.trim_start().to_ascii_lowercase().starts_with("codex")
    })
}

/// What `normalize` did to a request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    /// The body was already in the standard shape; nothing changed.
    Standard,
    /// A lite body was rewritten; tools of these namespaces were dropped, because Codex answers
    /// "unsupported call" to their un-namespaced calls.
    FromLite { dropped_namespaces: Vec<String> },
}

/// Turn a Codex "lite" Responses body (tools packed into an `additional_tools` input item,
/// namespaced; header `x-openai-internal-codex-responses-lite: true`) into the standard shape:
/// the `functions` namespace's tools become top-level `tools` (Codex runs their un-namespaced
/// calls), other namespaces are dropped, `reasoning.context` goes, and so does the header.
/// An `Err` (nothing changed) says why the body cannot be rewritten safely.
pub fn normalize(body: &mut Value, headers: &mut Vec<(String, String)>) -> Result<Normalized, String> {
    let header = headers.iter().any(|(n, v)| n == LITE_HEADER && v.trim().eq_ignore_ascii_case("true"));
    let Some(object) = body.as_object() else { return Ok(Normalized::Standard) };
    let packed = packed_tool_items(object);
    if packed.is_empty() && !header {
        return Ok(Normalized::Standard);
    }
    let (tools, dropped_namespaces) = flatten(object, &packed)?;
    let object = body.as_object_mut().expect("checked above");
    if let Some(Value::Array(input)) = object.get_mut("input") {
        input.retain(|item| !is_additional_tools(item));
    }
    if !tools.is_empty() {
        object.insert("tools".into(), Value::Array(tools));
    }
    if let Some(Value::Object(reasoning)) = object.get_mut("reasoning") {
        reasoning.remove("context");
    }
    headers.retain(|(name, _)| name != LITE_HEADER);
    Ok(Normalized::FromLite { dropped_namespaces })
}

fn is_additional_tools(item: &Value) -> bool {
    item.get("type").and_then(Value::as_str) == Some("additional_tools")
}

fn packed_tool_items(object: &Map<String, Value>) -> Vec<&Value> {
    match object.get("input") {
        Some(Value::Array(input)) => input.iter().filter(|item| is_additional_tools(item)).collect(),
        _ => Vec::new(),
    }
}

/// The top-level tools after the rewrite (the body's own first), and the dropped namespaces.
fn flatten(object: &Map<String, Value>, packed: &[&Value]) -> Result<(Vec<Value>, Vec<String>), String> {
    let mut tools = match object.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools.clone(),
        Some(_) => return Err("a lite Codex request whose `tools` is not an array".into()),
    };
    let mut dropped = Vec::new();
    for item in packed {
        let Some(Value::Array(list)) = item.get("tools") else {
            return Err("a lite Codex request with an `additional_tools` item without a `tools` array".into());
        };
        for tool in list {
            match (tool.get("type").and_then(Value::as_str), tool.get("name").and_then(Value::as_str)) {
                (Some("namespace"), Some("functions")) => match tool.get("tools") {
                    Some(Value::Array(inner)) => tools.extend(inner.iter().cloned()),
                    _ => {
                        return Err(
                            "a lite Codex request whose `functions` namespace has no `tools` array".into()
                        )
                    }
                },
                (Some("namespace"), name) => dropped.push(name.unwrap_or("(unnamed)").to_string()),
                _ => tools.push(tool.clone()),
            }
        }
    }
    if let Some(name) = duplicate_name(&tools) {
        return Err(format!("a lite Codex request defines the tool `{name}` twice once flattened"));
    }
    Ok((tools, dropped))
}

fn duplicate_name(tools: &[Value]) -> Option<&str> {
    let names: Vec<&str> = tools.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect();
    names.iter().enumerate().find(|(i, name)| names[..*i].contains(name)).map(|(_, name)| *name)
}

/// The proxy's give-up message for a Codex client, when no head has been sent yet: Codex 0.169
/// prints a 400's body verbatim (`ERROR: <message>`) and does not retry it. Any other status
/// is retried by Codex (5xx, 403, 404, 409, 422...) or hidden (429: "exceeded retry limit").
pub fn give_up_reply(message: &str) -> Reply {
    Reply {
        status: 400,
        content_type: "text/plain; charset=utf-8".into(),
        headers: Vec::new(),
        body: message.as_bytes().to_vec().into(),
    }
}

/// The same message inside a `200` stream whose head is already sent (keep-alive): a
/// `response.failed` with code `invalid_prompt` is shown verbatim and not retried; any other
/// code (`server_error`, unknown codes) is retried as "stream disconnected before completion".
pub fn give_up_event(message: &str, sequence: u64) -> Vec<u8> {
    let response = json!({
        "id": "resp_codex_shield", "object": "response", "status": "failed", "output": [],
        "error": {"code": "invalid_prompt", "message": message},
    });
    sse::event(
        "response.failed",
        &json!({"type": "response.failed", "sequence_number": sequence, "response": response}),
    )
}

/// The events that show `text` as the TUI's status line ("• text (12s • esc to interrupt)"),
/// for the `n`-th progress line of a request. A reasoning item that is added but never done,
/// with one summary delta in bold: Codex shows the bold part as the status header, keeps
/// nothing of it in the answer or the history, and `codex exec` prints nothing. Without the
/// `output_item.added` the delta is ignored; each line needs its own item id to replace the
/// previous one. The answer's own events follow in the same stream, unchanged.
pub fn progress_event(text: &str, n: u64) -> Vec<u8> {
    let id = format!("rs_codex_shield_progress_{n}");
    let clean: String = text.chars().map(|c| if c == '*' || c.is_control() { ' ' } else { c }).collect();
    let mut out = sse::event(
        "response.output_item.added",
        &json!({"type": "response.output_item.added", "sequence_number": 2 * n, "output_index": 0,
               "item": {"type": "reasoning", "id": id, "summary": []}}),
    );
    sse::write_event(
        &mut out,
        "response.reasoning_summary_text.delta",
        &json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 2 * n + 1,
               "item_id": id, "output_index": 0, "summary_index": 0,
               "delta": format!("**{}**", clean.trim())}),
    );
    out
}

/// A keep-alive for a Codex stream: a data event, because Codex's `stream_idle_timeout_ms`
/// counts only data events (SSE comments do not reset it). For other clients use an SSE
/// comment (`: keepalive\n\n`): the `openai` SDK's stream helper raises on this event.
pub fn keepalive_event(n: u64) -> Vec<u8> {
    sse::event("", &json!({"type": "keepalive", "sequence_number": n}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn is_codex_reads_originator_and_user_agent() {
        let rows: &[(&[(&str, &str)], bool)] = &[
            (&[("originator", "codex_exec")], true),
            (&[("originator", "codex-tui")], true),
            (&[("user-agent", "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm")], true),
            (&[("user-agent", "Codex_VSCode/1.0")], true),
            (&[("user-agent", "OpenAI/Python 3.57.0")], false),
            (&[("x-stainless-lang", "python"), ("originator", "my-app")], false),
            (&[("x-note", "codex")], false),
            (&[], false),
        ];
        for (headers, expected) in rows {
            assert_eq!(is_codex(&h(headers)), *expected, "{headers:?}");
        }
    }

    fn f(name: &str) -> Value {
        json!({"type": "function", "name": name, "parameters": {}})
    }

    fn lite(tools: Value) -> Value {
        json!({
            "model": "gpt-6.1-sol",
            "input": [
                {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": tools},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            ],
            "reasoning": {"effort": "low", "context": "all_turns"},
            "tool_choice": "auto",
        })
    }

    fn names(body: &Value) -> Vec<String> {
        body["tools"]
            .as_array()
            .map_or(Vec::new(), |t| t.iter().map(|t| t["name"].as_str().unwrap_or("?").to_string()).collect())
    }

    #[test]
    fn normalize_table() {
        let custom = json!({"type": "custom", "name": "exec", "description": "js"});
        let functions = json!({"type": "namespace", "name": "functions", "tools": [custom, f("wait")]});
        let clock = json!({"type": "namespace", "name": "clock", "tools": [f("sleep")]});
        let collab = json!({"type": "namespace", "name": "collaboration", "tools": [f("spawn_agent")]});
        // (name, body, lite header, expected result, expected top-level tool names)
        type Row = (&'static str, Value, bool, Result<Normalized, &'static str>, Vec<&'static str>);
        let rows: Vec<Row> = vec![
            (
                "standard body, no header",
                json!({"model": "gpt-5.5", "input": [], "tools": [f("exec_command")]}),
                false,
                Ok(Normalized::Standard),
                vec!["exec_command"],
            ),
            (
                "lite as 0.169 sends it",
                lite(json!([functions, clock, collab])),
                true,
                Ok(Normalized::FromLite { dropped_namespaces: vec!["clock".into(), "collaboration".into()] }),
                vec!["exec", "wait"],
            ),
            (
                "lite item without the header",
                lite(json!([functions])),
                false,
                Ok(Normalized::FromLite { dropped_namespaces: vec![] }),
                vec!["exec", "wait"],
            ),
            (
                "header only: header removed, body kept",
                json!({"model": "m", "input": [], "tools": [f("a")]}),
                true,
                Ok(Normalized::FromLite { dropped_namespaces: vec![] }),
                vec!["a"],
            ),
            (
                "plain tools in the item go to the top level",
                lite(json!([f("x"), {"type": "web_search"}])),
                true,
                Ok(Normalized::FromLite { dropped_namespaces: vec![] }),
                vec!["x", "?"],
            ),
            ("tools not an array", lite(json!("nope")), true, Err("without a `tools` array"), vec![]),
            (
                "functions namespace without tools",
                lite(json!([{"type": "namespace", "name": "functions"}])),
                true,
                Err("has no `tools` array"),
                vec![],
            ),
            (
                "name collision once flattened",
                lite(json!([functions, f("wait")])),
                true,
                Err("defines the tool `wait` twice"),
                vec![],
            ),
            ("not an object", json!([1, 2]), true, Ok(Normalized::Standard), vec![]),
        ];
        for (name, mut body, header, expected, tools) in rows {
            let before = body.clone();
            let mut headers = h(&[("originator", "codex_exec")]);
            if header {
                headers.push((LITE_HEADER.into(), "true".into()));
            }
            let got = normalize(&mut body, &mut headers);
            match (&got, &expected) {
                (Ok(g), Ok(e)) => assert_eq!(g, e, "{name}"),
                (Err(g), Err(e)) => assert!(g.contains(e), "{name}: {g}"),
                _ => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
            match got {
                Ok(Normalized::Standard) => assert_eq!(body, before, "{name}: a standard body is untouched"),
                Ok(Normalized::FromLite { .. }) => {
                    assert_eq!(names(&body), tools, "{name}");
                    assert!(!body.to_string().contains("additional_tools"), "{name}");
                    assert!(body["reasoning"].get("context").is_none(), "{name}");
                    assert!(!headers.iter().any(|(n, _)| n == LITE_HEADER), "{name}");
                    if let Some(input) = body["input"].as_array() {
                        assert!(input.iter().all(|i| i["type"] == "message"), "{name}: messages stay");
                    }
                }
                Err(_) => assert_eq!(body, before, "{name}: nothing changes on an error"),
            }
        }
    }

    #[test]
    fn normalize_keeps_the_other_fields_and_the_messages() {
        let mut body = lite(json!([{"type": "namespace", "name": "functions", "tools": [f("exec")]}]));
        let mut headers = h(&[(LITE_HEADER, "true")]);
        normalize(&mut body, &mut headers).unwrap();
        let expected = json!({
            "model": "gpt-6.1-sol",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
            "reasoning": {"effort": "low"},
            "tool_choice": "auto",
            "tools": [f("exec")],
        });
        assert_eq!(body, expected);
    }

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\n\n"), "an event ends with a blank line: {text:?}");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut name = String::new();
                let mut data = Value::Null;
                for line in e.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    } else {
                        panic!("unexpected line {line:?}");
                    }
                }
                (name, data)
            })
            .collect()
    }

    #[test]
    fn give_up_reply_is_a_plain_400() {
        let a = give_up_reply("codex-shield: gave up after 3 attempts");
        assert_eq!((a.status, a.content_type.as_str()), (400, "text/plain; charset=utf-8"));
        assert_eq!(a.body.to_vec(), b"codex-shield: gave up after 3 attempts");
    }

    #[test]
    fn give_up_event_is_response_failed_invalid_prompt() {
        let got = events(&give_up_event("codex-shield: gave up \"x\"\nnext", 7));
        assert_eq!(got.len(), 1);
        let (name, data) = &got[0];
        assert_eq!(name, "response.failed");
        assert_eq!(data["type"], "response.failed");
        assert_eq!(data["sequence_number"], 7);
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "invalid_prompt");
        assert_eq!(data["response"]["error"]["message"], "codex-shield: gave up \"x\"\nnext");
    }

    #[test]
    fn progress_event_table() {
        let rows = [
            (
                "upstream rate-limited, retrying in 12 s (attempt 3 of 10)",
                0,
                "**upstream rate-limited, retrying in 12 s (attempt 3 of 10)**",
            ),
            ("  padded  ", 4, "**padded**"),
            ("**bold** and\nnewline", 1, "**bold   and newline**"),
        ];
        for (text, n, delta) in rows {
            let got = events(&progress_event(text, n));
            let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                ["response.output_item.added", "response.reasoning_summary_text.delta"],
                "{text}"
            );
            let (added, delta_event) = (&got[0].1, &got[1].1);
            let id = format!("rs_codex_shield_progress_{n}");
            assert_eq!(added["item"], json!({"type": "reasoning", "id": id, "summary": []}));
            assert_eq!(added["type"], "response.output_item.added");
            assert_eq!(delta_event["type"], "response.reasoning_summary_text.delta");
            assert_eq!(delta_event["item_id"], id.as_str());
            assert_eq!(delta_event["delta"], delta, "{text}");
            assert_eq!(added["sequence_number"], 2 * n);
            assert_eq!(delta_event["sequence_number"], 2 * n + 1);
        }
    }

    #[test]
    fn keepalive_event_is_one_data_line() {
        assert_eq!(keepalive_event(3), b"data: {\"type\":\"keepalive\",\"sequence_number\":3}\n\n");
        let got = events(&keepalive_event(12));
        assert_eq!(got, vec![(String::new(), json!({"type": "keepalive", "sequence_number": 12}))]);
    }
}
