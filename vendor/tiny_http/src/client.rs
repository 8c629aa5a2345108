use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::sync::Arc;
use std::str::FromStr;

use crate::common::{HTTPVersion, Method};
use crate::framing::Refused;
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client (codex-shield patch: `None` if the socket could not say, where
    // the original panicked on the `Err`)
    remote_addr: Option<SocketAddr>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // codex-shield patch: the socket, to probe for a hang-up while a request is handled
    probe: Option<Arc<crate::connection::Connection>>,

    // codex-shield patch: the body of the error answers this connection writes itself
    refusal_body: Option<crate::RefusalBody>,

    // codex-shield patch: what the previous request said about the connection's end
    previous: Option<Arc<crate::request::Ending>>,

    // codex-shield patch: the deadlines of request heads (handler mode only)
    head: Option<HeadClock>,

    // codex-shield patch: whether a request was read on this connection, and whether a byte
    // of the current head has arrived
    served: bool,
    head_started: bool,
}

/// codex-shield patch: when a request head must be complete. The first request's head must
/// arrive within `header` of the connection's start; after a request, an idle connection
/// may wait `idle` for the next one, whose head then has `header` from its first byte
/// (nginx's `client_header_timeout` and `keepalive_timeout`).
pub(crate) struct HeadClock {
    pub(crate) deadline: Arc<crate::util::Deadline>,
    pub(crate) accepted: std::time::Instant,
    pub(crate) header: std::time::Duration,
    pub(crate) idle: std::time::Duration,
}

/// codex-shield patch: a closing connection first reads and drops what the client still
/// sends (a body that will not be read), so that closing with unread bytes does not reset
/// the connection before the client has read its answer (RFC 9112 §9.6). Bounded in time
/// and in bytes.
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_TOTAL: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_BYTES: usize = 1 << 20;

/// codex-shield patch: the longest request or header line, and the most header lines.
const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 256;

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    /// codex-shield patch: a head refused with a status (framing.rs)
    Refused(Refused),
    ReadIoError(IoError),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr().ok().flatten();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            probe: None,
            refusal_body: None,
            previous: None,
            head: None,
            served: false,
            head_started: false,
        }
    }

    /// codex-shield patch: see `HeadClock`; its deadline must be the one the read socket
    /// was given (`RefinedTcpStream::with_deadline`).
    pub(crate) fn with_head_clock(mut self, head: Option<HeadClock>) -> Self {
        self.head = head;
        self
    }

    /// codex-shield patch: a head is about to be read: start its clock.
    fn begin_head(&mut self) {
        self.head_started = false;
        if let Some(h) = &self.head {
            let at = match self.served {
                false => h.accepted + h.header,
                true => std::time::Instant::now() + h.idle,
            };
            h.deadline.set(Some(at));
        }
    }

    /// codex-shield patch: the first byte of a head: after an idle wait, its own clock starts.
    fn head_byte(&mut self) {
        self.head_started = true;
        if let Some(h) = self.head.as_ref().filter(|_| self.served) {
            h.deadline.set(Some(std::time::Instant::now() + h.header));
        }
    }

    /// codex-shield patch: the head is in (or the connection is ending): stop the clock and
    /// give reads (the body's) the usual timeout back.
    fn end_head(&mut self, restore: bool) {
        if let Some(h) = &self.head {
            h.deadline.set(None);
            if let Some(socket) = self.probe.as_ref().filter(|_| restore) {
                socket.set_read_timeout(crate::CLIENT_IO_TIMEOUT);
            }
        }
    }

    /// codex-shield patch: answer a connection the server will not serve (too many open)
    /// with `refused`, before reading anything, then linger and close.
    pub(crate) fn turn_away(mut self, refused: Refused) {
        self.refuse(refused);
    }

    /// codex-shield patch: see `RefusalBody`.
    pub(crate) fn with_refusal_body(mut self, body: Option<crate::RefusalBody>) -> Self {
        self.refusal_body = body;
        self
    }

    /// codex-shield patch: see `Request::client_gone`.
    pub(crate) fn with_probe(mut self, probe: Option<Arc<crate::connection::Connection>>) -> Self {
        self.probe = probe;
        self
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    fn read_next_line(&mut self) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b.map_err(ReadError::ReadIoError)?,
                None => {
                    let eof = IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF");
                    return Err(ReadError::ReadIoError(eof));
                }
            };

            // codex-shield patch: a line ends with CRLF only. A bare LF, a bare CR, other
            // control characters and non-ASCII bytes get a 400 at once (framing.rs), instead
            // of a wait for a CRLF that never comes or a close without an answer.
            if byte == b'\n' {
                if !prev_byte_was_cr {
                    return Err(ReadError::Refused(crate::framing::BARE_LF));
                }
                buf.pop(); // removing the '\r'
                return Ok(AsciiString::from_ascii(buf).expect("only ASCII bytes were kept"));
            }
            if prev_byte_was_cr {
                return Err(ReadError::Refused(Refused::bad("bare CR in the request head")));
            }
            if let Some(refused) = crate::framing::refused_byte(byte).filter(|_| byte != b'\r') {
                return Err(ReadError::Refused(refused));
            }

            prev_byte_was_cr = byte == b'\r';
            if !self.head_started {
                self.head_byte();
            }

            buf.push(byte);
            if buf.len() > MAX_LINE {
                let long = IoError::new(ErrorKind::InvalidData, "header line too long");
                return Err(ReadError::ReadIoError(long));
            }
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        self.begin_head();
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line()?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };
            if version > (1, 1) {
                // codex-shield patch: refused before the request exists (its drop would
                // write a second answer), and the connection closes.
                let refused = Refused { status: 505, reason: "only HTTP/1.0 and HTTP/1.1 are supported" };
                return Err(ReadError::Refused(refused));
            }

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line()?;

                    if line.is_empty() {
                        break;
                    };
                    if crate::framing::is_folded(line.as_str()) {
                        return Err(ReadError::Refused(Refused::bad("obsolete line folding")));
                    }
                    if headers.len() >= MAX_HEADERS {
                        return Err(ReadError::ReadIoError(IoError::new(
                            ErrorKind::InvalidData,
                            "too many header lines",
                        )));
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };
        self.end_head(true);
        self.served = true;

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            self.remote_addr,
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
                request::RequestCreationError::Refused(refused) => ReadError::Refused(refused),
            }
        })?;

        // return the request
        self.previous = Some(request.ending());
        Ok(request.with_probe(self.probe.clone()))
    }

    /// codex-shield patch: answer a refused head with `status` and a body from the
    /// `RefusalBody` hook (empty without one), say `Connection: close`, and linger.
    fn refuse(&mut self, refused: Refused) {
        use std::io::Write;
        self.end_head(false);
        let body = self.refusal_body.as_ref().map(|f| f(&refused)).unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            refused.status,
            reason_phrase(refused.status),
            body.len()
        );
        let mut writer = self.sink.next().unwrap();
        let written = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
        let _ = written.and_then(|()| writer.flush());
        drop(writer);
        self.linger();
    }

    /// codex-shield patch: see `LINGER_IDLE`. Handler mode only (the socket is at hand).
    fn linger(&mut self) {
        let Some(socket) = self.probe.clone() else {
            return;
        };
        let _ = socket.shutdown(std::net::Shutdown::Write);
        socket.set_read_timeout(LINGER_IDLE);
        let started = std::time::Instant::now();
        let mut buf = [0u8; 8192];
        let mut dropped = 0;
        while dropped < LINGER_BYTES && started.elapsed() < LINGER_TOTAL {
            match self.next_header_source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }
}

