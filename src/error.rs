//! The one error type of codex-shield, and where each failure happened.
//!
//! Every variant says *where* something went wrong (configuration, the client's request, the
//! connection to the upstream, the upstream's status, the stream itself) so that the retry
//! decision in `retry.rs` is a pure function of the value. This module only describes errors;
//! it does not decide what to do about them and it never renders them for the client (that is
//! `reply.rs`).

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong, tagged with where it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A command-line argument is not understood.
    Usage(String),
    /// A configuration variable is missing or invalid.
    Config { var: String, reason: String },
    /// The listening socket could not be opened.
    Listen { addr: String, reason: String },
    /// The process could not be set up (signal handlers).
    Setup(String),
    /// The client's body is larger than `MAX_REQUEST_BYTES`.
    RequestTooLarge { limit: u64 },
    /// The client's request cannot be forwarded (bad JSON, not an object, unreadable body).
    BadRequest(String),
    /// A member of the client's request has no form in the upstream's API (`param` names
    /// it): refused rather than dropped, since dropping it would change the answer.
    Unsupported { param: String, reason: String },
    /// The client did not present `PROXY_API_KEY`.
    Unauthorized,
    /// The client's address sent too many wrong keys (`AUTH_FAILURE_LIMIT`): braked for a while.
    Braked { retry_after: Duration },
    /// No route for this method and path.
    NotFound { method: String, path: String },
    /// The client's body is compressed (`Content-Encoding`, named here); it is not decoded.
    UnsupportedEncoding(String),
    /// The client asked to switch to WebSocket; only HTTP with Server-Sent Events is served.
    WebSocket,
    /// `MAX_CONCURRENT` requests are already in flight.
    Busy { limit: usize },
    /// The proxy is shutting down and takes no new work.
    ShuttingDown,
    /// Requests and answers hold too much of the memory budget (`MEMORY_BUDGET_MB` or the
    /// cgroup's limit) to take this request, or this answer, now; bytes held and the budget.
    Overloaded { held: usize, budget: usize },
    /// The client closed its connection while its answer was being prepared.
    ClientGone,
    /// No connection to the upstream: DNS, TCP connect, TLS or proxy failure.
    Connect(String),
    /// The upstream's TLS certificate was refused (unknown issuer, expired, wrong name): a
    /// setting to fix, not a moment to wait out.
    Tls(String),
    /// The upstream's response head (status line and headers) is larger than the proxy reads.
    HeadTooLarge { limit: usize },
    /// The upstream answered with a status that is not a success.
    Status(Rejection),
    /// The connection broke or the framing was invalid before the answer was complete.
    Truncated { received: usize, reason: String },
    /// The upstream sent nothing for `IDLE_TIMEOUT_SECONDS`.
    Stalled { received: usize },
    /// Bytes kept arriving (comments, pings, empty events) but no event for `IDLE_TIMEOUT_SECONDS`.
    EventStall { received: usize },
    /// Bytes kept arriving but the head, an event or a body that is not a stream was still
    /// incomplete after twice `IDLE_TIMEOUT_SECONDS`: an upstream dripping to look alive.
    Dripping { received: usize },
    /// One event grew past `limit` bytes without ending: the stream's framing is broken.
    EventTooLarge { limit: usize },
    /// A success status on a shielded route whose body is not an event stream (an HTML page,
    /// a JSON object, a 204); `head` is the start of the body, printable and short.
    NotAnEventStream { status: u16, content_type: Option<String>, head: String },
    /// The upstream answered with a redirect, which the proxy never follows; `target` is the
    /// host of its `Location` (or says there was none, or that it is on the same host).
    Redirect { status: u16, target: String },
    /// A success answer with a `Content-Encoding` (gzip...) that the proxy never asked for.
    Encoded { encoding: String },
    /// The stream carried an error (`error`, `response.failed`, a chat chunk with `error`).
    InStream(StreamError),
    /// The upstream's answer is larger than `MAX_RESPONSE_BYTES`.
    ResponseTooLarge { limit: u64 },
    /// Every upstream is resting (cooling down after failures) past the request's deadline,
    /// so it was not tried at all: why the soonest one rests, and for how long still.
    Resting { reason: Option<Outcome>, wait: Duration },
    /// Every attempt failed; `last` is the final failure.
    Exhausted { attempts: u32, elapsed: Duration, last: Box<Error> },
}

