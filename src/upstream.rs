//! The only module that talks to the upstream: one shared ureq `Agent`, one attempt at a time.
//!
//! An attempt sends the prepared request and reads the *whole* answer into memory, parsing
//! SSE while it reads so that an error event, a cut or a stall ends the read at once. It
//! reports what happened (`Answer` or a located `Error`) and decides nothing about retries:
//! that is `failure.rs` and `retry.rs`, driven by `shield.rs`.
//!
//! This file owns the connection and the answer's head: the agent (its timeouts, buffers,
//! pool and TLS roots, `UPSTREAM_CA_FILE`), the request, and what a head says before any body
//! is read. A redirect is reported, never followed; a rejection's body is read for its message
//! and retry hint; a success with a `Content-Encoding` is reported at once; a success that is
//! not `text/event-stream` (any case) on a shielded route is a failure, judged like an
//! in-stream error if its JSON carries one. Every failure and every answer that reports an
//! error leaves an attempt through `scrub::Scrubber`: no upstream key in what the client or
//! the log sees.
//!
//! It reads no body itself. The read loops are `upstream/read.rs`, pure over the reader and a
//! clock given to them: a stream read up to its terminal event and not a byte further,
//! checked event by event, and a body that is not a stream. What is left of a stream's body
//! (usually a chunked body's last chunk) is the answer's `Tail`, read after the client has its
//! answer so the connection can be reused (`upstream/tail.rs`). The limits they share are set
//! here: `IDLE_TIMEOUT_SECONDS` bounds both the wait for a byte (ureq's per-read timeout) and
//! the time without an event or part of one (the read loop's clock); whatever must arrive whole
//! (the response head, one event, a body that is not a stream) has twice
//! `IDLE_TIMEOUT_SECONDS` (`WHOLE`), and one event at most `MAX_EVENT_BYTES`.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ureq::http;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::DefaultResolver;

use crate::body::Body;
use crate::check::{self, Api};
use crate::config::Config;
use crate::error::{Error, Outcome, Rejection, StreamError};
use crate::retry;
use crate::scrub::Scrubber;
use crate::usage::Usage;

mod connect;
mod read;
mod tail;

use crate::fold::Keep;
pub use read::Folded;
use read::{read_all, read_stream, read_whole, End, Kept, Reading, Rest};
pub use tail::{Finished, Tail};

/// A request ready to send, identical for every attempt.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: String,
    pub url: String,
    /// The client's headers that may travel, plus the upstream's auth header.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `Some` for the shielded APIs: the stream is checked while it is read.
    pub api: Option<Api>,
    /// What the check of a chat stream keeps: `Everything` for an answer to be translated,
    /// which is then made from the check's fold (`Answer::folded`), its bytes not kept.
    pub keep: Keep,
}

/// A fully read upstream answer with a success status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    /// Headers worth passing on (`x-request-id`, `x-ratelimit-*`...).
    pub headers: Vec<(String, String)>,
    /// The upstream's bytes, exactly as received (none when the answer is `folded`).
    pub body: Body,
    /// A chat answer to be translated (`Outgoing::keep`), folded by the check as it was read.
    pub folded: Option<Box<Folded>>,
    /// Whether `body` is an SSE stream that was checked.
    pub checked: bool,
    /// A final (non-retryable) error the stream reported; the body is still delivered as-is.
    pub final_error: Option<StreamError>,
    /// The body's unread rest after the terminal event (usually a chunked body's last
    /// chunk): `Tail::finish` it once the answer is written, so the connection is reused.
    pub tail: Option<Tail>,
}

impl Answer {
    /// What the attempt counts as: `Ok`, unless the answer carries a final in-stream error
    /// (delivered as it is).
    pub fn outcome(&self) -> Outcome {
        match self.final_error {
            Some(_) => Outcome::Final,
            None => Outcome::Ok,
        }
    }
}

