//! The only module that talks to the upstream: one shared ureq `Agent`, one attempt at a time.
//!
//! An attempt sends the prepared request and reads the *whole* answer into memory, parsing
//! SSE while it reads so that an error event, a cut or a stall ends the read at once. It
//! reports what happened (`Answer` or a located `Error`) and decides nothing about retries:
//! that is `retry.rs`, driven by `shield.rs`.
//!
//! The rules of a shielded answer: a redirect is reported, never followed; a success with a
//! `Content-Encoding` is reported at once; a success that is not `text/event-stream` (any
//! case) is a failure, judged like an in-stream error if its JSON carries one. A stream is
//! read up to its terminal event and not a byte further: what is left of the body (usually a
//! chunked body's last chunk) is the answer's `Tail`, read after the client has its answer so
//! the connection can be reused (`upstream/tail.rs`); a clean end of the body also ends it, with
//! an unterminated last event counted (`sse::Parser::finish`). `IDLE_TIMEOUT_SECONDS` bounds
//! both the wait for a byte (ureq's per-read timeout) and the time without an event or part
//! of one (this module's clock, checked after each read), so keep-alive comments, empty
//! events and pings cannot hide a stall. Bytes that trickle in cannot hide one either:
//! whatever must arrive whole (the response head, one event, a body that is not a stream)
//! has twice `IDLE_TIMEOUT_SECONDS` (`WHOLE`), and one event at most `MAX_EVENT_BYTES`.
//! Between reads an attempt asks, at most every `CLIENT_CHECK`, whether its client is still
//! there, and stops if not. Every failure and every answer that reports an error leaves an
//! attempt through `scrub::Scrubber`: no upstream key in what the client or the log sees.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ureq::http;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, DefaultConnector};

use crate::body::Body;
use crate::check::{self, Api, Progress, Verdict};
use crate::config::Config;
use crate::error::{Error, Outcome, Rejection, StreamError};
use crate::retry;
use crate::scrub::Scrubber;
use crate::sse::{Fed, Parser};

mod tail;

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
}

/// A fully read upstream answer with a success status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    /// Headers worth passing on (`x-request-id`, `x-ratelimit-*`...).
    pub headers: Vec<(String, String)>,
    /// The upstream's bytes, exactly as received.
    pub body: Body,
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
pub struct Upstream {
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

/// The largest response head read. Heads are read into ureq's input buffer (16 KiB, below);
/// a head that fills it is reported as too large instead of as "Peer disconnected". Real
/// heads are 1-4 KiB.
pub const MAX_HEAD_BYTES: usize = 15 * 1024;

/// How often, at most, a read loop asks whether the client is still there (a lock and a
/// non-blocking peek at its socket; for a client that half-closed its side, a `100 Continue`
/// written to it), first one `CLIENT_CHECK` after the answer's head: a quick answer is never
/// asked about, and a client that left holds its attempt one or two seconds more (a closed
/// socket reads as half-closed until the `100 Continue` probe draws its reset).
const CLIENT_CHECK: Duration = Duration::from_secs(1);

/// Upstream response headers passed on to the client.
pub fn is_useful_header(name: &str) -> bool {
    const EXACT: [&str; 5] =
        ["x-request-id", "apim-request-id", "x-ms-region", "azureml-model-session", "x-ms-client-request-id"];
    EXACT.contains(&name) || name.starts_with("x-ratelimit-") || name.starts_with("openai-")
}

impl Upstream {
    pub fn new(config: &Config) -> Result<Upstream, Error> {
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
            // 128 KiB each by default, per connection, zero-filled (so resident) the moment it is
            // used: 256 KiB per answer in flight. The input buffer must hold the response head
            // (real ones are 1-3 KiB) and the body is read through it in 16 KiB pieces; the
            // output buffer takes the request in 8 KiB writes. 24 KiB per answer in flight.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(8 * 1024)
            .max_idle_connections(config.limits.max_concurrent)
            .max_idle_connections_per_host(config.limits.max_concurrent)
            .tls_config(tls)
            .build();
        // The default chain (TCP, rustls), each transport wrapped so a tail's deadline holds.
        let connector = DefaultConnector::new().chain(tail::Bounded);
        Ok(Upstream {
            agent: ureq::Agent::with_parts(agent_config, connector, DefaultResolver::default()),
            max_response_bytes: config.limits.max_response_bytes,
            idle: u.idle_timeout,
            scrubber: Scrubber::of(config),
        })
    }

