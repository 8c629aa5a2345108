//! What a failed attempt is, where it came from, and what may be done about it: one pure
//! function of the error (`judge`), computed once per failure, whose answer the loop
//! (`shield.rs`), the pool's health (`pool.rs`), the metrics and the log line all read.
//!
//! The facts are separate, as pingora keeps them: the `Outcome` (what it was: the log label
//! and metric), the `Origin` (who failed: the upstream, the client, the proxy), the `Fate`
//! (retry, try another upstream, deliver as it is, give up) and whether it concerns every
//! request on that upstream (then the pool rests it) or only this one. Every variant of
//! `Error` is listed: a new one does not compile until it is judged here. How a failure is
//! worded for the client is `reply.rs`; how long to wait is `retry.rs` and `pool.rs`.

use std::time::Duration;

use crate::error::{Error, Outcome, Rejection, StreamError};

/// Everything the request path needs to know about one failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failure {
    pub outcome: Outcome,
    pub origin: Origin,
    pub fate: Fate,
    /// It concerns every request on this upstream (a rate limit, a server error, no
    /// connection, an upstream's own retry hint), not only this one.
    pub shared: bool,
}

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Upstream,
    Client,
    /// The proxy itself: its configuration, or its own summary of other failures.
    Proxy,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Another attempt may succeed; the upstream asked to wait at least `hint`.
    Retry { hint: Option<Duration> },
    /// Final for this upstream alone (its key, deployment, quota, certificate): another
    /// upstream may answer; with none, deliver it.
    Elsewhere,
    /// The upstream's answer is final: hand it to the client unchanged.
    Deliver,
    /// Stop and report the failure.
    GiveUp,
}

/// HTTP statuses worth another attempt: timeouts, conflicts, rate limits, gateway and
/// overload errors (520-524 and 529 are common CDN and overload codes).
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429 | 500 | 502 | 503 | 504 | 520..=524 | 529)
}

/// The one judgement of a failure.
pub fn judge(err: &Error) -> Failure {
    let upstream = |outcome, fate| Failure { outcome, origin: Origin::Upstream, fate, shared: false };
    let retry = |outcome| upstream(outcome, Fate::Retry { hint: None });
    match err {
        Error::Status(r) => status(r),
        Error::InStream(e) => in_stream(e),
        Error::Connect(_) => Failure { shared: true, ..retry(Outcome::Connect) },
        Error::Truncated { .. } => retry(Outcome::Cut),
        Error::Stalled { .. } | Error::EventStall { .. } | Error::Dripping { .. } => retry(Outcome::Stall),
        Error::NotAnEventStream { .. } => retry(Outcome::Invalid),
        Error::Tls(_) => upstream(Outcome::Connect, Fate::Elsewhere),
        Error::HeadTooLarge { .. } => upstream(Outcome::Invalid, Fate::Elsewhere),
        Error::Redirect { .. } | Error::Encoded { .. } => upstream(Outcome::Invalid, Fate::GiveUp),
        Error::ResponseTooLarge { .. } | Error::EventTooLarge { .. } => {
            upstream(Outcome::TooLarge, Fate::GiveUp)
        }
        // The proxy's own memory budget, not the upstream's fault: nothing to retry now.
        Error::Overloaded { .. } => {
            Failure { outcome: Outcome::TooLarge, origin: Origin::Proxy, fate: Fate::GiveUp, shared: false }
        }
        Error::ClientGone => {
            Failure { outcome: Outcome::Abandoned, origin: Origin::Client, fate: Fate::GiveUp, shared: false }
        }
        // Not the failure of an attempt: nothing to retry.
        Error::RequestTooLarge { .. }
        | Error::BadRequest(_)
        | Error::Unsupported { .. }
        | Error::Unauthorized
        | Error::Braked { .. }
        | Error::NotFound { .. }
        | Error::UnsupportedEncoding(_)
        | Error::WebSocket => {
            Failure { outcome: Outcome::Final, origin: Origin::Client, fate: Fate::GiveUp, shared: false }
        }
        Error::Usage(_)
        | Error::Config { .. }
        | Error::Listen { .. }
        | Error::Setup(_)
        | Error::Busy { .. }
        | Error::ShuttingDown
        | Error::Resting { .. }
        | Error::Exhausted { .. } => {
            Failure { outcome: Outcome::Final, origin: Origin::Proxy, fate: Fate::GiveUp, shared: false }
        }
    }
}

/// An upstream's non-success status: its body is parsed once, here, for `insufficient_quota`.
fn status(r: &Rejection) -> Failure {
    let failure = |outcome, fate, shared| Failure { outcome, origin: Origin::Upstream, fate, shared };
    if r.quota_exhausted() || matches!(r.status, 401 | 403 | 404) {
        return failure(Outcome::Final, Fate::Elsewhere, false);
    }
    if !status_is_retryable(r.status) {
        return failure(Outcome::Final, Fate::Deliver, false);
    }
    let outcome = match r.status {
        429 => Outcome::RateLimited,
        500.. => Outcome::ServerError,
        _ => Outcome::OtherStatus,
    };
    failure(outcome, Fate::Retry { hint: r.hint }, true)
}

