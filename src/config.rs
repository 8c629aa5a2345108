//! The environment, turned once at start-up into a typed, validated `Config`.
//!
//! Two stages: `Config::from_lookup` reads raw strings through a lookup function (the process
//! environment in production, a table in tests) and converts each to its type, failing on the
//! first bad value with the variable's name. Nothing else in the program reads the
//! environment. Loading `.env` is `lib.rs`'s job; this module only sees variables.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::log::Level;
use crate::retry::Policy;
use crate::target::{Auth, Endpoint};

/// Every variable, its default and its meaning: the source of `--help`, `--check`, the README
/// table and `.env.example` (a test keeps those two in step with this list).
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "AZURE_ENDPOINT",
        "",
        "upstream base URL (.../v1) or full .../responses or .../chat/completions URL; required",
    ),
    ("AZURE_API_KEY", "", "upstream key; empty sends no auth header (local servers)"),
    ("UPSTREAM_AUTH", "auto", "auto | api-key | bearer; auto uses api-key for Azure hosts"),
    ("HOST", "127.0.0.1", "address to listen on"),
    ("PORT", "8888", "port to listen on (0 picks a free one)"),
    ("FORCED_MODEL", "", "if set, replaces the model of every API request"),
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
    ("MAX_REQUEST_BYTES", "33554432", "largest client body (413 beyond it)"),
    ("MAX_RESPONSE_BYTES", "67108864", "largest buffered upstream answer (502 beyond it)"),
    ("MAX_CONCURRENT", "256", "requests in flight at once (503 with Retry-After beyond it)"),
    ("PROXY_API_KEY", "", "if set, clients must send it (Bearer or api-key); never forwarded"),
    ("ALLOW_OPEN_PROXY", "false", "true: a HOST other than loopback may run without PROXY_API_KEY"),
    ("SHUTDOWN_GRACE_SECONDS", "30", "on SIGINT/SIGTERM, how long in-flight requests may finish"),
    ("UPSTREAM_CA_FILE", "", "PEM file of extra CA certificates to trust (added to the bundled roots)"),
    ("LOG_LEVEL", "info", "error | warn | info | debug"),
];

/// The validated configuration, shared read-only by every worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    pub forced_model: Option<String>,
    pub retry: Policy,
    pub limits: Limits,
    /// Inbound key clients must present (`PROXY_API_KEY`).
    pub proxy_key: Option<String>,
    pub shutdown_grace: Duration,
    pub log_level: Level,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub endpoint: Endpoint,
    pub key: Option<String>,
    pub auth: Auth,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
    pub max_concurrent: usize,
}

/// Reads raw values: the variable if set and not blank, else the default.
struct Raw<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Raw<F> {
    fn get(&self, var: &'static str) -> String {
        let default = VARIABLES.iter().find(|(name, ..)| *name == var).map_or("", |(_, d, _)| *d);
        (self.0)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    }

    fn optional(&self, var: &'static str) -> Option<String> {
        Some(self.get(var)).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, var: &'static str, what: &str) -> Result<T, Error> {
        let raw = self.get(var);
        raw.parse().map_err(|_| bad(var, format!("expected {what}, got {raw:?}")))
    }

