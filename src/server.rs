//! The server: tiny_http's accept loop (`accept.rs`) hands each connection to a pooled thread,
//! which runs `on_request` for each of its requests.
//!
//! This module owns what surrounds a request: the proxy's own pages (`local.rs`) answered on
//! the spot, the 503 once shutdown has begun, the auth brake's admission, the `MAX_CONCURRENT`
//! limit and each named key's `max=` (`keys.rs`), the request's `Slot` and its run through the shield, its metrics and log line, the
//! keepalive ticker, the banner and the graceful drain. It does not route (`route.rs`), read
//! the request (`inbound.rs`: key, body, headers), write to the client (`client.rs`, which it
//! hands every answer) or talk to the upstream (`shield.rs`, `upstream.rs`). A slow or retrying
//! request never blocks another: each connection has its own thread (a client sends its next
//! request on a connection only after the answer to the previous one).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::accept;
use crate::api::Api;
use crate::brake::Brake;
use crate::client::{self, Drained, Slot, Slots};
use crate::config::Config;
use crate::error::Error;
use crate::inbound::{self, Job};
use crate::keys::{self, Keys, Limiter, Permit, Store};
use crate::local;
use crate::metrics::{self, Metrics};
use crate::pool::Pool;
use crate::reply::Reply;
use crate::route::{self, Route};
use crate::shield::{Shield, Trace};
use crate::traceparent;
use crate::upstream::{Agent, Tail};

/// How often the main thread looks at the signal count.
const POLL: Duration = Duration::from_millis(50);

/// How often the keepalive ticker visits the open requests.
const TICK: Duration = Duration::from_millis(200);

/// How long the drain's last step comes back to requests that were being written when it
/// came to them: a keepalive event takes a moment; an answer to a slow client is left to its
/// own deadline (`client::Pace`), or to the process's exit.
const LAST_WRITES: Duration = Duration::from_secs(1);

/// Shared by every connection thread.
struct State {
    config: Arc<Config>,
    pool: Pool,
    upstream: Agent,
    in_flight: AtomicUsize,
    /// Requests received and not yet answered (what shutdown waits for).
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Set on the first SIGINT/SIGTERM/SIGHUP: requests still arriving get a 503.
    stopping: AtomicBool,
    /// Requests being worked on: keepalive events and shutdown answers go through them.
    slots: Slots,
    /// Set when the drain has answered every open request: the keepalive ticker stops.
    drained: AtomicBool,
    metrics: Metrics,
    /// Wrong inbound keys per peer (`AUTH_FAILURE_LIMIT`).
    brake: Brake,
    /// The named client keys in effect (`CLIENT_KEYS_FILE`).
    keys: Arc<Store>,
    /// Each named client's requests in flight (`max=`).
    limiter: Limiter,
    /// Reasoning items kept for chat clients' next tool-call turn (`REASONING_STORE_MB`).
    reasoning: crate::reasoning::Store,
}

/// Counts a request until its reply is written, however its handler ends.
struct Active<'a>(&'a State);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of the `MAX_CONCURRENT` slots, held from the moment the client's body is in until its
/// answer is written or its client is found gone (a client that does not read holds its
/// slot, its answer's memory and its thread until its write deadline); released however the
/// worker ends. A named client's place under its `max=` is held and released with it.
struct InFlight<'a> {
    state: &'a State,
    /// Released when the place is.
    _permit: Option<Permit<'a>>,
}

