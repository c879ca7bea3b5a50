//! Support for the deterministic simulator (`engine/tests/simulate/`): the connection state
//! machines driven the way a reactor drives them, without sockets, threads or a ring. Hidden
//! from the docs: not part of the stable API.
//!
//! A [`SimConn`] is one connection's [`Conn`] (framing + session) and [`Lifecycle`], with
//! what `reactor::close::advance`, `reactor::io` and `reactor::mail` do for one connection:
//! the harness plays the kernel (it lends the bytes a recv returns, decides how much of a send
//! is written, delivers EOF, resets and cancellations) and the clock (every input takes its
//! `now`). [`SimMailbox`] is the one inbox of every simulated connection: everything posted
//! from the simulating thread lands on its local queue, and [`SimMail::apply`] carries a
//! message out on its connection as the reactor would. `udp` wraps the datagram core, `ws`
//! is a WebSocket client's side of the framing (the engine only has the server's).
//!
//! Invariants: nothing here decides anything the reactor does not (each method names the
//! reactor code it mirrors); a [`SimConn`] is released once, and every later input is
//! ignored, as a reactor drops completions for a freed slot.

pub mod fuzz;
mod mail;
pub mod udp;
pub mod ws;

pub use mail::{Applied, SimMail, SimMailbox};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::conn::Conn;
use crate::conn::handle::ConnHandle;
use crate::conn::hooks::DisconnectHook;
use crate::conn::lifecycle::{Facts, Lifecycle, LifecycleConfig};
use crate::error::{CallError, DisconnectReason};
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::CallDone;
use crate::router::Router;
use crate::stream::StreamLimits;
use crate::transport::ws::handshake::HandshakeConfig;

use crate::conn::lifecycle::{LINGER_MAX, LINGER_QUIET, LINGER_TICK};

/// Longest a connection lingers after its FIN (`lifecycle::LINGER_MAX`).
pub const LINGER_LIMIT: Duration = LINGER_MAX;

/// Which framing a simulated connection starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFraming {
    /// Raw arpc frames (a client's connection, or a listener without WebSocket).
    Arpc,
    /// The first bytes choose raw arpc or a WebSocket upgrade (a `listen` port with
    /// WebSocket on).
    ArpcOrWebSocket,
    /// HTTP only: a WebSocket upgrade (a `ws_listen` port).
    WebSocket,
}

/// One simulated connection's settings: what `Config` and `ConnPolicy` give a real one.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How its bytes are framed.
    pub framing: SimFraming,
    /// Largest frame body accepted.
    pub max_body: u32,
    /// Close after this long without input.
    pub idle_timeout: Option<Duration>,
    /// Close when a partial frame is older than this.
    pub read_timeout: Option<Duration>,
    /// Ping after this long without input.
    pub keepalive: Option<Duration>,
    /// Pause reading above this many unsent bytes.
    pub max_send_queue_bytes: usize,
    /// Pause reading above this many unsent frames.
    pub max_send_queue_frames: u64,
    /// Being over those limits stops reading (a server's connection; a client's does not).
    pub pause_reading: bool,
    /// Deferred answers at once before Requests are refused.
    pub max_in_flight: usize,
    /// Stream limits.
    pub streams: StreamLimits,
    /// The secret the first frame must carry, if any.
    pub auth_secret: Option<Vec<u8>>,
    /// Compress outgoing frames over this size.
    pub gzip_threshold: Option<usize>,
}

/// What one [`SimConn::poll`] asks the harness to do, in this order (as `Actions`).
#[derive(Debug, Default)]
pub struct SimActions {
    /// A send started: its bytes are [`SimConn::sending`]; complete it with
    /// [`SimConn::send_done`].
    pub start_send: bool,
    /// Cancel the recv armed: its last completion is [`SimConn::recv_cancelled`] (or
    /// whatever ends it first).
    pub cancel_recv: bool,
    /// A multishot recv is armed: data may be delivered with [`SimConn::recv`].
    pub arm_recv: bool,
    /// A direct recv started: [`SimConn::direct_want`] says how much it asks for.
    pub start_direct: bool,
    /// Our FIN: the peer reads EOF once it has read everything sent before.
    pub shut_write: bool,
    /// Both directions shut.
    pub shut_both: bool,
    /// Reading paused for back-pressure.
    pub overstocked: bool,
    /// The connection was released with this reason: its pending calls failed, its streams
    /// ended, its disconnect hooks ran.
    pub released: Option<DisconnectReason>,
}

