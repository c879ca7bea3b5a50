//! The `udp` fuzz check: datagrams from a few peers, at fuzzed times, through one core's
//! datagram endpoint (`UdpCore`) with the built-in routes and a deferred one.
//!
//! Input: byte 0 picks the limits (bits 0–1: dedup capacity 1, 4, 64 or 4096; bit 2: one
//! answer in flight per peer instead of many; bit 3: a 64-byte datagram limit; bit 4: a
//! peer table of 2). Then items, each `[op][dt][...]`: `dt` advances the clock by `dt`²
//! ms; `op`'s low two bits name the peer; bits 2–3 the kind: 0 raw `[len][len bytes]` as
//! one datagram, 1 a Request built from `[seq][method][len][len bytes]` (method one of
//! `/echo`, `/defer`, `/nope`, `in_P`), 2 answer the oldest deferred request, 3 the
//! periodic sweep. A peer's Response naming another core (the seq's top 16 bits) must be
//! handed back to forward there, unchanged; nothing else is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_protocol::{Command, Frame, parse_frame};

use crate::Responder;
use crate::reactor::mailbox::{Command as Mail, Mailbox};
use crate::router::{Context, Flow, Middleware, Router};
use crate::udp::{UdpCore, UdpLimits};

/// What one input did.
#[derive(Debug, Default)]
pub struct UdpOutcome {
    /// Datagrams the core sent.
    pub sent: usize,
    /// Requests its handlers ran.
    pub ran: usize,
}

/// Requests dispatched, by (peer, seq), in order.
type Runs = Arc<Mutex<Vec<(SocketAddr, u64)>>>;

struct Count(Runs);

impl Middleware for Count {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        if !ctx.is_notify() {
            let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
            runs.push((ctx.peer(), ctx.seq()));
        }
        Flow::Continue
    }
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n & 3], 9000 + u16::from(n & 3)))
}

