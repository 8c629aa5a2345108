//! What travels upstream and what comes back: forcing, auth, headers, routes, non-stream
//! clients, bad input, the inbound key.

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Step};
use crate::support::*;

#[test]
fn forcing_auth_and_headers_are_visible_upstream() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok)
        .header("x-request-id", "req_123")
        .header("x-ratelimit-remaining-requests", "99")
        .header("set-cookie", "a=b")]);
    let proxy = Proxy::start(&mock.v1(), &[("FORCED_MODEL", "my-deployment")]);
    let got = request(
        "POST",
        &proxy.url("/v1/responses?trace=1"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ("accept-encoding", "gzip, br"),
            ("originator", "codex_cli_rs"),
            ("session_id", "abc-123"),
        ],
        br#"{"model":"gpt-5-codex","input":"hi","stream":false,"store":false}"#,
    );
    let seen = &mock.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/responses?trace=1");
    let body = seen.json();
    assert_eq!(body["stream"], true, "stream must be forced on");
    assert_eq!(body["model"], "my-deployment", "model must be forced");
    assert_eq!(body["store"], false, "other fields are kept");
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert_eq!(seen.header("api-key"), None);
    assert_eq!(seen.header("accept-encoding"), None, "the stream must stay uncompressed");
    assert_eq!(seen.header("originator"), Some("codex_cli_rs"));
    assert_eq!(seen.header("session_id"), Some("abc-123"));
    assert!(!seen.headers.iter().any(|(_, v)| v.contains(CLIENT_KEY)), "placeholder key forwarded");
    // a non-streaming client gets the response object
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let v = got.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], ANSWER);
    assert_eq!(got.header("x-upstream-request-id"), Some("req_123"), "the upstream's id, renamed");
    assert_eq!(got.header("x-request-id").map(str::len), Some(16), "the proxy's id");
    assert_eq!(got.header("x-ratelimit-remaining-requests"), Some("99"));
    assert_eq!(got.header("set-cookie"), None);
}

#[test]
fn azure_hosts_get_the_api_key_header() {
    // UPSTREAM_AUTH=api-key stands in for an *.openai.azure.com host (tests never leave 127.0.0.1).
    let mock = Mock::start(vec![Step::stream(&fixtures::chat(ANSWER, false))]);
    let proxy = Proxy::start(&mock.v1(), &[("UPSTREAM_AUTH", "api-key")]);
    let got = request(
        "POST",
        &proxy.url("/v1/chat/completions"),
        &[("api-key", CLIENT_KEY)],
        CHAT_STREAM.as_bytes(),
    );
    assert_eq!(got.status, 200);
    let seen = &mock.seen()[0];
    assert_eq!(seen.header("api-key"), Some(UPSTREAM_KEY));
    assert_eq!(seen.header("authorization"), None);
}

