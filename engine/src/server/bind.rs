//! Binding the sockets of every core to one address: `n` sockets sharing a port through
//! `SO_REUSEPORT`, TCP (listening) or UDP; or one Unix socket whose descriptor every core
//! shares.
//!
//! Invariants: an exclusive bind comes first, so a port another process holds is reported
//! as taken instead of silently joined; `:PORT` tries IPv6 dual-stack, then IPv4; a Unix
//! socket path replaces only a stale socket file, never another kind of file, and is
//! removed at the end only if it is still the file this server made.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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

/// A Unix socket file this server created: removed when dropped (at the end of
/// `RunningServer::join`), unless another file has replaced it since.
#[derive(Debug)]
pub(crate) struct UnixSocketFile {
    path: PathBuf,
    inode: u64,
}

impl UnixSocketFile {
    /// Where the socket file is.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds one Unix listening socket at `listen` (a path or an abstract name) and hands each
/// of `n` reactors its own descriptor of it (the kernel gives each connection to one of
/// the accepts waiting on it). A stale socket file (nobody accepts on it) is replaced; a
/// live one, or anything that is not a socket, is refused and left alone. `mode` sets the
/// file's permissions before it accepts.
pub(crate) fn bind_unix(
    listen: &ListenAddr,
    n: usize,
    mode: Option<u32>,
) -> io::Result<(Vec<UnixListener>, Option<UnixSocketFile>)> {
    let addr = match listen {
        ListenAddr::Unix(path) => {
            replace_stale(path)?;
            SockAddr::unix(path)?
        }
        ListenAddr::UnixAbstract(name) => {
            let mut raw = vec![0u8];
            raw.extend_from_slice(name.as_bytes());
            SockAddr::unix(std::ffi::OsStr::from_bytes(&raw))?
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not a Unix socket address"),
            ));
        }
    };
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&addr)?;
    let file = match listen {
        ListenAddr::Unix(path) => {
            if let Some(mode) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Some(UnixSocketFile {
                path: path.clone(),
                inode: std::fs::symlink_metadata(path)?.ino(),
            })
        }
        _ => None,
    };
    socket.listen(BACKLOG)?;
    let first = UnixListener::from(OwnedFd::from(socket));
    let mut listeners = Vec::with_capacity(n);
    for _ in 1..n {
        listeners.push(first.try_clone()?);
    }
    listeners.push(first);
    Ok((listeners, file))
}

/// Makes way for binding `path`: nothing there, or a socket file nobody accepts on (left
/// by a run that did not stop cleanly), which is removed. A socket something accepts on
/// is `AddrInUse`; any other kind of file is refused and never removed.
fn replace_stale(path: &std::path::Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket (not removed): remove it or choose another path",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another server accepts on {}: stop it or choose another path",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}