/// codex-shield patch: the reason phrase of the statuses this connection writes itself.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // codex-shield patch: once the previous request is done with the socket, it may have
        // left its body unread or been answered with `Connection: close`: then what follows
        // on the socket is not a request, and the connection ends.
        if let Some(previous) = self.previous.take() {
            self.next_header_source.wait_turn();
            if previous.must_end() {
                self.no_more_requests = true;
            }
        }

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            self.linger();
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    // we don't know where the next request would start, so we have to close
                    self.refuse(Refused::bad("malformed request line"));
                    return None;
                }

                Err(ReadError::WrongHeader(_)) => {
                    self.refuse(Refused::bad("malformed header line"));
                    return None;
                }

                Err(ReadError::Refused(refused)) => {
                    self.refuse(refused);
                    return None;
                }

                Err(ReadError::ReadIoError(ref err))
                    if matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
                {
                    // codex-shield patch: a silent client is closed quietly: a 408 to a client
                    // that sent nothing may cross its next request and be read as its answer
                    // (and in `recv()` mode it would queue behind a response still being
                    // prepared). A head begun and not finished in time (a slowloris) gets a
                    // 408 in handler mode, where the previous answer is already written.
                    if self.head_started && self.probe.is_some() {
                        let refused = Refused { status: 408, reason: "the request head did not arrive in time" };
                        self.refuse(refused);
                    }
                    return None; // closing the connection
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::InvalidData => {
                    // codex-shield patch: oversized request line or headers
                    self.refuse(Refused { status: 431, reason: "request line or headers too large" });
                    return None;
                }

                Err(ReadError::ExpectationFailed(_)) => {
                    self.refuse(Refused { status: 417, reason: "unsupported Expect header" });
                    return None;
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            // codex-shield patch: an upgrade offer no longer ends the connection (the request
            // is served over HTTP/1.1), and HTTP/1.0 connections always end after one
            // request, `Connection: keep-alive` or not: the answer says `close`.
            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                _ if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
