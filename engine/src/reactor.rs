//! One core's event loop: completions → connections → one send each → one kernel entry.
//!
//! Invariants:
//! - Each tick drains every completion, lets each touched connection decode and dispatch,
//!   then starts at most one vectored send per connection (none while one is in flight),
//!   and enters the kernel once for all of it.
//! - A connection's slot (and so its socket) is freed only when it has no recv armed and no
//!   send in flight; every completion is checked against the slot's generation first.
//! - Network input never panics the loop: a bad peer closes only its own connection.

use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;

use crate::config::Config;
use crate::conn::{Conn, ConnStats};
use crate::handle::{CallError, ConnHandle, ConnId, ConnInfo, mark_reactor_thread};
use crate::mailbox::{Closed, Command, Mailbox};
use crate::ring::{Cqe, OpKind, Ring, RingError, Token, sys};
use crate::router::Router;

const TIMER_STATS: u32 = 0;
const TIMER_ACCEPT_RETRY: u32 = 1;
const TIMER_DRAIN: u32 = 2;
const TIMER_CALLS: u32 = 3;
const TIMER_IDLE: u32 = 4;
const TIMER_LINGER: u32 = 5;
/// A connection that got our FIN is closed once its peer has sent nothing for this long.
const LINGER_QUIET: Duration = Duration::from_millis(100);
/// Longest a connection lingers after our FIN while its peer keeps sending.
const LINGER_MAX: Duration = Duration::from_secs(2);
/// How often lingering connections are re-checked.
const LINGER_TICK: Duration = Duration::from_millis(20);
/// How often pending calls to peers are checked for their deadline.
const CALL_SWEEP: Duration = Duration::from_millis(10);
/// How long accept pauses after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a draining reactor re-checks its connections and the grace deadline.
const DRAIN_TICK: Duration = Duration::from_millis(20);

/// State shared by all reactors of a server and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) shutdown: AtomicBool,
    /// Open accepted connections per peer IP, kept only when a per-peer limit is set.
    pub(crate) per_peer: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// One per reactor, in core order.
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    pub(crate) hooks: Hooks,
}

impl Shared {
    /// Asks every reactor to drain and stop.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        for m in &self.mailboxes {
            m.wake();
        }
    }
}

/// Runs when a connection is accepted, on its reactor thread.
pub type ConnectHook = Box<dyn Fn(&ConnHandle) + Send + Sync>;
/// Runs when a connection is gone, on its reactor thread.
pub type DisconnectHook = Box<dyn Fn(&ConnInfo, &DisconnectReason) + Send + Sync>;

/// Runs when a connection's unsent output passes its limit and reading from it stops.
pub type OverstockHook = Box<dyn Fn(&ConnInfo) + Send + Sync>;

/// User callbacks for connection events.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
    pub(crate) on_overstock: Option<OverstockHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_overstock", &self.on_overstock.is_some())
            .finish()
    }
}

/// Totals of one reactor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Which reactor (0-based).
    pub core: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
    /// Connections refused at the connection limit.
    pub refused: u64,
    /// Requests dispatched.
    pub requests: u64,
    /// Notifies dispatched.
    pub notifies: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Vectored sends issued.
    pub sends: u64,
    /// Requests and notifies for unknown methods.
    pub not_found: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Connections closed by a socket error (reset, broken pipe).
    pub socket_errors: u64,
    /// Times the receive buffers ran out (recv re-armed).
    pub recv_buffers_exhausted: u64,
    /// Accept failures (descriptor or memory exhaustion).
    pub accept_errors: u64,
    /// Broadcast frames queued on connections.
    pub broadcasts: u64,
    /// Calls made to peers.
    pub calls: u64,
    /// Times a connection's unsent output passed its limit and reading from it paused.
    pub overstocks: u64,
    /// Broadcast frames dropped because a connection was over its limit.
    pub broadcast_drops: u64,
}

impl CoreStats {
    /// Average frames carried by one send.
    pub fn frames_per_send(&self) -> f64 {
        if self.sends == 0 {
            0.0
        } else {
            self.frames_out as f64 / self.sends as f64
        }
    }

