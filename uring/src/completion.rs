//! [`Completion`]: what the ring hands back for one finished (or, for multishot ops,
//! progressed) op, with the [`Payload`] the op produced.
//!
//! Invariants:
//! - Payloads are moved out of completions, never copied: an accepted descriptor is wrapped in
//!   an [`OwnedFd`] by the ring the moment its completion is reaped, the bytes a completion
//!   put in a receive buffer become one [`RecvBuf`] slice (its docs and module give the
//!   proof) or, for `recvmsg`, one
//!   [`Datagram`] owning that `RecvBuf` and parsed without `unsafe`, a send's batch comes back
//!   only in that send's own [`Completion`]. Each `take_*` leaves [`Payload::None`] behind, so
//!   a payload comes out at most once.
//! - [`Completion`] cannot be built or cloned outside this crate: its fields are private and
//!   only the ring calls [`Completion::new`].

use std::os::fd::OwnedFd;

use bytes::{Bytes, BytesMut};

use crate::bufring::RecvBuf;
use crate::datagram::Datagram;
use crate::op::{OpId, OpKind};

/// Something an op produced, moved out by its [`Completion`]'s owner.
#[derive(Debug)]
pub(crate) enum Payload {
    None,
    Accepted(OwnedFd),
    Recv(RecvBuf),
    Datagram(Datagram),
    Sent(Vec<Bytes>),
    Filled(BytesMut),
    /// A zero-copy send's notification; `copied`: the kernel copied the payload after all.
    Notification {
        copied: bool,
    },
}

/// One finished (or, for multishot ops, progressed) op.
///
/// Built only by the ring; dropping it drops its payload safely (an accepted descriptor is
/// closed, a receive buffer goes back to the kernel, a send batch is freed). It cannot be made
/// or copied outside this crate:
///
/// ```compile_fail,E0451
/// use ringrpc_uring::{Completion, OpKind};
/// let c = Completion { tag: 0, op: todo!(), kind: OpKind::Send, result: 0, more: false, payload: todo!() };
/// ```
///
/// ```compile_fail,E0599
/// fn dup(c: &ringrpc_uring::Completion) -> ringrpc_uring::Completion {
///     c.clone()
/// }
/// ```
#[derive(Debug)]
pub struct Completion {
    tag: u64,
    op: OpId,
    kind: OpKind,
    result: i32,
    more: bool,
    payload: Payload,
}

impl Completion {
    /// The ring's only way to make one, as it reaps a CQE.
    pub(crate) fn new(
        tag: u64,
        op: OpId,
        kind: OpKind,
        result: i32,
        more: bool,
        payload: Payload,
    ) -> Completion {
        Completion {
            tag,
            op,
            kind,
            result,
            more,
            payload,
        }
    }
    /// Moves the payload out if `pick` accepts it; otherwise leaves it in place.
    fn take_payload<T>(&mut self, pick: impl FnOnce(Payload) -> Result<T, Payload>) -> Option<T> {
        match pick(std::mem::replace(&mut self.payload, Payload::None)) {
            Ok(taken) => Some(taken),
            Err(other) => {
                self.payload = other;
                None
            }
        }
    }
    /// The tag given when the op was pushed.
    pub fn tag(&self) -> u64 {
        self.tag
    }
    /// Which op this is.
    pub fn op(&self) -> OpId {
        self.op
    }
    /// What kind of op this is.
    pub fn kind(&self) -> OpKind {
        self.kind
    }
    /// Bytes transferred, the accepted descriptor number, or a negated errno (a timeout that
    /// fired reports `-ETIME`, a cancelled op `-ECANCELED`).
    pub fn result(&self) -> i32 {
        self.result
    }
    /// Whether the (multishot) op stays armed; `false` on every op's final completion.
    pub fn more(&self) -> bool {
        self.more
    }
    /// The connection an accept completion produced, owned by the caller from now on.
    pub fn take_accepted(&mut self) -> Option<OwnedFd> {
        self.take_payload(|p| match p {
            Payload::Accepted(x) => Ok(x),
            other => Err(other),
        })
    }
    /// The bytes a recv completion delivered; the buffer goes back to the kernel when the
    /// [`RecvBuf`] is dropped. A [`Ring::recvmsg_multi`](crate::Ring::recvmsg_multi)
    /// completion carries its buffer as a [`Datagram`] instead; only a buffer with a malformed
    /// header comes out here, raw.
    pub fn take_recv_buf(&mut self) -> Option<RecvBuf> {
        self.take_payload(|p| match p {
            Payload::Recv(x) => Ok(x),
            other => Err(other),
        })
    }
    /// The datagram a [`Ring::recvmsg_multi`](crate::Ring::recvmsg_multi) completion
    /// delivered: peer, payload and truncation, owning its receive buffer (recycled when the
    /// [`Datagram`] is dropped). `None` for other completions, and for a buffer whose `recvmsg`
    /// header is malformed: that buffer stays here, for [`Completion::take_recv_buf`] or to
    /// recycle on drop.
    pub fn take_datagram(&mut self) -> Option<Datagram> {
        self.take_payload(|p| match p {
            Payload::Datagram(x) => Ok(x),
            other => Err(other),
        })
    }
    /// A [`Ring::recv_into`](crate::Ring::recv_into)'s own buffer, its length grown by the
    /// bytes received (the result, when positive; unchanged on error or EOF).
    pub fn take_filled(&mut self) -> Option<BytesMut> {
        self.take_payload(|p| match p {
            Payload::Filled(buf) => Ok(buf),
            other => Err(other),
        })
    }
    /// For a zero-copy send's notification ([`Ring::send_zc`](crate::Ring::send_zc)), its
    /// final completion: `Some(copied)`, `copied` being true where the kernel reported
    /// copying the payload after all (kernel ≥ 6.2; a loopback peer, for one, gets a copy
    /// at delivery). The ring has released the segments it kept. `None` for every other
    /// completion, the send's first one included. A notification's [`Completion::result`]
    /// is 0.
    pub fn notification(&self) -> Option<bool> {
        match self.payload {
            Payload::Notification { copied } => Some(copied),
            _ => None,
        }
    }
    /// A send's own batch, in order, for resuming a partial send or reusing the `Vec`.
    pub fn take_sent_batch(&mut self) -> Option<Vec<Bytes>> {
        self.take_payload(|p| match p {
            Payload::Sent(batch) => Ok(batch),
            other => Err(other),
        })
    }
}
