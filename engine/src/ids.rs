//! Who a connection is: its process-unique id and what hooks learn about it.
//!
//! Invariants: a leaf module (no imports from the rest of the crate); a [`ConnId`] names one
//! connection for the life of the process — its `serial` comes from a per-reactor 64-bit
//! counter that never wraps in practice (2^64 accepts), so an id is never reused even when
//! its slab slot is.

use std::fmt;
use std::net::SocketAddr;

/// Identifies one connection for the life of the process; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) core: u16,
    pub(crate) slot: u32,
    pub(crate) serial: u64,
}

/// The bit of [`ConnId`]'s slot that marks a datagram peer's pseudo-connection.
pub(crate) const DATAGRAM_SLOT_BIT: u32 = 1 << 31;

impl ConnId {
    /// The reactor (core index) that owns the connection.
    pub fn core(&self) -> usize {
        self.core as usize
    }

    /// Whether this names a datagram peer (a pseudo-connection of the UDP endpoint).
    pub(crate) fn is_datagram(&self) -> bool {
        self.slot & DATAGRAM_SLOT_BIT != 0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.core, self.slot, self.serial)
    }
}

/// What hooks and broadcast filters learn about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection.
    pub id: ConnId,
    /// The peer's address.
    pub peer: SocketAddr,
}
