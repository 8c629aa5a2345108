//! The environment, turned once at start-up into a typed, validated `Config`.
//!
//! Two stages: `Config::from_lookup` reads raw strings through a lookup function (the process
//! environment in production, a table in tests) and converts each to its type, failing on the
//! first bad value with the variable's name. Nothing else in the program reads the
//! environment. Loading `.env` is `lib.rs`'s job; this module only sees variables.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{Api, Speaks};
use crate::descriptors::{self, Room, Source};
use crate::error::Error;
use crate::log::{Format, Level};
use crate::retry::Policy;
use crate::route::{Auth, Endpoint};

/// Every variable, its default and its meaning: the source of `--help`, `--check`, the README
/// table and `.env.example` (a test keeps those two in step with this list). The first five
/// describe upstream 1; upstream N (2, 3, ...) repeats them with a `_N` suffix.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "AZURE_ENDPOINT",
        "",
        "upstream base URL (.../v1) or full .../responses or .../chat/completions URL; required",
    ),
    ("AZURE_API_KEY", "", "upstream key; empty sends no auth header (local servers)"),
    ("UPSTREAM_AUTH", "auto", "auto | api-key | bearer; auto uses api-key for Azure hosts"),
    ("FORCED_MODEL", "", "if set, replaces the model of every API request"),
    (
        "UPSTREAM_API",
        "auto",
        "auto | responses | chat | responses-only: what the upstream speaks; chat translates /v1/responses requests, responses-only /v1/chat/completions ones",
    ),
    (
        "REASONING_STORE_MB",
        "32",
        "responses-only upstreams: reasoning items kept for chat clients' next tool-call turn, in MiB (0: off)",
    ),
    ("REASONING_STORE_SECONDS", "3600", "how long a kept reasoning item waits for the turn that sends its calls back"),
    (
        "REASONING_SUMMARIES",
        "false",
        "responses-only upstreams: send reasoning summaries to chat clients as reasoning_content",
    ),
    ("ROUTING", "failover", "failover | round-robin, when AZURE_ENDPOINT_2... name more upstreams"),
    ("HOST", "127.0.0.1", "address to listen on"),
    ("PORT", "8888", "port to listen on (0 picks a free one)"),
    ("RETRY_ATTEMPTS", "10", "attempts per request, the first included"),
    ("RETRY_WAIT_SECONDS", "1", "wait after the first failure; doubles each attempt, with jitter"),
    ("RETRY_MAX_WAIT_SECONDS", "30", "cap on the computed wait (a longer upstream hint still wins)"),
    (
        "RETRY_DEADLINE_SECONDS",
        "240",
        "no new attempt after this long; keep it under Codex's 300 s stream idle timeout",
    ),
    ("IDLE_TIMEOUT_SECONDS", "120", "an upstream silent this long has stalled: retry"),
    ("CONNECT_TIMEOUT_SECONDS", "10", "TCP and TLS connect timeout"),
    (
        "KEEPALIVE_SECONDS",
        "0",
        "streaming Responses clients: send the head and a keepalive event this often while waiting (0: off)",
    ),
    (
        "CODEX_PROGRESS",
        "false",
        "with KEEPALIVE_SECONDS: show Codex what the shield is doing (retries, waits) as its status line",
    ),
    ("MAX_REQUEST_BYTES", "33554432", "largest client body (413 beyond it)"),
    ("MAX_RESPONSE_BYTES", "67108864", "largest buffered upstream answer (502 beyond it)"),
    (
        "MAX_CONCURRENT",
        "auto",
        "requests in flight at once (503 with Retry-After beyond it); auto: 256, fewer if the descriptor limit has no room",
    ),
    ("CLIENT_HEADER_TIMEOUT_SECONDS", "30", "a client's request head must arrive within this long (else 408 and close)"),
    ("CLIENT_IDLE_TIMEOUT_SECONDS", "120", "an idle keep-alive client connection is closed after this long"),
    (
        "AUTH_FAILURE_LIMIT",
        "20",
        "wrong PROXY_API_KEYs from one address within a minute before it gets 429s for a minute (0: no limit)",
    ),
    (
        "MEMORY_BUDGET_MB",
        "auto",
        "auto (the cgroup's memory limit) | off | MiB: new requests get 503 when bodies and answers hold half of it",
    ),
    ("PROXY_API_KEY", "", "if set, clients must send it (Bearer or api-key); never forwarded"),
    (
        "STATUS_TOKEN",
        "",
        "read-only token for /metrics (Bearer) and /status (also ?token=); grants no API call",
    ),
    ("ALLOW_OPEN_PROXY", "false", "true: a HOST other than loopback may run without PROXY_API_KEY"),
    (
        "SHUTDOWN_GRACE_SECONDS",
        "250",
        "on SIGINT/SIGTERM, how long in-flight requests may finish (then each gets a 503)",
    ),
    (
        "CLIENT_WRITE_TIMEOUT_SECONDS",
        "30",
        "a client that takes no byte of its answer for this long is cut off; also the least time an answer gets",
    ),
    (
        "CLIENT_MIN_BYTES_PER_SECOND",
        "65536",
        "beyond CLIENT_WRITE_TIMEOUT_SECONDS, an answer gets its size at this rate (8 MB: 30 s + 128 s)",
    ),
    ("UPSTREAM_CA_FILE", "", "PEM file of extra CA certificates to trust (added to the bundled roots)"),
    ("LOG_LEVEL", "info", "error | warn | info | debug"),
    ("LOG_FORMAT", "text", "text | json (one JSON object per line)"),
];

