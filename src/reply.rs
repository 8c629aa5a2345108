//! What the client gets back: a status, a few headers and a complete body.
//!
//! Every error the proxy itself produces is rendered here as OpenAI-shaped JSON,
//! `{"error": {"message", "type", "code"}}`, with a status that tells the client what kind of
//! failure it was. Messages come from `Error`'s `Display`, which never contains a key.

use serde_json::{json, Value};

use crate::error::{Error, StreamError};

/// A complete answer, written to the client in one piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// The OpenAI-shaped error for a failure of the proxy or of the upstream.
    pub fn error(err: &Error) -> Reply {
        let (status, kind, code) = classify(err);
        let mut reply = Reply::json(status, &error_json(&format!("codex-shield: {err}"), kind, code));
        if matches!(err, Error::Busy { .. } | Error::ShuttingDown) {
            reply.headers.push(("retry-after".into(), "1".into()));
        }
        if matches!(err, Error::RequestTooLarge { .. } | Error::ShuttingDown) {
            reply.headers.push(("connection".into(), "close".into()));
        }
        reply
    }

    /// A final error reported inside a stream, for a client that asked for JSON.
    pub fn stream_error(e: &StreamError) -> Reply {
        let status = match (e.code.as_deref(), e.kind.as_deref()) {
            (Some("insufficient_quota"), _) | (_, Some("insufficient_quota")) => 429,
            (_, Some("authentication_error")) => 401,
            (_, Some("permission_error")) => 403,
            (_, Some("not_found_error")) => 404,
            _ => 400,
        };
        let kind = e.kind.as_deref().unwrap_or("invalid_request_error");
        let body = json!({"error": {"message": e.message, "type": kind, "code": e.code, "param": null}});
        Reply::json(status, &body)
    }
}

/// `{"error": {"message", "type", "code", "param"}}`
pub fn error_json(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
}

/// Status, error type and code for each failure.
fn classify(err: &Error) -> (u16, &'static str, &'static str) {
    match err {
        Error::RequestTooLarge { .. } => (413, "invalid_request_error", "request_too_large"),
        Error::BadRequest(_) => (400, "invalid_request_error", "invalid_request"),
        Error::Unauthorized => (401, "invalid_request_error", "invalid_api_key"),
        Error::NotFound { .. } => (404, "invalid_request_error", "not_found"),
        Error::Busy { .. } => (503, "server_error", "proxy_busy"),
        Error::ShuttingDown => (503, "server_error", "proxy_shutting_down"),
        // nginx's "client closed request"; nobody reads it, but the log line shows it
        Error::ClientGone => (499, "server_error", "client_closed_request"),
        Error::ResponseTooLarge { .. } => (502, "upstream_error", "response_too_large"),
        Error::Exhausted { last, .. } => match last.as_ref() {
            Error::Status(r) if r.status == 429 => (429, "upstream_error", "rate_limit_exceeded"),
            Error::Status(r) if r.status >= 500 => (r.status, "upstream_error", "upstream_retries_exhausted"),
            Error::Stalled { .. } => (504, "upstream_error", "upstream_timeout"),
            Error::ResponseTooLarge { .. } => (502, "upstream_error", "response_too_large"),
            _ => (502, "upstream_error", "upstream_retries_exhausted"),
        },
        Error::Connect(_) | Error::Truncated { .. } | Error::InStream(_) | Error::Status(_) => {
            (502, "upstream_error", "upstream_error")
        }
        Error::Stalled { .. } => (504, "upstream_error", "upstream_timeout"),
        Error::Usage(_) | Error::Config { .. } | Error::Listen { .. } => {
            (500, "server_error", "internal_error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Rejection;
    use std::time::Duration;

    fn parts(err: Error) -> (u16, String, String) {
        let r = Reply::error(&err);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let message = v["error"]["message"].as_str().unwrap().to_string();
        assert!(v["error"]["type"].is_string());
        (r.status, v["error"]["code"].as_str().unwrap().to_string(), message)
    }

    #[test]
    fn errors_are_openai_shaped() {
        let exhausted = |last: Error| Error::Exhausted {
            attempts: 3,
            elapsed: Duration::from_millis(4500),
            last: Box::new(last),
        };
        let rejection = |status| {
            Error::Status(Rejection {
                status,
                content_type: None,
                body: br#"{"error":{"message":"Please retry after 20 seconds."}}"#.to_vec(),
                headers: vec![],
                hint: Some(Duration::from_secs(20)),
            })
        };
        let cases: Vec<(Error, u16, &str, &str)> = vec![
            (Error::RequestTooLarge { limit: 10 }, 413, "request_too_large", "MAX_REQUEST_BYTES"),
            (Error::BadRequest("body is not JSON".into()), 400, "invalid_request", "not JSON"),
            (Error::Unauthorized, 401, "invalid_api_key", "proxy API key"),
            (Error::Busy { limit: 2 }, 503, "proxy_busy", "MAX_CONCURRENT"),
            (exhausted(rejection(429)), 429, "rate_limit_exceeded", "3 attempt(s) over 4.5s"),
            (exhausted(rejection(503)), 503, "upstream_retries_exhausted", "retry after 20 seconds"),
            (exhausted(Error::Stalled { received: 5 }), 504, "upstream_timeout", "stalled"),
            (
                exhausted(Error::Truncated { received: 9, reason: "eof".into() }),
                502,
                "upstream_retries_exhausted",
                "cut after 9 bytes",
            ),
            (
                exhausted(Error::ResponseTooLarge { limit: 64 }),
                502,
                "response_too_large",
                "MAX_RESPONSE_BYTES",
            ),
        ];
        for (err, status, code, needle) in cases {
            let (s, c, m) = parts(err.clone());
            assert_eq!((s, c.as_str()), (status, code), "{err:?}");
            assert!(m.contains(needle), "{m:?} should mention {needle:?}");
        }
        let busy = Reply::error(&Error::Busy { limit: 1 });
        assert!(busy.headers.contains(&("retry-after".into(), "1".into())));
    }
}
