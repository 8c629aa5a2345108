//! The main loop: choose an upstream, attempt, check, decide, wait, attempt again; then build
//! the client's reply.
//!
//! A `Job` (`inbound.rs` makes it) is what the client asked for, free of any endpoint. Each
//! attempt resolves it against the upstream the pool chooses (URL, auth header, model, and the
//! request translated when a Responses client meets a chat-only upstream or a chat client a
//! responses-only one, with the reasoning kept for it, `reasoning.rs`), asks `upstream.rs`
//! to read the whole answer, has `failure.rs` judge a failure once, tells the pool, and waits
//! what `retry.rs` and the pool say. The loop sleeps only when no upstream is ready. What the
//! client receives is decided in `deliver` and `reply.rs`; no byte of an answer reaches the
//! client before the loop has a complete one or has given up (keepalive events, `client.rs`,
//! carry no answer).

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::api::{Api, Exchange};
use crate::assemble;
use crate::config::{Config, Upstream};
use crate::error::{Error, Outcome, StreamError};
use crate::failure::{self, Fate, Origin};
use crate::fold::{self, Keep};
use crate::inbound::{Body, Job};
use crate::memory;
use crate::metrics::{Metrics, Tally};
use crate::object::{Echo, Object};
use crate::pool::{Choice, Pool, Report};
use crate::reasoning;
use crate::reply::Reply;
use crate::retry;
use crate::route::Auth;
use crate::session;
use crate::traceparent;
use crate::translate;
use crate::translate::{chat_answer, chat_request};
use crate::upstream::{Agent, Answer, Outgoing, Tail};
use crate::usage::{Spent, Usage};
use crate::usage_chunk;

/// A job resolved for one upstream: what to send, and how to read the answer back.
struct Prepared {
    outgoing: Outgoing,
    exchange: Option<Exchange>,
    /// For a translated request: how chat tool names map back to the client's tools.
    tools: Option<translate::ToolMap>,
    /// For a chat request on a responses-only upstream: its tool-call turns whose reasoning
    /// was put back, and those without (counted once, for the attempt that answers).
    recalled: (usize, usize),
}

/// The upstream body of a shielded request on `exchange`: translated if the APIs differ,
/// `stream: true`, the forced model, and `stream_options.include_usage` on every chat request
/// (the answer's tokens are counted; a non-streaming client's `chat.completion` carries them;
/// a streaming client that did not ask has the usage chunk cut, `usage_chunk.rs`).
///
/// The client's members travel as they came (key order, spacing, escapes); only `stream`,
/// `model` and `stream_options` are written anew. No copy of the request is made but the
/// body itself (and, translated, the chat request it is written from). A translated request
/// keeps its `prompt_cache_key` when `cache_key` says the chat upstream takes it.
pub fn upstream_body(
    object: &Object,
    exchange: Exchange,
    model: Option<&str>,
    cache_key: bool,
) -> Result<(Vec<u8>, Option<translate::ToolMap>), Error> {
    match (exchange.translated(), exchange.client) {
        (true, Api::Responses) => {
            let (body, tools) =
                translate::request::chat_body(object, model, cache_key).map_err(Error::BadRequest)?;
            return Ok((body, Some(tools)));
        }
        (true, Api::Chat) => {
            let options = chat_request::Options::default();
            let translated = chat_request::responses_body(object, model, options, &mut |_| None);
            return Ok((translated.map_err(refused)?.body, None));
        }
        (false, _) => {}
    }
    let model = model.map(|m| serde_json::to_vec(m).unwrap_or_default());
    let mut overrides: Vec<(&str, &[u8])> = vec![("stream", b"true")];
    if let Some(model) = &model {
        overrides.push(("model", model));
    }
    let options = match exchange.upstream {
        Api::Chat => usage_options(object).map(|o| serde_json::to_vec(&o).unwrap_or_default()),
        Api::Responses => None,
    };
    if let Some(options) = &options {
        overrides.push(("stream_options", options));
    }
    Ok((object.to_vec(&overrides), None))
}

/// The `stream_options` the proxy sends a chat upstream to learn what an answer cost when the
/// client did not ask (the client's other members kept); `None` when it asked, or when its
/// `stream_options` is not an object (left as it is). The one place that decides it: what is
/// sent here, and whether the usage chunk is cut from the answer (`usage_unasked`).
fn usage_options(object: &Object) -> Option<Map<String, Value>> {
    if chat_request::include_usage(object) {
        return None;
    }
    let mut options = match object.value("stream_options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => return None,
    };
    options.insert("include_usage".into(), Value::Bool(true));
    Some(options)
}

