//! The reactor's datagram socket: multishot recvmsg into the provided buffers, each
//! datagram handed to the sans-IO [`UdpCore`], its outgoing datagrams sent at the end of the
//! tick (all in the tick's one submit), its call timers in the deadline heap.
//!
//! Invariants: the socket is armed while the reactor serves and not draining; a recvmsg that
//! ended is re-armed at once (ENOBUFS included); a send failure is counted, never fatal.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_uring::{Completion, OpId, SharedFd};

use super::Reactor;
use super::timers::TimerId;
use crate::error::{CallError, DisconnectReason};
use crate::executor::contain::{CALL_DONE, contain};
use crate::ids::ConnId;
use crate::reactor::mailbox::{CallDone, Command};
use crate::udp::UdpCore;
use crate::udp::limits::Retry;

/// The tag of every datagram op (connection tags never reach it: slot `u32::MAX`).
pub(super) const UDP_TAG: u64 = u64::MAX;
/// Datagrams one GSO send carries at most (the kernel's limit).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes one GSO send carries at most (one UDP datagram's payload limit).
const GSO_MAX_BYTES: usize = 65_000;

/// One core's datagram socket and its state.
pub(super) struct Udp {
    pub(super) socket: SharedFd,
    pub(super) recv: Option<OpId>,
    pub(super) core: UdpCore,
    /// Whether runs to one peer go out as one GSO send (off once the kernel refused one).
    pub(super) gso: bool,
}

impl Reactor {
    /// Arms the multishot recvmsg on the datagram socket, if there is one and it is idle.
    pub(super) fn arm_udp(&mut self) {
        let Some(udp) = self.udp.as_mut() else {
            return;
        };
        if udp.recv.is_some() || self.draining.is_some() {
            return;
        }
        match self.ring.recvmsg_multi(&udp.socket, UDP_TAG) {
            Ok(op) => udp.recv = Some(op),
            Err(e) => {
                self.stats.loop_errors += 1;
                tracing::error!(core = self.id, "cannot arm the UDP receive: {e}");
            }
        }
    }

    pub(super) fn on_datagram(&mut self, mut completion: Completion) {
        let Some(udp) = self.udp.as_mut() else {
            return;
        };
        if !completion.more() {
            udp.recv = None;
        }
        match completion.take_datagram() {
            Some(dgram) => match dgram.peer() {
                Some(peer) if !dgram.is_truncated() => {
                    let router = &self.server_policy.router;
                    let forward = udp.core.on_datagram(
                        self.now,
                        peer,
                        dgram.payload(),
                        router,
                        &self.mailbox,
                    );
                    if let Some(f) = forward {
                        let to = self.shared.mailboxes.get(f.core);
                        let cmd = Command::UdpForward {
                            peer: f.peer,
                            frame: f.frame,
                        };
                        if to.is_none_or(|m| m.post(cmd).is_err()) {
                            udp.core.stats.stray_responses += 1;
                        }
                    }
                }
                // Larger than a receive buffer, or no address: not one valid frame.
                _ => {
                    udp.core.stats.datagrams_in += 1;
                    udp.core.stats.malformed += 1;
                }
            },
            None => match -completion.result() {
                0 | libc::ECANCELED => {}
                libc::ENOBUFS => self.stats.recv_buffers_exhausted += 1,
                errno => {
                    self.stats.socket_errors += 1;
                    tracing::debug!(
                        core = self.id,
                        "UDP receive: {}",
                        std::io::Error::from_raw_os_error(errno)
                    );
                }
            },
        }
        self.arm_udp();
        self.schedule_udp_calls();
    }

    /// A datagram send finished. A kernel without UDP GSO refuses a segmented send with
    /// EINVAL or EIO: GSO is turned off for this reactor (those datagrams are lost; callers'
    /// retries cover them).
    pub(super) fn on_datagram_sent(&mut self, mut completion: Completion) {
        let Some(udp) = self.udp.as_mut() else {
            return;
        };
        let result = completion.result();
        if result >= 0 {
            return;
        }
        udp.core.stats.send_errors += 1;
        let segmented = completion
            .take_sent_batch()
            .is_some_and(|batch| batch.len() > 1);
        if segmented && udp.gso && matches!(-result, libc::EINVAL | libc::EIO) {
            udp.gso = false;
            tracing::warn!(
                core = self.id,
                "the kernel refused a UDP GSO send ({}); sending datagrams one by one",
                std::io::Error::from_raw_os_error(-result)
            );
        }
    }

