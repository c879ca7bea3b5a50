//! Op records: what the ring keeps for one op from push until its final completion ([`Op`],
//! with the memory its SQE points into, [`OpMem`]), the id that names it ([`OpId`]), its kind
//! ([`OpKind`]), and the [`Request`]s that the ring's one SQE builder turns into SQEs.
//!
//! Invariants:
//! - A record owns what the kernel reads or writes for its op: the send batch with its
//!   iovecs, `msghdr` and (for [`Ring::send_to`](crate::Ring::send_to)) the encoded peer
//!   address and GSO control message, a [`Ring::recv_into`](crate::Ring::recv_into)'s target
//!   `BytesMut` (the kernel writes only its spare capacity; the length grows by the reported
//!   bytes at the final completion), the `recvmsg` template `msghdr`, the timeout's timespec,
//!   the eventfd read buffer, and a [`SharedFd`] clone of the descriptor the op names. All of
//!   it is on the heap, so it stays put when the record moves. While the ring keeps the record,
//!   an fd cannot be closed (and its number reused) and no memory can be freed under the
//!   kernel, whatever the caller drops.
//! - A zero-copy send ([`SendZcMem`]) keeps its record past the first completion (which
//!   carries "more" and hands the batch back): clones of the batch's segments stay in it
//!   until the notification completion, its final one. Its descriptor clone is dropped at
//!   the first completion, since the kernel no longer names the socket by then, so closing
//!   the connection never waits for a peer that does not read.
//! - Memory the kernel writes is a [`KernelCell`], reached only through a raw pointer, so no
//!   Rust reference to it exists while the kernel may write.
//! - An [`OpId`] is the op's slab index plus its 64-bit generation, one more for every op the
//!   ring starts: it never wraps (2^64 ops), so a stale id never equals the id of a newer op in
//!   the same slot, however long it was kept. The kernel sees less: `user_data` is the index
//!   plus the generation's low 31 bits ([`USER_DATA_GENERATION_MASK`]; bit 63 is
//!   [`INTERNAL_USER_DATA`], which marks the ring's own cancel requests, whose completions are
//!   consumed internally and never surfaced). So the full generation is checked on our side,
//!   before anything reaches the kernel: [`Ring::cancel`](crate::Ring::cancel) issues an
//!   `ASYNC_CANCEL` only when the id's full generation is the live op's in that slot, and
//!   otherwise cancels nothing. The cancel then names that op by `user_data`, which no other op
//!   in flight has (one op per slot). Nor can a newer op in the slot take it over before the
//!   kernel reads the cancel: that would need 2^31 ops started while the cancel waits in the
//!   submission queue, but the queue is submitted in order whenever it is full, long before.

use std::num::NonZeroU64;
use std::ptr::NonNull;

use bytes::{Bytes, BytesMut};
use io_uring::types;

use crate::datagram::{GsoControl, SockAddr};
use crate::fd::SharedFd;

/// `user_data` of the ring's own cancel requests.
pub(crate) const INTERNAL_USER_DATA: u64 = 1 << 63;
/// The bits of a generation that `user_data` carries (above the index), keeping bit 63 for
/// internal requests.
pub(crate) const USER_DATA_GENERATION_MASK: u64 = (1 << 31) - 1;

/// `IORING_SEND_ZC_REPORT_USAGE` (kernel 6.2), a zero-copy send's flag in the SQE's `ioprio`:
/// the notification then says whether the kernel copied the data after all.
pub(crate) const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;

/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the kernel copied.
pub(crate) const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// Names one op from push until its final completion; returned by every op.
///
/// Slab slot plus the op's 64-bit generation: once the op has finished, the id matches
/// nothing, even after its slot was reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId {
    pub(crate) index: u32,
    pub(crate) generation: NonZeroU64,
}

impl OpId {
    /// What the kernel carries for this op: the index and the generation's low 31 bits.
    pub(crate) fn user_data(self) -> u64 {
        ((self.generation.get() & USER_DATA_GENERATION_MASK) << 32) | self.index as u64
    }
}

/// What a completion's `user_data` says: the slab index and the low 31 bits of the op's
/// generation, or `None` for the ring's own cancel requests.
pub(crate) fn parse_user_data(user_data: u64) -> Option<(u32, u64)> {
    if user_data & INTERNAL_USER_DATA != 0 {
        return None;
    }
    Some((user_data as u32, user_data >> 32))
}

/// What [`Ring::cancel`](crate::Ring::cancel) did with an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The op was in flight: a cancel request is queued, and its final completion follows.
    Requested,
    /// The op had already finished (its final completion was reaped, or is about to be handed
    /// out): nothing was cancelled, even if its slot now holds a newer op.
    AlreadyFinished,
}

/// What kind of op a completion finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// [`Ring::accept_multi`](crate::Ring::accept_multi).
    Accept,
    /// [`Ring::recv_multi`](crate::Ring::recv_multi).
    Recv,
    /// [`Ring::recvmsg_multi`](crate::Ring::recvmsg_multi).
    RecvMsg,
    /// [`Ring::recv_into`](crate::Ring::recv_into).
    RecvInto,
    /// [`Ring::send`](crate::Ring::send), [`Ring::send_to`](crate::Ring::send_to) and
    /// [`Ring::send_to_segmented`](crate::Ring::send_to_segmented): each one `sendmsg`, whose
    /// completion hands the batch back the same way. [`Ring::send_zc`](crate::Ring::send_zc)
    /// too, whose notification is a second completion of this kind
    /// ([`Completion::notification`](crate::Completion::notification)).
    Send,
    /// [`Ring::wake_read`](crate::Ring::wake_read).
    Wake,
    /// [`Ring::timeout`](crate::Ring::timeout).
    Timeout,
}

