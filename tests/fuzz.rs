//! Property tests of the pure parsers: whatever bytes or strings arrive, they never panic, and
//! the SSE parser gives the same events however a stream is split across reads.
//!
//! Generators are biased towards the bytes that matter (field names, CR/LF, colons, BOM, JSON
//! fragments, error and terminal event names) so that short runs reach the interesting paths.
//! Case counts are kept small: the whole file runs in a few seconds. A chat answer made from
//! the reads the shield keeps does not depend on how the stream was split into them.

use std::time::{Duration, SystemTime};

use codex_shield::api::Exchange;
use codex_shield::check::{self, Api, Verdict};
use codex_shield::inbound;
use codex_shield::retry;
use codex_shield::route::{self, Endpoint, Route};
use codex_shield::shield;
use codex_shield::sse::{self, Event, Fed, Parser};
use codex_shield::translate::events::{to_responses, Ids, Status};
use codex_shield::translate::ToolMap;
use proptest::prelude::*;
use serde_json::Value;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Pieces a stream is made of, with random bytes among them.
fn sse_piece() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"data:",
        b"data: ",
        b"data",
        b"event:",
        b"event: error",
        b"event: response.completed",
        b"id: 7",
        b"retry: 10",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b":",
        b": keep-alive",
        b" ",
        b"\xEF\xBB\xBF",
        b"\xEF\xBB",
        b"\xEF",
        b"{\"type\":\"response.completed\"}",
        b"{\"type\":\"error\",\"code\":\"server_error\"}",
        b"{\"error\":{\"code\":\"429\",\"message\":\"try again in 1s\"}}",
        b"{\"choices\":[]}",
        b"[DONE]",
        b"{\"",
        b"\"}",
        b"\xff\xfe",
    ];
    prop_oneof![
        4 => proptest::sample::select(PIECES).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

/// A stream: mostly SSE-ish pieces, sometimes plain random bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(sse_piece(), 0..40).prop_map(|p| p.concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

/// An event's name and data, as bytes.
type Raw = (Vec<u8>, Vec<u8>);

/// Events of `input` with their raw bytes, fed to the parser in the pieces `cuts` make; also
/// how many bytes of an event still in progress the parser holds at the end.
fn parse_pieces(input: &[u8], cuts: &[usize]) -> (Vec<Raw>, usize) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut parser = Parser::new();
    let (mut out, mut from) = (Vec::new(), 0);
    for cut in cuts {
        parser.feed(&input[from..cut], |ev| {
            out.push((ev.name.to_vec(), ev.data.to_vec()));
            true
        });
        from = cut;
    }
    (out, parser.pending_event_bytes())
}

fn lossy(events: &[Raw]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|(n, d)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(d).into_owned()))
        .collect()
}

/// A JSON value shaped like the events `check` reads: the keys and strings it looks at.
fn json_value() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &["type", "error", "code", "message", "response", "choices", "delta", "status"];
    const WORDS: &[&str] = &[
        "error",
        "response.failed",
        "response.completed",
        "response.incomplete",
        "server_error",
        "rate_limit_exceeded",
        "context_length_exceeded",
        "invalid_request_error",
        "429",
        "Please try again in 1.5s",
        "retry after 99999999999999999999 hours",
        "try again in 1e308s",
        "try again in .s",
        "",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(WORDS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn event_data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => stream(),
        1 => Just(b"[DONE]".to_vec()),
        1 => Just(b" \t\n".to_vec()),
    ]
}