    fn add_conn_delta(&mut self, before: &ConnStats, after: &ConnStats) {
        self.bytes_in += after.bytes_in - before.bytes_in;
        self.frames_in += after.frames_in - before.frames_in;
        self.requests += after.requests - before.requests;
        self.notifies += after.notifies - before.notifies;
        self.not_found += after.not_found - before.not_found;
        self.panics += after.panics - before.panics;
    }
}

/// Why a connection was closed.
#[derive(Debug)]
pub enum DisconnectReason {
    /// The peer closed its side.
    PeerClosed,
    /// The peer broke the protocol.
    Protocol(ringrpc_protocol::DecodeError),
    /// A socket error (reset, broken pipe).
    Socket(io::Error),
    /// The server shut down.
    Shutdown,
    /// Closed through a [`ConnHandle`].
    Closed,
    /// Sent nothing for longer than the idle timeout.
    IdleTimeout,
    /// Started a frame and did not finish it within the read timeout.
    ReadTimeout,
    /// Did not authenticate with the shared secret first.
    Unauthenticated,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("peer closed"),
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::Socket(e) => write!(f, "socket error: {e}"),
            DisconnectReason::Shutdown => f.write_str("server shutdown"),
            DisconnectReason::Closed => f.write_str("closed by the application"),
            DisconnectReason::IdleTimeout => f.write_str("idle timeout"),
            DisconnectReason::Unauthenticated => f.write_str("did not authenticate first"),
            DisconnectReason::ReadTimeout => {
                f.write_str("read timeout: a frame was not completed in time")
            }
        }
    }
}

struct Slot {
    stream: TcpStream,
    generation: u32,
    conn: Conn,
    spare_batch: Vec<Bytes>,
    recv_armed: bool,
    send_in_flight: bool,
    peer_eof: bool,
    write_shut: bool,
    dead: Option<DisconnectReason>,
    shut_both: bool,
    dirty: bool,
    drain_target: Option<u64>,
    /// Close once queued output is written (a handle asked).
    close_requested: bool,
    /// Reading stopped because unsent output passed its limit.
    paused: bool,
    /// When the peer last sent anything (the reactor's clock of that loop turn).
    last_active: Instant,
    /// A keepalive Ping went out since the peer last sent anything.
    pinged: bool,
    /// When the partial frame held now was started (`None` between frames).
    partial_since: Option<Instant>,
    /// The peer broke the protocol: read no more, flush what its valid frames earned,
    /// then close with this reason.
    failed: Option<DisconnectReason>,
    /// Counted against the per-peer limit (released on close).
    counted_peer: bool,
    /// When our FIN went out (lingering since).
    linger_since: Option<Instant>,
    /// Told why, when the connection is gone (adopted connections).
    on_close: Option<Closed>,
}

impl Slot {
    fn close(&mut self, reason: DisconnectReason) {
        self.dead.get_or_insert(reason);
    }
}

/// One core's reactor.
pub(crate) struct Reactor {
    id: usize,
    /// The clock, read once per loop turn.
    now: Instant,
    mailbox: Arc<Mailbox>,
    calls_timer_armed: bool,
    linger_timer_armed: bool,
    ring: Ring,
    /// One per listen address; empty for a client runtime.
    listeners: Vec<Listener>,
    conns: Slab<Slot>,
    generation: u32,
    router: Arc<Router>,
    config: Arc<Config>,
    shared: Arc<Shared>,
    dirty: Vec<usize>,
    stats: CoreStats,
    accept_backoff: bool,
    accept_failure_streak: u64,
    draining: Option<Instant>,
    forced: bool,
    last_report: (Instant, CoreStats),
}

fn timer(id: u32) -> Token {
    Token::bare(OpKind::Timer, id)
}

/// A listening socket and whether its multishot accept is armed.
struct Listener {
    socket: TcpListener,
    armed: bool,
}

fn accept_token(listener: usize) -> Token {
    Token::bare(OpKind::Accept, listener as u32)
}
const WAKE: Token = Token {
    kind: OpKind::Wake,
    generation: 0,
    slot: 0,
};

