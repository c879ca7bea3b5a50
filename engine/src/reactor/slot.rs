//! One connection as its reactor holds it: socket, protocol state, policy, lifecycle and
//! the ring ops in flight on it; opening and releasing it.
//!
//! Invariants: a slot is removed from the slab only by [`Reactor::release`], which runs
//! only when its [`Lifecycle`] releases it — with no recv armed and no send in flight — so
//! no completion can ever name a reused slot; release runs every close consequence exactly
//! once (pending calls failed, per-peer count returned, hooks told).

use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use ringrpc_uring::{OpId, SharedFd};

use super::{Reactor, conn_tag};
use crate::conn::Conn;
use crate::conn::handle::ConnHandle;
use crate::conn::hooks::ConnectHook;
use crate::conn::lifecycle::Lifecycle;
use crate::error::{CallError, DisconnectReason};
use crate::executor::contain::contain;
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::{Closed, Mailbox};
use crate::reactor::shared::{ConnPolicy, StreamSocket};
use crate::transport::tls::TlsLayer;
use crate::transport::tls_state::TlsState;

pub(super) struct Slot {
    /// The socket; the ring holds clones while ops on it are in flight.
    pub(super) socket: SharedFd,
    pub(super) conn: Conn,
    pub(super) policy: Arc<ConnPolicy>,
    /// Where the connection is in its life, stepped by the reactor's clock.
    pub(super) lifecycle: Lifecycle,
    /// The recv in flight — the multishot, or a direct recv of a large frame's rest — until
    /// its final completion (to cancel it).
    pub(super) recv: Option<OpId>,
    /// Queued for this tick's flush.
    pub(super) dirty: bool,
    /// Counted against the per-peer limit (released on close).
    pub(super) counted_peer: bool,
    /// The socket refused a zero-copy send (a Unix socket): it sends plainly from then on.
    pub(super) zc_refused: bool,
    /// The send in flight, if any, was issued zero-copy.
    pub(super) sending_zc: bool,
    /// The deadline this connection has in the reactor's heap, if any.
    pub(super) timer_at: Option<Instant>,
    /// Told why, when the connection is gone (adopted connections). Boxed once more, so
    /// the slot holds a thin pointer (8 bytes) rather than the closure's 16.
    pub(super) on_close: Option<Box<Closed>>,
}

impl Slot {
    /// The tag of this connection's ops (it lives in slab slot `idx`).
    pub(super) fn tag(&self, idx: usize) -> u64 {
        conn_tag(idx, self.serial())
    }

