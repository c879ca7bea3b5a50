//! ringrpc's io_uring layer: one single-threaded ring whose ops own every byte and every
//! descriptor the kernel touches, so that safe code cannot free, close or read anything while
//! the kernel is still using it. All of ringrpc's `unsafe` io_uring and syscall use lives in
//! this crate; users can `#![deny(unsafe_code)]`.
//!
//! This file holds the [`Ring`]: its slab of op records, recording an op (`start`), the one
//! place SQEs are made (`enqueue`), cancelling, and the reaper that turns CQEs into
//! [`Completion`]s. The public methods that arm each kind of op live in `arm`, the op records
//! and [`OpId`] in `op`, the [`Completion`] type in `completion`, ring creation with feature
//! fallback in `setup`; each module states its own invariants.
//!
//! Invariants:
//! - Every op is one record in the ring's op slab from push until its *final* completion (one
//!   without the "more" flag). The record owns the memory the op's SQE points into and a
//!   [`SharedFd`] clone of its descriptor, so no fd can be closed (and its number reused) and
//!   no memory can be freed under the kernel, whatever the caller drops.
//! - Payloads are moved out of completions, never copied; [`Completion`] cannot be built or
//!   cloned outside this crate.
//! - Dropping a [`Ring`] cancels every op in flight and waits up to [`DROP_WAIT`] for the kernel
//!   to confirm; if it does not, the op records and the buffer ring are leaked, never freed.
//! - A zero-copy send ([`Ring::send_zc`]) has two completions: the first (with "more")
//!   carries the result and hands the batch back; the notification, its final one, says the
//!   kernel reads the payload no more, and only then does the record release the clones of
//!   the segments it kept.
//! - Minimum kernel: 6.0 (multishot recv and recvmsg, cancel-any). Each op states its own
//!   minimum; newer setup flags are used when present, newer ops when probed
//!   ([`RingFeatures`]).
//!
//! ```no_run
//! use ringrpc_uring::{Completion, OpKind, Ring, RingConfig, SharedFd};
//! let mut ring = Ring::new(RingConfig::default())?;
//! let listener = SharedFd::from(std::net::TcpListener::bind("127.0.0.1:0")?);
//! ring.accept_multi(&listener, 0)?;
//! let mut done: Vec<Completion> = Vec::new();
//! ring.submit_and_wait(1, &mut done)?;
//! for mut c in done.drain(..) {
//!     if let Some(fd) = c.take_accepted() {
//!         let conn = SharedFd::from(fd);
//!         ring.recv_multi(&conn, 1)?;
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod arm;
mod bufring;
mod completion;
mod datagram;
mod error;
mod fd;
mod op;
mod setup;
pub mod sys;

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::num::NonZeroU64;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

use bufring::BufRing;
pub use bufring::RecvBuf;
pub use completion::Completion;
use completion::Payload;
pub use datagram::Datagram;
pub use error::{RingError, SendError};
pub use fd::SharedFd;
pub use op::{CancelOutcome, OpId, OpKind};
use op::{
    INTERNAL_USER_DATA, NOTIF_USAGE_ZC_COPIED, Op, OpMem, Request, SEND_ZC_REPORT_USAGE, SendZcMem,
    USER_DATA_GENERATION_MASK, parse_user_data,
};
pub use setup::RingFeatures;
use setup::setup;

/// Largest number of segments one [`Ring::send`] carries (Linux `IOV_MAX`).
pub const IOV_MAX: usize = 1024;

/// How long [`Ring::cancel_all_and_wait`] (and dropping a ring) waits for cancelled ops.
pub const DROP_WAIT: Duration = Duration::from_secs(2);

/// Buffer group id of the receive buffers (one group per ring).
const RECV_BGID: u16 = 0;

/// Sizes of a ring; see [`Ring::new`].
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Submission queue entries (the completion queue gets 4× as many). More ops than this
    /// may be in flight; a full queue is submitted to make room.
    pub entries: u32,
    /// Receive buffers shared by every multishot recv: a power of two, at most 32768. The
    /// first 64 (incremental ones: 1 MiB of them) are handed to the kernel at once; each
    /// time a recv runs out (`-ENOBUFS`) the
    /// ring hands over as many again, up to all of them. Buffers never handed over cost
    /// address space only, and few buffers in rotation stay warm in the CPU cache.
    pub recv_buffers: u16,
    /// Size of each receive buffer in bytes (≥ 1); one recv completion carries at most this.
    pub recv_buffer_size: usize,
    /// Ask the kernel to consume receive buffers incrementally (`IOU_PBUF_RING_INC`, kernel
    /// ≥ 6.12): a completion takes only the bytes it carries, so several completions share a
    /// buffer and larger buffers cost no more per small receive. A kernel that refuses the
    /// flag gets whole buffers; [`RingFeatures::incremental_recv_buffers`] says which.
    /// [`Ring::recvmsg_multi`] needs whole buffers (a datagram must not be cut short by the
    /// rest of a shared one), so it is refused on a ring that got incremental ones.
    pub incremental_recv_buffers: bool,
}

