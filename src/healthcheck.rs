//! `codex-shield --healthcheck URL`: one GET, exit 0 on a 200 and 1 on anything else.
//!
//! Container images built `FROM scratch` have no shell and no curl, so the image's
//! `HEALTHCHECK` (and a Kubernetes `exec` probe, if someone prefers one) asks the binary
//! itself. Plain `http://host:port/path` only, over the standard library's `TcpStream`, with a
//! short overall timeout; it reads only the status line. It is a client of the proxy's own
//! `/healthz`, never of the upstream, and reads no configuration.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connect, write and read timeouts each: a live proxy answers `/healthz` in microseconds.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// GET `url`; `Ok(())` for a 200, else what went wrong (one line, for stderr).
pub fn check(url: &str) -> Result<(), String> {
    let (authority, path) = split_url(url)?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("{url}: {e}");
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream.take(1024)).read_line(&mut line).map_err(io)?;
    match status_code(&line) {
        Some(200) => Ok(()),
        Some(code) => Err(format!("{url} answered {code}")),
        None => Err(format!("{url} sent no HTTP status line")),
    }
}

/// `http://host:port/path` → (`host:port`, `/path`). The port defaults to 80, the path to `/`.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(format!("{url:?} is not a plain http://host:port/path URL"));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port { authority.to_string() } else { format!("{authority}:80") };
    Ok((authority, path.to_string()))
}

/// The code of an `HTTP/1.x NNN reason` line.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |url: &str, authority: &str, path: &str| {
            assert_eq!(split_url(url), Ok((authority.to_string(), path.to_string())), "{url}");
        };
        ok("http://127.0.0.1:8888/healthz", "127.0.0.1:8888", "/healthz");
        ok("http://localhost/healthz?x=1", "localhost:80", "/healthz?x=1");
        ok("http://127.0.0.1:9", "127.0.0.1:9", "/");
        ok("http://[::1]:8888/healthz", "[::1]:8888", "/healthz");
        ok("http://[::1]/healthz", "[::1]:80", "/healthz");
        for bad in ["https://h/healthz", "127.0.0.1:8888/healthz", "http:///x", "http://u@h/", "http://h/a b"]
        {
            assert!(split_url(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn status_lines() {
        let cases = [
            ("HTTP/1.1 200 OK\r\n", Some(200)),
            ("HTTP/1.0 503 Service Unavailable\r\n", Some(503)),
            ("HTTP/1.1 404\r\n", Some(404)),
            ("SSH-2.0-OpenSSH\r\n", None),
            ("", None),
            ("HTTP/1.1 abc\r\n", None),
        ];
        for (line, expected) in cases {
            assert_eq!(status_code(line), expected, "{line:?}");
        }
    }

    /// A one-shot server answering `reply`; returns its URL.
    fn serve_once(reply: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut head = String::new();
            let mut reader = BufReader::new(socket.try_clone().unwrap());
            while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
            socket.write_all(reply.as_bytes()).unwrap();
        });
        url
    }

    #[test]
    fn answers() {
        assert_eq!(check(&serve_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")), Ok(()));
        let draining = check(&serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n")).unwrap_err();
        assert!(draining.contains("answered 503"), "{draining}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", closed.local_addr().unwrap());
        drop(closed);
        assert!(check(&url).unwrap_err().contains("cannot connect"));
    }
}
