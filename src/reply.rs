//! What the client gets back: a status, a few headers and a complete body.
//!
//! Every error the proxy itself produces is rendered here as OpenAI-shaped JSON,
//! `{"error": {"message", "type", "code"}}`, with a status that tells the client what kind of
//! failure it was. Messages come from `Error`'s `Display`, which never contains a key.

use std::io::Write;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::body::{Body, CHUNK};
use crate::error::{Error, Outcome, StreamError};

/// A complete answer, written to the client in one piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: Body::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    /// The OpenAI-shaped error for a failure of the proxy or of the upstream.
    pub fn error(err: &Error) -> Reply {
        let (status, kind, code) = classify(err);
        let mut body = error_json(&format!("codex-shield: {err}"), kind, code);
        if let Error::Unsupported { param, .. } = err {
            body["error"]["param"] = param.as_str().into();
        }
        let mut reply = Reply::json(status, &body);
        if matches!(err, Error::Busy { .. } | Error::ShuttingDown) {
            reply.headers.push(("retry-after".into(), "1".into()));
        }
        if let Error::Overloaded { .. } = overloaded(err) {
            reply.headers.push(("retry-after".into(), OVERLOADED_RETRY_AFTER.into()));
        }
        if let Error::Braked { retry_after: wait } | Error::Resting { wait, .. } = err {
            reply.headers.push(("retry-after".into(), wait.as_secs_f64().ceil().max(1.0).to_string()));
        }
        if matches!(err, Error::UnsupportedEncoding(_)) {
            reply.headers.push(("accept-encoding".into(), "identity".into()));
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

impl Reply {
    /// The whole HTTP/1.1 response as pieces to write in order: the head with the first
    /// chunk of the body (so that a typical answer is one write), then the other chunks.
    /// `head_only` for a `HEAD` request; `close` when the connection ends after this response.
    pub fn into_http(self, head_only: bool, close: bool, now: SystemTime) -> Vec<Vec<u8>> {
        let mut head = self.head(close, now);
        if head_only {
            return vec![head];
        }
        let mut chunks = self.body.into_chunks().into_iter().peekable();
        if let Some(first) = chunks.next_if(|c| c.len() <= CHUNK) {
            head.extend_from_slice(&first);
        }
        std::iter::once(head).chain(chunks).collect()
    }

    fn head(&self, close: bool, now: SystemTime) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.headers.len() * 64);
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        let _ = write!(out, "date: {}\r\nserver: codex-shield\r\n", crate::date::http_date(now));
        let _ = write!(out, "content-type: {}\r\ncontent-length: {}\r\n", self.content_type, self.body.len());
        for (name, value) in &self.headers {
            let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n');
            if clean(name) && clean(value) && name != "connection" {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        if close || self.headers.iter().any(|(n, v)| n == "connection" && v == "close") {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The reason phrase of a status (informative only; clients read the number).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `{"error": {"message", "type", "code", "param"}}`
pub fn error_json(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
}

/// Seconds an overloaded proxy asks a client to wait: long enough for big answers to go out.
const OVERLOADED_RETRY_AFTER: &str = "2";

/// The memory failure behind `err` (itself, or the last failure of a request given up), or
/// `err`.
fn overloaded(err: &Error) -> &Error {
    match err {
        Error::Exhausted { last, .. } => last,
        other => other,
    }
}

/// Status, error type and code for each failure.
fn classify(err: &Error) -> (u16, &'static str, &'static str) {
    match err {
        Error::RequestTooLarge { .. } => (413, "invalid_request_error", "request_too_large"),
        Error::BadRequest(_) => (400, "invalid_request_error", "invalid_request"),
        Error::Unsupported { .. } => (400, "invalid_request_error", "unsupported_parameter"),
        Error::Unauthorized => (401, "invalid_request_error", "invalid_api_key"),
        Error::Braked { .. } => (429, "invalid_request_error", "too_many_auth_failures"),
        Error::NotFound { .. } => (404, "invalid_request_error", "not_found"),
        Error::UnsupportedEncoding(_) => (415, "invalid_request_error", "unsupported_content_encoding"),
        // Codex falls back from its WebSocket transport to HTTP at once on a 426 (and only then)
        Error::WebSocket => (426, "invalid_request_error", "websocket_not_supported"),
        Error::Busy { .. } => (503, "server_error", "proxy_busy"),
        Error::ShuttingDown => (503, "server_error", "proxy_shutting_down"),
        Error::Overloaded { .. } => (503, "server_error", "proxy_overloaded"),
        // nginx's "client closed request"; nobody reads it, but the log line shows it
        Error::ClientGone => (499, "server_error", "client_closed_request"),
        Error::ResponseTooLarge { .. } => (502, "upstream_error", "response_too_large"),
        Error::EventTooLarge { .. } => (502, "upstream_error", "upstream_event_too_large"),
        Error::Tls(_) => (502, "upstream_error", "upstream_tls_error"),
        Error::HeadTooLarge { .. } => (502, "upstream_error", "upstream_head_too_large"),
        Error::Resting { reason: Some(Outcome::RateLimited), .. } => {
            (429, "upstream_error", "rate_limit_exceeded")
        }
        Error::Resting { .. } => (503, "upstream_error", "upstream_unavailable"),
        Error::Exhausted { last, .. } => match last.as_ref() {
            Error::Status(r) if r.status == 429 => (429, "upstream_error", "rate_limit_exceeded"),
            Error::Status(r) if r.status >= 500 => (r.status, "upstream_error", "upstream_retries_exhausted"),
            Error::Stalled { .. } => (504, "upstream_error", "upstream_timeout"),
            Error::EventStall { .. } => (504, "upstream_error", "upstream_timeout"),
            Error::Dripping { .. } => (504, "upstream_error", "upstream_timeout"),
            last @ (Error::ResponseTooLarge { .. }
            | Error::EventTooLarge { .. }
            | Error::Tls(_)
            | Error::HeadTooLarge { .. }
            | Error::Overloaded { .. }
            | Error::NotAnEventStream { .. }
            | Error::Redirect { .. }
            | Error::Encoded { .. }) => classify(last),
            Error::Status(_)
            | Error::Connect(_)
            | Error::Truncated { .. }
            | Error::InStream(_)
            | Error::ClientGone
            | Error::Usage(_)
            | Error::Config { .. }
            | Error::Listen { .. }
            | Error::Setup(_)
            | Error::RequestTooLarge { .. }
            | Error::BadRequest(_)
            | Error::Unsupported { .. }
            | Error::Unauthorized
            | Error::Braked { .. }
            | Error::NotFound { .. }
            | Error::UnsupportedEncoding(_)
            | Error::WebSocket
            | Error::Busy { .. }
            | Error::ShuttingDown
            | Error::Resting { .. }
            | Error::Exhausted { .. } => (502, "upstream_error", "upstream_retries_exhausted"),
        },
        Error::NotAnEventStream { .. } => (502, "upstream_error", "upstream_not_event_stream"),
        Error::Redirect { .. } => (502, "upstream_error", "upstream_redirect"),
        Error::Encoded { .. } => (502, "upstream_error", "upstream_encoded_body"),
        Error::Connect(_) | Error::Truncated { .. } | Error::InStream(_) | Error::Status(_) => {
            (502, "upstream_error", "upstream_error")
        }
        Error::Stalled { .. } | Error::EventStall { .. } | Error::Dripping { .. } => {
            (504, "upstream_error", "upstream_timeout")
        }
        Error::Usage(_) | Error::Config { .. } | Error::Listen { .. } | Error::Setup(_) => {
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
        let v: Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
        let message = v["error"]["message"].as_str().unwrap().to_string();
        assert!(v["error"]["type"].is_string());
        (r.status, v["error"]["code"].as_str().unwrap().to_string(), message)
    }

    #[test]
    fn http_serialisation() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let reply = Reply {
            status: 200,
            content_type: "text/event-stream".into(),
            headers: vec![
                ("x-request-id".into(), "r1".into()),
                ("x-bad".into(), "a\r\nset-cookie: x".into()),
            ],
            body: Body::from(b"data: [DONE]\n\n".to_vec()),
        };
        let expected = "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nserver: codex-shield\r\n\
                        content-type: text/event-stream\r\ncontent-length: 14\r\nx-request-id: r1\r\n\r\n";
        assert_eq!(
            String::from_utf8(reply.clone().into_http(false, false, at).concat()).unwrap(),
            format!("{expected}data: [DONE]\n\n")
        );
        assert_eq!(String::from_utf8(reply.clone().into_http(true, false, at).concat()).unwrap(), expected);
        let closing = String::from_utf8(reply.into_http(false, true, at).concat()).unwrap();
        assert!(closing.contains("\r\nconnection: close\r\n\r\n"));
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
            (
                Error::Braked { retry_after: Duration::from_millis(41_200) },
                429,
                "too_many_auth_failures",
                "try again in 42s",
            ),
            (Error::UnsupportedEncoding("gzip".into()), 415, "unsupported_content_encoding", "\"gzip\""),
            (Error::WebSocket, 426, "websocket_not_supported", "HTTP"),
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
            (exhausted(Error::EventStall { received: 5 }), 504, "upstream_timeout", "only keep-alives"),
            (
                exhausted(Error::NotAnEventStream {
                    status: 200,
                    content_type: Some("text/html".into()),
                    head: "<html>Sign in".into(),
                }),
                502,
                "upstream_not_event_stream",
                "200 (text/html) is not an event stream; body starts with: <html>Sign in",
            ),
            (
                exhausted(Error::Redirect { status: 302, target: "host login.example".into() }),
                502,
                "upstream_redirect",
                "redirected (302) to host login.example",
            ),
            (
                exhausted(Error::Encoded { encoding: "gzip".into() }),
                502,
                "upstream_encoded_body",
                "gzip-encoded",
            ),
            (exhausted(Error::Dripping { received: 7 }), 504, "upstream_timeout", "trickled"),
            (
                Error::Tls("invalid peer certificate: UnknownIssuer".into()),
                502,
                "upstream_tls_error",
                "TLS certificate is refused (invalid peer certificate: UnknownIssuer)",
            ),
            (
                exhausted(Error::Tls("invalid peer certificate: Expired".into())),
                502,
                "upstream_tls_error",
                "UPSTREAM_CA_FILE",
            ),
            (Error::HeadTooLarge { limit: 15360 }, 502, "upstream_head_too_large", "larger than 15360 bytes"),
            (
                exhausted(Error::EventTooLarge { limit: 16 }),
                502,
                "upstream_event_too_large",
                "event larger than 16 bytes",
            ),
            (
                Error::Overloaded { held: 300 << 20, budget: 512 << 20 },
                503,
                "proxy_overloaded",
                "300 MiB of its 512 MiB",
            ),
            (
                exhausted(Error::Overloaded { held: 1 << 20, budget: 2 << 20 }),
                503,
                "proxy_overloaded",
                "memory budget",
            ),
        ];
        for (err, status, code, needle) in cases {
            let (s, c, m) = parts(err.clone());
            assert_eq!((s, c.as_str()), (status, code), "{err:?}");
            assert!(m.contains(needle), "{m:?} should mention {needle:?}");
        }
        let braked = Reply::error(&Error::Braked { retry_after: Duration::from_millis(41_200) });
        assert!(braked.headers.contains(&("retry-after".into(), "42".into())));
        let busy = Reply::error(&Error::Busy { limit: 1 });
        assert!(busy.headers.contains(&("retry-after".into(), "1".into())));
        for err in
            [Error::Overloaded { held: 1, budget: 2 }, exhausted(Error::Overloaded { held: 1, budget: 2 })]
        {
            assert!(Reply::error(&err).headers.contains(&("retry-after".into(), "2".into())), "{err:?}");
        }
        let encoded = Reply::error(&Error::UnsupportedEncoding("gzip".into()));
        assert!(encoded.headers.contains(&("accept-encoding".into(), "identity".into())));
    }

    #[test]
    fn an_unsupported_member_is_named_in_param() {
        let err = Error::Unsupported { param: "logprobs".into(), reason: "no Responses form".into() };
        let reply = Reply::error(&err);
        let v: Value = serde_json::from_slice(&reply.body.to_vec()).unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(v["error"]["param"], "logprobs");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "unsupported_parameter");
        assert_eq!(v["error"]["message"], "codex-shield: `logprobs` is not supported: no Responses form");
    }
}
