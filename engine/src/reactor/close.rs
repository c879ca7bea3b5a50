//! A connection's way out: back-pressure pauses, its own timers (read and idle timeouts,
//! keepalive, linger checks), and the close sequence — flush what is owed, FIN, linger
//! reading and discarding, then shut down and release.
//!
//! Invariants: every close reason is decided once (the first wins); output earned before
//! a protocol error or a close request is written before the FIN; after our FIN the peer's
//! input is read and discarded, so a close never turns into a reset that destroys answers
//! the peer has not read yet; a slot is released only with no recv armed and no send in
//! flight.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ringrpc_uring::sys;

use super::Reactor;
use super::slot::Slot;
use super::timers::TimerId;
use crate::error::DisconnectReason;

/// A connection that got our FIN is closed once its peer has sent nothing for this long.
const LINGER_QUIET: Duration = Duration::from_millis(100);
/// Longest a connection lingers after our FIN while its peer keeps sending.
const LINGER_MAX: Duration = Duration::from_secs(2);
/// How often a lingering connection whose socket still holds input is re-checked.
const LINGER_TICK: Duration = Duration::from_millis(20);

/// The next instant connection `slot` needs attention without any I/O: its read timeout,
/// idle timeout, keepalive or linger check; `None` when it needs none.
fn conn_deadline(slot: &Slot) -> Option<Instant> {
    if slot.dead.is_some() {
        return None;
    }
    if let Some(since) = slot.linger_since {
        return Some((slot.last_active + LINGER_QUIET).min(since + LINGER_MAX));
    }
    let policy = &slot.policy;
    let read = slot
        .partial_since
        .zip(policy.read_timeout)
        .map(|(t, d)| t + d);
    let idle = policy.idle_timeout.map(|d| slot.last_active + d);
    let keepalive = policy
        .keepalive
        .filter(|_| !slot.pinged)
        .map(|d| slot.last_active + d);
    [read, idle, keepalive].into_iter().flatten().min()
}

impl Reactor {
    /// Makes sure the deadline heap holds connection `idx`'s next deadline (or an earlier
    /// entry, which re-schedules it when due).
    pub(super) fn schedule_conn_timer(&mut self, idx: usize) {
        let slot = &mut self.conns[idx];
        let Some(at) = conn_deadline(slot) else {
            return;
        };
        if slot.timer_at.is_none_or(|scheduled| at < scheduled) {
            slot.timer_at = Some(at);
            let id = TimerId::Conn {
                slot: idx as u32,
                serial: slot.serial,
            };
            self.deadlines.schedule(at, id);
        }
    }

    /// A connection's deadline entry came due: act on whichever of its timers expired.
    pub(super) fn on_conn_timer(&mut self, idx: usize, serial: u64, at: Instant) {
        let now = self.now;
        let Some(slot) = self.conns.get_mut(idx) else {
            return;
        };
        if slot.serial != serial || slot.timer_at != Some(at) {
            return; // stale: that connection is gone or was re-scheduled
        }
        slot.timer_at = None;
        if slot.dead.is_none() && !slot.write_shut {
            let policy = &slot.policy;
            let quiet = now.saturating_duration_since(slot.last_active);
            let frame_age = slot.partial_since.map(|t| now.saturating_duration_since(t));
            if frame_age
                .zip(policy.read_timeout)
                .is_some_and(|(age, limit)| age >= limit)
            {
                slot.close(DisconnectReason::ReadTimeout);
            } else if policy.idle_timeout.is_some_and(|limit| quiet >= limit) {
                slot.close(DisconnectReason::IdleTimeout);
            } else if !slot.pinged && policy.keepalive.is_some_and(|every| quiet >= every) {
                slot.conn.session.out.push_ping();
                slot.pinged = true;
            }
        }
        if slot.write_shut {
            // Lingering: advance() decides; if it keeps lingering it needs a later check.
            self.advance(idx);
            if let Some(slot) = self.conns.get_mut(idx) {
                if slot.dead.is_none() && slot.timer_at.is_none() {
                    let at =
                        conn_deadline(slot).map_or(now + LINGER_TICK, |d| d.max(now + LINGER_TICK));
                    slot.timer_at = Some(at);
                    let id = TimerId::Conn {
                        slot: idx as u32,
                        serial,
                    };
                    self.deadlines.schedule(at, id);
                }
            }
            return;
        }
        self.schedule_conn_timer(idx);
        self.mark_dirty(idx);
    }

