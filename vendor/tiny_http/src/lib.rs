//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
// codex-shield patch: quiet the warnings today's rustc finds in this 2022 release.
#![allow(dead_code, unused_imports)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;


use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// codex-shield patch: how long one read or write of a client connection may wait (a body
/// sent slowly, an answer left unread) before the connection is closed. Request heads and
/// idle keep-alive connections have their own deadlines in handler mode (`Limits`).
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(120);

/// codex-shield patch: how long the accept loop waits after an accept error other than an
/// aborted connection (EMFILE/ENFILE: no descriptor left; ENOBUFS/ENOMEM), instead of
/// spinning; connections wait in the listen backlog meanwhile and are served as soon as a
/// descriptor is free.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// codex-shield patch: the limits of a `Server::http_with_handler` server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (each holds a thread and a descriptor).
    pub max_connections: usize,
    /// Past `max_connections`, this many more connections at once are answered `503` (each
    /// on a thread of its own, for the few seconds of its linger); any beyond are closed at
    /// once.
    pub turn_away: usize,
    /// A request head must be complete this long after the connection opened (its first
    /// request) or after its first byte (a later one); past it the client gets a `408` (if it
    /// had sent part of a head) and the connection closes.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this long without a new request.
    pub idle_timeout: Duration,
}

/// codex-shield patch: what to do with a connection just accepted while `open` were open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Serve,
    /// Answer `503` and close.
    TurnAway,
    /// Close at once (the spare connections are taken too).
    Close,
}

pub(crate) fn admission(open: usize, limits: &Limits) -> Admission {
    if open < limits.max_connections {
        Admission::Serve
    } else if open < limits.max_connections.saturating_add(limits.turn_away) {
        Admission::TurnAway
    } else {
        Admission::Close
    }
}

/// codex-shield patch: what the accept thread has seen (`Server::accepting`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepting {
    /// Connections open now (served, or being turned away).
    pub open: usize,
    /// Connections turned away (`503` or closed at once) because `max_connections` were open.
    pub refused: u64,
    /// Accept errors (EMFILE...), each followed by a short pause.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Why the accept loop ended while the server still exists (it should never).
    pub ended: Option<String>,
}

#[derive(Debug, Default)]
struct AcceptCounters {
    open: AtomicUsize,
    refused: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    ended: Mutex<Option<String>>,
}

/// codex-shield patch: one open connection, counted until its task ends (or is dropped).
struct Open(Arc<AcceptCounters>);

