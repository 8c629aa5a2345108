//! Sessions that keep their prompt cache (`STICKY_SESSIONS`), and one request followed from
//! client to upstream and back (`traceparent`, `x-request-id`, the log line's `rid=` and
//! `trace=`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Step};
use crate::support::*;

/// A proxy in front of `mocks`, round-robin, with `STICKY_SESSIONS` as given.
fn round_robin(mocks: &[Mock], sticky: &str) -> Proxy {
    let mut endpoints: Vec<(String, String)> = Vec::new();
    for (i, m) in mocks.iter().enumerate().skip(1) {
        endpoints.push((format!("AZURE_ENDPOINT_{}", i + 1), m.v1()));
        endpoints.push((format!("AZURE_API_KEY_{}", i + 1), format!("k{}", i + 1)));
    }
    let mut env: Vec<(&str, &str)> = endpoints.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("ROUTING", "round-robin"), ("STICKY_SESSIONS", sticky), ("LOG_LEVEL", "info")]);
    Proxy::start(&mocks[0].v1(), &env)
}

/// One Codex turn: the whole conversation so far, named by its thread id in the body and
/// the `session_id` header, as Codex sends it.
fn turn(proxy: &Proxy, thread: &str, input: &[Value]) -> Got {
    let body = json!({
        "model": "gpt-5-codex", "instructions": format!("You are Codex. {}", "Follow the rules. ".repeat(450)),
        "input": input, "tools": [], "tool_choice": "auto", "parallel_tool_calls": false,
        "reasoning": {"effort": "medium"}, "store": false, "stream": true,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": thread,
    });
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer codex-placeholder-key"),
        ("session_id", thread),
        ("originator", "codex_cli_rs"),
    ];
    request("POST", &proxy.url("/v1/responses"), &headers, body.to_string().as_bytes())
}

/// The usage in a Responses stream's `response.completed` event: (input, cached).
fn usage(got: &Got) -> (u64, u64) {
    let text = got.text();
    let data = text
        .split("\n\n")
        .find(|e| e.starts_with("event: response.completed"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("no response.completed in {text}"));
    let usage = &serde_json::from_str::<Value>(data).unwrap()["response"]["usage"];
    (
        usage["input_tokens"].as_u64().unwrap(),
        usage["input_tokens_details"]["cached_tokens"].as_u64().unwrap(),
    )
}

/// A 20-turn conversation, each turn adding a tool call's output and the model's answer:
/// (cached input tokens / input tokens, uncached input tokens, requests per upstream).
fn conversation(sticky: &str) -> (f64, u64, Vec<usize>) {
    let mocks: Vec<Mock> = (0..3).map(|_| crate::support::cache::start()).collect();
    let proxy = round_robin(&mocks, sticky);
    let thread = "019a2f3c-7d1e-7b40-9c55-3e8f1a2b4c6d";
    let mut input = vec![json!({"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Fix the failing test in src/pool.rs."}]})];
    let (mut total, mut cached) = (0, 0);
    for t in 0..20 {
        let got = turn(&proxy, thread, &input);
        assert_eq!(got.status, 200, "turn {t}: {}\n{}", got.text(), proxy.log());
        let (i, c) = usage(&got);
        total += i;
        cached += c;
        input.push(json!({"type": "function_call", "call_id": format!("call_{t}"), "name": "shell",
            "arguments": format!("{{\"cmd\":[\"sed\",\"-n\",\"{t},+80p\",\"src/pool.rs\"]}}")}));
        input.push(json!({"type": "function_call_output", "call_id": format!("call_{t}"),
            "output": format!("line {t}: {}", "let choice = choose(&health, now, order, stale);\n".repeat(40))}));
    }
    let spread = mocks.iter().map(Mock::attempts).collect();
    (cached as f64 / total as f64, total - cached, spread)
}