    /// Stops reading from a connection whose unsent output passed its limit, and resumes
    /// once it drained below half.
    pub(super) fn apply_backpressure(&mut self, idx: usize) {
        let slot = &mut self.conns[idx];
        let out = &slot.conn.session.out;
        let (bytes, frames) = (out.backlog_bytes(), out.backlog_frames());
        let (max_bytes, max_frames) = (
            self.settings.max_send_queue_bytes,
            self.settings.max_send_queue_frames,
        );
        if !slot.paused && slot.dead.is_none() && (bytes > max_bytes || frames > max_frames) {
            slot.paused = true;
            self.stats.overstocks += 1;
            if let Some(recv) = slot.recv {
                if let Err(e) = self.ring.cancel(recv) {
                    slot.close(DisconnectReason::Socket(e));
                }
            }
            tracing::debug!(core = self.id, peer = %slot.info().peer, bytes, frames, "overstocked; reading paused");
            if let Some(hook) = &self.shared.hooks.on_overstock {
                hook(slot.info());
            }
        } else if slot.paused && bytes <= max_bytes / 2 && frames <= max_frames / 2 {
            slot.paused = false;
            let reading =
                slot.dead.is_none() && !slot.peer_eof && !slot.write_shut && slot.failed.is_none();
            if reading && slot.recv.is_none() {
                self.arm_recv(idx);
            }
        }
    }

    /// Starts a send if one is due, then moves the connection through its close states.
    pub(super) fn advance(&mut self, idx: usize) {
        let Some(slot) = self.conns.get_mut(idx) else {
            return;
        };
        slot.dirty = false;
        self.start_send(idx);
        self.apply_backpressure(idx);
        let now = self.now;
        let slot = &mut self.conns[idx];
        let drained = slot.close_requested
            || slot.drain_target.is_some_and(|target| {
                slot.conn.session.stats.bytes_in >= target && slot.conn.partial_len() == 0
            });
        let output_done = !slot.send_in_flight && slot.conn.session.out.is_empty();
        if output_done && slot.dead.is_none() {
            if let Some(reason) = slot.failed.take() {
                slot.close(reason);
            }
        }
        let mut lingering_started = false;
        if slot.dead.is_none() && output_done && (slot.peer_eof || drained) {
            // Everything owed is written: send FIN, then linger, reading and discarding,
            // until the peer closes too, has been quiet for LINGER_QUIET with nothing
            // unread, or LINGER_MAX has passed.
            if !slot.write_shut {
                slot.shutdown(Shutdown::Write);
                slot.write_shut = true;
                slot.linger_since = Some(now);
                lingering_started = true;
            }
            let quiet = now.saturating_duration_since(slot.last_active) >= LINGER_QUIET
                && sys::unread_bytes(slot.socket.as_fd()).is_ok_and(|n| n == 0);
            let too_long = slot
                .linger_since
                .is_some_and(|t| now.saturating_duration_since(t) >= LINGER_MAX);
            if slot.peer_eof {
                slot.close(DisconnectReason::PeerClosed);
            } else if quiet || too_long {
                slot.close(if slot.close_requested {
                    DisconnectReason::Closed
                } else {
                    DisconnectReason::Shutdown
                });
            }
        }
        if slot.dead.is_some() && !slot.shut_both {
            slot.shut_both = true;
            slot.shutdown(Shutdown::Both);
            if let Some(recv) = slot.recv {
                if let Err(e) = self.ring.cancel(recv) {
                    tracing::warn!(core = self.id, "cannot cancel a closing recv: {e}");
                }
            }
        }
        if slot.dead.is_some() && slot.recv.is_none() && !slot.send_in_flight {
            self.release(idx);
        } else if lingering_started {
            // The linger check replaces the connection's other timers.
            slot.timer_at = None;
            self.schedule_conn_timer(idx);
        }
    }
}
