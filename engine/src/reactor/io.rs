//! Receiving and sending: recv completions decoded (or reflected) into their connection,
//! one vectored send per connection per tick, send completions handed back.
//!
//! Invariants: a provided buffer is recycled in the same completion that lent it; at most
//! one send per connection is in flight, and the batch it carried comes back to the same
//! connection (or is dropped with it); a recv that ended is re-armed only while the
//! connection still reads.

use std::io;

use ringrpc_uring::{Completion, SendError};

use super::Reactor;
use crate::error::DisconnectReason;

impl Reactor {
    pub(super) fn on_recv(&mut self, mut completion: Completion) {
        // A completion for a connection already released is dropped (its buffer returns
        // to the kernel as it drops).
        let Some(idx) = self.live(completion.tag()) else {
            return;
        };
        let slot = &mut self.conns[idx];
        if !completion.more() {
            slot.recv = None;
        }
        let mut partial_started = false;
        let result = completion.result();
        if result > 0 {
            slot.last_active = self.now;
            slot.pinged = false;
            match completion.take_recv_buf() {
                Some(buf) => {
                    let reading = slot.dead.is_none() && !slot.write_shut && slot.failed.is_none();
                    let data: &[u8] = &buf;
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
                    drop(buf);
                    if let (Some(_), Some(recv)) = (&slot.failed, slot.recv) {
                        // Read nothing more from a peer that broke the protocol.
                        if let Err(e) = self.ring.cancel(recv) {
                            slot.close(DisconnectReason::Socket(e));
                        }
                    }
                }
                None => slot.close(DisconnectReason::Socket(io::Error::other(
                    "recv completion without a buffer",
                ))),
            }
        } else if result == 0 {
            slot.peer_eof = true;
        } else {
            match -result {
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
        if slot.recv.is_none()
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
        match self.ring.recv_multi(&slot.socket, slot.tag(idx)) {
            Ok(op) => slot.recv = Some(op),
            Err(e) => slot.close(DisconnectReason::Socket(e)),
        }
    }

    pub(super) fn on_send(&mut self, mut completion: Completion) {
        let Some(idx) = self.live(completion.tag()) else {
            return;
        };
        let slot = &mut self.conns[idx];
        slot.send_in_flight = false;
        let result = completion.result();
        let batch = completion.take_sent_batch();
        match batch {
            Some(mut batch) if result >= 0 => {
                self.stats.bytes_out += result as u64;
                slot.conn.session.out.sent(&mut batch, result as usize);
                slot.spare_batch = batch;
            }
            _ => {
                self.stats.socket_errors += 1;
                slot.close(DisconnectReason::Socket(io::Error::from_raw_os_error(
                    -result,
                )));
            }
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
        match self.ring.send(&slot.socket, slot.tag(idx), batch) {
            Ok(_) => {
                slot.send_in_flight = true;
                self.stats.sends += 1;
            }
            Err(SendError { error, .. }) => slot.close(DisconnectReason::Socket(error)),
        }
    }
}
