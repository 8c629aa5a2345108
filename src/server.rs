//! The client side: tiny_http's accept loop hands each connection to a pooled thread, which
//! runs `on_request` for each of its requests.
//!
//! This module owns the client side of every exchange: routing, the inbound key, reading the
//! body within its limit, choosing which client headers travel, writing the reply, the log
//! line, the in-flight limit and graceful shutdown. A slow or retrying request never blocks
//! another: each connection has its own thread (a client sends its next request on a
//! connection only after the answer to the previous one). It never talks to the upstream.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::config::Config;
use crate::error::Error;
use crate::reply::Reply;
use crate::shield::{self, Job, Shield, Trace};
use crate::target::{self, Route};
use crate::upstream::{Outgoing, Upstream};

/// How often the main thread looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(50);

/// Shared by every connection thread.
struct State {
    config: Arc<Config>,
    upstream: Upstream,
    in_flight: AtomicUsize,
    /// Requests received and not yet answered (what shutdown waits for).
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Set on SIGINT/SIGTERM: requests still arriving on open connections get a 503.
    stopping: AtomicBool,
}

/// Counts a request until its reply is written, however its handler ends.
struct Active<'a>(&'a State);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of the `MAX_CONCURRENT` slots, held from the moment the client's body is in until
/// just before the reply is written; released however the worker ends.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn acquire(state: &'a State) -> Result<InFlight<'a>, Error> {
        let limit = state.config.limits.max_concurrent;
        if state.in_flight.fetch_add(1, Ordering::SeqCst) >= limit {
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Busy { limit });
        }
        Ok(InFlight(state))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve until `stop` is set, then drain in-flight requests for up to the grace period.
pub fn serve(config: Arc<Config>, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let upstream = Upstream::new(&config)?;
    let addr = config.listen_addr();
    let (in_flight, active, next_id) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicU64::new(1));
    let stopping = AtomicBool::new(false);
    let state = Arc::new(State { config, upstream, in_flight, active, next_id, stopping });
    let shared = Arc::clone(&state);
    let server =
        tiny_http::Server::http_with_handler(addr.as_str(), move |request| on_request(&shared, request))
            .map_err(|e| Error::Listen { addr: addr.clone(), reason: e.to_string() })?;
    banner(&state.config, &server.server_addr().to_string());
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(POLL);
    }
    state.stopping.store(true, Ordering::SeqCst);
    drop(server); // closes the listening socket; requests being served go on
    drain(&state);
    Ok(())
}

fn banner(config: &Config, bound: &str) {
    let u = &config.upstream;
    eprintln!("codex-shield {} listening on http://{bound}", env!("CARGO_PKG_VERSION"));
    eprintln!("  target:  {} (auth: {})", u.endpoint.display(), auth_name(config));
    let model = config.forced_model.as_deref().unwrap_or("(client's choice)");
    eprintln!("  model:   {model}");
    let r = &config.retry;
    eprintln!(
        "  retries: {} attempts, backoff from {}s to {}s, deadline {}s, idle timeout {}s",
        r.attempts,
        r.base.as_secs_f64(),
        r.max.as_secs_f64(),
        r.deadline.as_secs_f64(),
        u.idle_timeout.as_secs_f64()
    );
    if !config.is_loopback() && config.proxy_key.is_none() {
        eprintln!(
            "WARNING: listening on {bound}, reachable from other machines, without PROXY_API_KEY: \
             anyone who can connect spends your upstream key. Set PROXY_API_KEY or HOST=127.0.0.1."
        );
    }
}

fn auth_name(config: &Config) -> &'static str {
    match (&config.upstream.key, config.upstream.auth) {
        (None, _) => "none (AZURE_API_KEY is empty)",
        (Some(_), target::Auth::ApiKey) => "api-key header",
        (Some(_), target::Auth::Bearer) => "Authorization: Bearer",
    }
}

/// Answer `/healthz` on the spot (it never counts against `MAX_CONCURRENT`, so a busy proxy
/// still looks alive); handle anything else.
fn on_request(state: &State, request: tiny_http::Request) {
    let path = request.url().split('?').next().unwrap_or("");
    let route = target::route(request.method().as_str(), path);
    if route == Route::Health {
        send(request, health(state));
        return;
    }
    if state.stopping.load(Ordering::SeqCst) {
        send(request, Reply::error(&Error::ShuttingDown));
        return;
    }
    state.active.fetch_add(1, Ordering::SeqCst);
    let _active = Active(state);
    handle(state, request, route);
}

/// `200 {"status":"ok"}`, or once shutdown has begun `503 {"status":"draining"}`, so a load
/// balancer or a Kubernetes readiness probe stops sending new requests while in-flight
/// answers finish.
fn health(state: &State) -> Reply {
    let (status, word) = match state.stopping.load(Ordering::SeqCst) {
        false => (200, "ok"),
        true => (503, "draining"),
    };
    let health = json!({
        "status": word,
        "version": env!("CARGO_PKG_VERSION"),
        "in_flight": state.in_flight.load(Ordering::Relaxed),
        "open_requests": state.active.load(Ordering::Relaxed),
    });
    Reply::json(status, &health)
}

