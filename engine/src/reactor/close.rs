//! Carrying out what a connection's [`Lifecycle`](crate::conn::lifecycle::Lifecycle) decides: its timers in the reactor's
//! deadline heap, and each poll's actions — Ping, send, recv arm or cancel, shutdowns,
//! the overstock hook, release.
//!
//! Invariants: the lifecycle decides, this file only acts (every decision and its tests
//! live in `lifecycle`); actions run in the order the lifecycle documents; an action the
//! ring refuses is reported back to the lifecycle and the connection polled again.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::Instant;

use ringrpc_uring::sys;

use super::Reactor;
use super::timers::TimerId;
use crate::conn::lifecycle::Facts;
use crate::executor::contain::contain;

/// A refused action leads to a close, which needs at most one more poll to settle.
const MAX_POLLS: usize = 3;

impl Reactor {
    /// Makes sure the deadline heap holds connection `idx`'s next deadline (or an earlier
    /// entry, which re-schedules it when due).
    pub(super) fn schedule_conn_timer(&mut self, idx: usize) {
        let slot = &mut self.conns[idx];
        let Some(at) = slot.lifecycle.next_deadline(&slot.policy.lifecycle) else {
            return;
        };
        if slot.timer_at.is_none_or(|scheduled| at < scheduled) {
            slot.timer_at = Some(at);
            let id = TimerId::Conn {
                slot: idx as u32,
                serial: slot.serial(),
            };
            self.deadlines.schedule(at, id);
        }
    }

    /// A connection's deadline entry came due: poll it (the lifecycle applies whichever of
    /// its timers expired) and schedule its next one.
    pub(super) fn on_conn_timer(&mut self, idx: usize, serial: u64, at: Instant) {
        let Some(slot) = self.conns.get_mut(idx) else {
            return;
        };
        if slot.serial() != serial || slot.timer_at != Some(at) {
            return; // stale: that connection is gone or was re-scheduled
        }
        slot.timer_at = None;
        self.advance(idx);
    }

    /// Polls connection `idx`'s lifecycle and carries out the actions.
    pub(super) fn advance(&mut self, idx: usize) {
        for _ in 0..MAX_POLLS {
            let Some(slot) = self.conns.get_mut(idx) else {
                return;
            };
            slot.dirty = false;
            if slot.lifecycle.is_finishing() {
                slot.conn.closing();
            }
            let partial_len = slot.conn.partial_len();
            let direct_wanted = slot.conn.direct_wanted();
            let session = &mut slot.conn.session;
            if session.streams.has_held() && !slot.lifecycle.is_paused() {
                // The output drained: stream sends that waited for it go now.
                session.streams.flush_held(&mut session.out);
            }
            let conn = &slot.conn;
            let session = &conn.session;
            let facts = Facts {
                output_empty: !conn.has_output(),
                bytes_in: session.stats.bytes_in,
                partial_len,
                backlog_bytes: conn.backlog_bytes(),
                backlog_frames: session.out.backlog_frames(),
                hold_reading: session.streams.holding() > 0,
                direct_wanted,
                answers_owed: session.answers_owed(),
            };
            let was_paused = slot.lifecycle.is_paused();
            let socket = &slot.socket;
            let mut actions = slot
                .lifecycle
                .poll(self.now, &slot.policy.lifecycle, &facts, || {
                    sys::unread_bytes(socket.as_fd()).ok()
                });
            if actions.queue_ping() {
                slot.conn.session.out.push_ping();
            }
            let mut refused = false;
            if actions.start_send() {
                if let Err(e) = self.start_send(idx) {
                    self.conns[idx].lifecycle.send_start_failed(e);
                    refused = true;
                }
            }
            let slot = &mut self.conns[idx];
            if actions.cancel_recv() {
                if let Some(recv) = slot.recv {
                    if let Err(e) = self.ring.cancel(recv) {
                        tracing::warn!(core = self.id, "cannot cancel a recv: {e}");
                    }
                }
            }
            if actions.arm_recv() {
                if let Err(e) = self.arm_recv(idx) {
                    self.conns[idx].lifecycle.recv_arm_failed(e);
                    refused = true;
                }
            }
            if actions.start_direct() {
                if let Err(e) = self.start_direct(idx) {
                    self.conns[idx].lifecycle.recv_arm_failed(e);
                    refused = true;
                }
            }
            let slot = &mut self.conns[idx];
            if actions.shut_write() {
                slot.shutdown(Shutdown::Write);
            }
            if actions.shut_both() {
                slot.shutdown(Shutdown::Both);
            }
            if actions.overstocked() {
                self.stats.overstocks += 1;
                let conn = &slot.conn;
                tracing::debug!(core = self.id, peer = %slot.info().peer, bytes = conn.backlog_bytes(), frames = conn.session.out.backlog_frames(), "overstocked; reading paused");
                if let Some(hook) = &self.shared.hooks.on_overstock {
                    contain("the overstock hook", || hook(slot.info()));
                }
            }
            if let Some(reason) = actions.release.take() {
                self.release(idx, reason);
                return;
            }
            let unpaused_with_held = was_paused
                && !self.conns[idx].lifecycle.is_paused()
                && self.conns[idx].conn.session.streams.has_held();
            if !refused && !unpaused_with_held {
                break;
            }
        }
        self.schedule_conn_timer(idx);
    }
}
