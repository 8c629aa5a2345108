//! The soak: thousands of requests from many clients through the release proxy, in front of
//! mock upstreams that inject faults from a fixed seed (`make soak`). Two phases, each with
//! its own proxy:
//!
//! `single`: one upstream. Every request gets a fault plan before the run starts: a few
//! retryable failures (429 with `retry-after-ms`, 500/503, a cut mid-stream, a stall, an
//! in-stream `error` event, `response.failed`, a hang-up before the status line), then its
//! clean answer, with its own text. A plan with as many failures as the retry budget must end
//! in an OpenAI-shaped error; every other request must get its clean answer byte for byte,
//! after exactly as many upstream attempts as its plan says.
//!
//! `multi`: three upstreams (`AZURE_ENDPOINT_2`, `_3`, each with its own key), each failing a
//! share of its attempts on its own seeded dice (the same faults, and 429s that ask for a
//! whole second), and a few doomed requests that every upstream fails. The mocks record every
//! attempt by request id, so a request's attempts are counted across the three: an error is
//! allowed only for a request whose every attempt failed and that made all `ATTEMPTS` of them;
//! every other request must get its clean answer byte for byte, from the attempt that was
//! served clean. No upstream may see an attempt well inside a rest it asked for
//! (`retry-after: 1`), nor another upstream's key. Attempts and answers per upstream are
//! reported.
//!
//! In each phase the proxy's threads and RSS at the end are compared with their values after
//! a warm-up. Any violation exits non-zero.
//!
//! Knobs (environment): SOAK_PHASES (`single,multi`), SOAK_REQUESTS (3000, single phase),
//! SOAK_MULTI_REQUESTS (2000), SOAK_ROUTING (`failover`, multi phase), SOAK_CLIENTS (32),
//! SOAK_SEED, SOAK_CAP_SECONDS (240, the whole soak), SHIELD_BIN (target/release/codex-shield).

#[allow(dead_code)] // the soak uses part of the test fixtures
#[path = "../tests/support/fixtures.rs"]
mod fixtures;
#[allow(dead_code)] // the soak uses part of the test mock
#[path = "../tests/support/mock.rs"]
mod mock;
#[path = "../tests/soak/multi.rs"]
mod multi;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mock::{End, Mock, Seen, Step};

/// Upstream attempts the proxy is allowed per request (RETRY_ATTEMPTS).
const ATTEMPTS: usize = 8;
/// How long a stalled upstream stays silent; the proxy's idle timeout is shorter.
const STALL: Duration = Duration::from_millis(1500);
const IDLE_TIMEOUT: &str = "0.5";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Fault {
    Status429,
    Status500,
    Status503,
    Cut,
    Stall,
    ErrorEvent,
    Failed,
    Hangup,
}

const FAULTS: [Fault; 8] = [
    Fault::Status429,
    Fault::Status500,
    Fault::Status503,
    Fault::Cut,
    Fault::Stall,
    Fault::ErrorEvent,
    Fault::Failed,
    Fault::Hangup,
];

/// splitmix64: small, seedable, good enough to draw fault plans.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one request will meet upstream, and what its clean answer is.
struct Plan {
    chat: bool,
    /// One step per failed attempt, in order; the attempt after them gets `clean`.
    faults: Vec<(Fault, Step)>,
    clean: Vec<u8>,
    /// How the clean answer is delivered (0: one chunk, else this many bytes per chunk).
    split: usize,
}

impl Plan {
    fn must_fail(&self) -> bool {
        self.faults.len() >= ATTEMPTS
    }
}

const WORDS: &[&str] = &[
    "the",
    "patch",
    "fixes",
    "a",
    "race",
    "in",
    "src/lib.rs;",
    "error",
    "data:",
    "[DONE]",
    "response.failed",
    "retry",
    "é",
    "日本",
    "\"quoted\"",
    "line\nbreak",
    "tab\there",
    "emoji 🚀",
    "ok.",
    "cargo",
    "test",
];

