//! Errors: [`RingError`] for ring setup (each variant names the cause and the fix in terms of
//! this library and the machine), [`SendError`] for a send that could not be queued.
//!
//! Invariants: the diagnosis reads only `/proc` and the errno; messages never name a command
//! line flag of any program, since callers decide how their users size the ring.

use std::error::Error;
use std::fmt;
use std::io;

use bytes::Bytes;

/// Why [`Ring::new`](crate::Ring::new) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RingError {
    /// io_uring is switched off or blocked: `kernel.io_uring_disabled` is set, or a seccomp
    /// profile (Docker's default) refuses the syscalls.
    Disabled {
        /// The errno from `io_uring_setup` (EPERM or ENOSYS).
        source: io::Error,
        /// `kernel.io_uring_disabled` if readable: 1 = group-restricted, 2 = off.
        sysctl: Option<u32>,
    },
    /// Ring or buffer-ring memory exceeds the locked-memory limit.
    MemoryLocked {
        /// The errno (ENOMEM).
        source: io::Error,
        /// The limit as `/proc/self/limits` states it.
        limit: String,
        /// Bytes of receive-buffer ring that were being registered (0 for the ring itself).
        buffer_ring_bytes: usize,
    },
    /// No descriptor left for the ring (EMFILE/ENFILE).
    TooManyOpenFiles {
        /// The errno.
        source: io::Error,
    },
    /// The kernel rejected every setup flag combination: it is older than this crate needs.
    Unsupported {
        /// The last EINVAL.
        source: io::Error,
    },
    /// The kernel refused the provided-buffer ring (EINVAL: kernel < 5.19, or a count that is
    /// not a power of two ≤ 32768).
    BufferRing {
        /// The errno.
        source: io::Error,
        /// The buffer count that was asked for.
        count: u16,
    },
    /// The configuration cannot work (zero entries, zero buffer size, count not a power of two).
    InvalidConfig(&'static str),
    /// Anything else, with the errno.
    Other(io::Error),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Disabled {
                source,
                sysctl: Some(2),
            } => write!(
                f,
                "io_uring is disabled on this machine ({source}, kernel.io_uring_disabled = 2); enable it with `sysctl -w kernel.io_uring_disabled=0`"
            ),
            RingError::Disabled {
                source,
                sysctl: Some(1),
            } => write!(
                f,
                "io_uring is restricted to the group in kernel.io_uring_group ({source}, kernel.io_uring_disabled = 1); run as a member of that group or set `sysctl -w kernel.io_uring_disabled=0`"
            ),
            RingError::Disabled { source, .. } => write!(
                f,
                "io_uring_setup was refused ({source}): a seccomp profile blocks io_uring (Docker's default does); run with a profile that allows io_uring_setup, io_uring_enter and io_uring_register (e.g. `--security-opt seccomp=unconfined`), and check the kernel is Linux 6.0 or newer"
            ),
            RingError::MemoryLocked {
                source,
                limit,
                buffer_ring_bytes: 0,
            } => write!(
                f,
                "io_uring_setup ran out of locked memory ({source}): memlock limit is {limit}; raise it (`ulimit -l unlimited`, or LimitMEMLOCK=infinity in a systemd unit) or create the ring with fewer entries"
            ),
            RingError::MemoryLocked {
                source,
                limit,
                buffer_ring_bytes,
            } => write!(
                f,
                "registering the receive buffer ring ran out of locked memory ({source}): memlock limit is {limit} and the ring needs {buffer_ring_bytes} bytes more; raise the memlock limit (`ulimit -l unlimited`) or use fewer receive buffers"
            ),
            RingError::TooManyOpenFiles { source } => write!(
                f,
                "io_uring_setup could not get a file descriptor ({source}); raise the open-files limit (`ulimit -n`, or `sys::raise_nofile_limit`) or close descriptors"
            ),
            RingError::Unsupported { source } => write!(
                f,
                "io_uring_setup rejected every flag combination ({source}): this kernel is too old; ringrpc-uring needs Linux 6.0 or newer"
            ),
            RingError::BufferRing { source, count } => write!(
                f,
                "registering the receive buffer ring of {count} buffers failed ({source}): provided buffer rings need Linux 5.19 or newer, and the buffer count must be a power of two no larger than 32768"
            ),
            RingError::InvalidConfig(why) => write!(f, "invalid ring configuration: {why}"),
            RingError::Other(source) => write!(f, "io_uring setup failed: {source}"),
        }
    }
}

impl Error for RingError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RingError::Disabled { source, .. }
            | RingError::MemoryLocked { source, .. }
            | RingError::TooManyOpenFiles { source }
            | RingError::Unsupported { source }
            | RingError::BufferRing { source, .. }
            | RingError::Other(source) => Some(source),
            RingError::InvalidConfig(_) => None,
        }
    }
}

/// Diagnoses a failed `io_uring_setup` (after the flag fallback chain handled EINVAL).
pub(crate) fn diagnose_setup(e: io::Error) -> RingError {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::ENOSYS) => RingError::Disabled {
            source: e,
            sysctl: std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok()),
        },
        Some(libc::ENOMEM) => RingError::MemoryLocked {
            source: e,
            limit: memlock_limit_text(),
            buffer_ring_bytes: 0,
        },
        Some(libc::EMFILE | libc::ENFILE) => RingError::TooManyOpenFiles { source: e },
        _ => RingError::Other(e),
    }
}

/// Diagnoses a failed buffer-ring registration of `count` buffers.
pub(crate) fn diagnose_buf_ring(e: io::Error, count: u16) -> RingError {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => RingError::MemoryLocked {
            source: e,
            limit: memlock_limit_text(),
            buffer_ring_bytes: (count as usize * 16).div_ceil(4096) * 4096,
        },
        Some(libc::EINVAL) => RingError::BufferRing { source: e, count },
        _ => RingError::Other(e),
    }
}

/// The memlock limits as /proc/self/limits states them.
fn memlock_limit_text() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max locked memory"))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!(
                        "soft {} hard {} bytes",
                        f.get(3).unwrap_or(&"?"),
                        f.get(4).unwrap_or(&"?")
                    )
                })
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// A send that could not be queued; the batch comes back untouched.
#[derive(Debug)]
pub struct SendError {
    /// Why: `InvalidInput` for an empty batch or one over [`IOV_MAX`](crate::IOV_MAX)
    /// segments, else the error of the `io_uring_enter` that tried to make room.
    pub error: io::Error,
    /// The segments that were to be sent, in order.
    pub batch: Vec<Bytes>,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot queue a send of {} segments: {}",
            self.batch.len(),
            self.error
        )
    }
}

impl Error for SendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        e.error
    }
}