/// The figure: a 20-turn Codex-like conversation over three upstreams with a prompt cache
/// each, round-robin, with and without sticky sessions.
#[test]
fn a_conversation_keeps_its_prompt_cache_on_one_upstream() {
    let (sticky_ratio, sticky_uncached, sticky_spread) = conversation("on");
    let (spread_ratio, spread_uncached, spread_spread) = conversation("off");
    println!(
        "prompt cache, 20-turn conversation over 3 upstreams, ROUTING=round-robin: \
         STICKY_SESSIONS=on {:.1} % cached ({sticky_uncached} input tokens uncached, requests per upstream {sticky_spread:?}); \
         off {:.1} % cached ({spread_uncached} uncached, {spread_spread:?}): {:.1}x the uncached input",
        sticky_ratio * 100.0,
        spread_ratio * 100.0,
        spread_uncached as f64 / sticky_uncached as f64
    );
    let mut sorted = sticky_spread.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 0, 20], "one upstream takes the whole conversation");
    assert_eq!(spread_spread, vec![7, 7, 6], "without stickiness each request goes to the next");
    // Spread, each upstream still finds what it saw three turns before (its cache keeps it):
    // the ratio drops less than to 1/3, but the input paid in full is more than twice as much.
    assert!(sticky_ratio > 0.85, "sticky: {sticky_ratio}");
    assert!(sticky_ratio - spread_ratio > 0.1, "sticky {sticky_ratio}, spread {spread_ratio}");
    assert!(spread_uncached > 2 * sticky_uncached, "uncached: {spread_uncached} vs {sticky_uncached}");
}

/// An upstream that answers every request, or 429 (resting 30 s) while `resting` is set;
/// it records the session of every request it answered.
fn recording(resting: Arc<AtomicBool>, served: Arc<Mutex<Vec<String>>>) -> Mock {
    let ok = fixtures::responses(ANSWER, false);
    Mock::generated(move |_, seen| {
        if resting.load(Ordering::SeqCst) {
            let body = fixtures::error_body("429", "Rate limit reached.");
            return Step::json(429, &body).header("retry-after", "30");
        }
        served.lock().unwrap().push(seen.json()["prompt_cache_key"].as_str().unwrap_or("").to_string());
        Step::stream(&ok)
    })
}

/// 60 sessions over three upstreams: even enough; each stays on its upstream turn after
/// turn (one of them for 100 turns, among the others' requests); when one upstream rests,
/// its sessions (and only they) move, and come back when the rest is over for the pool.
#[test]
fn sessions_spread_stay_and_move_only_when_their_upstream_rests() {
    let resting: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let served: Vec<Arc<Mutex<Vec<String>>>> = (0..3).map(|_| Arc::default()).collect();
    let mocks: Vec<Mock> =
        (0..3).map(|i| recording(Arc::clone(&resting[i]), Arc::clone(&served[i]))).collect();
    let proxy = round_robin(&mocks, "on");
    let sessions: Vec<String> = (0..60).map(|i| format!("019a0000-0000-7000-8000-{i:012x}")).collect();
    // Which upstream served each session in a round of one turn each.
    let round = || -> BTreeMap<String, usize> {
        for s in &served {
            s.lock().unwrap().clear();
        }
        for s in &sessions {
            assert_eq!(
                turn(&proxy, s, &[json!({"role": "user", "content": "hi"})]).status,
                200,
                "{}",
                proxy.log()
            );
        }
        let mut homes = BTreeMap::new();
        for (i, s) in served.iter().enumerate() {
            for key in s.lock().unwrap().iter() {
                assert!(homes.insert(key.clone(), i).is_none(), "{key} served twice");
            }
        }
        homes
    };
    let homes = round();
    assert_eq!(homes.len(), 60);
    let counts: Vec<usize> = (0..3).map(|i| homes.values().filter(|&&h| h == i).count()).collect();
    assert!(counts.iter().all(|&n| (12..=28).contains(&n)), "sessions per upstream: {counts:?}");
    let mut one = BTreeMap::new();
    for t in 0..100 {
        let who = &sessions[t % 7];
        let before: Vec<usize> = served.iter().map(|s| s.lock().unwrap().len()).collect();
        assert_eq!(turn(&proxy, who, &[json!({"role": "user", "content": "again"})]).status, 200);
        let after: Vec<usize> = served.iter().map(|s| s.lock().unwrap().len()).collect();
        let went = (0..3).find(|&i| after[i] > before[i]).unwrap();
        assert_eq!(*one.entry(who.clone()).or_insert(went), went, "{who} moved at turn {t}");
        assert_eq!(went, homes[who], "{who} left its upstream at turn {t}");
    }
    // Upstream 1 rests (a 429 asking for 30 s): its sessions move, the others stay.
    resting[0].store(true, Ordering::SeqCst);
    let during = round();
    assert_eq!(during.len(), 60);
    for (key, &home) in &homes {
        match home {
            0 => assert_ne!(during[key], 0, "{key} should have moved"),
            _ => assert_eq!(during[key], home, "{key} moved although its upstream was ready"),
        }
    }
    let moved: Vec<usize> =
        (1..3).map(|i| during.iter().filter(|(k, &h)| h == i && homes[*k] == 0).count()).collect();
    assert!(
        moved.iter().all(|&n| n * 4 >= counts[0]),
        "upstream 1's sessions spread over the others: {moved:?}"
    );
}