#[test]
fn stream_answers_are_byte_exact_with_length() {
    // well past 32 KiB, where tiny_http's own writer would switch to chunked encoding
    let ok = fixtures::responses(&ANSWER.repeat(40), true);
    assert!(ok.len() > 200_000);
    let mock = Mock::start(vec![Step::stream_split(&ok, 997)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, ok);
    assert!(got.header("content-type").unwrap().starts_with("text/event-stream"));
    assert_eq!(got.header("content-length"), Some(ok.len().to_string().as_str()));
}

#[test]
fn full_endpoint_url_is_used_as_is_with_its_query() {
    let mock = Mock::start(vec![Step::stream(&fixtures::chat(ANSWER, false))]);
    let endpoint =
        format!("{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", mock.origin);
    let proxy = Proxy::start(&endpoint, &[]);
    let got = post(&proxy.url("/chat/completions"), CHAT_STREAM);
    assert_eq!(got.status, 200);
    assert_eq!(mock.seen()[0].path, "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
}

#[test]
fn non_stream_chat_is_assembled() {
    let mock = Mock::start(vec![
        Step::stream(&fixtures::chat(ANSWER, false)),
        Step::stream(&fixtures::chat_tool_call()),
    ]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let got = post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN);
    assert_eq!(got.status, 200);
    assert_eq!(mock.seen()[0].json()["stream_options"]["include_usage"], true);
    let v = got.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-AbC123xyz");
    assert_eq!(v["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 60);
    let tool = post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN).json();
    let call = &tool["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "shell");
    assert_eq!(call["function"]["arguments"], "{\"command\": [\"ls\", \"-la\"]}");
    assert_eq!(tool["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn non_stream_client_gets_final_errors_as_json() {
    let failed =
        fixtures::responses_failed("context_length_exceeded", "Your input exceeds the context window.");
    let mock = Mock::start(vec![Step::stream(&failed)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_PLAIN);
    assert_eq!(got.status, 400);
    assert_eq!(got.error_code(), "context_length_exceeded");
    assert!(got.text().contains("context window"));
    assert_eq!(mock.attempts(), 1);
}

#[test]
fn bad_input_gets_clear_errors_and_never_reaches_upstream() {
    let mock = Mock::start(vec![]);
    let proxy = Proxy::start(&mock.v1(), &[("MAX_REQUEST_BYTES", "1000")]);
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        ("POST", "/v1/responses", b"{\"model\": ", 400, "invalid_request"),
        ("POST", "/v1/responses", b"", 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "invalid_request"),
        ("POST", "/v1/responses", b"\xff\xfe{}", 400, "invalid_request"),
        ("POST", "/v1/responses", &[b'{'; 5000], 413, "request_too_large"),
        ("GET", "/", b"", 404, "not_found"),
        ("DELETE", "/admin", b"", 404, "not_found"),
        ("POST", "/healthz", b"", 404, "not_found"),
        ("GET", "/v1/../etc/passwd", b"", 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let got = request(method, &proxy.url(path), &[("content-type", "application/json")], body);
        assert_eq!((got.status, got.error_code().as_str()), (*status, *code), "{method} {path}");
    }
    assert_eq!(mock.attempts(), 0);
    let health = request("GET", &proxy.url("/healthz"), &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn other_v1_routes_are_forwarded_with_retries() {
    let models = r#"{"object":"list","data":[{"id":"gpt-5-codex","object":"model"}]}"#;
    let mock = Mock::start(vec![
        Step::json(503, "{}"),
        Step::json(200, models),
        Step::json(404, "{\"error\":{\"message\":\"no\"}}"),
    ]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let got = request("GET", &proxy.url("/v1/models"), &[("authorization", "Bearer x")], b"");
    assert_eq!((got.status, got.text().as_str()), (200, models));
    assert_eq!(mock.attempts(), 2);
    assert_eq!(mock.seen()[1].method, "GET");
    assert_eq!(mock.seen()[1].path, "/v1/models");
    let missing = request("GET", &proxy.url("/v1/responses/resp_missing"), &[], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(mock.attempts(), 3);
}

#[test]
fn inbound_key_is_required_and_never_forwarded() {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok), Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[("PROXY_API_KEY", "team-proxy-key")]);
    let url = proxy.url("/v1/responses");
    let body = RESPONSES_STREAM.as_bytes();
    let none = request("POST", &url, &[], body);
    let wrong = request("POST", &url, &[("authorization", "Bearer team-proxy-kez")], body);
    let bearer = request("POST", &url, &[("authorization", "Bearer team-proxy-key")], body);
    let api_key = request("POST", &url, &[("api-key", "team-proxy-key")], body);
    let health = request("GET", &proxy.url("/healthz"), &[], b"");
    assert_eq!(
        [none.status, wrong.status, bearer.status, api_key.status, health.status],
        [401, 401, 200, 200, 200]
    );
    assert_eq!(none.error_code(), "invalid_api_key");
    assert_eq!(mock.attempts(), 2);
    for seen in mock.seen() {
        assert!(!seen.headers.iter().any(|(_, v)| v.contains("team-proxy-key")));
    }
}
