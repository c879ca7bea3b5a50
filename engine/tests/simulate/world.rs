//! One simulated world: a server (its stream connections, its datagram endpoint, pub/sub)
//! and its clients over the simulated network, stepped by a seeded RNG on a simulated clock.
//! Each step: time moves, due timers fire, the workload acts, the network moves bytes and
//! completions, faults strike, posted messages are applied, every connection is polled.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringrpc::simulation::{
    SimConn, SimFraming, SimGauges, SimMailbox, SimUdp, SimUdpLimits, conn_id, peer_addr, ws,
};
use ringrpc::{ConnInfo, DisconnectHook, PubSub, StreamLimits};

use crate::ledger::{Calls, PubEvent, Shared, client_router, server_router};
use crate::net::{Air, Pipe};
use crate::rng::{Digest, Rng};
use crate::scenario::{Scenario, Transport};
use crate::work::StreamRun;

/// What a side's recv is doing, as the harness (playing the kernel) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    Idle,
    Armed,
    Direct,
    /// A cancel was asked; `true` for a direct recv's.
    Cancelling(bool),
}

/// One end of a stream connection.
#[derive(Debug)]
pub struct Side {
    pub conn: SimConn,
    pub recv: Recv,
    pub sending: bool,
    pub slow_until: Duration,
    pub releases: u32,
    pub reason: Option<String>,
    /// Writes fail with EPIPE (reset, or the harness half-closed it behind its back).
    pub write_broken: bool,
}

impl Side {
    fn new(conn: SimConn) -> Side {
        Side {
            conn,
            recv: Recv::Idle,
            sending: false,
            slow_until: Duration::ZERO,
            releases: 0,
            reason: None,
            write_broken: false,
        }
    }

    pub fn live(&self) -> bool {
        self.releases == 0
    }
}

/// The client end of a WebSocket: its decoder, and what its connection wrote before the
/// `101` came back.
#[derive(Debug, Default)]
pub struct WsClient {
    pub decoder: ws::ServerDecoder,
    pub upgraded: bool,
    pub held: Vec<u8>,
    /// arpc bytes decoded from the server's frames, not yet read by the client.
    pub decoded: std::collections::VecDeque<u8>,
    pub closed_by_server: bool,
}

/// A client and the server over one stream connection.
#[derive(Debug)]
pub struct Link {
    pub up_latency: Duration,
    pub down_latency: Duration,
    pub capacity: usize,
    pub server: Side,
    pub client: Side,
    /// Client → server.
    pub up: Pipe,
    /// Server → client.
    pub down: Pipe,
    pub ws: Option<WsClient>,
    /// A fault struck it (or the client closed it during the workload): calls on it may
    /// fail with `Disconnected`.
    pub faulted: bool,
    /// Garbage went into it: an answer's bytes prove nothing.
    pub corrupted: bool,
    pub streams: Vec<StreamRun>,
    /// Calls its client started (a seq given) and their completions so far: the client's
    /// pending map must hold exactly the difference.
    pub started: u64,
    pub completed: Arc<std::sync::atomic::AtomicU64>,
    /// Notifies (pushes, publications) the server dropped for it: paused or gone.
    pub notify_drops: u64,
}

/// A client's datagram endpoint.
#[derive(Debug)]
pub struct UdpClient {
    pub core: SimUdp,
    pub addr: SocketAddr,
}

/// A call's deadline: whose, and which seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A call the client of link .0 made.
    Client(usize, u64),
    /// A call the server made on link .0.
    Server(usize, u64),
    /// A datagram call of UDP client .0.
    Udp(usize, u64),
}

/// Counters for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub steps: u64,
    pub calls: u64,
    pub answered: u64,
    pub failed: u64,
    /// Failures by kind: timed out, disconnected, overstocked, refused by the server.
    pub timeouts: u64,
    pub disconnected: u64,
    pub overstocked: u64,
    pub refused: u64,
    pub stream_frames: u64,
    pub publications: u64,
    pub deliveries: u64,
    pub datagrams: u64,
    pub faults: u64,
    pub overstocks: u64,
    pub direct_recvs: u64,
    pub checks: u64,
}