/// A chat request member with no Responses form, as the client's 400.
fn refused(r: chat_request::Refusal) -> Error {
    Error::Unsupported { param: r.param, reason: r.reason }
}

/// A chat request for a responses-only upstream, with the reasoning kept for its tool-call
/// turns put back, and how many were and were not.
fn chat_on_responses(
    object: &Object,
    model: Option<&str>,
    shield: &Shield,
) -> Result<(Vec<u8>, (usize, usize)), Error> {
    let store = shield.reasoning;
    let options =
        chat_request::Options { encrypted: store.on(), summaries: shield.config.reasoning.summaries };
    let now = Instant::now();
    let recall = &mut |ids: &[&str]| store.recall(ids, now);
    let translated = chat_request::responses_body(object, model, options, recall).map_err(refused)?;
    let recalled = if store.on() { (translated.recalled, translated.missed) } else { (0, 0) };
    Ok((translated.body, recalled))
}

/// Resolve `job` for `target`: URL, headers with the upstream's auth, body.
fn prepare(job: &Job, target: &Upstream, shield: &Shield) -> Result<Prepared, Error> {
    let exchange = job.api.map(|api| target.api.exchange(api));
    let mut recalled = (0, 0);
    let (body, tools) = match (&job.body, exchange) {
        (Body::Json(object), Some(x)) if x.translated() && x.client == Api::Chat => {
            let (body, counts) = chat_on_responses(object, target.model.as_deref(), shield)?;
            recalled = counts;
            (body, None)
        }
        (Body::Json(object), Some(x)) => {
            let cache_key = target.endpoint.takes_prompt_cache_key();
            upstream_body(object, x, target.model.as_deref(), cache_key)?
        }
        (Body::Json(object), None) => (object.to_vec(&[]), None),
        (Body::Raw(bytes), _) => (bytes.clone(), None),
    };
    let rest = exchange.map_or(job.rest.as_str(), |x| x.upstream.suffix());
    let mut headers = job.headers.clone();
    if exchange.is_some() {
        headers.retain(|(name, _)| name != "content-type" && name != "accept");
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("accept".into(), "text/event-stream".into()));
    }
    if let Some(key) = &target.key {
        headers.push(match target.auth {
            Auth::ApiKey => ("api-key".into(), key.clone()),
            Auth::Bearer => ("authorization".into(), format!("Bearer {key}")),
        });
    }
    let upstream_api = exchange.map(|x| x.upstream);
    // A Responses client's answer is made from the chat check's fold: it keeps everything.
    let keep = match exchange {
        Some(x) if x.translated() && x.client == Api::Responses => Keep::Everything,
        _ => Keep::Shape,
    };
    let outgoing = Outgoing {
        method: job.method.clone(),
        url: target.endpoint.url_for(rest, upstream_api, job.query.as_deref()),
        headers,
        body,
        api: upstream_api,
        keep,
    };
    Ok(Prepared { outgoing, exchange, tools, recalled })
}

/// What happened on the way, for the request's log line and the metrics.
#[derive(Debug, Default)]
pub struct Trace {
    pub attempts: u32,
    /// One entry per failed attempt: its upstream number, what it came to, and the wait
    /// before the next attempt.
    pub failures: Vec<(usize, Outcome, Duration)>,
    /// The upstream that gave the final answer.
    pub upstream: Option<usize>,
    /// That upstream's own `x-request-id`, if it sent one.
    pub upstream_rid: Option<String>,
    /// The request's W3C trace and its id: each attempt is a new span of the trace.
    pub context: traceparent::Context,
    /// The same story for the metrics and `/status`, without allocation.
    pub tally: Tally,
    /// What the upstreams reported the answer the client got cost, if they did.
    pub tokens: Option<Usage>,
    /// What they reported the attempts the shield discarded cost, if they did.
    pub discarded_tokens: Option<Usage>,
}

impl Trace {
    /// `["u1 429 +1.00s", "u2 cut +0.00s"]`: each failed attempt's upstream, outcome and the
    /// wait that followed.
    pub fn retries(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(n, outcome, wait)| format!("u{n} {} +{:.2}s", outcome.label(), wait.as_secs_f64()))
            .collect()
    }
}

