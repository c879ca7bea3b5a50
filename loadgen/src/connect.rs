//! Reaching the target: its addresses (TCP) or its Unix domain socket (`unix:/path`,
//! `unix:@abstract`), and connections to it, under TLS with `--tls` ([`Dialer`]).
//!
//! Invariant: a Unix socket is handed on as a `TcpStream` (converted through its file
//! descriptor): every call the I/O engines make on it (recv, send, timeouts, non-blocking,
//! io_uring) works on any stream socket; only `set_nodelay`, TCP's own, is skipped for it.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::cli::config::Config;
use crate::error::RunError;
use crate::tls::{TlsSession, TlsSettings};

/// Longest a blocking read or write waits before the thread re-checks deadlines and timeouts.
const BLOCKING_POLL: Duration = Duration::from_millis(10);

/// The target's addresses, or why there are none.
pub(crate) fn resolve(config: &Config) -> Result<Vec<SocketAddr>, RunError> {
    let addrs: Vec<SocketAddr> = config
        .target
        .to_socket_addrs()
        .map_err(|e| RunError::Resolve {
            target: config.target.clone(),
            cause: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(RunError::Resolve {
            target: config.target.clone(),
            cause: "no addresses".into(),
        });
    }
    Ok(addrs)
}

pub(crate) fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(ErrorKind::AddrNotAvailable, "no addresses")))
}

/// Where arpc connections go.
#[derive(Debug, Clone)]
enum Endpoint {
    Tcp(Vec<SocketAddr>),
    /// A path, or `@name` in the abstract namespace.
    Unix(String),
}

/// Opens the run's arpc connections (and, with `--reconnect-every`, new ones mid-run).
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    endpoint: Endpoint,
    tls: Option<TlsSettings>,
    timeout: Duration,
}

impl Dialer {
    pub(crate) fn new(config: &Config) -> Result<Dialer, RunError> {
        let endpoint = match config.target.strip_prefix("unix:") {
            Some(path) => Endpoint::Unix(path.to_string()),
            None => Endpoint::Tcp(resolve(config)?),
        };
        Ok(Dialer {
            endpoint,
            tls: config.tls.clone(),
            timeout: config.timeout,
        })
    }

    /// Over a Unix domain socket (no TCP options then).
    pub(crate) fn is_unix(&self) -> bool {
        matches!(self.endpoint, Endpoint::Unix(_))
    }

    /// Sets a connection up for its I/O engine: a lone `--io std` connection blocks with
    /// short timeouts, several on one thread do not block, io_uring needs neither.
    pub(crate) fn configure(
        &self,
        stream: &TcpStream,
        blocking: bool,
        nonblocking: bool,
    ) -> io::Result<()> {
        if !self.is_unix() {
            stream.set_nodelay(true)?;
        }
        if blocking {
            stream.set_read_timeout(Some(BLOCKING_POLL))?;
            stream.set_write_timeout(Some(BLOCKING_POLL))?;
        }
        stream.set_nonblocking(nonblocking)
    }

    /// `--reconnect-every`: a new connection, set up as [`Dialer::configure`] says.
    pub(crate) fn redial(
        &self,
        blocking: bool,
        nonblocking: bool,
    ) -> io::Result<(TcpStream, Option<TlsSession>)> {
        let (socket, tls) = self.dial()?;
        self.configure(&socket, blocking, nonblocking)?;
        Ok((socket, tls))
    }

    /// A new connection, its TLS handshake done (blocking) when `--tls` is on.
    pub(crate) fn dial(&self) -> io::Result<(TcpStream, Option<TlsSession>)> {
        let mut stream = match &self.endpoint {
            Endpoint::Tcp(addrs) => connect(addrs, self.timeout)?,
            Endpoint::Unix(path) => TcpStream::from(OwnedFd::from(connect_unix(path)?)),
        };
        if !self.is_unix() {
            // Before the handshake, whose small flights Nagle would hold back.
            stream.set_nodelay(true)?;
        }
        let Some(tls) = &self.tls else {
            return Ok((stream, None));
        };
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let session = tls
            .handshake(&mut stream)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok((stream, Some(session)))
    }
}

fn connect_unix(path: &str) -> io::Result<UnixStream> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            UnixStream::connect_addr(&addr)
        }
        None => UnixStream::connect(path),
    }
}
