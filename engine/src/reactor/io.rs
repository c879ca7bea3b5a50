//! Receiving and sending: recv completions decoded (or reflected) into their connection,
//! one vectored send per connection per tick, send completions handed back.
//!
//! Invariants: a provided buffer is recycled in the same completion that lent it; at most
//! one send per connection is in flight, and the batch it carried comes back to the same
//! connection (or is dropped with it); a recv that ended is re-armed only while the
//! connection still reads.

use std::io;
use std::os::fd::AsRawFd;

use super::Reactor;
use crate::error::DisconnectReason;
use crate::ring::{Cqe, OpKind};

impl Reactor {
    pub(super) fn on_recv(&mut self, cqe: Cqe) {
        let Some(idx) = self.live(cqe.token) else {
            if let Some(bid) = cqe.buffer_id() {
                self.ring.bufs().recycle(bid);
            }
            return;
        };
        let slot = &mut self.conns[idx];
        if !cqe.more() {
            slot.recv_armed = false;
        }
        let mut partial_started = false;
        if cqe.result > 0 {
            slot.last_active = self.now;
            slot.pinged = false;
            match cqe.buffer_id() {
                Some(bid) => {
                    let bufs = self.ring.bufs();
                    let reading = slot.dead.is_none() && !slot.write_shut && slot.failed.is_none();
                    let data = bufs.get(bid, cqe.result as usize);
                    if self.settings.reflect && reading {
                        slot.conn.reflect(data);
                        self.stats.bytes_in += data.len() as u64;
                    } else if reading {
                        let before = slot.conn.session.stats;
                        let result = slot.conn.handle_recv(data, &slot.policy.router);
                        self.stats.add_conn_delta(&before, &slot.conn.session.stats);
                        if slot.conn.session.rejected() && slot.failed.is_none() {
                            slot.failed = Some(DisconnectReason::Unauthenticated);
                        }
                        let held = slot.conn.partial_len() > 0;
                        partial_started = held && slot.partial_since.is_none();
                        slot.partial_since = match held {
                            false => None,
                            true => slot.partial_since.or(Some(self.now)),
                        };
                        if let Err(e) = result {
                            self.stats.protocol_errors += 1;
                            tracing::debug!(core = self.id, peer = %slot.info().peer, "closing connection: {e}");
                            // Answer the valid frames before the bad one, then close.
                            slot.failed = Some(DisconnectReason::Protocol(e));
                        }
                    }
                    bufs.recycle(bid);
                    if slot.failed.is_some() && slot.recv_armed {
                        // Read nothing more from a peer that broke the protocol.
                        let token = slot.token(OpKind::Recv, idx);
                        if let Err(e) = self.ring.cancel(token) {
                            slot.close(DisconnectReason::Socket(e));
                        }
                    }
                }
                None => slot.close(DisconnectReason::Socket(io::Error::other(
                    "recv completion without a buffer",
                ))),
            }
        } else if cqe.result == 0 {
            slot.peer_eof = true;
        } else {
            match -cqe.result {
                libc::ENOBUFS => self.stats.recv_buffers_exhausted += 1,
                libc::ECANCELED => {}
                errno => {
                    self.stats.socket_errors += 1;
                    slot.close(DisconnectReason::Socket(io::Error::from_raw_os_error(
                        errno,
                    )));
                }
            }
        }
        if !slot.recv_armed
            && slot.dead.is_none()
            && !slot.peer_eof
            && !slot.paused
            && slot.failed.is_none()
        {
            self.arm_recv(idx);
        }
        // A new partial frame brings the read timeout forward; a connection whose timers
        // were all spent (e.g. a keepalive Ping sent) gets them back now that data came.
        if partial_started || self.conns[idx].timer_at.is_none() {
            self.schedule_conn_timer(idx);
        }
        self.mark_dirty(idx);
    }

    /// Arms multishot recv on connection `idx`; a failure closes it.
    pub(super) fn arm_recv(&mut self, idx: usize) {
        let slot = &mut self.conns[idx];
        let token = slot.token(OpKind::Recv, idx);
        match self.ring.recv_multi(slot.stream.as_raw_fd(), token) {
            Ok(()) => slot.recv_armed = true,
            Err(e) => slot.close(DisconnectReason::Socket(e)),
        }
    }

    pub(super) fn on_send(&mut self, cqe: Cqe) {
        let Some(done) = self.ring.take_send(&cqe) else {
            return;
        };
        let Some(idx) = self.live(done.conn) else {
            return;
        };
        let slot = &mut self.conns[idx];
        slot.send_in_flight = false;
        if done.result < 0 {
            self.stats.socket_errors += 1;
            slot.close(DisconnectReason::Socket(io::Error::from_raw_os_error(
                -done.result,
            )));
        } else {
            self.stats.bytes_out += done.result as u64;
            let mut batch = done.segments;
            slot.conn.session.out.sent(&mut batch, done.result as usize);
            slot.spare_batch = batch;
        }
        self.mark_dirty(idx);
    }

    /// Starts one vectored send of everything queued on connection `idx`, if it is open,
    /// has output and has no send in flight.
    pub(super) fn start_send(&mut self, idx: usize) {
        let slot = &mut self.conns[idx];
        if slot.dead.is_some() || slot.send_in_flight || slot.conn.session.out.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut slot.spare_batch);
        self.stats.frames_out += slot.conn.session.out.take_batch(&mut batch);
        let token = slot.token(OpKind::Send, idx);
        match self.ring.send(slot.stream.as_raw_fd(), token, batch) {
            Ok(()) => {
                slot.send_in_flight = true;
                self.stats.sends += 1;
            }
            Err(e) => slot.close(DisconnectReason::Socket(e)),
        }
    }
}
