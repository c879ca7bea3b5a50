//! [`SharedFd`]: the owner of a descriptor that the caller and in-flight ops share.
//!
//! Invariants:
//! - A `SharedFd` is only ever built from an owning type (`OwnedFd`, `TcpStream`, ...), so the
//!   descriptor it holds is open and owned by nobody else.
//! - The descriptor is closed when the last clone is dropped. The ring keeps a clone in the
//!   record of every op that names it until that op's final completion, so the number cannot
//!   be closed and reused for another file while the kernel still uses it.

use std::fmt;
use std::fs::File;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;

/// A cheaply clonable, single-threaded owner of an open descriptor.
///
/// Every op on [`Ring`](crate::Ring) that names a socket takes a `&SharedFd` and keeps a clone
/// until its final completion; dropping your clones while an op is armed is fine, the
/// descriptor is closed once the ring lets go of it too.
#[derive(Clone)]
pub struct SharedFd(Rc<OwnedFd>);

impl SharedFd {
    /// The raw descriptor number, for logging and comparisons; it stays valid only while
    /// some clone of this `SharedFd` lives.
    pub fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedFd")
            .field(&self.0.as_raw_fd())
            .finish()
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<OwnedFd> for SharedFd {
    fn from(fd: OwnedFd) -> SharedFd {
        SharedFd(Rc::new(fd))
    }
}

macro_rules! from_owner {
    ($($t:ty),*) => {$(
        impl From<$t> for SharedFd {
            fn from(owner: $t) -> SharedFd {
                SharedFd::from(OwnedFd::from(owner))
            }
        }
    )*};
}
from_owner!(TcpStream, TcpListener, UdpSocket, File);
