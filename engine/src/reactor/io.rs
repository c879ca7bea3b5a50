//! Receiving and sending: recv completions decoded (or reflected) into their connection,
//! the rest of a large frame received straight into its own buffer,
//! one vectored send per connection per tick, send completions handed back.
//!
//! Invariants: a provided buffer goes back to the kernel when the completion that lent it
//! is done with it; at most one send per connection is in flight, and the batch it carried
//! comes back to the same connection (or is dropped with it); what each completion means
//! for the connection's life is the [`Lifecycle`](crate::conn::lifecycle::Lifecycle)'s call.

use std::io;
use std::os::fd::AsFd;

use ringrpc_uring::{Completion, OpKind, SendError, SharedFd, sys};

use super::{Reactor, SPARE_BATCHES, SPARE_BUFFERS};
use crate::error::DisconnectReason;

impl Reactor {
    /// A multishot recv completed; `later` are the completions after it in this batch.
    pub(super) fn on_recv(&mut self, mut completion: Completion, later: &[Completion]) {
        // A completion for a connection already released is dropped (its buffer returns
        // to the kernel as it drops).
        let Some(idx) = self.live(completion.tag()) else {
            return;
        };
        let now = self.now;
        let slot = &mut self.conns[idx];
        let more = completion.more();
        if !more {
            slot.recv = None;
        }
        let result = completion.result();
        if result > 0 {
            match completion.take_recv_buf() {
                Some(buf) if slot.lifecycle.recv_data(now, more) => {
                    if self.settings.reflect {
                        slot.conn.reflect(&buf);
                        self.stats.bytes_in += buf.len() as u64;
                    } else {
                        self.decode(idx, &buf, later);
                    }
                }
                // Lingering or failing: read and discarded.
                Some(_) => {}
                None => slot
                    .lifecycle
                    .recv_error(io::Error::other("recv completion without a buffer"), more),
            }
        } else {
            self.recv_ended_without_data(idx, result, more);
        }
        // A new partial frame brings the read timeout forward; data after a keepalive Ping
        // brings the keepalive back.
        self.schedule_conn_timer(idx);
        self.mark_dirty(idx);
    }

    /// A direct recv (the rest of a large frame, straight into its buffer) finished: the
    /// buffer goes back to the framing whatever happened, then the frame is decoded.
    pub(super) fn on_recv_direct(&mut self, mut completion: Completion) {
        let Some(idx) = self.live(completion.tag()) else {
            return;
        };
        let now = self.now;
        let slot = &mut self.conns[idx];
        slot.recv = None;
        let result = completion.result();
        if let Some(buf) = completion.take_filled() {
            let received = result.max(0) as usize;
            slot.conn.end_direct(buf, received);
            self.stats.bytes_in += received as u64;
        }
        if result > 0 {
            if slot.lifecycle.recv_data(now, false) {
                self.decode(idx, &[], &[]);
            }
        } else {
            self.recv_ended_without_data(idx, result, false);
        }
        self.schedule_conn_timer(idx);
        self.mark_dirty(idx);
    }

    /// Decodes `data` (after any partial frame held) on connection `idx`, `later` being the
    /// completions after it in this batch; a protocol or authentication failure starts its
    /// close.
    fn decode(&mut self, idx: usize, data: &[u8], later: &[Completion]) {
        let now = self.now;
        let slot = &mut self.conns[idx];
        if slot.conn.session.out.wants_buffer() {
            if let Some(buf) = self.spare_buffers.pop() {
                slot.conn.session.out.give_buffer(buf);
            }
        }
        let before = slot.conn.session.stats;
        let (tag, socket) = (slot.tag(idx), &slot.socket);
        let decoded =
            slot.conn
                .handle_recv_metered(data, &slot.policy.router, &mut self.methods, |rest| {
                    bytes_waiting(tag, later, socket, rest)
                });
        self.stats.add_conn_delta(&before, &slot.conn.session.stats);
        let lifecycle = &mut slot.lifecycle;
        lifecycle.decoded(now, slot.conn.partial_len() > 0);
        // A protocol error outranks a failed authentication in the same read.
        if let Err(e) = decoded {
            let reason = e.into_reason();
            if matches!(reason, DisconnectReason::Protocol(_)) {
                self.stats.protocol_errors += 1;
            }
            tracing::debug!(core = self.id, peer = %slot.conn.session.info().peer, "closing connection: {reason}");
            // What the valid input earned (answers, an HTTP status, a Close frame) is sent,
            // then it closes.
            lifecycle.fail(reason);
        }
        if slot.conn.session.rejected() {
            lifecycle.fail(DisconnectReason::Unauthenticated);
        }
    }

