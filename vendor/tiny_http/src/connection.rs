//! Abstractions of Tcp and Unix socket types

#[cfg(unix)]
use std::os::unix::net as unix_net;
use std::{
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    path::PathBuf,
};

/// Unified listener. Either a [`TcpListener`] or [`std::os::unix::net::UnixListener`]
pub enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(unix_net::UnixListener),
}
impl Listener {
    pub(crate) fn local_addr(&self) -> std::io::Result<ListenAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().map(ListenAddr::from),
            #[cfg(unix)]
            Self::Unix(l) => l.local_addr().map(ListenAddr::from),
        }
    }

    pub(crate) fn accept(&self) -> std::io::Result<(Connection, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => l
                .accept()
                .map(|(conn, addr)| (Connection::from(conn), Some(addr))),
            #[cfg(unix)]
            Self::Unix(l) => l.accept().map(|(conn, _)| (Connection::from(conn), None)),
        }
    }
}
impl From<TcpListener> for Listener {
    fn from(s: TcpListener) -> Self {
        Self::Tcp(s)
    }
}
#[cfg(unix)]
impl From<unix_net::UnixListener> for Listener {
    fn from(s: unix_net::UnixListener) -> Self {
        Self::Unix(s)
    }
}

/// codex-shield patch: the client's side of a connection, as a peek sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Nothing to read yet, or the next request's bytes.
    Open,
    /// End of stream: the client closed its socket or only shut down its sending side.
    Eof,
    /// A reset (or another error): the client is gone.
    Reset,
}

/// Unified connection. Either a [`TcpStream`] or [`std::os::unix::net::UnixStream`].
/// codex-shield patch: with the timeouts last set on it (`Timeouts`).
#[derive(Debug)]
pub(crate) struct Connection {
    sock: Sock,
    timeouts: std::sync::Mutex<Timeouts>,
}

#[derive(Debug)]
enum Sock {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(unix_net::UnixStream),
}

/// codex-shield patch: the read and write timeouts the socket has (`None`: not known), so
/// that setting one it already has costs no system call. A request head's read asks for the
/// time left before its deadline, a little less at each request: a timeout up to `SLACK`
/// longer is kept (the kernel counts it in clock ticks of 1 to 10 ms anyway), never a shorter
/// one. Under a lock held across the system call, so that the record is the socket's.
#[derive(Debug, Default)]
struct Timeouts {
    read: Option<std::time::Duration>,
    write: Option<std::time::Duration>,
}

/// codex-shield patch: see `Timeouts`.
pub(crate) const SLACK: std::time::Duration = std::time::Duration::from_millis(1);

