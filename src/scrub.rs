//! Upstream keys out of every text that came from an upstream: the one place that does it.
//!
//! An upstream may quote the key it was sent ("Incorrect API key provided: sk-...", a
//! gateway echoing the `Authorization` header) in an error body, an error event or a
//! message. `upstream.rs` passes every failure and every answer that reports an error through
//! `Scrubber` before it leaves an attempt, so the texts built from them later (502 bodies, a
//! final 4xx passed on, Codex's `response.failed`, log lines) are clean by construction; the
//! logger runs each line through it once more. A key is replaced wherever it appears, in
//! whatever form it was sent (bare for `api-key`, after `Bearer ` for `Authorization`), by
//! `[key]`, which needs no escaping in JSON. Masked forms (`sk-abc...xyz`) are left alone.
//! This module does no I/O and decides nothing else.

use std::borrow::Cow;

use crate::error::{Error, Rejection, StreamError};

/// What a key is replaced with.
pub const MASK: &str = "[key]";

/// The keys of every configured upstream, longest first (a key that contains another is
/// replaced whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrubber {
    keys: Vec<String>,
}

impl Scrubber {
    /// A scrubber for these keys (empty and repeated ones are skipped).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut keys: Vec<String> =
            keys.into_iter().map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect();
        keys.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        keys.dedup();
        Scrubber { keys }
    }

    /// `text` with every key replaced by `[key]` (borrowed when there is none).
    pub fn text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for key in &self.keys {
            if out.contains(key.as_str()) {
                out = Cow::Owned(out.replace(key.as_str(), MASK));
            }
        }
        out
    }

    /// `bytes` with every key replaced by `[key]` (borrowed when there is none).
    pub fn bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let mut out = Cow::Borrowed(bytes);
        for key in &self.keys {
            if memchr::memmem::find(&out, key.as_bytes()).is_some() {
                out = Cow::Owned(replace(&out, key.as_bytes(), MASK.as_bytes()));
            }
        }
        out
    }

    fn string(&self, text: String) -> String {
        match self.text(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(clean) => clean,
        }
    }

    /// A stream error with its message scrubbed.
    pub fn stream_error(&self, e: StreamError) -> StreamError {
        StreamError { message: self.string(e.message), code: e.code.map(|c| self.string(c)), ..e }
    }

    /// A failure of an attempt, every text in it that may come from the upstream scrubbed.
    pub fn error(&self, err: Error) -> Error {
        match err {
            Error::Status(r) => Error::Status(Rejection {
                body: self.bytes(&r.body).into_owned(),
                headers: r.headers.into_iter().map(|(n, v)| (n, self.string(v))).collect(),
                content_type: r.content_type.map(|t| self.string(t)),
                ..r
            }),
            Error::InStream(e) => Error::InStream(self.stream_error(e)),
            Error::Connect(reason) => Error::Connect(self.string(reason)),
            Error::Truncated { received, reason } => {
                Error::Truncated { received, reason: self.string(reason) }
            }
            Error::NotAnEventStream { status, content_type, head } => Error::NotAnEventStream {
                status,
                content_type: content_type.map(|t| self.string(t)),
                head: self.string(head),
            },
            Error::Redirect { status, target } => Error::Redirect { status, target: self.string(target) },
            Error::Encoded { encoding } => Error::Encoded { encoding: self.string(encoding) },
            Error::Tls(reason) => Error::Tls(self.string(reason)),
            Error::Exhausted { attempts, elapsed, last } => {
                Error::Exhausted { attempts, elapsed, last: Box::new(self.error(*last)) }
            }
            // No text from an upstream in these.
            err @ (Error::Usage(_)
            | Error::Config { .. }
            | Error::Listen { .. }
            | Error::Setup(_)
            | Error::RequestTooLarge { .. }
            | Error::BadRequest(_)
            | Error::Unsupported { .. }
            | Error::Unauthorized
            | Error::Braked { .. }
            | Error::Overloaded { .. }
            | Error::NotFound { .. }
            | Error::UnsupportedEncoding(_)
            | Error::WebSocket
            | Error::Busy { .. }
            | Error::ShuttingDown
            | Error::ClientGone
            | Error::Stalled { .. }
            | Error::EventStall { .. }
            | Error::Dripping { .. }
            | Error::HeadTooLarge { .. }
            | Error::EventTooLarge { .. }
            | Error::ResponseTooLarge { .. }
            | Error::Resting { .. }) => err,
        }
    }
}

/// `haystack` with every `needle` replaced by `with`.
fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = memchr::memmem::find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEY: &str = "sk-proj-AbCdEf0123456789";
    const AZURE: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn keys_are_replaced_wherever_they_appear() {
        let s = Scrubber::new([KEY, AZURE, "", "  "]);
        let cases: &[(&str, &str)] = &[
            ("Incorrect API key provided: sk-proj-AbCdEf0123456789.", "Incorrect API key provided: [key]."),
            ("header was Bearer sk-proj-AbCdEf0123456789", "header was Bearer [key]"),
            ("api-key=0123456789abcdef0123456789abcdef&x", "api-key=[key]&x"),
            ("twice sk-proj-AbCdEf0123456789sk-proj-AbCdEf0123456789", "twice [key][key]"),
            ("masked sk-proj-********6789 stays", "masked sk-proj-********6789 stays"),
            ("a prefix sk-proj-AbCdEf01234 is not the key", "a prefix sk-proj-AbCdEf01234 is not the key"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(s.text(text), *expected, "{text:?}");
            assert_eq!(s.bytes(text.as_bytes()).as_ref(), expected.as_bytes(), "{text:?}");
        }
        assert!(matches!(s.text("no key here"), Cow::Borrowed(_)));
        assert!(matches!(Scrubber::new([]).bytes(KEY.as_bytes()), Cow::Borrowed(_)));
        let nested = Scrubber::new(["abcdefgh", "abcdefgh-long"]);
        assert_eq!(nested.text("abcdefgh-long and abcdefgh"), "[key] and [key]");
    }

    #[test]
    fn errors_lose_their_keys() {
        let s = Scrubber::new([KEY]);
        let said = format!("Incorrect API key provided: {KEY}");
        let event = StreamError {
            code: Some("invalid_api_key".into()),
            kind: None,
            message: said.clone(),
            retryable: false,
            hint: None,
        };
        let body = format!(r#"{{"error":{{"message":"{said}","code":"invalid_api_key"}}}}"#);
        let rejection = Rejection {
            status: 401,
            content_type: Some("application/json".into()),
            body: body.into_bytes(),
            headers: vec![("x-request-id".into(), format!("echo {KEY}"))],
            hint: None,
        };
        let cases = vec![
            Error::InStream(event.clone()),
            Error::Status(rejection),
            Error::Connect(said.clone()),
            Error::Tls(said.clone()),
            Error::Truncated { received: 1, reason: said.clone() },
            Error::NotAnEventStream { status: 200, content_type: None, head: said.clone() },
            Error::Exhausted {
                attempts: 2,
                elapsed: Duration::from_secs(1),
                last: Box::new(Error::InStream(event)),
            },
        ];
        for err in cases {
            let clean = s.error(err.clone());
            let seen = format!("{clean} {clean:?}");
            assert!(!seen.contains(KEY), "{seen}");
            assert!(seen.contains(MASK), "{seen}");
        }
    }
}
