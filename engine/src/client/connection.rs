//! A client's live connection: dialling its targets in turn, handing the socket to the
//! runtime, authenticating and resubscribing, and reconnecting after a loss ([`Reconnect`]).
//!
//! Invariants: a reconnect runs on a thread of its own, never on the reactor; callers see a
//! new connection only once it is authenticated and its topics resubscribed; a client closed
//! by the user never reconnects; the lost target is tried last.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::ClientRuntime;
use super::dial::{self, Dialled};
use crate::client::pubsub::TopicTable;
use crate::conn::handle::ConnHandle;
use crate::error::{AUTH_METHOD, CallError, DisconnectReason};
use crate::reactor::shared::ConnPolicy;

/// How a client reconnects after losing its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// Wait before the first attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before giving up (the client then stays disconnected).
    pub max_attempts: u32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_attempts: 10,
        }
    }
}

pub(super) type ReconnectHook = Arc<dyn Fn(u32) + Send + Sync>;

pub(super) struct ClientInner {
    /// Each address given and what it resolved to.
    pub(super) targets: Vec<(String, Vec<SocketAddr>)>,
    /// The target of the current (or last) connection.
    pub(super) cursor: AtomicUsize,
    pub(super) runtime: ClientRuntime,
    /// Handlers and timeouts of this client's connection.
    pub(super) policy: Arc<ConnPolicy>,
    /// The live connection, `None` while disconnected.
    pub(super) current: Mutex<Option<ConnHandle>>,
    /// Closed by the user: no reconnect.
    pub(super) closed: AtomicBool,
    pub(super) connect_timeout: Duration,
    pub(super) reconnect: Option<Reconnect>,
    pub(super) on_reconnect: Option<ReconnectHook>,
    pub(super) auth: Option<Bytes>,
    /// Pub/sub handlers and password, restored on every new connection.
    pub(super) pubsub: Arc<TopicTable>,
    /// TLS on every connection, if asked.
    #[cfg(feature = "tls")]
    pub(super) tls: Option<crate::ClientTls>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(conn) = self
            .current
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            conn.close_owed();
        }
    }
}

impl ClientInner {
    /// Connects to the first target, from `start` on and round, that accepts; it becomes
    /// the current target.
    pub(super) fn dial(&self, start: usize) -> io::Result<Dialled> {
        let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
        let n = self.targets.len();
        for i in 0..n {
            let at = (start + i) % n;
            let (target, addrs) = &self.targets[at];
            match dial::connect(target, addrs, self.connect_timeout) {
                Ok(stream) => {
                    self.cursor.store(at, Ordering::Relaxed);
                    #[cfg(feature = "tls")]
                    if let Some(tls) = &self.tls {
                        return dial::handshake(stream, target, tls, self.connect_timeout);
                    }
                    return Ok((stream, None));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The current (or last) target.
    pub(super) fn target(&self) -> String {
        self.targets[self.cursor.load(Ordering::Relaxed) % self.targets.len()]
            .0
            .clone()
    }

    /// Every target, for errors.
    pub(super) fn all_targets(&self) -> String {
        let names: Vec<&str> = self.targets.iter().map(|(t, _)| t.as_str()).collect();
        names.join(", ")
    }

    /// Hands `stream` to the runtime and makes it the current connection.
    pub(super) fn attach(this: &Arc<ClientInner>, dialled: Dialled) -> Result<(), CallError> {
        let weak = Arc::downgrade(this);
        let (stream, tls) = dialled;
        let handle = this
            .runtime
            .adopt(stream, tls, this.policy.clone(), move |reason| {
                if let Some(inner) = weak.upgrade() {
                    inner.lost(reason);
                }
            })?;
        if let Some(secret) = &this.auth {
            // Callers see the connection only once it is authenticated.
            if let Err(e) = handle.call(AUTH_METHOD, secret.clone(), this.connect_timeout) {
                handle.close_owed();
                return Err(e);
            }
        }
        this.pubsub.restore(&handle);
        *this.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// The connection is gone (reactor thread): forget it, and reconnect if asked to.
    fn lost(self: Arc<Self>, reason: &DisconnectReason) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(target = %self.target(), "client connection lost: {reason}");
        let Some(policy) = self.reconnect else { return };
        let spawned = std::thread::Builder::new()
            .name("ringrpc-reconnect".into())
            .spawn(move || self.reconnect_loop(policy));
        if let Err(e) = spawned {
            tracing::error!("cannot start the reconnect thread: {e}");
        }
    }

    fn reconnect_loop(self: Arc<Self>, policy: Reconnect) {
        let mut backoff = policy.initial_backoff;
        for attempt in 1..=policy.max_attempts {
            std::thread::sleep(backoff);
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // The lost target is tried last.
            let next = self.cursor.load(Ordering::Relaxed) + 1;
            match self.dial(next) {
                Ok(stream) => {
                    if ClientInner::attach(&self, stream).is_err() {
                        return; // the runtime is shutting down
                    }
                    tracing::info!(target = %self.target(), attempt, "client reconnected");
                    if let Some(hook) = &self.on_reconnect {
                        hook(attempt);
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(targets = %self.all_targets(), attempt, "reconnect failed: {e}");
                }
            }
            backoff = (backoff * 2).min(policy.max_backoff);
        }
        tracing::error!(
            targets = %self.all_targets(),
            attempts = policy.max_attempts,
            "giving up reconnecting; calls fail with Disconnected"
        );
    }

    pub(super) fn current(&self) -> Option<ConnHandle> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