impl Default for RingConfig {
    /// 256 entries, 256 whole receive buffers of 16 KiB.
    fn default() -> RingConfig {
        RingConfig {
            entries: 256,
            recv_buffers: 256,
            recv_buffer_size: 16 * 1024,
            incremental_recv_buffers: false,
        }
    }
}

/// Wakes a [`Ring`] from any thread: makes its armed [`Ring::wake_read`] complete.
#[derive(Clone, Debug)]
pub struct Waker(Arc<File>);

impl Waker {
    /// Adds 1 to the ring's eventfd. A counter already at its maximum means a wake-up is
    /// pending anyway, so that is not an error.
    pub fn wake(&self) -> io::Result<()> {
        match (&*self.0).write(&1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// One thread's io_uring plus the records of its ops in flight. `!Send`: create it on the
/// thread that uses it.
pub struct Ring {
    uring: IoUring,
    ops: Slab<Op>,
    bufs: Rc<BufRing>,
    wake_fd: SharedFd,
    waker: Waker,
    /// The generation of the next op started (see `op`).
    next_generation: NonZeroU64,
    features: RingFeatures,
    /// A [`Ring::cancel_all_and_wait`] ran out of time: later ones do not wait again.
    gave_up_waiting: bool,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.ops.len())
            .field("bufs", &self.bufs)
            .field("features", &self.features)
            .finish()
    }
}

impl Ring {
    /// Creates the ring and registers its receive buffers and its wake-up eventfd.
    ///
    /// Must be called on the thread that will use the ring (SINGLE_ISSUER, where the kernel
    /// has it). Tries SINGLE_ISSUER+DEFER_TASKRUN, then SINGLE_ISSUER+COOP_TASKRUN, then
    /// COOP_TASKRUN, then no flags; see [`Ring::features`].
    pub fn new(config: RingConfig) -> Result<Ring, RingError> {
        if config.entries == 0 {
            return Err(RingError::InvalidConfig("entries must be at least 1"));
        }
        if !config.recv_buffers.is_power_of_two() {
            return Err(RingError::InvalidConfig(
                "recv_buffers must be a power of two (1, 2, 4, ... 32768)",
            ));
        }
        if config.recv_buffer_size == 0 || config.recv_buffer_size > u32::MAX as usize {
            return Err(RingError::InvalidConfig(
                "recv_buffer_size must be between 1 and u32::MAX bytes",
            ));
        }
        let (uring, features) = setup(config.entries)?;
        let bufs = Rc::new(BufRing::new(
            config.recv_buffers,
            config.recv_buffer_size,
            RECV_BGID,
        ));
        let mut features = features;
        features.incremental_recv_buffers =
            setup::register_buf_ring(&uring, &bufs, config.incremental_recv_buffers)?;
        bufs.publish_initial(features.incremental_recv_buffers);
        let wake = sys::eventfd().map_err(RingError::Other)?;
        let waker = Waker(Arc::new(wake.try_clone().map_err(RingError::Other)?));
        Ok(Ring {
            uring,
            ops: Slab::new(),
            bufs,
            wake_fd: SharedFd::from(wake),
            waker,
            next_generation: NonZeroU64::MIN,
            features,
            gave_up_waiting: false,
        })
    }

    /// Reserves room for `ops` ops in flight at once, so the op table never grows (and
    /// copies itself) below that: one armed recv per connection is one op. The room is
    /// address space until ops use it (about 100 bytes per op).
    pub fn reserve_ops(&mut self, ops: usize) {
        self.ops.reserve(ops.saturating_sub(self.ops.len()));
    }

    /// The setup flags the kernel accepted, and the ops it was probed for.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Makes [`Ring::send_zc`] send plainly from now on, as on a kernel without zero-copy
    /// sends ([`RingFeatures::send_zc`] becomes false). Zero-copy sends in flight finish as
    /// they started.
    pub fn disable_send_zc(&mut self) {
        self.features.send_zc = false;
    }

