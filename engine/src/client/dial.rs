//! Dialling one target: TCP (`host:port`) or a Unix domain socket (`unix:/path`,
//! `unix:@name`), then, for a client with TLS, the handshake on the dialling thread, so a
//! certificate refused fails `connect` with rustls' reason.
//!
//! Invariants: runs only on a connecting thread (never a reactor); the socket handed on is
//! blocking, its handshake finished; a handshake is bounded by the connect timeout.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::reactor::shared::StreamSocket;
use crate::transport::tls::TlsLayer;

/// A connected socket and, under TLS, its finished client side.
pub(crate) type Dialled = (StreamSocket, Option<Box<TlsLayer>>);

/// The path of a `unix:` target, if it is one (an abstract name keeps its `@`).
pub(crate) fn unix_target(target: &str) -> Option<&str> {
    target.strip_prefix("unix:")
}

/// Connects to the Unix socket `path` (`@name`: the abstract namespace).
pub(crate) fn connect_unix(path: &str) -> io::Result<UnixStream> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            UnixStream::connect_addr(&addr)
        }
        None => UnixStream::connect(path),
    }
}

/// Connects to `target` (one of its resolved `addrs`, or its Unix path).
pub(crate) fn connect(
    target: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> io::Result<StreamSocket> {
    if let Some(path) = unix_target(target) {
        return connect_unix(path).map(StreamSocket::Unix);
    }
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(StreamSocket::Tcp(stream)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The host part of a `host:port` target (the name TLS expects by default).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Runs the TLS handshake of `tls` over `stream`, within `timeout`.
#[cfg(feature = "tls")]
pub(crate) fn handshake(
    stream: StreamSocket,
    target: &str,
    tls: &crate::ClientTls,
    timeout: Duration,
) -> io::Result<Dialled> {
    let host = if unix_target(target).is_some() {
        "localhost"
    } else {
        host_of(target)
    };
    let (config, name) = tls
        .connector(host)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = rustls::ClientConnection::new(config, name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let deadline = std::time::Instant::now() + timeout;
    {
        let mut io = Blocking::of(&stream);
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake did not finish within the connect timeout",
                ));
            }
            io.set_timeout(Some(left))?;
            conn.complete_io(&mut io)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
        }
        // Anything the server sends from now on is the reactor's to read.
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        io.set_timeout(None)?;
    }
    Ok((stream, Some(Box::new(TlsLayer::client(conn)))))
}

/// Blocking reads and writes on a dialled socket, for the handshake.
#[cfg(feature = "tls")]
enum Blocking<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
}

#[cfg(feature = "tls")]
impl<'a> Blocking<'a> {
    fn of(stream: &'a StreamSocket) -> Blocking<'a> {
        match stream {
            StreamSocket::Tcp(s) => Blocking::Tcp(s),
            StreamSocket::Unix(s) => Blocking::Unix(s),
        }
    }

    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Blocking::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Blocking::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }
}

#[cfg(feature = "tls")]
impl io::Read for Blocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Blocking::Tcp(s) => io::Read::read(s, buf),
            Blocking::Unix(s) => io::Read::read(s, buf),
        }
    }
}

#[cfg(feature = "tls")]
impl io::Write for Blocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Blocking::Tcp(s) => io::Write::write(s, buf),
            Blocking::Unix(s) => io::Write::write(s, buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
