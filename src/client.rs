//! The client side of one request once its body is in: it gets exactly one answer.
//!
//! A `Slot` holds the request until the answer is written. Three parties may write to it, and
//! the slot's lock makes sure only the first final answer goes out: the request's own thread
//! (the reply), the keepalive ticker (the 200 head and `keepalive` events, for a streaming
//! Responses client with `KEEPALIVE_SECONDS` on), and the shutdown drain (a 503, or an
//! in-stream error once the head is out). Once the head is sent, the answer follows as the
//! rest of a chunked body, and a failure can only be an in-stream `response.failed` event.
//! Keepalive events carry no part of the answer. This module writes to the client; it never
//! reads the body and never talks to an upstream.
//!
//! Every write has a deadline (`Pace`): a client that takes no byte for
//! `CLIENT_WRITE_TIMEOUT_SECONDS`, or takes its answer slower than `CLIENT_MIN_BYTES_PER_SECOND`
//! beyond that, is cut off, so a slow reader holds its thread, its answer and its lock for a
//! bounded time. The shutdown drain never waits for a slot being written
//! (`finish_unless_busy`): that write's deadline, or the process's exit, ends it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::config::Pace;
use crate::date::http_date;
use crate::reply::Reply;
use crate::sync;

/// One request's way back to its client.
pub struct Slot {
    state: Mutex<State>,
    options: Options,
    /// The newest progress line not yet sent (Codex with `CODEX_PROGRESS`).
    progress: Mutex<Option<String>>,
}

/// The timeout of the next write: the time left before `deadline`, at most `stall`; `None`
/// once the deadline has passed.
fn write_timeout(now: Instant, deadline: Instant, stall: Duration) -> Option<Duration> {
    Some(deadline.saturating_duration_since(now).min(stall)).filter(|left| !left.is_zero())
}

/// How a slot may keep its client waiting, and how long its client may take the answer.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Send the head and keepalive events this often while the answer is not ready.
    pub keepalive: Option<Duration>,
    /// The client is Codex: keepalives are data events (its idle timer ignores comments),
    /// failures after the head take the form it shows verbatim.
    pub codex: bool,
    /// Show the shield's progress as a Codex status line.
    pub progress: bool,
    pub pace: Pace,
    /// The request's trace and id: every answer it gets carries `x-request-id`.
    pub trace: crate::traceparent::Context,
}

/// What the shutdown drain did with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Answered now, or it already was.
    Answered,
    /// Being written by another thread (the request's, or the ticker's): left to it.
    Busy,
}

enum State {
    /// Nothing sent yet.
    Waiting { request: tiny_http::Request, since: Instant },
    /// The 200 head is out (chunked); keepalive events follow until the answer.
    Streaming { out: Out, events: u64, last: Instant },
    /// Answered, or the client was found gone.
    Done,
}

impl Slot {
    pub fn new(request: tiny_http::Request, options: Options) -> Arc<Slot> {
        let state = State::Waiting { request, since: Instant::now() };
        Arc::new(Slot { state: Mutex::new(state), options, progress: Mutex::new(None) })
    }

    /// Keep `text` to show as the client's status line at the next tick.
    pub fn set_progress(&self, text: &str) {
        if self.options.progress && self.options.codex && self.options.keepalive.is_some() {
            *sync::lock(&self.progress) = Some(text.to_string());
        }
    }

    /// Whether the client has hung up.
    pub fn gone(&self) -> bool {
        match &*self.lock() {
            State::Waiting { request, .. } => request.client_gone(),
            State::Streaming { .. } => false,
            State::Done => true,
        }
    }

