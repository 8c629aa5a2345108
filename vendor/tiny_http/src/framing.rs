//! codex-shield patch: where a request's body ends, decided once from its head, and the
//! request heads that are refused outright (RFC 9112 §2.2, §5.2, §6.1, §6.3). Pure functions,
//! no I/O, so that every smuggling case is a row in the table test at the bottom.
//!
//! A refused head is answered with a 4xx and the connection closes: once two parties could
//! disagree on where a message ends, nothing read after it on that connection can be trusted.

use crate::common::{HTTPVersion, Header};

/// Where the body of a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request that is answered with `status` and then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub reason: &'static str,
}

impl Refused {
    pub(crate) const fn bad(reason: &'static str) -> Refused {
        Refused { status: 400, reason }
    }
}

/// The body's framing from the request's headers (RFC 9112 §6.3).
///
/// `Transfer-Encoding` together with `Content-Length` is refused (§6.3 lets a server reject
/// it, and a front proxy that honoured the other header would disagree with us on where the
/// next request starts); so are transfer codings other than a lone `chunked` (we decode no
/// others, §6.1), `Transfer-Encoding` in HTTP/1.0 (§6.1), and a `Content-Length` that is not
/// digits or whose values differ (§6.3 item 5). Identical repeated values are one length.
pub(crate) fn framing(headers: &[Header], version: &HTTPVersion) -> Result<Framing, Refused> {
    let codings = values(headers, "Transfer-Encoding");
    let lengths = values(headers, "Content-Length");
    let has_length = headers.iter().any(|h| h.field.equiv("Content-Length"));
    if headers.iter().any(|h| h.field.equiv("Transfer-Encoding")) {
        if has_length {
            return Err(Refused::bad("both Transfer-Encoding and Content-Length"));
        }
        if *version < HTTPVersion(1, 1) {
            return Err(Refused::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ => Err(Refused::bad("unsupported Transfer-Encoding (only chunked is accepted)")),
        };
    }
    if !has_length {
        return Ok(Framing::Empty);
    }
    let mut parsed = lengths.iter().map(|v| parse_length(v));
    let first = parsed.next().flatten().ok_or(Refused::bad("invalid Content-Length"))?;
    for other in parsed {
        match other {
            Some(n) if n == first => {}
            Some(_) => return Err(Refused::bad("conflicting Content-Length values")),
            None => return Err(Refused::bad("invalid Content-Length")),
        }
    }
    Ok(if first == 0 { Framing::Empty } else { Framing::Length(first) })
}

/// The comma-separated values of every `name` header, in order, trimmed.
fn values<'a>(headers: &'a [Header], name: &'static str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.field.equiv(name))
        .flat_map(|h| h.value.as_str().split(','))
        .map(str::trim)
        .collect()
}

/// `1*DIGIT` that fits in a `usize`; no sign, no spaces inside.
fn parse_length(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// A byte that may not appear in a request head line: a control character other than
/// horizontal tab (NUL, a bare CR, DEL...), or a byte outside ASCII. RFC 9110 §5.5 allows
/// obs-text in field values, but nothing this proxy forwards needs it and the header type
/// here is ASCII; such a request gets a 400 instead of a silent close.
pub(crate) fn refused_byte(byte: u8) -> Option<Refused> {
    match byte {
        b'\t' => None,
        b'\r' => Some(Refused::bad("bare CR in the request head")),
        0x00..=0x1f | 0x7f => Some(Refused::bad("control character in the request head")),
        0x80..=0xff => Some(Refused::bad("non-ASCII byte in the request head")),
        _ => None,
    }
}

/// The bare-LF answer: RFC 9112 §2.2 lets a server accept a lone LF as a line end; this
/// one refuses it at once instead (a proxy in front that did not accept it would frame the
/// request differently), and never waits for a CRLF that will not come.
pub(crate) const BARE_LF: Refused = Refused::bad("bare LF line end in the request head");

/// A header line that starts with a space or tab continues the previous one: obsolete line
/// folding, refused (RFC 9112 §5.2).
pub(crate) fn is_folded(line: &str) -> bool {
    line.starts_with(' ') || line.starts_with('\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> Vec<Header> {
        lines.iter().map(|l| l.parse().unwrap()).collect()
    }

    #[test]
    fn framing_table() {
        let v11 = HTTPVersion(1, 1);
        let v10 = HTTPVersion(1, 0);
        let bad = |reason| Err(Refused::bad(reason));
        #[rustfmt::skip]
        let cases: Vec<(&[&str], &HTTPVersion, Result<Framing, Refused>)> = vec![
            (&[], &v11, Ok(Framing::Empty)),
            (&["Content-Length: 0"], &v11, Ok(Framing::Empty)),
            (&["Content-Length: 5"], &v11, Ok(Framing::Length(5))),
            (&["Content-Length: 5", "content-length: 5"], &v11, Ok(Framing::Length(5))),
            (&["Content-Length: 5, 5"], &v11, Ok(Framing::Length(5))),
            (&["Content-Length: 3", "Content-Length: 5"], &v11, bad("conflicting Content-Length values")),
            (&["Content-Length: 3, 5"], &v11, bad("conflicting Content-Length values")),
            (&["Content-Length: -5"], &v11, bad("invalid Content-Length")),
            (&["Content-Length: +5"], &v11, bad("invalid Content-Length")),
            (&["Content-Length: 5 5"], &v11, bad("invalid Content-Length")),
            (&["Content-Length:"], &v11, bad("invalid Content-Length")),
            (&["Content-Length: 0x10"], &v11, bad("invalid Content-Length")),
            (&["Content-Length: 99999999999999999999999"], &v11, bad("invalid Content-Length")),
            (&["Content-Length: 5", "Content-Length: x"], &v11, bad("invalid Content-Length")),
            (&["Transfer-Encoding: chunked"], &v11, Ok(Framing::Chunked)),
            (&["Transfer-Encoding: CHUNKED"], &v11, Ok(Framing::Chunked)),
            (&["Transfer-Encoding: chunked", "Content-Length: 5"], &v11, bad("both Transfer-Encoding and Content-Length")),
            (&["Content-Length: 5", "Transfer-Encoding: chunked"], &v11, bad("both Transfer-Encoding and Content-Length")),
            (&["Transfer-Encoding: gzip, chunked"], &v11, bad("unsupported Transfer-Encoding (only chunked is accepted)")),
            (&["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], &v11, bad("unsupported Transfer-Encoding (only chunked is accepted)")),
            (&["Transfer-Encoding: identity"], &v11, bad("unsupported Transfer-Encoding (only chunked is accepted)")),
            (&["Transfer-Encoding: chunked"], &v10, bad("Transfer-Encoding in an HTTP/1.0 request")),
            (&["Content-Length: 2"], &v10, Ok(Framing::Length(2))),
        ];
        for (lines, version, expected) in cases {
            assert_eq!(framing(&headers(lines), version), expected, "{lines:?} {version}");
        }
    }

    #[test]
    fn bytes_and_folding() {
        for ok in [b'a', b' ', b'\t', b'~', b':'] {
            assert_eq!(refused_byte(ok), None, "{ok}");
        }
        for bad in [0u8, b'\r', 0x01, 0x1b, 0x7f, 0x80, 0xff] {
            assert_eq!(refused_byte(bad).map(|r| r.status), Some(400), "{bad}");
        }
        assert!(is_folded(" continued") && is_folded("\tcontinued"));
        assert!(!is_folded("Host: x"));
    }
}
