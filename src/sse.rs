//! Server-Sent Events framing, as the WHATWG HTML standard defines it: the parser of every
//! stream an upstream sends, fed piece by piece, and the one writer of the events the proxy
//! makes itself (`write_event`).
//!
//! The parser takes the bytes of a stream in whatever pieces the socket delivers and calls
//! back for each complete event. It understands `event:`/`data:`/`id:`/`retry:` fields,
//! comments, a leading BOM, and LF, CR and CRLF line ends; an event, a line or a line end may
//! be split across any two pieces. Only a line split across pieces and the current event's
//! name and data are copied, into buffers reused from event to event. It never touches a
//! socket and never looks inside `data`: what an event *means* is `check.rs`'s business.
//! The writer has one form (an `event:` line if named, one `data:` line of compact JSON, a
//! blank line, LF line ends) for keepalive, progress and failure events and for the Responses
//! stream made from a chat answer; an upstream's own events are never rewritten.
//!
//! One deliberate step beyond the standard: `finish` dispatches an event that a stream left
//! without its trailing blank line. The standard drops it at end of file; the shield calls
//! `finish` only when the body ended cleanly (never after a cut), since several servers end
//! their last event that way, and reports the line ends the client needs to see it too.

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event. `name` is empty when the stream gave no `event:` field ("message").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct Parser {
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The last line ended with CR: an LF right after it belongs to that line end.
    skip_lf: bool,
    /// How many bytes of a leading BOM have been seen, until `bom_done`.
    bom_seen: usize,
    bom_done: bool,
    name: Vec<u8>,
    named: bool,
    data: Vec<u8>,
    has_data: bool,
}

/// How far a `feed` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Every byte was read (events it completed were all taken).
    All,
    /// An event's taker said stop: the last `unread` bytes come after that event.
    Stopped { unread: usize },
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bytes of the stream; `on_event` is called for each event they complete,
    /// and returns `false` to stop: then the bytes after that event's last line end are left
    /// unread (`Fed::Stopped`).
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Event) -> bool) -> Fed {
        if !self.bom_done {
            bytes = self.skip_bom(bytes);
        }
        while !bytes.is_empty() {
            if std::mem::take(&mut self.skip_lf) && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
                self.line.extend_from_slice(bytes);
                return Fed::All;
            };
            self.skip_lf = bytes[end] == b'\r';
            let go_on = if self.line.is_empty() {
                self.line_done(&bytes[..end], &mut on_event)
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                let go_on = self.line_done(&line, &mut on_event);
                line.clear();
                self.line = line;
                go_on
            };
            bytes = &bytes[end + 1..];
            if !go_on {
                return Fed::Stopped { unread: bytes.len() };
            }
        }
        Fed::All
    }

    /// How many bytes of an event not yet dispatched the parser holds (a comment line in
    /// progress does not count): a reader can tell that an event is still arriving.
    pub fn pending_event_bytes(&self) -> usize {
        let line = if self.line.first() == Some(&b':') { 0 } else { self.line.len() };
        line + self.name.len() + self.data.len() + usize::from(self.named || self.has_data)
    }

    /// The body ended cleanly: take the unterminated last line as complete and dispatch the
    /// pending event, if any. Returns the line ends that a standard parser needs after the
    /// stream's bytes to dispatch it as well (`""` when nothing was pending).
    pub fn finish(&mut self, mut on_event: impl FnMut(Event) -> bool) -> &'static [u8] {
        let open_line = !self.line.is_empty();
        if open_line {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut on_event);
        }
        if !self.has_data {
            self.name.clear();
            self.named = false;
            return b"";
        }
        self.dispatch(&mut on_event);
        // After a lone CR, a first LF would only complete that line end.
        if open_line || self.skip_lf {
            b"\n\n"
        } else {
            b"\n"
        }
    }

    /// Consume a leading BOM, even split across pieces; bytes that only looked like its start
    /// go back to the line.
    fn skip_bom<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        while let Some(&b) = bytes.first() {
            if b != BOM[self.bom_seen] {
                self.line.extend_from_slice(&BOM[..self.bom_seen]);
                self.bom_done = true;
                return bytes;
            }
            self.bom_seen += 1;
            bytes = &bytes[1..];
            if self.bom_seen == BOM.len() {
                self.bom_done = true;
                return bytes;
            }
        }
        bytes
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(Event) -> bool) -> bool {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return true; // comment
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
                self.named = true;
            }
            _ => {} // `id` and `retry` do not change what the shield decides; unknown fields are ignored
        }
        true
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event) -> bool) -> bool {
        let go_on = !self.has_data || on_event(Event { name: &self.name, data: &self.data });
        self.name.clear();
        self.data.clear();
        self.named = false;
        self.has_data = false;
        go_on
    }
}

