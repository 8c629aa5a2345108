//! `CLIENT_KEYS_FILE` on a real proxy: named keys beside `PROXY_API_KEY`, the name in the log
//! line, `/metrics` and `/status` (never the key), a key's `max=`, the file re-read under load
//! (no request fails, a removed key is refused from the reload on), a malformed file at start
//! and at reload, and wrong keys feeding the brake.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Gather, Mock, Piece, Step};
use crate::support::{command, request, scratch_dir, Got, Proxy, RESPONSES_STREAM};

const ALICE: &str = "sk-alice-0123456789abcdef";
const BOB: &str = "sk-bob-fedcba9876543210";
/// `printf %s sk-bob-fedcba9876543210 | sha256sum`
const BOB_SHA: &str = "sha256:ea0d0bf3fec74bad24fa49c2b84b0aeb22c501becb1702c723f12db3511aad19";
const CAROL: &str = "sk-carol-00000000000000";
const PROXY_KEY: &str = "pk-shared-PROXY-KEY";

/// A keys file in a directory of its own.
fn keys_file(text: &str) -> PathBuf {
    let path = scratch_dir().join("client-keys");
    std::fs::write(&path, text).unwrap();
    path
}

/// Replace the file whole, as `mv` does (a new inode).
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn ask(proxy: &Proxy, key: &str) -> Got {
    let auth = format!("Bearer {key}");
    request(
        "POST",
        &proxy.url("/v1/responses"),
        &[("content-type", "application/json"), ("authorization", &auth)],
        RESPONSES_STREAM.as_bytes(),
    )
}

fn page(proxy: &Proxy, path: &str, key: &str) -> String {
    let got = request("GET", &proxy.url(path), &[("api-key", key)], b"");
    assert_eq!(got.status, 200, "{path}: {}", got.text());
    got.text()
}

fn answers() -> Mock {
    let ok = fixtures::responses(ANSWER, false);
    Mock::generated(move |_, _| Step::stream(&ok))
}

/// Poll `key` until it gets `status` (the file is looked at every 250 ms), within 5 s.
fn until_status(proxy: &Proxy, key: &str, status: u16) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if ask(proxy, key).status == status {
            return start.elapsed();
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{key:.6}… never got {status}:\n{}", proxy.log());
}

/// Named keys beside PROXY_API_KEY: each name shows in the log line, `/metrics` and
/// `/status`; PROXY_API_KEY and wrong keys count under `-`; no key is shown anywhere.
#[test]
fn named_keys_show_their_names_never_their_keys() {
    let mock = answers();
    let path = keys_file(&format!("# the team\nalice: {ALICE}\nbob: {BOB_SHA} max=3\nci-bot: {CAROL}\n"));
    let env = [("CLIENT_KEYS_FILE", path.to_str().unwrap()), ("PROXY_API_KEY", PROXY_KEY)];
    let proxy = Proxy::start(&mock.v1(), &env);
    let statuses: Vec<u16> =
        [ALICE, ALICE, BOB, PROXY_KEY, "sk-wrong"].iter().map(|k| ask(&proxy, k).status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 401]);
    assert_eq!(mock.attempts(), 4);
    let log = proxy.wait_for_log("status=401");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("POST /v1/responses")).collect();
    let clients: Vec<Option<&str>> =
        lines.iter().map(|l| l.split(" client=").nth(1).and_then(|r| r.split(' ').next())).collect();
    assert_eq!(clients, [Some("alice"), Some("alice"), Some("bob"), None, None], "{log}");

    let metrics = page(&proxy, "/metrics", ALICE);
    for line in [
        "codex_shield_client_requests_total{client=\"alice\",status_class=\"2xx\"} 2",
        "codex_shield_client_requests_total{client=\"bob\",status_class=\"2xx\"} 1",
        "codex_shield_client_requests_total{client=\"-\",status_class=\"2xx\"} 1",
        "codex_shield_client_requests_total{client=\"-\",status_class=\"4xx\"} 1",
        "codex_shield_client_in_flight_requests{client=\"ci-bot\"} 0",
        "codex_shield_client_limited_total{client=\"bob\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let status = page(&proxy, "/status", BOB);
    for needle in [
        "<tr id=\"client-alice\">",
        "id=\"client-alice-requests\">2</td>",
        "id=\"client-bob-requests\">1</td>",
        "<td class=\"n\" data-label=\"in flight\">0 of 3</td>",
        "id=\"client-ci-bot-requests\">0</td>",
    ] {
        assert!(status.contains(needle), "missing {needle:?} in /status");
    }
    let all = format!("{}{metrics}{status}", proxy.log());
    for key in [ALICE, BOB, CAROL, PROXY_KEY, &BOB_SHA[7..]] {
        assert!(!all.contains(key), "{key} shown");
    }
    let refused = request("GET", &proxy.url("/status"), &[("api-key", "sk-wrong")], b"");
    assert_eq!(refused.status, 401, "a wrong key reads no page");
}

