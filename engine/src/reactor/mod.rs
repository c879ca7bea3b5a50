//! One core's event loop: completions → connections → one send each → one kernel entry.
//!
//! The loop lives here; each concern has its own file: `accept` (listeners, limits,
//! descriptor-exhaustion backoff), `io` (recv, send batching, send completions), `close`
//! (carrying out what each connection's `Lifecycle` decides, its timers), `mail` (applying
//! messages from other threads, adopted sockets), `drain` (shutdown, stats lines), `timers`
//! (the deadline heap), `slot` (one connection's state, open and release), `udp` (the
//! datagram socket). Around the loop: `mailbox` (the only way in from other threads),
//! `shared` (what the reactors of one server share with each other and with handles),
//! `settings` (what each reactor needs to know, derived from the `Config`) and `runtime`
//! (spawning and joining reactor threads).
//!
//! Invariants:
//! - One clock per tick: `now` is read once after each kernel wait and every decision of
//!   that tick uses it.
//! - Each tick drains every completion, lets each touched connection decode and dispatch,
//!   then starts at most one vectored send per connection (none while one is in flight),
//!   and enters the kernel once for all of it, waiting at most until the earliest deadline.
//! - A connection's slot (and so its socket) is freed only when it has no recv armed and no
//!   send in flight (its lifecycle releases it only then); every completion's tag (slot and
//!   the low 32 bits of the serial) is checked against the slot first.
//! - Network input never panics the loop: a bad peer closes only its own connection.
//! - Every wake-up and ring error is handled: logged and counted in `loop_errors`.

pub(crate) mod mailbox;
pub(crate) mod runtime;
pub(crate) mod settings;
pub(crate) mod shared;

mod accept;
mod close;
mod drain;
mod io;
mod mail;
mod slot;
pub(crate) mod timers;
mod udp;

use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringrpc_uring::{Completion, OpKind, Ring, RingConfig, RingError, SharedFd};
use slab::Slab;

use crate::conn::handle::mark_reactor_thread;
use crate::error::{CallError, DisconnectReason};
use crate::executor::contain::{contain, take_panics};
use crate::executor::{Executor, POLL_BUDGET};
use crate::ids::ConnId;
use crate::observe::closes::ClosedBy;
use crate::observe::methods::MethodMetrics;
use crate::observe::scrape::{CoreMetrics, Published};
use crate::reactor::mailbox::{Mailbox, local_pending};
use crate::reactor::settings::ReactorSettings;
use crate::router::Router;

/// The connection slab reserves at most this many slots up front (about 100 MB of address
/// space); past it, it grows by doubling.
const MAX_PRESIZED_SLOTS: usize = 128 * 1024;
/// Emptied send batches kept for reuse: enough for every connection of a busy core to have
/// a send in flight without allocating, while a burst to thousands of connections (a
/// broadcast) leaves at most this many behind.
const SPARE_BATCHES: usize = 1024;
/// Coalescing buffers kept for reuse: with `SPARE_BUFFER_MAX` (64 KiB) each, at most 16 MiB
/// per core, usually a few KiB each.
const SPARE_BUFFERS: usize = 256;
use crate::observe::core_stats::CoreStats;
use crate::reactor::shared::{ConnPolicy, Shared};
use crate::udp::UdpCore;

use accept::Listener;
use slot::Slot;
use timers::{Deadlines, TimerId};
use udp::{UDP_TAG, Udp};

/// The sockets one reactor serves: its TCP listeners and its UDP socket, if any.
#[derive(Debug, Default)]
pub(crate) struct CoreSockets {
    pub(crate) tcp: Vec<TcpListener>,
    /// Listeners whose connections must speak HTTP (WebSocket or static assets).
    pub(crate) websocket: Vec<TcpListener>,
    /// Unix domain socket listeners, and whether each must speak HTTP.
    pub(crate) unix: Vec<(std::os::unix::net::UnixListener, bool)>,
    pub(crate) udp: Option<UdpSocket>,
}

/// Tag of the wake-up read (connection tags are `slot << 32 | serial`, accept tags the
/// listener's index; each op kind is told apart by the completion itself).
const WAKE_TAG: u64 = 0;

