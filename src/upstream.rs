//! The only module that talks to the upstream: one shared ureq `Agent`, one attempt at a time.
//!
//! An attempt sends the prepared request and reads the *whole* answer into memory, parsing
//! SSE while it reads so that an error event, a cut or a stall ends the read at once. It
//! reports what happened (`Answer` or a located `Error`) and decides nothing about retries:
//! that is `retry.rs`, driven by `shield.rs`.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::SystemTime;

use ureq::http;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::body::Body;
use crate::check::{self, Api, Verdict};
use crate::config::Config;
use crate::error::{Error, Rejection, StreamError};
use crate::retry;
use crate::sse::Parser;
use crate::target::Auth;

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
#[derive(Debug, Clone)]
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
}

/// The upstream side: configured agent, endpoint and key.
pub struct Upstream {
    agent: ureq::Agent,
    auth: Option<(&'static str, String)>,
    max_response_bytes: u64,
}

/// Upstream response headers passed on to the client.
pub fn is_useful_header(name: &str) -> bool {
    const EXACT: [&str; 5] =
        ["x-request-id", "apim-request-id", "x-ms-region", "azureml-model-session", "x-ms-client-request-id"];
    EXACT.contains(&name) || name.starts_with("x-ratelimit-") || name.starts_with("openai-")
}

impl Upstream {
    pub fn new(config: &Config) -> Result<Upstream, Error> {
        let u = &config.upstream;
        let tls = TlsConfig::builder().root_certs(root_certs(config)?).build();
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .save_redirect_history(false)
            .timeout_connect(Some(u.connect_timeout))
            .timeout_per_read(Some(u.idle_timeout))
            .timeout_per_write(Some(u.idle_timeout))
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
        let auth = u.key.as_ref().map(|key| match u.auth {
            Auth::ApiKey => ("api-key", key.clone()),
            Auth::Bearer => ("authorization", format!("Bearer {key}")),
        });
        Ok(Upstream {
            agent: agent_config.into(),
            auth,
            max_response_bytes: config.limits.max_response_bytes,
        })
    }

    /// One attempt: send, then read everything (checking SSE on the way).
    pub fn attempt(&self, out: &Outgoing) -> Result<Answer, Error> {
        let mut response = self.agent.run(self.build(out)?).map_err(connect_error)?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let content_type = header("content-type").map(str::to_string);
        let hint = retry::hint_from_headers(header, SystemTime::now());
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| is_useful_header(name.as_str()))
            .filter_map(|(name, v)| Some((name.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let reader = response.body_mut().with_config().limit(self.max_response_bytes).reader();
        let is_sse = content_type.as_deref().is_some_and(|t| t.starts_with("text/event-stream"));
        if !(200..300).contains(&status) {
            let body = read_all(reader, self.max_response_bytes).unwrap_or_else(|partial| partial);
            let hint = hint.max(message_hint(&body));
            return Err(Error::Status(Rejection { status, content_type, body, headers, hint }));
        }
        let (body, checked, final_error) = match out.api {
            Some(api) if is_sse => {
                let (body, final_error) = read_stream(reader, api, self.max_response_bytes)?;
                (body, true, final_error)
            }
            _ => (read_body(reader, self.max_response_bytes)?, false, None),
        };
        Ok(Answer { status, content_type, headers, body, checked, final_error })
    }

    fn build(&self, out: &Outgoing) -> Result<http::Request<Vec<u8>>, Error> {
        let mut req = http::Request::builder().method(out.method.as_str()).uri(out.url.as_str());
        for (name, value) in &out.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some((name, value)) = &self.auth {
            req = req.header(*name, value.as_str());
        }
        req.body(out.body.clone())
            .map_err(|e| Error::BadRequest(format!("cannot build the upstream request: {e}")))
    }
}

/// The bundled Mozilla roots, plus the certificates of `UPSTREAM_CA_FILE` if set.
fn root_certs(config: &Config) -> Result<RootCerts, Error> {
    let Some(path) = &config.upstream.ca_file else {
        return Ok(RootCerts::WebPki);
    };
    let bad = |reason: String| Error::Config { var: "UPSTREAM_CA_FILE", reason };
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

/// A failure before any response: connection, TLS, proxy, or no headers in time.
fn connect_error(e: ureq::Error) -> Error {
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            Error::Connect("connect timed out".into())
        }
        ureq::Error::Timeout(_) => Error::Stalled { received: 0 },
        ureq::Error::Io(io) => Error::Connect(io.to_string()),
        other => Error::Connect(other.to_string()),
    }
}

fn message_hint(body: &[u8]) -> Option<std::time::Duration> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = v["error"]["message"].as_str().or(v["message"].as_str())?;
    retry::hint_from_message(message)
}

/// Read size: large enough for big chunks, small enough for the stack.
const READ_CHUNK: usize = 16 * 1024;

/// Read a whole non-stream body; a broken read is a cut, a silent one a stall.
fn read_body(mut reader: impl Read, limit: u64) -> Result<Body, Error> {
    let mut body = Body::new();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => body.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, body.len(), limit)),
        }
    }
}