fn answer_text(i: usize, rng: &mut Rng) -> String {
    let n = 3 + rng.below(60) as usize;
    let mut text = format!("Answer {i}:");
    for _ in 0..n {
        text.push(' ');
        text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    text
}

fn fault_step(fault: Fault, chat: bool, clean: &[u8], rng: &mut Rng) -> Step {
    let body = |code: u16| fixtures::error_body(&code.to_string(), "transient failure, please retry");
    let keep = rng.below(clean.len() as u64) as usize;
    match fault {
        Fault::Status429 => {
            Step::json(429, &body(429)).header("retry-after-ms", &(5 + rng.below(30)).to_string())
        }
        Fault::Status500 => Step::json(500, &body(500)),
        Fault::Status503 => Step::json(503, &body(503)),
        Fault::Cut => Step::cut(clean, keep),
        Fault::Stall => Step { end: End::Stall(STALL), ..Step::stream(&clean[..keep]) },
        Fault::ErrorEvent if chat => {
            Step::stream(&fixtures::chat_error("429", "Rate limit. Try again in 10ms."))
        }
        Fault::ErrorEvent => Step::stream(&fixtures::responses_error(
            "rate_limit_exceeded",
            "Rate limit reached. Please try again in 10ms.",
            rng.below(2) == 0,
        )),
        Fault::Failed if chat => {
            Step::stream(&fixtures::chat_error("server_error", "The server had an error."))
        }
        Fault::Failed => {
            Step::stream(&fixtures::responses_failed("server_error", "The server had an error."))
        }
        Fault::Hangup => Step::hangup(),
    }
}

fn plan(i: usize, seed: u64) -> Plan {
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let chat = rng.below(2) == 0;
    let text = answer_text(i, &mut rng);
    let crlf = rng.below(8) == 0;
    let clean = if chat { fixtures::chat(&text, crlf) } else { fixtures::responses(&text, crlf) };
    let roll = rng.below(100);
    let count = match roll {
        0..=44 => 0,
        45..=95 => 1 + rng.below(4) as usize,
        96 => 5 + rng.below(3) as usize, // up to ATTEMPTS - 1: still within the budget
        _ => ATTEMPTS,                   // over the budget: must end in an error
    };
    let mut stalls = 0;
    let faults = (0..count)
        .map(|_| {
            let mut fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
            if fault == Fault::Stall {
                stalls += 1;
                if stalls > 2 {
                    fault = Fault::Status503; // keep each request's time bounded
                }
            }
            (fault, fault_step(fault, chat, &clean, &mut rng))
        })
        .collect();
    let split = [0, 0, 7, 100, 1000][rng.below(5) as usize];
    Plan { chat, faults, clean, split }
}

/// The request id a soak request carries in its `user` field.
fn soak_id(seen: &Seen) -> Option<usize> {
    seen.json()["user"].as_str().and_then(|u| u.strip_prefix("soak-")?.parse::<usize>().ok())
}

/// A request's clean answer, delivered as its plan says.
fn clean_step(plan: &Plan) -> Step {
    if plan.split == 0 {
        Step::stream(&plan.clean)
    } else {
        Step::stream_split(&plan.clean, plan.split)
    }
}

/// What the single phase's mock did, shared with its connection threads.
#[derive(Default)]
struct Upstream {
    attempts: HashMap<usize, usize>,
    injected: BTreeMap<Fault, usize>,
    unknown: usize,
}

fn start_mock(plans: Arc<Vec<Plan>>, stats: Arc<Mutex<Upstream>>) -> Mock {
    Mock::generated(move |_, seen: &Seen| {
        let id = soak_id(seen);
        let mut stats = stats.lock().unwrap();
        let Some(plan) = id.and_then(|id| plans.get(id)) else {
            stats.unknown += 1;
            return Step::json(599, &fixtures::error_body("mock", "request without a soak id"));
        };
        let attempt = stats.attempts.entry(id.unwrap()).or_insert(0);
        *attempt += 1;
        match plan.faults.get(*attempt - 1) {
            Some((fault, step)) => {
                *stats.injected.entry(*fault).or_insert(0) += 1;
                step.clone()
            }
            None => clean_step(plan),
        }
    })
}

/// Every proxy started, so that `fail` can stop them before the soak exits.
static LIVE: Mutex<Vec<Arc<Mutex<Child>>>> = Mutex::new(Vec::new());

/// The release proxy, killed when dropped.
struct Proxy {
    child: Arc<Mutex<Child>>,
    port: u16,
    log_lines: Arc<AtomicUsize>,
}

impl Proxy {
    /// Start the proxy in front of `endpoint`, with the soak's retry settings and `extra`
    /// variables.
    fn start(bin: &str, endpoint: &str, extra: &[(&str, String)]) -> Proxy {
        let dir = std::env::temp_dir().join(format!("codex-shield-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = [
            ("AZURE_ENDPOINT", endpoint),
            ("AZURE_API_KEY", "sk-soak"),
            ("PORT", "0"),
            ("RETRY_ATTEMPTS", "8"),
            ("RETRY_WAIT_SECONDS", "0.005"),
            ("RETRY_MAX_WAIT_SECONDS", "0.05"),
            ("RETRY_DEADLINE_SECONDS", "60"),
            ("IDLE_TIMEOUT_SECONDS", IDLE_TIMEOUT),
            ("LOG_LEVEL", "warn"),
        ];
        let mut child = Command::new(bin)
            .env_clear()
            .envs(env)
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                fail(&format!("cannot start {bin}: {e} (build it with `cargo build --release`)"))
            });
        let (tx, rx) = mpsc::channel();
        let log_lines = Arc::new(AtomicUsize::new(0));
        let lines = Arc::clone(&log_lines);
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(port) =
                    line.split("listening on http://").nth(1).and_then(|a| a.rsplit(':').next())
                {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                } else if !line.starts_with("  ") && lines.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("proxy: {line}");
                }
            }
        });
        let child = Arc::new(Mutex::new(child));
        LIVE.lock().unwrap().push(Arc::clone(&child));
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| fail("the proxy did not print its banner"));
        Proxy { child, port, log_lines }
    }

    fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// (threads, RSS in KiB) from /proc.
    fn usage(&self) -> (usize, usize) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("Threads:"), field("VmRSS:"))
    }

    /// Usage once the thread count has not moved for 6 s (idle pool threads end after 5 s).
    fn settled_usage(&self) -> (usize, usize) {
        let start = Instant::now();
        let (mut last, mut since) = (self.usage().0, Instant::now());
        while start.elapsed() < Duration::from_secs(30) && since.elapsed() < Duration::from_secs(6) {
            thread::sleep(Duration::from_millis(200));
            let now = self.usage().0;
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        self.usage()
    }

    /// `None` while the proxy runs, else how it ended.
    fn exit(&self) -> Option<String> {
        let status = self.child.lock().unwrap().try_wait().ok().flatten()?;
        use std::os::unix::process::ExitStatusExt;
        Some(match status.signal() {
            Some(signal) => format!("killed by signal {signal}"),
            None => format!("exited with {status}"),
        })
    }

    /// The end-of-phase checks every phase shares: the proxy is alive, and its threads and
    /// RSS did not grow since `warm`.
    /// The warm-up requests (0..WARMUP), the proxy's usage once they settle, then the rest of
    /// `plans`, timed, and the usage once they settle.
    fn load(&self, plans: &Arc<Vec<Plan>>, clients: usize) -> Load {
        let warm = fire(self.port, plans, 0..WARMUP, clients);
        let warm_usage = self.settled_usage();
        let started = Instant::now();
        let outcomes = fire(self.port, plans, WARMUP..plans.len(), clients);
        let duration = started.elapsed();
        Load { warm, outcomes, duration, warm_usage, end_usage: self.settled_usage() }
    }

    /// Report a load's duration and the proxy's health after it: alive, and neither threads
    /// nor RSS grown since the warm-up.
    fn check_health(&self, load: &Load, requests: usize, violations: &mut Vec<String>) {
        println!(
            "  duration        {:.1} s for {requests} requests ({:.0} req/s)",
            load.duration.as_secs_f64(),
            requests as f64 / load.duration.as_secs_f64()
        );
        if let Some(how) = self.exit() {
            violations.insert(0, format!("the proxy died during the run: {how}"));
        }
        let ((warm_threads, warm_rss), (end_threads, end_rss)) = (load.warm_usage, load.end_usage);
        if end_threads > warm_threads + 2 {
            violations.push(format!("threads grew: {warm_threads} after warm-up, {end_threads} at the end"));
        }
        if end_rss > warm_rss + warm_rss / 2 + 8 * 1024 {
            violations.push(format!("RSS grew: {warm_rss} KiB after warm-up, {end_rss} KiB at the end"));
        }
        println!("  threads         {warm_threads} after warm-up, {end_threads} at the end");
        println!("  RSS             {warm_rss} KiB after warm-up, {end_rss} KiB at the end");
        println!("  proxy log lines {} (warn and above)", self.log_lines.load(Ordering::Relaxed));
    }
}