impl<'a> InFlight<'a> {
    /// A place for `job`: first under its client's `max=` (429 past it), then under
    /// `MAX_CONCURRENT` (503 past it).
    fn acquire(state: &'a State, job: &Job, keys: Option<&Keys>) -> Result<InFlight<'a>, Error> {
        let permit = match &job.client {
            Some(name) => Some(state.limiter.acquire(name, keys.and_then(|k| k.max(name)))?),
            None => None,
        };
        let limit = state.config.limits.max_concurrent;
        if state.in_flight.fetch_add(1, Ordering::SeqCst) >= limit {
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Busy { limit });
        }
        Ok(InFlight { state, _permit: permit })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve until the first signal, then drain: in-flight requests get up to the grace period
/// (a second signal ends it at once), and whatever is still open then is answered with a 503
/// (or an in-stream error) before the process ends.
pub fn serve(config: Arc<Config>, keys: Arc<Store>, signals: Arc<AtomicUsize>) -> Result<(), Error> {
    let upstream = Agent::new(&config)?;
    let pool = Pool::new(&config);
    let (in_flight, active, next_id) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicU64::new(1));
    let (stopping, slots, drained) = (AtomicBool::new(false), Slots::default(), AtomicBool::new(false));
    let metrics = Metrics::new(config.upstreams.len());
    let brake = Brake::new(if config.has_keys() { config.limits.auth_failure_limit } else { 0 });
    let config_reasoning = config.reasoning;
    let state = Arc::new(State {
        config,
        pool,
        upstream,
        in_flight,
        active,
        next_id,
        stopping,
        slots,
        drained,
        metrics,
        brake,
        keys,
        limiter: Limiter::default(),
        reasoning: crate::reasoning::Store::new(config_reasoning),
    });
    let shared = Arc::clone(&state);
    let server = accept::listen(&state.config, move |request| on_request(&shared, request))?;
    banner(&state.config, &server.server_addr().to_string());
    if state.keys.path().is_some() {
        keys::watch(Arc::clone(&state.keys));
    }
    if state.config.keepalive.is_some() {
        let ticking = Arc::clone(&state);
        thread::spawn(move || keepalive_ticker(&ticking));
    }
    // A listener that is gone ends the process (non-zero, after the drain): a supervisor
    // restarts it, where a process without a listener would live on and exit 0.
    let mut watch = accept::Watch::new(&state.config);
    let mut ended = Ok(());
    while signals.load(Ordering::SeqCst) == 0 && ended.is_ok() {
        thread::sleep(POLL);
        ended = watch.check(&server);
    }
    if let Err(e) = &ended {
        crate::error!("{e}; finishing the requests in flight, then exiting");
    }
    state.stopping.store(true, Ordering::SeqCst);
    drain(&state, &signals);
    drop(server);
    ended
}

/// Visit the open requests and send the keepalive events that are due, until the drain has
/// answered them all (a client waiting through the drain keeps hearing from the proxy).
fn keepalive_ticker(state: &State) {
    while !state.drained.load(Ordering::SeqCst) {
        thread::sleep(TICK);
        let now = Instant::now();
        for slot in state.slots.all() {
            slot.tick(now);
        }
    }
}

fn banner(config: &Config, bound: &str) {
    let mut lines = vec![format!("codex-shield {} listening on http://{bound}", env!("CARGO_PKG_VERSION"))];
    for t in &config.upstreams {
        let model = t.model.as_deref().unwrap_or("client's choice");
        lines.push(format!(
            "  upstream {}: {} (auth: {}, api: {}, model: {model})",
            t.number,
            t.endpoint.display(),
            auth_name(t),
            t.api.name()
        ));
    }
    if config.upstreams.len() > 1 {
        let sticky = config.routing == crate::config::Routing::RoundRobin && config.sticky_sessions;
        let sticky = if sticky { ", sticky sessions" } else { "" };
        lines.push(format!("  routing: {:?}{sticky}", config.routing).to_lowercase());
    }
    let r = &config.retry;
    lines.push(format!(
        "  retries: {} attempts, backoff from {}s to {}s, deadline {}s, idle timeout {}s",
        r.attempts,
        r.base.as_secs_f64(),
        r.max.as_secs_f64(),
        r.deadline.as_secs_f64(),
        config.network.idle_timeout.as_secs_f64()
    ));
    let l = &config.limits;
    lines.push(format!(
        "  limits: MAX_CONCURRENT {}, descriptors {}; request heads within {}s, idle connections {}s",
        l.room.describe_concurrency(),
        l.room.describe_limit(),
        l.header_timeout.as_secs_f64(),
        l.client_idle_timeout.as_secs_f64()
    ));
    if let Some(warning) = l.room.warning() {
        lines.push(format!("WARNING: {warning}"));
    }
    if let Some(every) = config.keepalive {
        lines.push(format!("  keepalive: every {}s for streaming Responses clients", every.as_secs_f64()));
    }
    if let Some(path) = &config.keys_file {
        lines.push(format!("  client keys: {} (re-read when it changes)", path.display()));
    }
    if !config.is_loopback() && !config.has_keys() {
        lines.push(format!(
            "WARNING: listening on {bound}, reachable from other machines, without PROXY_API_KEY: \
             anyone who can connect spends your upstream key. Set PROXY_API_KEY or HOST=127.0.0.1."
        ));
    }
    for line in lines {
        crate::log::raw(&line);
    }
}

fn auth_name(t: &crate::config::Upstream) -> &'static str {
    match (&t.key, t.auth) {
        (None, _) => "none",
        (Some(_), route::Auth::ApiKey) => "api-key header",
        (Some(_), route::Auth::Bearer) => "Authorization: Bearer",
    }
}

