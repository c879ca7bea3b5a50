//! The handful of raw system calls ringrpc needs that std does not wrap.
//!
//! Invariants: every descriptor created here is wrapped in an owning type before the function
//! returns, so it is closed exactly once; nothing here turns a caller's integer into an owner.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec eventfd (kernel ≥ 2.6.27).
pub fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers; a negative return is an error.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by the kernel for us and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Raises the soft open-files limit to the hard limit; returns `(old_soft, new_soft)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit owned by this frame for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read above with only the soft limit raised; the
        // kernel only reads it during the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// Turns transparent huge pages off (`true`) or back to the system's policy (`false`) for
/// this process (`PR_SET_THP_DISABLE`, kernel ≥ 3.15). Children forked meanwhile keep the
/// setting across `execve`.
pub fn set_thp_disabled(disabled: bool) -> io::Result<()> {
    let flag = libc::c_ulong::from(disabled);
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, flag, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether transparent huge pages are off for this process ([`set_thp_disabled`]).
pub fn thp_disabled() -> io::Result<bool> {
    // SAFETY: PR_GET_THP_DISABLE takes no pointers; it returns the flag or -1.
    let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    if flag < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flag != 0)
}

/// Bytes waiting unread in a socket's receive queue (`FIONREAD`/`SIOCINQ`).
pub fn unread_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is borrowed open for the call; FIONREAD writes one c_int into `n`, which
    // this frame owns.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off for this process and for a program started meanwhile, then back on.
    #[test]
    fn huge_pages_turn_off_for_children_and_back_on() {
        let child_sees = || {
            let out = std::process::Command::new("cat")
                .arg("/proc/self/status")
                .output()
                .expect("run cat");
            let status = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = status.lines().find(|l| l.starts_with("THP_enabled:"));
            line.map(|l| l.trim_start_matches("THP_enabled:").trim().to_string())
        };
        let was = thp_disabled().unwrap();
        set_thp_disabled(true).unwrap();
        assert!(thp_disabled().unwrap());
        assert_eq!(child_sees().as_deref(), Some("0"), "inherited across exec");
        set_thp_disabled(false).unwrap();
        assert!(!thp_disabled().unwrap());
        assert_eq!(child_sees().as_deref(), Some("1"));
        set_thp_disabled(was).unwrap();
    }
}