/// An upstream answer with a non-success status, kept whole so it can be passed on unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Headers worth passing on to the client (`x-request-id`, `x-ratelimit-*`...).
    pub headers: Vec<(String, String)>,
    /// The upstream's own retry hint, from its headers or its error message.
    pub hint: Option<Duration>,
}

/// An error reported inside a stream, from its parsed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub code: Option<String>,
    pub kind: Option<String>,
    pub message: String,
    /// Whether another attempt may succeed (see `check::is_retryable`).
    pub retryable: bool,
    /// Retry hint found in the message ("try again in 20s").
    pub hint: Option<Duration>,
}

/// What one upstream attempt came to. The shared vocabulary of the request log line and the
/// metrics: a new kind of failure must get its own variant (and label) here, so it can never
/// fall silently into a catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A complete, clean answer.
    Ok,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx (and the CDN/overload codes 520-524, 529).
    ServerError,
    /// Another retryable status: 408, 409, 425.
    OtherStatus,
    /// No connection: DNS, TCP, TLS, proxy.
    Connect,
    /// The stream broke or ended before its terminal event.
    Cut,
    /// Nothing (or no event) arrived in time.
    Stall,
    /// The stream carried a retryable error event.
    InStream,
    /// A final answer: a non-retryable status or in-stream error, delivered as it is.
    Final,
    /// A success status whose body is not an answer (HTML, a redirect, an encoded body).
    Invalid,
    /// The answer was larger than `MAX_RESPONSE_BYTES` (or one event larger than the proxy
    /// takes).
    TooLarge,
    /// The client left while the attempt was under way; the attempt was abandoned.
    Abandoned,
}

impl Outcome {
    pub const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::OtherStatus,
        Outcome::Connect,
        Outcome::Cut,
        Outcome::Stall,
        Outcome::InStream,
        Outcome::Final,
        Outcome::Invalid,
        Outcome::TooLarge,
        Outcome::Abandoned,
    ];

    /// The label used in log lines and as the `outcome` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "429",
            Outcome::ServerError => "5xx",
            Outcome::OtherStatus => "other_status",
            Outcome::Connect => "connect",
            Outcome::Cut => "cut",
            Outcome::Stall => "stall",
            Outcome::InStream => "in_stream_error",
            Outcome::Final => "final_error",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::Abandoned => "client_gone",
        }
    }

    /// Position in `ALL` (an index into per-outcome counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<crate::memory::Overdrawn> for Error {
    fn from(o: crate::memory::Overdrawn) -> Error {
        Error::Overloaded { held: o.held, budget: o.budget }
    }
}