impl Open {
    /// Count a new connection; also returns how many were open before it.
    fn count(counters: &Arc<AcceptCounters>) -> (Open, usize) {
        let before = counters.open.fetch_add(1, SeqCst);
        (Open(Arc::clone(counters)), before)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

/// codex-shield patch: records why the accept thread ended (a panic included) unless the
/// server is being dropped.
struct AcceptThread {
    counters: Arc<AcceptCounters>,
    close: Arc<AtomicBool>,
}

impl Drop for AcceptThread {
    fn drop(&mut self) {
        if !self.close.load(Relaxed) {
            let why = match thread::panicking() {
                true => "the accept thread panicked",
                false => "the accept loop ended",
            };
            *self.counters.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.to_string());
        }
    }
}

/// codex-shield patch: the per-request handler of `Server::http_with_handler`.
type Handler = Arc<dyn Fn(Request) + Send + Sync + 'static>;

/// codex-shield patch: the body (JSON) of an error answer the server writes itself, for a
/// request head it refuses (malformed, smuggling-prone, too large); called once per refusal,
/// so it may also log it.
pub type RefusalBody = Arc<dyn Fn(&Refused) -> Vec<u8> + Send + Sync + 'static>;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use framing::Refused;
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request, Socket};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod framing;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // codex-shield patch: see `Accepting`
    accepting: Arc<AcceptCounters>,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// codex-shield patch: a server that runs `handler` for each request on the connection's
    /// own thread (one per connection, from the task pool), instead of queueing requests for
    /// `recv()`. Saves two thread hand-offs per request; `recv()` then never returns anything.
    /// `refusal_body` renders the error answers the server writes itself.
    /// `limits` bound the connections served at once and the time their heads may take.
    pub fn http_with_handler<A, F, G>(
        addr: A,
        limits: Limits,
        handler: F,
        refusal_body: G,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
        F: Fn(Request) + Send + Sync + 'static,
        G: Fn(&Refused) -> Vec<u8> + Send + Sync + 'static,
    {
        let listener = ConfigListenAddr::from_socket_addrs(addr)?.bind()?;
        let refusal_body: RefusalBody = Arc::new(refusal_body);
        Self::from_listener_with(listener, None, Some((Arc::new(handler), refusal_body, limits)))
    }

    /// codex-shield patch: what the accept thread has seen so far.
    pub fn accepting(&self) -> Accepting {
        let c = &self.accepting;
        let text = |m: &Mutex<Option<String>>| m.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Accepting {
            open: c.open.load(SeqCst),
            refused: c.refused.load(SeqCst),
            errors: c.errors.load(SeqCst),
            last_error: text(&c.last_error),
            ended: text(&c.ended),
        }
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with(listener, ssl_config, None)
    }

    fn from_listener_with<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        handler: Option<(Handler, RefusalBody, Limits)>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        let (handler, refusal_body, limits) = match handler {
            Some((h, r, l)) => (Some(h), Some(r), Some(l)),
            None => (None, None, None),
        };
        let counters = Arc::new(AcceptCounters::default());
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let inside_counters = Arc::clone(&counters);
        thread::spawn(move || {
            // codex-shield patch: however this thread ends, the server's owner can know.
            let _thread = AcceptThread { counters: Arc::clone(&inside_counters), close: inside_close_trigger.clone() };
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                let new_client = match server.accept() {
                    Ok((sock, _)) => {
                        use util::RefinedTcpStream;
                        // codex-shield patch: counted while open; past the limit, turned away.
                        let (open, before) = Open::count(&inside_counters);
                        let admitted = match limits {
                            Some(limits) => admission(before, &limits),
                            None => Admission::Serve,
                        };
                        if admitted != Admission::Serve {
                            inside_counters.refused.fetch_add(1, SeqCst);
                        }
                        if admitted == Admission::Close {
                            continue;
                        }
                        // codex-shield patch: idle, half-sent and unread connections time out
                        // instead of holding a thread forever.
                        sock.set_timeouts(CLIENT_IO_TIMEOUT);
                        // codex-shield patch: one socket shared by both halves and, in handler
                        // mode (nothing else reads the socket while a request is handled), by
                        // the hang-up probe: no duplicate descriptor to fail at the limit.
                        let sock = Arc::new(sock);
                        let probe = match (&handler, &ssl) {
                            (Some(_), None) => Some(Arc::clone(&sock)),
                            _ => None,
                        };
                        let (read_closable, write_closable) = match ssl {
                            None => RefinedTcpStream::new(sock),
                            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                            Some(ref ssl) => {
                                // trying to apply SSL over the connection
                                // if an error occurs, we just close the socket and resume listening
                                let sock = match Arc::try_unwrap(sock).map(|s| ssl.accept(s)) {
                                    Ok(Ok(s)) => s,
                                    _ => continue,
                                };

                                RefinedTcpStream::new(sock)
                            }
                            #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                            Some(ref _ssl) => {
                                continue;
                            }
                        };
                        // codex-shield patch: request heads have deadlines (handler mode).
                        let head = limits.filter(|_| probe.is_some()).map(|l| client::HeadClock {
                            deadline: Arc::new(util::Deadline::default()),
                            accepted: Instant::now(),
                            header: l.header_timeout,
                            idle: l.idle_timeout,
                        });
                        let read_closable = match &head {
                            Some(h) => read_closable.with_deadline(Arc::clone(&h.deadline)),
                            None => read_closable,
                        };

                        Ok((
                            ClientConnection::new(write_closable, read_closable)
                                .with_probe(probe)
                                .with_refusal_body(refusal_body.clone())
                                .with_head_clock(head),
                            open,
                            admitted,
                        ))
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok((client, open, Admission::TurnAway | Admission::Close)) => {
                        let mut turned = Some((client, open));
                        tasks_pool.spawn(Box::new(move || {
                            if let Some((client, _open)) = turned.take() {
                                client.turn_away(Refused { status: 503, reason: "too many open connections" });
                            }
                        }));
                    }
                    Ok((client, open, Admission::Serve)) => {
                        let messages = inside_messages.clone();
                        let handler = handler.clone();
                        let mut client = Some((client, open));
                        tasks_pool.spawn(Box::new(move || {
                            if let Some((client, _open)) = client.take() {
                                // Synchronization is needed for HTTPS requests to avoid a deadlock
                                if client.secure() {
                                    let (sender, receiver) = mpsc::channel();
                                    for rq in client {
                                        messages.push(rq.with_notify_sender(sender.clone()).into());
                                        receiver.recv().unwrap();
                                    }
                                } else if let Some(handler) = &handler {
                                    for rq in client {
                                        handler(rq);
                                    }
                                } else {
                                    for rq in client {
                                        messages.push(rq.into());
                                    }
                                }
                            }
                        }));
                    }

                    Err(e) => {
                        // codex-shield patch: an accept error (EMFILE under a connection flood,
                        // ECONNABORTED) is transient; stopping the accept loop would stop the
                        // server, and retrying at once would spin while no descriptor is free.
                        log::error!("Error accepting new client: {}", e);
                        inside_counters.errors.fetch_add(1, SeqCst);
                        *inside_counters.last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(e.to_string());
                        match e.kind() {
                            IoErrorKind::ConnectionAborted | IoErrorKind::Interrupted => {}
                            _ => thread::sleep(ACCEPT_BACKOFF),
                        }
                    }
                }
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            accepting: counters,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{admission, Admission, Limits};
    use std::time::Duration;

    #[test]
    fn connections_past_the_limit_are_turned_away_then_closed() {
        let rows = [
            (0, 1, 4, Admission::Serve),
            (9, 10, 4, Admission::Serve),
            (10, 10, 4, Admission::TurnAway),
            (13, 10, 4, Admission::TurnAway),
            (14, 10, 4, Admission::Close),
            (10, 10, 0, Admission::Close),
            (usize::MAX - 1, usize::MAX, 4, Admission::Serve),
            (usize::MAX, usize::MAX, 4, Admission::Close),
        ];
        for (open, max_connections, turn_away, expected) in rows {
            let second = Duration::from_secs(1);
            let limits = Limits { max_connections, turn_away, header_timeout: second, idle_timeout: second };
            assert_eq!(admission(open, &limits), expected, "{open} open, {limits:?}");
        }
    }
}
