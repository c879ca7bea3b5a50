//! The handful of raw system calls the engine needs that std does not wrap.
//!
//! Invariants: every file descriptor created here is wrapped in an owning type before the
//! function returns, so it is closed exactly once.

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};

/// Wraps a descriptor that a completed accept just produced.
///
/// Callers pass only the non-negative result of an accept completion: the kernel created
/// that descriptor for this process and nothing else refers to it yet.
pub fn stream_from_accept(fd: i32) -> TcpStream {
    assert!(fd >= 0, "accept result is not a descriptor");
    // SAFETY: `fd` is a fresh descriptor returned by the kernel for our accept; this is its
    // only owner, and the TcpStream closes it on drop.
    TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking, close-on-exec eventfd used to wake a reactor from other threads.
pub fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers; a negative return is an error.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Raises the soft open-files limit to the hard limit; returns `(old_soft, new_soft)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read above with only the soft limit raised.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// Bytes waiting unread in a socket's receive queue (SIOCINQ).
pub fn unread_bytes(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is borrowed open for the call; FIONREAD writes one c_int into `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}