/// Whoever is waiting for the answer, as the loop sees it (`client::Slot` is the one): whether
/// it is still there, and what it may be shown while the shield works. Not the client side
/// itself, which is `client.rs`.
pub trait Caller {
    /// Whether the client has hung up (then there is nobody to retry for).
    fn gone(&self) -> bool;
    /// What the shield is doing now, for a client that can show it without it entering the
    /// answer (a Codex status line); ignored by default.
    fn progress(&self, _text: &str) {}
}

/// Everything an attempt needs, shared by all requests.
pub struct Shield<'a> {
    pub config: &'a Config,
    pub pool: &'a Pool,
    pub upstream: &'a Agent,
    pub metrics: &'a Metrics,
    /// Reasoning kept for chat clients on responses-only upstreams.
    pub reasoning: &'a reasoning::Store,
    pub caller: &'a dyn Caller,
}

/// What the loop ends with: the client's reply, and the unread rest of the upstream body it
/// came from, to be finished once the reply is written (`Tail::finish`).
#[derive(Debug)]
pub struct Served {
    pub reply: Reply,
    pub tail: Option<Tail>,
}

impl From<Reply> for Served {
    fn from(reply: Reply) -> Served {
        Served { reply, tail: None }
    }
}

/// Longest sleep between two looks at the client and the pool.
const POLL: Duration = Duration::from_millis(100);

