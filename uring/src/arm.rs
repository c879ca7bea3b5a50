//! Arming ops: each public [`Ring`] method that starts an op checks its arguments, builds the
//! memory the op will own ([`OpMem`]) and hands it to `Ring::start`, which records it and
//! queues its SQE. Nothing here talks to the kernel.
//!
//! Invariant: every pointer an op's SQE will carry points into memory its `OpMem` owns on the
//! heap (or into the ring's receive buffers), so it stays valid however the record moves; an
//! op refused here or by `start` hands its memory back to the caller.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use io_uring::types;

use crate::datagram::{self, GsoControl, SockAddr};
use crate::error::SendError;
use crate::fd::SharedFd;
use crate::op::{KernelCell, OpId, OpMem, SendZcMem};
use crate::{IOV_MAX, Ring};
// Named in the methods' docs.
#[cfg(doc)]
use crate::{Completion, Datagram, OpKind, RecvBuf, RingConfig, Waker};

impl Ring {
    /// Arms multishot accept on `listener` (kernel ≥ 5.19): one completion per connection,
    /// whose [`Completion::take_accepted`] is the new close-on-exec socket.
    pub fn accept_multi(&mut self, listener: &SharedFd, tag: u64) -> io::Result<OpId> {
        self.start(tag, Some(listener), OpMem::Accept)
            .map_err(|(e, _)| e)
    }

    /// Arms multishot recv on `socket` into the receive buffers (kernel ≥ 6.0): one completion
    /// per received chunk, with a [`RecvBuf`]. A final completion with `-ENOBUFS` means every
    /// buffer handed to the kernel was in use; the ring hands over more if it has any
    /// ([`RingConfig::recv_buffers`]): drop what you hold and arm again. `0` means end of
    /// stream.
    pub fn recv_multi(&mut self, socket: &SharedFd, tag: u64) -> io::Result<OpId> {
        self.start(tag, Some(socket), OpMem::Recv)
            .map_err(|(e, _)| e)
    }