/// Read what can be read of an error body (`Err` holds the part read before a failure).
fn read_all(reader: impl Read, limit: u64) -> Result<Vec<u8>, Vec<u8>> {
    let mut body = Vec::new();
    match reader.take(limit).read_to_end(&mut body) {
        Ok(_) => Ok(body),
        Err(_) => Err(body),
    }
}

/// Read an SSE stream to its end, checking each event as it completes. Returns the bytes and
/// a final stream error if one was reported (delivered to the client as-is); a retryable
/// error, a cut before the terminal event, or a stall is an `Err`.
fn read_stream(mut reader: impl Read, api: Api, limit: u64) -> Result<(Body, Option<StreamError>), Error> {
    let mut body = Body::new();
    let mut chunk = [0u8; READ_CHUNK];
    let mut parser = Parser::new();
    let mut terminal: Option<Option<StreamError>> = None;
    let mut failure: Option<Error> = None;
    'read: loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break 'read,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // After the terminal event the answer is whole; what follows does not matter.
            Err(_) if terminal.is_some() => break 'read,
            Err(e) => return Err(read_error(e, body.len(), limit)),
        };
        body.push(&chunk[..n]);
        if terminal.is_some() {
            continue;
        }
        let received = body.len();
        parser.feed(&chunk[..n], |event| {
            match check::observe(api, &event) {
                Verdict::Pending => return true,
                Verdict::Complete => terminal = Some(None),
                Verdict::Failed(e) if e.retryable => failure = Some(Error::InStream(e)),
                Verdict::Failed(e) => terminal = Some(Some(e)),
                Verdict::Malformed(reason) => failure = Some(Error::Truncated { received, reason }),
            }
            false
        });
        if let Some(e) = failure {
            return Err(e);
        }
    }
    match terminal {
        Some(final_error) => Ok((body, final_error)),
        None => Err(Error::Truncated {
            received: body.len(),
            reason: "the stream ended before its terminal event".into(),
        }),
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

    /// A reader that hands out the given pieces, then fails with `end` (or EOF).
    struct Script {
        pieces: Vec<Vec<u8>>,
        end: Option<io::ErrorKind>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pieces.is_empty() {
                return match self.end {
                    Some(kind) => Err(io::Error::new(kind, "scripted")),
                    None => Ok(0),
                };
            }
            let piece = self.pieces.remove(0);
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    fn run(api: Api, pieces: &[&str], end: Option<io::ErrorKind>) -> String {
        let script = Script { pieces: pieces.iter().map(|p| p.as_bytes().to_vec()).collect(), end };
        match read_stream(script, api, 1 << 20) {
            Ok((body, None)) => format!("ok {}", body.len()),
            Ok((_, Some(e))) => format!("final {}", e.code.unwrap_or_default()),
            Err(e) => e.label(),
        }
    }

    #[test]
    fn stream_reads() {
        use io::ErrorKind::{ConnectionReset, TimedOut};
        let done = "data: {\"type\":\"response.completed\",\"response\":{\"error\":null}}\n\n";
        let delta = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n";
        let failed = "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}}\n\n";
        let final_ = "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"context_length_exceeded\",\"message\":\"x\"}}}\n\n";
        let cases: Vec<(Api, Vec<&str>, Option<io::ErrorKind>, String)> = vec![
            (Api::Responses, vec![delta, done], None, format!("ok {}", delta.len() + done.len())),
            (
                Api::Responses,
                vec![delta, done],
                Some(ConnectionReset),
                format!("ok {}", delta.len() + done.len()),
            ),
            (Api::Responses, vec![delta], None, format!("cut@{}B", delta.len())),
            (Api::Responses, vec![delta], Some(ConnectionReset), format!("cut@{}B", delta.len())),
            (Api::Responses, vec![delta], Some(TimedOut), "stall".into()),
            (Api::Responses, vec![delta, failed, done], None, "event:server_error".into()),
            (Api::Responses, vec![delta, final_], None, "final context_length_exceeded".into()),
            (Api::Responses, vec![&done[..20], &done[20..]], None, format!("ok {}", done.len())),
            (Api::Responses, vec!["data: {oops\n\n"], None, "cut@13B".into()),
            (Api::Chat, vec!["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"], None, "ok 36".into()),
            (Api::Chat, vec!["data: {\"choices\":[]}\n\n"], None, "cut@22B".into()),
        ];
        for (api, pieces, end, expected) in cases {
            assert_eq!(run(api, &pieces, end), expected, "{pieces:?} then {end:?}");
        }
    }
}