impl Rejection {
    /// A 429 that says the quota is gone will not get better by waiting.
    pub fn quota_exhausted(&self) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return false;
        };
        v["error"]["code"] == "insufficient_quota" || v["error"]["type"] == "insufficient_quota"
    }

    /// The upstream's own error message, if its body is an error JSON (at most 300 chars).
    pub fn message(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let m = v["error"]["message"].as_str().or(v["message"].as_str())?;
        Some(m.chars().take(300).collect())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Config { var, reason } => write!(f, "invalid configuration: {var}: {reason}"),
            Error::Listen { addr, reason } => write!(f, "cannot listen on {addr}: {reason}"),
            Error::Setup(reason) => write!(f, "cannot start: {reason}"),
            Error::RequestTooLarge { limit } => {
                write!(f, "request body is larger than MAX_REQUEST_BYTES ({limit} bytes)")
            }
            Error::BadRequest(msg) => write!(f, "invalid request: {msg}"),
            Error::Unsupported { param, reason } => write!(f, "`{param}` is not supported: {reason}"),
            Error::Unauthorized => write!(f, "missing or wrong proxy API key"),
            Error::Braked { retry_after } => write!(
                f,
                "too many wrong proxy API keys from this address; try again in {}s",
                retry_after.as_secs_f64().ceil()
            ),
            Error::NotFound { method, path } => write!(f, "no route for {method} {path}"),
            Error::UnsupportedEncoding(coding) => write!(
                f,
                "request bodies with Content-Encoding {coding:?} are not accepted; send the body uncompressed"
            ),
            Error::WebSocket => write!(
                f,
                "WebSocket is not supported; send the request as HTTP (POST with Server-Sent Events)"
            ),
            Error::Busy { limit } => {
                write!(f, "proxy busy: {limit} requests already in flight (MAX_CONCURRENT)")
            }
            Error::ShuttingDown => write!(f, "proxy is shutting down"),
            Error::Overloaded { held, budget } => write!(
                f,
                "proxy overloaded: requests and answers hold {} MiB of its {} MiB memory budget; try again shortly",
                held >> 20,
                budget >> 20
            ),
            Error::ClientGone => write!(f, "the client closed the connection"),
            Error::Connect(reason) => write!(f, "cannot reach upstream: {reason}"),
            Error::Tls(reason) => write!(
                f,
                "cannot reach upstream: its TLS certificate is refused ({reason}); not retried \
                 (a private CA goes in UPSTREAM_CA_FILE)"
            ),
            Error::HeadTooLarge { limit } => write!(
                f,
                "upstream response head (status line and headers) is larger than {limit} bytes; not retried"
            ),
            Error::Status(r) => {
                write!(f, "upstream status {}", r.status)?;
                if let Some(h) = r.hint {
                    write!(f, " (retry hint {:.1}s)", h.as_secs_f64())?;
                }
                match r.message() {
                    Some(m) => write!(f, ": {m}"),
                    None => Ok(()),
                }
            }
            Error::Truncated { received, reason } => {
                write!(f, "stream cut after {received} bytes: {reason}")
            }
            Error::Stalled { received } => {
                write!(f, "upstream stalled: nothing for IDLE_TIMEOUT_SECONDS after {received} bytes")
            }
            Error::EventStall { received } => write!(
                f,
                "upstream stalled: only keep-alives, no event, for IDLE_TIMEOUT_SECONDS after {received} bytes"
            ),
            Error::Dripping { received } => write!(
                f,
                "upstream stalled: bytes trickled in, but its head, an event or its body was still \
                 incomplete after twice IDLE_TIMEOUT_SECONDS ({received} bytes of body)"
            ),
            Error::EventTooLarge { limit } => {
                write!(f, "upstream sent an event larger than {limit} bytes without ending it")
            }
            Error::NotAnEventStream { status, content_type, head } => {
                let content_type = content_type.as_deref().unwrap_or("no content type");
                write!(f, "upstream status {status} ({content_type}) is not an event stream")?;
                match head.is_empty() {
                    true => write!(f, "; empty body"),
                    false => write!(f, "; body starts with: {head}"),
                }
            }
            Error::Redirect { status, target } => write!(
                f,
                "upstream redirected ({status}) to {target}; redirects are not followed (check AZURE_ENDPOINT)"
            ),
            Error::Encoded { encoding } => {
                write!(f, "upstream answer is {encoding}-encoded, which the proxy never asks for and cannot check")
            }
            Error::InStream(e) => {
                let code = e.code.as_deref().unwrap_or("no code");
                write!(f, "error event in stream ({code}): {}", e.message)
            }
            Error::ResponseTooLarge { limit } => {
                write!(f, "upstream answer is larger than MAX_RESPONSE_BYTES ({limit} bytes)")
            }
            Error::Resting { reason, wait } => write!(
                f,
                "every upstream is resting after failures ({}) for another {:.1}s, past RETRY_DEADLINE_SECONDS",
                reason.map_or("unknown", Outcome::label),
                wait.as_secs_f64()
            ),
            Error::Exhausted { attempts, elapsed, last } => write!(
                f,
                "upstream failed {attempts} attempt(s) over {:.1}s; last failure: {last}",
                elapsed.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Process exit code for an error that ends the program.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config { .. } => 2,
            _ => 1,
        }
    }
}