/// The HTTP client shared by every upstream: one agent, one connection pool.
pub struct Agent {
    agent: ureq::Agent,
    max_response_bytes: u64,
    /// `IDLE_TIMEOUT_SECONDS`.
    idle: Duration,
    /// The keys of every upstream, out of every text an attempt reports.
    scrubber: Scrubber,
}

/// What must arrive whole (the response head, one event, a body that is not a stream) has
/// `WHOLE` times `IDLE_TIMEOUT_SECONDS`: an honest server writes each at once, so it comes at
/// link speed (a 1 MB event needs 4.4 KB/s at the default 120 s; 175 KB/s at 3 s), while an
/// upstream that drips bytes to look alive is caught within `WHOLE * IDLE_TIMEOUT_SECONDS`.
pub const WHOLE: u32 = 2;

/// The largest single event: 16 times the `response.completed` of a 1 MB answer (which
/// repeats the whole output), with room for generated images; beyond it the stream's framing
/// is broken (no blank line ever comes), and reading on would only fill memory.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// The largest response head read. Heads are read into ureq's input buffer (`INPUT_BUFFER`);
/// a head that fills it is reported as too large instead of as "Peer disconnected". Real
/// heads are 1-4 KiB; nginx's proxy refuses upstream heads over its 4 or 8 KiB buffer.
pub const MAX_HEAD_BYTES: usize = INPUT_BUFFER - 1024;

/// ureq's input buffer, per upstream connection: zero-filled (so resident) the moment it is
/// used. It holds the response head, the body is read through it, and ureq borrows 10 KiB of
/// it to read the request body from (it grows it to that much if it is smaller): 10 KiB is
/// its floor.
const INPUT_BUFFER: usize = 10 * 1024;

/// ureq's output buffer, per upstream connection, zero-filled too: the request goes out in
/// writes of this size (a 100 KB body in 25 writes).
const OUTPUT_BUFFER: usize = 4 * 1024;

/// Upstream response headers passed on to the client.
pub fn is_useful_header(name: &str) -> bool {
    const EXACT: [&str; 5] =
        ["x-request-id", "apim-request-id", "x-ms-region", "azureml-model-session", "x-ms-client-request-id"];
    EXACT.contains(&name) || name.starts_with("x-ratelimit-") || name.starts_with("openai-")
}

impl Agent {
    pub fn new(config: &Config) -> Result<Agent, Error> {
        let u = &config.network;
        let tls = TlsConfig::builder().root_certs(root_certs(config)?).build();
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .save_redirect_history(false)
            .timeout_connect(Some(u.connect_timeout))
            .timeout_per_read(Some(u.idle_timeout))
            .timeout_per_write(Some(u.idle_timeout))
            // A head sent one line at a time passes every per-read timeout: it gets a deadline.
            .timeout_recv_response(Some(u.idle_timeout.saturating_mul(WHOLE)))
            .max_response_header_size(MAX_HEAD_BYTES)
            // 128 KiB each by default, per connection: 256 KiB per answer in flight; 14 KiB here.
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .max_idle_connections(config.limits.max_concurrent)
            .max_idle_connections_per_host(config.limits.max_concurrent)
            .tls_config(tls)
            .build();
        // The default chain (proxy, TCP, rustls), each transport wrapped so a tail's deadline holds.
        let connector = connect::chain();
        Ok(Agent {
            agent: ureq::Agent::with_parts(agent_config, connector, DefaultResolver::default()),
            max_response_bytes: config.limits.max_response_bytes,
            idle: u.idle_timeout,
            scrubber: Scrubber::new(config.keys()),
        })
    }