/// The trace of one request: the client's `traceparent` goes on with every attempt (same
/// trace, a new span each), the answer carries the request's id (and the upstream's own
/// under another name), and the log line has both.
#[test]
fn one_request_is_followed_from_client_to_upstream_and_back() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![
        Step::json(500, &fixtures::error_body("server_error", "The server had an error.")),
        Step::stream(&ok).header("x-request-id", "req_upstream_7"),
        Step::stream(&ok),
    ]);
    let proxy = Proxy::start(&mock.v1(), &[("LOG_FORMAT", "json")]);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("content-type", "application/json"), ("traceparent", parent)];
    let got = request("POST", &proxy.url("/v1/responses"), &headers, RESPONSES_STREAM.as_bytes());
    assert_eq!(got.status, 200, "{}", proxy.log());
    let rid = got.header("x-request-id").expect("a request id").to_string();
    assert!(rid.len() == 16 && rid.bytes().all(|b| b.is_ascii_hexdigit()), "{rid}");
    assert_eq!(got.header("x-upstream-request-id"), Some("req_upstream_7"));
    let sent: Vec<String> =
        mock.seen().iter().map(|s| s.header("traceparent").unwrap_or("").to_string()).collect();
    assert_eq!(sent.len(), 2);
    for s in &sent {
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.len(), 4, "{s}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"), "{s}");
        assert!(parts[2].len() == 16 && parts[2] != "00f067aa0ba902b7", "a span of the proxy's: {s}");
    }
    assert_ne!(sent[0], sent[1], "each attempt is a span of its own");
    let log = proxy.wait_for_log(&format!("\"rid\":\"{rid}\""));
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["rid"] == rid.as_str())
        .unwrap();
    assert_eq!(line["trace"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
    assert_eq!(line["upstream_rid"], "req_upstream_7", "{line}");
    assert_eq!(line["attempts"], 2, "{line}");

    // A malformed traceparent starts a trace of the proxy's own; every answer has an id,
    // errors and the proxy's own pages included, a new one each time.
    let bad = [("content-type", "application/json"), ("traceparent", "00-xyz-01")];
    let got = request("POST", &proxy.url("/v1/responses"), &bad, RESPONSES_STREAM.as_bytes());
    let sent = mock.seen()[2].header("traceparent").unwrap_or("").to_string();
    assert!(sent.starts_with("00-") && sent.len() == 55 && !sent.contains("xyz"), "{sent}");
    let mut ids = vec![rid, got.header("x-request-id").unwrap_or("").to_string()];
    for (method, path) in [("GET", "/nowhere"), ("POST", "/v1/responses"), ("GET", "/healthz")] {
        let got = request(method, &proxy.url(path), &[("content-type", "application/json")], b"{");
        assert!(
            got.status == 404 || got.status == 400 || got.status == 200,
            "{method} {path}: {}",
            got.status
        );
        ids.push(got.header("x-request-id").unwrap_or("").to_string());
    }
    assert!(ids.iter().all(|id| id.len() == 16), "{ids:?}");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}
