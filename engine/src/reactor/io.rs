//! Receiving and sending: recv completions decoded (or reflected) into their connection,
//! the rest of a large frame received straight into its own buffer,
//! one vectored send per connection per tick, send completions handed back.
//!
//! Invariants: a provided buffer goes back to the kernel when the completion that lent it
//! is done with it; at most one send per connection is in flight, and the batch it carried
//! comes back to the same connection (or is dropped with it); what each completion means
//! for the connection's life is the [`Lifecycle`](crate::conn::lifecycle::Lifecycle)'s call.
//! A zero-copy send is done for the connection at its first completion (the next send may
//! go at once); its notification only counts, since the ring, not the connection, holds its
//! buffers until then, so neither a close nor a released slot waits for it.

use std::io;
use std::os::fd::AsFd;

use bytes::Bytes;
use ringrpc_uring::{Completion, OpKind, SendError, SharedFd, sys};

use super::slot::announce;
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
                    self.stats.recv_buffer_shared += u64::from(buf.offset() > 0);
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
        let (hook, mailbox) = (&self.shared.hooks.on_connect, &self.mailbox);
        let decoded = slot.conn.handle_recv_metered(
            data,
            &slot.policy.router,
            &mut self.methods,
            |rest| bytes_waiting(tag, later, socket, rest),
            |info| announce(hook.as_ref(), info, mailbox),
        );
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
        if let Some(copied) = completion.notification() {
            // The ring has released the zero-copy send's buffers; the connection finished
            // with that send at its first completion and may be gone.
            self.stats.zc_notifications += 1;
            self.stats.zc_copied += u64::from(copied);
            return;
        }
        let Some(idx) = self.live(completion.tag()) else {
            return;
        };
        let slot = &mut self.conns[idx];
        let result = completion.result();
        match completion.take_sent_batch() {
            Some(mut batch) if zero_copy_refused(result, slot.sending_zc) => {
                // Nothing went out: the batch goes back to the front of the queue and
                // leaves in the next flush, plainly.
                self.stats.zc_refused += 1;
                slot.zc_refused = true;
                slot.conn.sent(&mut batch, 0);
                slot.lifecycle.send_done(Ok(0));
            }
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
        let zero_copy = !slot.zc_refused && goes_zero_copy(self.settings.send_zc_min, &batch);
        let sent = if zero_copy {
            self.ring.send_zc(&slot.socket, slot.tag(idx), batch)
        } else {
            self.ring.send(&slot.socket, slot.tag(idx), batch)
        };
        match sent {
            Ok(_) => {
                slot.sending_zc = zero_copy && self.ring.features().send_zc;
                self.stats.sends += 1;
                self.stats.sends_zc += u64::from(slot.sending_zc);
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

/// Whether a send of `batch` goes zero-copy: `send_zc_min` is on (not 0) and the batch
/// carries at least that many bytes.
fn goes_zero_copy(send_zc_min: usize, batch: &[Bytes]) -> bool {
    send_zc_min != 0 && batch.iter().map(Bytes::len).sum::<usize>() >= send_zc_min
}

/// Whether a send's first completion says the socket cannot send zero-copy: a zero-copy
/// send (`was_zero_copy`) that failed with `-EOPNOTSUPP` (a socket that is not TCP or UDP)
/// or `-EINVAL` (a kernel older than the send's copy report, 6.2). The kernel sent nothing
/// then; a plain send follows. The same errors from a plain send are the socket's own.
fn zero_copy_refused(result: i32, was_zero_copy: bool) -> bool {
    was_zero_copy && (result == -libc::EOPNOTSUPP || result == -libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_zero_copy_only_at_or_above_the_threshold() {
        let batch = |sizes: &[usize]| -> Vec<Bytes> {
            sizes.iter().map(|&n| Bytes::from(vec![0; n])).collect()
        };
        assert!(!goes_zero_copy(0, &batch(&[1 << 20])), "0 is off");
        assert!(!goes_zero_copy(65_536, &batch(&[40_000, 25_535])));
        assert!(goes_zero_copy(65_536, &batch(&[40_000, 25_536])));
        assert!(goes_zero_copy(4096, &batch(&[100, 3996])));
        assert!(!goes_zero_copy(4096, &batch(&[100, 3995])));
        assert!(!goes_zero_copy(4096, &[]));
    }

    #[test]
    fn only_the_errors_of_a_socket_without_zero_copy_are_refusals() {
        assert!(zero_copy_refused(-libc::EOPNOTSUPP, true));
        assert!(zero_copy_refused(-libc::EINVAL, true));
        // From a plain send they are the socket's own errors: resending would loop.
        assert!(!zero_copy_refused(-libc::EOPNOTSUPP, false));
        assert!(!zero_copy_refused(-libc::EINVAL, false));
        assert!(!zero_copy_refused(-libc::EPIPE, true));
        assert!(!zero_copy_refused(-libc::ECONNRESET, true));
        assert!(!zero_copy_refused(0, true));
        assert!(!zero_copy_refused(65_536, true));
    }
}