    /// One attempt: send, then read everything (checking SSE on the way). `answering` is
    /// called once the upstream has answered with a success status, before the body is read;
    /// `gone` tells whether the client has left (then the attempt ends with `ClientGone`).
    /// What it reports carries no upstream key. Beside it, whatever the attempt came to, the
    /// usage the upstream reported in its stream (`check::Progress`): what the attempt cost.
    pub fn attempt(
        &self,
        out: &Outgoing,
        answering: &mut dyn FnMut(),
        gone: &dyn Fn() -> bool,
    ) -> (Result<Answer, Error>, Option<Usage>) {
        let mut usage = None;
        let result = match self.read_answer(out, answering, gone, &mut usage) {
            Ok(answer) => Ok(self.scrubbed(answer)),
            Err(e) => Err(self.scrubber.error(e)),
        };
        (result, usage)
    }

    /// An answer's headers, and its error and bytes when it reports one, without a key. A
    /// clean answer's body is the model's: it never saw a key, and it is not searched.
    fn scrubbed(&self, mut answer: Answer) -> Answer {
        for (_, value) in &mut answer.headers {
            if let std::borrow::Cow::Owned(clean) = self.scrubber.text(value) {
                *value = clean;
            }
        }
        if let Some(e) = answer.final_error.take() {
            answer.final_error = Some(self.scrubber.stream_error(e));
            if let std::borrow::Cow::Owned(clean) = self.scrubber.bytes(&answer.body.to_vec()) {
                answer.body = Body::from(clean);
            }
            let error = answer.folded.as_mut().and_then(|f| f.answer.as_mut().ok()?.error.as_mut());
            if let Some(error) = error {
                *error = self.scrubbed_value(error);
            }
        }
        answer
    }

    /// A JSON value without a key.
    fn scrubbed_value(&self, value: &serde_json::Value) -> serde_json::Value {
        let text = serde_json::to_vec(value).unwrap_or_default();
        match self.scrubber.bytes(&text) {
            std::borrow::Cow::Owned(clean) => serde_json::from_slice(&clean).unwrap_or_default(),
            std::borrow::Cow::Borrowed(_) => value.clone(),
        }
    }

    fn read_answer(
        &self,
        out: &Outgoing,
        answering: &mut dyn FnMut(),
        gone: &dyn Fn() -> bool,
        usage: &mut Option<Usage>,
    ) -> Result<Answer, Error> {
        let response = self.agent.run(self.build(out)?).map_err(connect_error)?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let content_type = header("content-type").map(str::to_string);
        let hint = retry::hint_from_headers(header, SystemTime::now());
        if is_redirect(status) {
            return Err(Error::Redirect { status, target: redirect_target(header("location")) });
        }
        let encoding =
            header("content-encoding").map(str::trim).filter(|e| is_encoded(e)).map(str::to_string);
        // Only a length-delimited body is known to be over without another read.
        let length = match header("transfer-encoding") {
            Some(_) => None,
            None => header("content-length").and_then(|v| v.trim().parse::<u64>().ok()),
        };
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| is_useful_header(name.as_str()))
            .filter_map(|(name, v)| Some((name.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut reader = response.into_body().into_with_config().limit(self.max_response_bytes).reader();
        let within = self.idle.saturating_mul(WHOLE);
        if !(200..300).contains(&status) {
            let body = read_all(reader, self.max_response_bytes, within);
            // The headers' hint is the precise one; a message's "try again in 20s" only without it.
            let hint = hint.or_else(|| message_hint(&body));
            return Err(Error::Status(Rejection { status, content_type, body, headers, hint }));
        }
        if let Some(encoding) = encoding {
            return Err(Error::Encoded { encoding });
        }
        answering();
        let (body, folded, checked, final_error, tail) = match out.api {
            Some(api) if is_event_stream(content_type.as_deref()) => {
                let idle = self.agent.config().timeout_per_read().unwrap_or(Duration::MAX);
                let limit = self.max_response_bytes;
                let keep = if api == Api::Chat { out.keep } else { Keep::Shape };
                let reading = Reading { api, limit, idle, length, max_event: MAX_EVENT_BYTES, keep };
                let (read, reported) = read_stream(&mut reader, &reading, Instant::now, gone);
                *usage = reported;
                let (kept, end, rest) = read?;
                let (body, folded) = match kept {
                    Kept::Bytes(body) => (body, None),
                    Kept::Folded(folded) => (Body::new(), Some(folded)),
                };
                let final_error = match end {
                    End::Complete => None,
                    End::Final(e) => Some(e),
                };
                let tail = match rest {
                    Rest::Nothing => None,
                    Rest::Unread => Some(Tail::new(reader)),
                };
                (body, folded, true, final_error, tail)
            }
            Some(_) => return Err(not_an_event_stream(status, content_type, reader, within)),
            None => {
                let (body, end) = read_whole(reader, self.max_response_bytes, within, Instant::now, gone);
                end?;
                (body, None, false, None, None)
            }
        };
        Ok(Answer { status, content_type, headers, body, folded, checked, final_error, tail })
    }

    fn build<'o>(&self, out: &'o Outgoing) -> Result<http::Request<&'o [u8]>, Error> {
        let mut req = http::Request::builder().method(out.method.as_str()).uri(out.url.as_str());
        for (name, value) in &out.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        req.body(out.body.as_slice())
            .map_err(|e| Error::BadRequest(format!("cannot build the upstream request: {e}")))
    }
}

