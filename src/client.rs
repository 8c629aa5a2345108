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

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::reply::{http_date, Reply};

/// One request's way back to its client.
pub struct Slot {
    state: Mutex<State>,
    options: Options,
    /// The newest progress line not yet sent (Codex with `CODEX_PROGRESS`).
    progress: Mutex<Option<String>>,
}

/// How a slot may keep its client waiting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Send the head and keepalive events this often while the answer is not ready.
    pub keepalive: Option<Duration>,
    /// The client is Codex: keepalives are data events (its idle timer ignores comments),
    /// failures after the head take the form it shows verbatim.
    pub codex: bool,
    /// Show the shield's progress as a Codex status line.
    pub progress: bool,
}

enum State {
    /// Nothing sent yet.
    Waiting { request: tiny_http::Request, since: Instant },
    /// The 200 head is out (chunked); keepalive events follow until the answer.
    Streaming { writer: Box<dyn Write + Send>, events: u64, last: Instant },
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
            *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.to_string());
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
        let Ok(mut state) = self.state.try_lock() else { return };
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner()).take();
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
            let mut writer = request.into_writer();
            if writer.write_all(&stream_head(close, SystemTime::now())).is_err() {
                return;
            }
            *state = State::Streaming { writer, events: 0, last: now };
        }
        if let State::Streaming { writer, events, last } = &mut *state {
            let bytes = match &progress {
                Some(text) => crate::codex::progress_event(text, *events),
                None if self.options.codex => crate::codex::keepalive_event(*events),
                None => b": keepalive\n\n".to_vec(),
            };
            *events += 1;
            *last = now;
            if write_chunk(writer, &bytes).and_then(|()| writer.flush()).is_err() {
                crate::debug!("client went away during keepalive");
                *state = State::Done;
            }
        }
    }

    /// Write the final answer, unless one was already written. `false` if it was not
    /// delivered (the client was gone, or the shutdown answered first).
    pub fn finish(&self, reply: Reply) -> bool {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Done) {
            State::Waiting { request, .. } => send(request, reply),
            State::Streaming { mut writer, events, .. } => {
                finish_stream(&mut writer, reply, events, self.options.codex)
            }
            State::Done => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every transition replaces the whole state, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::shield::Client for Slot {
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
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Write the reply in one piece; `false` if the client was gone (normal, logged quietly).
/// The connection ends after it when the client asked, speaks HTTP/1.0, left its body unread
/// (a refusal before the body), or the reply says so (413): the answer says
/// `Connection: close`, and tiny_http then closes the socket instead of reading the rest as
/// the next request.
pub fn send(request: tiny_http::Request, reply: Reply) -> bool {
    let head_only = request.method() == &tiny_http::Method::Head;
    let says_close = reply.headers.iter().any(|(n, v)| n == "connection" && v == "close");
    let close = says_close || request.must_close();
    if close {
        request.close_connection();
    }
    let pieces = reply.into_http(head_only, close, SystemTime::now());
    let mut writer = request.into_writer();
    let written = pieces.iter().try_for_each(|piece| writer.write_all(piece));
    match written.and_then(|()| writer.flush()) {
        Ok(()) => true,
        Err(e) => {
            crate::debug!("client went away before its answer was written: {e}");
            false
        }
    }
}

/// The head of an answer that will be streamed: 200, SSE, chunked.
fn stream_head(close: bool, now: SystemTime) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 200 OK\r\ndate: {}\r\nserver: codex-shield\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
         cache-control: no-cache\r\ntransfer-encoding: chunked\r\n{connection}\r\n",
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
fn finish_stream(writer: &mut dyn Write, reply: Reply, events: u64, codex: bool) -> bool {
    let is_stream = reply.status == 200 && reply.content_type.starts_with("text/event-stream");
    let written = if is_stream {
        reply.body.chunks().try_for_each(|chunk| write_chunk(writer, chunk))
    } else if codex {
        write_chunk(writer, &crate::codex::give_up_event(&message_of(&reply), events))
    } else {
        write_chunk(writer, &failure_event(&reply, events))
    };
    match written.and_then(|()| writer.write_all(b"0\r\n\r\n")).and_then(|()| writer.flush()) {
        Ok(()) => is_stream,
        Err(e) => {
            crate::debug!("client went away before its answer was written: {e}");
            false
        }
    }
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
    format!("event: response.failed\ndata: {data}\n\n").into_bytes()
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
        let head = String::from_utf8(stream_head(true, SystemTime::UNIX_EPOCH)).unwrap();
        assert!(head.contains("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"), "{head}");
    }
}
