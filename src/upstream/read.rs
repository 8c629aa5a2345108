//! Reading an upstream body into memory: the SSE read loop, and the read of a body that is
//! not a stream, each a loop over the `impl Read` and the clock it is given.
//!
//! `read_stream` reads a stream up to its terminal event and not a byte further: each read
//! goes to the SSE parser (`sse.rs`), each completed event to its API's check (`check.rs`),
//! and the answer's bytes are kept up to the terminal event's last line end. A clean end of
//! the body also ends the stream, with an unterminated last event counted
//! (`sse::Parser::finish`). A retryable error event, a cut, a stall (no byte for
//! `IDLE_TIMEOUT_SECONDS`, the reader's timeout; no event or part of one for as long, checked
//! here after each read, so keep-alive comments, empty events and pings cannot hide one; no
//! complete event for `WHOLE` times as long, so bytes that trickle in cannot either), an event
//! over `MAX_EVENT_BYTES` while it arrives, or a client that left ends the read at once with
//! an `Error`. What the read reports is the answer's bytes (or, for a chat answer to be
//! translated, the check's fold of it, which is all the translation needs: `Kept`), how the
//! stream ended (`End`: complete, or a final error event) and whether the body has a rest
//! (`Rest`) for the caller to finish as a `Tail`. `read_whole` reads a body that is not a
//! stream within its deadline, `read_all` what can be read of an error body. Between reads
//! the loops ask, at most every `CLIENT_CHECK`, whether their client is still there (`Watch`).
//!
//! It does no I/O beyond the reader it is given: it never connects, sends, or hands a
//! connection back itself (the reader does, when its end is read); it knows ureq only to
//! classify the reader's failures (`read_error`). It tells the time only with the clock it is
//! given (`read_all`, for error bodies, gives it `Instant::now`), and decides nothing about
//! retries: it says what happened.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::WHOLE;
use crate::body::Body;
use crate::check::{Api, Progress, Verdict};
use crate::error::{Error, StreamError};
use crate::fold::{self, Keep};
use crate::memory::{Hold, Overdrawn};
use crate::sse::{Fed, Parser};
use crate::usage::Usage;

/// How often, at most, a read loop asks whether the client is still there (a lock and a
/// non-blocking peek at its socket; for a client that half-closed its side, a `100 Continue`
/// written to it), first one `CLIENT_CHECK` after the answer's head: a quick answer is never
/// asked about, and a client that left holds its attempt one or two seconds more (a closed
/// socket reads as half-closed until the `100 Continue` probe draws its reset).
const CLIENT_CHECK: Duration = Duration::from_secs(1);

/// Read size: what one read copies out of ureq's input buffer (the socket is read into that,
/// 10 KiB at a time, whatever this is). A stack array: its pages stay resident for the
/// connection thread's life, with thousands of threads.
const READ_CHUNK: usize = 4 * 1024;