impl Shield<'_> {
    /// Attempt until a complete answer, a final upstream answer, or the retry budget is spent.
    pub fn run(&self, job: &Job, trace: &mut Trace) -> Served {
        let started = Instant::now();
        let session = match &job.body {
            Body::Json(object) => session::key(Some(object), &job.headers),
            Body::Raw(_) => session::key(None, &job.headers),
        };
        let order = self.pool.order(session);
        let mut prepared: Vec<Option<Prepared>> = (0..self.pool.targets.len()).map(|_| None).collect();
        let mut last: Option<Error> = None;
        // This request's own rests: after a failure it waits its backoff (or the upstream's
        // hint) before it tries that upstream again, whatever other requests do.
        let mut own_rests: Vec<Option<Instant>> = vec![None; self.pool.targets.len()];
        'attempts: loop {
            let i = match self.pool.choose(&order, &own_rests) {
                Choice::Go(i) => i,
                Choice::Wait(wait) => {
                    let elapsed = started.elapsed();
                    let waits_past_deadline = elapsed + wait > self.config.retry.deadline;
                    if waits_past_deadline {
                        return self.give_up(job, trace, elapsed, last).into();
                    }
                    if !self.sleep_unless_gone(wait.min(POLL)) {
                        return Reply::error(&Error::ClientGone).into();
                    }
                    continue 'attempts;
                }
            };
            let target = &self.pool.targets[i];
            // Resolved once per upstream, kept between its attempts.
            let mut p = match prepared[i].take() {
                Some(p) => p,
                None => match prepare(job, target, self) {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        self.pool.record(i, Report::Neutral, Instant::now(), 0.0);
                        return Reply::error(&e).into();
                    }
                },
            };
            trace.attempts += 1;
            trace.upstream = Some(target.number);
            set_header(
                &mut p.outgoing.headers,
                traceparent::HEADER,
                trace.context.child(traceparent::random()),
            );
            let attempt_started = Instant::now();
            let answering = &mut || self.pool.answering(i, attempt_started);
            let (result, usage) = self.upstream.attempt(&p.outgoing, answering, &|| self.caller.gone());
            let err = match result {
                Ok(mut answer) => {
                    let outcome = answer.outcome();
                    self.metrics.attempt(&mut trace.tally, target.number, outcome, attempt_started.elapsed());
                    self.pool.record(i, Report::Healthy, attempt_started, 0.0);
                    let tail = answer.tail.take();
                    // The bodies prepared for the upstreams are sent or unused: freed before
                    // the answer is turned into the reply.
                    drop(prepared);
                    p.outgoing.body = Vec::new();
                    // A complete answer the client cannot be given (no memory to assemble
                    // it, not assemblable) is discarded: it cost all the same.
                    let (reply, spent) = match deliver(answer, job, p, self) {
                        Ok(reply) => (reply, Spent::Delivered),
                        Err(e) => (Reply::error(&e), Spent::Discarded),
                    };
                    self.spent(trace, target.number, job, usage, spent);
                    return Served { reply, tail };
                }
                Err(err) => err,
            };
            prepared[i] = Some(p);
            let failure = failure::judge(&err);
            let outcome = failure.outcome;
            self.metrics.attempt(&mut trace.tally, target.number, outcome, attempt_started.elapsed());
            let jitter = jitter();
            self.pool.record(i, Report::of(&failure), attempt_started, jitter);
            crate::debug!("attempt {} on upstream {} failed: {err}", trace.attempts, target.number);
            let fate = match failure.fate {
                Fate::Elsewhere if self.pool.has_alternative(i) => Fate::Retry { hint: None },
                Fate::Elsewhere => Fate::Deliver,
                other => other,
            };
            // A failed attempt's answer is never the client's (what a failure passes on, a
            // status or an error body, reports no usage): what it cost was discarded.
            self.spent(trace, target.number, job, usage, Spent::Discarded);
            let Fate::Retry { hint } = fate else {
                trace.failures.push((target.number, outcome, Duration::ZERO));
                // A client that left is nobody's failure to report as the upstream's.
                return match (failure.origin, fate) {
                    (Origin::Client, _) => Reply::error(&err),
                    (_, Fate::Deliver) => pass_on(err),
                    _ => self.give_up(job, trace, started.elapsed(), Some(err)),
                }
                .into();
            };
            let elapsed = started.elapsed();
            if !retry::may_continue(trace.attempts, elapsed, Duration::ZERO, &self.config.retry) {
                trace.failures.push((target.number, outcome, Duration::ZERO));
                return self.give_up(job, trace, elapsed, Some(err)).into();
            }
            let rest =
                retry::backoff(trace.attempts, &self.config.retry, jitter).max(hint.unwrap_or_default());
            own_rests[i] = Some(Instant::now() + rest);
            let wait = self.pool.wait_hint(&order, &own_rests);
            self.metrics.retry(&mut trace.tally, outcome, wait);
            let next = (trace.attempts + 1, self.config.retry.attempts);
            self.caller.progress(&progress_text(target.number, outcome, wait, next));
            trace.failures.push((target.number, outcome, wait));
            last = Some(err);
        }
    }

    /// The error for a request that cannot go on: the last failure, or, when it never got
    /// to try, why every upstream is resting. A Codex client gets it in the one form Codex
    /// prints verbatim instead of "exceeded retry limit".
    fn give_up(&self, job: &Job, trace: &Trace, elapsed: Duration, last: Option<Error>) -> Reply {
        let err = match last {
            Some(last) => Error::Exhausted { attempts: trace.attempts, elapsed, last: Box::new(last) },
            None => {
                let (reason, wait) = self.pool.resting();
                Error::Resting { reason, wait }
            }
        };
        if !job.codex {
            return Reply::error(&err);
        }
        crate::codex::give_up_reply(&format!("codex-shield: {err}"))
    }

    /// Count what an attempt on `upstream` cost, if its upstream said, as `spent`.
    fn spent(&self, trace: &mut Trace, upstream: usize, job: &Job, usage: Option<Usage>, spent: Spent) {
        let Some(usage) = usage else { return };
        self.metrics.tokens(upstream, job.client.as_ref(), usage, spent);
        let sum = match spent {
            Spent::Delivered => &mut trace.tokens,
            Spent::Discarded => &mut trace.discarded_tokens,
        };
        *sum.get_or_insert_default() += usage;
    }

    /// Sleep `wait` (at most `POLL`), unless the client has hung up: `false` if it has,
    /// before or during the sleep.
    fn sleep_unless_gone(&self, wait: Duration) -> bool {
        if self.caller.gone() {
            return false;
        }
        std::thread::sleep(wait);
        !self.caller.gone()
    }
}