/// Runs the check; panics on any violation.
pub fn check_udp(data: &[u8]) -> UdpOutcome {
    let (&flags, mut items) = data.split_first().unwrap_or((&0, &[]));
    let limits = UdpLimits {
        max_datagram: if flags & 8 != 0 { 64 } else { 1472 },
        max_body: 1 << 16,
        dedup_window: Duration::from_secs(2),
        dedup_capacity: [1, 4, 64, 4096][usize::from(flags & 3)],
        max_peers: if flags & 16 != 0 { 2 } else { 64 },
        max_in_flight_per_peer: if flags & 4 != 0 { 1 } else { 64 },
        peer_rate: None,
    };
    let runs: Runs = Arc::default();
    let deferred: Arc<Mutex<Vec<Responder>>> = Arc::default();
    let mut router = Router::with_builtins();
    router.add_middleware(Count(runs.clone()));
    let held = deferred.clone();
    router
        .add("/defer", move |ctx: &mut Context<'_>| {
            if let Some(r) = ctx.responder() {
                held.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            }
        })
        .expect("a valid route");
    let mailbox = Arc::new(Mailbox::new(1 << 16));
    let mut core = UdpCore::new(0, limits.clone());
    let start = Instant::now();
    let mut now = start;
    let mut outcome = UdpOutcome::default();
    let mut fed = 0u64;
    let mut malformed = 0u64;
    // Per peer, the seqs of Requests sent and not refused as malformed.
    let mut asked: HashMap<SocketAddr, Vec<u64>> = HashMap::new();
    // How many times each peer was forgotten by a sweep, and at which of those counts each
    // (peer, seq) last ran: a request may run again only after its peer was forgotten.
    let mut forgotten: HashMap<SocketAddr, u64> = HashMap::new();
    let mut last_run: HashMap<(SocketAddr, u64), u64> = HashMap::new();
    let mut checked = 0;
    while let [op, dt, rest @ ..] = items {
        now += Duration::from_millis(u64::from(*dt) * u64::from(*dt));
        let from = peer(*op);
        items = rest;
        let datagram: Option<Vec<u8>> = match (op >> 2) & 3 {
            0 => {
                let (len, rest) = items.split_first().map_or((0, items), |(l, r)| (*l, r));
                let len = usize::from(len).min(rest.len());
                items = &rest[len..];
                Some(rest[..len].to_vec())
            }
            1 => {
                let [seq, method, len, rest @ ..] = items else {
                    break;
                };
                let len = usize::from(*len).min(rest.len());
                let method = ["/echo", "/defer", "/nope", "in_P"][usize::from(method & 3)];
                let f = Frame::request(
                    u64::from(*seq),
                    method,
                    Bytes::copy_from_slice(&rest[..len]),
                );
                items = &rest[len..];
                Some(f.to_bytes().to_vec())
            }
            2 => {
                let first = {
                    let mut d = deferred.lock().unwrap_or_else(|e| e.into_inner());
                    (!d.is_empty()).then(|| d.remove(0))
                };
                if let Some(r) = first {
                    r.reply(b"later");
                }
                None
            }
            _ => {
                for info in core.sweep(now).1 {
                    *forgotten.entry(info.peer).or_default() += 1;
                }
                None
            }
        };
        if let Some(d) = datagram {
            fed += 1;
            // A whole Response whose seq names another core (its top 16 bits) goes there.
            let mut owner = None;
            match parse_frame(&d, limits.max_body) {
                Ok(Some((f, len))) if len == d.len() => {
                    if f.header.cmd == Command::Request {
                        asked.entry(from).or_default().push(f.header.seq);
                    }
                    let core_of_seq = (f.header.seq >> 48) as usize;
                    if f.header.cmd == Command::Response && core_of_seq != 0 {
                        owner = Some(core_of_seq);
                    }
                }
                _ => malformed += 1,
            }
            let forward = core.on_datagram(now, from, &d, &router, &mailbox);
            match (forward, owner) {
                (None, None) => {}
                (Some(f), Some(owner)) => {
                    assert_eq!(f.core, owner, "forwarded to the wrong core");
                    assert_eq!((f.peer, &f.frame[..]), (from, &d[..]), "forwarded altered");
                }
                (f, owner) => panic!("forwarded to {:?}, owner {owner:?}", f.map(|f| f.core)),
            }
        }
        // Answers the responders posted, as reactor::mail does.
        for cmd in mailbox.drain() {
            if let Mail::Answer { conn, frame, .. } = cmd {
                core.send_to_peer(conn, frame, true);
            }
        }
        for (to, bytes) in core.out.drain(..) {
            outcome.sent += 1;
            assert!(
                bytes.len() <= limits.max_datagram,
                "a {}-byte datagram",
                bytes.len()
            );
            let (f, len) = parse_frame(&bytes, limits.max_body)
                .expect("the core sent a malformed frame")
                .expect("the core sent part of a frame");
            assert_eq!(len, bytes.len(), "a datagram holding more than one frame");
            if f.header.cmd == Command::Response {
                let mine = asked.get(&to).is_some_and(|s| s.contains(&f.header.seq));
                assert!(
                    mine,
                    "a Response to {to} for seq {}, which it never asked",
                    f.header.seq
                );
            }
        }
        assert!(
            core.cached() <= limits.dedup_capacity,
            "the dedup cache outgrew its capacity"
        );
        let runs = runs.lock().unwrap_or_else(|e| e.into_inner());
        for &(peer, seq) in &runs[checked..] {
            let epoch = forgotten.get(&peer).copied().unwrap_or(0);
            if let Some(before) = last_run.insert((peer, seq), epoch) {
                assert!(
                    epoch > before,
                    "request {seq} of {peer} ran twice, its peer remembered between"
                );
            }
        }
        checked = runs.len();
    }
    let stats = core.stats;
    assert_eq!(stats.datagrams_in, fed);
    assert_eq!(stats.malformed, malformed);
    outcome.ran = checked;
    outcome
}