/// A connection as a reactor holds it, driven by the harness.
pub struct SimConn {
    conn: Conn,
    lifecycle: Lifecycle,
    cfg: LifecycleConfig,
    router: Arc<Router>,
    /// The batch of the send in flight (`reactor::io::start_send` hands it to the ring).
    sending: Vec<Bytes>,
    /// The buffer lent to a direct recv and how much it asks for.
    direct: Option<(BytesMut, usize)>,
    released: bool,
    hooks: Arc<Vec<DisconnectHook>>,
}

impl std::fmt::Debug for SimConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConn")
            .field("id", &self.info().id)
            .field("lifecycle", &self.lifecycle)
            .finish()
    }
}

/// A connection id for the simulator: `core` and `serial` as the harness numbers them.
pub fn conn_id(core: u16, serial: u64) -> ConnId {
    ConnId {
        core,
        slot: serial as u32 & !crate::ids::DATAGRAM_SLOT_BIT,
        serial,
    }
}

impl SimConn {
    /// A connection opened at `now` (`reactor::slot::open_conn`), served by `router`, its
    /// handles posting to `mailbox`; `hooks` run when it is released (pub/sub's among them).
    pub fn new(
        info: ConnInfo,
        cfg: &SimConfig,
        router: Arc<Router>,
        mailbox: &SimMailbox,
        hooks: Arc<Vec<DisconnectHook>>,
        now: Instant,
    ) -> SimConn {
        let mailbox = mailbox.0.clone();
        let ws = Arc::new(HandshakeConfig::default());
        let mut conn = match cfg.framing {
            SimFraming::Arpc => Conn::new(info, mailbox, cfg.max_body),
            SimFraming::ArpcOrWebSocket => Conn::with_websocket(info, mailbox, cfg.max_body, ws),
            SimFraming::WebSocket => Conn::websocket_only(info, mailbox, cfg.max_body, ws),
        };
        if let Some(secret) = &cfg.auth_secret {
            conn.session.require_auth(Arc::new(secret.to_vec()));
        }
        conn.session.set_max_in_flight(cfg.max_in_flight);
        conn.session.set_stream_limits(cfg.streams);
        conn.session.out.set_gzip_threshold(cfg.gzip_threshold);
        let lifecycle_cfg = LifecycleConfig {
            idle_timeout: cfg.idle_timeout,
            read_timeout: cfg.read_timeout,
            keepalive: cfg.keepalive,
            max_send_queue_bytes: cfg.max_send_queue_bytes,
            max_send_queue_frames: cfg.max_send_queue_frames,
            pause_reading: cfg.pause_reading,
            linger_quiet: LINGER_QUIET,
            linger_max: LINGER_MAX,
            linger_tick: LINGER_TICK,
        };
        SimConn {
            conn,
            lifecycle: Lifecycle::new(now),
            cfg: lifecycle_cfg,
            router,
            sending: Vec::new(),
            direct: None,
            released: false,
            hooks,
        }
    }

    /// Who the connection is.
    pub fn info(&self) -> ConnInfo {
        self.conn.session.info().clone()
    }