/// One request, start to finish, with its log line. The in-flight slot is released just
/// before the reply is written, so a client that sends its next request the moment it has
/// its answer never finds its own finished request still counted.
fn handle(state: &State, mut request: tiny_http::Request, route: Route) {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.clone(), None),
    };
    let mut trace = Trace::default();
    let mut slot = None;
    let reply = respond_to(state, &mut request, route, query.as_deref(), &mut trace, &mut slot)
        .unwrap_or_else(|e| Reply::error(&e));
    let (status, bytes) = (reply.status, reply.body.len());
    drop(slot);
    let delivered = send(request, reply);
    let retries = if trace.retries.is_empty() {
        String::new()
    } else {
        format!(" retries=[{}]", trace.retries.join(", "))
    };
    let gone = if delivered { "" } else { " client-gone" };
    let line = format_args!(
        "req={id} {method} {path} status={status} attempts={}{retries} bytes={bytes} ms={}{gone}",
        trace.attempts,
        started.elapsed().as_millis()
    );
    crate::log::write(crate::log::Level::Info, line);
}

fn respond_to<'a>(
    state: &'a State,
    request: &mut tiny_http::Request,
    route: Route,
    query: Option<&str>,
    trace: &mut Trace,
    slot: &mut Option<InFlight<'a>>,
) -> Result<Reply, Error> {
    let config = &state.config;
    if let Some(key) = &config.proxy_key {
        if !presents_key(request, key) {
            return Err(Error::Unauthorized);
        }
    }
    let (api, rest) = match route {
        Route::Shielded(api, rest) => (Some(api), rest),
        Route::Forward(rest) => (None, rest),
        Route::Health | Route::NotFound => {
            let method = request.method().as_str().to_string();
            let path = request.url().split('?').next().unwrap_or("").to_string();
            return Err(Error::NotFound { method, path });
        }
    };
    let raw = read_body(request, config.limits.max_request_bytes)?;
    // Counted from here: a client still sending its body holds a thread, not a slot.
    let busy = |e| {
        crate::warn!("refused {} {}: {e}", request.method(), request.url());
        e
    };
    *slot = Some(InFlight::acquire(state).map_err(busy)?);
    let (body, wants_stream) = match api {
        Some(api) => shield::prepare(&raw, api, config.forced_model.as_deref())?,
        None => (raw, false),
    };
    let mut headers = forward_headers(request);
    if api.is_some() {
        headers.retain(|(name, _)| name != "content-type" && name != "accept");
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("accept".into(), "text/event-stream".into()));
    }
    let outgoing = Outgoing {
        method: request.method().as_str().to_string(),
        url: config.upstream.endpoint.url_for(&rest, api, query),
        headers,
        body,
        api,
    };
    let request = &*request;
    let client_gone = || request.client_gone();
    let shield = Shield { config, upstream: &state.upstream, client_gone: &client_gone };
    Ok(shield.run(&Job { outgoing, wants_stream }, trace))
}

/// Read the client's body, refusing more than `limit` bytes.
fn read_body(request: &mut tiny_http::Request, limit: u64) -> Result<Vec<u8>, Error> {
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(Error::RequestTooLarge { limit });
    }
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0).min(1 << 20));
    request
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::BadRequest(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > limit {
        return Err(Error::RequestTooLarge { limit });
    }
    Ok(body)
}

/// Client headers that must not travel upstream: hop-by-hop ones, those the HTTP client sets
/// itself, the client's own credentials (Codex sends a placeholder key), and
/// `accept-encoding` (the checker reads the stream's bytes, so they stay uncompressed).
const NOT_FORWARDED: [&str; 16] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "api-key",
    "accept-encoding",
    "expect",
    "x-api-key",
];

fn forward_headers(request: &tiny_http::Request) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
        .filter(|(name, _)| !NOT_FORWARDED.contains(&name.as_str()))
        .collect()
}

/// Whether the request carries the inbound key, as Bearer or api-key (constant-time compare).
fn presents_key(request: &tiny_http::Request, key: &str) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().trim().to_string())
    };
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    let offered = [bearer, header("api-key")];
    offered
        .iter()
        .flatten()
        .fold(false, |ok, candidate| ok | constant_time_eq(candidate.as_bytes(), key.as_bytes()))
}

/// Compare without an early exit, so timing does not reveal how much of a key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Write the reply in one piece; `false` if the client was gone (normal, logged quietly).
fn send(request: tiny_http::Request, reply: Reply) -> bool {
    let head_only = request.method() == &tiny_http::Method::Head;
    let asked_close = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("connection") && h.value.as_str().to_ascii_lowercase().contains("close"));
    let close = asked_close || *request.http_version() < tiny_http::HTTPVersion(1, 1);
    let pieces = reply.into_http(head_only, close, SystemTime::now());
    let mut writer = request.into_writer();
    let written = pieces.iter().try_for_each(|piece| writer.write_all(piece));
    match written.and_then(|()| writer.flush()) {
        Ok(()) => true,
        Err(e) => {
            crate::debug!("client went away before its answer was written: {e}");
            false
        }
    }
}

/// Wait for in-flight requests to finish, at most `SHUTDOWN_GRACE_SECONDS`.
fn drain(state: &State) {
    let grace = state.config.shutdown_grace;
    let deadline = Instant::now() + grace;
    let pending = state.active.load(Ordering::SeqCst);
    if pending > 0 {
        crate::info!("shutting down: waiting up to {}s for {pending} request(s)", grace.as_secs_f64());
    }
    while state.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let left = state.active.load(Ordering::SeqCst);
    if left > 0 {
        crate::warn!("shutdown grace over: {left} request(s) abandoned");
    }
    crate::info!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