/// A heap cell the kernel writes into: held as a raw pointer, never as a `Box`, so no Rust
/// reference to it exists while the kernel may write.
///
/// The pointer is private so that `new` is the only way in: `Drop` relies on it.
pub(crate) struct KernelCell<T>(NonNull<T>);

impl<T> KernelCell<T> {
    pub(crate) fn new(v: T) -> KernelCell<T> {
        KernelCell(NonNull::from(Box::leak(Box::new(v))))
    }

    /// The cell's address, for an SQE.
    pub(crate) fn as_ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

impl<T> Drop for KernelCell<T> {
    fn drop(&mut self) {
        // SAFETY: made by Box::leak in `new` and freed only here. Its op record is dropped
        // only after the op's final completion (or never), so the kernel is done with it.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// The memory an op's SQE points into, owned by its record until the final completion.
pub(crate) enum OpMem {
    Accept,
    Recv,
    RecvMsg {
        /// The template: `msg_namelen` only. A `KernelCell`, not a `Box`: the kernel only reads
        /// it for multishot, but plain `recvmsg` writes a header back, so assume nothing.
        msg: KernelCell<libc::msghdr>,
    },
    RecvInto {
        /// The kernel writes into its spare capacity, `len()..len() + want`; nothing reads or
        /// borrows that region until the final completion hands the buffer back.
        buf: BytesMut,
        /// `buf`'s spare capacity, taken through `&mut` when the op was pushed.
        target: *mut u8,
        want: u32,
    },
    Send {
        batch: Vec<Bytes>,
        // Never read by us: kept so the kernel's pointers stay valid until the completion.
        _iovecs: Vec<libc::iovec>,
        /// `send_to`'s peer address and GSO control message, pointed at by `msg`.
        _name: Option<Box<SockAddr>>,
        _control: Option<Box<GsoControl>>,
        msg: Box<libc::msghdr>,
    },
    /// A zero-copy `sendmsg` ([`Ring::send_zc`](crate::Ring::send_zc)), in two stages.
    SendZc(SendZcMem),
    Wake {
        buf: KernelCell<u64>,
    },
    Timeout {
        ts: Box<types::Timespec>,
    },
}

impl OpMem {
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            OpMem::Accept => OpKind::Accept,
            OpMem::Recv => OpKind::Recv,
            OpMem::RecvMsg { .. } => OpKind::RecvMsg,
            OpMem::RecvInto { .. } => OpKind::RecvInto,
            OpMem::Send { .. } | OpMem::SendZc(_) => OpKind::Send,
            OpMem::Wake { .. } => OpKind::Wake,
            OpMem::Timeout { .. } => OpKind::Timeout,
        }
    }
}

/// A zero-copy send's memory. The kernel reads the `msghdr` and iovecs only while it issues
/// the send, which ends with the first completion; it may read the payload itself (its pages
/// pinned into socket buffers) until the notification completion.
pub(crate) enum SendZcMem {
    /// Pushed; the first completion, with the result, has not come.
    Sending {
        batch: Vec<Bytes>,
        // Never read by us: kept so the kernel's pointers stay valid until the completion.
        _iovecs: Vec<libc::iovec>,
        msg: Box<libc::msghdr>,
    },
    /// The first completion came with "more": the caller has the batch back, and these
    /// clones keep every segment's memory allocated (and, `Bytes` being shared, unwritable)
    /// until the notification says the kernel no longer reads it.
    AwaitingNotification { _pinned: Vec<Bytes> },
}

impl SendZcMem {
    /// The first completion came, with a notification to follow: hands the batch back and
    /// keeps clones of its segments until the notification. `None` if it already came.
    pub(crate) fn first_completion(&mut self) -> Option<Vec<Bytes>> {
        let SendZcMem::Sending { batch, .. } = self else {
            return None;
        };
        let pinned = batch.clone();
        let batch = std::mem::take(batch);
        // Drops the msghdr and iovecs: the kernel read them while it issued the send.
        *self = SendZcMem::AwaitingNotification { _pinned: pinned };
        Some(batch)
    }
}

/// One op in flight.
pub(crate) struct Op {
    pub(crate) tag: u64,
    /// Its [`OpId`]'s generation.
    pub(crate) generation: NonZeroU64,
    /// The descriptor the op names; closing waits for this clone too.
    pub(crate) fd: Option<SharedFd>,
    pub(crate) mem: OpMem,
}

/// What [`Ring::enqueue`](crate::Ring::enqueue) turns into an SQE.
pub(crate) enum Request {
    /// The op recorded in this slab slot.
    Op(OpId),
    /// Cancel the op with this id (checked to be the live op in its slot).
    Cancel(OpId),
    /// Cancel every op (kernel ≥ 6.0).
    CancelAll,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_carries_the_index_and_the_low_31_bits_of_the_generation() {
        let id = |index, generation| OpId {
            index,
            generation: NonZeroU64::new(generation).unwrap(),
        };
        assert_eq!(parse_user_data(id(7, 5).user_data()), Some((7, 5)));
        // Generations 2^31 apart look the same to the kernel, though the ids differ...
        let later = id(7, 5 + (1 << 31));
        assert_eq!(later.user_data(), id(7, 5).user_data());
        assert_ne!(later, id(7, 5));
        // ...and no generation, however large, reaches bit 63, the mark of internal requests.
        let huge = id(u32::MAX, u64::MAX);
        assert_eq!(huge.user_data() & INTERNAL_USER_DATA, 0);
        assert_eq!(parse_user_data(INTERNAL_USER_DATA), None);
    }
}
