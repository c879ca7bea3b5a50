//! The datagram core for the simulator: one [`UdpCore`] driven as `reactor::udp` drives it,
//! its datagrams handed to the harness instead of a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{SimMail, SimMailbox};
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::{CallDone, Command};
use crate::router::Router;
use crate::udp::{Retry, UdpCore, UdpLimits};

/// One core's datagram endpoint: the calling side, the answering side, or both.
#[derive(Debug)]
pub struct SimUdp {
    core: UdpCore,
    router: Arc<Router>,
    mailbox: SimMailbox,
}

/// A datagram endpoint's limits (`UdpLimits`).
#[derive(Clone, Debug)]
pub struct SimUdpLimits {
    /// Largest datagram sent.
    pub max_datagram: usize,
    /// Largest frame body accepted.
    pub max_body: u32,
    /// How long an answered request is remembered against retries.
    pub dedup_window: Duration,
    /// Requests remembered, all peers together.
    pub dedup_capacity: usize,
    /// Peers known at once.
    pub max_peers: usize,
    /// Deferred answers per peer at once.
    pub max_in_flight_per_peer: usize,
}

impl SimUdp {
    /// Core `core`'s endpoint, dispatching to `router`, its handles posting to `mailbox`.
    pub fn new(
        core: u16,
        limits: &SimUdpLimits,
        router: Arc<Router>,
        mailbox: &SimMailbox,
    ) -> SimUdp {
        let limits = UdpLimits {
            max_datagram: limits.max_datagram,
            max_body: limits.max_body,
            dedup_window: limits.dedup_window,
            dedup_capacity: limits.dedup_capacity,
            max_peers: limits.max_peers,
            max_in_flight_per_peer: limits.max_in_flight_per_peer,
            peer_rate: None,
        };
        SimUdp {
            core: UdpCore::new(core, limits),
            router,
            mailbox: mailbox.clone(),
        }
    }

    /// Whether `id` names a datagram peer.
    pub fn owns(id: ConnId) -> bool {
        UdpCore::owns(id)
    }

    /// One datagram arrived from `from`.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let _forward = self
            .core
            .on_datagram(now, from, data, &self.router, &self.mailbox.0);
    }

    /// The datagrams to send, in order.
    pub fn take_out(&mut self) -> Vec<(SocketAddr, Bytes)> {
        std::mem::take(&mut self.core.out)
    }

    /// Starts a call to `peer` with `retry`; returns its seq and first timer, or `None` if
    /// it failed at once (`done` has run).
    #[allow(clippy::too_many_arguments)]
    pub fn start_call(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        method: &[u8],
        payload: &[u8],
        timeout: Duration,
        retry: Retry,
        done: CallDone,
    ) -> Option<(u64, Instant)> {
        let started = self
            .core
            .start_call(now, peer, method, payload, timeout, Some(retry), done);
        self.core.take_new_timers().for_each(drop);
        started
    }

    /// Call `seq`'s timer came due: resend or time out; returns its next timer.
    pub fn on_call_timer(&mut self, now: Instant, seq: u64) -> Option<Instant> {
        self.core.on_call_timer(now, seq)
    }

    /// The periodic sweep: forgets quiet peers; returns when to sweep next and the peers
    /// forgotten (whose disconnect hooks the harness runs).
    pub fn sweep(&mut self, now: Instant) -> (Instant, Vec<ConnInfo>) {
        self.core.sweep(now)
    }

    /// Carries out a message for a datagram peer, as `reactor::mail::apply` does. Returns
    /// it back when it is not for one.
    pub fn apply(&mut self, mail: SimMail) -> Option<SimMail> {
        match mail.0 {
            Command::Notify { conn, frame } if UdpCore::owns(conn) => {
                self.core.send_to_peer(conn, frame, false)
            }
            Command::NotifyCounted { conn, frame, .. } if UdpCore::owns(conn) => {
                self.core.send_to_peer(conn, frame, false)
            }
            Command::Answer { conn, frame, .. } if UdpCore::owns(conn) => {
                self.core.send_to_peer(conn, frame, true)
            }
            Command::Settled { conn } if UdpCore::owns(conn) => self.core.settle(conn),
            other => return Some(SimMail(other)),
        }
        None
    }

    /// What the memory checks look at: requests cached, calls pending.
    pub fn gauges(&self) -> (usize, usize) {
        (self.core.cached(), self.core.calls_pending())
    }

    /// Fails every pending call (shutdown).
    pub fn fail_calls(&mut self) {
        self.core.fail_calls();
    }
}
