//! The agent's connector chain: ureq's default links, with the TLS handshake out of line.
//!
//! ureq's `DefaultConnector` is one function with every link inlined into it, the rustls
//! handshake included: an 11 KiB stack frame, every page of it touched (stack probes) by
//! every new connection, plain HTTP or not, and resident for the connection thread's life.
//! With a thread per answer in flight that is 11 KB per answer. The same links here (an HTTP
//! CONNECT proxy, TCP, rustls; `tail::Bounded` last), with the handshake in a function of its
//! own that only an `https` connection calls. What each link does is ureq's; this file only
//! decides where the TLS link's frame lives. No SOCKS link: ureq is built without it (the
//! default chain only warns about a SOCKS proxy and connects directly, as this one does).

use ureq::unversioned::transport::{
    ConnectProxyConnector, ConnectionDetails, Connector, RustlsConnector, TcpConnector, Transport,
};

use super::tail;

/// The chain the agent connects through.
pub fn chain() -> impl Connector<(), Out = tail::BoundedTransport> {
    ().chain(ConnectProxyConnector::default())
        .chain(TcpConnector::default())
        .chain(Tls(RustlsConnector::default()))
        .chain(tail::Bounded)
}

/// `RustlsConnector`, entered only for a connection that needs TLS.
#[derive(Debug, Default)]
struct Tls(RustlsConnector);

impl<In: Transport> Connector<In> for Tls {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        match chained {
            Some(transport) if details.needs_tls() && !transport.is_tls() => {
                handshake(&self.0, details, transport)
            }
            other => Ok(other.map(Transport::boxed)),
        }
    }
}

/// The TLS handshake, in a frame of its own (see the module's paragraph).
#[inline(never)]
fn handshake<In: Transport>(
    tls: &RustlsConnector,
    details: &ConnectionDetails,
    transport: In,
) -> Result<Option<Box<dyn Transport>>, ureq::Error> {
    Ok(tls.connect(details, Some(transport))?.map(Transport::boxed))
}