impl Reactor {
    /// Builds the reactor's ring; call on the reactor's own thread.
    pub(crate) fn new(
        id: usize,
        config: Arc<Config>,
        router: Arc<Router>,
        shared: Arc<Shared>,
        listeners: Vec<TcpListener>,
        wake: File,
    ) -> Result<Reactor, RingError> {
        let mailbox = shared.mailboxes[id].clone();
        let ring = Ring::new(
            config.ring_entries,
            config.recv_buffers,
            config.recv_buffer_size,
            wake,
        )?;
        tracing::debug!(core = id, features = ?ring.features(), "reactor ring ready");
        Ok(Reactor {
            id,
            now: Instant::now(),
            mailbox,
            calls_timer_armed: false,
            linger_timer_armed: false,
            ring,
            listeners: listeners
                .into_iter()
                .map(|socket| Listener {
                    socket,
                    armed: false,
                })
                .collect(),
            conns: Slab::with_capacity(1024),
            generation: 0,
            router,
            config,
            shared,
            dirty: Vec::with_capacity(1024),
            stats: CoreStats {
                core: id,
                ..CoreStats::default()
            },
            accept_backoff: false,
            accept_failure_streak: 0,
            draining: None,
            forced: false,
            last_report: (Instant::now(), CoreStats::default()),
        })
    }