    /// Which connection of all that used this slot it is (its `ConnId`'s serial).
    pub(super) fn serial(&self) -> u64 {
        self.info().id.serial
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

/// Where a connection came from, which decides the framings it may speak.
#[derive(Debug)]
pub(super) enum Origin {
    /// Accepted on a `listen` address: raw arpc, or WebSocket when it is on (under TLS,
    /// when it is on).
    Listener,
    /// Accepted on a `ws_listen` address: HTTP only (WebSocket or static assets).
    WebSocketListener,
    /// A client's outbound connection: raw arpc, under the client's TLS if it has one.
    Adopted(Option<Box<TlsLayer>>),
}

impl Reactor {
    /// Takes a connected socket into the slab; its recv is armed by the first flush.
    /// Returns its slot.
    pub(super) fn open_conn(
        &mut self,
        stream: StreamSocket,
        policy: Arc<ConnPolicy>,
        origin: Origin,
    ) -> usize {
        stream.set_nodelay();
        let (peer, unix) = stream.peer();
        self.serial += 1;
        let serial = self.serial;
        let socket = SharedFd::from(std::os::fd::OwnedFd::from(stream));
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        let mut info = ConnInfo::new(
            ConnId {
                core: self.id as u16,
                slot: idx as u32,
                serial,
            },
            peer,
        );
        info.unix = unix;
        let (mailbox, max_body) = (self.mailbox.clone(), self.settings.max_body);
        let reflect = self.settings.reflect;
        let (tls, tls_error) = match &origin {
            Origin::Adopted(_) => (TlsState::Off, None),
            _ if reflect => (TlsState::Off, None),
            _ => match TlsState::for_server(self.settings.tls.as_ref()) {
                Ok(tls) => (tls, None),
                Err(e) => (TlsState::Off, Some(e)),
            },
        };
        // A client's own connection has done its handshake on the connecting thread.
        let adopted = matches!(origin, Origin::Adopted(_));
        let mut conn = match (&self.settings.websocket, &origin) {
            (Some(ws), Origin::WebSocketListener) => {
                Conn::websocket_only(info.clone(), mailbox, max_body, ws.clone())
            }
            (Some(ws), Origin::Listener) if !reflect => {
                Conn::with_websocket(info.clone(), mailbox, max_body, ws.clone())
            }
            _ => Conn::new(info.clone(), mailbox, max_body),
        };
        conn.tls = match origin {
            Origin::Adopted(Some(client)) => TlsState::On(client),
            _ => tls,
        };
        if let Some(secret) = &self.settings.auth_secret {
            conn.session.require_auth(secret.clone());
        }
        conn.session
            .set_max_in_flight(self.settings.max_in_flight_per_conn);
        conn.session.set_stream_limits(self.settings.streams);
        conn.session.out.set_gzip_threshold(policy.gzip_threshold);
        let mut lifecycle = Lifecycle::new(self.now);
        if conn.partial_len() > 0 {
            // A TLS-only connection: the handshake counts against the read timeout at once.
            lifecycle.decoded(self.now, true);
        }
        if let Some(e) = tls_error {
            tracing::warn!(core = self.id, "cannot start TLS on a connection: {e}");
            lifecycle.fail(DisconnectReason::Tls(e));
        }
        entry.insert(Slot {
            socket,
            conn,
            policy,
            lifecycle,
            recv: None,
            dirty: false,
            counted_peer: false,
            zc_refused: false,
            sending_zc: false,
            timer_at: None,
            on_close: None,
        });
        self.stats.accepted += 1;
        self.schedule_conn_timer(idx);
        self.mark_dirty(idx);
        let slot = &mut self.conns[idx];
        if adopted || slot.conn.tls.is_off() {
            announce(self.shared.hooks.on_connect.as_ref(), &info, &self.mailbox);
        } else {
            // Announced once the handshake is done (or the first bytes say plaintext).
            slot.conn.session.unannounced = true;
        }
        idx
    }

    /// Frees a closed connection's slot; its socket closes once the ring holds no op on it.
    pub(super) fn release(&mut self, idx: usize, reason: DisconnectReason) {
        let mut slot = self.conns.remove(idx);
        self.stats.closed += 1;
        let kind = crate::observe::closes::CloseKind::of(&reason);
        self.closed_by[kind as usize] += 1;
        slot.conn.session.fail_calls(CallError::Disconnected);
        // Its async handlers' answers can no longer be delivered: drop them now.
        slot.conn.session.cancel_tasks();
        if slot.counted_peer {
            self.release_peer(slot.info().peer.ip());
        }
        tracing::trace!(core = self.id, peer = %slot.info().peer, "connection closed: {reason}");
        let info = slot.info();
        for hook in &self.shared.hooks.internal_disconnect {
            contain("an internal disconnect hook", || hook(info, &reason));
        }
        // Only a connection the connect hook saw is said to be gone (not one whose TLS
        // handshake failed), so the user's two hooks always pair up.
        if let Some(hook) = &self.shared.hooks.on_disconnect
            && !slot.conn.session.unannounced
        {
            contain("the disconnect hook", || hook(info, &reason));
        }
        if let Some(closed) = slot.on_close.take() {
            contain("a client's closed callback", || closed(&reason));
        }
    }
}

/// Runs the connect hook, if any, for the connection `info` (once per connection).
pub(super) fn announce(hook: Option<&ConnectHook>, info: &ConnInfo, mailbox: &Arc<Mailbox>) {
    if let Some(hook) = hook {
        let handle = ConnHandle::new(info.clone(), mailbox.clone());
        contain("the connect hook", || hook(&handle));
    }
}

#[cfg(test)]
mod tests {
    /// Every idle connection pays for its slot: a field added here should be worth it (the
    /// stream tables, call map and send buffers live elsewhere until used). The slot is
    /// most of the engine's memory per idle connection (docs/benchmarks.md: 870 bytes at
    /// 10,000 connections, its 600 included), which issue 24 holds to that figure.
    #[test]
    fn a_connection_slot_stays_small() {
        let size = std::mem::size_of::<super::Slot>();
        // 600 at the start of the round that added TLS, Unix sockets, async handlers and
        // zero-copy send; what they added is boxed or packed, so it is 600 again.
        assert!(size <= 600, "Slot is {size} bytes");
    }
}