/// The shorter of two optional waits (`None` = no limit).
fn min_wait(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The tag of connection `idx`'s ops: its slot and the low half of its serial.
fn conn_tag(idx: usize, serial: u64) -> u64 {
    ((idx as u64) << 32) | u64::from(serial as u32)
}

/// One core's reactor.
pub(crate) struct Reactor {
    id: usize,
    /// The clock, read once per loop turn.
    now: Instant,
    mailbox: Arc<Mailbox>,
    ring: Ring,
    /// One per listen address; empty for a client runtime.
    listeners: Vec<Listener>,
    /// The datagram socket and its state, if this server listens on UDP.
    udp: Option<Udp>,
    conns: Slab<Slot>,
    /// Serial of the last connection opened here (ids are never reused).
    serial: u64,
    settings: Arc<ReactorSettings>,
    /// How accepted connections are served.
    server_policy: Arc<ConnPolicy>,
    shared: Arc<Shared>,
    deadlines: Deadlines,
    dirty: Vec<usize>,
    /// Emptied send batches, reused by the next send of any connection (at most
    /// [`SPARE_BATCHES`]), so an idle connection holds none.
    spare_batches: Vec<Vec<Bytes>>,
    /// Coalescing buffers of connections that went quiet, lent to the next connection that
    /// answers (at most [`SPARE_BUFFERS`], each at most `SPARE_BUFFER_MAX`), so an idle
    /// connection holds none.
    spare_buffers: Vec<BytesMut>,
    stats: CoreStats,
    accept_backoff: bool,
    accept_failure_streak: u64,
    /// When the shutdown grace ends, once draining.
    draining: Option<Instant>,
    /// When the shutdown delay ends, once shutting down with a delay.
    delaying: Option<Instant>,
    last_report: (Instant, CoreStats),
    /// Connections closed, by kind of reason.
    closed_by: ClosedBy,
    /// Per-method counters (off, and empty, unless the server serves metrics).
    methods: MethodMetrics,
    /// Publishes snapshots for scrapes, when the server serves metrics.
    metrics: Option<CoreMetrics>,
}

impl Reactor {
    /// Builds the reactor's ring; call on the reactor's own thread.
    pub(crate) fn new(
        id: usize,
        settings: Arc<ReactorSettings>,
        router: Arc<Router>,
        shared: Arc<Shared>,
        sockets: CoreSockets,
    ) -> Result<Reactor, RingError> {
        let mailbox = shared.mailboxes[id].clone();
        let mut ring = Ring::new(RingConfig {
            entries: settings.ring_entries,
            recv_buffers: settings.recv_buffers,
            recv_buffer_size: settings.recv_buffer_size,
            incremental_recv_buffers: settings.incremental_recv_buffers,
        })?;
        let presized = settings.max_connections_per_core.min(MAX_PRESIZED_SLOTS);
        // Each connection keeps one recv armed; a few more for sends, listeners, the wake-up.
        ring.reserve_ops(presized + 64);
        mailbox.set_waker(ring.waker());
        tracing::debug!(core = id, features = ?ring.features(), "reactor ring ready");
        let server_policy = Arc::new(ConnPolicy::new(
            router,
            &settings,
            settings.idle_timeout,
            settings.keepalive,
            settings.read_timeout,
        ));
        let now = Instant::now();
        let metrics = shared.metrics.as_ref().map(|hub| hub.core_metrics(id));
        let methods = match &shared.metrics {
            Some(hub) => hub.method_metrics(),
            None => MethodMetrics::default(),
        };
        Ok(Reactor {
            id,
            now,
            mailbox,
            ring,
            udp: sockets.udp.map(|socket| Udp {
                socket: SharedFd::from(socket),
                recv: None,
                core: UdpCore::new(id as u16, settings.udp.clone()),
                gso: settings.udp_gso,
            }),
            listeners: sockets
                .tcp
                .into_iter()
                .map(|socket| (OwnedFd::from(socket), false, false))
                .chain(
                    sockets
                        .websocket
                        .into_iter()
                        .map(|socket| (OwnedFd::from(socket), true, false)),
                )
                .chain(
                    sockets
                        .unix
                        .into_iter()
                        .map(|(socket, ws)| (OwnedFd::from(socket), ws, true)),
                )
                .map(|(socket, websocket_only, unix)| Listener {
                    socket: SharedFd::from(socket),
                    accept: None,
                    websocket_only,
                    unix,
                })
                .collect(),
            // Room for every connection this core may hold, reserved once: the slab never
            // moves its entries, and untouched room costs address space, not memory.
            conns: Slab::with_capacity(presized),
            serial: 0,
            settings,
            server_policy,
            shared,
            deadlines: Deadlines::default(),
            dirty: Vec::with_capacity(1024),
            spare_batches: Vec::new(),
            spare_buffers: Vec::new(),
            stats: CoreStats {
                core: id,
                ..CoreStats::default()
            },
            accept_backoff: false,
            accept_failure_streak: 0,
            draining: None,
            delaying: None,
            last_report: (now, CoreStats::default()),
            closed_by: ClosedBy::default(),
            methods,
            metrics,
        })
    }

    /// Runs until shutdown has drained every connection; returns this core's totals. However
    /// the loop ends (drained, a ring error or a panic), the mailbox is closed first, so no
    /// call, stream or adoption posted to this core waits for it forever.
    pub(crate) fn run(mut self) -> std::io::Result<CoreStats> {
        mark_reactor_thread();
        self.mailbox.claim_thread();
        Executor::install(self.mailbox.clone());
        // Outbound connections of core clients: served here, with no routes of their own.
        let outbound = ConnPolicy::new(Arc::new(Router::new()), &self.settings, None, None, None);
        crate::client::core_client::install(self.id, self.shared.clone(), Arc::new(outbound));
        let served = catch_unwind(AssertUnwindSafe(|| self.serve()));
        self.stop_taking_mail();
        match served {
            Ok(Ok(())) => Ok(self.stats),
            Ok(Err(e)) => Err(e),
            Err(panic) => resume_unwind(panic),
        }
    }

    /// The loop (see the module docs).
    fn serve(&mut self) -> std::io::Result<()> {
        self.arm_accepts();
        self.ring.wake_read(WAKE_TAG)?;
        if let Some(every) = self.settings.stats_interval {
            self.deadlines.schedule(self.now + every, TimerId::Stats);
        }
        self.arm_udp();
        if let Some(at) = self.first_udp_sweep() {
            self.deadlines.schedule(at, TimerId::UdpSweep);
        }
        // Anything posted before the ring was up.
        self.take_mail();
        let mut cqes = Vec::with_capacity(4096);
        loop {
            if self.draining.is_some() && self.conns.is_empty() {
                break;
            }
            if Executor::has_ready() {
                // Tasks are ready: submit, take what has completed, do not sleep.
                self.ring.submit_and_wait(0, &mut cqes)?;
            } else {
                let tasks = Executor::next_timer().map(|at| at.saturating_duration_since(self.now));
                match min_wait(self.deadlines.wait_from(self.now), tasks) {
                    Some(wait) => self.ring.submit_and_wait_for(1, wait, &mut cqes)?,
                    None => self.ring.submit_and_wait(1, &mut cqes)?,
                }
            }
            self.now = Instant::now();
            let mut batch = cqes.drain(..);
            while let Some(completion) = batch.next() {
                self.on_completion(completion, batch.as_slice());
            }
            self.run_due_timers();
            Executor::fire_timers(self.now);
            Executor::run_ready(POLL_BUDGET);
            if self.draining.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
                match self.delaying {
                    None if !self.settings.shutdown_delay.is_zero() && !self.conns.is_empty() => {
                        self.begin_delay()
                    }
                    Some(until) if self.now < until && !self.conns.is_empty() => {}
                    _ => self.begin_drain(),
                }
            }
            self.apply_local_and_flush();
            if self.delaying.is_some() && self.draining.is_none() && self.conns.is_empty() {
                // The last connection closed during this tick's flush.
                self.begin_drain();
                self.apply_local_and_flush();
            }
            self.stats.callback_panics += take_panics() + Executor::take_panics();
            if let Some(want) = self.metrics.as_ref().and_then(CoreMetrics::wanted) {
                self.publish_metrics(want);
            }
        }
        if let Some(udp) = &self.udp {
            self.stats.udp = udp.core.stats;
        }
        if let Some(mut metrics) = self.metrics.take() {
            metrics.publish_final(Published {
                stats: &self.stats,
                open: 0,
                closed_by: &self.closed_by,
                methods: &self.methods,
            });
        }
        // No kernel access to ring-owned memory may outlive the loop (Drop would do this too).
        if !self.ring.cancel_all_and_wait() {
            tracing::warn!(
                core = self.id,
                "some io_uring ops did not finish after cancellation"
            );
        }
        Ok(())
    }

    /// Applies what this thread posted to itself (handlers, callbacks) and flushes, until
    /// flushing (hooks, released connections) posts nothing more, so the loop never sleeps
    /// in the kernel with local messages waiting.
    fn apply_local_and_flush(&mut self) {
        loop {
            self.take_local_mail();
            self.flush();
            if !local_pending() {
                break;
            }
        }
    }

    /// The loop has ended: closes the mailbox (what is queued and what comes later is
    /// abandoned: calls fail with `Stopped`), tells adoptions still waiting that they will
    /// not be served, and — when the loop failed with connections still open — fails their
    /// calls and streams now rather than never. Each step is contained: after a panic the
    /// state may be inconsistent, and this must still run to the end.
    fn stop_taking_mail(&mut self) {
        self.mailbox.close();
        for adoption in self.shared.take_adoptions(self.id) {
            contain("a client's closed callback", || {
                (adoption.closed)(&DisconnectReason::Shutdown)
            });
        }
        for (_, slot) in self.conns.iter_mut() {
            let session = &mut slot.conn.session;
            contain("failing a stopped connection's calls", || {
                session.fail_calls(CallError::Stopped)
            });
        }
        if let Some(udp) = &mut self.udp {
            contain("failing datagram calls", || udp.core.fail_calls());
        }
        // Tasks still alive (background tasks; handler tasks of connections a failed loop
        // left open) are dropped here, on their own thread; what they post on the way is
        // abandoned like any late message.
        let dropped = Executor::uninstall();
        crate::client::core_client::uninstall();
        if dropped > 0 {
            tracing::debug!(
                core = self.id,
                tasks = dropped,
                "tasks dropped as the reactor stopped"
            );
        }
        self.mailbox.close();
        self.stats.callback_panics += take_panics();
    }

    /// Acts on one completion; `later` are the ones after it in this batch.
    fn on_completion(&mut self, completion: Completion, later: &[Completion]) {
        match completion.kind() {
            OpKind::Accept => self.on_accept(completion),
            OpKind::Recv => self.on_recv(completion, later),
            OpKind::RecvInto => self.on_recv_direct(completion),
            OpKind::RecvMsg => self.on_datagram(completion),
            OpKind::Send if completion.tag() == UDP_TAG => self.on_datagram_sent(completion),
            OpKind::Send => self.on_send(completion),
            OpKind::Wake => self.on_wake(completion.result()),
            // The reactor keeps its deadlines itself and arms no ring timeouts.
            _ => {}
        }
    }

    /// The wake-up read finished: re-arm it whatever its result (a failed read must not
    /// stop cross-thread delivery), then apply the mail.
    fn on_wake(&mut self, result: i32) {
        if result < 0 && result != -libc::ECANCELED {
            self.stats.loop_errors += 1;
            tracing::error!(
                core = self.id,
                "wake-up read failed: {}",
                std::io::Error::from_raw_os_error(-result)
            );
        }
        if let Err(e) = self.ring.wake_read(WAKE_TAG) {
            self.stats.loop_errors += 1;
            tracing::error!(
                core = self.id,
                "cannot re-arm the wake-up read ({e}); retrying in 1 ms"
            );
            self.deadlines
                .schedule(self.now + Duration::from_millis(1), TimerId::WakeRetry);
        }
        self.take_mail();
    }

    /// Acts on every deadline that has come (after dropping stale ones, when they may
    /// outnumber the live).
    fn run_due_timers(&mut self) {
        self.compact_deadlines();
        while let Some((at, timer)) = self.deadlines.pop_due(self.now) {
            match timer {
                TimerId::Stats => self.report_interval(),
                TimerId::AcceptRetry => self.retry_accept(),
                TimerId::DrainGrace => self.force_close_all(),
                // The loop begins the drain after the timers.
                TimerId::ShutdownDelay => {}
                TimerId::WakeRetry => self.on_wake(0),
                TimerId::Conn { slot, serial } => self.on_conn_timer(slot as usize, serial, at),
                TimerId::UdpCall { seq } => self.on_udp_call_timer(seq),
                TimerId::UdpSweep => self.on_udp_sweep(),
                TimerId::Stream { slot, serial, id } => {
                    if let Some(s) = self.conns.get_mut(slot as usize) {
                        if s.serial() == serial {
                            let session = &mut s.conn.session;
                            session.streams.expire((true, id), &mut session.out);
                            self.mark_dirty(slot as usize);
                        }
                    }
                }
                TimerId::Call { slot, serial, seq } => {
                    let now = self.now;
                    if let Some(s) = self.conns.get_mut(slot as usize) {
                        if s.serial() == serial {
                            s.conn.session.expire_call(seq, now);
                        }
                    }
                }
            }
        }
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

    /// The live slot a completion's tag names, if its serial still matches.
    fn live(&self, tag: u64) -> Option<usize> {
        let idx = (tag >> 32) as usize;
        match self.conns.get(idx) {
            Some(s) if conn_tag(idx, s.serial()) == tag => Some(idx),
            _ => None,
        }
    }

    /// The live slot a connection id names, if that connection is still open.
    fn live_id(&self, id: ConnId) -> Option<usize> {
        let idx = id.slot as usize;
        match self.conns.get(idx) {
            Some(s) if s.serial() == id.serial && !s.lifecycle.is_dead() => Some(idx),
            _ => None,
        }
    }

    /// Answers a scrape: copies this core's counters into its snapshot slot.
    #[cold]
    fn publish_metrics(&mut self, want: u64) {
        let mut stats = self.stats;
        if let Some(udp) = &self.udp {
            stats.udp = udp.core.stats;
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.publish(
                want,
                Published {
                    stats: &stats,
                    open: self.conns.len() as u64,
                    closed_by: &self.closed_by,
                    methods: &self.methods,
                },
            );
        }
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
        self.flush_udp();
    }
}