    /// One attempt: send, then read everything (checking SSE on the way). `answering` is
    /// called once the upstream has answered with a success status, before the body is read;
    /// `gone` tells whether the client has left (then the attempt ends with `ClientGone`).
    /// What it reports carries no upstream key.
    pub fn attempt(
        &self,
        out: &Outgoing,
        answering: &mut dyn FnMut(),
        gone: &dyn Fn() -> bool,
    ) -> Result<Answer, Error> {
        match self.read_answer(out, answering, gone) {
            Ok(answer) => Ok(self.scrubbed(answer)),
            Err(e) => Err(self.scrubber.error(e)),
        }
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
        }
        answer
    }

    fn read_answer(
        &self,
        out: &Outgoing,
        answering: &mut dyn FnMut(),
        gone: &dyn Fn() -> bool,
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
        let (body, checked, final_error, tail) = match out.api {
            Some(api) if is_event_stream(content_type.as_deref()) => {
                let idle = self.agent.config().timeout_per_read().unwrap_or(Duration::MAX);
                let limit = self.max_response_bytes;
                let reading = Reading { api, limit, idle, length, max_event: MAX_EVENT_BYTES };
                let (body, final_error, over) = read_stream(&mut reader, &reading, Instant::now, gone)?;
                let tail = (!over).then(|| Tail::new(reader));
                (body, true, final_error, tail)
            }
            Some(_) => return Err(not_an_event_stream(status, content_type, reader, within)),
            None => {
                let (body, end) = read_whole(reader, self.max_response_bytes, within, Instant::now, gone);
                end?;
                (body, false, None, None)
            }
        };
        Ok(Answer { status, content_type, headers, body, checked, final_error, tail })
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

/// Read size: large enough for big chunks, small enough for the stack.
const READ_CHUNK: usize = 16 * 1024;

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

/// Read a whole body that is not a stream, and how that ended: at its end (`Ok`), or with a
/// broken read (a cut), a silent one (a stall), a body still incomplete after `within`
/// (bytes trickling in), or a client that left. `limit` is `MAX_RESPONSE_BYTES`, for the
/// message (the reader enforces it); `clock` tells the time after each read.
fn read_whole(
    mut reader: impl Read,
    limit: u64,
    within: Duration,
    mut clock: impl FnMut() -> Instant,
    gone: &dyn Fn() -> bool,
) -> (Body, Result<(), Error>) {
    let started = clock();
    let mut watch = Watch::new(gone, started);
    let mut body = Body::new();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return (body, Ok(())),
            Ok(n) => {
                if let Err(e) = body.try_push(&chunk[..n]) {
                    return (body, Err(e.into()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let err = read_error(e, body.len(), limit);
                return (body, Err(err));
            }
        }
        let now = clock();
        if now.duration_since(started) >= within {
            let received = body.len();
            return (body, Err(Error::Dripping { received }));
        }
        if watch.left(now) {
            return (body, Err(Error::ClientGone));
        }
    }
}

/// What can be read of an error body, at most `limit` bytes and for at most `within`: the
/// message it carries is all that is wanted from it.
fn read_all(reader: impl Read, limit: u64, within: Duration) -> Vec<u8> {
    read_whole(reader.take(limit), limit, within, Instant::now, &|| false).0.to_vec()
}

/// Whether the client has left, asked at most every `CLIENT_CHECK`, from `CLIENT_CHECK`
/// after the reading started.
struct Watch<'g> {
    gone: &'g dyn Fn() -> bool,
    next: Instant,
}

impl<'g> Watch<'g> {
    fn new(gone: &'g dyn Fn() -> bool, started: Instant) -> Self {
        Watch { gone, next: started + CLIENT_CHECK }
    }

    /// Whether the client has left, if it is time to ask at `now`.
    fn left(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + CLIENT_CHECK;
        (self.gone)()
    }
}

/// What reading one stream needs to know.
struct Reading {
    api: Api,
    /// `MAX_RESPONSE_BYTES`, for the error message (the reader enforces it).
    limit: u64,
    /// `IDLE_TIMEOUT_SECONDS`: the longest wait for a byte (ureq's per-read timeout) and the
    /// longest time without an event (checked here, after each read).
    idle: Duration,
    /// The body's `Content-Length`, if it has one.
    length: Option<u64>,
    /// `MAX_EVENT_BYTES`: the largest event still arriving.
    max_event: usize,
}

/// One stream being read: its bytes, the SSE framing and what the events add up to.
struct Stream<'r> {
    reading: &'r Reading,
    body: Body,
    parser: Parser,
    progress: Progress,
    /// When the last event (not a keep-alive) completed.
    last_event: Instant,
    /// When the last sign of an answer came: an event, or bytes of one still arriving.
    last_progress: Instant,
    /// `Parser::pending_event_bytes` after the previous read.
    pending: usize,
    /// Bytes read from the body: the answer's, and any after its terminal event.
    received: usize,
}

/// The end of a stream: the terminal event (with the final error it reported, if any).
type Terminal = Option<StreamError>;

impl<'r> Stream<'r> {
    fn new(reading: &'r Reading, now: Instant) -> Self {
        Stream {
            reading,
            body: Body::new(),
            parser: Parser::new(),
            progress: Progress::default(),
            last_event: now,
            last_progress: now,
            pending: 0,
            received: 0,
        }
    }