    /// A handle to it, as hooks and handlers get.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle::new(self.info(), self.conn.session.mailbox().clone())
    }

    /// Whether it was released.
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// A multishot recv completion with `data` (`more`: it stays armed), as
    /// `reactor::io::on_recv` and `decode` handle it. Returns whether the data was decoded
    /// (not discarded while lingering or failing).
    pub fn recv(&mut self, now: Instant, data: &[u8], more: bool) -> bool {
        if self.released || !self.lifecycle.recv_data(now, more) {
            return false;
        }
        self.decode(now, data);
        true
    }

    fn decode(&mut self, now: Instant, data: &[u8]) {
        if self.conn.session.out.wants_buffer() {
            self.conn.session.out.give_buffer(BytesMut::new());
        }
        let decoded = self.conn.handle_recv(data, &self.router);
        self.lifecycle.decoded(now, self.conn.partial_len() > 0);
        if let Err(e) = decoded {
            self.lifecycle.fail(e.into_reason());
        }
        if self.conn.session.rejected() {
            self.lifecycle.fail(DisconnectReason::Unauthenticated);
        }
    }

    /// A recv ended with EOF (the peer's FIN read).
    pub fn recv_eof(&mut self) {
        if self.released {
            return;
        }
        if let Some((buf, _)) = self.direct.take() {
            self.conn.end_direct(buf, 0);
        }
        self.lifecycle.recv_eof();
    }

    /// A recv ended with `ENOBUFS` (the provided buffers ran out): it is re-armed.
    pub fn recv_no_buffers(&mut self) {
        if !self.released {
            self.lifecycle.recv_no_buffers();
        }
    }

    /// A recv ended with `ECANCELED` (the cancel took effect). A direct recv's buffer goes
    /// back to the framing unfilled.
    pub fn recv_cancelled(&mut self) {
        if self.released {
            return;
        }
        if let Some((buf, _)) = self.direct.take() {
            self.conn.end_direct(buf, 0);
        }
        self.lifecycle.recv_cancelled();
    }

    /// A recv failed with `errno` (`more`: a multishot that stays armed).
    pub fn recv_error(&mut self, errno: i32, more: bool) {
        if self.released {
            return;
        }
        if let Some((buf, _)) = self.direct.take() {
            self.conn.end_direct(buf, 0);
        }
        self.lifecycle
            .recv_error(io::Error::from_raw_os_error(errno), more);
    }

    /// The ring refused the recv (or direct recv) the last poll asked for (`EAGAIN`,
    /// `EBUSY`: a full submission queue), as `reactor::close::advance` reports it.
    pub fn arm_refused(&mut self, errno: i32) {
        if self.released {
            return;
        }
        if let Some((buf, _)) = self.direct.take() {
            self.conn.end_direct(buf, 0);
        }
        self.lifecycle
            .recv_arm_failed(io::Error::from_raw_os_error(errno));
    }

    /// The ring refused the send the last poll started; its batch is dropped with it, as
    /// `reactor::io::start_send` drops it.
    pub fn send_refused(&mut self, errno: i32) {
        if self.released {
            return;
        }
        self.sending.clear();
        self.lifecycle
            .send_start_failed(io::Error::from_raw_os_error(errno));
    }

    /// How many bytes the direct recv in flight asks for (`None`: none in flight).
    pub fn direct_want(&self) -> Option<usize> {
        self.direct.as_ref().map(|(_, want)| *want)
    }

    /// The direct recv completed with `data` (at most [`SimConn::direct_want`] bytes, at
    /// least one), as `reactor::io::on_recv_direct`: the kernel wrote them into the frame's
    /// own buffer.
    pub fn direct_done(&mut self, now: Instant, data: &[u8]) {
        let Some((mut buf, want)) = self.direct.take() else {
            return;
        };
        assert!(
            !data.is_empty() && data.len() <= want && data.len() <= buf.capacity() - buf.len(),
            "a direct recv of {} bytes into room for {} (asked {want})",
            data.len(),
            buf.capacity() - buf.len()
        );
        buf.extend_from_slice(data);
        self.conn.end_direct(buf, data.len());
        if self.lifecycle.recv_data(now, false) {
            self.decode(now, &[]);
        }
    }

    /// The bytes of the send in flight, in order.
    pub fn sending(&self) -> impl Iterator<Item = &[u8]> {
        self.sending.iter().map(|b| &b[..])
    }

    /// Bytes of the send in flight.
    pub fn sending_len(&self) -> usize {
        self.sending.iter().map(Bytes::len).sum()
    }

    /// The send in flight completed: `Ok(written)` (at most [`SimConn::sending_len`]; the
    /// rest goes back to the front of the queue) or `Err(errno)`, as `reactor::io::on_send`.
    pub fn send_done(&mut self, result: Result<usize, i32>) {
        if self.released {
            return;
        }
        match result {
            Ok(written) => {
                assert!(written <= self.sending_len(), "wrote more than was sent");
                self.conn.session.out.sent(&mut self.sending, written);
                let _ = self.conn.session.out.take_idle_buffer();
                self.lifecycle.send_done(Ok(written));
            }
            Err(errno) => {
                self.sending.clear();
                self.lifecycle
                    .send_done(Err(io::Error::from_raw_os_error(errno)));
            }
        }
    }

    /// A handle asked to close once the output is written (`Command::Close`).
    pub fn request_close(&mut self) {
        if !self.released {
            self.lifecycle.request_close();
        }
    }

    /// Server shutdown began (`reactor::drain`): `unread` bytes wait in the socket.
    pub fn begin_drain(&mut self, unread: usize) {
        if !self.released {
            let bytes_in = self.conn.session.stats.bytes_in;
            self.lifecycle.begin_drain(bytes_in, Some(unread));
        }
    }

    /// The shutdown grace expired.
    pub fn force_close(&mut self) {
        if !self.released {
            self.lifecycle.force_close();
        }
    }

    /// Polls the lifecycle and carries out what the harness need not (queue the Ping, take
    /// the send's batch, lend a direct recv its buffer, release), as
    /// `reactor::close::advance`; `unread`: bytes waiting in the socket.
    pub fn poll(&mut self, now: Instant, unread: usize) -> SimActions {
        let mut done = SimActions::default();
        if self.released {
            return done;
        }
        // advance re-polls after a refused action or when unpausing with held sends; the
        // simulated ring refuses nothing, so only the second applies.
        for _ in 0..2 {
            let session = &mut self.conn.session;
            if session.streams.has_held() && !self.lifecycle.is_paused() {
                session.streams.flush_held(&mut session.out);
            }
            let facts = self.facts();
            let was_paused = self.lifecycle.is_paused();
            let mut actions = self.lifecycle.poll(now, &self.cfg, &facts, || Some(unread));
            if actions.queue_ping() {
                self.conn.session.out.push_ping();
            }
            if actions.start_send() {
                assert!(
                    self.sending.is_empty(),
                    "a second send while one is in flight"
                );
                self.conn.session.out.take_batch(&mut self.sending);
                let _ = self.conn.session.out.take_gzip_out();
                done.start_send = true;
            }
            done.cancel_recv |= actions.cancel_recv();
            done.arm_recv |= actions.arm_recv();
            if actions.start_direct() {
                match self.conn.take_for_direct(unread) {
                    Some(lent) => {
                        self.direct = Some(lent);
                        done.start_direct = true;
                    }
                    None => self
                        .lifecycle
                        .recv_arm_failed(io::Error::other("no partial frame to receive")),
                }
            }
            done.shut_write |= actions.shut_write();
            done.shut_both |= actions.shut_both();
            done.overstocked |= actions.overstocked();
            if let Some(reason) = actions.release.take() {
                self.release();
                done.released = Some(reason);
                return done;
            }
            let unpaused_with_held =
                was_paused && !self.lifecycle.is_paused() && self.conn.session.streams.has_held();
            if !unpaused_with_held {
                break;
            }
        }
        done
    }

    fn facts(&self) -> Facts {
        let session = &self.conn.session;
        let out = &session.out;
        Facts {
            output_empty: out.is_empty(),
            bytes_in: session.stats.bytes_in,
            partial_len: self.conn.partial_len(),
            backlog_bytes: out.backlog_bytes(),
            backlog_frames: out.backlog_frames(),
            hold_reading: session.streams.holding() > 0,
            direct_wanted: self.conn.direct_wanted(),
            answers_owed: session.answers_owed(),
        }
    }

    /// `reactor::slot::release`: pending calls fail, streams end, tasks are dropped, hooks run.
    fn release(&mut self) {
        self.released = true;
        self.sending.clear();
        self.conn.session.fail_calls(CallError::Disconnected);
        self.conn.session.cancel_tasks();
        let info = self.info();
        let reason = DisconnectReason::Closed;
        for hook in self.hooks.iter() {
            hook(&info, &reason);
        }
    }

    /// When the connection wants to be polled without input.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.released {
            return None;
        }
        self.lifecycle.next_deadline(&self.cfg)
    }

    /// Starts a call to the peer (`Command::Call` once admitted); `done` runs once with its
    /// outcome. Returns its seq, or `None` when refused at once (`done` has run with
    /// `Overstocked` or `Disconnected`).
    pub fn start_call(
        &mut self,
        method: &[u8],
        payload: &[u8],
        deadline: Instant,
        done: CallDone,
    ) -> Option<u64> {
        if self.released || self.lifecycle.is_dead() {
            done(Err(CallError::Disconnected));
            return None;
        }
        if self.lifecycle.is_paused() {
            done(Err(CallError::Overstocked));
            return None;
        }
        Some(
            self.conn
                .session
                .start_call(method, payload, deadline, done),
        )
    }

    /// Call `seq`'s deadline came (`TimerId::Call`).
    pub fn expire_call(&mut self, seq: u64, now: Instant) {
        if !self.released {
            self.conn.session.expire_call(seq, now);
        }
    }

    /// Queues a Notify to the peer (`Command::Notify`): dropped when paused. Returns whether
    /// it was queued.
    pub fn notify(&mut self, method: &[u8], payload: &[u8]) -> bool {
        if self.released || !self.lifecycle.is_open() || self.lifecycle.is_paused() {
            return false;
        }
        let frame = crate::conn::handle::encode(
            ringrpc_protocol::Command::Notify,
            ringrpc_protocol::Flags::default(),
            0,
            method,
            payload,
        );
        self.conn.session.out.push_encoded(frame);
        true
    }

    /// What the memory checks look at.
    pub fn gauges(&self) -> SimGauges {
        let session = &self.conn.session;
        SimGauges {
            backlog_bytes: session.out.backlog_bytes(),
            backlog_frames: session.out.backlog_frames(),
            partial_len: self.conn.partial_len(),
            answers_owed: session.answers_owed(),
            calls_pending: session.calls_pending(),
            streams_open: session.streams.len(),
            streams_holding: session.streams.holding(),
            paused: self.lifecycle.is_paused(),
            reading: self.lifecycle.is_reading(),
            dead: self.lifecycle.is_dead(),
            bytes_in: session.stats.bytes_in,
            frames_in: session.stats.frames_in,
        }
    }
}