    /// Send what is due at `now`: the head and a keepalive once `keepalive` has passed without
    /// an answer (or a progress line is waiting), then a keepalive every `keepalive` and each
    /// new progress line. Never waits for a slot that is being answered.
    pub fn tick(&self, now: Instant) {
        let Some(every) = self.options.keepalive else { return };
        let Some(mut state) = sync::try_lock(&self.state) else { return };
        let progress = sync::lock(&self.progress).take();
        let due = match &*state {
            State::Waiting { since, .. } => now.duration_since(*since) >= every || progress.is_some(),
            State::Streaming { last, .. } => now.duration_since(*last) >= every || progress.is_some(),
            State::Done => false,
        };
        if !due {
            return;
        }
        if let State::Waiting { .. } = &*state {
            let State::Waiting { request, .. } = std::mem::replace(&mut *state, State::Done) else {
                unreachable!("matched above")
            };
            let close = request.must_close();
            if close {
                request.close_connection();
            }
            let mut out = Out::of(request, self.options.pace);
            let head = stream_head(close, SystemTime::now(), &self.options.trace.request_id());
            if out.within(head.len(), |w| w.write_all(&head)).is_err() {
                return;
            }
            *state = State::Streaming { out, events: 0, last: now };
        }
        if let State::Streaming { out, events, last } = &mut *state {
            let bytes = match &progress {
                Some(text) => crate::codex::progress_event(text, *events),
                None if self.options.codex => crate::codex::keepalive_event(*events),
                None => b": keepalive\n\n".to_vec(),
            };
            *events += 1;
            *last = now;
            if out.within(bytes.len(), |w| write_chunk(w, &bytes)).is_err() {
                crate::debug!("client went away during keepalive");
                *state = State::Done;
            }
        }
    }

    /// Write the final answer, unless one was already written. `false` if it was not
    /// delivered (the client was gone, or the shutdown answered first).
    pub fn finish(&self, reply: Reply) -> bool {
        self.answer(&mut self.lock(), reply)
    }

    /// For the shutdown drain: write `reply` unless another thread is writing to this client
    /// right now. The drain never waits for such a write; its deadline bounds it.
    pub fn finish_unless_busy(&self, reply: Reply) -> Drained {
        let Some(mut state) = sync::try_lock(&self.state) else { return Drained::Busy };
        self.answer(&mut state, reply);
        Drained::Answered
    }

    fn answer(&self, state: &mut State, mut reply: Reply) -> bool {
        crate::traceparent::stamp(&mut reply.headers, &self.options.trace.request_id());
        match std::mem::replace(state, State::Done) {
            State::Waiting { request, .. } => send(request, reply, self.options.pace),
            State::Streaming { mut out, events, .. } => {
                finish_stream(&mut out, reply, events, self.options.codex)
            }
            State::Done => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }
}

impl crate::shield::Caller for Slot {
    fn gone(&self) -> bool {
        Slot::gone(self)
    }

    fn progress(&self, text: &str) {
        self.set_progress(text);
    }
}

/// Every request being worked on, by id: what the keepalive ticker visits and what the
/// shutdown answers when its grace is over.
#[derive(Default)]
pub struct Slots(Mutex<HashMap<u64, Arc<Slot>>>);

impl Slots {
    pub fn insert(&self, id: u64, slot: Arc<Slot>) {
        self.lock().insert(id, slot);
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The slots now (a copy, so no write happens under the table's lock).
    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        sync::lock(&self.0)
    }
}

/// The way back to one client once its answer starts: the response writer, and the socket
/// whose write timeout `within` sets before each write.
struct Out {
    writer: Box<dyn Write + Send>,
    socket: Option<tiny_http::Socket>,
    pace: Pace,
}

impl Out {
    fn of(request: tiny_http::Request, pace: Pace) -> Out {
        let socket = request.socket();
        Out { writer: request.into_writer(), socket, pace }
    }

    /// Write `bytes` bytes through `write`, then flush, within the pace's allowance for them.
    /// A failure ends the connection (an answer cut short cannot be followed by another).
    fn within<T>(
        &mut self,
        bytes: usize,
        write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<T> {
        let deadline = Instant::now() + self.pace.allowance(bytes);
        let (socket, stall) = (self.socket.as_ref(), self.pace.stall);
        let mut paced = Paced { writer: &mut *self.writer, socket, deadline, stall, armed: None };
        let result = write(&mut paced).and_then(|t| paced.flush().map(|()| t));
        if socket.is_some() {
            match &result {
                // the connection's later writes (tiny_http's own answers) get `stall` too
                Ok(_) => {
                    let _ = paced.set(stall);
                }
                Err(_) => paced.abort(),
            }
        }
        result
    }
}

/// A writer whose every write waits at most until its deadline, and at most `stall`.
struct Paced<'a> {
    writer: &'a mut (dyn Write + Send),
    socket: Option<&'a tiny_http::Socket>,
    deadline: Instant,
    stall: Duration,
    /// The write timeout last set on the socket: a write that needs the same one (`stall`,
    /// while the deadline is further away) makes no system call for it.
    armed: Option<Duration>,
}

impl Paced<'_> {
    fn arm(&mut self) -> io::Result<()> {
        let Some(timeout) = write_timeout(Instant::now(), self.deadline, self.stall) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took too long to read its answer",
            ));
        };
        self.set(timeout)
    }

    /// Give the socket's following writes `timeout`, unless it has it already.
    fn set(&mut self, timeout: Duration) -> io::Result<()> {
        let Some(socket) = self.socket else {
            return Ok(());
        };
        if self.armed != Some(timeout) {
            socket.set_write_timeout(timeout)?;
            self.armed = Some(timeout);
        }
        Ok(())
    }

    fn abort(&self) {
        if let Some(socket) = self.socket {
            socket.abort();
        }
    }
}