/// An error event: retryable or final as `check.rs` read its code; a hint makes it shared.
fn in_stream(e: &StreamError) -> Failure {
    let failure = |outcome, fate, shared| Failure { outcome, origin: Origin::Upstream, fate, shared };
    if e.retryable {
        return failure(Outcome::InStream, Fate::Retry { hint: e.hint }, e.hint.is_some());
    }
    if e.code.as_deref() == Some("insufficient_quota") {
        return failure(Outcome::Final, Fate::Elsewhere, false);
    }
    failure(Outcome::Final, Fate::Deliver, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, hint: Option<u64>, body: &str) -> Error {
        Error::Status(Rejection {
            status: code,
            content_type: None,
            body: body.as_bytes().to_vec(),
            headers: vec![],
            hint: hint.map(Duration::from_secs),
        })
    }

    fn in_stream(code: &str, retryable: bool, hint: Option<u64>) -> Error {
        Error::InStream(StreamError {
            code: Some(code.into()),
            kind: None,
            message: "x".into(),
            retryable,
            hint: hint.map(Duration::from_secs),
        })
    }

    /// `(outcome, fate, shared)` of each failure (all from the upstream but the last).
    #[test]
    #[rustfmt::skip] // one row per case
    fn each_failure_is_judged_once() {
        use Fate::{Deliver, Elsewhere, GiveUp};
        let retry = |hint: Option<u64>| Fate::Retry { hint: hint.map(Duration::from_secs) };
        let quota = r#"{"error":{"code":"insufficient_quota","message":"pay"}}"#;
        let cases: Vec<(Error, (Outcome, Fate, bool))> = vec![
            (status(429, Some(7), ""), (Outcome::RateLimited, retry(Some(7)), true)),
            (status(429, None, quota), (Outcome::Final, Elsewhere, false)),
            (status(500, None, ""), (Outcome::ServerError, retry(None), true)),
            (status(503, Some(2), ""), (Outcome::ServerError, retry(Some(2)), true)),
            (status(504, None, ""), (Outcome::ServerError, retry(None), true)),
            (status(529, None, ""), (Outcome::ServerError, retry(None), true)),
            (status(408, None, ""), (Outcome::OtherStatus, retry(None), true)),
            (status(409, None, ""), (Outcome::OtherStatus, retry(None), true)),
            (status(400, None, ""), (Outcome::Final, Deliver, false)),
            (status(422, None, ""), (Outcome::Final, Deliver, false)),
            (status(501, None, ""), (Outcome::Final, Deliver, false)),
            (status(401, None, ""), (Outcome::Final, Elsewhere, false)),
            (status(403, None, ""), (Outcome::Final, Elsewhere, false)),
            (status(404, None, ""), (Outcome::Final, Elsewhere, false)),
            (in_stream("rate_limit_exceeded", true, None), (Outcome::InStream, retry(None), false)),
            (in_stream("rate_limit_exceeded", true, Some(20)), (Outcome::InStream, retry(Some(20)), true)),
            (in_stream("context_length_exceeded", false, None), (Outcome::Final, Deliver, false)),
            (in_stream("insufficient_quota", false, None), (Outcome::Final, Elsewhere, false)),
            (Error::Connect("refused".into()), (Outcome::Connect, retry(None), true)),
            (Error::Tls("invalid peer certificate: UnknownIssuer".into()), (Outcome::Connect, Elsewhere, false)),
            (Error::HeadTooLarge { limit: 15 * 1024 }, (Outcome::Invalid, Elsewhere, false)),
            (Error::Truncated { received: 10, reason: "eof".into() }, (Outcome::Cut, retry(None), false)),
            (Error::Stalled { received: 0 }, (Outcome::Stall, retry(None), false)),
            (Error::EventStall { received: 9 }, (Outcome::Stall, retry(None), false)),
            (Error::Dripping { received: 9 }, (Outcome::Stall, retry(None), false)),
            (Error::NotAnEventStream { status: 200, content_type: None, head: String::new() }, (Outcome::Invalid, retry(None), false)),
            (Error::Redirect { status: 301, target: "host x".into() }, (Outcome::Invalid, GiveUp, false)),
            (Error::Encoded { encoding: "gzip".into() }, (Outcome::Invalid, GiveUp, false)),
            (Error::ResponseTooLarge { limit: 1 }, (Outcome::TooLarge, GiveUp, false)),
            (Error::EventTooLarge { limit: 1 }, (Outcome::TooLarge, GiveUp, false)),
        ];
        for (err, expected) in cases {
            let f = judge(&err);
            assert_eq!((f.outcome, f.fate, f.shared), expected, "{err:?}");
            assert_eq!(f.origin, Origin::Upstream, "{err:?}");
        }
        let gone = judge(&Error::ClientGone);
        assert_eq!((gone.outcome, gone.origin, gone.fate), (Outcome::Abandoned, Origin::Client, GiveUp));
        assert_eq!(judge(&Error::BadRequest("x".into())).origin, Origin::Client);
        assert_eq!(judge(&Error::Busy { limit: 1 }).origin, Origin::Proxy);
        let overloaded = judge(&Error::Overloaded { held: 2, budget: 3 });
        assert_eq!((overloaded.outcome, overloaded.origin, overloaded.fate), (Outcome::TooLarge, Origin::Proxy, GiveUp));
    }
}