    /// A recv (multishot or direct) completed with EOF (0) or an error (`-errno`).
    fn recv_ended_without_data(&mut self, idx: usize, result: i32, more: bool) {
        let lifecycle = &mut self.conns[idx].lifecycle;
        if result == 0 {
            lifecycle.recv_eof();
            return;
        }
        match -result {
            libc::ENOBUFS => {
                self.stats.recv_buffers_exhausted += 1;
                lifecycle.recv_no_buffers();
            }
            libc::ECANCELED => lifecycle.recv_cancelled(),
            errno => {
                self.stats.socket_errors += 1;
                lifecycle.recv_error(io::Error::from_raw_os_error(errno), more);
            }
        }
    }

    pub(super) fn on_send(&mut self, mut completion: Completion) {
        let Some(idx) = self.live(completion.tag()) else {
            return;
        };
        let slot = &mut self.conns[idx];
        let result = completion.result();
        match completion.take_sent_batch() {
            Some(mut batch) if result >= 0 => {
                self.stats.bytes_out += result as u64;
                slot.conn.sent(&mut batch, result as usize);
                if self.spare_batches.len() < SPARE_BATCHES {
                    self.spare_batches.push(batch);
                }
                if let Some(buf) = slot.conn.session.out.take_idle_buffer() {
                    if self.spare_buffers.len() < SPARE_BUFFERS {
                        self.spare_buffers.push(buf);
                    }
                }
                slot.lifecycle.send_done(Ok(result as usize));
            }
            _ => {
                self.stats.socket_errors += 1;
                slot.lifecycle
                    .send_done(Err(io::Error::from_raw_os_error(-result)));
            }
        }
        self.mark_dirty(idx);
    }

    /// Arms multishot recv on connection `idx`; `Err` if the ring refused.
    pub(super) fn arm_recv(&mut self, idx: usize) -> io::Result<()> {
        let slot = &mut self.conns[idx];
        slot.recv = Some(self.ring.recv_multi(&slot.socket, slot.tag(idx))?);
        Ok(())
    }

    /// Starts the direct recv of the rest of connection `idx`'s partial frame into its own
    /// buffer; `Err` if the ring refused (the buffer is back with the framing).
    pub(super) fn start_direct(&mut self, idx: usize) -> io::Result<()> {
        let slot = &mut self.conns[idx];
        // Bytes already in the socket have arrived: room for them is reserved at once.
        let queued = sys::unread_bytes(slot.socket.as_fd()).unwrap_or(0);
        let Some((buf, want)) = slot.conn.take_for_direct(queued) else {
            return Err(io::Error::other("no partial frame to receive directly"));
        };
        match self.ring.recv_into(&slot.socket, slot.tag(idx), buf, want) {
            Ok(op) => {
                slot.recv = Some(op);
                self.stats.direct_recvs += 1;
                Ok(())
            }
            Err((e, buf)) => {
                slot.conn.end_direct(buf, 0);
                Err(e)
            }
        }
    }

    /// Starts one vectored send of everything queued on connection `idx`.
    pub(super) fn start_send(&mut self, idx: usize) -> io::Result<()> {
        let slot = &mut self.conns[idx];
        let mut batch = self.spare_batches.pop().unwrap_or_default();
        self.stats.frames_out += slot.conn.take_batch(&mut batch);
        self.stats.gzip_out += slot.conn.session.out.take_gzip_out();
        match self.ring.send(&slot.socket, slot.tag(idx), batch) {
            Ok(_) => {
                self.stats.sends += 1;
                Ok(())
            }
            Err(SendError { error, .. }) => Err(error),
        }
    }
}

/// Bytes that arrived for the connection of `tag` and wait to be decoded: those its recv
/// completions later in this batch carry, then (unless those are already `rest` or more)
/// those in its socket.
fn bytes_waiting(tag: u64, later: &[Completion], socket: &SharedFd, rest: usize) -> usize {
    let in_batch: usize = later
        .iter()
        .filter(|c| c.tag() == tag && c.kind() == OpKind::Recv)
        .map(|c| c.result().max(0) as usize)
        .sum();
    if in_batch >= rest {
        return in_batch;
    }
    in_batch + sys::unread_bytes(socket.as_fd()).unwrap_or(0)
}