/// The per-upstream variables: `NAME` for upstream 1, `NAME_N` for upstream N.
pub const PER_UPSTREAM: [&str; 5] =
    ["AZURE_ENDPOINT", "AZURE_API_KEY", "UPSTREAM_AUTH", "FORCED_MODEL", "UPSTREAM_API"];

/// Most upstreams one proxy routes between.
pub const MAX_UPSTREAMS: usize = 16;

/// The validated configuration, shared read-only by every worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// Upstream 1 first; at least one.
    pub upstreams: Vec<Upstream>,
    pub routing: Routing,
    pub network: Network,
    pub retry: Policy,
    pub limits: Limits,
    /// Inbound key clients must present (`PROXY_API_KEY`).
    pub proxy_key: Option<String>,
    /// `KEEPALIVE_SECONDS`, when on.
    pub keepalive: Option<Duration>,
    /// `CODEX_PROGRESS`: progress lines for Codex clients while they wait.
    pub codex_progress: bool,
    /// Read-only token for `/metrics` and `/status` (`STATUS_TOKEN`).
    pub status_token: Option<String>,
    pub shutdown_grace: Duration,
    /// How slowly a client may take its answer.
    pub pace: Pace,
    /// Chat clients on responses-only upstreams: the reasoning store and summaries.
    pub reasoning: Reasoning,
    pub log_level: Level,
    pub log_format: Format,
}

/// `REASONING_STORE_MB`, `REASONING_STORE_SECONDS`, `REASONING_SUMMARIES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    /// Most bytes of reasoning items kept (0: none kept).
    pub store_bytes: usize,
    /// How long a kept item lives.
    pub ttl: Duration,
    /// Reasoning summaries reach chat clients as `reasoning_content`.
    pub summaries: bool,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub host: String,
    pub port: u16,
}

/// One upstream: where it is, how to authenticate, which model and API it gets.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// 1-based, as in the variables' suffixes and the log lines.
    pub number: usize,
    pub endpoint: Endpoint,
    pub key: Option<String>,
    pub auth: Auth,
    /// `FORCED_MODEL`: replaces the client's model.
    pub model: Option<String>,
    /// What this upstream is sent for each client API.
    pub api: Speaks,
}

/// How the upstream for an attempt is chosen among the healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The lowest-numbered upstream that is not cooling down.
    Failover,
    /// Each request starts with the next upstream in turn.
    RoundRobin,
}

/// Connection settings shared by every upstream.
#[derive(Debug, Clone)]
pub struct Network {
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
    /// In force: `room.max_concurrent`.
    pub max_concurrent: usize,
    /// What the descriptor limit leaves room for, and where `max_concurrent` came from
    /// (`Config::fit`).
    pub room: Room,
    /// `CLIENT_HEADER_TIMEOUT_SECONDS`, `CLIENT_IDLE_TIMEOUT_SECONDS`.
    pub header_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// `AUTH_FAILURE_LIMIT` (0: no brake).
    pub auth_failure_limit: u32,
    /// `MEMORY_BUDGET_MB`.
    pub memory_budget: crate::memory::Setting,
}

