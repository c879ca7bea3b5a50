//! Binding the sockets of every core to one address: `n` sockets sharing a port through
//! `SO_REUSEPORT`, TCP (listening) or UDP.
//!
//! Invariants: an exclusive bind comes first, so a port another process holds is reported
//! as taken instead of silently joined; `:PORT` tries IPv6 dual-stack, then IPv4.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenAddr;

/// Listen backlog of each reactor's TCP socket.
const BACKLOG: i32 = 4096;

/// Which kind of socket to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Udp,
}

/// Binds `n` sockets sharing one port, trying each candidate address in turn; on failure,
/// the address that failed and why.
pub(crate) fn bind_all(
    listen: &ListenAddr,
    n: usize,
    transport: Transport,
) -> Result<(Vec<Socket>, SocketAddr), (SocketAddr, io::Error)> {
    let candidates = listen.candidates();
    let last = candidates.len() - 1;
    for (i, addr) in candidates.into_iter().enumerate() {
        match bind_group(addr, n, transport) {
            Ok(bound) => return Ok(bound),
            // `:PORT` on a machine without IPv6: fall back to IPv4.
            Err(e)
                if i < last
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                    ) =>
            {
                tracing::debug!("cannot listen on {addr} ({e}); trying the next address");
            }
            Err(e) => return Err((addr, e)),
        }
    }
    unreachable!("the last candidate returns")
}

fn bind_group(
    addr: SocketAddr,
    n: usize,
    transport: Transport,
) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let probe = new_socket(addr, false, transport)?;
    probe.bind(&addr.into())?;
    let actual = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    drop(probe);
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let s = new_socket(addr, true, transport)?;
        s.bind(&actual.into())?;
        if transport == Transport::Tcp {
            s.listen(BACKLOG)?;
        }
        sockets.push(s);
    }
    Ok((sockets, actual))
}

fn new_socket(addr: SocketAddr, reuse_port: bool, transport: Transport) -> io::Result<Socket> {
    let (ty, proto) = match transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        s.set_only_v6(false)?;
    }
    Ok(s)
}