/// Answer `/healthz`, `/metrics` and `/status` on the spot (they never count against
/// `MAX_CONCURRENT`, so a busy proxy still looks alive, and write no log line); handle
/// anything else.
fn on_request(state: &State, request: tiny_http::Request) {
    let path = request.url().split('?').next().unwrap_or("");
    if let Some(page) = local::route(request.method().as_str(), path) {
        let reply = local_page(state, page, &request);
        client::send(request, stamped(reply, &traceparent::Context::fresh()), state.config.pace);
        return;
    }
    let route = route::route(request.method().as_str(), path);
    if state.stopping.load(Ordering::SeqCst) {
        let reply = stamped(Reply::error(&Error::ShuttingDown), &traceparent::Context::fresh());
        client::send(request, reply, state.config.pace);
        return;
    }
    state.active.fetch_add(1, Ordering::SeqCst);
    let _active = Active(state);
    handle(state, request, route);
}

// Out of line: the pages' frames (the status page's) would otherwise be part of every
// request's stack, resident for each connection thread's life (docs/limits.md).
#[inline(never)]
fn local_page(state: &State, page: local::Page, request: &tiny_http::Request) -> Reply {
    let in_flight = state.in_flight.load(Ordering::Relaxed);
    let gauges = metrics::Gauges { in_flight, max_concurrent: state.config.limits.max_concurrent };
    let upstreams = upstream_health(state);
    let keys = state.keys.current();
    let clients = client_gauges(state, keys.as_deref());
    let ctx = local::Context {
        config: &state.config,
        metrics: &state.metrics,
        gauges,
        draining: state.stopping.load(Ordering::SeqCst),
        open_requests: state.active.load(Ordering::Relaxed),
        upstreams: &upstreams,
        keys: keys.as_deref(),
        clients: &clients,
    };
    local::answer(page, &inbound::Credentials::of(request), &ctx)
}

/// Each named client's requests in flight and `max=`: the names of the file in effect, and
/// those of requests still running under a name since removed.
fn client_gauges(state: &State, keys: Option<&Keys>) -> Vec<metrics::ClientGauge> {
    let in_flight = state.limiter.in_flight();
    let count = |name: &str| in_flight.iter().find(|(n, _)| &**n == name).map_or(0, |(_, c)| *c);
    let entries = keys.map_or(&[][..], |k| &k.entries[..]);
    let mut gauges: Vec<metrics::ClientGauge> = entries
        .iter()
        .map(|e| metrics::ClientGauge { name: Arc::clone(&e.name), in_flight: count(&e.name), limit: e.max })
        .collect();
    for (name, n) in &in_flight {
        if !gauges.iter().any(|g| g.name == *name) {
            gauges.push(metrics::ClientGauge { name: Arc::clone(name), in_flight: *n, limit: None });
        }
    }
    gauges
}

/// How each upstream is doing, for `/metrics` and `/status`, from the pool's health table.
fn upstream_health(state: &State) -> Vec<metrics::UpstreamHealth> {
    let now = Instant::now();
    let health = state.pool.snapshot();
    state
        .pool
        .targets
        .iter()
        .zip(health)
        .map(|(t, h)| metrics::UpstreamHealth {
            number: t.number,
            endpoint: t.endpoint.display(),
            cooling_down: h.until.filter(|&u| u > now).map(|u| u - now),
        })
        .collect()
}

/// One request, start to finish, with its log line. The in-flight slot is released once the
/// answer is written (or the client is found gone); a client's next request on the same
/// connection is read only after that, so it never finds its own finished request counted.
fn handle(state: &State, mut request: tiny_http::Request, route: Route) {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.clone(), None),
    };
    let incoming =
        request.headers().iter().find(|h| h.field.equiv(traceparent::HEADER)).map(|h| h.value.as_str());
    let context = traceparent::Context::new(incoming, traceparent::random);
    let mut trace = Trace { context, ..Trace::default() };
    let kind = metrics::RouteKind::of(&route);
    let peer = request.remote_addr().map(|a| a.ip());
    let keys = state.keys.current();
    let job = state
        .brake
        .admit(peer)
        .and_then(|()| inbound::job(&state.config, keys.as_deref(), &mut request, route, query.as_deref()));
    let client = job.as_ref().ok().and_then(|job| job.client.clone());
    // A peer trying keys gets one line per window, not one per try (brake.rs).
    let logged = match &job {
        Err(Error::Unauthorized) => state.brake.failed(peer),
        Err(Error::Braked { .. }) => false,
        _ => true,
    };
    // Counted from here: a client still sending its body holds a thread, not a slot.
    let ready = job.and_then(|job| Ok((InFlight::acquire(state, &job, keys.as_deref())?, job)));
    let mut tail = None;
    let (status, bytes, delivered) = match ready {
        Ok((in_flight, job)) => run(state, id, request, &job, in_flight, &mut trace, &mut tail),
        Err(e) => {
            if let Error::Busy { .. } = e {
                state.metrics.busy();
                crate::warn!("refused {method} {path}: {e}");
            }
            if let (Error::ClientLimit { .. }, Some(name)) = (&e, &client) {
                state.metrics.client_limited(name);
            }
            let reply = stamped(Reply::error(&e), &context);
            let (status, bytes) = (reply.status, reply.body.len());
            (status, bytes, client::send(request, reply, state.config.pace))
        }
    };
    let duration = started.elapsed();
    let tally = trace.tally;
    state.metrics.request_done(&metrics::Done { route: kind, status, bytes, duration, tally, delivered });
    state.metrics.client_done(client.as_deref(), status);
    if logged {
        crate::log::request(&crate::log::RequestLine {
            id,
            method: &method,
            path: &path,
            client: client.as_deref(),
            status,
            attempts: trace.attempts,
            upstream: trace.upstream,
            retries: &trace.retries(),
            bytes,
            ms: duration.as_millis(),
            client_gone: !delivered,
            rid: &context.request_id(),
            trace: &context.trace_id(),
            upstream_rid: trace.upstream_rid.as_deref(),
            tokens: trace.tokens,
            discarded_tokens: trace.discarded_tokens,
        });
    }
    // The answer is out: the rest of its upstream body, read now, lets the connection be reused.
    if let Some(tail) = tail {
        tail.finish();
    }
}