/// A write that timed out (`EAGAIN` under `SO_SNDTIMEO`), said so.
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading its answer")
        }
        _ => e,
    }
}

impl Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.writer.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.arm()?;
        self.writer.flush().map_err(timed_out)
    }
}

/// A failed write to a client: a hang-up is normal (logged quietly), a client cut off for
/// being too slow is worth an info line.
fn not_delivered(e: &io::Error, bytes: usize) {
    match e.kind() {
        io::ErrorKind::TimedOut => {
            crate::info!("cut off a client too slow to take its answer ({bytes} bytes): {e}")
        }
        _ => crate::debug!("client went away before its answer was written: {e}"),
    }
}

/// Write the reply in one piece; `false` if the client was gone (normal, logged quietly).
/// The connection ends after it when the client asked, speaks HTTP/1.0, left its body unread
/// (a refusal before the body), or the reply says so (413): the answer says
/// `Connection: close`, and tiny_http then closes the socket instead of reading the rest as
/// the next request.
pub fn send(request: tiny_http::Request, reply: Reply, pace: Pace) -> bool {
    let head_only = request.method() == &tiny_http::Method::Head;
    let says_close = reply.headers.iter().any(|(n, v)| n == "connection" && v == "close");
    let close = says_close || request.must_close();
    if close {
        request.close_connection();
    }
    let pieces = reply.into_http(head_only, close, SystemTime::now());
    let bytes = pieces.iter().map(Vec::len).sum();
    // each piece is freed once written: a slow client holds less and less of its answer
    let written =
        Out::of(request, pace).within(bytes, |w| pieces.into_iter().try_for_each(|p| w.write_all(&p)));
    written.map_err(|e| not_delivered(&e, bytes)).is_ok()
}

/// The head of an answer that will be streamed: 200, SSE, chunked, the request's id.
fn stream_head(close: bool, now: SystemTime, request_id: &str) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 200 OK\r\ndate: {}\r\nserver: codex-shield\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
         cache-control: no-cache\r\ntransfer-encoding: chunked\r\nx-request-id: {request_id}\r\n{connection}\r\n",
        http_date(now)
    )
    .into_bytes()
}

fn write_chunk(writer: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    write!(writer, "{:x}\r\n", bytes.len())?;
    writer.write_all(bytes)?;
    writer.write_all(b"\r\n")
}

/// The answer after the head: the stream itself, or the failure as an in-stream event; then
/// the last chunk.
fn finish_stream(out: &mut Out, reply: Reply, events: u64, codex: bool) -> bool {
    let is_stream = reply.status == 200 && reply.content_type.starts_with("text/event-stream");
    let rest = if is_stream {
        reply.body.into_chunks()
    } else if codex {
        vec![crate::codex::give_up_event(&message_of(&reply), events)]
    } else {
        vec![failure_event(&reply, events)]
    };
    let bytes = rest.iter().map(|chunk| chunk.len() + 16).sum();
    let written = out.within(bytes, |w| {
        rest.into_iter().try_for_each(|chunk| write_chunk(w, &chunk))?;
        w.write_all(b"0\r\n\r\n")
    });
    written.map_err(|e| not_delivered(&e, bytes)).is_ok() && is_stream
}

/// The message of an error reply: its JSON `error.message`, or its text.
fn message_of(reply: &Reply) -> String {
    let body = reply.body.to_vec();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match json["error"]["message"].as_str() {
        Some(message) => message.to_string(),
        None if !body.is_empty() => String::from_utf8_lossy(&body).into_owned(),
        None => format!("codex-shield: upstream status {}", reply.status),
    }
}

