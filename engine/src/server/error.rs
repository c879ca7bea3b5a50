//! Why a server could not start ([`StartError`]) or stopped with an error
//! ([`ServerError`]).
//!
//! Invariants: each message names the cause and the fix (which process holds a port, which
//! privilege is missing); texts never name CLI flags.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::reactor::runtime::{RunError, SpawnError};
use crate::router::RouteError;
use ringrpc_uring::RingError;

/// Why the server could not start; each message names the cause and the fix.
#[derive(Debug)]
pub enum StartError {
    /// A setting is out of range.
    Config(ConfigError),
    /// A method name is invalid.
    Route(RouteError),
    /// Another socket already listens on the address.
    AddrInUse(SocketAddr),
    /// Binding needs privileges the process lacks.
    PermissionDenied(SocketAddr),
    /// The address is not one of this machine's.
    AddrNotAvailable(SocketAddr),
    /// Any other socket error while binding.
    Bind(SocketAddr, io::Error),
    /// A reactor's io_uring could not be set up.
    Ring(usize, RingError),
    /// A thread or eventfd could not be created.
    Resource(&'static str, io::Error),
    /// The metrics address ([`ConfigBuilder::metrics_listen`](crate::ConfigBuilder::metrics_listen))
    /// could not be bound.
    MetricsBind(SocketAddr, io::Error),
    /// A Unix socket listen address (`unix:/PATH` or `unix:@NAME`) could not be bound.
    UnixBind(String, io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Route(e) => write!(f, "{e}"),
            StartError::AddrInUse(a) => write!(
                f,
                "address {a} is already in use: another process listens on port {p} (find it with `ss -ltnp 'sport = :{p}'`); stop it or listen on another port",
                p = a.port()
            ),
            StartError::PermissionDenied(a) => write!(
                f,
                "permission denied binding {a}: ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port of 1024 or more"
            ),
            StartError::AddrNotAvailable(a) => write!(
                f,
                "cannot bind {a}: that address is not assigned to this machine; use :PORT for all interfaces or one of `ip addr`'s addresses"
            ),
            StartError::Bind(a, e) => write!(f, "cannot bind {a}: {e}"),
            StartError::UnixBind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            StartError::Ring(core, e) => write!(f, "core {core}: {e}"),
            StartError::Resource(what, e) => write!(f, "cannot create {what}: {e}"),
            StartError::MetricsBind(a, e) => match e.raw_os_error() {
                Some(libc::EADDRINUSE) => write!(
                    f,
                    "cannot serve metrics on {a}: the address is already in use (find the process with `ss -ltnp 'sport = :{p}'`); give metrics_listen another port",
                    p = a.port()
                ),
                Some(libc::EACCES) | Some(libc::EPERM) => write!(
                    f,
                    "cannot serve metrics on {a}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE); give metrics_listen a port of 1024 or more"
                ),
                Some(libc::EADDRNOTAVAIL) => write!(
                    f,
                    "cannot serve metrics on {a}: that address is not assigned to this machine; give metrics_listen :PORT or one of `ip addr`'s addresses"
                ),
                _ => write!(f, "cannot serve metrics on {a}: {e}"),
            },
        }
    }
}

impl std::error::Error for StartError {}

impl From<SpawnError> for StartError {
    fn from(e: SpawnError) -> StartError {
        match e {
            SpawnError::Ring { core, source } => StartError::Ring(core, source),
            SpawnError::Resource { what, source } => StartError::Resource(what, source),
        }
    }
}

/// Why [`Server::run`](crate::Server::run) or [`Server::run_until_signal`](crate::Server::run_until_signal) returned an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The server could not start.
    Start(StartError),
    /// SIGINT and SIGTERM could not be caught (only from the signal-handling calls).
    Signals(io::Error),
    /// A reactor stopped with an error or a panic while serving.
    Run(RunError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Start(_) => f.write_str("the server could not start"),
            ServerError::Signals(_) => f.write_str("cannot catch SIGINT and SIGTERM"),
            ServerError::Run(_) => f.write_str("the server stopped with an error"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Start(e) => Some(e),
            ServerError::Signals(e) => Some(e),
            ServerError::Run(e) => Some(e),
        }
    }
}

impl From<StartError> for ServerError {
    fn from(e: StartError) -> Self {
        ServerError::Start(e)
    }
}

impl From<RunError> for ServerError {
    fn from(e: RunError) -> Self {
        ServerError::Run(e)
    }
}

/// The startup error for binding `addr` failing with `e`.
pub(super) fn bind_error(addr: SocketAddr, e: io::Error) -> StartError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => StartError::AddrInUse(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => StartError::PermissionDenied(addr),
        Some(libc::EADDRNOTAVAIL) => StartError::AddrNotAvailable(addr),
        _ => StartError::Bind(addr, e),
    }
}
