//! What every reactor of one server (or client runtime) shares with the others and with the
//! user's handles: the shutdown flag, mailboxes, hooks, per-peer counts, adopted sockets,
//! and the per-connection policy (which router and timeouts serve a connection).
//!
//! Invariants: reactors touch each other only through this (atomics, mailboxes, two short
//! mutex sections off the hot path: per-peer counting at accept/close and adoption).

use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::conn::handle::{ConnHandle, encode};
use crate::conn::hooks::Hooks;
use crate::conn::lifecycle::{LINGER_MAX, LINGER_QUIET, LINGER_TICK, LifecycleConfig};
use crate::error::{CallError, DisconnectReason};
use crate::reactor::mailbox::{BroadcastFilter, Closed, Command, Mailbox};
use crate::reactor::settings::ReactorSettings;
use crate::router::Router;

/// How one connection is served: its router, its timeouts and send-queue limits. A server
/// has one for all its connections; each client on a shared runtime has its own.
#[derive(Debug)]
pub(crate) struct ConnPolicy {
    pub(crate) router: Arc<Router>,
    pub(crate) lifecycle: LifecycleConfig,
    /// Frames longer than this are sent gzip-compressed.
    pub(crate) gzip_threshold: Option<usize>,
}

impl ConnPolicy {
    /// Serves with `router` under `settings`' send-queue limits and the given timeouts.
    pub(crate) fn new(
        router: Arc<Router>,
        settings: &ReactorSettings,
        idle_timeout: Option<Duration>,
        keepalive: Option<Duration>,
        read_timeout: Option<Duration>,
    ) -> ConnPolicy {
        ConnPolicy {
            router,
            lifecycle: LifecycleConfig {
                idle_timeout,
                read_timeout,
                keepalive,
                max_send_queue_bytes: settings.max_send_queue_bytes,
                max_send_queue_frames: settings.max_send_queue_frames,
                pause_reading: settings.pause_reading,
                linger_quiet: LINGER_QUIET,
                linger_max: LINGER_MAX,
                linger_tick: LINGER_TICK,
            },
            gzip_threshold: settings.gzip_threshold,
        }
    }
}

/// A connected stream socket: TCP or Unix domain.
#[derive(Debug)]
pub(crate) enum StreamSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl StreamSocket {
    /// The peer's address (`0.0.0.0:0` for a Unix peer, or one already gone), and whether
    /// it is a Unix peer.
    pub(crate) fn peer(&self) -> (SocketAddr, bool) {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        match self {
            StreamSocket::Tcp(s) => (s.peer_addr().unwrap_or(unknown), false),
            StreamSocket::Unix(_) => (unknown, true),
        }
    }

    /// Sends small writes at once (TCP); nothing to do on a Unix socket.
    pub(crate) fn set_nodelay(&self) {
        if let StreamSocket::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }
}

impl From<StreamSocket> for OwnedFd {
    fn from(socket: StreamSocket) -> OwnedFd {
        match socket {
            StreamSocket::Tcp(s) => s.into(),
            StreamSocket::Unix(s) => s.into(),
        }
    }
}

/// Runs on the reactor thread once an adopted connection is being served.
pub(crate) type Opened = Box<dyn FnOnce(ConnHandle) + Send>;

/// An already connected socket for a reactor to serve (a client's outbound connection).
pub(crate) struct Adoption {
    pub(crate) stream: StreamSocket,
    /// The client side of TLS, its handshake done on the connecting thread.
    pub(crate) tls: Option<Box<crate::transport::tls::TlsLayer>>,
    pub(crate) policy: Arc<ConnPolicy>,
    pub(crate) opened: Opened,
    pub(crate) closed: Closed,
}

impl std::fmt::Debug for Adoption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adoption")
            .field("stream", &self.stream)
            .finish()
    }
}

/// State shared by all reactors of a server (or client runtime) and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) shutdown: AtomicBool,
    /// Open accepted connections per peer IP, kept only when a per-peer limit is set.
    pub(crate) per_peer: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// One per reactor, in core order.
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    pub(crate) hooks: Hooks,
    /// Outbound connections handed to a reactor, one queue per reactor (a client's).
    pub(crate) adoptions: Vec<Mutex<Vec<Adoption>>>,
    /// Where reactors publish counters for scrapes, when the server serves metrics.
    pub(crate) metrics: Option<Arc<crate::observe::scrape::Hub>>,
    /// The NATS bridge, when the server has one: broadcasts go to other nodes too.
    #[cfg(feature = "nats")]
    pub(crate) bridge: std::sync::OnceLock<Arc<crate::cluster::link::BridgeLink>>,
}