/// What a phase's load came to.
struct Load {
    warm: Vec<(usize, Got)>,
    outcomes: Vec<(usize, Got)>,
    duration: Duration,
    /// (threads, RSS in KiB) after the warm-up and at the end.
    warm_usage: (usize, usize),
    end_usage: (usize, usize),
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Stop every proxy the soak started and exit non-zero.
fn fail(message: &str) -> ! {
    eprintln!("soak: FAILED: {message}");
    for child in LIVE.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }
    std::process::exit(1)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into()
}

/// What one request got, from the client's side; each phase judges it.
enum Got {
    /// Status 200 and its own clean answer, byte for byte (a chat answer without the usage
    /// chunk the proxy asked for on its behalf).
    Exact,
    /// An OpenAI-shaped error: status and code.
    Error(u16, String),
    /// Anything else, described.
    Other(String),
}

fn body_for(i: usize, chat: bool) -> String {
    let content = format!("request {i}: please answer");
    if chat {
        serde_json::json!({"model": "gpt-4o", "user": format!("soak-{i}"), "stream": true,
            "messages": [{"role": "user", "content": content}]})
        .to_string()
    } else {
        serde_json::json!({"model": "gpt-5-codex", "user": format!("soak-{i}"), "stream": true,
            "input": [{"role": "user", "content": content}]})
        .to_string()
    }
}

