//! HTTPS upstreams: a private CA added with `UPSTREAM_CA_FILE`, and `HTTPS_PROXY` / `NO_PROXY`
//! through a local CONNECT proxy. The TLS upstream is `openssl s_server -WWW` serving a file,
//! with a CA and a server certificate generated for the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::support::*;

const MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-5-codex","object":"model"}]}"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`server.pem`).
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=codex-shield test CA", "-keyout", "ca.key"];
    ca.extend(ec);
    ca.extend([
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"];
    csr.extend(ec);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `openssl s_server` answering `GET /v1/models` with a file, killed on drop.
pub struct TlsUpstream {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsUpstream {
    pub fn start() -> TlsUpstream {
        let dir = scratch_dir();
        make_certificates(&dir);
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::write(dir.join("v1/models"), MODELS).unwrap();
        let port = free_port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-cert", "server.pem", "-key", "server.key", "-accept"])
            .arg(port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return TlsUpstream { child, port, dir };
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("openssl s_server did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/v1", self.port)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP CONNECT proxy that records the targets it was asked for.
fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            thread::spawn(move || tunnel(client, &log));
        }
    });
    (port, seen)
}

fn tunnel(client: TcpStream, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(line.trim().to_string());
    let Ok(upstream) = TcpStream::connect(&target) else { return };
    let mut client_w = client;
    client_w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
    let (mut up_r, mut up_w) = (upstream.try_clone().unwrap(), upstream);
    let mut client_r = reader;
    let pump = thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut up_w);
        let _ = up_w.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = [0u8; 8192];
    while let Ok(n) = up_r.read(&mut buf) {
        if n == 0 || client_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client_w.shutdown(std::net::Shutdown::Both);
    let _ = pump.join();
}

#[test]
fn private_ca_is_added_to_the_bundled_roots() {
    let upstream = TlsUpstream::start();
    let untrusted = Proxy::start(&upstream.endpoint(), &[("RETRY_ATTEMPTS", "1")]);
    let got = request("GET", &untrusted.url("/v1/models"), &[], b"");
    assert_eq!(got.status, 502, "a private CA must not be trusted by default: {}", got.text());
    assert!(got.text().contains("cannot reach upstream"), "{}", got.text());
    drop(untrusted);
    let trusted = Proxy::start(&upstream.endpoint(), &[("UPSTREAM_CA_FILE", &upstream.ca())]);
    let got = request("GET", &trusted.url("/v1/models"), &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, MODELS));
}

#[test]
fn https_proxy_and_no_proxy_are_honoured() {
    let upstream = TlsUpstream::start();
    let (port, seen) = connect_proxy();
    let proxy_url = format!("http://127.0.0.1:{port}");
    let via = Proxy::start(
        &upstream.endpoint(),
        &[("UPSTREAM_CA_FILE", &upstream.ca()), ("HTTPS_PROXY", &proxy_url)],
    );
    let got = request("GET", &via.url("/v1/models"), &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, MODELS));
    let tunnels = seen.lock().unwrap().clone();
    assert_eq!(tunnels, vec![format!("CONNECT 127.0.0.1:{} HTTP/1.1", upstream.port)]);
    drop(via);
    let direct = Proxy::start(
        &upstream.endpoint(),
        &[("UPSTREAM_CA_FILE", &upstream.ca()), ("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")],
    );
    let got = request("GET", &direct.url("/v1/models"), &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(seen.lock().unwrap().len(), 1, "NO_PROXY host went through the proxy");
}

#[test]
fn a_ca_file_without_certificates_is_a_config_error() {
    let dir = scratch_dir();
    let file = dir.join("empty.pem");
    std::fs::write(&file, "not a certificate\n").unwrap();
    let mut cmd = command(&[
        ("AZURE_ENDPOINT", "https://127.0.0.1:9/v1"),
        ("UPSTREAM_CA_FILE", file.to_str().unwrap()),
    ]);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UPSTREAM_CA_FILE"));
}
