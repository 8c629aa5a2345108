//! `/metrics`, `/status` and `LOG_FORMAT=json` on a real proxy, after a known fault sequence;
//! and who may read the local pages.

use std::collections::BTreeMap;

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Mock, Step};
use crate::support::{post, request, Proxy, CHAT_PLAIN, RESPONSES_STREAM};

fn status(code: u16) -> Step {
    Step::json(code, &fixtures::error_body(&code.to_string(), "transient failure, please retry"))
}

/// `series -> value` of an exposition, e.g. `codex_shield_retries_total{reason="429"}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Three requests: 429, 500, cut, then an answer (3 failures absorbed); 503 five times
/// (given up); a 400 passed through. Then the counters must say exactly that.
#[test]
fn metrics_count_a_known_fault_sequence() {
    let ok = fixtures::responses(ANSWER, false);
    let mut script =
        vec![status(429).header("retry-after-ms", "20"), status(500), Step::cut(&ok, 100), Step::stream(&ok)];
    script.extend(vec![status(503); 5]);
    script.push(Step::json(400, &fixtures::error_body("invalid_value", "bad input")));
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[("LOG_FORMAT", "json")]);
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 200);
    assert_eq!(post(&proxy.url("/v1/chat/completions"), CHAT_PLAIN).status, 503);
    assert_eq!(post(&proxy.url("/v1/responses"), RESPONSES_STREAM).status, 400);
    proxy.wait_for_log("\"status\":400");

    let got = request("GET", &proxy.url("/metrics"), &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let m = samples(&got.text());
    let expected: &[(&str, f64)] = &[
        (r#"codex_shield_requests_total{route="responses",status="200"}"#, 1.0),
        (r#"codex_shield_requests_total{route="chat",status="503"}"#, 1.0),
        (r#"codex_shield_requests_total{route="responses",status="400"}"#, 1.0),
        (r#"codex_shield_answers_delivered_total{route="responses"}"#, 1.0),
        (r#"codex_shield_answers_delivered_total{route="chat"}"#, 0.0),
        (r#"codex_shield_upstream_attempts_total{upstream="1",outcome="ok"}"#, 1.0),
        (r#"codex_shield_upstream_attempts_total{upstream="1",outcome="429"}"#, 1.0),
        (r#"codex_shield_upstream_attempts_total{upstream="1",outcome="5xx"}"#, 6.0),
        (r#"codex_shield_upstream_attempts_total{upstream="1",outcome="cut"}"#, 1.0),
        (r#"codex_shield_upstream_attempts_total{upstream="1",outcome="final_error"}"#, 1.0),
        (r#"codex_shield_failures_absorbed_total{outcome="429"}"#, 1.0),
        (r#"codex_shield_failures_absorbed_total{outcome="5xx"}"#, 1.0),
        (r#"codex_shield_failures_absorbed_total{outcome="cut"}"#, 1.0),
        (r#"codex_shield_requests_given_up_total{reason="5xx"}"#, 1.0),
        (r#"codex_shield_requests_given_up_total{reason="final_error"}"#, 0.0),
        (r#"codex_shield_retries_total{reason="5xx"}"#, 5.0),
        (r#"codex_shield_retries_total{reason="429"}"#, 1.0),
        (r#"codex_shield_client_hangups_total"#, 0.0),
        (r#"codex_shield_in_flight_requests"#, 0.0),
        (r#"codex_shield_upstream_cooling_down{upstream="1"}"#, 0.0),
        (r#"codex_shield_request_duration_seconds_count{route="responses"}"#, 2.0),
        (r#"codex_shield_upstream_attempt_duration_seconds_count{upstream="1"}"#, 10.0),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| m.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: expected {v}, got {:?}", m.get(*k)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(m[r#"codex_shield_retry_wait_seconds_total"#] > 0.0);

    let page = request("GET", &proxy.url("/status"), &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    for needle in [
        "<b id=\"requests\">3</b>",
        "<b id=\"absorbed\">3</b>",
        "<b id=\"given-up\">1</b>",
        "id=\"attempts-5xx\">6<",
    ] {
        assert!(html.contains(needle), "/status lacks {needle:?}");
    }
    assert!(!html.contains(ANSWER) && !html.contains("gpt-5-codex"), "never a prompt, an answer or a model");

    // LOG_FORMAT=json: every line after the banner is one JSON object
    let log = proxy.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> = lines.iter().filter(|v| v["msg"] == "request").collect();
    assert_eq!(requests.len(), 3, "{log}");
    assert_eq!(requests[0]["attempts"], 4);
    assert_eq!(requests[0]["retries"].as_array().map(Vec::len), Some(3));
    assert_eq!(requests[1]["path"], "/v1/chat/completions");
    assert!(lines.iter().any(|v| v["level"] == "debug"), "other lines are JSON too");
    assert!(
        !log.lines().any(|l| l.contains("/metrics") || l.contains("/status")),
        "local routes write no log line"
    );
}

#[test]
fn local_pages_need_a_key_or_the_status_token() {
    let mock = Mock::start(vec![]);
    let (key, token) = ("pk-PROXY-KEY-123", "st-STATUS-TOKEN-456");
    let proxy = Proxy::start(&mock.v1(), &[("PROXY_API_KEY", key), ("STATUS_TOKEN", token)]);
    let bearer = |k: &str| format!("Bearer {k}");
    let get = |path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        request("GET", &proxy.url(path), &headers, b"").status
    };
    let cases = [
        ("/healthz", None, 200),
        ("/metrics", None, 401),
        ("/metrics", Some(bearer(key)), 200),
        ("/metrics", Some(bearer(token)), 200),
        ("/metrics", Some(bearer("nope")), 401),
        (&*format!("/metrics?token={token}"), None, 401),
        ("/status", None, 401),
        (&*format!("/status?token={token}"), None, 200),
        (&*format!("/status?token={key}"), None, 401),
        ("/status", Some(bearer(token)), 200),
        ("/v1/models", Some(bearer(token)), 401),
    ];
    let got: Vec<String> =
        cases.iter().map(|(p, a, _)| format!("{p} {:?} {}", a.is_some(), get(p, a.as_deref()))).collect();
    let expected: Vec<String> = cases.iter().map(|(p, a, s)| format!("{p} {:?} {s}", a.is_some())).collect();
    assert_eq!(got, expected);
    assert_eq!(mock.attempts(), 0, "the status token opens no API route");
    let log = proxy.log();
    assert!(!log.contains(token) && !log.contains(key), "{log}");
}