/// An error reply as the `response.failed` event a Responses client understands, with the
/// same code and message. The top-level `error` makes the `openai` SDK raise it as an
/// `APIError`; Codex reads `response.error`.
pub fn failure_event(reply: &Reply, sequence_number: u64) -> Vec<u8> {
    let body: serde_json::Value = serde_json::from_slice(&reply.body.to_vec()).unwrap_or_default();
    let error = &body["error"];
    let message =
        error["message"].as_str().map_or_else(|| format!("upstream status {}", reply.status), str::to_string);
    let code = error["code"].as_str().map_or_else(|| reply.status.to_string(), str::to_string);
    let kind = error["type"].as_str().unwrap_or("upstream_error");
    let error = json!({"code": code, "message": message, "type": kind, "param": null});
    let data = json!({
        "type": "response.failed",
        "sequence_number": sequence_number,
        "response": {"id": format!("resp_shield_failed_{sequence_number}"), "object": "response",
                     "status": "failed", "error": {"code": code, "message": message}, "output": []},
        "error": error,
    });
    crate::sse::event("response.failed", &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn chunks_and_failure_events() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"data: x\n\n").unwrap();
        write_chunk(&mut out, b"").unwrap();
        assert_eq!(out, b"9\r\ndata: x\n\n\r\n");
        let reply = Reply::error(&Error::Resting { reason: None, wait: Duration::from_secs(5) });
        let event = String::from_utf8(failure_event(&reply, 3)).unwrap();
        let data: serde_json::Value =
            serde_json::from_str(event.strip_prefix("event: response.failed\ndata: ").unwrap().trim_end())
                .unwrap();
        assert_eq!(data["type"], "response.failed");
        assert_eq!(data["sequence_number"], 3);
        assert_eq!(data["response"]["error"]["code"], "upstream_unavailable");
        assert_eq!(data["error"]["code"], "upstream_unavailable");
        assert!(data["response"]["error"]["message"].as_str().unwrap().contains("every upstream is resting"));
        let head = String::from_utf8(stream_head(true, SystemTime::UNIX_EPOCH, "00000000000000ab")).unwrap();
        assert!(
            head.contains(
                "transfer-encoding: chunked\r\nx-request-id: 00000000000000ab\r\nconnection: close\r\n\r\n"
            ),
            "{head}"
        );
    }

    #[test]
    fn write_deadlines() {
        let pace = Pace { stall: Duration::from_secs(30), min_rate: 65536 };
        assert_eq!(pace.allowance(0), Duration::from_secs(30));
        assert_eq!(pace.allowance(8 << 20), Duration::from_secs(30 + 128));
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let stall = secs(30);
        // (now, deadline, next write's timeout)
        let cases = [
            (t0, t0 + secs(158), Some(stall)),
            (t0 + secs(150), t0 + secs(158), Some(secs(8))),
            (t0 + secs(158), t0 + secs(158), None),
            (t0 + secs(200), t0 + secs(158), None),
        ];
        for (now, deadline, expected) in cases {
            assert_eq!(
                write_timeout(now, deadline, stall),
                expected,
                "{:?} after the start, deadline at {:?}",
                now - t0,
                deadline - t0
            );
        }
    }

    /// The shutdown drain never waits for a slot another thread is writing: it reports it
    /// busy and comes back; a free slot it answers at once.
    #[test]
    fn the_drain_leaves_a_slot_being_written_to_its_writer() {
        let pace = Pace { stall: Duration::from_secs(1), min_rate: 1 };
        let trace = crate::traceparent::Context::new(None, || 7);
        let options = Options { keepalive: None, codex: false, progress: false, pace, trace };
        let slot = Slot::new(tiny_http::TestRequest::new().into(), options);
        let writing = slot.lock();
        let shutting_down = || Reply::error(&Error::ShuttingDown);
        assert_eq!(slot.finish_unless_busy(shutting_down()), Drained::Busy);
        assert!(matches!(*writing, State::Waiting { .. }), "the slot is untouched");
        drop(writing);
        assert_eq!(slot.finish_unless_busy(shutting_down()), Drained::Answered);
        assert!(matches!(*slot.lock(), State::Done));
        assert_eq!(slot.finish_unless_busy(shutting_down()), Drained::Answered, "answered already");
        assert!(!slot.finish(shutting_down()), "no second answer");
    }
}