/// The status line a Codex client is shown while the shield retries: "codex-shield: upstream 1
/// rate-limited (429); retrying in 12 s (attempt 3 of 10)".
pub fn progress_text(upstream: usize, outcome: Outcome, wait: Duration, (next, max): (u32, u32)) -> String {
    let what = match outcome {
        Outcome::RateLimited => "rate-limited (429)",
        Outcome::ServerError | Outcome::OtherStatus => "failed with a server error",
        Outcome::Connect => "could not be reached",
        Outcome::Cut => "cut the answer short",
        Outcome::Stall => "stalled",
        Outcome::InStream => "reported an error mid-answer",
        Outcome::Invalid => "sent something that is not an answer",
        Outcome::Ok | Outcome::Final | Outcome::TooLarge | Outcome::Abandoned => "failed",
    };
    let when = if wait < Duration::from_millis(500) {
        "now".to_string()
    } else {
        format!("in {} s", wait.as_secs_f64().round())
    };
    format!("codex-shield: upstream {upstream} {what}; retrying {when} (attempt {next} of {max})")
}

/// Set header `name` (lower-case) to `value`, replacing an earlier one.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    match headers.iter_mut().find(|(n, _)| n == name) {
        Some(header) => header.1 = value,
        None => headers.push((name.into(), value)),
    }
}

/// A final upstream answer, unchanged: its status, body and useful headers.
fn pass_on(err: Error) -> Reply {
    match err {
        Error::Status(r) => Reply {
            status: r.status,
            content_type: r.content_type.unwrap_or_else(|| "application/json".into()),
            headers: r.headers,
            body: r.body.into(),
        },
        Error::InStream(e) => Reply::stream_error(&e),
        other => Reply::error(&other),
    }
}

/// The client's reply for a complete answer: the stream as received, the JSON it asked for,
/// or, for a translated exchange, the Responses stream or object made from the chat answer
/// (the chat stream or `chat.completion` made from the Responses answer, for a chat client);
/// an `Err` when the complete answer cannot be made into it.
fn deliver(mut answer: Answer, job: &Job, p: Prepared, shield: &Shield) -> Result<Reply, Error> {
    let mut headers = std::mem::take(&mut answer.headers);
    let exchange = p.exchange.filter(|_| answer.checked);
    let Some(exchange) = exchange else {
        let content_type = answer.content_type.unwrap_or_else(|| "application/octet-stream".into());
        return Ok(Reply { status: answer.status, content_type, headers, body: answer.body });
    };
    // Made into another form, the answer is held a few times over for a moment.
    let cost = match (exchange.translated(), job.wants_stream) {
        (true, _) => memory::TRANSLATED_ANSWER_COST,
        (false, false) => memory::ASSEMBLED_ANSWER_COST,
        (false, true) => 0,
    };
    let len = answer.folded.as_ref().map_or(answer.body.len(), |f| f.len);
    let _work = memory::Hold::reserve(len * cost)?;
    match (exchange.translated(), exchange.client) {
        (true, Api::Responses) => return Ok(translated(answer, job, p, headers)),
        (true, Api::Chat) => return Ok(chat_translated(answer, job, shield, p.recalled, headers)),
        (false, _) => {}
    }
    if job.wants_stream {
        if exchange.upstream == Api::Chat && usage_unasked(job) {
            usage_chunk::cut(&mut answer.body);
        }
        headers.push(("cache-control".into(), "no-cache".into()));
        let content_type = "text/event-stream; charset=utf-8".into();
        return Ok(Reply { status: 200, content_type, headers, body: answer.body });
    }
    if let Some(e) = &answer.final_error {
        return Ok(Reply::stream_error(e));
    }
    let value = match exchange.upstream {
        Api::Responses => assemble::responses(&answer.body)
            .ok_or_else(|| "the terminal event carries no response object".to_string()),
        Api::Chat => assemble::chat(&answer.body).map(|chat| {
            note_repaired(chat.repaired);
            chat.completion
        }),
    };
    let mut reply = match value {
        Ok(v) => Reply::json(200, &v),
        Err(reason) => return Err(Error::Truncated { received: answer.body.len(), reason }),
    };
    reply.headers = headers;
    Ok(reply)
}

/// Whether the proxy asked a chat upstream for the usage the client did not ask for
/// (`usage_options`, as `upstream_body` sent it).
fn usage_unasked(job: &Job) -> bool {
    match &job.body {
        Body::Json(object) => usage_options(object).is_some(),
        Body::Raw(_) => false,
    }
}