/// Reads raw values: the variable if set and not blank, else the default.
struct Raw<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Raw<F> {
    /// The value as set (trimmed, not blank), without a default.
    fn set(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn get(&self, var: &str) -> String {
        let default = VARIABLES.iter().find(|(name, ..)| *name == var).map_or("", |(_, d, _)| *d);
        self.set(var).unwrap_or_else(|| default.to_string())
    }

    fn optional(&self, var: &str) -> Option<String> {
        Some(self.get(var)).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, var: &str, what: &str) -> Result<T, Error> {
        let raw = self.get(var);
        raw.parse().map_err(|_| bad(var, format!("expected {what}, got {raw:?}")))
    }

    fn seconds(&self, var: &str, allow_zero: bool) -> Result<Duration, Error> {
        let secs: f64 = self.parse(var, "a number of seconds")?;
        if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !allow_zero) || secs > 1e9 {
            return Err(bad(var, format!("{secs} is out of range")));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    fn boolean(&self, var: &str) -> Result<bool, Error> {
        let raw = self.get(var);
        parse_bool(&raw)
            .ok_or_else(|| bad(var, format!("expected true or false, got {:?}", raw.to_ascii_lowercase())))
    }

    fn positive<T: std::str::FromStr + PartialOrd + Default>(&self, var: &str) -> Result<T, Error> {
        let v: T = self.parse(var, "a positive whole number")?;
        if v <= T::default() {
            return Err(bad(var, "must be at least 1".into()));
        }
        Ok(v)
    }

    /// The per-upstream variable `name` of upstream `n`; a missing value falls back to
    /// upstream 1's (except the endpoint and the key: see `key`).
    fn of(&self, name: &str, n: usize) -> (String, Option<String>) {
        let var = suffixed(name, n);
        let own = self.set(&var);
        let inherits = n > 1 && !matches!(name, "AZURE_ENDPOINT" | "AZURE_API_KEY");
        (var, own.or_else(|| if inherits { self.set(name) } else { None }))
    }
}

/// `NAME` for upstream 1, `NAME_N` for the others.
pub fn suffixed(name: &str, n: usize) -> String {
    if n == 1 {
        name.to_string()
    } else {
        format!("{name}_{n}")
    }
}

/// A yes-or-no variable, in any case: `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off`.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn bad(var: &str, reason: String) -> Error {
    Error::Config { var: var.to_string(), reason }
}

impl Config {
    /// The configuration from the process environment.
    pub fn from_env() -> Result<Config, Error> {
        let numbered: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| upstream_number(k).is_some_and(|n| n > MAX_UPSTREAMS))
            .collect();
        if let Some(var) = numbered.first() {
            return Err(bad(var, format!("at most {MAX_UPSTREAMS} upstreams are supported")));
        }
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from any lookup function (tests pass a table).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let raw = Raw(lookup);
        let upstreams = targets(&raw)?;
        let retry = Policy {
            attempts: raw.positive("RETRY_ATTEMPTS")?,
            base: raw.seconds("RETRY_WAIT_SECONDS", true)?,
            max: raw.seconds("RETRY_MAX_WAIT_SECONDS", true)?,
            deadline: raw.seconds("RETRY_DEADLINE_SECONDS", false)?,
        };
        let ca_file = raw.optional("UPSTREAM_CA_FILE").map(PathBuf::from);
        if let Some(path) = &ca_file {
            if !path.is_file() {
                return Err(bad("UPSTREAM_CA_FILE", format!("{} is not a readable file", path.display())));
            }
        }
        let log_level = Level::parse(&raw.get("LOG_LEVEL"))
            .ok_or_else(|| bad("LOG_LEVEL", "expected error, warn, info or debug".into()))?;
        let allow_open = raw.boolean("ALLOW_OPEN_PROXY")?;
        let routing = match raw.get("ROUTING").to_ascii_lowercase().as_str() {
            "failover" => Routing::Failover,
            "round-robin" | "round_robin" | "roundrobin" => Routing::RoundRobin,
            other => return Err(bad("ROUTING", format!("expected failover or round-robin, got {other:?}"))),
        };
        let keepalive = Some(raw.seconds("KEEPALIVE_SECONDS", true)?).filter(|d| !d.is_zero());
        let codex_progress = raw.boolean("CODEX_PROGRESS")?;
        let log_format = Format::parse(&raw.get("LOG_FORMAT"))
            .ok_or_else(|| bad("LOG_FORMAT", "expected text or json".into()))?;
        let max_concurrent = match raw.get("MAX_CONCURRENT").to_ascii_lowercase().as_str() {
            "auto" => None,
            _ => Some(raw.positive("MAX_CONCURRENT")?),
        };
        // Until `fit` knows the descriptor limit.
        let room = descriptors::room(None, max_concurrent);
        let config = Config {
            listen: Listen { host: raw.get("HOST"), port: raw.parse("PORT", "a port number (0-65535)")? },
            upstreams,
            routing,
            network: Network {
                ca_file,
                connect_timeout: raw.seconds("CONNECT_TIMEOUT_SECONDS", false)?,
                idle_timeout: raw.seconds("IDLE_TIMEOUT_SECONDS", false)?,
            },
            retry,
            limits: Limits {
                max_request_bytes: raw.positive("MAX_REQUEST_BYTES")?,
                max_response_bytes: raw.positive("MAX_RESPONSE_BYTES")?,
                max_concurrent: room.max_concurrent,
                room,
                header_timeout: raw.seconds("CLIENT_HEADER_TIMEOUT_SECONDS", false)?,
                client_idle_timeout: raw.seconds("CLIENT_IDLE_TIMEOUT_SECONDS", false)?,
                auth_failure_limit: raw.parse("AUTH_FAILURE_LIMIT", "a whole number")?,
                memory_budget: crate::memory::Setting::parse(&raw.get("MEMORY_BUDGET_MB"))
                    .ok_or_else(|| bad("MEMORY_BUDGET_MB", "expected auto, off or a number of MiB".into()))?,
            },
            proxy_key: raw.optional("PROXY_API_KEY"),
            keepalive,
            codex_progress,
            reasoning: Reasoning {
                store_bytes: raw
                    .parse::<usize>("REASONING_STORE_MB", "a whole number of MiB")?
                    .saturating_mul(1 << 20),
                ttl: raw.seconds("REASONING_STORE_SECONDS", false)?,
                summaries: raw.boolean("REASONING_SUMMARIES")?,
            },
            status_token: raw.optional("STATUS_TOKEN"),
            shutdown_grace: raw.seconds("SHUTDOWN_GRACE_SECONDS", true)?,
            pace: Pace {
                stall: raw.seconds("CLIENT_WRITE_TIMEOUT_SECONDS", false)?,
                min_rate: raw.positive("CLIENT_MIN_BYTES_PER_SECOND")?,
            },
            log_level,
            log_format,
        };
        if !config.is_loopback() && config.proxy_key.is_none() && !allow_open {
            let reason = format!(
                "{:?} is reachable from other machines: set PROXY_API_KEY (or ALLOW_OPEN_PROXY=true)",
                config.listen.host
            );
            return Err(bad("HOST", reason));
        }
        Ok(config)
    }