impl Shared {
    /// Shared state for `mailboxes.len()` reactors.
    pub(crate) fn new(mailboxes: Vec<Arc<Mailbox>>, hooks: Hooks) -> Shared {
        Shared {
            shutdown: AtomicBool::new(false),
            per_peer: Default::default(),
            adoptions: mailboxes.iter().map(|_| Mutex::default()).collect(),
            mailboxes,
            hooks,
            metrics: None,
            #[cfg(feature = "nats")]
            bridge: std::sync::OnceLock::new(),
        }
    }

    /// Asks every reactor to drain and stop.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        for m in &self.mailboxes {
            m.wake();
        }
    }

    /// Hands `adoption` to reactor `core` and wakes it. If that reactor has stopped, the
    /// adoption is refused at once: its `closed` runs with [`DisconnectReason::Shutdown`]
    /// and its `opened` is dropped unrun (the reactor closes its mailbox before its last
    /// look at the adoptions, and this looks at the mailbox after pushing, so one of the
    /// two always sees it).
    pub(crate) fn adopt(&self, core: usize, adoption: Adoption) {
        self.adoptions[core]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(adoption);
        if self.mailboxes[core].is_closed() {
            for refused in self.take_adoptions(core) {
                (refused.closed)(&DisconnectReason::Shutdown);
            }
            return;
        }
        self.mailboxes[core].wake();
    }

    /// Reactor side: the connections handed to reactor `core` since the last call.
    pub(crate) fn take_adoptions(&self, core: usize) -> Vec<Adoption> {
        std::mem::take(
            &mut *self.adoptions[core]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

impl Shared {
    /// Posts one Notify, encoded once, to every reactor for the connections `filter`
    /// accepts (this node only).
    pub(crate) fn broadcast_local(
        &self,
        method: &str,
        payload: &[u8],
        filter: Option<BroadcastFilter>,
    ) -> Result<(), CallError> {
        if !(1..=ringrpc_protocol::MAX_METHOD_LEN).contains(&method.len()) {
            return Err(CallError::BadMethod);
        }
        crate::error::check_body(method.as_bytes(), payload)?;
        let frame = encode(
            ringrpc_protocol::Command::Notify,
            ringrpc_protocol::Flags::default(),
            0,
            method.as_bytes(),
            payload,
        );
        let mut outcome = Ok(());
        for mailbox in &self.mailboxes {
            let posted = mailbox.post(Command::Broadcast {
                frame: frame.clone(),
                filter: filter.clone(),
            });
            if posted.is_err() {
                outcome = Err(CallError::MailboxFull);
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::reactor::mailbox::Mailbox;
    use crate::reactor::settings::ReactorSettings;
    use crate::router::Router;

    /// An adoption handed to a reactor that has stopped is refused at once (its `closed`
    /// runs, its `opened` is dropped), so `ClientRuntime::adopt` never waits forever.
    #[test]
    fn an_adoption_for_a_stopped_reactor_is_refused_at_once() {
        let shared = Shared::new(vec![Arc::new(Mailbox::new(8))], Hooks::default());
        shared.mailboxes[0].close();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let settings = ReactorSettings::client();
        let policy = Arc::new(ConnPolicy::new(
            Arc::new(Router::new()),
            &settings,
            None,
            None,
            None,
        ));
        let (opened_tx, opened_rx) = crossbeam_channel::bounded::<ConnHandle>(1);
        let closed = Arc::new(AtomicBool::new(false));
        let saw_close = closed.clone();
        shared.adopt(
            0,
            Adoption {
                stream: StreamSocket::Tcp(stream),
                tls: None,
                policy,
                opened: Box::new(move |h| {
                    let _ = opened_tx.send(h);
                }),
                closed: Box::new(move |reason| {
                    assert!(matches!(reason, DisconnectReason::Shutdown));
                    saw_close.store(true, Ordering::SeqCst);
                }),
            },
        );
        assert!(closed.load(Ordering::SeqCst), "closed ran at once");
        assert!(
            opened_rx.recv().is_err(),
            "opened was dropped unrun, so a waiting adopter wakes"
        );
        assert!(shared.take_adoptions(0).is_empty(), "nothing left queued");
    }
}