    /// Runs until shutdown has drained every connection; returns this core's totals.
    pub(crate) fn run(mut self) -> io::Result<CoreStats> {
        mark_reactor_thread();
        self.arm_accepts();
        self.ring.wake_read(WAKE)?;
        if let Some(every) = self.config.stats_interval {
            self.ring.timer(every, timer(TIMER_STATS))?;
        }
        if let Some(every) = self.idle_sweep_interval() {
            self.ring.timer(every, timer(TIMER_IDLE))?;
        }
        let mut cqes = Vec::with_capacity(4096);
        loop {
            if self.draining.is_some() && self.conns.is_empty() {
                break;
            }
            self.ring.submit_and_wait(1, &mut cqes)?;
            self.now = Instant::now();
            for cqe in cqes.drain(..) {
                self.on_completion(cqe);
            }
            if self.draining.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
                self.begin_drain();
            }
            if let Some(deadline) = self.draining {
                if !self.forced && Instant::now() >= deadline {
                    self.force_close_all();
                }
            }
            self.flush();
        }
        // No kernel access to ring-owned memory may outlive the loop (Drop would do this too).
        if !self.ring.cancel_all_and_wait() {
            tracing::warn!(
                core = self.id,
                "some io_uring ops did not finish after cancellation"
            );
        }
        Ok(self.stats)
    }

    fn on_completion(&mut self, cqe: Cqe) {
        match cqe.token.kind {
            OpKind::Accept => self.on_accept(cqe),
            OpKind::Recv => self.on_recv(cqe),
            OpKind::Send => self.on_send(cqe),
            OpKind::Wake => {
                if cqe.result >= 0 {
                    if let Err(e) = self.ring.wake_read(WAKE) {
                        tracing::error!(core = self.id, "cannot re-arm wake-up: {e}");
                    }
                }
                self.take_mail();
            }
            OpKind::Timer => self.on_timer(cqe.token.slot),
            OpKind::Cancel => {}
        }
    }

    /// Arms multishot accept on every listener that lacks one.
    fn arm_accepts(&mut self) {
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            if listener.armed {
                continue;
            }
            match self
                .ring
                .accept_multi(listener.socket.as_raw_fd(), accept_token(i))
            {
                Ok(()) => listener.armed = true,
                Err(e) => tracing::error!(core = self.id, "cannot arm accept: {e}"),
            }
        }
    }

    /// Cancels every armed accept.
    fn cancel_accepts(&mut self) {
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.armed {
                let _ = self.ring.cancel(accept_token(i));
            }
        }
    }

    fn on_accept(&mut self, cqe: Cqe) {
        if !cqe.more() {
            if let Some(listener) = self.listeners.get_mut(cqe.token.slot as usize) {
                listener.armed = false;
            }
        }
        if cqe.result >= 0 {
            let stream = sys::stream_from_accept(cqe.result);
            if self.accept_failure_streak > 0 {
                tracing::info!(
                    core = self.id,
                    "accepting again after {} failed attempts",
                    self.accept_failure_streak
                );
                self.accept_failure_streak = 0;
            }
            if self.draining.is_some() {
                return;
            }
            let limit = self.config.max_connections_per_core();
            if self.conns.len() >= limit {
                self.stats.refused += 1;
                tracing::warn!(
                    core = self.id,
                    limit,
                    "connection limit reached; refusing a connection"
                );
                return;
            }
            let counted = match self.config.max_connections_per_peer {
                Some(per_peer) => {
                    let peer = stream.peer_addr().map(|a| a.ip());
                    let mut counts = self
                        .shared
                        .per_peer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    match peer {
                        Ok(ip) if counts.get(&ip).copied().unwrap_or(0) >= per_peer => {
                            drop(counts);
                            self.stats.refused += 1;
                            tracing::debug!(core = self.id, %ip, per_peer, "per-peer connection limit reached; refusing");
                            return;
                        }
                        Ok(ip) => {
                            *counts.entry(ip).or_default() += 1;
                            true
                        }
                        Err(_) => false,
                    }
                }
                None => false,
            };
            let idx = self.open_conn(stream);
            self.conns[idx].counted_peer = counted;
        } else {
            match -cqe.result {
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

    /// Out of descriptors or memory: pause accepting instead of spinning on the error; the
    /// waiting connections stay in the listen backlog until the retry timer fires.
    fn accept_out_of_resources(&mut self, errno: i32) {
        self.stats.accept_errors += 1;
        self.accept_failure_streak += 1;
        if self.accept_failure_streak == 1 {
            tracing::warn!(
                core = self.id,
                "accept failed: {} — retrying every {ACCEPT_BACKOFF:?}; raise the open-files limit (`ulimit -n`) or lower --max-connections",
                io::Error::from_raw_os_error(errno)
            );
        }
        // Descriptors are a process-wide resource: every listener pauses.
        self.cancel_accepts();
        if !self.accept_backoff
            && self
                .ring
                .timer(ACCEPT_BACKOFF, timer(TIMER_ACCEPT_RETRY))
                .is_ok()
        {
            self.accept_backoff = true;
        }
    }

    fn open_conn(&mut self, stream: TcpStream) -> usize {
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.generation = self.generation.wrapping_add(1) & crate::ring::token::GENERATION_MASK;
        let generation = self.generation;
        let fd = stream.as_raw_fd();
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        let info = ConnInfo {
            id: ConnId {
                core: self.id as u16,
                slot: idx as u32,
                generation,
            },
            peer,
        };
        let mut conn = Conn::new(info, self.mailbox.clone(), self.config.max_body);
        if let Some(secret) = &self.config.auth_secret {
            conn.require_auth(secret.clone());
        }
        conn.set_max_in_flight(self.config.max_in_flight_per_conn);
        entry.insert(Slot {
            stream,
            generation,
            conn,
            spare_batch: Vec::new(),
            recv_armed: false,
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
            on_close: None,
        });
        self.stats.accepted += 1;
        let slot = &mut self.conns[idx];
        match self
            .ring
            .recv_multi(fd, Token::conn(OpKind::Recv, idx, generation))
        {
            Ok(()) => slot.recv_armed = true,
            Err(e) => slot.close(DisconnectReason::Socket(e)),
        }
        self.mark_dirty(idx);
        if let Some(hook) = &self.shared.hooks.on_connect {
            hook(&ConnHandle {
                info,
                mailbox: self.mailbox.clone(),
            });
        }
        idx
    }

    /// Applies what other threads posted.
    fn take_mail(&mut self) {
        let mailbox = self.mailbox.clone();
        for cmd in mailbox.drain() {
            match cmd {
                Command::Send { conn, frame } => {
                    if let Some(idx) = self.live_id(conn) {
                        self.conns[idx].conn.out.push_encoded(frame);
                        self.mark_dirty(idx);
                    }
                }
                Command::Call {
                    conn,
                    method,
                    payload,
                    timeout,
                    done,
                } => match self.live_id(conn) {
                    Some(idx) => {
                        let slot = &mut self.conns[idx];
                        slot.conn
                            .start_call(&method, &payload, timeout, Instant::now(), done);
                        self.stats.calls += 1;
                        self.mark_dirty(idx);
                        if !self.calls_timer_armed
                            && self.ring.timer(CALL_SWEEP, timer(TIMER_CALLS)).is_ok()
                        {
                            self.calls_timer_armed = true;
                        }
                    }
                    None => done(Err(CallError::Disconnected)),
                },
                Command::Broadcast { frame, filter } => {
                    let mut reached = Vec::new();
                    for (idx, slot) in self.conns.iter_mut() {
                        let open = slot.dead.is_none() && !slot.write_shut;
                        if !open || !filter.as_ref().is_none_or(|f| f(slot.conn.info())) {
                            continue;
                        }
                        // A slow reader loses broadcasts rather than growing our memory.
                        if slot.paused {
                            self.stats.broadcast_drops += 1;
                            continue;
                        }
                        slot.conn.out.push_encoded(frame.clone());
                        reached.push(idx);
                    }
                    self.stats.broadcasts += reached.len() as u64;
                    for idx in reached {
                        self.mark_dirty(idx);
                    }
                }
                Command::Close { conn } => {
                    if let Some(idx) = self.live_id(conn) {
                        self.conns[idx].close_requested = true;
                        self.mark_dirty(idx);
                    }
                }
                Command::Adopt {
                    stream,
                    opened,
                    closed,
                } => {
                    if self.draining.is_some() {
                        closed(&DisconnectReason::Shutdown);
                        continue;
                    }
                    let idx = self.open_conn(stream);
                    let slot = &mut self.conns[idx];
                    slot.on_close = Some(closed);
                    opened(ConnHandle {
                        info: *slot.conn.info(),
                        mailbox: self.mailbox.clone(),
                    });
                }
            }
        }
    }

    /// Stops reading from a connection whose unsent output passed its limit, and resumes
    /// once it drained below half.
    fn apply_backpressure(&mut self, idx: usize) {
        let slot = &mut self.conns[idx];
        let (bytes, frames) = (
            slot.conn.out.backlog_bytes(),
            slot.conn.out.backlog_frames(),
        );
        let (max_bytes, max_frames) = (
            self.config.max_send_queue_bytes,
            self.config.max_send_queue_frames,
        );
        if !slot.paused && slot.dead.is_none() && (bytes > max_bytes || frames > max_frames) {
            slot.paused = true;
            self.stats.overstocks += 1;
            if slot.recv_armed {
                let _ = self
                    .ring
                    .cancel(Token::conn(OpKind::Recv, idx, slot.generation));
            }
            tracing::debug!(core = self.id, peer = %slot.conn.peer(), bytes, frames, "overstocked; reading paused");
            if let Some(hook) = &self.shared.hooks.on_overstock {
                hook(slot.conn.info());
            }
        } else if slot.paused && bytes <= max_bytes / 2 && frames <= max_frames / 2 {
            slot.paused = false;
            let reading =
                slot.dead.is_none() && !slot.peer_eof && !slot.write_shut && slot.failed.is_none();
            if reading && !slot.recv_armed {
                let token = Token::conn(OpKind::Recv, idx, slot.generation);
                match self.ring.recv_multi(slot.stream.as_raw_fd(), token) {
                    Ok(()) => slot.recv_armed = true,
                    Err(e) => slot.close(DisconnectReason::Socket(e)),
                }
            }
        }
    }

    /// The live slot a connection id names, if that connection is still open.
    fn live_id(&self, id: ConnId) -> Option<usize> {
        let idx = id.slot as usize;
        match self.conns.get(idx) {
            Some(s) if s.generation == id.generation && s.dead.is_none() => Some(idx),
            _ => None,
        }
    }

    /// How often idle connections are looked for: a quarter of the shortest of the idle
    /// timeout, keepalive and read timeout, so each acts within 25% of its setting.
    fn idle_sweep_interval(&self) -> Option<Duration> {
        let shortest = [
            self.config.idle_timeout,
            self.config.keepalive,
            self.config.read_timeout,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some((shortest / 4).max(Duration::from_millis(1)))
    }

    /// Closes connections stuck in a frame past the read timeout or quiet past the idle
    /// timeout, and pings those quiet past the keepalive.
    fn sweep_idle(&mut self) {
        let now = Instant::now();
        let mut touched = Vec::new();
        for (idx, slot) in self.conns.iter_mut() {
            if slot.dead.is_some() || slot.write_shut {
                continue;
            }
            let quiet = now.saturating_duration_since(slot.last_active);
            let frame_age = slot.partial_since.map(|t| now.saturating_duration_since(t));
            if frame_age
                .zip(self.config.read_timeout)
                .is_some_and(|(age, limit)| age >= limit)
            {
                slot.close(DisconnectReason::ReadTimeout);
                touched.push(idx);
            } else if self.config.idle_timeout.is_some_and(|limit| quiet >= limit) {
                slot.close(DisconnectReason::IdleTimeout);
                touched.push(idx);
            } else if !slot.pinged && self.config.keepalive.is_some_and(|every| quiet >= every) {
                slot.conn.out.push_ping();
                slot.pinged = true;
                touched.push(idx);
            }
        }
        for idx in touched {
            self.mark_dirty(idx);
        }
    }

    fn sweep_calls(&mut self) {
        let now = Instant::now();
        let mut pending = false;
        for (_, slot) in self.conns.iter_mut() {
            if slot.conn.calls_pending() > 0 {
                slot.conn.expire_calls(now);
                pending |= slot.conn.calls_pending() > 0;
            }
        }
        self.calls_timer_armed = pending && self.ring.timer(CALL_SWEEP, timer(TIMER_CALLS)).is_ok();
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(slot) = self.conns.get_mut(idx) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    fn mark_all_dirty(&mut self) {
        for (idx, slot) in self.conns.iter_mut() {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// The live slot a completion names, if its generation still matches.
    fn live(&self, token: Token) -> Option<usize> {
        let idx = token.slot as usize;
        match self.conns.get(idx) {
            Some(s) if s.generation == token.generation => Some(idx),
            _ => None,
        }
    }

    fn on_recv(&mut self, cqe: Cqe) {
        let Some(idx) = self.live(cqe.token) else {
            if let Some(bid) = cqe.buffer_id() {
                self.ring.bufs().recycle(bid);
            }
            return;
        };
        let slot = &mut self.conns[idx];
        if !cqe.more() {
            slot.recv_armed = false;
        }
        if cqe.result > 0 {
            slot.last_active = self.now;
            slot.pinged = false;
            match cqe.buffer_id() {
                Some(bid) => {
                    let bufs = self.ring.bufs();
                    let reading = slot.dead.is_none() && !slot.write_shut && slot.failed.is_none();
                    if self.config.reflect && reading {
                        let data = bufs.get(bid, cqe.result as usize);
                        slot.conn.reflect(data);
                        self.stats.bytes_in += data.len() as u64;
                    } else if reading {
                        let before = slot.conn.stats;
                        let result = slot
                            .conn
                            .handle_recv(bufs.get(bid, cqe.result as usize), &self.router);
                        self.stats.add_conn_delta(&before, &slot.conn.stats);
                        if slot.conn.rejected() && slot.failed.is_none() {
                            slot.failed = Some(DisconnectReason::Unauthenticated);
                        }
                        slot.partial_since = match slot.conn.partial_len() {
                            0 => None,
                            _ => slot.partial_since.or(Some(self.now)),
                        };
                        if let Err(e) = result {
                            self.stats.protocol_errors += 1;
                            tracing::debug!(core = self.id, peer = %slot.conn.peer(), "closing connection: {e}");
                            // Answer the valid frames before the bad one, then close.
                            slot.failed = Some(DisconnectReason::Protocol(e));
                        }
                    }
                    bufs.recycle(bid);
                    if slot.failed.is_some() && slot.recv_armed {
                        // Read nothing more from a peer that broke the protocol.
                        let _ = self
                            .ring
                            .cancel(Token::conn(OpKind::Recv, idx, slot.generation));
                    }
                }
                None => slot.close(DisconnectReason::Socket(io::Error::other(
                    "recv completion without a buffer",
                ))),
            }
        } else if cqe.result == 0 {
            slot.peer_eof = true;
        } else {
            match -cqe.result {
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
        if !slot.recv_armed
            && slot.dead.is_none()
            && !slot.peer_eof
            && !slot.paused
            && slot.failed.is_none()
        {
            let token = Token::conn(OpKind::Recv, idx, slot.generation);
            match self.ring.recv_multi(slot.stream.as_raw_fd(), token) {
                Ok(()) => slot.recv_armed = true,
                Err(e) => slot.close(DisconnectReason::Socket(e)),
            }
        }
        self.mark_dirty(idx);
    }

    fn on_send(&mut self, cqe: Cqe) {
        let Some(done) = self.ring.take_send(&cqe) else {
            return;
        };
        let Some(idx) = self.live(done.conn) else {
            return;
        };
        let slot = &mut self.conns[idx];
        slot.send_in_flight = false;
        if done.result < 0 {
            self.stats.socket_errors += 1;
            slot.close(DisconnectReason::Socket(io::Error::from_raw_os_error(
                -done.result,
            )));
        } else {
            self.stats.bytes_out += done.result as u64;
            let mut batch = done.segments;
            slot.conn.out.sent(&mut batch, done.result as usize);
            slot.spare_batch = batch;
        }
        self.mark_dirty(idx);
    }

    fn on_timer(&mut self, id: u32) {
        match id {
            TIMER_STATS => {
                self.report_interval();
                if let Some(every) = self.config.stats_interval {
                    let _ = self.ring.timer(every, timer(TIMER_STATS));
                }
            }
            TIMER_ACCEPT_RETRY => {
                self.accept_backoff = false;
                if self.draining.is_none() {
                    self.arm_accepts();
                }
            }
            TIMER_CALLS => self.sweep_calls(),
            TIMER_LINGER => {
                // Lingering connections get re-checked by advance(), which re-arms the
                // timer while any of them is still waiting.
                self.linger_timer_armed = false;
                let lingering: Vec<usize> = self
                    .conns
                    .iter()
                    .filter(|(_, s)| s.write_shut && s.dead.is_none())
                    .map(|(i, _)| i)
                    .collect();
                for idx in lingering {
                    self.mark_dirty(idx);
                }
            }
            TIMER_IDLE => {
                self.sweep_idle();
                if let Some(every) = self.idle_sweep_interval() {
                    let _ = self.ring.timer(every, timer(TIMER_IDLE));
                }
            }
            TIMER_DRAIN if self.draining.is_some() => {
                self.mark_all_dirty();
                let _ = self.ring.timer(DRAIN_TICK, timer(TIMER_DRAIN));
            }
            _ => {}
        }
    }

    fn report_interval(&mut self) {
        let now = Instant::now();
        let (then, prev) = self.last_report;
        let secs = now.duration_since(then).as_secs_f64().max(1e-9);
        let s = self.stats;
        let sends = s.sends - prev.sends;
        let frames = s.frames_out - prev.frames_out;
        tracing::info!(
            "core {}: {} conns, {:.0} req/s, in {:.1} MB/s, out {:.1} MB/s, {:.1} frames/send, {} closed",
            self.id,
            self.conns.len(),
            (s.requests - prev.requests) as f64 / secs,
            (s.bytes_in - prev.bytes_in) as f64 / secs / 1e6,
            (s.bytes_out - prev.bytes_out) as f64 / secs / 1e6,
            if sends == 0 {
                0.0
            } else {
                frames as f64 / sends as f64
            },
            s.closed - prev.closed,
        );
        self.last_report = (now, s);
    }

    fn begin_drain(&mut self) {
        let grace = self.config.shutdown_grace;
        self.draining = Some(Instant::now() + grace);
        self.cancel_accepts();
        // The kernel keeps its own reference until the accept is cancelled; then the
        // listening socket closes and new connections are refused.
        self.listeners.clear();
        for (_, slot) in self.conns.iter_mut() {
            // Everything the peer sent before this moment is owed an answer.
            let unread = sys::unread_bytes(slot.stream.as_fd()).unwrap_or(0) as u64;
            slot.drain_target = Some(slot.conn.stats.bytes_in + unread);
        }
        self.mark_all_dirty();
        let _ = self.ring.timer(DRAIN_TICK, timer(TIMER_DRAIN));
        tracing::debug!(core = self.id, conns = self.conns.len(), "draining");
    }

    fn force_close_all(&mut self) {
        self.forced = true;
        if !self.conns.is_empty() {
            tracing::warn!(
                core = self.id,
                conns = self.conns.len(),
                "shutdown grace expired; closing remaining connections"
            );
        }
        for (_, slot) in self.conns.iter_mut() {
            slot.close(DisconnectReason::Shutdown);
        }
        self.mark_all_dirty();
    }

    /// Starts sends and moves connections through their close states.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            self.advance(idx);
        }
        dirty.clear();
        // `advance` never marks dirty, so nothing was pushed meanwhile; keep the capacity.
        debug_assert!(self.dirty.is_empty());
        self.dirty = dirty;
    }

    fn advance(&mut self, idx: usize) {
        let Some(slot) = self.conns.get_mut(idx) else {
            return;
        };
        slot.dirty = false;
        let token = Token::conn(OpKind::Recv, idx, slot.generation);
        if slot.dead.is_none() && !slot.send_in_flight && !slot.conn.out.is_empty() {
            let mut batch = std::mem::take(&mut slot.spare_batch);
            self.stats.frames_out += slot.conn.out.take_batch(&mut batch);
            let send_token = Token::conn(OpKind::Send, idx, slot.generation);
            match self.ring.send(slot.stream.as_raw_fd(), send_token, batch) {
                Ok(()) => {
                    slot.send_in_flight = true;
                    self.stats.sends += 1;
                }
                Err(e) => slot.close(DisconnectReason::Socket(e)),
            }
        }
        self.apply_backpressure(idx);
        let slot = &mut self.conns[idx];
        let drained = slot.close_requested
            || slot.drain_target.is_some_and(|target| {
                slot.conn.stats.bytes_in >= target && slot.conn.partial_len() == 0
            });
        let output_done = !slot.send_in_flight && slot.conn.out.is_empty();
        if output_done && slot.dead.is_none() {
            if let Some(reason) = slot.failed.take() {
                slot.close(reason);
            }
        }
        if slot.dead.is_none() && output_done && (slot.peer_eof || drained) {
            // Everything owed is written: send FIN, then linger, reading and discarding, so
            // input still arriving never turns our close into a reset that destroys
            // responses the peer has not read yet. Close when the peer closes too, or once
            // it has been quiet for LINGER_QUIET with nothing unread, or after LINGER_MAX.
            if !slot.write_shut {
                let _ = slot.stream.shutdown(Shutdown::Write);
                slot.write_shut = true;
                slot.linger_since = Some(self.now);
            }
            let now = Instant::now();
            let quiet = now.saturating_duration_since(slot.last_active) >= LINGER_QUIET
                && sys::unread_bytes(slot.stream.as_fd()).is_ok_and(|n| n == 0);
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
            } else if !self.linger_timer_armed
                && self.ring.timer(LINGER_TICK, timer(TIMER_LINGER)).is_ok()
            {
                self.linger_timer_armed = true;
            }
        }
        if slot.dead.is_some() && !slot.shut_both {
            slot.shut_both = true;
            let _ = slot.stream.shutdown(Shutdown::Both);
            if slot.recv_armed {
                let _ = self.ring.cancel(token);
            }
        }
        if slot.dead.is_some() && !slot.recv_armed && !slot.send_in_flight {
            let mut slot = self.conns.remove(idx);
            self.stats.closed += 1;
            slot.conn.fail_calls(CallError::Disconnected);
            if slot.counted_peer {
                let mut counts = self
                    .shared
                    .per_peer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let ip = slot.conn.peer().ip();
                if let Some(n) = counts.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&ip);
                    }
                }
            }
            let reason = slot.dead.take().unwrap_or(DisconnectReason::Shutdown);
            tracing::trace!(core = self.id, peer = %slot.conn.peer(), "connection closed: {reason}");
            if let Some(hook) = &self.shared.hooks.on_disconnect {
                hook(slot.conn.info(), &reason);
            }
            if let Some(closed) = slot.on_close.take() {
                closed(&reason);
            }
        }
    }
}