fn event_name() -> impl Strategy<Value = Vec<u8>> {
    const NAMES: &[&[u8]] =
        &[b"", b"error", b"response.failed", b"response.completed", b"response.incomplete", b"message"];
    prop_oneof![
        3 => proptest::sample::select(NAMES).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

/// Strings around what `route`, `Endpoint::parse` and `url_for` look at.
fn url_text() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "/",
        "/v1",
        "/v1/",
        "responses",
        "chat/completions",
        "/healthz",
        "..",
        ".",
        "?",
        "&",
        "#",
        "@",
        ":",
        "//",
        "http://",
        "https://",
        "evil.example",
        "[::1]",
        "%2e%2e",
        "%2F",
        "\\",
        " ",
        "\u{0}",
        "é",
        "*",
    ];
    prop_oneof![
        3 => proptest::collection::vec(proptest::sample::select(PIECES), 0..12).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

/// Endpoints an operator could configure.
fn endpoint() -> impl Strategy<Value = Endpoint> {
    const BASES: &[&str] = &[
        "http://127.0.0.1:9000/v1",
        "https://x.openai.azure.com/openai/v1",
        "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2025-01-01",
        "https://api.example.com/v1/responses",
        "http://[::1]:8080",
        "https://api.example.com",
    ];
    proptest::sample::select(BASES).prop_map(|b| Endpoint::parse(b).unwrap())
}

/// The authority (`host[:port]`) a real URL parser reads in `url`, if it parses.
fn authority(url: &str) -> Option<String> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    uri.authority().map(|a| a.as_str().to_string())
}

proptest! {
    #![proptest_config(config(3000))]

    /// Any split of any stream parses like the whole, with the same event left in progress.
    #[test]
    fn sse_any_split_equals_the_whole(
        input in stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (whole, whole_pending) = parse_pieces(&input, &[]);
        let (pieces, pending) = parse_pieces(&input, &cuts);
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(pending, whole_pending);
        prop_assert_eq!(lossy(&pieces), sse::events([&input[..]]));
    }

    /// Byte by byte, the hardest split.
    #[test]
    fn sse_byte_by_byte_equals_the_whole(input in stream()) {
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(parse_pieces(&input, &every), parse_pieces(&input, &[]));
    }
}

/// The terminal events, read independently of `check`: chat's `[DONE]`; a Responses event whose
/// `type` (or, without a string `type`, whose SSE name) is `response.completed` or
/// `response.incomplete`.
fn is_terminal(api: Api, name: &[u8], data: &[u8]) -> bool {
    const DONE: [&str; 2] = ["response.completed", "response.incomplete"];
    match api {
        Api::Chat => data.trim_ascii() == b"[DONE]",
        Api::Responses => {
            let Ok(value) = serde_json::from_slice::<Value>(data) else {
                return false;
            };
            let kind = value["type"].as_str().map(str::as_bytes).unwrap_or(name);
            DONE.iter().any(|d| d.as_bytes() == kind)
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    /// `observe` never panics; a Complete verdict only comes from a terminal event.
    #[test]
    fn observe_never_panics(name in event_name(), data in event_data()) {
        let event = Event { name: &name, data: &data };
        for api in [Api::Responses, Api::Chat] {
            if let Verdict::Failed(e) = check::observe(api, &event) {
                prop_assert!(e.hint.is_none_or(|h| h <= Duration::from_secs(86_400 * 365)), "{:?}", e);
            }
        }
        if data.trim_ascii() == b"[DONE]" {
            prop_assert_eq!(check::observe(Api::Chat, &event), Verdict::Complete);
        }
        for api in [Api::Responses, Api::Chat] {
            if check::observe(api, &event) == Verdict::Complete {
                prop_assert!(is_terminal(api, &name, &data), "{:?} called {:?} {:?} complete", api,
                    String::from_utf8_lossy(&name), String::from_utf8_lossy(&data));
            }
        }
    }

    /// `parse_body` + `upstream_body` either refuse the body or returns a JSON object with `stream: true`.
    #[test]
    fn prepare_forces_stream_or_refuses(
        body in prop_oneof![
            2 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => stream(),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ],
        forced in proptest::option::of(".{0,8}"),
    ) {
        for api in [Api::Responses, Api::Chat] {
            let prepared = inbound::parse_body(body.clone()).and_then(|(object, _)| {
                shield::upstream_body(&object, Exchange::new(api, api), forced.as_deref(), false)
            });
            if let Ok((out, _tools)) = prepared {
                let v: Value = serde_json::from_slice(&out).expect("prepare returned invalid JSON");
                prop_assert!(v.is_object());
                prop_assert_eq!(&v["stream"], &Value::Bool(true));
                if let Some(model) = &forced {
                    prop_assert_eq!(&v["model"], &Value::String(model.clone()));
                }
            }
        }
    }

    /// Whatever path and query a client sends, the upstream URL names the configured origin and
    /// a URL parser reads the configured host and port in it.
    #[test]
    fn client_paths_never_choose_the_host(
        ep in endpoint(),
        method in proptest::sample::select(&["GET", "POST", "DELETE", "HEAD", "PUT"][..]),
        path in url_text(),
        query in proptest::option::of(url_text()),
    ) {
        let (api, rest) = match route::route(method, &path) {
            Route::Shielded(api, rest) => (Some(api), rest),
            Route::Forward(rest) => (None, rest),
            Route::NotFound => return Ok(()),
        };
        let url = ep.url_for(&rest, api, query.as_deref());
        prop_assert!(url.starts_with(&ep.origin), "{} does not start with {}", url, ep.origin);
        let expected = authority(&ep.origin);
        if let Some(got) = authority(&url) {
            prop_assert_eq!(Some(got), expected, "{}", url);
        }
    }

    /// Arbitrary strings: `route`, `Endpoint::parse` and `url_for` never panic.
    #[test]
    fn target_never_panics(a in url_text(), b in url_text(), c in proptest::option::of(url_text())) {
        let _ = route::route("POST", &a);
        let _ = route::route(&b, &a);
        if let Ok(ep) = Endpoint::parse(&a) {
            prop_assert!(ep.url_for(&b, None, c.as_deref()).starts_with(&ep.origin));
            prop_assert!(ep.url_for(&b, Some(Api::Chat), c.as_deref()).starts_with(&ep.origin));
            let _ = ep.display();
            let _ = ep.auto_auth();
        }
    }

    /// Retry hints never panic, and are finite and bounded when present.
    #[test]
    fn retry_hints_never_panic(
        message in prop_oneof![
            Just("Please try again in ".to_string()).prop_flat_map(|p| ".{0,16}".prop_map(move |s| p.clone() + &s)),
            Just("retry after ".to_string()).prop_flat_map(|p| "[0-9.a-z ]{0,16}".prop_map(move |s| p.clone() + &s)),
            any::<String>(),
        ],
        value in prop_oneof![
            "[0-9.eE+-]{0,24}",
            Just("Sun, 06 Nov 1994 08:49:37 GMT".to_string()),
            Just("Fri, 31 Dec 99999 23:59:59 GMT".to_string()),
            Just("Mon, 99 Foo -9223372036854775808 99:99:99 GMT".to_string()),
            "[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} -?[0-9]{1,20} [0-9:]{0,10} GMT",
            any::<String>(),
        ],
        name in proptest::sample::select(&["retry-after", "retry-after-ms", "x-ms-retry-after-ms"][..]),
        now_secs in any::<u32>(),
    ) {
        let limit = Duration::from_secs(86_400);
        if let Some(h) = retry::hint_from_message(&message) {
            prop_assert!(h.as_secs_f64().is_finite());
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(now_secs));
        let header = |n: &str| (n == name).then_some(value.as_str());
        if let Some(h) = retry::hint_from_headers(header, now) {
            prop_assert!(h <= limit, "{} {:?} -> {:?}", name, value, h);
        }
    }
}

/// One chunk of a chat answer, in the shapes servers send.
fn chat_chunk() -> impl Strategy<Value = String> {
    let text = prop_oneof![".{0,8}", Just("[DONE]".to_string()), Just("\"}".to_string())];
    prop_oneof![
        3 => text.clone().prop_map(|t| json_chunk(&serde_json::json!({"content": t}).to_string())),
        1 => text.clone().prop_map(|t| json_chunk(&serde_json::json!({"content": [{"type": "text", "text": t}]}).to_string())),
        1 => Just(json_chunk(r#"{"content":"half \ud83d"}"#)),
        1 => text.prop_map(|t| json_chunk(&serde_json::json!({"reasoning_content": t}).to_string())),
        1 => Just(json_chunk(r#"{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":{"a":1}}}]}"#)),
        1 => Just(r#"{"choices":[],"prompt_filter_results":[]}"#.to_string()),
    ]
}

fn json_chunk(delta: &str) -> String {
    format!(r#"{{"id":"c","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}"#)
}

/// A whole chat answer, `[DONE]` included, then what may follow it in the same reads.
fn chat_answer() -> impl Strategy<Value = (String, String)> {
    let after = prop_oneof![
        Just(String::new()),
        chat_chunk().prop_map(|c| format!("data: {c}\n\n")),
        Just("data: {oops".to_string()),
        Just(": keep-alive\n\n".to_string()),
    ];
    (proptest::collection::vec(chat_chunk(), 0..12), any::<bool>(), after).prop_map(|(chunks, crlf, after)| {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut out: String = chunks.iter().map(|c| format!("data: {c}{nl}{nl}")).collect();
        out.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}{nl}{nl}data: [DONE]{nl}{nl}"
        ));
        (out, after)
    })
}

/// The bytes the shield keeps of a chat stream given in these reads: every read up to the
/// terminal event (nothing after it, even in the same read), and the LF of a CRLF split at
/// it, as `upstream/read.rs` keeps them.
fn kept_reads(reads: &[&[u8]]) -> Vec<u8> {
    let (mut parser, mut progress, mut kept) = (Parser::new(), check::Progress::default(), Vec::new());
    for read in reads {
        let fed = parser.feed(read, |event| progress.observe(Api::Chat, &event) != Verdict::Complete);
        if let Fed::Stopped { unread } = fed {
            kept.extend_from_slice(&read[..read.len() - unread]);
            break;
        }
        kept.extend_from_slice(read);
    }
    if kept.last() == Some(&b'\r') {
        kept.push(b'\n'); // the LF of a CRLF the read split off is supplied
    }
    kept
}

proptest! {
    #![proptest_config(config(500))]

    /// A chat answer is the same however the stream is split into reads, whatever follows its
    /// `[DONE]` in the same read.
    #[test]
    fn a_chat_answer_does_not_depend_on_the_reads(
        (answer, after) in chat_answer(),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
    ) {
        let translate = |body: &[u8]| {
            let got = to_responses(&[body], &ToolMap::default(), &serde_json::json!({"model": "m"}), &mut Ids::new(7));
            (got.stream, got.status)
        };
        let clean = translate(answer.as_bytes());
        prop_assert_eq!(&clean.1, &Status::Completed);
        let stream = format!("{answer}{after}");
        let bytes = stream.as_bytes();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut reads = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            reads.push(&bytes[from..cut]);
            from = cut;
        }
        let kept = kept_reads(&reads);
        prop_assert!(kept.starts_with(answer.as_bytes()), "the check stopped before [DONE]");
        prop_assert_eq!(translate(&kept), clean, "kept {:?}", String::from_utf8_lossy(&kept));
    }
}