/// An answer the proxy writes without a Slot, with its request id.
fn stamped(mut reply: Reply, context: &traceparent::Context) -> Reply {
    traceparent::stamp(&mut reply.headers, &context.request_id());
    reply
}

/// Run a job whose body is in: the shield's loop, then the one answer through its slot.
/// Returns the status and size of the answer and whether it reached the client.
fn run(
    state: &State,
    id: u64,
    request: tiny_http::Request,
    job: &Job,
    in_flight: InFlight,
    trace: &mut Trace,
    tail: &mut Option<Tail>,
) -> (u16, usize, bool) {
    let streams = job.api == Some(Api::Responses) && job.wants_stream;
    let http11 = *request.http_version() >= tiny_http::HTTPVersion(1, 1);
    let options = client::Options {
        keepalive: state.config.keepalive.filter(|_| streams && http11),
        codex: job.codex,
        progress: state.config.codex_progress,
        pace: state.config.pace,
        trace: trace.context,
    };
    let slot = Slot::new(request, options);
    state.slots.insert(id, Arc::clone(&slot));
    let shield = Shield {
        config: &state.config,
        pool: &state.pool,
        upstream: &state.upstream,
        metrics: &state.metrics,
        reasoning: &state.reasoning,
        caller: &*slot,
    };
    let served = shield.run(job, trace);
    let reply = served.reply;
    *tail = served.tail;
    trace.upstream_rid =
        reply.headers.iter().find(|(n, _)| n == traceparent::REQUEST_ID).map(|(_, v)| v.clone());
    let (status, bytes) = (reply.status, reply.body.len());
    let delivered = slot.finish(reply);
    drop(in_flight);
    state.slots.remove(id);
    (status, bytes, delivered)
}

/// Wait for in-flight requests to finish, at most `SHUTDOWN_GRACE_SECONDS` or until a second
/// signal; then answer every request still open with a 503 (an in-stream error if its head
/// is already out) so that none is dropped without an answer. It never waits for a write in
/// progress: an answer still being written to a slow client when the drain ends is cut by the
/// process's exit (its client sees the connection close before the end of the answer).
fn drain(state: &State, signals: &AtomicUsize) {
    let grace = state.config.shutdown_grace;
    let deadline = Instant::now() + grace;
    let pending = state.active.load(Ordering::SeqCst);
    if pending > 0 {
        crate::info!(
            "shutting down: waiting up to {}s for {pending} request(s); a second signal stops the wait",
            grace.as_secs_f64()
        );
    }
    while state.active.load(Ordering::SeqCst) > 0
        && Instant::now() < deadline
        && signals.load(Ordering::SeqCst) < 2
    {
        thread::sleep(Duration::from_millis(10));
    }
    let open = state.slots.all();
    if !open.is_empty() {
        crate::warn!("shutting down: answering {} open request(s) with 503 proxy_shutting_down", open.len());
    }
    let busy = answer_open(open, Instant::now() + LAST_WRITES);
    if busy > 0 {
        crate::warn!(
            "shutting down: {busy} answer(s) still being written to slow clients end with the process"
        );
    }
    state.drained.store(true, Ordering::SeqCst);
    crate::info!("stopped");
}

/// Answer each open request with a 503 (or an in-stream error), coming back until `until` to
/// those being written at the time; returns how many were still being written then.
fn answer_open(mut open: Vec<Arc<Slot>>, until: Instant) -> usize {
    loop {
        open.retain(|slot| slot.finish_unless_busy(Reply::error(&Error::ShuttingDown)) == Drained::Busy);
        if open.is_empty() || Instant::now() >= until {
            return open.len();
        }
        thread::sleep(Duration::from_millis(10));
    }
}
