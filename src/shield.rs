//! The main loop: attempt, check, decide, wait, attempt again; then build the client's reply.
//!
//! `prepare` turns the client's body into the upstream body (stream forced on, model forced if
//! configured). `Shield::run` is the one labelled loop of the program: it asks `upstream.rs`
//! for an attempt, `retry.rs` for a decision, and sleeps between attempts. What the client
//! receives is decided in `deliver` and `reply.rs`; no bytes reach the client before the loop
//! has a complete answer or has given up.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::assemble;
use crate::check::Api;
use crate::config::Config;
use crate::error::Error;
use crate::metrics::{self, Metrics, Tally};
use crate::reply::Reply;
use crate::retry::{self, Decision};
use crate::upstream::{Answer, Outgoing, Upstream};

/// The work of one client request.
pub struct Job {
    pub outgoing: Outgoing,
    /// The client asked for a stream (`"stream": true`); otherwise it gets one JSON object.
    pub wants_stream: bool,
}

/// What happened on the way, for the request's log line.
#[derive(Debug, Default)]
pub struct Trace {
    pub attempts: u32,
    /// One entry per retried failure: "429 +1.00s", "cut@1234B +2.10s".
    pub retries: Vec<String>,
    /// The same story for the metrics and `/status`, without allocation.
    pub tally: Tally,
}

/// The upstream body for a client body: `stream: true`, the forced model, and (for a
/// non-streaming chat client) `stream_options.include_usage` so its usage can be returned.
/// Returns the body and whether the client itself asked for a stream.
pub fn prepare(body: &[u8], api: Api, forced_model: Option<&str>) -> Result<(Vec<u8>, bool), Error> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(Error::BadRequest("the body must be a JSON object".into()));
    };
    let wants_stream = object.get("stream") == Some(&Value::Bool(true));
    object.insert("stream".into(), Value::Bool(true));
    if let Some(model) = forced_model {
        object.insert("model".into(), Value::String(model.into()));
    }
    if api == Api::Chat && !wants_stream {
        let options = object.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let body = serde_json::to_vec(&value).map_err(|e| Error::BadRequest(e.to_string()))?;
    Ok((body, wants_stream))
}

pub struct Shield<'a> {
    pub config: &'a Config,
    pub upstream: &'a Upstream,
    pub metrics: &'a Metrics,
    /// Whether the client has hung up (then there is nobody to retry for).
    pub client_gone: &'a dyn Fn() -> bool,
}

/// Longest sleep between two looks at `client_gone`.
const GONE_POLL: Duration = Duration::from_millis(100);

impl Shield<'_> {
    /// Attempt until a complete answer, a final upstream answer, or the retry budget is spent.
    pub fn run(&self, job: &Job, trace: &mut Trace) -> Reply {
        let started = Instant::now();
        'attempts: loop {
            trace.attempts += 1;
            let attempt_started = Instant::now();
            let result = self.upstream.attempt(&job.outgoing);
            let outcome = metrics::outcome_of(&result);
            self.metrics.attempt(&mut trace.tally, 1, outcome, attempt_started.elapsed());
            let err = match result {
                Ok(answer) => return deliver(answer, job),
                Err(err) => err,
            };
            let elapsed = started.elapsed();
            match retry::decide(&err, trace.attempts, elapsed, &self.config.retry, jitter()) {
                Decision::Retry(wait) => {
                    self.metrics.retry(&mut trace.tally, outcome, wait);
                    trace.retries.push(format!("{} +{:.2}s", err.label(), wait.as_secs_f64()));
                    crate::debug!(
                        "attempt {} failed: {err}; retrying in {:.2}s",
                        trace.attempts,
                        wait.as_secs_f64()
                    );
                    if !self.sleep_unless_gone(wait) {
                        return Reply::error(&Error::ClientGone);
                    }
                    continue 'attempts;
                }
                Decision::Deliver => return pass_on(err),
                Decision::GiveUp => {
                    let attempts = trace.attempts;
                    return Reply::error(&Error::Exhausted { attempts, elapsed, last: Box::new(err) });
                }
            }
        }
    }

    /// Sleep `wait`, waking early (`false`) if the client hangs up meanwhile.
    fn sleep_unless_gone(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            if (self.client_gone)() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(GONE_POLL));
        }
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

/// The client's reply for a complete answer: the stream as received, or the JSON it asked for.
fn deliver(answer: Answer, job: &Job) -> Reply {
    let mut headers = answer.headers;
    let api = job.outgoing.api.filter(|_| answer.checked);
    let Some(api) = api else {
        let content_type = answer.content_type.unwrap_or_else(|| "application/octet-stream".into());
        return Reply { status: answer.status, content_type, headers, body: answer.body };
    };
    if job.wants_stream {
        headers.push(("cache-control".into(), "no-cache".into()));
        let content_type = "text/event-stream; charset=utf-8".into();
        return Reply { status: 200, content_type, headers, body: answer.body };
    }
    if let Some(e) = &answer.final_error {
        return Reply::stream_error(e);
    }
    let value = match api {
        Api::Responses => assemble::responses(&answer.body),
        Api::Chat => Some(assemble::chat(&answer.body)),
    };
    let mut reply = match value {
        Some(v) => Reply::json(200, &v),
        None => Reply::error(&Error::Truncated {
            received: answer.body.len(),
            reason: "the terminal event carries no response object".into(),
        }),
    };
    reply.headers = headers;
    reply
}

/// A number in `[0, 1)` from the standard library's per-instance random hash keys.
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(body: &str, api: Api, model: Option<&str>) -> Result<(String, bool), String> {
        prepare(body.as_bytes(), api, model)
            .map(|(b, s)| (String::from_utf8(b).unwrap(), s))
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
                Ok((r#"{"model":"a","messages":[],"stream":true}"#, true)),
            ),
            ("[1,2]", Api::Responses, None, Err("invalid request: the body must be a JSON object")),
            ("{\"model\":", Api::Responses, None, Err("invalid request: the body is not valid JSON")),
            ("", Api::Chat, None, Err("invalid request: the body is not valid JSON")),
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
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
