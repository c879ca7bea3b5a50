//! Listen addresses: parsing `:PORT`, `HOST:PORT`, `[V6]:PORT`, `unix:/PATH` and
//! `unix:@NAME`, and why one is refused.
//!
//! Invariants: a [`ListenAddr`] that exists names a port in 0..=65535, or a Unix socket
//! path (or abstract name) that fits `sun_path`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::error::{ConfigError, ListenAddrError};

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every interface, IPv6 dual-stack where the machine has IPv6, else IPv4.
    AllInterfaces(u16),
    /// A concrete address.
    Addr(SocketAddr),
    /// `unix:/PATH`: a Unix domain socket file (a stale one from an earlier run is
    /// replaced; anything that is not a socket is never removed).
    Unix(PathBuf),
    /// `unix:@NAME`: a socket in Linux's abstract namespace (no file).
    UnixAbstract(String),
}

/// Longest Unix socket path (`sun_path` less its terminating zero).
const UNIX_PATH_MAX: usize = 107;

impl ListenAddr {
    /// Parses `:8888`, `host:port`, `1.2.3.4:port` or `[::]:port`.
    pub fn parse(s: &str) -> Result<ListenAddr, ConfigError> {
        let bad = |reason: ListenAddrError| ConfigError::Listen {
            addr: s.to_string(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if let Some(name) = path.strip_prefix('@') {
                if name.is_empty() || name.len() > UNIX_PATH_MAX - 1 {
                    return Err(bad(ListenAddrError::UnixPath(format!(
                        "an abstract name must be 1..={} bytes",
                        UNIX_PATH_MAX - 1
                    ))));
                }
                return Ok(ListenAddr::UnixAbstract(name.to_string()));
            }
            if path.is_empty() || path.len() > UNIX_PATH_MAX {
                return Err(bad(ListenAddrError::UnixPath(format!(
                    "a socket path must be 1..={UNIX_PATH_MAX} bytes"
                ))));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
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

    /// Whether this is a Unix domain socket (a path or an abstract name).
    pub fn is_unix(&self) -> bool {
        matches!(self, ListenAddr::Unix(_) | ListenAddr::UnixAbstract(_))
    }

    /// The IP addresses to try binding, in order (none for a Unix socket).
    pub fn candidates(&self) -> Vec<SocketAddr> {
        match self {
            ListenAddr::AllInterfaces(port) => vec![
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port)),
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port)),
            ],
            ListenAddr::Addr(a) => vec![*a],
            ListenAddr::Unix(_) | ListenAddr::UnixAbstract(_) => Vec::new(),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::AllInterfaces(p) => write!(f, ":{p}"),
            ListenAddr::Addr(a) => write!(f, "{a}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::UnixAbstract(name) => write!(f, "unix:@{name}"),
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
