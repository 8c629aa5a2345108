//! The memory budget on a real proxy with a small `MEMORY_BUDGET_MB`: big requests and big
//! answers get a 503 `proxy_overloaded` with `retry-after` while small ones still pass, and
//! `/metrics` shows the budget and what is held. (What a request really costs is measured by
//! `tests/torture/memory.sh`.)

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Gather, Mock, Piece, Step};
use crate::support::{post, request, Got, Proxy, RESPONSES_STREAM};

const MIB: usize = 1 << 20;

/// A streaming Responses request of about `size` bytes.
fn big_request(size: usize) -> String {
    let text = "x".repeat(size);
    format!(r#"{{"model":"m","input":[{{"role":"user","content":"{text}"}}],"stream":true}}"#)
}

/// The two memory gauges of `/metrics`: (budget, held).
fn gauges(proxy: &Proxy) -> (f64, f64) {
    let got = request("GET", &proxy.url("/metrics"), &[], b"");
    let samples: BTreeMap<String, f64> = got
        .text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_string(), value.parse().unwrap_or(f64::NAN)))
        .collect();
    let get = |name: &str| *samples.get(name).unwrap_or_else(|| panic!("no {name} in:\n{}", got.text()));
    (get("codex_shield_memory_budget_bytes"), get("codex_shield_memory_held_bytes"))
}

/// Wait (bounded) until `/metrics` says nothing is held any more.
fn nothing_held(proxy: &Proxy) -> f64 {
    for _ in 0..500 {
        let (_, held) = gauges(proxy);
        if held == 0.0 {
            return held;
        }
        thread::sleep(Duration::from_millis(10));
    }
    gauges(proxy).1
}

fn overloaded(got: &Got) -> (u16, String, Option<&str>) {
    (got.status, got.error_code(), got.header("retry-after"))
}

/// With an 8 MiB budget (new requests while bodies hold under 4 MiB): a 1 MiB request is
/// charged 3 MiB while its answer is on the way; a second one does not fit and gets a 503
/// at once, never reaching the upstream, while a small one still passes. Then nothing is held.
#[test]
fn big_requests_wait_while_small_ones_pass() {
    let ok = fixtures::responses(ANSWER, false);
    let release = Gather::new(2);
    let held = Step::stream(&ok).before(Piece::Gather(release.clone()));
    let mock = Mock::start(vec![held.clone(), held]);
    let proxy = Proxy::start(&mock.v1(), &[("MEMORY_BUDGET_MB", "8")]);
    let (url, body) = (proxy.url("/v1/responses"), big_request(MIB));
    let first = {
        let (url, body) = (url.clone(), body.clone());
        thread::spawn(move || post(&url, &body))
    };
    for _ in 0..1000 {
        if mock.attempts() == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(mock.attempts(), 1, "the first big request never reached the upstream");
    let (budget, held) = gauges(&proxy);
    assert_eq!(budget, (8 * MIB) as f64);
    assert!(held >= (3 * MIB) as f64, "the first request holds 3x its body: {held}");

    let second = post(&url, &body);
    assert_eq!(overloaded(&second), (503, "proxy_overloaded".into(), Some("2")), "{}", second.text());
    assert!(second.text().contains("memory budget"), "{}", second.text());
    assert_eq!(mock.attempts(), 1, "a refused request does not reach the upstream");

    let small = post(&url, RESPONSES_STREAM);
    assert_eq!((small.status, small.body == ok), (200, true), "{}", small.text());
    let first = first.join().unwrap();
    assert_eq!((first.status, first.body == ok), (200, true), "{}", first.text());
    assert!(!*release.timed_out.lock().unwrap());
    assert_eq!(nothing_held(&proxy), 0.0, "every hold is given back");
}

/// An answer that would take what is held over 3/4 of the budget fails cleanly (503 with
/// `retry-after`, the proxy alive); a small answer then passes. Without a budget the same
/// answer is delivered.
#[test]
fn an_answer_over_the_budget_fails_cleanly() {
    let big = fixtures::responses(&"y".repeat(7 * MIB), false);
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&big), Step::stream(&ok)]);
    let proxy = Proxy::start(&mock.v1(), &[("MEMORY_BUDGET_MB", "8")]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!(overloaded(&got), (503, "proxy_overloaded".into(), Some("2")), "{}", got.text());
    assert_eq!(mock.attempts(), 1, "not retried");
    let small = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((small.status, small.body == ok), (200, true), "{}", small.text());
    assert_eq!(nothing_held(&proxy), 0.0);

    let mock = Mock::start(vec![Step::stream(&big)]);
    let proxy = Proxy::start(&mock.v1(), &[("MEMORY_BUDGET_MB", "off")]);
    let got = post(&proxy.url("/v1/responses"), RESPONSES_STREAM);
    assert_eq!((got.status, got.body == big), (200, true));
    assert_eq!(gauges(&proxy).0, 0.0, "no budget");
}