impl Timeouts {
    /// Whether a socket whose timeout is `has` needs `wanted`, given the `slack` allowed.
    fn needs(
        has: Option<std::time::Duration>,
        wanted: std::time::Duration,
        slack: std::time::Duration,
    ) -> bool {
        !has.is_some_and(|has| has >= wanted && has - wanted <= slack)
    }
}
impl std::io::Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.sock {
            Sock::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Sock::Unix(s) => s.read(buf),
        }
    }
}
impl std::io::Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sock {
            Sock::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sock {
            Sock::Tcp(s) => s.flush(),
            #[cfg(unix)]
            Sock::Unix(s) => s.flush(),
        }
    }
}
/// codex-shield patch: reads and writes through a shared reference, so that the two halves of
/// a client connection and its hang-up probe share one socket (one descriptor) instead of
/// three duplicates; `try_clone` needed a descriptor each, and failed (EMFILE) at the limit.
impl std::io::Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &self.sock {
            Sock::Tcp(s) => (&*s).read(buf),
            #[cfg(unix)]
            Sock::Unix(s) => (&*s).read(buf),
        }
    }
}
impl std::io::Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.sock {
            Sock::Tcp(s) => (&*s).write(buf),
            #[cfg(unix)]
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => (&*s).flush(),
            #[cfg(unix)]
            Sock::Unix(s) => (&*s).flush(),
        }
    }
}
impl Connection {
    /// Gets the peer's address. Some for TCP, None for Unix sockets.
    pub(crate) fn peer_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        match &self.sock {
            Sock::Tcp(s) => s.peer_addr().map(Some),
            #[cfg(unix)]
            Sock::Unix(_) => Ok(None),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.shutdown(how),
            #[cfg(unix)]
            Sock::Unix(s) => s.shutdown(how),
        }
    }

    /// codex-shield patch: read/write timeouts and TCP_NODELAY on an accepted connection.
    pub(crate) fn set_timeouts(&self, timeout: std::time::Duration) {
        self.set_read_timeout(timeout);
        let _ = self.set_write_timeout(timeout);
        if let Sock::Tcp(s) = &self.sock {
            let _ = s.set_nodelay(true);
        }
    }

    /// codex-shield patch: what the peer's side of the connection looks like, without
    /// consuming anything. Only sound while no other thread reads the socket.
    pub(crate) fn peer(&self) -> Peer {
        match &self.sock {
            Sock::Tcp(s) => {
                if s.set_nonblocking(true).is_err() {
                    return Peer::Open;
                }
                let peeked = s.peek(&mut [0u8; 1]);
                let _ = s.set_nonblocking(false);
                match peeked {
                    // after an end of stream a reset is not reported by reads, only as the
                    // socket's pending error (EPIPE once the peer has sent its FIN)
                    Ok(0) if matches!(s.take_error(), Ok(Some(_))) => Peer::Reset,
                    Ok(0) => Peer::Eof,
                    Ok(_) => Peer::Open,
                    Err(e) => match e.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Peer::Open,
                        _ => Peer::Reset,
                    },
                }
            }
            #[cfg(unix)]
            Sock::Unix(_) => Peer::Open,
        }
    }

    /// codex-shield patch: write an interim response straight to the socket (see
    /// `Request::client_gone`); only while nothing is buffered for this connection.
    pub(crate) fn write_interim(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match &self.sock {
            Sock::Tcp(s) => (&*s).write_all(bytes),
            #[cfg(unix)]
            Sock::Unix(s) => (&*s).write_all(bytes),
        }
    }

    /// codex-shield patch: the read timeout, shortened while a closing connection lingers.
    pub(crate) fn set_read_timeout(&self, timeout: std::time::Duration) {
        self.set_read_timeout_within(timeout, std::time::Duration::ZERO);
    }

    /// codex-shield patch: the read timeout, or one up to `slack` longer that the socket
    /// already has (see `Timeouts`).
    pub(crate) fn set_read_timeout_within(
        &self,
        timeout: std::time::Duration,
        slack: std::time::Duration,
    ) {
        let mut timeouts = self.timeouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Timeouts::needs(timeouts.read, timeout, slack) {
            return;
        }
        let set = match &self.sock {
            Sock::Tcp(s) => s.set_read_timeout(Some(timeout)),
            #[cfg(unix)]
            Sock::Unix(s) => s.set_read_timeout(Some(timeout)),
        };
        timeouts.read = set.ok().map(|()| timeout);
    }

    /// codex-shield patch: the write timeout, set by the handler per write of its answer
    /// (see `Socket`); no system call when the socket has it already.
    pub(crate) fn set_write_timeout(&self, timeout: std::time::Duration) -> std::io::Result<()> {
        let mut timeouts = self.timeouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Timeouts::needs(timeouts.write, timeout, std::time::Duration::ZERO) {
            return Ok(());
        }
        timeouts.write = None;
        match &self.sock {
            Sock::Tcp(s) => s.set_write_timeout(Some(timeout)),
            #[cfg(unix)]
            Sock::Unix(s) => s.set_write_timeout(Some(timeout)),
        }?;
        timeouts.write = Some(timeout);
        Ok(())
    }

    pub(crate) fn try_clone(&self) -> std::io::Result<Self> {
        match &self.sock {
            Sock::Tcp(s) => s.try_clone().map(Self::from),
            #[cfg(unix)]
            Sock::Unix(s) => s.try_clone().map(Self::from),
        }
    }
}
impl From<TcpStream> for Connection {
    fn from(s: TcpStream) -> Self {
        Connection { sock: Sock::Tcp(s), timeouts: Default::default() }
    }
}
#[cfg(unix)]
impl From<unix_net::UnixStream> for Connection {
    fn from(s: unix_net::UnixStream) -> Self {
        Connection { sock: Sock::Unix(s), timeouts: Default::default() }
    }
}