/// Append one event to `out`: `event: NAME` when `name` is not empty, `data: ` and `data` as
/// compact JSON (one line: it never holds a line break), and the blank line that ends it.
pub fn write_event(out: &mut Vec<u8>, name: &str, data: &impl serde::Serialize) {
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // JSON of strings, numbers and maps with string keys always serialises.
    serde_json::to_writer(&mut *out, data).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
}

/// One event as bytes (`write_event` into a new vector).
pub fn event(name: &str, data: &impl serde::Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    write_event(&mut out, name, data);
    out
}

/// Every event of a stream given in pieces, as owned strings (the non-stream assembly, tests).
pub fn events<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for piece in pieces {
        parser.feed(piece, |ev| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            out.push((text(ev.name), text(ev.data)));
            true
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `input` fed in pieces of `step` bytes, as a socket would deliver it.
    fn parse_in_steps(input: &[u8], step: usize) -> Vec<(String, String)> {
        events(input.chunks(step.max(1)))
    }

    fn check(input: &str, expected: &[(&str, &str)]) {
        let expected: Vec<(String, String)> =
            expected.iter().map(|(n, d)| (n.to_string(), d.to_string())).collect();
        for step in [input.len().max(1), 1, 2, 3, 7] {
            let got = parse_in_steps(input.as_bytes(), step);
            assert_eq!(got, expected, "input {input:?} fed in steps of {step}");
        }
    }

    #[test]
    fn framing() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("data: a\n\n", &[("", "a")]),
            ("event: x\ndata: a\n\n", &[("x", "a")]),
            ("event: x\r\ndata: a\r\n\r\n", &[("x", "a")]),
            ("event: x\rdata: a\r\r", &[("x", "a")]),
            ("data: a\ndata: b\n\n", &[("", "a\nb")]),
            ("data: a\ndata: b\ndata: c\n\n", &[("", "a\nb\nc")]),
            ("data:a\n\n", &[("", "a")]),
            ("data:  a\n\n", &[("", " a")]),
            ("data\n\n", &[("", "")]),
            ("data:\n\n", &[("", "")]),
            (": comment\ndata: a\n\n", &[("", "a")]),
            (":\n\n", &[]),
            ("event: x\n\n", &[]),
            ("event: x\n\ndata: a\n\n", &[("", "a")]),
            ("id: 7\nretry: 100\ndata: a\n\n", &[("", "a")]),
            ("foo: bar\ndata: a\n\n", &[("", "a")]),
            ("data: a\n\ndata: b\n\n", &[("", "a"), ("", "b")]),
            ("data: a\n", &[]),
            ("data: a", &[]),
            ("\u{feff}data: a\n\n", &[("", "a")]),
            ("data: a\r\n\r\ndata: b\n\n", &[("", "a"), ("", "b")]),
            ("data: a\r\n\ndata: b\r\r", &[("", "a"), ("", "b")]),
            ("data: {\"x\": \"a:b\"}\n\n", &[("", "{\"x\": \"a:b\"}")]),
            ("data: [DONE]\n\n", &[("", "[DONE]")]),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    /// What the proxy writes is read back by a standard parser as the same event.
    #[test]
    fn written_events() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            (
                "response.failed",
                serde_json::json!({"type": "response.failed", "error": {"message": "a\nb: \"c\""}}),
                "event: response.failed\ndata: {\"type\":\"response.failed\",\"error\":{\"message\":\"a\\nb: \\\"c\\\"\"}}\n\n",
            ),
            (
                "",
                serde_json::json!({"type": "keepalive", "sequence_number": 3}),
                "data: {\"type\":\"keepalive\",\"sequence_number\":3}\n\n",
            ),
        ];
        for (name, data, expected) in cases {
            let bytes = event(name, data);
            assert_eq!(String::from_utf8_lossy(&bytes), *expected);
            check(expected, &[(*name, data.to_string().as_str())]);
        }
    }

    /// At a clean end, an event without its blank line is dispatched, and `finish` says which
    /// line ends make a standard parser dispatch it too.
    #[test]
    fn finish_flushes_the_last_event() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("data: a\n\n", &[], ""),
            ("data: a", &[("", "a")], "\n\n"),
            ("data: a\n", &[("", "a")], "\n"),
            ("event: x\ndata: a\r", &[("x", "a")], "\n\n"),
            ("data: a\r\n", &[("", "a")], "\n"),
            ("data: a\n\n: keep-alive", &[], ""),
            ("event: x", &[], ""),
            ("data: [DONE]", &[("", "[DONE]")], "\n\n"),
            ("", &[], ""),
        ];
        for (input, expected, ends) in cases {
            for step in [input.len().max(1), 1, 2] {
                let mut parser = Parser::new();
                for piece in input.as_bytes().chunks(step) {
                    parser.feed(piece, |_| true);
                }
                let mut flushed = Vec::new();
                let added = parser.finish(|ev| {
                    flushed.push((
                        String::from_utf8_lossy(ev.name).into_owned(),
                        String::from_utf8_lossy(ev.data).into_owned(),
                    ));
                    true
                });
                let flushed: Vec<(&str, &str)> =
                    flushed.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
                assert_eq!(
                    (flushed.as_slice(), added),
                    (*expected, ends.as_bytes()),
                    "{input:?} in steps of {step}"
                );
                assert_eq!(parser.pending_event_bytes(), 0, "{input:?}");
                let whole = format!("{input}{}", String::from_utf8_lossy(added));
                let standard = events([whole.as_bytes()]);
                assert_eq!(standard.len(), events([input.as_bytes()]).len() + expected.len(), "{whole:?}");
            }
        }
    }

    #[test]
    fn pending_event_bytes_count_the_event_in_progress() {
        let cases: &[(&str, usize)] = &[
            ("", 0),
            (": keep-alive", 0),
            (": keep-alive\n\n", 0),
            ("data: a\n\n", 0),
            ("data: ab", 8),
            ("data: ab\n", 3),
            ("event: x\ndata", 6),
            ("data: a\n\ndata: b", 7),
            ("event: x\n", 2),
            (": comment\n", 0),
            ("\u{feff}", 0),
        ];
        for (input, expected) in cases {
            let mut parser = Parser::new();
            parser.feed(input.as_bytes(), |_| true);
            assert_eq!(parser.pending_event_bytes(), *expected, "{input:?}");
        }
    }

    #[test]
    fn stopping_ends_the_feed() {
        let mut parser = Parser::new();
        let mut seen = 0;
        let fed = parser.feed(b"data: a\n\ndata: b\n\n", |_| {
            seen += 1;
            false
        });
        assert_eq!((fed, seen), (Fed::Stopped { unread: 9 }, 1));
        // with CRLF, the stop comes at the CR: its LF is unread
        let fed = Parser::new().feed(b"data: a\r\n\r\nafter", |_| false);
        assert_eq!(fed, Fed::Stopped { unread: 6 });
    }

    /// Any split of any input parses like the whole: a deterministic sweep over generated
    /// streams made of the awkward pieces (CR, LF, CRLF, colons, BOM, comments).
    #[test]
    fn every_split_equals_the_whole() {
        let pieces: &[&str] =
            &["data: x", "\r", "\n", "\r\n", ":", "event: e", "data", " ", "\u{feff}", ": c", "y"];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..400 {
            let mut input = String::new();
            for _ in 0..20 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let whole = events([input.as_bytes()]);
            for step in 1..6 {
                assert_eq!(parse_in_steps(input.as_bytes(), step), whole, "{input:?}");
            }
        }
    }
}
