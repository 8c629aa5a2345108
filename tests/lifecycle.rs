//! The process as an operator meets it: configuration errors, `--check`, the banner, a taken
//! port, `.env` files, concurrency, graceful shutdown, and keys that never show.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::support::fixtures::{self, ANSWER};
use crate::support::mock::{Gather, Mock, Piece, Step};
use crate::support::*;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "AZURE_ENDPOINT"),
        (&[("AZURE_ENDPOINT", "http://h/v1"), ("PORT", "eighty")], "PORT"),
        (&[("AZURE_ENDPOINT", "http://h/v1"), ("RETRY_WAIT_SECONDS", "soon")], "RETRY_WAIT_SECONDS"),
        (&[("AZURE_ENDPOINT", "http://h/v1"), ("UPSTREAM_AUTH", "basic")], "UPSTREAM_AUTH"),
    ];
    for (env, var) in cases {
        let (code, _, err) = run(&mut command(env));
        assert_eq!(code, 2, "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(var), "{err} should name {var}");
    }
    let (code, _, err) = run(command(&[("AZURE_ENDPOINT", "http://h/v1")]).arg("--bogus"));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_help_and_version() {
    let env = [("AZURE_ENDPOINT", "https://x.openai.azure.com/openai/v1?sig=s3cr3t&api-version=1")];
    let (code, out, _) = run(command(&env).arg("--check"));
    assert_eq!(code, 0);
    assert!(out.contains("https://x.openai.azure.com/openai/v1?sig=***&api-version=1"), "{out}");
    assert!(out.contains("api-key"), "{out}");
    assert!(!out.contains(UPSTREAM_KEY) && !out.contains("s3cr3t"), "{out}");
    let (code, out, _) = run(command(&[]).arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("RETRY_DEADLINE_SECONDS"));
    let (code, out, _) = run(command(&[]).arg("--version"));
    assert_eq!((code, out.trim()), (0, format!("codex-shield {}", env!("CARGO_PKG_VERSION")).as_str()));
}

#[test]
fn env_file_is_read_and_the_environment_wins() {
    let dir = scratch_dir();
    let file = dir.join("shield.env");
    std::fs::write(&file, "AZURE_ENDPOINT=http://from-file:1/v1\nFORCED_MODEL=file-model\nPORT=1234\n")
        .unwrap();
    let (code, out, err) = run(command(&[("PORT", "4321")]).arg("--env-file").arg(&file).arg("--check"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("http://from-file:1/v1") && out.contains("file-model"), "{out}");
    assert!(out.contains("4321") && !out.contains("1234"), "{out}");
    // ./.env in the working directory is read by default
    std::fs::write(dir.join(".env"), "AZURE_ENDPOINT=http://dot-env:2/v1\n").unwrap();
    let (code, out, _) = run(command(&[]).current_dir(&dir).arg("--check"));
    assert_eq!(code, 0);
    assert!(out.contains("http://dot-env:2/v1"), "{out}");
    let (code, _, err) = run(command(&[]).arg("--env-file").arg(dir.join("missing.env")));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = run(&mut command(&[("AZURE_ENDPOINT", "http://127.0.0.1:9/v1"), ("PORT", &port)]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
}

#[test]
fn banner_names_the_target_without_secrets() {
    let proxy = Proxy::start(
        "http://127.0.0.1:9/openai/responses?api-version=2025-04-01&token=hunter2",
        &[("FORCED_MODEL", "gpt-5")],
    );
    let log = proxy.wait_for_log("retries:");
    assert!(log.contains("http://127.0.0.1:9/openai/responses?api-version=2025-04-01&token=***"), "{log}");
    assert!(log.contains("gpt-5"), "{log}");
    assert!(!log.contains("hunter2") && !log.contains(UPSTREAM_KEY), "{log}");
}

#[test]
fn concurrent_slow_requests_are_not_serialised() {
    const N: usize = 12;
    let gather = Gather::new(N);
    let ok = fixtures::responses(ANSWER, false);
    let script = (0..N).map(|_| Step::stream(&ok).before(Piece::Gather(gather.clone()))).collect();
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let url = proxy.url("/v1/responses");
    let statuses: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = (0..N).map(|_| s.spawn(|| post(&url, RESPONSES_STREAM).status)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; N], "{}", proxy.log());
    assert!(!*gather.timed_out.lock().unwrap(), "the upstream never saw {N} requests at once");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let ok = fixtures::responses(ANSWER, false);
    let slow = Step::stream(&ok).before(Piece::Pause(Duration::from_millis(700)));
    let mock = Mock::start(vec![slow]);
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    let url = proxy.url("/v1/responses");
    let pid = proxy.child.id().to_string();
    let client = thread::spawn(move || post(&url, RESPONSES_STREAM));
    while mock.attempts() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    let (code, _, _) = run(Command::new("kill").args(["-TERM", &pid]));
    assert_eq!(code, 0);
    let got = client.join().unwrap();
    assert_eq!((got.status, got.body == ok), (200, true));
    let status = proxy.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err(), "still accepting");
}

/// One `GET /healthz` on an open keep-alive connection: (status, body).
fn healthz_on(socket: &mut std::net::TcpStream) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let (mut status, mut length, mut line) = (0, 0, String::new());
    while reader.read_line(&mut line).unwrap() > 2 {
        let lower = line.to_ascii_lowercase();
        if let Some(code) = lower.strip_prefix("http/1.1 ") {
            status = code[..3].parse().unwrap();
        }
        if let Some(n) = lower.strip_prefix("content-length:") {
            length = n.trim().parse().unwrap();
        }
        line.clear();
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// On SIGTERM `/healthz` turns 503 "draining" (a load balancer stops routing here) while the
/// answer in flight still finishes; `--healthcheck` reports both states by its exit code.
#[test]
fn sigterm_turns_healthz_to_draining() {
    let ok = fixtures::responses(ANSWER, false);
    let slow = Step::stream(&ok).before(Piece::Pause(Duration::from_millis(1500)));
    let mock = Mock::start(vec![slow]);
    let mut proxy = Proxy::start(&mock.v1(), &[]);
    let health_url = proxy.url("/healthz");
    let probe = |url: &str| run(command(&[]).args(["--healthcheck", url])).0;
    assert_eq!(probe(&health_url), 0);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let (status, body) = healthz_on(&mut socket);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");
    let url = proxy.url("/v1/responses");
    let client = thread::spawn(move || post(&url, RESPONSES_STREAM));
    while mock.attempts() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(run(Command::new("kill").args(["-TERM", &proxy.child.id().to_string()])).0, 0);
    // the main thread notices the signal within 50 ms: poll until it has
    let mut poll = || {
        thread::sleep(Duration::from_millis(10));
        healthz_on(&mut socket)
    };
    let draining = (0..300).map(|_| poll()).find(|(status, _)| *status != 200);
    let (status, body) = draining.expect("/healthz never stopped answering 200 after SIGTERM");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""status":"draining""#), "{body}");
    let got = client.join().unwrap();
    assert_eq!((got.status, got.body == ok), (200, true), "{}", proxy.log());
    assert_eq!(proxy.child.wait().unwrap().code(), Some(0), "{}", proxy.log());
    assert_eq!(probe(&health_url), 1, "nothing listens any more");
}

/// The deepest JSON serde accepts (its recursion limit is 128) is parsed, rewritten and
/// assembled on a connection thread without overflowing its stack (smaller than Rust's
/// default, see vendor/tiny_http/PATCHES.md), even in this unoptimised build; one level more
/// is a 400, not a crash.
#[test]
fn the_deepest_json_fits_the_connection_stack() {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let responses = fixtures::responses(ANSWER, false);
    let chat = fixtures::chat(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&responses), Step::stream(&responses), Step::stream(&chat)]);
    let proxy = Proxy::start(&mock.v1(), &[]);
    let cases = [
        ("/v1/responses", r#""stream":true,"input":"hi""#),
        ("/v1/responses", r#""stream":false,"input":"hi""#),
        ("/v1/chat/completions", r#""stream":false,"messages":[]"#),
    ];
    for (path, fields) in cases {
        for (depth, status) in [(126, 200), (127, 400)] {
            let body = format!(r#"{{"model":"m",{fields},"x":{}}}"#, nested(depth));
            let got = post(&proxy.url(path), &body);
            assert_eq!(got.status, status, "{path} depth {depth}: {}\n{}", got.text(), proxy.log());
        }
    }
}

/// A full fault run at debug level: neither key shows in any log line or answer.
#[test]
fn keys_never_show() {
    let ok = fixtures::responses(ANSWER, false);
    let unauthorized = fixtures::error_body("401", "Access denied due to invalid subscription key.");
    let script = vec![
        Step::json(429, &fixtures::error_body("429", "slow down")),
        Step::cut(&ok, 200),
        Step::stream(&fixtures::responses_error("server_error", "x", true)),
        Step::stream(&ok),
        Step::json(401, &unauthorized),
        Step::json(503, "{}"),
        Step::json(503, "{}"),
        Step::json(503, "{}"),
        Step::json(503, "{}"),
        Step::json(503, "{}"),
    ];
    let mock = Mock::start(script);
    let proxy = Proxy::start(&mock.v1(), &[("PROXY_API_KEY", "inbound-SECRET-key")]);
    let headers = [("authorization", "Bearer inbound-SECRET-key")];
    let mut bodies = String::new();
    for path in ["/v1/responses", "/v1/responses", "/v1/models", "/v1/responses?x=1"] {
        let got = request("POST", &proxy.url(path), &headers, RESPONSES_STREAM.as_bytes());
        bodies.push_str(&got.text());
        bodies.push_str(&format!("{:?}", got.headers));
    }
    let bad =
        request("POST", &proxy.url("/v1/responses"), &[("authorization", "Bearer wrong-SECRET")], b"{}");
    bodies.push_str(&bad.text());
    let log = proxy.wait_for_log("status=401");
    for secret in [UPSTREAM_KEY, "inbound-SECRET-key", "wrong-SECRET"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!bodies.contains(secret), "{secret} in an answer");
    }
    assert!(log.contains("retries=["), "retry reasons are logged:\n{log}");
}

/// A client that hangs up during the retries is not retried for any longer.
#[test]
fn retries_stop_when_the_client_hangs_up() {
    use std::io::Write;
    let mock = Mock::start(vec![Step::json(503, "{}"); 40]);
    let proxy = Proxy::start(
        &mock.v1(),
        &[("RETRY_ATTEMPTS", "40"), ("RETRY_WAIT_SECONDS", "0.2"), ("RETRY_MAX_WAIT_SECONDS", "0.2")],
    );
    let mut client = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let body = RESPONSES_STREAM;
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(body.as_bytes()).unwrap();
    while mock.attempts() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    drop(client);
    let log = proxy.wait_for_log("status=499");
    let attempts = mock.attempts();
    assert!(attempts <= 3, "{attempts} attempts for a client that was gone:\n{log}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(mock.attempts(), attempts, "retries went on after the client left");
}

/// Start a proxy in front of an upstream that holds every answer for 10 s; send one request
/// and wait until the upstream has it.
fn stuck_request(env: &[(&str, &str)]) -> (Proxy, Mock, thread::JoinHandle<Got>) {
    let ok = fixtures::responses(ANSWER, false);
    let mock = Mock::start(vec![Step::stream(&ok).before(Piece::Pause(Duration::from_secs(10)))]);
    let mut all = vec![("IDLE_TIMEOUT_SECONDS", "30")];
    all.extend_from_slice(env);
    let proxy = Proxy::start(&mock.v1(), &all);
    let url = proxy.url("/v1/responses");
    let client = thread::spawn(move || post(&url, RESPONSES_STREAM));
    while mock.attempts() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    (proxy, mock, client)
}

fn signal(proxy: &Proxy, name: &str) {
    let (code, _, _) = run(Command::new("kill").args([&format!("-{name}"), &proxy.child.id().to_string()]));
    assert_eq!(code, 0);
}

/// Past the grace period, a request still in flight gets a 503 before the process exits;
/// a second signal ends the wait at once; SIGHUP is a shutdown signal like SIGTERM.
#[test]
fn shutdown_answers_every_request_still_open() {
    // (signals sent, SHUTDOWN_GRACE_SECONDS)
    let cases: &[(&[&str], &str)] = &[(&["TERM"], "0.3"), (&["TERM", "INT"], "60"), (&["HUP"], "0.3")];
    for (signals, grace) in cases {
        let (mut proxy, _mock, client) = stuck_request(&[("SHUTDOWN_GRACE_SECONDS", grace)]);
        let sent = std::time::Instant::now();
        for name in *signals {
            signal(&proxy, name);
            thread::sleep(Duration::from_millis(50));
        }
        let got = client.join().unwrap();
        assert_eq!((got.status, got.error_code().as_str()), (503, "proxy_shutting_down"), "{signals:?}");
        assert!(sent.elapsed() < Duration::from_secs(5), "{signals:?}: answered after {:?}", sent.elapsed());
        let status = proxy.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{signals:?}: {}", proxy.log());
        let log = proxy.log();
        assert!(log.contains("answering 1 open request(s) with 503"), "{signals:?}: {log}");
    }
}

/// With the keepalive head already sent, the shutdown answer is an in-stream failure.
#[test]
fn shutdown_after_a_keepalive_head_is_an_in_stream_failure() {
    let (mut proxy, _mock, client) =
        stuck_request(&[("SHUTDOWN_GRACE_SECONDS", "0.2"), ("KEEPALIVE_SECONDS", "0.2")]);
    thread::sleep(Duration::from_millis(600));
    signal(&proxy, "TERM");
    let got = client.join().unwrap();
    assert_eq!(got.status, 200);
    let text = got.text();
    assert!(text.starts_with(": keepalive\n\n"), "{text}");
    assert!(text.contains("\"type\":\"response.failed\"") && text.contains("proxy_shutting_down"), "{text}");
    assert_eq!(proxy.child.wait().unwrap().code(), Some(0));
}

/// A closed stderr (a pipe whose reader is gone) never makes the proxy panic.
#[test]
fn a_closed_stderr_is_not_fatal() {
    let mut cmd = command(&[("AZURE_ENDPOINT", "http://127.0.0.1:9/v1")]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child =
        cmd.env("PORT", port.to_string()).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    drop(child.stderr.take()); // the reading end is gone before the banner is written
    let mut up = false;
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            up = answer.starts_with("HTTP/1.1 200");
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(up, "the proxy did not serve /healthz");
    assert_eq!(status.code(), Some(0), "exit status with a closed stderr");
}
