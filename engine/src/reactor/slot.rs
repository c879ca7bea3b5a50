//! One connection as its reactor holds it: socket, protocol state, policy and the loose
//! lifecycle flags the close sequence (`close.rs`) steps through; opening and releasing it.
//!
//! Invariants: a slot is removed from the slab only by [`Reactor::release`], which runs
//! only once no recv is armed and no send is in flight, so no completion can ever name a
//! reused slot; release runs every close consequence exactly once (pending calls failed,
//! per-peer count returned, hooks told).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringrpc_uring::{OpId, SharedFd};

use super::{Reactor, conn_tag};
use crate::conn::Conn;
use crate::error::{CallError, DisconnectReason};
use crate::handle::ConnHandle;
use crate::ids::{ConnId, ConnInfo};
use crate::mailbox::Closed;
use crate::shared::ConnPolicy;

pub(super) struct Slot {
    /// The socket; the ring holds clones while ops on it are in flight.
    pub(super) socket: SharedFd,
    pub(super) serial: u64,
    pub(super) conn: Conn,
    pub(super) policy: Arc<ConnPolicy>,
    pub(super) spare_batch: Vec<Bytes>,
    /// The armed multishot recv, until its final completion.
    pub(super) recv: Option<OpId>,
    pub(super) send_in_flight: bool,
    pub(super) peer_eof: bool,
    pub(super) write_shut: bool,
    pub(super) dead: Option<DisconnectReason>,
    pub(super) shut_both: bool,
    pub(super) dirty: bool,
    pub(super) drain_target: Option<u64>,
    /// Close once queued output is written (a handle asked).
    pub(super) close_requested: bool,
    /// Reading stopped because unsent output passed its limit.
    pub(super) paused: bool,
    /// When the peer last sent anything (the reactor's clock of that loop turn).
    pub(super) last_active: Instant,
    /// A keepalive Ping went out since the peer last sent anything.
    pub(super) pinged: bool,
    /// When the partial frame held now was started (`None` between frames).
    pub(super) partial_since: Option<Instant>,
    /// The peer broke the protocol: read no more, flush what its valid frames earned,
    /// then close with this reason.
    pub(super) failed: Option<DisconnectReason>,
    /// Counted against the per-peer limit (released on close).
    pub(super) counted_peer: bool,
    /// When our FIN went out (lingering since).
    pub(super) linger_since: Option<Instant>,
    /// The deadline this connection has in the reactor's heap, if any.
    pub(super) timer_at: Option<Instant>,
    /// Told why, when the connection is gone (adopted connections).
    pub(super) on_close: Option<Closed>,
}

impl Slot {
    pub(super) fn close(&mut self, reason: DisconnectReason) {
        self.dead.get_or_insert(reason);
    }

    /// The tag of this connection's ops (it lives in slab slot `idx`).
    pub(super) fn tag(&self, idx: usize) -> u64 {
        conn_tag(idx, self.serial)
    }

    /// Shuts down one or both directions of the socket; errors (a peer already gone) change
    /// nothing, since the close sequence goes on either way.
    pub(super) fn shutdown(&self, how: Shutdown) {
        let _ = socket2::SockRef::from(&self.socket).shutdown(how);
    }

    pub(super) fn info(&self) -> &ConnInfo {
        self.conn.session.info()
    }
}

impl Reactor {
    /// Takes a connected socket into the slab and arms its recv; returns its slot.
    pub(super) fn open_conn(&mut self, stream: TcpStream, policy: Arc<ConnPolicy>) -> usize {
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.serial += 1;
        let serial = self.serial;
        let socket = SharedFd::from(stream);
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        let info = ConnInfo {
            id: ConnId {
                core: self.id as u16,
                slot: idx as u32,
                serial,
            },
            peer,
        };
        let mut conn = Conn::new(info, self.mailbox.clone(), self.settings.max_body);
        if let Some(secret) = &self.settings.auth_secret {
            conn.session.require_auth(secret.clone());
        }
        conn.session
            .set_max_in_flight(self.settings.max_in_flight_per_conn);
        entry.insert(Slot {
            socket,
            serial,
            conn,
            policy,
            spare_batch: Vec::new(),
            recv: None,
            send_in_flight: false,
            peer_eof: false,
            write_shut: false,
            dead: None,
            shut_both: false,
            dirty: false,
            drain_target: None,
            close_requested: false,
            paused: false,
            last_active: self.now,
            pinged: false,
            partial_since: None,
            failed: None,
            counted_peer: false,
            linger_since: None,
            timer_at: None,
            on_close: None,
        });
        self.stats.accepted += 1;
        self.arm_recv(idx);
        self.schedule_conn_timer(idx);
        self.mark_dirty(idx);
        if let Some(hook) = &self.shared.hooks.on_connect {
            hook(&ConnHandle::new(info, self.mailbox.clone()));
        }
        idx
    }

    /// Frees a closed connection's slot; its socket closes as the slot drops.
    pub(super) fn release(&mut self, idx: usize) {
        let mut slot = self.conns.remove(idx);
        self.stats.closed += 1;
        slot.conn.session.fail_calls(CallError::Disconnected);
        if slot.counted_peer {
            self.release_peer(slot.info().peer.ip());
        }
        let reason = slot.dead.take().unwrap_or(DisconnectReason::Shutdown);
        tracing::trace!(core = self.id, peer = %slot.info().peer, "connection closed: {reason}");
        if let Some(hook) = &self.shared.hooks.on_disconnect {
            hook(slot.info(), &reason);
        }
        if let Some(closed) = slot.on_close.take() {
            closed(&reason);
        }
    }
}
