//! A mock upstream with a prompt cache of its own, like one OpenAI or Azure deployment: it
//! remembers the inputs it has seen and reports, in the answer's
//! `usage.input_tokens_details.cached_tokens`, how much of a new input starts with one of
//! them, the way those APIs count it: whole input items (the instructions first), at least
//! 1024 tokens, in steps of 128, a token being 4 bytes of the item's JSON. Nothing expires:
//! the cache keeps everything it saw (a real one keeps a prefix for minutes, longer than the
//! turns of one conversation take), so a conversation that comes back to this upstream after
//! a few turns elsewhere still finds the part it sent then.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::fixtures;
use super::mock::{Mock, Seen, Step};

/// The least prefix cached, and the step of the cached count (OpenAI's figures).
const MIN_CACHED: u64 = 1024;
const STEP: u64 = 128;

/// One request's input as pieces (the instructions, then each item's JSON), each with the
/// token count of the input up to its end.
type Input = Vec<(String, u64)>;

/// The pieces of a request's input.
fn prefix_ends(body: &Value) -> Input {
    let mut pieces: Vec<String> = vec![body["instructions"].to_string()];
    if let Some(items) = body["input"].as_array() {
        pieces.extend(items.iter().map(Value::to_string));
    }
    let mut total = 0;
    pieces
        .into_iter()
        .map(|piece| {
            total += (piece.len() as u64).div_ceil(4);
            (piece, total)
        })
        .collect()
}

/// What the cache reports for `input` after having seen `seen`: the longest common prefix
/// of whole pieces with any input seen, in tokens, rounded down to a step, 0 below the least.
fn cached(seen: &[Input], input: &[(String, u64)]) -> u64 {
    let best = seen
        .iter()
        .map(|old| old.iter().zip(input).take_while(|(a, b)| a.0 == b.0).last().map_or(0, |(_, b)| b.1))
        .max()
        .unwrap_or(0);
    if best < MIN_CACHED {
        0
    } else {
        best / STEP * STEP
    }
}

/// A Responses stream answering `text`, with this usage.
fn answer(text: &str, input_tokens: u64, cached_tokens: u64) -> Vec<u8> {
    let stream = String::from_utf8(fixtures::responses(text, false)).unwrap();
    let from = r#""input_tokens":1234,"input_tokens_details":{"cached_tokens":1024}"#;
    assert!(stream.contains(from), "the fixture's usage changed");
    let to = format!(
        r#""input_tokens":{input_tokens},"input_tokens_details":{{"cached_tokens":{cached_tokens}}}"#
    );
    stream.replace(from, &to).into_bytes()
}

/// Start an upstream with its own prompt cache.
pub fn start() -> Mock {
    let seen: Arc<Mutex<Vec<Input>>> = Arc::default();
    Mock::generated(move |_, request: &Seen| {
        let input = prefix_ends(&request.json());
        let total = input.last().map_or(0, |(_, end)| *end);
        let mut seen = seen.lock().unwrap();
        let hit = cached(&seen, &input);
        seen.push(input);
        Step::stream(&answer("Done.", total, hit))
    })
}

#[test]
fn the_cache_counts_like_the_apis() {
    let body = |items: usize| {
        let input: Vec<Value> =
            (0..items).map(|i| serde_json::json!({"n": i, "text": "x".repeat(2000)})).collect();
        serde_json::json!({"instructions": "y".repeat(6000), "input": input})
    };
    let first = prefix_ends(&body(2));
    let longer = prefix_ends(&body(4));
    assert_eq!(cached(&[], &first), 0, "nothing seen");
    let expected = first.last().unwrap().1 / STEP * STEP;
    assert!(first.last().unwrap().1 % STEP != 0 && expected >= MIN_CACHED, "a case that rounds");
    assert_eq!(
        cached(std::slice::from_ref(&first), &longer),
        expected,
        "the earlier input, whole items, in steps"
    );
    let mut changed = longer.clone();
    changed[2].0.push('!');
    assert_eq!(
        cached(std::slice::from_ref(&first), &changed),
        first[1].1 / STEP * STEP,
        "up to the first change"
    );
    let short = prefix_ends(&serde_json::json!({"instructions": "z", "input": []}));
    assert_eq!(cached(std::slice::from_ref(&short), &short), 0, "under 1024 tokens nothing is cached");
    let other = prefix_ends(&serde_json::json!({"instructions": "w".repeat(2000), "input": []}));
    assert_eq!(cached(&[first], &other), 0, "another prefix");
}