/// Read a whole body that is not a stream, and how that ended: at its end (`Ok`), or with a
/// broken read (a cut), a silent one (a stall), a body still incomplete after `within`
/// (bytes trickling in), or a client that left. `limit` is `MAX_RESPONSE_BYTES`, for the
/// message (the reader enforces it); `clock` tells the time after each read.
pub fn read_whole(
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
pub fn read_all(reader: impl Read, limit: u64, within: Duration) -> Vec<u8> {
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
pub struct Reading {
    pub api: Api,
    /// `MAX_RESPONSE_BYTES`, for the error message (the reader enforces it).
    pub limit: u64,
    /// `IDLE_TIMEOUT_SECONDS`: the longest wait for a byte (ureq's per-read timeout) and the
    /// longest time without an event (checked here, after each read).
    pub idle: Duration,
    /// The body's `Content-Length`, if it has one.
    pub length: Option<u64>,
    /// `MAX_EVENT_BYTES`: the largest event still arriving.
    pub max_event: usize,
    /// What a chat stream's check keeps: `Shape` (its bytes are kept), or `Everything` for an
    /// answer to be translated, which is made from the check's fold: then its bytes, which
    /// the client never gets, are not kept, and the fold is charged as it grows.
    pub keep: Keep,
}

/// What a read keeps of an answer: its bytes, or its fold.
#[derive(Debug)]
pub enum Kept {
    Bytes(Body),
    /// Boxed: a fold is a few hundred bytes, and moved on to the delivery.
    Folded(Box<Folded>),
}

/// A chat answer folded as it was read (`Keep::Everything`), charged against the memory
/// budget for as long as it lives.
#[derive(Debug)]
pub struct Folded {
    /// The fold's answer (`Err` only for a fold the check did not finish, never in practice).
    pub answer: Result<fold::Answer, String>,
    /// The answer's length in bytes, as received.
    pub len: usize,
    /// The fold's charge, given back when it drops.
    _held: Hold,
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
    /// The answer's bytes, kept or folded.
    len: usize,
    /// What the fold holds, charged (`Keep::Everything`).
    held: Hold,
}

/// How a stream ended: at its terminal event, or at the clean end of its body.
#[derive(Debug)]
pub enum End {
    /// The answer is complete (`response.completed`, `[DONE]`, a chat stream whose choices
    /// all finished...).
    Complete,
    /// The stream reported a final (non-retryable) error: the answer is delivered as it is.
    Final(StreamError),
}

/// Where a stream stands after an event, or after a read: read on, or it has ended.
enum Step {
    /// No terminal event yet.
    ReadOn,
    /// The terminal event is in.
    Ended(End),
}

/// What is left of the body once the answer is read.
#[derive(Debug)]
pub enum Rest {
    /// Nothing: the body was read to its end (it ended, or its length was reached and the
    /// read that reports its end was made), so its connection is back in the pool.
    Nothing,
    /// Maybe more after the terminal event (usually a chunked body's last chunk): the caller
    /// finishes it as a `Tail` once the answer is written, so the connection is reused.
    Unread,
}

impl<'r> Stream<'r> {
    fn new(reading: &'r Reading, now: Instant) -> Self {
        Stream {
            reading,
            body: Body::new(),
            parser: Parser::new(),
            progress: Progress::new(reading.keep),
            last_event: now,
            last_progress: now,
            pending: 0,
            received: 0,
            len: 0,
            held: Hold::default(),
        }
    }

    /// Keep the answer's next bytes, or, when they are folded whole, charge what the fold
    /// holds now.
    fn keep(&mut self, bytes: &[u8]) -> Result<(), Overdrawn> {
        self.len += bytes.len();
        match self.reading.keep {
            Keep::Shape => self.body.try_push(bytes),
            Keep::Everything => self.held.raise_to(self.progress.held()),
        }
    }

    /// What the read keeps of the answer.
    fn kept(self) -> Kept {
        match self.reading.keep {
            Keep::Shape => Kept::Bytes(self.body),
            Keep::Everything => Kept::Folded(Box::new(Folded {
                answer: self.progress.finish(),
                len: self.len,
                _held: self.held,
            })),
        }
    }

    /// The bytes of one read, received at `now`: appended to the body up to the terminal
    /// event, each event they complete judged, the stall clocks and the size of the event
    /// still arriving checked; `Ended` once the terminal event is in.
    fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<Step, Error> {
        self.received += bytes.len();
        let received = self.received;
        let (api, progress) = (self.reading.api, &mut self.progress);
        let mut outcome = Ok(Step::ReadOn);
        let mut moved = false;
        let fed = self.parser.feed(bytes, |event| {
            let verdict = progress.observe(api, &event);
            moved |= verdict != Verdict::KeepAlive;
            outcome = judge(verdict, received);
            matches!(outcome, Ok(Step::ReadOn))
        });
        // Nothing after the terminal event belongs to the answer, whatever the read held.
        let unread = match fed {
            Fed::All => 0,
            Fed::Stopped { unread } => unread,
        };
        self.keep(&bytes[..bytes.len() - unread])?;
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
        if matches!(outcome, Ok(Step::ReadOn)) {
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
    fn end(&mut self) -> Result<End, Error> {
        let received = self.received;
        let (api, progress) = (self.reading.api, &mut self.progress);
        let mut outcome = Ok(Step::ReadOn);
        let line_ends = self.parser.finish(|event| {
            outcome = judge(progress.observe(api, &event), received);
            true
        });
        let end = match outcome? {
            Step::Ended(end) => end,
            Step::ReadOn if api == Api::Chat && self.progress.all_choices_finished() => End::Complete,
            Step::ReadOn => {
                let reason = "the stream ended before its terminal event".into();
                return Err(Error::Truncated { received, reason });
            }
        };
        // Complete the last event for the client's own parser (or charge its fold).
        self.len += line_ends.len();
        match self.reading.keep {
            Keep::Shape => self.body.push(line_ends),
            Keep::Everything => self.held.raise_to(self.progress.held())?,
        }
        Ok(end)
    }

    /// Whether the body is known to be over without another read (its length is reached).
    fn body_is_over(&self) -> bool {
        self.reading.length == Some(self.received as u64)
    }
}

/// One event's verdict as the read loop sees it: read on, the end, or a failure.
fn judge(verdict: Verdict, received: usize) -> Result<Step, Error> {
    match verdict {
        Verdict::Pending | Verdict::KeepAlive => Ok(Step::ReadOn),
        Verdict::Complete => Ok(Step::Ended(End::Complete)),
        Verdict::Failed(e) if e.retryable => Err(Error::InStream(e)),
        Verdict::Failed(e) => Ok(Step::Ended(End::Final(e))),
        Verdict::Malformed(reason) => Err(Error::Truncated { received, reason }),
    }
}

/// Read an SSE stream until its terminal event, checking each event as it completes, and
/// nothing after it: an upstream that keeps the connection open (or sends keep-alives) after
/// the terminal event does not hold the answer. Returns the answer's bytes (the stream up to
/// and including the terminal event's last line end, never what followed it in the same read,
/// plus an LF if they end in a CR, the first half of a CRLF; or, with `Keep::Everything`, the
/// check's fold of them instead), how the stream ended (complete,
/// or with a final error event) and what is left of the body; a retryable error, a cut, a
/// stall (no byte, or no event, for `idle`; no complete event for `WHOLE * idle`), an event
/// over `max_event` bytes, or a client that left (`gone`, asked at most every `CLIENT_CHECK`)
/// is an `Err`. `clock` tells the time after each read. Beside that, whatever the read came
/// to, the usage the upstream reported on the way (a failed attempt's cost too).
pub fn read_stream(
    reader: &mut impl Read,
    reading: &Reading,
    mut clock: impl FnMut() -> Instant,
    gone: &dyn Fn() -> bool,
) -> (Received, Option<Usage>) {
    let started = clock();
    let mut stream = Stream::new(reading, started);
    let read = read_events(reader, &mut stream, clock, Watch::new(gone, started));
    let usage = stream.progress.usage();
    (read.map(|(end, rest)| (stream.kept(), end, rest)), usage)
}

/// What a stream's read came to: what it keeps of the answer (its bytes, or the check's fold
/// of them), how it ended and what is left of the body; or why it failed.
pub type Received = Result<(Kept, End, Rest), Error>;

/// `read_stream`'s loop, over a `stream` its caller keeps.
fn read_events(
    reader: &mut impl Read,
    stream: &mut Stream,
    mut clock: impl FnMut() -> Instant,
    mut watch: Watch,
) -> Result<(End, Rest), Error> {
    let reading = stream.reading;
    let mut chunk = [0u8; READ_CHUNK];
    let end = loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return stream.end().map(|end| (end, Rest::Nothing)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e, stream.received, reading.limit)),
        };
        let now = clock();
        if watch.left(now) {
            return Err(Error::ClientGone);
        }
        match stream.receive(&chunk[..n], now)? {
            Step::ReadOn => {}
            Step::Ended(end) => break end,
        }
    };
    if stream.body.chunks().last().and_then(<[u8]>::last) == Some(&b'\r') {
        // The LF of a CRLF split off by the read is not waited for: it is supplied.
        stream.body.push(b"\n");
    }
    let rest = if stream.body_is_over() {
        // Returns at once; reaching the end hands the connection back to the pool.
        let _ = reader.read(&mut chunk);
        Rest::Nothing
    } else {
        Rest::Unread
    };
    Ok((end, rest))
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
    use crate::upstream::MAX_EVENT_BYTES;
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
        keep: Keep,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits { max_event: MAX_EVENT_BYTES, gone_at: None, keep: Keep::Shape }
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
        let (max_event, keep) = (limits.max_event, limits.keep);
        let reading = Reading { api, limit: 1 << 20, idle, length, max_event, keep };
        let start = Instant::now();
        let mut script = script;
        let gone = || limits.gone_at.is_some_and(|at| now.get() >= at);
        let (got, _) = read_stream(&mut script, &reading, || start + Duration::from_secs(now.get()), &gone);
        match got {
            Ok((Kept::Bytes(body), End::Complete, _)) => {
                format!("ok {} reads={}", String::from_utf8_lossy(&body.to_vec()).len(), reads.get())
            }
            Ok((Kept::Folded(f), End::Complete, _)) => {
                let text = f.answer.map(|a| a.choices[&0].content.joined().unwrap_or_default());
                format!("folded {} {text:?} held={} reads={}", f.len, f._held.bytes(), reads.get())
            }
            Ok((_, End::Final(e), _)) => format!("final {}", e.code.unwrap_or_default()),
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

    /// A chat answer to be translated is read into the check's fold, charged as it grows (a
    /// piece costs 32 bytes beyond its text), and its bytes are not kept; it ends, fails and
    /// is cut exactly as when its bytes are kept.
    #[test]
    #[rustfmt::skip] // one row per case
    fn a_translated_answer_is_kept_as_its_fold() {
        let chunk = |text: &str| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n");
        let (hi, there) = (chunk("hi"), chunk(" there"));
        let stop = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let done = "data: [DONE]\n\n";
        let error = |code: &str| format!("data: {{\"choices\":[],\"error\":{{\"code\":\"{code}\",\"message\":\"x\"}}}}\n\n");
        let (server_error, final_error) = (error("server_error"), error("context_length_exceeded"));
        let len = hi.len() + there.len() + stop.len();
        let glued = format!("{hi}{there}{stop}{done}{hi}");
        let last = stop.replace("\"delta\":{}", "\"delta\":{\"content\":\"!\"}");
        let everything = || Limits { keep: Keep::Everything, ..Limits::default() };
        type Case<'a> = (Vec<&'a str>, Limits, String);
        let cases: Vec<Case> = vec![
            (vec![&hi, &there, stop, done], Limits::default(), format!("ok {} reads=4", len + done.len())),
            (vec![&hi, &there, stop, done], everything(), format!("folded {} Ok(\"hi there\") held=72 reads=4", len + done.len())),
            // the rest of the same read is not part of the answer, nor counted in it
            (vec![&glued], everything(), format!("folded {} Ok(\"hi there\") held=72 reads=1", len + done.len())),
            (vec![&hi, &there, stop], everything(), format!("folded {len} Ok(\"hi there\") held=72 reads=4")),
            // an unterminated last event counts at a clean end, and so does its charge
            (vec![&hi, &there, stop.trim_end()], everything(), format!("folded {len} Ok(\"hi there\") held=72 reads=4")),
            (vec![&hi, last.trim_end()], everything(), format!("folded {} Ok(\"hi!\") held=67 reads=3", hi.len() + last.len())),
            (vec![&hi, &there], everything(), format!("cut@{}B", hi.len() + there.len())),
            (vec![&hi, &server_error, done], everything(), "event:server_error".into()),
            (vec![&hi, &final_error], everything(), "final context_length_exceeded".into()),
            (vec![&hi, "data: {oops\n\n"], everything(), format!("cut@{}B", hi.len() + 13)),
        ];
        for (pieces, limits, expected) in cases {
            let pieces: Vec<(u64, &str)> = pieces.into_iter().map(|p| (0, p)).collect();
            assert_eq!(run_with(Api::Chat, &pieces, None, None, limits), expected, "{pieces:?}");
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
}
