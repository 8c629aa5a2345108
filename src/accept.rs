//! The proxy's side of tiny_http's accept loop: the limits it gets (the connections the
//! descriptor limit has room for, the deadlines of request heads and idle connections), the
//! body and log line of the answers it writes itself (a refused head; a head too slow, 408; a
//! connection past the limit, 503), and a watch over what it reports: throttled lines about
//! connections turned away and accept errors (EMFILE), and an error once the accept loop has
//! ended, so that the process exits non-zero instead of living on without a listener.
//!
//! It accepts nothing and answers no request itself (tiny_http; `server.rs`).

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Error;
use crate::log::Throttle;

/// At most one line this often about connections turned away, accept errors, or heads that
/// timed out.
const EVERY: Duration = Duration::from_secs(10);

/// The listening server, running `handler` for each request on its connection's thread.
pub fn listen(
    config: &Config,
    handler: impl Fn(tiny_http::Request) + Send + Sync + 'static,
) -> Result<tiny_http::Server, Error> {
    let addr = config.listen_addr();
    tiny_http::Server::http_with_handler(addr.as_str(), limits(config), handler, refusal_body)
        .map_err(|e| Error::Listen { addr, reason: e.to_string() })
}

fn limits(config: &Config) -> tiny_http::Limits {
    let l = &config.limits;
    tiny_http::Limits {
        max_connections: l.room.max_connections,
        turn_away: l.room.turn_away,
        header_timeout: l.header_timeout,
        idle_timeout: l.client_idle_timeout,
    }
}

/// The OpenAI-shaped body of an answer tiny_http writes itself, to a request head it refuses
/// before any handler sees it (malformed, smuggling-prone, too large, too slow) or to a
/// connection past the limit, with its log line (throttled for the kinds that come in floods;
/// connections turned away are counted by `Watch`).
fn refusal_body(refused: &tiny_http::Refused) -> Vec<u8> {
    static TIMED_OUT: Throttle = Throttle::new(EVERY);
    let (kind, code) = match refused.status {
        408 => ("invalid_request_error", "request_timeout"),
        431 => ("invalid_request_error", "request_header_fields_too_large"),
        503 => ("server_error", "proxy_busy"),
        505 => ("invalid_request_error", "http_version_not_supported"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    match refused.status {
        503 => {}
        408 => {
            if let Some(unlogged) = TIMED_OUT.tick(Instant::now()) {
                crate::warn!("closed a connection: {} (408; {unlogged} more not logged)", refused.reason);
            }
        }
        _ => crate::warn!("refused a request: {} ({})", refused.reason, refused.status),
    }
    let message = format!("codex-shield: {}", refused.reason);
    serde_json::to_vec(&crate::reply::error_json(&message, kind, code)).unwrap_or_default()
}

/// What the accept loop reported last, and the throttles of the lines about it.
#[derive(Debug)]
pub struct Watch {
    seen: tiny_http::Accepting,
    refused: Throttle,
    errors: Throttle,
    max_connections: usize,
    addr: String,
}

impl Watch {
    pub fn new(config: &Config) -> Watch {
        Watch {
            seen: tiny_http::Accepting::default(),
            refused: Throttle::new(EVERY),
            errors: Throttle::new(EVERY),
            max_connections: config.limits.room.max_connections,
            addr: config.listen_addr(),
        }
    }

    /// Write a line for what is new since the last look; an error if the loop has ended.
    pub fn check(&mut self, server: &tiny_http::Server) -> Result<(), Error> {
        for line in self.look(server.accepting(), Instant::now())? {
            crate::warn!("{line}");
        }
        Ok(())
    }

    /// What is new in `now_seen` at `now`: the lines to write, or the end of the loop.
    fn look(&mut self, now_seen: tiny_http::Accepting, now: Instant) -> Result<Vec<String>, Error> {
        if let Some(why) = &now_seen.ended {
            let reason = format!("{why}: no new connection can be accepted");
            return Err(Error::Listen { addr: self.addr.clone(), reason });
        }
        let mut lines = Vec::new();
        let refused = now_seen.refused - self.seen.refused;
        if refused > 0 && self.refused.tick(now).is_some() {
            lines.push(format!(
                "turning connections away (503, or closed beyond a few): {} open, the limit is {} \
                 (RLIMIT_NOFILE); {} turned away so far",
                now_seen.open, self.max_connections, now_seen.refused
            ));
        }
        let errors = now_seen.errors - self.seen.errors;
        if errors > 0 && self.errors.tick(now).is_some() {
            let last = now_seen.last_error.as_deref().unwrap_or("unknown error");
            lines.push(format!(
                "cannot accept connections: {last} ({} accept errors so far); retrying every few ms \
                 while the backlog waits",
                now_seen.errors
            ));
        }
        self.seen = now_seen;
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        let config =
            Config::from_lookup(|name| (name == "AZURE_ENDPOINT").then(|| "http://127.0.0.1:9/v1".into()));
        Watch::new(&config.unwrap())
    }

    #[test]
    fn new_refusals_and_errors_get_a_throttled_line() {
        let mut w = watch();
        let start = Instant::now();
        let seen = |refused, errors| tiny_http::Accepting {
            open: 7,
            refused,
            errors,
            last_error: Some("Too many open files (os error 24)".into()),
            ended: None,
        };
        let count = |lines: Vec<String>, needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert!(w.look(seen(0, 0), start).unwrap().is_empty());
        let lines = w.look(seen(3, 1), start).unwrap();
        assert_eq!(count(lines.clone(), "turning connections away"), 1, "{lines:?}");
        assert_eq!(count(lines, "Too many open files"), 1);
        assert!(w.look(seen(500, 90), start + Duration::from_secs(1)).unwrap().is_empty(), "throttled");
        let later = w.look(seen(501, 90), start + EVERY).unwrap();
        assert_eq!(later.len(), 1, "only what is new: {later:?}");
        assert!(later[0].contains("501 turned away so far"), "{later:?}");
    }

    #[test]
    fn an_ended_accept_loop_is_an_error() {
        let mut w = watch();
        let ended =
            tiny_http::Accepting { ended: Some("the accept thread panicked".into()), ..Default::default() };
        let err = w.look(ended, Instant::now()).unwrap_err();
        assert!(err.to_string().contains("the accept thread panicked"), "{err}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn refusals_are_openai_shaped() {
        let rows = [(408, "request_timeout"), (503, "proxy_busy"), (431, "request_header_fields_too_large")];
        for (status, code) in rows {
            let body = refusal_body(&tiny_http::Refused { status, reason: "why" });
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], code, "{v}");
            assert_eq!(v["error"]["message"], "codex-shield: why");
        }
    }
}