/// A complete chat answer for a Responses client.
fn translated(answer: Answer, job: &Job, p: Prepared, mut headers: Vec<(String, String)>) -> Reply {
    let Body::Json(object) = &job.body else {
        return Reply::error(&Error::BadRequest("a translated request has a JSON body".into()));
    };
    let Answer { body: chat, folded, final_error, .. } = answer;
    // The check folded the answer as it was read (`Outgoing::keep`): it is not parsed again.
    let (folded, len) = match folded {
        Some(f) => {
            let f = *f;
            (f.answer, f.len)
        }
        None => (fold::fold(chat.chunks()), chat.len()),
    };
    drop(chat);
    let tools = p.tools.unwrap_or_default();
    let mut ids = translate::events::Ids::new(seed());
    // The `response` objects repeat the request's members (`input` aside): big ones (`tools`)
    // go into the output as the client sent them, without a `Value` of them (object.rs).
    let echo = Echo::new(object, &["input"], seed());
    let synthesis = translate::events::from_fold(folded, len, &tools, &echo.value, &mut ids);
    note_repaired(synthesis.repaired);
    drop(tools); // only the synthesis is needed from here
    if job.wants_stream {
        headers.push(("cache-control".into(), "no-cache".into()));
        let content_type = "text/event-stream; charset=utf-8".into();
        return Reply { status: 200, content_type, headers, body: echo.restore(synthesis.stream).into() };
    }
    let mut reply = match synthesis.status {
        translate::events::Status::Failed { code, message } => {
            let e = final_error.unwrap_or(StreamError {
                code: Some(code),
                kind: None,
                message,
                retryable: false,
                hint: None,
            });
            Reply::stream_error(&e)
        }
        _ => {
            let body = echo.restore(synthesis.object);
            Reply {
                status: 200,
                content_type: "application/json".into(),
                headers: Vec::new(),
                body: body.into(),
            }
        }
    };
    reply.headers = headers;
    reply
}

/// A complete Responses answer for a chat client; the turn's reasoning kept for its next one.
fn chat_translated(
    answer: Answer,
    job: &Job,
    shield: &Shield,
    (hits, misses): (usize, usize),
    mut headers: Vec<(String, String)>,
) -> Reply {
    shield.metrics.reasoning(hits, misses, 0);
    let Body::Json(object) = &job.body else {
        return Reply::error(&Error::BadRequest("a translated request has a JSON body".into()));
    };
    let Answer { body, final_error, .. } = answer;
    let pieces: Vec<&[u8]> = body.chunks().collect();
    let asked = chat_request::asked(object);
    let form = chat_answer::Form {
        stream: job.wants_stream,
        include_usage: asked.include_usage,
        summaries: shield.config.reasoning.summaries,
        stop: asked.stop,
    };
    let chat = chat_answer::to_chat(&pieces, form);
    drop(pieces);
    drop(body);
    if let Some((code, message)) = chat.failed {
        let e = final_error.unwrap_or(StreamError {
            code: Some(code),
            kind: None,
            message,
            retryable: false,
            hint: None,
        });
        return Reply::stream_error(&e);
    }
    if let Some(turn) = chat.reasoning.filter(|_| shield.reasoning.on()) {
        let evicted = shield.reasoning.put(turn, Instant::now());
        shield.metrics.reasoning(0, 0, evicted);
    }
    let content_type = match job.wants_stream {
        true => {
            headers.push(("cache-control".into(), "no-cache".into()));
            "text/event-stream; charset=utf-8"
        }
        false => "application/json",
    };
    Reply { status: 200, content_type: content_type.into(), headers, body: chat.body.into() }
}

/// Say in the log that a chat answer was read with lone surrogate escapes as U+FFFD.
fn note_repaired(count: usize) {
    if count > 0 {
        crate::warn!("the chat answer held {count} lone UTF-16 surrogate escape(s); each was read as U+FFFD");
    }
}

/// A number in `[0, 1)` from the standard library's per-instance random hash keys.
fn jitter() -> f64 {
    (seed() >> 11) as f64 / (1u64 << 53) as f64
}