/// A success answer on a shielded route that is not SSE: an OpenAI error object in it is
/// judged like an in-stream error; anything else is described by its start (keys are
/// removed on the way out, in `attempt`).
fn not_an_event_stream(
    status: u16,
    content_type: Option<String>,
    reader: impl Read,
    within: Duration,
) -> Error {
    let body = read_all(reader, HEAD_READ, within);
    if let Some(e) = check::body_error(&body) {
        return Error::InStream(e);
    }
    Error::NotAnEventStream { status, content_type, head: printable_head(&body) }
}

/// The bundled Mozilla roots, plus the certificates of `UPSTREAM_CA_FILE` if set.
fn root_certs(config: &Config) -> Result<RootCerts, Error> {
    let Some(path) = &config.network.ca_file else {
        return Ok(RootCerts::WebPki);
    };
    let bad = |reason: String| Error::Config { var: "UPSTREAM_CA_FILE".into(), reason };
    let pem = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let bundled = certs.len();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(bad(format!("{}: {e}", path.display()))),
        }
    }
    if certs.len() == bundled {
        return Err(bad(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

/// A failure before any response: connection, TLS, proxy, a head too large, or no
/// (complete) head in time.
fn connect_error(e: ureq::Error) -> Error {
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            Error::Connect("connect timed out".into())
        }
        // the head kept coming, a line at a time, past its deadline
        ureq::Error::Timeout(ureq::Timeout::RecvResponse) => Error::Dripping { received: 0 },
        ureq::Error::Timeout(_) => Error::Stalled { received: 0 },
        ureq::Error::LargeResponseHeader(_, limit) => Error::HeadTooLarge { limit },
        ureq::Error::Rustls(tls @ rustls::Error::InvalidCertificate(_)) => Error::Tls(tls.to_string()),
        ureq::Error::Io(io) => match certificate_error(&io) {
            Some(tls) => Error::Tls(tls.to_string()),
            None => Error::Connect(io.to_string()),
        },
        other => Error::Connect(other.to_string()),
    }
}

/// The certificate error inside an I/O error (rustls reports a failed handshake that way).
fn certificate_error(io: &io::Error) -> Option<&rustls::Error> {
    let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    matches!(tls, rustls::Error::InvalidCertificate(_)).then_some(tls)
}

fn message_hint(body: &[u8]) -> Option<std::time::Duration> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = v["error"]["message"].as_str().or(v["message"].as_str())?;
    retry::hint_from_message(message)
}

/// How much of a success answer that is not SSE is read to describe it.
const HEAD_READ: u64 = 64 * 1024;

/// Characters of such an answer quoted in the error message.
const HEAD_QUOTE: usize = 160;