    /// The bytes of one read, received at `now`: `Some` once the terminal event is in.
    fn take(&mut self, bytes: &[u8], now: Instant) -> Result<Option<Terminal>, Error> {
        self.received += bytes.len();
        let received = self.received;
        let (api, progress) = (self.reading.api, &mut self.progress);
        let mut outcome = Ok(None);
        let mut moved = false;
        let fed = self.parser.feed(bytes, |event| {
            let verdict = progress.observe(api, &event);
            moved |= verdict != Verdict::KeepAlive;
            outcome = judge(verdict, received);
            matches!(outcome, Ok(None))
        });
        // Nothing after the terminal event belongs to the answer, whatever the read held.
        let unread = match fed {
            Fed::All => 0,
            Fed::Stopped { unread } => unread,
        };
        self.body.try_push(&bytes[..bytes.len() - unread])?;
        // An event still arriving (a long one, slowly) is progress too, for a while; a
        // comment is not.
        let pending = self.parser.pending_event_bytes();
        if moved {
            self.last_event = now;
        }
        if moved || (pending > 0 && pending != self.pending) {
            self.last_progress = now;
        }
        self.pending = pending;
        if outcome.as_ref().is_ok_and(Option::is_none) {
            let idle = self.reading.idle;
            if pending > self.reading.max_event {
                return Err(Error::EventTooLarge { limit: self.reading.max_event });
            }
            if now.duration_since(self.last_progress) >= idle {
                return Err(Error::EventStall { received });
            }
            if now.duration_since(self.last_event) >= idle.saturating_mul(WHOLE) {
                return Err(Error::Dripping { received });
            }
        }
        outcome
    }

    /// The body ended cleanly: an unterminated last event still counts, and a chat stream
    /// without `[DONE]` is whole once every choice has finished.
    fn end(mut self) -> Result<(Body, Terminal), Error> {
        let received = self.body.len();
        let (api, progress) = (self.reading.api, &mut self.progress);
        let mut outcome = Ok(None);
        let line_ends = self.parser.finish(|event| {
            outcome = judge(progress.observe(api, &event), received);
            true
        });
        match outcome? {
            Some(terminal) => {
                // Complete the last event for the client's own parser.
                self.body.push(line_ends);
                Ok((self.body, terminal))
            }
            None if api == Api::Chat && self.progress.all_choices_finished() => {
                self.body.push(line_ends);
                Ok((self.body, None))
            }
            None => Err(Error::Truncated {
                received,
                reason: "the stream ended before its terminal event".into(),
            }),
        }
    }