#[derive(Debug, Clone)]
pub enum ConfigListenAddr {
    IP(Vec<SocketAddr>),
    #[cfg(unix)]
    // TODO: use SocketAddr when bind_addr is stabilized
    Unix(std::path::PathBuf),
}
impl ConfigListenAddr {
    pub fn from_socket_addrs<A: ToSocketAddrs>(addrs: A) -> std::io::Result<Self> {
        addrs.to_socket_addrs().map(|it| Self::IP(it.collect()))
    }

    #[cfg(unix)]
    pub fn unix_from_path<P: Into<PathBuf>>(path: P) -> Self {
        Self::Unix(path.into())
    }

    pub(crate) fn bind(&self) -> std::io::Result<Listener> {
        match self {
            Self::IP(a) => TcpListener::bind(a.as_slice()).map(Listener::from),
            #[cfg(unix)]
            Self::Unix(a) => unix_net::UnixListener::bind(a).map(Listener::from),
        }
    }
}

/// Unified listen socket address. Either a [`SocketAddr`] or [`std::os::unix::net::SocketAddr`].
#[derive(Debug, Clone)]
pub enum ListenAddr {
    IP(SocketAddr),
    #[cfg(unix)]
    Unix(unix_net::SocketAddr),
}
impl ListenAddr {
    pub fn to_ip(self) -> Option<SocketAddr> {
        match self {
            Self::IP(s) => Some(s),
            #[cfg(unix)]
            Self::Unix(_) => None,
        }
    }

    /// Gets the Unix socket address.
    ///
    /// This is also available on non-Unix platforms, for ease of use, but always returns `None`.
    #[cfg(unix)]
    pub fn to_unix(self) -> Option<unix_net::SocketAddr> {
        match self {
            Self::IP(_) => None,
            Self::Unix(s) => Some(s),
        }
    }
    #[cfg(not(unix))]
    pub fn to_unix(self) -> Option<SocketAddr> {
        None
    }
}
impl From<SocketAddr> for ListenAddr {
    fn from(s: SocketAddr) -> Self {
        Self::IP(s)
    }
}
#[cfg(unix)]
impl From<unix_net::SocketAddr> for ListenAddr {
    fn from(s: unix_net::SocketAddr) -> Self {
        Self::Unix(s)
    }
}
impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IP(s) => s.fmt(f),
            #[cfg(unix)]
            Self::Unix(s) => std::fmt::Debug::fmt(s, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// codex-shield patch: a timeout the socket already has (within the slack asked for, never
    /// shorter) is not set again. Seen through a second handle on the same socket, which
    /// changes it behind the connection's back: a system call would undo that change. (The
    /// kernel keeps a timeout in clock ticks: it reads back to within 20 ms.)
    #[test]
    fn a_timeout_the_socket_has_is_not_set_again() {
        let ms = Duration::from_millis;
        // (the connection's timeout, slack, the timeout asked for next, what the socket has then)
        let cases = [
            ("same read timeout", ms(5000), Duration::ZERO, ms(5000), ms(7000)),
            ("another read timeout", ms(5000), Duration::ZERO, ms(6000), ms(6000)),
            ("a little less, within the slack", ms(5000), SLACK, ms(4999), ms(7000)),
            ("less, beyond the slack", ms(5000), SLACK, ms(4900), ms(4900)),
            ("more: never shorter", ms(5000), SLACK, ms(5100), ms(5100)),
        ];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        for (name, first, slack, next, expected) in cases {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let behind = client.try_clone().unwrap();
            let conn = Connection::from(client);
            conn.set_read_timeout(first);
            behind.set_read_timeout(Some(ms(7000))).unwrap();
            conn.set_read_timeout_within(next, slack);
            let has = behind.read_timeout().unwrap().unwrap();
            assert!(has.abs_diff(expected) < ms(20), "{}: {:?}, not {:?}", name, has, expected);
        }
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let behind = client.try_clone().unwrap();
        let conn = Connection::from(client);
        conn.set_timeouts(ms(5000));
        behind.set_write_timeout(Some(ms(7000))).unwrap();
        conn.set_write_timeout(ms(5000)).unwrap();
        assert_eq!(behind.write_timeout().unwrap(), Some(ms(7000)), "same write timeout");
        conn.set_write_timeout(ms(3000)).unwrap();
        assert_eq!(behind.write_timeout().unwrap(), Some(ms(3000)), "another write timeout");
    }
}
