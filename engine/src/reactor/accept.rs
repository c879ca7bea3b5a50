//! Accepting: multishot accept on each listener, the connection limits (per core and per
//! peer IP), and backing off when the process runs out of descriptors or memory.
//!
//! Invariants: a refused connection is closed at once and counted; while out of
//! descriptors every listener pauses (descriptors are process-wide) and one retry timer
//! re-arms them, so an exhausted process never spins on accept errors; the first failure of
//! an episode is logged once, with the fix.

use std::io;
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ringrpc_uring::{Completion, OpId, SharedFd};

use super::Reactor;
use super::shared::StreamSocket;
use super::slot::Origin;
use super::timers::TimerId;

/// How long accept pauses after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket and its multishot accept, while armed.
pub(super) struct Listener {
    pub(super) socket: SharedFd,
    pub(super) accept: Option<OpId>,
    /// Its connections must speak HTTP (a WebSocket upgrade or a static asset).
    pub(super) websocket_only: bool,
    /// A Unix domain socket (no per-peer limit: its peers have no address).
    pub(super) unix: bool,
}

impl Reactor {
    /// Arms multishot accept on every listener that lacks one.
    pub(super) fn arm_accepts(&mut self) {
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            if listener.accept.is_some() {
                continue;
            }
            match self.ring.accept_multi(&listener.socket, i as u64) {
                Ok(op) => listener.accept = Some(op),
                Err(e) => {
                    self.stats.loop_errors += 1;
                    tracing::error!(core = self.id, "cannot arm accept: {e}");
                }
            }
        }
    }

    /// Cancels every armed accept.
    pub(super) fn cancel_accepts(&mut self) {
        for listener in &self.listeners {
            if let Some(op) = listener.accept {
                if let Err(e) = self.ring.cancel(op) {
                    tracing::warn!(core = self.id, "cannot cancel accept: {e}");
                }
            }
        }
    }

    pub(super) fn on_accept(&mut self, mut completion: Completion) {
        if !completion.more() {
            if let Some(listener) = self.listeners.get_mut(completion.tag() as usize) {
                listener.accept = None;
            }
        }
        let (websocket_only, unix) = self
            .listeners
            .get(completion.tag() as usize)
            .map_or((false, false), |l| (l.websocket_only, l.unix));
        if let Some(fd) = completion.take_accepted() {
            let stream = if unix {
                StreamSocket::Unix(UnixStream::from(fd))
            } else {
                StreamSocket::Tcp(TcpStream::from(fd))
            };
            if self.accept_failure_streak > 0 {
                tracing::info!(
                    core = self.id,
                    "accepting again after {} failed attempts",
                    self.accept_failure_streak
                );
                self.accept_failure_streak = 0;
            }
            let admitted = if self.draining.is_none() {
                self.admit(&stream)
            } else {
                None
            };
            if let Some(counted) = admitted {
                let origin = if websocket_only {
                    Origin::WebSocketListener
                } else {
                    Origin::Listener
                };
                let idx = self.open_conn(stream, self.server_policy.clone(), origin);
                self.conns[idx].counted_peer = counted;
            }
        } else {
            match -completion.result() {
                libc::ECANCELED => {}
                errno @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    self.accept_out_of_resources(errno)
                }
                errno => tracing::debug!(
                    core = self.id,
                    "accept: {}",
                    io::Error::from_raw_os_error(errno)
                ),
            }
        }
        if !self.accept_backoff && self.draining.is_none() {
            self.arm_accepts();
        }
    }

    /// Applies the connection limits: `None` refuses; `Some(counted)` admits, counted
    /// against its peer's limit when one is set.
    fn admit(&mut self, stream: &StreamSocket) -> Option<bool> {
        let limit = self.settings.max_connections_per_core;
        if self.conns.len() >= limit {
            self.stats.refused += 1;
            tracing::warn!(
                core = self.id,
                limit,
                "connection limit reached; refusing a connection"
            );
            return None;
        }
        let Some(per_peer) = self.settings.max_connections_per_peer else {
            return Some(false);
        };
        let StreamSocket::Tcp(stream) = stream else {
            // A Unix peer has no address to count.
            return Some(false);
        };
        let Ok(ip) = stream.peer_addr().map(|a| a.ip()) else {
            // A peer already gone: serve (and soon close) it without counting.
            return Some(false);
        };
        let mut counts = self
            .shared
            .per_peer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let open = counts.entry(ip).or_default();
        if *open >= per_peer {
            drop(counts);
            self.stats.refused += 1;
            tracing::debug!(core = self.id, %ip, per_peer, "per-peer connection limit reached; refusing");
            return None;
        }
        *open += 1;
        Some(true)
    }

    /// Returns a closed connection's place in its peer's count.
    pub(super) fn release_peer(&self, ip: IpAddr) {
        let mut counts = self
            .shared
            .per_peer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Out of descriptors or memory: pause accepting instead of spinning on the error; the
    /// waiting connections stay in the listen backlog until the retry timer fires.
    fn accept_out_of_resources(&mut self, errno: i32) {
        self.stats.accept_errors += 1;
        self.accept_failure_streak += 1;
        if self.accept_failure_streak == 1 {
            tracing::warn!(
                core = self.id,
                "accept failed: {} — retrying every {ACCEPT_BACKOFF:?}; raise the open-files limit (`ulimit -n`) or lower the connection limit",
                io::Error::from_raw_os_error(errno)
            );
        }
        // Descriptors are a process-wide resource: every listener pauses.
        self.cancel_accepts();
        if !self.accept_backoff {
            self.accept_backoff = true;
            self.deadlines
                .schedule(self.now + ACCEPT_BACKOFF, TimerId::AcceptRetry);
        }
    }

    /// The retry timer fired: accept again.
    pub(super) fn retry_accept(&mut self) {
        self.accept_backoff = false;
        if self.draining.is_none() {
            self.arm_accepts();
        }
    }
}