    /// A handle other threads use to wake this ring (see [`Ring::wake_read`]).
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Ops pushed whose final completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Whether op `id` is still in flight: its slot holds the op of exactly that generation.
    pub fn is_in_flight(&self, id: OpId) -> bool {
        self.ops
            .get(id.index as usize)
            .is_some_and(|op| op.generation == id.generation)
    }

    /// Asks the kernel to cancel op `id` (kernel ≥ 5.5) if it is still in flight
    /// ([`CancelOutcome::Requested`]); the op then finishes with `-ECANCELED` (or with its own
    /// result, if it was already completing). An id whose op has already finished is refused
    /// ([`CancelOutcome::AlreadyFinished`]) and cancels nothing, even if its slot now holds a
    /// newer op: the id's full generation must be the live op's (see `op`). The cancel
    /// request's own completion is consumed by the ring and never returned.
    pub fn cancel(&mut self, id: OpId) -> io::Result<CancelOutcome> {
        if !self.is_in_flight(id) {
            return Ok(CancelOutcome::AlreadyFinished);
        }
        self.enqueue(Request::Cancel(id))?;
        Ok(CancelOutcome::Requested)
    }

    /// Records an op and queues its SQE: one slab insert. On failure the record comes back.
    fn start(
        &mut self,
        tag: u64,
        fd: Option<&SharedFd>,
        mem: OpMem,
    ) -> Result<OpId, (io::Error, Op)> {
        let generation = self.next_generation;
        self.next_generation = generation
            .checked_add(1)
            .expect("2^64 ops started: more than centuries at any rate");
        let op = Op {
            tag,
            generation,
            fd: fd.cloned(),
            mem,
        };
        let slot = self.ops.vacant_entry();
        let Ok(index) = u32::try_from(slot.key()) else {
            return Err((
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "more than 2^32 ops in flight; reap completions",
                ),
                op,
            ));
        };
        slot.insert(op);
        let id = OpId { index, generation };
        match self.enqueue(Request::Op(id)) {
            Ok(()) => Ok(id),
            Err(e) => Err((e, self.ops.remove(index as usize))),
        }
    }