/// One connection's buffers and tables at a moment, for the memory checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimGauges {
    /// Unsent bytes, queued or in flight.
    pub backlog_bytes: usize,
    /// Frames queued and not yet handed to a send.
    pub backlog_frames: u64,
    /// Bytes of the partial frame held.
    pub partial_len: usize,
    /// Answers owed (responders outstanding).
    pub answers_owed: usize,
    /// Calls this side made, waiting.
    pub calls_pending: usize,
    /// Streams open.
    pub streams_open: usize,
    /// Streams whose inbox is full.
    pub streams_holding: usize,
    /// Reading paused for back-pressure.
    pub paused: bool,
    /// Input is decoded.
    pub reading: bool,
    /// The close is decided.
    pub dead: bool,
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames decoded.
    pub frames_in: u64,
}

/// A peer address for simulated connection number `n`.
pub fn peer_addr(n: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 40_000 + n))
}

/// Registers pub/sub's routes on `router` and returns its disconnect hook, as
/// `ServerBuilder::pubsub` does.
pub fn add_pubsub(router: &mut Router, pubsub: &crate::PubSub) -> DisconnectHook {
    for (method, handler) in pubsub.routes() {
        router
            .add(method, handler)
            .expect("pub/sub's routes are valid");
    }
    pubsub.disconnect_hook()
}