/// `Text/Event-Stream; charset=utf-8` is an event stream too.
fn is_event_stream(content_type: Option<&str>) -> bool {
    let media = content_type.and_then(|t| t.split(';').next()).unwrap_or("");
    media.trim().eq_ignore_ascii_case("text/event-stream")
}

/// A redirect (300-308 but 304, which only answers a conditional request).
fn is_redirect(status: u16) -> bool {
    (300..400).contains(&status) && status != 304
}

/// What a redirect points at, for the message: the host only, never the path or query.
fn redirect_target(location: Option<&str>) -> String {
    let Some(location) = location else {
        return "no Location".into();
    };
    match location.parse::<http::Uri>().ok().and_then(|uri| uri.host().map(str::to_string)) {
        Some(host) => format!("host {host}"),
        None => "a path on the same host".into(),
    }
}

/// A `Content-Encoding` that changes the bytes (anything but empty or `identity`).
fn is_encoded(encoding: &str) -> bool {
    !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity")
}

/// The start of a body as one short printable line: control characters and runs of spaces
/// become one space, and it is cut at `HEAD_QUOTE` characters (marked with `...`).
fn printable_head(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > HEAD_QUOTE {
            return out.chars().take(HEAD_QUOTE).chain("...".chars()).collect();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_answer_counts_as() {
        let ok = || Answer {
            status: 200,
            content_type: None,
            headers: vec![],
            body: Default::default(),
            folded: None,
            checked: true,
            final_error: None,
            tail: None,
        };
        assert_eq!(ok().outcome(), Outcome::Ok);
        let final_error = StreamError {
            code: Some("context_length_exceeded".into()),
            kind: None,
            message: "too long".into(),
            retryable: false,
            hint: None,
        };
        assert_eq!(Answer { final_error: Some(final_error), ..ok() }.outcome(), Outcome::Final);
    }

    #[test]
    fn answers_that_are_not_streams() {
        let cases: &[(Option<&str>, bool)] = &[
            (Some("text/event-stream"), true),
            (Some("text/event-stream; charset=utf-8"), true),
            (Some("Text/Event-Stream;charset=UTF-8"), true),
            (Some(" text/event-stream "), true),
            (Some("text/html"), false),
            (Some("application/json"), false),
            (Some("text/event-streams"), false),
            (None, false),
        ];
        for (content_type, expected) in cases {
            assert_eq!(is_event_stream(*content_type), *expected, "{content_type:?}");
        }
        let redirects: &[(u16, bool)] =
            &[(200, false), (301, true), (302, true), (304, false), (307, true), (308, true), (400, false)];
        for (status, expected) in redirects {
            assert_eq!(is_redirect(*status), *expected, "{status}");
        }
        let targets: &[(Option<&str>, &str)] = &[
            (Some("https://login.example.com/portal?next=/v1"), "host login.example.com"),
            (Some("http://10.0.0.1:8080/x"), "host 10.0.0.1"),
            (Some("/openai/v1/responses"), "a path on the same host"),
            (None, "no Location"),
        ];
        for (location, expected) in targets {
            assert_eq!(redirect_target(*location), *expected, "{location:?}");
        }
        for (encoding, expected) in
            [("gzip", true), ("br", true), ("identity", false), ("IDENTITY", false), ("", false)]
        {
            assert_eq!(is_encoded(encoding), expected, "{encoding:?}");
        }
        let heads: &[(&[u8], &str)] = &[
            (b"<html>\r\n  <title>Sign in</title>\n</html>", "<html> <title>Sign in</title> </html>"),
            (b"", ""),
            (b"\x1b[31mred\x00\xff", "[31mred \u{fffd}"),
        ];
        for (body, expected) in heads {
            assert_eq!(printable_head(body), *expected, "{body:?}");
        }
        let long = printable_head("word ".repeat(100).as_bytes());
        assert_eq!((long.chars().count(), long.ends_with("...")), (HEAD_QUOTE + 3, true));
    }
}