pub struct World {
    pub rng: Rng,
    pub digest: Digest,
    pub sc: Scenario,
    pub base: Instant,
    pub t: Duration,
    pub mailbox: SimMailbox,
    pub shared: Shared,
    pub pubsub: PubSub,
    pub server_hooks: Arc<Vec<DisconnectHook>>,
    pub links: Vec<Link>,
    pub udp_server: SimUdp,
    pub udp_addr: SocketAddr,
    pub udp_clients: Vec<UdpClient>,
    pub air: Air,
    pub timers: BTreeSet<(Instant, Timer)>,
    pub next_sweep: Instant,
    pub calls: Calls,
    pub next_tag: u64,
    /// Publications queued on a server connection: (server connection, tag).
    pub queued_pubs: BTreeSet<((usize, u64), u64)>,
    pub violations: Vec<String>,
    pub tally: Tally,
    pub trace: bool,
    /// Largest `backlog_bytes - max_send_queue_bytes` seen.
    pub peak_over: usize,
    pub draining_since: Option<Duration>,
}

/// The grace a draining server gives its connections.
pub const GRACE: Duration = Duration::from_secs(3);

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let sc = Scenario::draw(&mut rng);
        let base = Instant::now();
        let mailbox = SimMailbox::claim(1 << 16);
        let shared = Shared::default();
        let pubsub = PubSub::new();
        let mut router = server_router(&shared, sc.call_timeout);
        let hook = ringrpc::simulation::add_pubsub(&mut router, &pubsub);
        let server_hooks = Arc::new(vec![hook]);
        let server_router = Arc::new(router);
        let client_router = Arc::new(client_router(&shared));
        let mut links = Vec::new();
        for (i, plan) in sc.links.iter().enumerate() {
            let serial = i as u64 + 1;
            let server_info = ConnInfo {
                id: conn_id(0, serial),
                peer: peer_addr(i as u16),
                unix: false,
                tls: None,
            };
            let client_info = ConnInfo {
                id: conn_id(1, serial),
                peer: SocketAddr::from(([10, 9, 9, 9], 8888)),
                unix: false,
                tls: None,
            };
            let server = SimConn::new(
                server_info,
                &sc.config(plan.framing),
                server_router.clone(),
                &mailbox,
                server_hooks.clone(),
                base,
            );
            let client_cfg = ringrpc::simulation::SimConfig {
                idle_timeout: None,
                read_timeout: None,
                max_in_flight: 4096,
                streams: StreamLimits::default(),
                // As `ReactorSettings::client`.
                pause_reading: false,
                ..sc.config(SimFraming::Arpc)
            };
            let client = SimConn::new(
                client_info,
                &client_cfg,
                client_router.clone(),
                &mailbox,
                Arc::new(Vec::new()),
                base,
            );
            let mut up = Pipe::default();
            let ws = (plan.transport == Transport::WebSocket).then(|| {
                up.push(
                    Duration::ZERO,
                    plan.up_latency,
                    ws::upgrade_request(seed ^ serial),
                );
                WsClient::default()
            });
            links.push(Link {
                up_latency: plan.up_latency,
                down_latency: plan.down_latency,
                capacity: plan.capacity,
                server: Side::new(server),
                client: Side::new(client),
                up,
                down: Pipe::default(),
                ws,
                faulted: false,
                corrupted: false,
                streams: Vec::new(),
                started: 0,
                completed: Arc::default(),
                notify_drops: 0,
            });
        }
        let udp_limits = SimUdpLimits {
            max_datagram: 1472,
            max_body: 1 << 20,
            dedup_window: sc.dedup_window,
            dedup_capacity: sc.dedup_capacity,
            max_peers: 65_536,
            max_in_flight_per_peer: sc.max_in_flight,
        };
        let udp_server = SimUdp::new(0, &udp_limits, server_router.clone(), &mailbox);
        let udp_clients = (0..sc.udp_clients)
            .map(|i| UdpClient {
                core: SimUdp::new(10 + i as u16, &udp_limits, client_router.clone(), &mailbox),
                addr: SocketAddr::from(([10, 1, 0, i as u8 + 1], 5000)),
            })
            .collect();
        let air = Air {
            loss_per_mille: sc.udp_loss_per_mille,
            dup_per_mille: sc.udp_dup_per_mille,
            max_delay: Duration::from_millis(rng.range(0, 100)),
            ..Air::default()
        };
        let next_sweep = base + sc.dedup_window;
        World {
            rng,
            digest: Digest::default(),
            sc,
            base,
            t: Duration::ZERO,
            mailbox,
            shared,
            pubsub,
            server_hooks,
            links,
            udp_server,
            udp_addr: SocketAddr::from(([10, 9, 9, 9], 7777)),
            udp_clients,
            air,
            timers: BTreeSet::new(),
            next_sweep,
            calls: Calls::default(),
            next_tag: 1,
            queued_pubs: BTreeSet::new(),
            violations: Vec::new(),
            tally: Tally::default(),
            trace,
            peak_over: 0,
            draining_since: None,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + self.t
    }

    pub fn violation(&mut self, what: String) {
        if self.trace {
            eprintln!("[{:?}] VIOLATION {what}", self.t);
        }
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    pub fn note(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>10.3?}] {}", self.t, what());
        }
    }

    /// Moves the clock: mostly by little, sometimes to the next deadline, rarely a jump.
    fn advance_clock(&mut self) {
        let dt = match self.rng.below(100) {
            0..=59 => Duration::from_micros(self.rng.below(2_000)),
            60..=89 => Duration::from_micros(self.rng.range(2_000, 50_000)),
            90..=97 => Duration::from_millis(self.rng.range(50, 500)),
            _ if self.sc.clock_jumps && self.rng.percent(30) => {
                self.tally.faults += 1;
                for link in &mut self.links {
                    link.faulted = true;
                }
                Duration::from_secs(self.rng.range(1, 120))
            }
            _ => {
                // Straight to the next deadline, unless bytes are still moving.
                let gap = self.next_deadline_gap().unwrap_or(Duration::from_millis(5));
                if self.network_busy() {
                    gap.min(Duration::from_millis(50))
                } else {
                    gap
                }
            }
        };
        self.t += dt;
        self.shared.lock().now_ms = self.t.as_millis() as u64;
        self.digest.num(self.t.as_nanos() as u64);
    }

    /// Bytes or datagrams are on their way, or a send waits.
    fn network_busy(&self) -> bool {
        !self.air.queue.is_empty()
            || self
                .links
                .iter()
                .any(|l| l.up.len > 0 || l.down.len > 0 || l.server.sending || l.client.sending)
    }

    /// Time to the earliest deadline of any connection or call.
    fn next_deadline_gap(&self) -> Option<Duration> {
        let now = self.now();
        let conns = self
            .links
            .iter()
            .flat_map(|l| [&l.server, &l.client])
            .filter_map(|s| s.conn.next_deadline());
        let calls = self.timers.iter().map(|(at, _)| *at);
        conns
            .chain(calls)
            .map(|at| at.saturating_duration_since(now))
            .min()
    }

    /// Fires every call and datagram timer that is due, and the datagram sweep.
    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Client(l, seq) => self.links[l].client.conn.expire_call(seq, now),
                Timer::Server(l, seq) => self.links[l].server.conn.expire_call(seq, now),
                Timer::Udp(c, seq) => {
                    if let Some(next) = self.udp_clients[c].core.on_call_timer(now, seq) {
                        self.timers.insert((next, Timer::Udp(c, seq)));
                    }
                }
            }
        }
        if now >= self.next_sweep {
            let (next, forgotten) = self.udp_server.sweep(now);
            for info in forgotten {
                for hook in self.server_hooks.iter() {
                    hook(&info, &ringrpc::DisconnectReason::Closed);
                }
            }
            self.next_sweep = next;
        }
    }

    /// One step of the world; `workload`: the clients may start new work.
    pub fn step(&mut self, workload: bool) {
        self.tally.steps += 1;
        self.advance_clock();
        self.fire_timers();
        if workload {
            let ops = self.rng.below(3);
            for _ in 0..ops {
                self.workload_op();
            }
        }
        self.answer_responders(!workload);
        self.pump_streams(!workload);
        let mut order: Vec<usize> = (0..self.links.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        for li in order {
            self.link_io(li);
        }
        self.datagrams();
        if workload {
            self.faults();
        }
        self.take_mail();
        self.poll_all();
        self.take_mail();
        self.check_bounds();
    }

    /// Applies every message posted so far (applying one may post more).
    pub fn take_mail(&mut self) {
        let now = self.now();
        while let Some(mail) = self.mailbox.take() {
            let Some(id) = mail.conn() else {
                continue;
            };
            if SimUdp::owns(id) {
                let udp = if id.core() == 0 {
                    &mut self.udp_server
                } else {
                    &mut self.udp_clients[id.core() - 10].core
                };
                let _ = udp.apply(mail);
                continue;
            }
            let li = self
                .links
                .iter()
                .position(|l| l.server.conn.info().id == id || l.client.conn.info().id == id)
                .expect("mail for a connection of this world");
            let server = self.links[li].server.conn.info().id == id;
            let publication = mail.frame().and_then(publication_tag);
            let is_notify = matches!(mail.kind(), "notify" | "notify-counted");
            let link = &mut self.links[li];
            let side = if server {
                &mut link.server
            } else {
                &mut link.client
            };
            let applied = mail.apply(Some(&mut side.conn), now);
            if applied.dropped && server {
                link.notify_drops += 1;
            }
            if let (true, false, Some(tag)) = (server && is_notify, applied.dropped, publication) {
                self.queued_pubs.insert((crate::ledger::key(id), tag));
            }
            if let Some((seq, deadline)) = applied.call {
                let timer = if server {
                    Timer::Server(li, seq)
                } else {
                    Timer::Client(li, seq)
                };
                self.timers.insert((deadline, timer));
            }
        }
    }

    /// Polls every live connection and carries out what it asks.
    fn poll_all(&mut self) {
        for li in 0..self.links.len() {
            for server in [true, false] {
                self.poll_side(li, server);
            }
        }
    }

    /// Memory stays within the configured bounds.
    fn check_bounds(&mut self) {
        let limit = self.sc.max_send_queue_bytes;
        // Past the limit the recv is cancelled, but completions already reaped are
        // decoded, each up to a 64 KiB buffer or a whole large frame, and echoed.
        let slack = 8 * 65_536 + 2 * (self.sc.max_payload + 1024);
        let max_frame = self.sc.max_payload + 1024 + 16 + 127 + 14 + 4096;
        let mut problems = Vec::new();
        for (li, link) in self.links.iter().enumerate() {
            let server: SimGauges = link.server.conn.gauges();
            if server.backlog_bytes > limit {
                self.peak_over = self.peak_over.max(server.backlog_bytes - limit);
            }
            if server.backlog_bytes > limit + slack {
                problems.push(format!(
                    "link {li}: server backlog {} bytes, limit {limit} + slack {slack}",
                    server.backlog_bytes
                ));
            }
            if server.answers_owed > self.sc.max_in_flight {
                problems.push(format!(
                    "link {li}: {} answers owed, limit {}",
                    server.answers_owed, self.sc.max_in_flight
                ));
            }
            if server.streams_open > self.sc.streams.max_streams {
                problems.push(format!(
                    "link {li}: {} streams open, limit {}",
                    server.streams_open, self.sc.streams.max_streams
                ));
            }
            let client = link.client.conn.gauges();
            let completed = link.completed.load(std::sync::atomic::Ordering::Relaxed);
            if link.client.live() && client.calls_pending as u64 != link.started - completed {
                problems.push(format!(
                    "link {li}: the client holds {} pending calls; {} started, {completed} completed",
                    client.calls_pending, link.started
                ));
            }
            // Over WebSocket: a partial arpc frame plus the next message's partial frame.
            let bound = if link.ws.is_some() {
                2 * max_frame
            } else {
                max_frame
            };
            for (who, g) in [("server", server), ("client", client)] {
                if g.partial_len > bound.max(1 << 16) {
                    problems.push(format!(
                        "link {li}: {who} holds a {}-byte partial frame",
                        g.partial_len
                    ));
                }
            }
        }
        let (cached, _) = self.udp_server.gauges();
        if cached > self.sc.dedup_capacity {
            problems.push(format!(
                "udp dedup cache {cached} > capacity {}",
                self.sc.dedup_capacity
            ));
        }
        self.tally.checks += 1;
        for p in problems {
            self.violation(p);
        }
    }

    /// Every connection released, no call pending: the world has settled.
    pub fn all_released(&self) -> bool {
        self.links
            .iter()
            .all(|l| !l.server.live() && !l.client.live())
    }
}

/// The tag a publication's Notify carries (its topic data), if the frame is one.
fn publication_tag(frame: &[u8]) -> Option<u64> {
    let method_len = *frame.get(7)? as usize;
    let method = frame.get(16..16 + method_len)?;
    if method != b"in_P" {
        return None;
    }
    let topic = ringrpc_protocol::TopicRef::parse(frame.get(16 + method_len..)?).ok()?;
    Some(crate::ledger::tag_of(topic.data))
}

impl World {
    /// Records a pub/sub release in the log (the hook just forgot the connection).
    pub fn log_release(&mut self, id: ringrpc::ConnId) {
        self.shared.lock().pubsub.push(PubEvent::Released(id));
    }
}