    /// Fit `MAX_CONCURRENT` (unless set) and the connections served at once to the
    /// descriptor limit (`None`: unknown).
    pub fn fit(&mut self, limit: Option<descriptors::Limit>) {
        let set = matches!(self.limits.room.source, Source::Set { .. }).then_some(self.limits.max_concurrent);
        self.limits.room = descriptors::room(limit, set);
        self.limits.max_concurrent = self.limits.room.max_concurrent;
    }

    /// `host:port` to bind.
    pub fn listen_addr(&self) -> String {
        if self.listen.host.contains(':') && !self.listen.host.starts_with('[') {
            format!("[{}]:{}", self.listen.host, self.listen.port)
        } else {
            format!("{}:{}", self.listen.host, self.listen.port)
        }
    }

    /// Whether the listening address is reachable only from this machine.
    pub fn is_loopback(&self) -> bool {
        let host = self.listen.host.trim_matches(|c| c == '[' || c == ']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The effective configuration for `--check`, with secrets masked.
    pub fn describe(&self) -> String {
        let secs = |d: Duration| format!("{}", d.as_secs_f64());
        let mut rows: Vec<(String, String)> = Vec::new();
        for t in &self.upstreams {
            rows.extend(t.describe());
        }
        let routing = match self.routing {
            Routing::Failover => "failover",
            Routing::RoundRobin => "round-robin",
        };
        let general = [
            ("REASONING_STORE_MB", (self.reasoning.store_bytes >> 20).to_string()),
            ("REASONING_STORE_SECONDS", secs(self.reasoning.ttl)),
            ("REASONING_SUMMARIES", self.reasoning.summaries.to_string()),
            ("ROUTING", routing.to_string()),
            ("HOST", self.listen.host.clone()),
            ("PORT", self.listen.port.to_string()),
            ("RETRY_ATTEMPTS", self.retry.attempts.to_string()),
            ("RETRY_WAIT_SECONDS", secs(self.retry.base)),
            ("RETRY_MAX_WAIT_SECONDS", secs(self.retry.max)),
            ("RETRY_DEADLINE_SECONDS", secs(self.retry.deadline)),
            ("IDLE_TIMEOUT_SECONDS", secs(self.network.idle_timeout)),
            ("CONNECT_TIMEOUT_SECONDS", secs(self.network.connect_timeout)),
            ("KEEPALIVE_SECONDS", self.keepalive.map_or("0 (off)".into(), secs)),
            ("CODEX_PROGRESS", self.codex_progress.to_string()),
            ("MAX_REQUEST_BYTES", self.limits.max_request_bytes.to_string()),
            ("MAX_RESPONSE_BYTES", self.limits.max_response_bytes.to_string()),
            ("MAX_CONCURRENT", self.limits.room.describe_concurrency()),
            ("RLIMIT_NOFILE", self.limits.room.describe_limit()),
            ("CLIENT_HEADER_TIMEOUT_SECONDS", secs(self.limits.header_timeout)),
            ("CLIENT_IDLE_TIMEOUT_SECONDS", secs(self.limits.client_idle_timeout)),
            ("AUTH_FAILURE_LIMIT", self.limits.auth_failure_limit.to_string()),
            ("MEMORY_BUDGET_MB", self.limits.memory_budget.describe()),
            ("PROXY_API_KEY", mask(&self.proxy_key)),
            ("STATUS_TOKEN", mask(&self.status_token)),
            ("SHUTDOWN_GRACE_SECONDS", secs(self.shutdown_grace)),
            ("CLIENT_WRITE_TIMEOUT_SECONDS", secs(self.pace.stall)),
            ("CLIENT_MIN_BYTES_PER_SECOND", self.pace.min_rate.to_string()),
            (
                "UPSTREAM_CA_FILE",
                self.network
                    .ca_file
                    .as_ref()
                    .map_or("(bundled roots only)".into(), |p| p.display().to_string()),
            ),
            ("LOG_LEVEL", self.log_level.name().to_string()),
            ("LOG_FORMAT", self.log_format.name().to_string()),
        ];
        rows.extend(general.into_iter().map(|(k, v)| (k.to_string(), v)));
        let mut text: String = rows.iter().map(|(k, v)| format!("{k:<30} {v}\n")).collect();
        if let Some(warning) = self.limits.room.warning() {
            text.push_str(&format!("WARNING: {warning}\n"));
        }
        text
    }
}

/// How slowly a client may take its answer (`client.rs` enforces it): its deadline is `stall`
/// plus its size at `min_rate`, and no single write may wait longer than `stall` for the
/// client to take a byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// `CLIENT_WRITE_TIMEOUT_SECONDS`: the longest a write waits with no byte taken, and the
    /// least time any answer gets.
    pub stall: Duration,
    /// `CLIENT_MIN_BYTES_PER_SECOND`: the slowest rate an answer may be taken at, beyond `stall`.
    pub min_rate: u64,
}

impl Pace {
    /// How long writing `bytes` may take in all.
    pub fn allowance(&self, bytes: usize) -> Duration {
        self.stall + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }
}

impl Config {
    /// The key of every upstream that has one (for the scrubber: `Scrubber::new(config.keys())`).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.upstreams.iter().filter_map(|u| u.key.as_deref())
    }
}

