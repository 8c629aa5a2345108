//! Chat answers of unexpected shapes (issue 17) through the proxy, on the two paths that fold
//! a chat stream: a Responses client on a chat upstream (the adapter) and a chat client that
//! asked for `stream: false`. A chunk is understood the way the real servers mean it (text
//! parts joined, object arguments serialised, a lone surrogate read as U+FFFD and said in the
//! log) or the answer is malformed and retried: never a silently wrong `completed` answer.

use serde_json::{json, Value};

use crate::support::mock::{Mock, Piece, Step};
use crate::support::{post, Proxy, CHAT_PLAIN, CHAT_STREAM};

const RESPONSES: &str = r#"{"model":"m","stream":true,"input":"hi"}"#;

/// `data:` events of these chunks, then a `stop` chunk and `[DONE]`.
fn answer(chunks: &[String]) -> Vec<u8> {
    let stop = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str(&format!("data: {stop}\n\ndata: [DONE]\n\n"));
    out.into_bytes()
}

/// A chunk with this delta (raw JSON, so that it may hold escapes serde would not write).
fn delta(delta: &str) -> String {
    format!(r#"{{"id":"c","model":"m","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}"#)
}

fn text(t: &str) -> String {
    delta(&json!({"content": t}).to_string())
}

/// What a client was given, on one path: the text, then each tool call as `name(arguments)`.
fn summary(path: Path, got: &crate::support::Got) -> String {
    assert_eq!(got.status, 200, "{path:?}: {}", got.text());
    let mut out = Vec::new();
    match path {
        Path::Chat => {
            let message = &got.json()["choices"][0]["message"];
            out.push(message["content"].as_str().unwrap_or("").to_string());
            for c in message["tool_calls"].as_array().into_iter().flatten() {
                let f = &c["function"];
                out.push(format!("{}({})", f["name"].as_str().unwrap(), f["arguments"].as_str().unwrap()));
            }
        }
        Path::Adapter => {
            let text = got.text();
            let events: Vec<Value> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            let last = events.last().unwrap();
            assert_eq!(last["type"], "response.completed", "{text}");
            let deltas: String = events
                .iter()
                .filter(|e| e["type"] == "response.output_text.delta")
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            out.push(deltas);
            for item in last["response"]["output"].as_array().unwrap() {
                if item["type"] == "function_call" {
                    out.push(format!(
                        "{}({})",
                        item["name"].as_str().unwrap(),
                        item["arguments"].as_str().unwrap()
                    ));
                }
            }
        }
    }
    out.join(" | ")
}

#[derive(Debug, Clone, Copy)]
enum Path {
    /// A Responses client on an `UPSTREAM_API=chat` upstream.
    Adapter,
    /// A chat client with `stream: false`.
    Chat,
}

const PATHS: [Path; 2] = [Path::Adapter, Path::Chat];

/// Ask on `path` a proxy in front of a mock that plays `steps`; what the client got, how many
/// attempts the mock saw, and the proxy's log.
fn ask(path: Path, steps: Vec<Step>) -> (String, usize, String) {
    let mock = Mock::start(steps);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat")]);
    let got = match path {
        Path::Adapter => post(&proxy.url("/v1/responses"), RESPONSES),
        Path::Chat => post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN),
    };
    // The request's log line comes after its answer and every line written on the way to it
    // (the proxy's stderr reaches the test through a pipe read by another thread).
    (summary(path, &got), mock.attempts(), proxy.wait_for_log("req=1 "))
}

/// Shapes the real servers send, understood at the first attempt.
#[test]
fn understood_shapes() {
    let lone = delta(r#"{"content":"half \ud83d"}"#);
    let parts = delta(r#"{"content":[{"type":"text","text":"Hello"},{"type":"text","text":" world"}]}"#);
    let object_args = delta(
        r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"shell","arguments":{"cmd":["ls","-la"]}}}]}"#,
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a lone surrogate", answer(&[text("before "), lone, text(" after")]), "before half \u{fffd} after"),
        ("content parts", answer(&[parts]), "Hello world"),
        ("object arguments", answer(&[object_args]), r#" | shell({"cmd":["ls","-la"]})"#),
    ];
    for (name, stream, expected) in cases {
        for path in PATHS {
            let (got, attempts, log) = ask(path, vec![Step::stream(&stream)]);
            assert_eq!((got.as_str(), attempts), (expected, 1), "{name}, {path:?}");
            if name == "a lone surrogate" {
                assert!(log.contains("lone UTF-16 surrogate"), "{name}, {path:?}: {log}");
            }
        }
    }
}

/// Shapes no server means: the attempt is malformed, and the next one is delivered.
#[test]
fn malformed_shapes_are_retried() {
    let good = answer(&[text("good")]);
    let nameless = delta(r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"arguments":"{}"}}]}"#);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("content is a number", answer(&[text("a"), delta(r#"{"content":42}"#)])),
        ("a tool call without a name", answer(&[nameless])),
        ("only [DONE]", b"data: [DONE]\n\n".to_vec()),
        (
            "no choice, then [DONE]",
            b"data: {\"choices\":[],\"prompt_filter_results\":[]}\n\ndata: [DONE]\n\n".to_vec(),
        ),
    ];
    for (name, bad) in cases {
        for path in PATHS {
            let (got, attempts, _) = ask(path, vec![Step::stream(&bad), Step::stream(&good)]);
            assert_eq!((got.as_str(), attempts), ("good", 2), "{name}, {path:?}");
        }
    }
}

/// Nothing after `[DONE]` belongs to the answer, however the reads cut the stream: the same
/// answer for a split at every byte, on both folded paths, and a streaming chat client gets
/// the stream up to its `[DONE]` and not a byte after it.
#[test]
fn data_after_done_is_not_the_answer() {
    let clean = answer(&[text("x")]);
    let mut stream = clean.clone();
    stream.extend_from_slice(format!("data: {}\n\n", text("after done")).as_bytes());
    let len = stream.len();
    let body = stream.clone();
    let mock = Mock::generated(move |i, _| {
        let cut = (i / 3).min(len);
        let pieces = vec![
            Piece::Bytes(body[..cut].to_vec()),
            Piece::Pause(std::time::Duration::from_micros(200)),
            Piece::Bytes(body[cut..].to_vec()),
        ];
        Step { pieces, ..Step::stream(b"") }
    });
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_API", "chat")]);
    for cut in 0..=len {
        for path in PATHS {
            let got = match path {
                Path::Adapter => post(&proxy.url("/v1/responses"), RESPONSES),
                Path::Chat => post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN),
            };
            assert_eq!(summary(path, &got), "x", "cut at {cut}, {path:?}");
        }
        let streamed = post(&proxy.url("/v1/chat/completions"), CHAT_STREAM);
        assert_eq!(
            (streamed.status, streamed.text()),
            (200, String::from_utf8_lossy(&clean).into_owned()),
            "cut at {cut}"
        );
    }
    assert_eq!(mock.attempts(), 3 * (len + 1), "no retries");
}