/// `max=2`: a third request of that key while two are in flight gets 429 with `retry-after`,
/// without reaching the upstream; another key is not held back; a finished request frees
/// its place.
#[test]
fn a_key_past_its_max_gets_429() {
    let ok = fixtures::responses(ANSWER, false);
    let gather = Gather::new(3);
    let held = gather.clone();
    let mock = Mock::generated(move |i, _| match i {
        0..=2 => Step::stream(&ok).before(Piece::Gather(held.clone())),
        _ => Step::stream(&ok),
    });
    let path = keys_file(&format!("alice: {ALICE} max=2\nbob: {BOB}\n"));
    let proxy = Arc::new(Proxy::start(&mock.v1(), &[("CLIENT_KEYS_FILE", path.to_str().unwrap())]));
    let background = |key: &'static str| {
        let proxy = Arc::clone(&proxy);
        thread::spawn(move || ask(&proxy, key).status)
    };
    let first = [background(ALICE), background(ALICE)];
    let start = Instant::now();
    while mock.attempts() < 2 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(5));
    }
    let third = ask(&proxy, ALICE);
    assert_eq!((third.status, third.error_code().as_str()), (429, "rate_limit_exceeded"), "{}", third.text());
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(mock.attempts(), 2, "the refused request never reached the upstream");
    let bob = background(BOB);
    let statuses: Vec<u16> = first.into_iter().chain([bob]).map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200]);
    assert!(!*gather.timed_out.lock().unwrap(), "bob's request was not held back by alice's limit");
    assert_eq!(ask(&proxy, ALICE).status, 200, "a finished request frees its place");
    let metrics = page(&proxy, "/metrics", ALICE);
    for line in [
        "codex_shield_client_limited_total{client=\"alice\"} 1",
        "codex_shield_client_requests_total{client=\"alice\",status_class=\"4xx\"} 1",
        "codex_shield_client_requests_total{client=\"alice\",status_class=\"2xx\"} 3",
        "codex_shield_client_in_flight_requests{client=\"alice\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    proxy.wait_for_log("client=alice status=429");
}

/// The file rewritten again and again while four clients send requests with a key that
/// stays: none of them fails. A key added works, a key removed is refused from the reload
/// on (and stays refused), a malformed version keeps the previous keys and says which line.
#[test]
fn the_file_is_reloaded_under_load_without_a_failed_request() {
    let mock = answers();
    let path = keys_file(&format!("alice: {ALICE}\nbob: {BOB}\n"));
    // The polls below send keys not (or no longer) in the file: no brake for them.
    let env = [("CLIENT_KEYS_FILE", path.to_str().unwrap()), ("AUTH_FAILURE_LIMIT", "0")];
    let proxy = Arc::new(Proxy::start(&mock.v1(), &env));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (proxy, stop, failures) = (Arc::clone(&proxy), Arc::clone(&stop), Arc::clone(&failures));
            thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::SeqCst) && sent < 2000 {
                    let got = ask(&proxy, BOB);
                    if got.status != 200 {
                        failures.lock().unwrap().push((got.status, got.text()));
                    }
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut refused_after = Vec::new();
    for round in 0..3 {
        // carol added (in place, as an editor that rewrites the file does), then removed (mv)
        std::fs::write(&path, format!("alice: {ALICE}\nbob: {BOB}\ncarol: {CAROL}\n")).unwrap();
        until_status(&proxy, CAROL, 200);
        replace(&path, &format!("bob: {BOB}\nalice: {ALICE}\n"));
        refused_after.push(until_status(&proxy, CAROL, 401));
        for _ in 0..5 {
            assert_eq!(ask(&proxy, CAROL).status, 401, "round {round}: a removed key stays refused");
        }
    }
    // A malformed version: the previous keys stay, one line names the line.
    replace(&path, &format!("bob: {BOB}\nalice {ALICE}\n"));
    proxy.wait_for_log("CLIENT_KEYS_FILE not reloaded, the previous keys stay");
    assert_eq!(ask(&proxy, ALICE).status, 200, "alice kept");
    // alice removed: refused from the reload on, bob untouched.
    replace(&path, &format!("bob: {BOB}\n"));
    until_status(&proxy, ALICE, 401);
    stop.store(true, Ordering::SeqCst);
    let sent: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during reloads: {:?}",
        failures.len(),
        &failures[..1]
    );
    assert!(sent > 20, "the load ran ({sent} requests)");
    let log = proxy.log();
    assert!(log.contains("client-keys: line 2: expected `name: key`"), "{log}");
    assert_eq!(log.matches("not reloaded").count(), 1, "said once:\n{log}");
    assert!(!log.contains(ALICE) && !log.contains(CAROL), "no key in the log");
    eprintln!("{sent} requests; a removed key was refused after {refused_after:?} (looks every 250 ms)");
}

/// A malformed file at start: the proxy does not start, and says which line and why.
#[test]
fn a_malformed_file_stops_the_start_naming_its_line() {
    let path = keys_file(&format!("alice: {ALICE}\n\n# ok so far\nbob: sha256:abc\n"));
    let out =
        command(&[("AZURE_ENDPOINT", "http://127.0.0.1:9/v1"), ("CLIENT_KEYS_FILE", path.to_str().unwrap())])
            .output()
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CLIENT_KEYS_FILE") && stderr.contains("line 4: `sha256:` wants 64 hex digits"),
        "{stderr}"
    );
    assert!(!stderr.contains(ALICE), "{stderr}");
}

/// Wrong keys against the file alone feed the brake: past `AUTH_FAILURE_LIMIT` the address
/// gets 429s, whatever key it sends.
#[test]
fn wrong_keys_against_the_file_feed_the_brake() {
    let mock = answers();
    let path = keys_file(&format!("alice: {ALICE}\n"));
    let env = [("CLIENT_KEYS_FILE", path.to_str().unwrap()), ("AUTH_FAILURE_LIMIT", "3")];
    let proxy = Proxy::start(&mock.v1(), &env);
    let got: Vec<u16> = ["a", "b", "c", ALICE].iter().map(|k| ask(&proxy, k).status).collect();
    assert_eq!(got, [401, 401, 401, 429]);
    assert_eq!(mock.attempts(), 0);
}