    fn seconds(&self, var: &'static str, allow_zero: bool) -> Result<Duration, Error> {
        let secs: f64 = self.parse(var, "a number of seconds")?;
        if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !allow_zero) || secs > 1e9 {
            return Err(bad(var, format!("{secs} is out of range")));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    fn positive<T: std::str::FromStr + PartialOrd + Default>(&self, var: &'static str) -> Result<T, Error> {
        let v: T = self.parse(var, "a positive whole number")?;
        if v <= T::default() {
            return Err(bad(var, "must be at least 1".into()));
        }
        Ok(v)
    }
}

fn bad(var: &'static str, reason: String) -> Error {
    Error::Config { var, reason }
}

impl Config {
    /// The configuration from the process environment.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from any lookup function (tests pass a table).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let raw = Raw(lookup);
        let endpoint_text = raw.optional("AZURE_ENDPOINT").ok_or_else(|| {
            bad(
                "AZURE_ENDPOINT",
                "is required (the upstream URL, e.g. https://NAME.openai.azure.com/openai/v1)".into(),
            )
        })?;
        let endpoint = Endpoint::parse(&endpoint_text).map_err(|e| bad("AZURE_ENDPOINT", e))?;
        let auth = match raw.get("UPSTREAM_AUTH").to_ascii_lowercase().as_str() {
            "auto" => endpoint.auto_auth(),
            "api-key" | "api_key" | "apikey" => Auth::ApiKey,
            "bearer" => Auth::Bearer,
            other => {
                return Err(bad("UPSTREAM_AUTH", format!("expected auto, api-key or bearer, got {other:?}")))
            }
        };
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
        let allow_open = match raw.get("ALLOW_OPEN_PROXY").to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => return Err(bad("ALLOW_OPEN_PROXY", format!("expected true or false, got {other:?}"))),
        };
        let config = Config {
            listen: Listen { host: raw.get("HOST"), port: raw.parse("PORT", "a port number (0-65535)")? },
            upstream: Upstream {
                endpoint,
                key: raw.optional("AZURE_API_KEY"),
                auth,
                ca_file,
                connect_timeout: raw.seconds("CONNECT_TIMEOUT_SECONDS", false)?,
                idle_timeout: raw.seconds("IDLE_TIMEOUT_SECONDS", false)?,
            },
            forced_model: raw.optional("FORCED_MODEL"),
            retry,
            limits: Limits {
                max_request_bytes: raw.positive("MAX_REQUEST_BYTES")?,
                max_response_bytes: raw.positive("MAX_RESPONSE_BYTES")?,
                max_concurrent: raw.positive("MAX_CONCURRENT")?,
            },
            proxy_key: raw.optional("PROXY_API_KEY"),
            shutdown_grace: raw.seconds("SHUTDOWN_GRACE_SECONDS", true)?,
            log_level,
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
        let mask = |v: &Option<String>| match v {
            Some(k) => format!("set ({} chars, hidden)", k.chars().count()),
            None => "not set".to_string(),
        };
        let secs = |d: Duration| format!("{}", d.as_secs_f64());
        let u = &self.upstream;
        let rows = [
            ("AZURE_ENDPOINT", u.endpoint.display()),
            ("AZURE_API_KEY", mask(&u.key)),
            (
                "UPSTREAM_AUTH",
                match u.auth {
                    Auth::ApiKey => "api-key".into(),
                    Auth::Bearer => "bearer".into(),
                },
            ),
            ("HOST", self.listen.host.clone()),
            ("PORT", self.listen.port.to_string()),
            ("FORCED_MODEL", self.forced_model.clone().unwrap_or_else(|| "(client's model)".into())),
            ("RETRY_ATTEMPTS", self.retry.attempts.to_string()),
            ("RETRY_WAIT_SECONDS", secs(self.retry.base)),
            ("RETRY_MAX_WAIT_SECONDS", secs(self.retry.max)),
            ("RETRY_DEADLINE_SECONDS", secs(self.retry.deadline)),
            ("IDLE_TIMEOUT_SECONDS", secs(u.idle_timeout)),
            ("CONNECT_TIMEOUT_SECONDS", secs(u.connect_timeout)),
            ("MAX_REQUEST_BYTES", self.limits.max_request_bytes.to_string()),
            ("MAX_RESPONSE_BYTES", self.limits.max_response_bytes.to_string()),
            ("MAX_CONCURRENT", self.limits.max_concurrent.to_string()),
            ("PROXY_API_KEY", mask(&self.proxy_key)),
            ("SHUTDOWN_GRACE_SECONDS", secs(self.shutdown_grace)),
            (
                "UPSTREAM_CA_FILE",
                u.ca_file.as_ref().map_or("(bundled roots only)".into(), |p| p.display().to_string()),
            ),
            ("LOG_LEVEL", self.log_level.name().to_string()),
        ];
        rows.iter().map(|(k, v)| format!("{k:<24} {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn failing_var(vars: &[(&str, &str)]) -> &'static str {
        match config(vars) {
            Err(Error::Config { var, .. }) => var,
            other => panic!("expected a config error for {vars:?}, got {other:?}"),
        }
    }

    const EP: (&str, &str) = ("AZURE_ENDPOINT", "https://x.openai.azure.com/openai/v1");

    #[test]
    fn defaults() {
        let c = config(&[EP]).unwrap();
        assert_eq!(c.listen_addr(), "127.0.0.1:8888");
        assert!(c.is_loopback());
        assert_eq!(c.upstream.auth, Auth::ApiKey);
        assert_eq!(c.retry.attempts, 10);
        assert_eq!(c.retry.deadline, Duration::from_secs(240));
        assert!(c.retry.deadline < Duration::from_secs(300), "must stay under Codex's idle timeout");
        assert_eq!(c.limits.max_request_bytes, 32 << 20);
        assert_eq!(c.limits.max_response_bytes, 64 << 20);
        assert_eq!(c.forced_model, None);
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
            ("PROXY_API_KEY", "inbound"),
        ])
        .unwrap();
        assert_eq!(c.retry.base, Duration::from_millis(50));
        assert_eq!(c.upstream.auth, Auth::ApiKey);
        assert_eq!(c.forced_model.as_deref(), Some("gpt-5"));
        assert!(!c.is_loopback());
        assert!(!c.describe().contains("sk-secret"));
        assert_eq!(config(&[("AZURE_ENDPOINT", "http://h/v1")]).unwrap().upstream.auth, Auth::Bearer);
        assert!(
            config(&[EP, ("HOST", "0.0.0.0"), ("ALLOW_OPEN_PROXY", "true")]).is_ok_and(|c| !c.is_loopback())
        );
        assert!(config(&[EP, ("HOST", "localhost")]).is_ok());
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
            (&[EP, ("HOST", "0.0.0.0")], "HOST"),
            (&[EP, ("HOST", "::"), ("ALLOW_OPEN_PROXY", "")], "HOST"),
            (&[EP, ("HOST", "0.0.0.0"), ("ALLOW_OPEN_PROXY", "maybe")], "ALLOW_OPEN_PROXY"),
            (&[EP, ("UPSTREAM_CA_FILE", "/nonexistent/ca.pem")], "UPSTREAM_CA_FILE"),
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