impl Upstream {
    /// `--check` rows for this upstream, keys masked.
    fn describe(&self) -> Vec<(String, String)> {
        let n = self.number;
        let auth = match self.auth {
            Auth::ApiKey => "api-key",
            Auth::Bearer => "bearer",
        };
        vec![
            (suffixed("AZURE_ENDPOINT", n), self.endpoint.display()),
            (suffixed("AZURE_API_KEY", n), mask(&self.key)),
            (suffixed("UPSTREAM_AUTH", n), auth.to_string()),
            (suffixed("FORCED_MODEL", n), self.model.clone().unwrap_or_else(|| "(client's model)".into())),
            (suffixed("UPSTREAM_API", n), self.api.name().to_string()),
        ]
    }
}

fn mask(v: &Option<String>) -> String {
    match v {
        Some(k) => format!("set ({} chars, hidden)", k.chars().count()),
        None => "not set".to_string(),
    }
}

/// `N` of a per-upstream variable `NAME_N` (N >= 2).
fn upstream_number(var: &str) -> Option<usize> {
    PER_UPSTREAM.iter().find_map(|name| {
        let n: usize = var.strip_prefix(name)?.strip_prefix('_')?.parse().ok()?;
        (n >= 2).then_some(n)
    })
}

/// Upstream 1 from the plain variables, then 2, 3, ... while `AZURE_ENDPOINT_N` is set. A
/// setting for an upstream past the last one (a gap, or a key without an endpoint) is an error.
fn targets<F: Fn(&str) -> Option<String>>(raw: &Raw<F>) -> Result<Vec<Upstream>, Error> {
    let mut targets = vec![target(raw, 1)?];
    while targets.len() < MAX_UPSTREAMS && raw.set(&suffixed("AZURE_ENDPOINT", targets.len() + 1)).is_some() {
        targets.push(target(raw, targets.len() + 1)?);
    }
    let next = targets.len() + 1;
    for n in next..=MAX_UPSTREAMS + 1 {
        for name in PER_UPSTREAM {
            let var = suffixed(name, n);
            if raw.set(&var).is_some() {
                let reason = if n > MAX_UPSTREAMS {
                    format!("at most {MAX_UPSTREAMS} upstreams are supported")
                } else if n == next {
                    format!("upstream {n} has no {}", suffixed("AZURE_ENDPOINT", n))
                } else {
                    format!(
                        "upstreams are numbered without gaps: {} is not set",
                        suffixed("AZURE_ENDPOINT", next)
                    )
                };
                return Err(bad(&var, reason));
            }
        }
    }
    Ok(targets)
}

/// Upstream N's key: its own `AZURE_API_KEY_N` (`none` for no key), else upstream 1's when
/// both name the same origin (another deployment or model in the same resource). Upstream 1's
/// key is never sent to another host: a second host without its own key is an error.
fn key<F: Fn(&str) -> Option<String>>(
    raw: &Raw<F>,
    n: usize,
    endpoint: &Endpoint,
) -> Result<Option<String>, Error> {
    let var = suffixed("AZURE_API_KEY", n);
    if let Some(own) = raw.set(&var) {
        return Ok(Some(own).filter(|k| n == 1 || !k.eq_ignore_ascii_case("none")));
    }
    let Some(first) = raw.set("AZURE_API_KEY").filter(|_| n > 1) else {
        return Ok(None);
    };
    let first_origin = raw.set("AZURE_ENDPOINT").and_then(|e| Endpoint::parse(&e).ok()).map(|e| e.origin);
    if first_origin.as_deref() == Some(endpoint.origin.as_str()) {
        return Ok(Some(first));
    }
    Err(bad(
        &var,
        format!(
            "upstream {n} is on another host than upstream 1 and AZURE_API_KEY is never sent to another \
             host: set {var} (or {var}=none for a server without a key)"
        ),
    ))
}