    /// Sends every datagram the core queued this tick. Runs of equal-sized datagrams to one
    /// peer go out as one UDP GSO send (the kernel cuts them apart), the rest one by one.
    pub(super) fn flush_udp(&mut self) {
        let Some(udp) = self.udp.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut udp.core.out);
        let mut rest = &mut out[..];
        while let Some(((peer, first), _)) = rest.split_first() {
            let (peer, size) = (*peer, first.len());
            let max_run = (GSO_MAX_BYTES / size.max(1)).clamp(1, GSO_MAX_SEGMENTS);
            let run = rest
                .iter()
                .take(max_run)
                .take_while(|(p, f)| *p == peer && f.len() == size)
                .count();
            let (now, later) = rest.split_at_mut(run);
            rest = later;
            udp.core.stats.datagrams_out += run as u64;
            let mut frames = now.iter_mut().map(|(_, f)| std::mem::take(f));
            let sent = match u16::try_from(size) {
                Ok(segment) if run > 1 && udp.gso => {
                    let batch: Vec<Bytes> = frames.collect();
                    self.ring
                        .send_to_segmented(&udp.socket, UDP_TAG, peer, segment, batch)
                        .map(drop)
                }
                _ => frames.try_for_each(|f| {
                    self.ring
                        .send_to(&udp.socket, UDP_TAG, peer, vec![f])
                        .map(drop)
                }),
            };
            if sent.is_err() {
                udp.core.stats.send_errors += 1;
            }
        }
        out.clear();
        udp.core.out = out;
    }

    /// Puts the timers of calls started since the last look into the deadline heap.
    fn schedule_udp_calls(&mut self) {
        if let Some(udp) = self.udp.as_mut() {
            for (seq, at) in udp.core.take_new_timers() {
                self.deadlines.schedule(at, TimerId::UdpCall { seq });
            }
        }
    }

    /// Call `seq`'s timer came due.
    pub(super) fn on_udp_call_timer(&mut self, seq: u64) {
        if let Some(udp) = self.udp.as_mut() {
            if let Some(at) = udp.core.on_call_timer(self.now, seq) {
                self.deadlines.schedule(at, TimerId::UdpCall { seq });
            }
        }
    }

    /// The periodic forgetting of quiet peers and expired cache entries. A forgotten peer
    /// is gone for the engine's own disconnect hooks (pub/sub forgets its authentication);
    /// the user's `on_disconnect` never saw it connect, so it is not told.
    pub(super) fn on_udp_sweep(&mut self) {
        if let Some(udp) = self.udp.as_mut() {
            let (next, forgotten) = udp.core.sweep(self.now);
            self.deadlines.schedule(next, TimerId::UdpSweep);
            for info in &forgotten {
                for hook in &self.shared.hooks.internal_disconnect {
                    hook(info, &DisconnectReason::IdleTimeout);
                }
            }
        }
    }

    /// A call to a datagram peer from another thread (or a handle of a datagram peer).
    pub(super) fn udp_call(
        &mut self,
        peer: SocketAddr,
        method: &[u8],
        payload: &[u8],
        timeout: Duration,
        retry: Option<Retry>,
        done: CallDone,
    ) {
        let Some(udp) = self.udp.as_mut() else {
            contain(CALL_DONE, || done(Err(CallError::Disconnected)));
            return;
        };
        udp.core
            .start_call(self.now, peer, method, payload, timeout, retry, done);
        self.schedule_udp_calls();
    }

    /// A frame from a handle or responder of datagram peer `conn`.
    pub(super) fn udp_send_to_peer(&mut self, conn: ConnId, frame: Bytes, is_answer: bool) {
        if let Some(udp) = self.udp.as_mut() {
            udp.core.send_to_peer(conn, frame, is_answer);
        }
    }

    /// A handle's call to datagram peer `conn`.
    pub(super) fn udp_call_peer(
        &mut self,
        conn: ConnId,
        method: &[u8],
        payload: &[u8],
        timeout: Duration,
        done: CallDone,
    ) {
        let peer = self.udp.as_ref().and_then(|u| u.core.peer_addr(conn));
        match peer {
            Some(peer) => {
                self.udp_call(peer, method, payload, timeout, Some(Retry::default()), done)
            }
            None => {
                contain(CALL_DONE, || done(Err(CallError::Disconnected)));
            }
        }
    }

    /// Stops receiving datagrams and fails pending datagram calls (shutdown).
    pub(super) fn stop_udp(&mut self) {
        if let Some(udp) = self.udp.as_mut() {
            if let Some(op) = udp.recv {
                if let Err(e) = self.ring.cancel(op) {
                    tracing::warn!(core = self.id, "cannot cancel the UDP receive: {e}");
                }
            }
            udp.core.fail_calls();
        }
    }

    /// When the first sweep is due.
    pub(super) fn first_udp_sweep(&self) -> Option<Instant> {
        self.udp
            .as_ref()
            .map(|_| self.now + self.settings.udp.dedup_window)
    }
}
