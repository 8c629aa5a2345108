//! Shared test support: the scripted mock upstream, realistic fixtures, a handle on a real
//! `codex-shield` process, and a plain HTTP client.

#![allow(dead_code)] // each test module uses a different part of the support code

pub mod cache;
pub mod fixtures;
pub mod mock;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The upstream key the tests configure; it must never appear in any output.
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-0123456789";
/// The placeholder key a client like Codex sends; it must never travel upstream.
pub const CLIENT_KEY: &str = "codex-placeholder-key";

/// Settings every test proxy starts with (fast retries); a test adds or overrides.
const BASE_ENV: &[(&str, &str)] = &[
    ("AZURE_API_KEY", UPSTREAM_KEY),
    ("PORT", "0"),
    ("RETRY_ATTEMPTS", "5"),
    ("RETRY_WAIT_SECONDS", "0.01"),
    ("RETRY_MAX_WAIT_SECONDS", "0.05"),
    ("RETRY_DEADLINE_SECONDS", "20"),
    ("IDLE_TIMEOUT_SECONDS", "2"),
    ("LOG_LEVEL", "debug"),
];

/// A running proxy process, killed when dropped.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// A directory without a `.env`, unique to this call.
pub fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "codex-shield-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The proxy binary with a clean environment: only `env` (after the base settings).
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex-shield"));
    cmd.env_clear().current_dir(scratch_dir());
    for (k, v) in BASE_ENV.iter().chain(env) {
        cmd.env(k, v);
    }
    cmd
}

impl Proxy {
    /// Start a proxy in front of `endpoint`, with extra settings, and wait for its banner.
    pub fn start(endpoint: &str, env: &[(&str, &str)]) -> Proxy {
        let mut cmd = command(&[("AZURE_ENDPOINT", endpoint)]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proxy::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Proxy {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("listening on http://")
                    .nth(1)
                    .and_then(|addr| addr.rsplit(':').next())
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("proxy did not start: {:?}", stderr.lock().unwrap());
            }
        };
        Proxy { child, port, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Wait until the log has a line containing `needle` (the request log line is written
    /// just after the reply, so tests that read it wait for it).
    pub fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..500 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("log never contained {needle:?}:\n{}", self.log());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the client received.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// `{"error": {...}}` with message, type and code: the error's code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string() && e["type"].is_string(), "not OpenAI-shaped: {}", self.text());
        e["code"].as_str().unwrap_or("").to_string()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Send a request with `headers` and `body` (empty for none).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Got {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut res = agent().run(req.body(body.to_vec()).unwrap()).expect("request failed");
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = res.status().as_u16();
    let body = res.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
    Got { status, headers, body }
}

/// POST JSON the way Codex does: a placeholder Bearer key.
pub fn post(url: &str, body: &str) -> Got {
    request(
        "POST",
        url,
        &[("content-type", "application/json"), ("authorization", &format!("Bearer {CLIENT_KEY}"))],
        body.as_bytes(),
    )
}

pub const RESPONSES_STREAM: &str =
    r#"{"model":"gpt-5-codex","input":[{"role":"user","content":"hi"}],"stream":true}"#;
pub const RESPONSES_PLAIN: &str = r#"{"model":"gpt-5-codex","input":"hi"}"#;
pub const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
pub const CHAT_PLAIN: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":false}"#;

/// `input` cut at `cuts` (taken modulo its length).
pub fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        pieces.push(&input[from..cut]);
        from = cut;
    }
    pieces
}
