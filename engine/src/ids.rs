//! Who a connection is: its process-unique id and what hooks learn about it.
//!
//! Invariants: a leaf module (no imports from the rest of the crate); a [`ConnId`] names one
//! connection for the life of the process — its `serial` comes from a per-reactor 64-bit
//! counter that never wraps in practice (2^64 accepts), so an id is never reused even when
//! its slab slot is.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Identifies one connection for the life of the process; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) core: u16,
    pub(crate) slot: u32,
    pub(crate) serial: u64,
}

/// The bit of [`ConnId`]'s slot that marks a datagram peer's pseudo-connection.
pub(crate) const DATAGRAM_SLOT_BIT: u32 = 1 << 31;

impl ConnId {
    /// The reactor (core index) that owns the connection.
    pub fn core(&self) -> usize {
        self.core as usize
    }

    /// Whether this names a datagram peer (a pseudo-connection of the UDP endpoint).
    pub(crate) fn is_datagram(&self) -> bool {
        self.slot & DATAGRAM_SLOT_BIT != 0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.core, self.slot, self.serial)
    }
}

/// What hooks, handlers, middleware and broadcast filters learn about a connection.
///
/// Cheap to clone (the TLS details are shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection.
    pub id: ConnId,
    /// The peer's address (`0.0.0.0:0` for a peer on a Unix domain socket: see
    /// [`ConnInfo::unix`]).
    pub peer: SocketAddr,
    /// The peer came over a Unix domain socket.
    pub unix: bool,
    /// What the TLS handshake settled, once it has finished (feature `tls`); `None` for a
    /// plaintext connection and, on a TLS one, for hooks that run before the handshake
    /// ends (`on_connect`). Handlers and middleware of a TLS connection always see it.
    pub tls: Option<Arc<TlsInfo>>,
}

impl ConnInfo {
    /// A plaintext TCP (or datagram) connection's info.
    pub(crate) fn new(id: ConnId, peer: SocketAddr) -> ConnInfo {
        ConnInfo {
            id,
            peer,
            unix: false,
            tls: None,
        }
    }

    /// The client certificate's verified identity, on a mutual-TLS connection.
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.tls.as_ref().and_then(|tls| tls.peer.as_ref())
    }
}

/// What a TLS connection's handshake settled ([`ConnInfo::tls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: &'static str,
    /// The application protocol agreed with ALPN (`"arpc"` or `"http/1.1"`), if the peer
    /// offered one.
    pub alpn: Option<String>,
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The peer's certificate, verified (mutual TLS: against the client CA).
    pub peer: Option<PeerCertificate>,
}

/// A peer's verified certificate: its subject and names, for authorisation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCertificate {
    /// The subject as RFC 4514 text, e.g. `"CN=alice,O=Acme"`.
    pub subject: String,
    /// The subject's common name (CN), if it has one.
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names.
    pub dns_names: Vec<String>,
    /// Subject alternative names: URIs (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// Subject alternative names: e-mail addresses.
    pub emails: Vec<String>,
    /// Subject alternative names: IP addresses.
    pub ip_addrs: Vec<IpAddr>,
    /// The certificate itself (DER).
    pub der: Vec<u8>,
}