fn run_one(agent: &ureq::Agent, port: u16, i: usize, plan: &Plan) -> Got {
    let path = if plan.chat { "/v1/chat/completions" } else { "/v1/responses" };
    let result = agent
        .post(&format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer codex-placeholder")
        .send(body_for(i, plan.chat).as_bytes());
    let mut res = match result {
        Ok(res) => res,
        Err(e) => return Got::Other(format!("client error: {e}")),
    };
    let status = res.status().as_u16();
    let body = match res.body_mut().with_config().limit(1 << 30).read_to_vec() {
        Ok(b) => b,
        Err(e) => return Got::Other(format!("{status}, body unreadable: {e}")),
    };
    // A chat client that did not ask for usage gets the stream without the usage chunk the
    // proxy asked for on its behalf (to count its tokens).
    let expected = if plan.chat { fixtures::unasked(&plan.clean) } else { plan.clean.clone() };
    if status == 200 && body == expected {
        return Got::Exact;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let shaped = v["error"]["message"].is_string() && v["error"]["type"].is_string();
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    if status >= 400 && shaped {
        return Got::Error(status, code);
    }
    let kind = if shaped { format!("error {code}") } else { format!("{} bytes", body.len()) };
    Got::Other(format!("{status} {kind}: {:.160}", String::from_utf8_lossy(&body)))
}

/// Send requests `ids` from `clients` threads; what each got, with its id.
fn fire(port: u16, plans: &Arc<Vec<Plan>>, ids: std::ops::Range<usize>, clients: usize) -> Vec<(usize, Got)> {
    let next = Arc::new(AtomicUsize::new(ids.start));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (next, plans, end) = (Arc::clone(&next), Arc::clone(plans), ids.end);
            thread::spawn(move || {
                let agent = agent();
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return out;
                    }
                    out.push((i, run_one(&agent, port, i, &plans[i])));
                }
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What every phase is given.
struct Run {
    bin: String,
    seed: u64,
    clients: usize,
}

/// Warm-up requests per phase; they come first and are planned like the others.
const WARMUP: usize = 300;

/// The single-upstream phase; its violations.
fn single(run: &Run, requests: usize) -> Vec<String> {
    let total = WARMUP + requests;
    let plans: Arc<Vec<Plan>> = Arc::new((0..total).map(|i| plan(i, run.seed)).collect());
    let stats = Arc::new(Mutex::new(Upstream::default()));
    let mock = start_mock(Arc::clone(&plans), Arc::clone(&stats));
    let proxy = Proxy::start(&run.bin, &mock.v1(), &[]);
    println!(
        "soak single: {requests} requests (+{WARMUP} warm-up) from {} clients, one upstream, pid {}",
        run.clients,
        proxy.pid()
    );
    let load = proxy.load(&plans, run.clients);
    let (warm, outcomes) = (&load.warm, &load.outcomes);

    let stats = stats.lock().unwrap();
    let mut violations = Vec::new();
    let (mut exact, mut errors, mut unexpected) = (0, 0, 0);
    let mut error_codes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, got) in warm.iter().chain(outcomes) {
        let plan = &plans[*i];
        let seen = stats.attempts.get(i).copied().unwrap_or(0);
        let want = if plan.must_fail() { ATTEMPTS } else { plan.faults.len() + 1 };
        let faults: Vec<Fault> = plan.faults.iter().map(|(f, _)| *f).collect();
        let judged = match got {
            Got::Exact if !plan.must_fail() => {
                exact += 1;
                Ok(())
            }
            Got::Exact => Err("complete answer where the plan exceeded the budget".to_string()),
            Got::Error(status, code) if plan.must_fail() => {
                errors += 1;
                *error_codes.entry(format!("{status} {code}")).or_insert(0) += 1;
                Ok(())
            }
            Got::Error(status, code) => Err(format!("error {status} {code}")),
            Got::Other(what) => Err(what.clone()),
        };
        match judged {
            Err(what) => {
                unexpected += 1;
                violations.push(format!("request {i}: {what}; plan {faults:?}"));
            }
            Ok(()) if seen != want => {
                violations.push(format!("request {i}: the mock saw {seen} attempts, the plan says {want}"))
            }
            Ok(()) => {}
        }
    }
    let answered = warm.len() + outcomes.len();
    if answered != total {
        violations.push(format!("{} requests lost", total - answered));
    }
    if stats.unknown > 0 {
        violations.push(format!("{} upstream requests without a soak id", stats.unknown));
    }

    let must_fail = plans.iter().filter(|p| p.must_fail()).count();
    let upstream_attempts: usize = stats.attempts.values().sum();
    println!("  requests        {total} ({WARMUP} warm-up + {requests})");
    println!("  complete, exact {exact}");
    println!("  expected errors {errors} (planned {must_fail}): {error_codes:?}");
    println!("  unexpected      {unexpected}");
    println!(
        "  upstream        {upstream_attempts} attempts, {} retries",
        upstream_attempts - total.min(upstream_attempts)
    );
    println!("  faults injected {:?}", stats.injected);
    proxy.check_health(&load, requests, &mut violations);
    violations
}

fn main() {
    let phases: String = env_or("SOAK_PHASES", "single,multi".to_string());
    let cap: u64 = env_or("SOAK_CAP_SECONDS", 240);
    let run = Run {
        bin: std::env::var("SHIELD_BIN")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/codex-shield").into()),
        seed: env_or("SOAK_SEED", 0x5EED_C0DE_2025),
        clients: env_or("SOAK_CLIENTS", 32),
    };
    thread::spawn(move || {
        thread::sleep(Duration::from_secs(cap));
        fail(&format!("time cap of {cap} s exceeded"));
    });
    println!("soak: seed {:#x}, phases {phases}", run.seed);
    let started = Instant::now();
    let mut violations = Vec::new();
    for phase in phases.split(',').map(str::trim) {
        let found = match phase {
            "single" => single(&run, env_or("SOAK_REQUESTS", 3000)),
            "multi" => multi::phase(&run, env_or("SOAK_MULTI_REQUESTS", 2000)),
            other => fail(&format!("unknown phase {other:?} in SOAK_PHASES (single, multi)")),
        };
        violations.extend(found.into_iter().map(|v| format!("{phase}: {v}")));
    }
    println!("soak: {:.1} s in all", started.elapsed().as_secs_f64());
    if !violations.is_empty() {
        for v in violations.iter().take(30) {
            eprintln!("  {v}");
        }
        fail(&format!("{} violations", violations.len()));
    }
    println!("soak: OK");
}