    /// Whether the body is known to be over without another read (its length is reached).
    fn body_is_over(&self) -> bool {
        self.reading.length == Some(self.received as u64)
    }
}

/// One event's verdict as the read loop sees it: go on (`Ok(None)`), the end, or a failure.
fn judge(verdict: Verdict, received: usize) -> Result<Option<Terminal>, Error> {
    match verdict {
        Verdict::Pending | Verdict::KeepAlive => Ok(None),
        Verdict::Complete => Ok(Some(None)),
        Verdict::Failed(e) if e.retryable => Err(Error::InStream(e)),
        Verdict::Failed(e) => Ok(Some(Some(e))),
        Verdict::Malformed(reason) => Err(Error::Truncated { received, reason }),
    }
}

/// Read an SSE stream until its terminal event, checking each event as it completes, and
/// nothing after it: an upstream that keeps the connection open (or sends keep-alives) after
/// the terminal event does not hold the answer. Returns the answer's bytes (the stream up to
/// and including the terminal event's last line end, never what followed it in the same read,
/// plus an LF if they end in a CR, the first half of a CRLF) and a final stream
/// error if one was reported; a retryable error, a cut, a stall (no byte, or no event, for
/// `idle`; no complete event for `WHOLE * idle`), an event over `max_event` bytes, or a
/// client that left (`gone`, asked at most every `CLIENT_CHECK`) is an `Err`. `clock` tells
/// the time after each read.
fn read_stream(
    reader: &mut impl Read,
    reading: &Reading,
    mut clock: impl FnMut() -> Instant,
    gone: &dyn Fn() -> bool,
) -> Result<(Body, Terminal, bool), Error> {
    let started = clock();
    let mut stream = Stream::new(reading, started);
    let mut watch = Watch::new(gone, started);
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return stream.end().map(|(body, terminal)| (body, terminal, true)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e, stream.body.len(), reading.limit)),
        };
        let now = clock();
        if watch.left(now) {
            return Err(Error::ClientGone);
        }
        if let Some(terminal) = stream.take(&chunk[..n], now)? {
            if stream.body.chunks().last().and_then(<[u8]>::last) == Some(&b'\r') {
                // The LF of a CRLF split off by the read is not waited for: it is supplied.
                stream.body.push(b"\n");
            }
            let over = stream.body_is_over();
            if over {
                // Returns at once; reaching the end hands the connection back to the pool.
                let _ = reader.read(&mut chunk);
            }
            return Ok((stream.body, terminal, over));
        }
    }
}

