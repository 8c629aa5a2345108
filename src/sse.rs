//! Server-Sent Events framing, as the WHATWG HTML standard defines it, over a growing buffer.
//!
//! The shield keeps the whole upstream answer in one `Vec<u8>` that only ever grows, so the
//! parser does not copy lines: it remembers offsets into that buffer and hands out events that
//! borrow from it (only multi-line `data` is joined into a new allocation). It understands
//! `event:`/`data:`/`id:`/`retry:` fields, comments, a leading BOM, and LF, CR and CRLF line
//! ends, and an event or line end may be split across any read boundary. It never touches a
//! socket and never looks inside `data`: what an event *means* is `check.rs`'s business.

use std::borrow::Cow;
use std::ops::Range;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event. `name` is empty when the stream gave no `event:` field ("message").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: &'a [u8],
    pub data: Cow<'a, [u8]>,
}

/// Incremental parser state. Feed it the same buffer again after each append.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the buffer already split into lines.
    scanned: usize,
    /// Start of the line being read.
    line_start: usize,
    /// The last line ended with CR: an LF right after it belongs to that line end.
    skip_lf: bool,
    bom_checked: bool,
    name: Option<Range<usize>>,
    data: Data,
}

#[derive(Debug, Default)]
enum Data {
    #[default]
    Empty,
    /// A single `data:` line, still in the buffer.
    One(Range<usize>),
    /// Several `data:` lines joined with `\n`.
    Joined(Vec<u8>),
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next complete event in `buf`, or `None` when more bytes are needed. `buf` must be
    /// the previous buffer with bytes appended, never changed or shortened.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Option<Event<'a>> {
        if !self.bom_checked && !self.skip_bom(buf) {
            return None;
        }
        while self.scanned < buf.len() {
            if std::mem::take(&mut self.skip_lf) && buf[self.scanned] == b'\n' {
                self.scanned += 1;
                self.line_start = self.scanned;
                continue;
            }
            let rest = &buf[self.scanned..];
            let Some(i) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.scanned = buf.len();
                return None;
            };
            let end = self.scanned + i;
            self.skip_lf = buf[end] == b'\r';
            self.scanned = end + 1;
            let line = self.line_start..end;
            self.line_start = self.scanned;
            if let Some(event) = self.line(buf, line) {
                return Some(event);
            }
        }
        None
    }

    /// Whether the stream stopped in the middle of an event (bytes after the last dispatch).
    pub fn has_partial(&self, buf: &[u8]) -> bool {
        self.line_start < buf.len() || !matches!(self.data, Data::Empty) || self.name.is_some()
    }

    fn skip_bom(&mut self, buf: &[u8]) -> bool {
        if buf.len() < BOM.len() && BOM.starts_with(buf) {
            return false;
        }
        if buf.starts_with(BOM) {
            self.scanned = BOM.len();
            self.line_start = BOM.len();
        }
        self.bom_checked = true;
        true
    }

    fn line<'a>(&mut self, buf: &'a [u8], line: Range<usize>) -> Option<Event<'a>> {
        if line.is_empty() {
            return self.dispatch(buf);
        }
        let text = &buf[line.clone()];
        if text[0] == b':' {
            return None; // comment
        }
        let (field, value) = match text.iter().position(|&b| b == b':') {
            Some(colon) => {
                let skip = usize::from(text.get(colon + 1) == Some(&b' '));
                (&text[..colon], line.start + colon + 1 + skip..line.end)
            }
            None => (text, line.end..line.end),
        };
        match field {
            b"data" => self.push_data(buf, value),
            b"event" => self.name = Some(value),
            _ => {} // `id` and `retry` do not change what the shield decides; unknown fields are ignored
        }
        None
    }

    fn push_data(&mut self, buf: &[u8], value: Range<usize>) {
        self.data = match std::mem::take(&mut self.data) {
            Data::Empty => Data::One(value),
            Data::One(first) => {
                let mut joined = buf[first].to_vec();
                joined.push(b'\n');
                joined.extend_from_slice(&buf[value]);
                Data::Joined(joined)
            }
            Data::Joined(mut joined) => {
                joined.push(b'\n');
                joined.extend_from_slice(&buf[value]);
                Data::Joined(joined)
            }
        };
    }

    fn dispatch<'a>(&mut self, buf: &'a [u8]) -> Option<Event<'a>> {
        let name = self.name.take().map_or(&b""[..], |r| &buf[r]);
        let data = match std::mem::take(&mut self.data) {
            Data::Empty => return None,
            Data::One(r) => Cow::Borrowed(&buf[r]),
            Data::Joined(v) => Cow::Owned(v),
        };
        Some(Event { name, data })
    }
}

/// Every event of a complete buffer, as owned strings (tests and the non-stream assembly).
pub fn events(buf: &[u8]) -> Vec<(String, String)> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    while let Some(ev) = parser.next(buf) {
        out.push((
            String::from_utf8_lossy(ev.name).into_owned(),
            String::from_utf8_lossy(&ev.data).into_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `input` fed in pieces of `step` bytes, as a socket would deliver it.
    fn parse_in_steps(input: &[u8], step: usize) -> Vec<(String, String)> {
        let mut parser = Parser::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(ev) = parser.next(&buf) {
                out.push((
                    String::from_utf8_lossy(ev.name).into_owned(),
                    String::from_utf8_lossy(&ev.data).into_owned(),
                ));
            }
        }
        out
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

    #[test]
    fn partial_event_is_reported() {
        let mut parser = Parser::new();
        let buf = b"data: a\n\ndata: b";
        assert!(parser.next(buf).is_some());
        assert!(parser.next(buf).is_none());
        assert!(parser.has_partial(buf));
        let mut parser = Parser::new();
        let buf = b"data: a\n\n";
        assert!(parser.next(buf).is_some());
        assert!(parser.next(buf).is_none());
        assert!(!parser.has_partial(buf));
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
            let whole = events(input.as_bytes());
            for step in 1..6 {
                assert_eq!(parse_in_steps(input.as_bytes(), step), whole, "{input:?}");
            }
        }
    }
}