    /// Turns one request into its SQE and queues it, submitting first if the queue is full.
    /// The only place SQEs are made and pushed.
    fn enqueue(&mut self, request: Request) -> io::Result<()> {
        let entry: squeue::Entry = match request {
            Request::Op(id) => {
                let op = &self.ops[id.index as usize];
                let fd = types::Fd(op.fd.as_ref().map_or(-1, SharedFd::raw));
                match &op.mem {
                    OpMem::Accept => opcode::AcceptMulti::new(fd)
                        .flags(libc::SOCK_CLOEXEC)
                        .build(),
                    OpMem::Recv => opcode::RecvMulti::new(fd, self.bufs.bgid()).build(),
                    OpMem::RecvMsg { msg } => {
                        // MSG_TRUNC: the header's payload length is the datagram's full size.
                        opcode::RecvMsgMulti::new(fd, msg.as_ptr().cast_const(), self.bufs.bgid())
                            .flags(libc::MSG_TRUNC as u32)
                            .build()
                    }
                    OpMem::RecvInto { target, want, .. } => opcode::Recv::new(fd, *target, *want)
                        .flags(libc::MSG_WAITALL)
                        .build(),
                    OpMem::Send { msg, .. } => {
                        opcode::SendMsg::new(fd, &**msg as *const libc::msghdr)
                            .flags(libc::MSG_NOSIGNAL as u32)
                            .build()
                    }
                    OpMem::SendZc(SendZcMem::Sending { msg, .. }) => {
                        opcode::SendMsgZc::new(fd, &**msg as *const libc::msghdr)
                            .flags(libc::MSG_NOSIGNAL as u32)
                            .ioprio(SEND_ZC_REPORT_USAGE)
                            .build()
                    }
                    OpMem::SendZc(SendZcMem::AwaitingNotification { .. }) => {
                        unreachable!("an op is pushed once, before its first completion")
                    }
                    OpMem::Wake { buf } => {
                        opcode::Read::new(fd, buf.as_ptr().cast::<u8>(), 8).build()
                    }
                    OpMem::Timeout { ts } => {
                        opcode::Timeout::new(&**ts as *const types::Timespec).build()
                    }
                }
                .user_data(id.user_data())
            }
            Request::Cancel(id) => opcode::AsyncCancel::new(id.user_data())
                .build()
                .user_data(INTERNAL_USER_DATA),
            Request::CancelAll => opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(INTERNAL_USER_DATA),
        };
        loop {
            // SAFETY: every pointer and descriptor in `entry` belongs to the op record in
            // `self.ops` (or is none, for cancels): the fd is a `SharedFd` clone held by the
            // record, so it stays open; a send's `msg`, its iovecs and the `Bytes` they point
            // at, its peer address and GSO control message, the recvmsg template, the timespec
            // and the eventfd buffer are heap allocations owned by the record, which do not
            // move when the slab grows. A zero-copy send's batch stays owned by the record
            // (as itself, then as clones of its segments) until its notification, the final
            // completion: the kernel reads the payload until then, the `msghdr` and iovecs
            // only until the first completion. The record is removed only when its final
            // completion is reaped (`reap`), or leaked with the slab if the kernel never
            // confirms (Drop); recv buffers belong to `self.bufs`, which lives as long.
            // A `recv_into` target is the spare capacity of the `BytesMut` the record owns:
            // `want` bytes are inside it (checked in `recv_into`), its heap storage does not
            // move with the record, and no one reads or borrows that region until the final
            // completion sets the length to cover only what the kernel reported writing.
            let pushed = unsafe { self.uring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.uring.submit()?;
        }
    }

    /// Submits everything queued and waits for at least `want` completions; appends every
    /// completion available to `out`. `EINTR`, `EBUSY`, `EAGAIN` and `ETIME` count as a normal
    /// wake-up (possibly with fewer completions than `want`).
    pub fn submit_and_wait(&mut self, want: usize, out: &mut Vec<Completion>) -> io::Result<()> {
        let entered = self.uring.submit_and_wait(want);
        self.reap(entered, out)
    }

    /// As [`Ring::submit_and_wait`], but returns after `timeout` even without completions
    /// (kernel ≥ 5.11).
    pub fn submit_and_wait_for(
        &mut self,
        want: usize,
        timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        let entered = self.uring.submitter().submit_with_args(want, &args);
        self.reap(entered, out)
    }

    fn reap(&mut self, entered: io::Result<usize>, out: &mut Vec<Completion>) -> io::Result<()> {
        match entered {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)
                ) => {}
            Err(e) => return Err(e),
        }
        for cqe in self.uring.completion() {
            let (result, flags) = (cqe.result(), cqe.flags());
            // Take the buffer first, so it goes back to the kernel whatever happens below.
            let recv_buf = cqueue::buffer_select(flags).map(|bid| {
                let more_in_buf = cqueue::buffer_more(flags);
                RecvBuf::from_completion(&self.bufs, bid, result.max(0) as usize, more_in_buf)
            });
            let Some((index, low_generation)) = parse_user_data(cqe.user_data()) else {
                continue; // our own cancel request
            };
            let Some(op) = self.ops.get(index as usize) else {
                continue;
            };
            if op.generation.get() & USER_DATA_GENERATION_MASK != low_generation {
                continue;
            }
            let id = OpId {
                index,
                generation: op.generation,
            };
            let kind = op.mem.kind();
            let tag = op.tag;
            let more = cqueue::more(flags);
            let notification = cqueue::notif(flags);
            if result == -libc::ENOBUFS && matches!(kind, OpKind::Recv | OpKind::RecvMsg) {
                // The caller re-arms; that recv finds twice the buffers (until all are out).
                self.bufs.grow();
            }
            let mut payload = match (kind, recv_buf) {
                (OpKind::RecvMsg, Some(buf)) => match Datagram::parse(buf) {
                    Ok(d) => Payload::Datagram(d),
                    Err(buf) => Payload::Recv(buf),
                },
                (_, Some(buf)) => Payload::Recv(buf),
                (OpKind::Accept, None) if result >= 0 => {
                    // SAFETY: a non-negative accept result is a descriptor the kernel just
                    // created for this process; nothing else knows it, so this is its only owner.
                    Payload::Accepted(unsafe { OwnedFd::from_raw_fd(result) })
                }
                _ => Payload::None,
            };
            if notification {
                // The kernel reads the payload no longer; the record, with the segments it
                // kept, goes below. Bit 31 of the result is the copy report, not an errno.
                payload = Payload::Notification {
                    copied: result as u32 & NOTIF_USAGE_ZC_COPIED != 0,
                };
            } else if more && kind == OpKind::Send {
                // Only a zero-copy send's first completion: multishot recvs and accepts,
                // which carry "more" on every completion, skip the second lookup.
                if let Some(op) = self.ops.get_mut(id.index as usize) {
                    if let OpMem::SendZc(mem) = &mut op.mem {
                        payload = mem.first_completion().map_or(Payload::None, Payload::Sent);
                        // The kernel names the socket no more; closing it must not wait
                        // for the notification (which may wait for the peer to read).
                        op.fd = None;
                    }
                }
            }
            if !more {
                match self.ops.remove(id.index as usize).mem {
                    OpMem::Send { batch, .. } => payload = Payload::Sent(batch),
                    // The first completion came without "more": no notification follows.
                    OpMem::SendZc(SendZcMem::Sending { batch, .. }) if !notification => {
                        payload = Payload::Sent(batch);
                    }
                    OpMem::RecvInto { mut buf, want, .. } => {
                        let got = usize::try_from(result).unwrap_or(0);
                        assert!(
                            got <= want as usize,
                            "kernel reported {got} bytes for a recv of {want}"
                        );
                        // SAFETY: the kernel wrote `got` bytes (≤ `want`, within the spare
                        // capacity, checked at push and above) right after the initialised
                        // prefix before posting this completion, and the op is finished, so
                        // nothing writes there any more.
                        unsafe { buf.set_len(buf.len() + got) };
                        payload = Payload::Filled(buf);
                    }
                    _ => {}
                }
            }
            let result = if notification { 0 } else { result };
            out.push(Completion::new(tag, id, kind, result, more, payload));
        }
        Ok(())
    }

    /// Cancels every op in flight and waits up to [`DROP_WAIT`] for the kernel to finish them
    /// all (kernel ≥ 6.0); returns whether it did. Completions reaped meanwhile are dropped
    /// (accepted sockets closed, buffers recycled, batches freed). A zero-copy send's
    /// notification cannot be cancelled: it comes when the peer has acknowledged the bytes
    /// (or the connection is gone), so a peer that stopped reading can hold it past the
    /// wait. Once a wait has run out, later calls (and dropping the ring) only reap what
    /// has come meanwhile, without waiting again.
    pub fn cancel_all_and_wait(&mut self) -> bool {
        if self.ops.is_empty() {
            return true;
        }
        if self.gave_up_waiting {
            let _ = self.submit_and_wait_for(0, Duration::ZERO, &mut Vec::new());
            return self.ops.is_empty();
        }
        if self.enqueue(Request::CancelAll).is_err() {
            return false;
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut done = Vec::new();
        while !self.ops.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self
                .submit_and_wait_for(self.ops.len(), deadline - now, &mut done)
                .is_err()
            {
                break;
            }
            done.clear();
        }
        self.gave_up_waiting = !self.ops.is_empty();
        self.ops.is_empty()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.cancel_all_and_wait() {
            // The kernel may still use these: never free them.
            std::mem::forget(std::mem::take(&mut self.ops));
            std::mem::forget(Rc::clone(&self.bufs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring {
        Ring::new(RingConfig {
            entries: 8,
            recv_buffers: 1,
            recv_buffer_size: 64,
            incremental_recv_buffers: false,
        })
        .expect("io_uring setup")
    }

    /// Reaps until `id`'s final completion (within 10 s) and returns its result.
    fn final_result(ring: &mut Ring, id: OpId) -> i32 {
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut done = Vec::new();
        while Instant::now() < give_up {
            ring.submit_and_wait_for(1, Duration::from_millis(100), &mut done)
                .unwrap();
            if let Some(c) = done.iter().find(|c| c.op() == id && !c.more()) {
                return c.result();
            }
            done.clear();
        }
        panic!("op {id:?} did not finish within 10 s");
    }

    #[test]
    fn a_stale_id_is_refused_even_when_the_kernel_could_not_tell_it_from_the_live_one() {
        let mut ring = ring();
        let old = ring.timeout(Duration::from_millis(1), 1).unwrap();
        assert_eq!(final_result(&mut ring, old), -libc::ETIME);
        // As if 2^31 ops had started since: the next op reuses the slot with a generation
        // whose low 31 bits, all the kernel sees, are the old op's.
        ring.next_generation = old.generation.checked_add(1 << 31).unwrap();
        let new = ring.timeout(Duration::from_secs(3600), 2).unwrap();
        assert_eq!(new.index, old.index);
        assert_eq!(new.user_data(), old.user_data());
        assert_ne!(new, old);

        assert_eq!(ring.cancel(old).unwrap(), CancelOutcome::AlreadyFinished);
        let mut done = Vec::new();
        ring.submit_and_wait_for(1, Duration::from_millis(100), &mut done)
            .unwrap();
        assert!(
            done.iter().all(|c| c.op() != new),
            "the stale cancel reached the new op"
        );
        assert!(ring.is_in_flight(new));
        // The live id does cancel it.
        assert_eq!(ring.cancel(new).unwrap(), CancelOutcome::Requested);
        assert_eq!(final_result(&mut ring, new), -libc::ECANCELED);
    }
}