/// Classify a failed body read: over the limit, a stall, or a cut.
fn read_error(e: io::Error, received: usize, limit: u64) -> Error {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
    match inner {
        Some(ureq::Error::BodyExceedsLimit(_)) => Error::ResponseTooLarge { limit },
        Some(ureq::Error::Timeout(_)) => Error::Stalled { received },
        _ if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            Error::Stalled { received }
        }
        _ => Error::Truncated { received, reason: e.to_string() },
    }
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
    use std::cell::Cell;
    use std::rc::Rc;

    /// A reader that hands out the given pieces, each at its second on a fake clock, then
    /// fails with `end` (or EOF); it counts the reads made.
    struct Script {
        pieces: Vec<(u64, Vec<u8>)>,
        end: Option<io::ErrorKind>,
        now: Rc<Cell<u64>>,
        reads: Rc<Cell<usize>>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.set(self.reads.get() + 1);
            if self.pieces.is_empty() {
                return match self.end {
                    Some(kind) => Err(io::Error::new(kind, "scripted")),
                    None => Ok(0),
                };
            }
            let (at, piece) = self.pieces.remove(0);
            self.now.set(at);
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    /// A short name for a failed read ("cut@13B", "stall", "event:server_error").
    fn label(e: &Error) -> String {
        match e {
            Error::Connect(_) => "connect".into(),
            Error::Status(r) => r.status.to_string(),
            Error::Truncated { received, .. } => format!("cut@{received}B"),
            Error::Stalled { .. } => "stall".into(),
            Error::EventStall { .. } => "stall-events".into(),
            Error::Dripping { received } => format!("drip@{received}B"),
            Error::EventTooLarge { .. } => "event-too-large".into(),
            Error::ClientGone => "client-gone".into(),
            Error::NotAnEventStream { status, .. } => format!("not-sse-{status}"),
            Error::Redirect { status, .. } => format!("redirect-{status}"),
            Error::Encoded { .. } => "encoded".into(),
            Error::InStream(e) => format!("event:{}", e.code.as_deref().unwrap_or("error")),
            Error::ResponseTooLarge { .. } => "too-large".into(),
            other => other.to_string(),
        }
    }

    /// `ok LEN reads=N` (with `+ENDS` when line ends were added), `final CODE`, or the label
    /// of the error. Pieces arrive at second 0 unless given as `(second, text)`.
    fn run(api: Api, pieces: &[(u64, &str)], end: Option<io::ErrorKind>, length: Option<u64>) -> String {
        run_with(api, pieces, end, length, Limits::default())
    }

    /// What `run` reads with beyond the pieces: the idle timeout is 10 s.
    struct Limits {
        max_event: usize,
        /// The client leaves at this second.
        gone_at: Option<u64>,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits { max_event: MAX_EVENT_BYTES, gone_at: None }
        }
    }

    fn run_with(
        api: Api,
        pieces: &[(u64, &str)],
        end: Option<io::ErrorKind>,
        length: Option<u64>,
        limits: Limits,
    ) -> String {
        let (now, reads) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let pieces = pieces.iter().map(|(at, p)| (*at, p.as_bytes().to_vec())).collect();
        let script = Script { pieces, end, now: Rc::clone(&now), reads: Rc::clone(&reads) };
        let idle = Duration::from_secs(10);
        let reading = Reading { api, limit: 1 << 20, idle, length, max_event: limits.max_event };
        let start = Instant::now();
        let mut script = script;
        let gone = || limits.gone_at.is_some_and(|at| now.get() >= at);
        let got = read_stream(&mut script, &reading, || start + Duration::from_secs(now.get()), &gone);
        match got {
            Ok((body, None, _)) => {
                format!("ok {} reads={}", String::from_utf8_lossy(&body.to_vec()).len(), reads.get())
            }
            Ok((_, Some(e), _)) => format!("final {}", e.code.unwrap_or_default()),
            Err(e) => label(&e),
        }
    }

    #[test]
    #[rustfmt::skip] // one row per case
    fn stream_reads() {
        use io::ErrorKind::{ConnectionReset, TimedOut};
        let done = "data: {\"type\":\"response.completed\",\"response\":{\"error\":null}}\n\n";
        let delta = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n";
        let failed = "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}}\n\n";
        let final_ = "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"context_length_exceeded\",\"message\":\"x\"}}}\n\n";
        let ping = ": keep-alive\n\n";
        let empty = "data: \n\n";
        let keepalive = "data: {\"type\":\"keepalive\"}\n\n";
        let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";
        let stop = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let stop_1 = "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let two = "data: {\"choices\":[{\"index\":0,\"delta\":{}},{\"index\":1,\"delta\":{}}]}\n\n";
        let (dl, cl) = (delta.len(), chunk.len());
        let no_blank = &done[..done.len() - 2];
        let (r, c) = (Api::Responses, Api::Chat);
        let glued = format!("{delta}{done}{ping}");
        let crlf = done.replace('\n', "\r\n");
        type Case<'a> = (Api, Vec<(u64, &'a str)>, Option<io::ErrorKind>, Option<u64>, String);
        let cases: Vec<Case> = vec![
            (r, vec![(0, delta), (0, done)], None, None, format!("ok {} reads=2", dl + done.len())),
            // after the terminal event nothing more is read: no wait for the body's end
            (r, vec![(0, delta), (0, done)], Some(ConnectionReset), None, format!("ok {} reads=2", dl + done.len())),
            (r, vec![(0, delta), (0, done), (5, ping), (9, ping)], Some(TimedOut), None, format!("ok {} reads=2", dl + done.len())),
            // a body whose length is reached is read to its end (its connection is reused)
            (r, vec![(0, delta), (0, done)], None, Some((dl + done.len()) as u64), format!("ok {} reads=3", dl + done.len())),
            // what follows the terminal event in the same read is not part of the answer
            (r, vec![(0, &glued)], Some(TimedOut), None, format!("ok {} reads=1", dl + done.len())),
            (r, vec![(0, delta)], None, None, format!("cut@{dl}B")),
            (r, vec![(0, delta)], Some(ConnectionReset), None, format!("cut@{dl}B")),
            (r, vec![(0, delta)], Some(TimedOut), None, "stall".into()),
            (r, vec![(0, delta), (0, failed), (0, done)], None, None, "event:server_error".into()),
            (r, vec![(0, delta), (0, final_)], None, None, "final context_length_exceeded".into()),
            (r, vec![(0, &done[..20]), (0, &done[20..])], None, None, format!("ok {} reads=2", done.len())),
            (r, vec![(0, &crlf[..crlf.len() - 1]), (0, "\n")], Some(TimedOut), None, format!("ok {} reads=1", crlf.len())),
            (r, vec![(0, "event: response.completed\rdata: {}\r\r")], Some(TimedOut), None, "ok 37 reads=1".into()),
            (r, vec![(0, "data: {oops\n\n")], None, None, "cut@13B".into()),
            // events, not bytes, reset the stall clock
            (r, vec![(0, delta), (4, ping), (8, empty), (9, keepalive), (10, ping), (11, done)], None, None, "stall-events".into()),
            (r, vec![(0, delta), (4, ping), (8, delta), (12, ping), (17, done)], None, None, format!("ok {} reads=5", 2 * dl + 2 * ping.len() + done.len())),
            (r, vec![(5, ping), (10, ping), (11, delta)], None, None, "stall-events".into()),
            (r, vec![(0, &delta[..10]), (6, &delta[10..20]), (11, &delta[20..30]), (12, &delta[30..]), (13, done)], None, None, format!("ok {} reads=5", dl + done.len())),
            (r, vec![(0, ": keep"), (6, "-alive\n"), (11, "\n"), (12, done)], None, None, "stall-events".into()),
            // a last event without its blank line counts at a clean end, not after a cut
            (r, vec![(0, delta), (0, no_blank)], None, None, format!("ok {} reads=3", dl + done.len())),
            (r, vec![(0, delta), (0, no_blank)], Some(ConnectionReset), None, format!("cut@{}B", dl + no_blank.len())),
            (r, vec![(0, delta), (0, &no_blank[..30])], None, None, format!("cut@{}B", dl + 30)),
            // [DONE] before any choice is not an answer (fold.rs): malformed, retried
            (c, vec![(0, "data: {\"choices\":[]}\n\n"), (0, "data: [DONE]\n\n")], None, None, "cut@36B".into()),
            (c, vec![(0, "data: {\"choices\":[]}\n\n")], None, None, "cut@22B".into()),
            (c, vec![(0, chunk), (0, "data: [DONE]")], None, None, format!("ok {} reads=3", cl + 14)),
            // chat without [DONE]: whole at a clean end once every choice finished
            (c, vec![(0, chunk), (0, stop)], None, None, format!("ok {} reads=3", cl + stop.len())),
            (c, vec![(0, chunk), (0, &stop[..stop.len() - 1])], None, None, format!("ok {} reads=3", cl + stop.len())),
            (c, vec![(0, chunk), (0, stop)], Some(ConnectionReset), None, format!("cut@{}B", cl + stop.len())),
            (c, vec![(0, chunk)], None, None, format!("cut@{cl}B")),
            (c, vec![(0, two), (0, stop)], None, None, format!("cut@{}B", two.len() + stop.len())),
            (c, vec![(0, two), (0, stop), (0, stop_1)], None, None, format!("ok {} reads=4", two.len() + stop.len() + stop_1.len())),
        ];
        for (api, pieces, end, length, expected) in cases {
            assert_eq!(run(api, &pieces, end, length), expected, "{pieces:?} then {end:?}");
        }
    }

    #[test]
    #[rustfmt::skip] // one row per case
    fn what_trickles_in_is_bounded() {
        use io::ErrorKind::TimedOut;
        let done = "data: {\"type\":\"response.completed\",\"response\":{\"error\":null}}\n\n";
        let delta = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n";
        let big = format!("data: {{\"type\":\"response.output_text.delta\",\"delta\":\"{}\"}}\n\n", "a".repeat(100));
        let dl = delta.len();
        // one byte a second inside one event (idle 10 s): ends at second 20, 21 bytes in
        let drip: Vec<(u64, &str)> = (0..dl).map(|i| (i as u64, &delta[i..=i])).chain([(dl as u64, done)]).collect();
        // lines that make no event ("x" is an unknown field), each start counted as progress
        let lines: Vec<(u64, &str)> = (0..12).map(|i| (i * 5, if i % 2 == 0 { "x" } else { "\n" })).collect();
        let small = || Limits { max_event: 64, ..Limits::default() };
        let gone_at = |s| Limits { gone_at: Some(s), ..Limits::default() };
        type Case<'a> = (Vec<(u64, &'a str)>, Option<io::ErrorKind>, Limits, String);
        let cases: Vec<Case> = vec![
            (drip, None, Limits::default(), "drip@21B".into()),
            (lines, None, Limits::default(), "drip@5B".into()),
            // a long event arriving in pieces is progress while it takes less than twice idle
            (vec![(0, &delta[..10]), (9, &delta[10..20]), (18, &delta[20..]), (19, done)], None, Limits::default(), format!("ok {} reads=4", dl + done.len())),
            (vec![(0, &delta[..10]), (9, &delta[10..20]), (18, &delta[20..30]), (20, &delta[30..40])], None, Limits::default(), "drip@40B".into()),
            // one event past the limit while it arrives; a larger complete one is fine
            (vec![(0, &big[..80]), (0, &big[80..]), (0, done)], None, small(), "event-too-large".into()),
            (vec![(0, &big), (0, done)], None, small(), format!("ok {} reads=2", big.len() + done.len())),
            // the client leaves: noticed at the next read
            (vec![(0, delta), (1, delta), (2, delta), (3, delta), (4, done)], None, gone_at(3), "client-gone".into()),
            (vec![(0, delta), (1, delta), (2, done)], Some(TimedOut), gone_at(3), format!("ok {} reads=3", 2 * dl + done.len())),
        ];
        for (pieces, end, limits, expected) in cases {
            assert_eq!(run_with(Api::Responses, &pieces, end, None, limits), expected, "{pieces:?}");
        }
    }

    #[test]
    fn the_client_is_asked_at_most_every_client_check() {
        let asked = Cell::new(0);
        let gone = || {
            asked.set(asked.get() + 1);
            false
        };
        let start = Instant::now();
        let mut watch = Watch::new(&gone, start);
        let at_ms = [0, 1, 500, 999, 1000, 1001, 1999, 2500, 3499, 3500, 9000];
        let left: Vec<bool> = at_ms.iter().map(|ms| watch.left(start + Duration::from_millis(*ms))).collect();
        assert_eq!((asked.get(), left.iter().any(|l| *l)), (4, false), "asked at 1000, 2500, 3500, 9000 ms");
    }

    #[test]
    fn whole_bodies_have_a_deadline() {
        let (now, reads) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let body = "{\"data\":[]}";
        let label = |(body, end): (Body, Result<(), Error>)| match end {
            Ok(()) => format!("ok {}", body.len()),
            Err(e) => label(&e),
        };
        let cases: &[(&[u64], Option<u64>, &str)] = &[
            (&[0, 1, 2], None, "ok 3"),
            (&[0, 10, 19], None, "ok 3"),
            (&[0, 10, 20], None, "drip@3B"),
            (&[0, 1, 2], Some(1), "client-gone"),
        ];
        for (times, gone_at, expected) in cases {
            now.set(0);
            let pieces =
                times.iter().zip(body.chars()).map(|(t, c)| (*t, c.to_string().into_bytes())).collect();
            let script = Script { pieces, end: None, now: Rc::clone(&now), reads: Rc::clone(&reads) };
            let start = Instant::now();
            let clock = || start + Duration::from_secs(now.get());
            let gone = || gone_at.is_some_and(|at| now.get() >= at);
            let got = read_whole(script, 1 << 20, Duration::from_secs(20), clock, &gone);
            assert_eq!(label(got), *expected, "{times:?} {gone_at:?}");
        }
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