fn target<F: Fn(&str) -> Option<String>>(raw: &Raw<F>, n: usize) -> Result<Upstream, Error> {
    let (var, text) = raw.of("AZURE_ENDPOINT", n);
    let text = text.ok_or_else(|| {
        bad(&var, "is required (the upstream URL, e.g. https://NAME.openai.azure.com/openai/v1)".into())
    })?;
    let endpoint = Endpoint::parse(&text).map_err(|e| bad(&var, e))?;
    let (var, auth) = raw.of("UPSTREAM_AUTH", n);
    let auth = match auth.unwrap_or_else(|| "auto".into()).to_ascii_lowercase().as_str() {
        "auto" => endpoint.auto_auth(),
        "api-key" | "api_key" | "apikey" => Auth::ApiKey,
        "bearer" => Auth::Bearer,
        other => return Err(bad(&var, format!("expected auto, api-key or bearer, got {other:?}"))),
    };
    let (var, api) = raw.of("UPSTREAM_API", n);
    let api = match api.unwrap_or_else(|| "auto".into()).to_ascii_lowercase().as_str() {
        "auto" if endpoint.fixed == Some(Api::Chat) => Speaks::CHAT_ONLY,
        "auto" | "responses" => Speaks::BOTH,
        "chat" => Speaks::CHAT_ONLY,
        "responses-only" | "responses_only" => Speaks::RESPONSES_ONLY,
        other => {
            return Err(bad(&var, format!("expected auto, responses, chat or responses-only, got {other:?}")))
        }
    };
    let key = key(raw, n, &endpoint)?;
    Ok(Upstream { number: n, endpoint, key, auth, model: raw.of("FORCED_MODEL", n).1, api })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn failing_var(vars: &[(&str, &str)]) -> String {
        match config(vars) {
            Err(Error::Config { var, .. }) => var,
            other => panic!("expected a config error for {vars:?}, got {other:?}"),
        }
    }

    const EP: (&str, &str) = ("AZURE_ENDPOINT", "https://x.openai.azure.com/openai/v1");

    #[test]
    fn booleans() {
        let words = [
            ("true", Some(true)),
            ("TRUE", Some(true)),
            ("1", Some(true)),
            ("yes", Some(true)),
            ("On", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("No", Some(false)),
            ("off", Some(false)),
            ("2", None),
            ("y", None),
            ("enabled", None),
            ("", None),
        ];
        for (text, expected) in words {
            assert_eq!(parse_bool(text), expected, "{text:?}");
        }
        // Every yes-or-no variable reads the same words.
        let open = |v| config(&[EP, ("HOST", "0.0.0.0"), ("ALLOW_OPEN_PROXY", v)]).is_ok();
        let progress = |v| config(&[EP, ("CODEX_PROGRESS", v)]).unwrap().codex_progress;
        for (text, expected) in [("on", true), ("YES", true), ("off", false), ("no", false)] {
            assert_eq!((open(text), progress(text)), (expected, expected), "{text:?}");
        }
        for var in ["ALLOW_OPEN_PROXY", "CODEX_PROGRESS"] {
            assert_eq!(failing_var(&[EP, (var, "maybe")]), var);
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[EP]).unwrap();
        assert_eq!(c.listen_addr(), "127.0.0.1:8888");
        assert!(c.is_loopback());
        assert_eq!(c.upstreams.len(), 1);
        assert_eq!(c.upstreams[0].auth, Auth::ApiKey);
        assert_eq!(c.upstreams[0].api, Speaks::BOTH);
        assert_eq!(c.routing, Routing::Failover);
        assert_eq!(c.keepalive, None);
        assert!(c.shutdown_grace > c.retry.deadline, "the grace covers a request's retries");
        assert_eq!(c.retry.attempts, 10);
        assert_eq!(c.retry.deadline, Duration::from_secs(240));
        assert!(c.retry.deadline < Duration::from_secs(300), "must stay under Codex's idle timeout");
        assert_eq!(c.limits.max_request_bytes, 32 << 20);
        assert_eq!(c.limits.max_response_bytes, 64 << 20);
        assert_eq!(c.upstreams[0].model, None);
        assert_eq!(c.limits.max_concurrent, 256);
        assert_eq!(c.limits.header_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.client_idle_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.auth_failure_limit, 20);
        assert_eq!(c.pace.allowance(8 << 20), Duration::from_secs(30 + 128));
        assert!(c.pace.allowance(8 << 20) < c.shutdown_grace, "a slow 8 MB answer ends within the grace");
    }

    /// `MAX_CONCURRENT` unset follows the descriptor limit; set, it wins (see descriptors.rs).
    #[test]
    fn max_concurrent_fits_the_descriptor_limit() {
        let limit = Some(descriptors::Limit { soft: 1024, hard: 1024, raised_from: None });
        let mut auto = config(&[EP]).unwrap();
        auto.fit(limit);
        assert_eq!((auto.limits.max_concurrent, auto.limits.room.source), (232, Source::Limit));
        let mut set = config(&[EP, ("MAX_CONCURRENT", "300")]).unwrap();
        set.fit(limit);
        assert_eq!((set.limits.max_concurrent, set.limits.room.source), (300, Source::Set { fits: false }));
        assert!(set.describe().contains("300 (set; more than 1024 descriptors have room for)"));
        let mut explicit_auto = config(&[EP, ("MAX_CONCURRENT", "AUTO")]).unwrap();
        explicit_auto.fit(limit);
        assert_eq!(explicit_auto.limits.max_concurrent, 232);
    }

    #[test]
    fn values() {
        let c = config(&[
            ("AZURE_ENDPOINT", "http://127.0.0.1:9/v1"),
            ("RETRY_WAIT_SECONDS", "0.05"),
            ("UPSTREAM_AUTH", "API-KEY"),
            ("FORCED_MODEL", " gpt-5 "),
            ("HOST", "0.0.0.0"),
            ("PORT", "0"),
            ("AZURE_API_KEY", "sk-secret"),
            ("STATUS_TOKEN", "st-secret"),
            ("LOG_FORMAT", "JSON"),
            ("PROXY_API_KEY", "inbound"),
        ])
        .unwrap();
        assert_eq!(c.retry.base, Duration::from_millis(50));
        assert_eq!(c.upstreams[0].auth, Auth::ApiKey);
        assert_eq!(c.upstreams[0].model.as_deref(), Some("gpt-5"));
        assert!(!c.is_loopback());
        assert!(!c.describe().contains("sk-secret"));
        assert_eq!(config(&[("AZURE_ENDPOINT", "http://h/v1")]).unwrap().upstreams[0].auth, Auth::Bearer);
        let chat = "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21";
        assert_eq!(config(&[("AZURE_ENDPOINT", chat)]).unwrap().upstreams[0].api, Speaks::CHAT_ONLY);
        let forced = config(&[("AZURE_ENDPOINT", chat), ("UPSTREAM_API", "Responses")]).unwrap();
        assert_eq!(forced.upstreams[0].api, Speaks::BOTH);
        assert_eq!(config(&[EP, ("UPSTREAM_API", "chat")]).unwrap().upstreams[0].api, Speaks::CHAT_ONLY);
        let only = config(&[EP, ("UPSTREAM_API", "Responses-Only")]).unwrap();
        assert_eq!(only.upstreams[0].api, Speaks::RESPONSES_ONLY);
        assert!(only.describe().contains("responses-only"), "{}", only.describe());
        assert_eq!(
            only.reasoning,
            Reasoning { store_bytes: 32 << 20, ttl: Duration::from_secs(3600), summaries: false }
        );
        let off = config(&[EP, ("REASONING_STORE_MB", "0"), ("REASONING_SUMMARIES", "true")]).unwrap();
        assert_eq!((off.reasoning.store_bytes, off.reasoning.summaries), (0, true));
        let c = config(&[EP, ("KEEPALIVE_SECONDS", "15"), ("ROUTING", "round-robin")]).unwrap();
        assert_eq!((c.keepalive, c.routing), (Some(Duration::from_secs(15)), Routing::RoundRobin));
    }

    /// Upstream N: its own settings, upstream 1's where unset; keys stay with their host.
    #[test]
    fn several_upstreams() {
        let c = config(&[
            ("AZURE_ENDPOINT", "https://east.openai.azure.com/openai/v1"),
            ("AZURE_API_KEY", "k1"),
            ("FORCED_MODEL", "gpt-5"),
            ("AZURE_ENDPOINT_2", "https://west.openai.azure.com/openai/v1"),
            ("AZURE_API_KEY_2", "k2"),
            ("AZURE_ENDPOINT_3", "https://east.openai.azure.com/openai/v1"),
            ("FORCED_MODEL_3", "gpt-5-mini"),
            ("AZURE_ENDPOINT_4", "http://127.0.0.1:8000/v1"),
            ("AZURE_API_KEY_4", "none"),
            ("UPSTREAM_API_4", "chat"),
        ])
        .unwrap();
        let got: Vec<String> = c
            .upstreams
            .iter()
            .map(|t| {
                format!(
                    "{} {} {:?} {:?} {:?} {}",
                    t.number,
                    t.endpoint.host,
                    t.key,
                    t.auth,
                    t.model,
                    t.api.name()
                )
            })
            .collect();
        let expected = [
            r#"1 east.openai.azure.com Some("k1") ApiKey Some("gpt-5") responses"#,
            r#"2 west.openai.azure.com Some("k2") ApiKey Some("gpt-5") responses"#,
            r#"3 east.openai.azure.com Some("k1") ApiKey Some("gpt-5-mini") responses"#,
            r#"4 127.0.0.1 None Bearer Some("gpt-5") chat"#,
        ];
        assert_eq!(got, expected);
        let described = c.describe();
        assert!(
            described.contains("AZURE_ENDPOINT_4") && described.contains("UPSTREAM_API_4"),
            "{described}"
        );
        assert!(!described.contains("k1") && !described.contains("k2"), "{described}");
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "AZURE_ENDPOINT"),
            (&[("AZURE_ENDPOINT", "not a url")], "AZURE_ENDPOINT"),
            (&[EP, ("PORT", "http")], "PORT"),
            (&[EP, ("PORT", "70000")], "PORT"),
            (&[EP, ("RETRY_ATTEMPTS", "0")], "RETRY_ATTEMPTS"),
            (&[EP, ("RETRY_ATTEMPTS", "-1")], "RETRY_ATTEMPTS"),
            (&[EP, ("RETRY_WAIT_SECONDS", "fast")], "RETRY_WAIT_SECONDS"),
            (&[EP, ("RETRY_MAX_WAIT_SECONDS", "-2")], "RETRY_MAX_WAIT_SECONDS"),
            (&[EP, ("RETRY_DEADLINE_SECONDS", "0")], "RETRY_DEADLINE_SECONDS"),
            (&[EP, ("IDLE_TIMEOUT_SECONDS", "NaN")], "IDLE_TIMEOUT_SECONDS"),
            (&[EP, ("MAX_REQUEST_BYTES", "1e3")], "MAX_REQUEST_BYTES"),
            (&[EP, ("UPSTREAM_AUTH", "basic")], "UPSTREAM_AUTH"),
            (&[EP, ("LOG_LEVEL", "loud")], "LOG_LEVEL"),
            (&[EP, ("LOG_FORMAT", "logfmt")], "LOG_FORMAT"),
            (&[EP, ("UPSTREAM_CA_FILE", "/nonexistent/ca.pem")], "UPSTREAM_CA_FILE"),
            (&[EP, ("UPSTREAM_API", "grpc")], "UPSTREAM_API"),
            (&[EP, ("ROUTING", "random")], "ROUTING"),
            (&[EP, ("KEEPALIVE_SECONDS", "-1")], "KEEPALIVE_SECONDS"),
            (&[EP, ("CLIENT_WRITE_TIMEOUT_SECONDS", "0")], "CLIENT_WRITE_TIMEOUT_SECONDS"),
            (&[EP, ("CLIENT_MIN_BYTES_PER_SECOND", "0")], "CLIENT_MIN_BYTES_PER_SECOND"),
            (&[EP, ("AZURE_ENDPOINT_2", "nope")], "AZURE_ENDPOINT_2"),
            (&[EP, ("AZURE_API_KEY_2", "k2")], "AZURE_API_KEY_2"),
            (&[EP, ("FORCED_MODEL_2", "m")], "FORCED_MODEL_2"),
            (&[EP, ("AZURE_ENDPOINT_3", "http://h/v1")], "AZURE_ENDPOINT_3"),
            (&[EP, ("AZURE_ENDPOINT_2", "http://h/v1"), ("UPSTREAM_AUTH_2", "x")], "UPSTREAM_AUTH_2"),
            (&[EP, ("AZURE_API_KEY", "k"), ("AZURE_ENDPOINT_2", "http://other/v1")], "AZURE_API_KEY_2"),
            (&[EP, ("AZURE_ENDPOINT_17", "http://h/v1")], "AZURE_ENDPOINT_17"),
            (&[EP, ("MAX_CONCURRENT", "0")], "MAX_CONCURRENT"),
            (&[EP, ("MAX_CONCURRENT", "many")], "MAX_CONCURRENT"),
            (&[EP, ("CLIENT_HEADER_TIMEOUT_SECONDS", "0")], "CLIENT_HEADER_TIMEOUT_SECONDS"),
            (&[EP, ("CLIENT_IDLE_TIMEOUT_SECONDS", "soon")], "CLIENT_IDLE_TIMEOUT_SECONDS"),
            (&[EP, ("AUTH_FAILURE_LIMIT", "-1")], "AUTH_FAILURE_LIMIT"),
        ];
        for (vars, var) in cases {
            assert_eq!(failing_var(vars), *var, "{vars:?}");
        }
    }

    /// The README's table documents every variable, with its default.
    #[test]
    fn readme_lists_every_variable() {
        let readme = include_str!("../README.md");
        for (name, default, _) in VARIABLES {
            let shown = if default.is_empty() { "(".to_string() } else { format!("`{default}`") };
            let row = format!("| `{name}` | {shown}");
            assert!(readme.contains(&row), "README.md lacks a row starting {row:?}");
        }
    }

    /// `.env.example` documents every variable, with its default.
    #[test]
    fn env_example_lists_every_variable() {
        let example = include_str!("../.env.example");
        for (name, default, _) in VARIABLES {
            let line = format!("{name}={default}");
            let commented = format!("# {name}={default}");
            assert!(
                example.lines().any(|l| l.starts_with(&line) || l.starts_with(&commented)),
                ".env.example lacks {line:?}"
            );
        }
    }
}