    /// Arms multishot `recvmsg` on a datagram `socket` into the receive buffers (kernel ≥ 6.0):
    /// one completion per datagram, whose [`Completion::take_datagram`] gives the sender's
    /// address and the payload. Each buffer holds a 16-byte header and a 128-byte address
    /// field before the payload, so a datagram longer than `recv_buffer_size - 144` bytes is
    /// delivered truncated ([`Datagram::is_truncated`]). `-ENOBUFS` ends it as for
    /// [`Ring::recv_multi`]. Fails with `InvalidInput` if the buffers are smaller than 144 bytes
    /// or consumed incrementally ([`RingConfig::incremental_recv_buffers`]: the rest of a
    /// shared buffer could cut a datagram short).
    pub fn recvmsg_multi(&mut self, socket: &SharedFd, tag: u64) -> io::Result<OpId> {
        if self.features.incremental_recv_buffers {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recvmsg needs whole receive buffers; this ring consumes them incrementally",
            ));
        }
        if self.bufs.buf_size() < datagram::MIN_BUFFER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "recvmsg needs receive buffers of at least {} bytes, these have {}",
                    datagram::MIN_BUFFER,
                    self.bufs.buf_size()
                ),
            ));
        }
        // SAFETY: msghdr is plain old data; all-zero is a valid empty header (the libc
        // struct has private padding fields on some targets, so no struct literal).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_namelen = datagram::NAME_FIELD as libc::socklen_t;
        let msg = KernelCell::new(msg);
        self.start(tag, Some(socket), OpMem::RecvMsg { msg })
            .map_err(|(e, _)| e)
    }

    /// Receives exactly `want` bytes from `socket` (fewer only at EOF, on error or when
    /// cancelled) straight into `buf`'s spare capacity with one `recv(MSG_WAITALL)`
    /// (kernel ≥ 5.18, which retries short reads inside the kernel): no provided buffer and
    /// no copy. The ring owns `buf` until the final completion, whose
    /// [`Completion::take_filled`] gives it back with the received bytes appended. Do not
    /// arm a multishot recv on the same socket meanwhile: which op gets which bytes would be
    /// undefined. Fails with `InvalidInput` (handing `buf` back) if `want` is 0, over
    /// `u32::MAX` or more than the spare capacity.
    pub fn recv_into(
        &mut self,
        socket: &SharedFd,
        tag: u64,
        buf: BytesMut,
        want: usize,
    ) -> Result<OpId, (io::Error, BytesMut)> {
        let spare = buf.capacity() - buf.len();
        if want == 0 || want > spare || u32::try_from(want).is_err() {
            return Err((
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "recv_into wants 1 to {spare} bytes (the spare capacity), not {want}; reserve first"
                    ),
                ),
                buf,
            ));
        }
        let want = want as u32;
        let mut buf = buf;
        let target = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        self.start(tag, Some(socket), OpMem::RecvInto { buf, target, want })
            .map_err(|(e, op)| match op.mem {
                OpMem::RecvInto { buf, .. } => (e, buf),
                _ => unreachable!("start hands back the op it was given"),
            })
    }

    /// Sends `batch` in order with one `sendmsg(MSG_NOSIGNAL)` (kernel ≥ 5.3), 1 to
    /// [`IOV_MAX`] segments. The ring owns the batch until the completion, which hands it back
    /// ([`Completion::take_sent_batch`]); the result may be a short write. On error the batch
    /// comes back inside [`SendError`].
    pub fn send(
        &mut self,
        socket: &SharedFd,
        tag: u64,
        batch: Vec<Bytes>,
    ) -> Result<OpId, SendError> {
        self.send_msg(socket, tag, None, None, batch)
    }

    /// Sends `batch` as one datagram to `peer` with one `sendmsg(MSG_NOSIGNAL)` (kernel ≥ 5.3)
    /// on an unconnected datagram socket, 1 to [`IOV_MAX`] segments. The ring owns the batch
    /// and the encoded address until the completion (kind [`OpKind::Send`]), which hands the
    /// batch back ([`Completion::take_sent_batch`]). On error the batch comes back inside
    /// [`SendError`].
    pub fn send_to(
        &mut self,
        socket: &SharedFd,
        tag: u64,
        peer: SocketAddr,
        batch: Vec<Bytes>,
    ) -> Result<OpId, SendError> {
        self.send_msg(socket, tag, Some(peer), None, batch)
    }

    /// As [`Ring::send_to`], but the kernel splits the batch's bytes into datagrams of
    /// `segment_size` bytes each, the last one possibly shorter (UDP GSO, `UDP_SEGMENT`,
    /// kernel ≥ 4.18); one completion for the whole send. The kernel refuses (`-EINVAL`) more
    /// than 64 segments, a `segment_size` of 0 or above the path MTU, and non-UDP sockets.
    pub fn send_to_segmented(
        &mut self,
        socket: &SharedFd,
        tag: u64,
        peer: SocketAddr,
        segment_size: u16,
        batch: Vec<Bytes>,
    ) -> Result<OpId, SendError> {
        self.send_msg(socket, tag, Some(peer), Some(segment_size), batch)
    }

    /// As [`Ring::send`], but zero-copy (`IORING_OP_SENDMSG_ZC`, kernel ≥ 6.1; the copy
    /// report needs 6.2): the kernel sends straight from the batch's memory instead of
    /// copying it into socket buffers. Where the ring has no zero-copy send
    /// ([`RingFeatures::send_zc`](crate::RingFeatures::send_zc) false: not probed, or
    /// [`Ring::disable_send_zc`]) it is exactly [`Ring::send`].
    ///
    /// Two completions: the first carries the result and hands the batch back
    /// ([`Completion::take_sent_batch`]) as a plain send's does; when it says
    /// [`Completion::more`], a notification follows ([`Completion::notification`]), its
    /// final one. Until then the ring keeps clones of every segment, so their memory stays
    /// allocated and, being shared, unwritable through `Bytes`: the caller may send again at
    /// once. A socket that cannot send zero-copy (not TCP or UDP) fails the first completion
    /// with `-EOPNOTSUPP`, the batch back unsent; send it with [`Ring::send`] instead.
    pub fn send_zc(
        &mut self,
        socket: &SharedFd,
        tag: u64,
        batch: Vec<Bytes>,
    ) -> Result<OpId, SendError> {
        if !self.features.send_zc {
            return self.send(socket, tag, batch);
        }
        if let Err(error) = check_segments(&batch) {
            return Err(SendError { error, batch });
        }
        let (iovecs, msg) = msghdr_for(&batch);
        let mem = OpMem::SendZc(SendZcMem::Sending {
            batch,
            _iovecs: iovecs,
            msg,
        });
        self.start(tag, Some(socket), mem)
            .map_err(|(error, op)| match op.mem {
                OpMem::SendZc(SendZcMem::Sending { batch, .. }) => SendError { error, batch },
                _ => unreachable!("a zero-copy send's record holds a send"),
            })
    }

    /// The one `sendmsg` builder behind [`Ring::send`], [`Ring::send_to`] and
    /// [`Ring::send_to_segmented`].
    fn send_msg(
        &mut self,
        socket: &SharedFd,
        tag: u64,
        peer: Option<SocketAddr>,
        segment_size: Option<u16>,
        batch: Vec<Bytes>,
    ) -> Result<OpId, SendError> {
        if let Err(error) = check_segments(&batch) {
            return Err(SendError { error, batch });
        }
        let (iovecs, mut msg) = msghdr_for(&batch);
        let name = peer.map(|peer| {
            let (addr, len) = SockAddr::new(peer);
            let addr = Box::new(addr);
            msg.msg_name = (&*addr as *const SockAddr).cast_mut().cast();
            msg.msg_namelen = len;
            addr
        });
        let control = segment_size.map(|size| {
            let control = Box::new(GsoControl::new(size));
            msg.msg_control = (&*control as *const GsoControl).cast_mut().cast();
            msg.msg_controllen = GsoControl::LEN as _;
            control
        });
        let mem = OpMem::Send {
            batch,
            _iovecs: iovecs,
            _name: name,
            _control: control,
            msg,
        };
        self.start(tag, Some(socket), mem)
            .map_err(|(error, op)| match op.mem {
                OpMem::Send { batch, .. } => SendError { error, batch },
                _ => unreachable!("a send's record holds a send"),
            })
    }

    /// Arms one 8-byte read of the ring's eventfd (kernel ≥ 5.6); it completes once some
    /// [`Waker::wake`] ran (result 8) and must then be armed again.
    pub fn wake_read(&mut self, tag: u64) -> io::Result<OpId> {
        let fd = self.wake_fd.clone();
        self.start(
            tag,
            Some(&fd),
            OpMem::Wake {
                buf: KernelCell::new(0),
            },
        )
        .map_err(|(e, _)| e)
    }

    /// Arms a one-shot timer `after` from now (kernel ≥ 5.4); it completes with `-ETIME` when
    /// it fires. Any number may be armed at once.
    pub fn timeout(&mut self, after: Duration, tag: u64) -> io::Result<OpId> {
        let ts = Box::new(types::Timespec::from(after));
        self.start(tag, None, OpMem::Timeout { ts })
            .map_err(|(e, _)| e)
    }
}

/// A send carries 1 to [`IOV_MAX`] segments.
fn check_segments(batch: &[Bytes]) -> io::Result<()> {
    if batch.is_empty() || batch.len() > IOV_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a send carries 1 to {IOV_MAX} segments, not {}; split the batch",
                batch.len()
            ),
        ));
    }
    Ok(())
}

/// One iovec per segment of `batch` and a `msghdr` pointing at them, both on the heap (so
/// they stay put when the op record moves).
fn msghdr_for(batch: &[Bytes]) -> (Vec<libc::iovec>, Box<libc::msghdr>) {
    let iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        })
        .collect();
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header (the libc
    // struct has private padding fields on some targets, so no struct literal).
    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msg.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovecs.len() as _;
    (iovecs, msg)
}
