//! Listen addresses: parsing `:PORT`, `HOST:PORT` and `[V6]:PORT`, and why one is refused.
//!
//! Invariants: a [`ListenAddr`] that exists names a port in 0..=65535.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use super::error::{ConfigError, ListenAddrError};

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every interface, IPv6 dual-stack where the machine has IPv6, else IPv4.
    AllInterfaces(u16),
    /// A concrete address.
    Addr(SocketAddr),
}

impl ListenAddr {
    /// Parses `:8888`, `host:port`, `1.2.3.4:port` or `[::]:port`.
    pub fn parse(s: &str) -> Result<ListenAddr, ConfigError> {
        let bad = |reason: ListenAddrError| ConfigError::Listen {
            addr: s.to_string(),
            reason,
        };
        if let Some(port) = s.strip_prefix(':') {
            return parse_port(port).map(ListenAddr::AllInterfaces).map_err(bad);
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Addr(addr));
        }
        // A numeric port past 65535 is named as such, not left to the resolver's wording.
        if let Some((_, port)) = s.rsplit_once(':') {
            if let Err(e @ ListenAddrError::PortOutOfRange(_)) = parse_port(port) {
                return Err(bad(e));
            }
        }
        let mut addrs = s
            .to_socket_addrs()
            .map_err(|e| bad(ListenAddrError::Resolve(e.to_string())))?;
        addrs
            .next()
            .map(ListenAddr::Addr)
            .ok_or_else(|| bad(ListenAddrError::NoAddress))
    }

    /// The addresses to try binding, in order.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        match self {
            ListenAddr::AllInterfaces(port) => vec![
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port)),
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port)),
            ],
            ListenAddr::Addr(a) => vec![*a],
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::AllInterfaces(p) => write!(f, ":{p}"),
            ListenAddr::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Parses a port number, telling a number out of range from something that is no number.
fn parse_port(port: &str) -> Result<u16, ListenAddrError> {
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse()
            .map_err(|_| ListenAddrError::PortOutOfRange(port.to_string()))
    } else {
        Err(ListenAddrError::PortNotANumber(port.to_string()))
    }
}