/// 64 random bits (ids, jitter) without a random-number crate.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(body: &str, api: Api, model: Option<&str>) -> Result<(String, bool), String> {
        let (object, wants_stream) =
            crate::inbound::parse_body(body.as_bytes().to_vec()).map_err(|e| e.to_string())?;
        upstream_body(&object, Exchange::new(api, api), model, false)
            .map(|(b, _)| (String::from_utf8(b).unwrap(), wants_stream))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn prepare_forces_stream_and_model() {
        type Case<'a> = (&'a str, Api, Option<&'a str>, Result<(&'a str, bool), &'a str>);
        let cases: &[Case] = &[
            (
                r#"{"model":"a","input":"hi","stream":true}"#,
                Api::Responses,
                None,
                Ok((r#"{"model":"a","input":"hi","stream":true}"#, true)),
            ),
            (
                r#"{"model":"a","input":"hi"}"#,
                Api::Responses,
                Some("gpt-5"),
                Ok((r#"{"model":"gpt-5","input":"hi","stream":true}"#, false)),
            ),
            (
                r#"{"stream":false,"model":"a","temperature":0.7,"z":[1,{"b":null}]}"#,
                Api::Responses,
                None,
                Ok((r#"{"stream":true,"model":"a","temperature":0.7,"z":[1,{"b":null}]}"#, false)),
            ),
            (
                r#"{"model":"a","messages":[]}"#,
                Api::Chat,
                None,
                Ok((
                    r#"{"model":"a","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                    false,
                )),
            ),
            (
                r#"{"model":"a","messages":[],"stream":true}"#,
                Api::Chat,
                None,
                Ok((
                    r#"{"model":"a","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                    true,
                )),
            ),
            (
                // asked for: the client's own stream_options travel as written
                r#"{"stream":true,"messages":[],"stream_options":{ "include_usage" : true }}"#,
                Api::Chat,
                None,
                Ok((r#"{"stream":true,"messages":[],"stream_options":{ "include_usage" : true }}"#, true)),
            ),
            (
                r#"{"stream":true,"messages":[],"stream_options":null}"#,
                Api::Chat,
                None,
                Ok((r#"{"stream":true,"messages":[],"stream_options":{"include_usage":true}}"#, true)),
            ),
            (
                r#"{"stream":true,"messages":[],"stream_options":{"include_usage":false}}"#,
                Api::Chat,
                None,
                Ok((r#"{"stream":true,"messages":[],"stream_options":{"include_usage":true}}"#, true)),
            ),
            (
                // the client's values travel as sent: spacing, escapes, numbers as written
                r#"{"model":"a","input":[ {"role":"user","content":"caf\u00e9 \ud83d\ude00"} ],"n":1.0e2,"model":"b"}"#,
                Api::Responses,
                Some("gpt-5"),
                Ok((
                    r#"{"model":"gpt-5","input":[ {"role":"user","content":"caf\u00e9 \ud83d\ude00"} ],"n":1.0e2,"stream":true}"#,
                    false,
                )),
            ),
            (
                r#" {"stream" : true , "messages":[{"role":"user","content":"hi"}],"stream_options":{"x":1}} "#,
                Api::Chat,
                None,
                Ok((
                    r#"{"stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"x":1,"include_usage":true}}"#,
                    true,
                )),
            ),
            (
                r#"{"messages":[],"stream_options":{"x":1.50}}"#,
                Api::Chat,
                None,
                Ok((
                    r#"{"messages":[],"stream_options":{"x":1.5,"include_usage":true},"stream":true}"#,
                    false,
                )),
            ),
        ];
        for (body, api, model, expected) in cases {
            let got = prep(body, *api, *model);
            match (expected, &got) {
                (Ok((b, s)), Ok((gb, gs))) => assert_eq!((gb.as_str(), *gs), (*b, *s), "{body}"),
                (Err(prefix), Err(msg)) => assert!(msg.starts_with(prefix), "{msg:?} for {body}"),
                _ => panic!("{body}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn progress_lines() {
        let s = Duration::from_secs;
        let cases = [
            (
                1,
                Outcome::RateLimited,
                s(12),
                (3, 10),
                "upstream 1 rate-limited (429); retrying in 12 s (attempt 3 of 10)",
            ),
            (
                2,
                Outcome::Cut,
                Duration::ZERO,
                (2, 10),
                "upstream 2 cut the answer short; retrying now (attempt 2 of 10)",
            ),
            (
                1,
                Outcome::Connect,
                s(1),
                (4, 5),
                "upstream 1 could not be reached; retrying in 1 s (attempt 4 of 5)",
            ),
        ];
        for (n, outcome, wait, next, expected) in cases {
            assert_eq!(progress_text(n, outcome, wait, next), format!("codex-shield: {expected}"));
        }
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
