//! The datagram transport's sans-IO core: one arpc frame per datagram in, dispatched through
//! the same router as stream connections, answers and calls out as datagrams, with the
//! reliability the transport lacks — retries on the calling side, duplicate suppression on
//! the answering side.
//!
//! Each peer address is a pseudo-connection (a [`ConnId`] with [`UDP_SLOT`] set), so
//! handlers, `ConnHandle`s and `Responder`s work unchanged: their messages reach the reactor's
//! mailbox and come back here.
//!
//! Invariants:
//! - A datagram that is not exactly one valid frame is dropped and counted, never an error
//!   for anyone else; nothing a peer sends can panic the core.
//! - A request runs at most once per `(peer, seq)` within the dedup window; a retry of an
//!   answered one is answered from the cache, a retry of a running one is dropped.
//! - Memory is bounded: peers (`max_peers`), cached requests (`dedup_capacity`), pending
//!   calls (each ends at its deadline, precisely, through the reactor's deadline heap —
//!   nothing is left behind after a timeout). A peer is forgotten once quiet for the dedup
//!   window with nothing in flight, and what the engine keeps for it elsewhere (pub/sub's
//!   authentication) goes with it: its id is handed to the engine's own disconnect hooks.
//! - Every outgoing frame fits `max_datagram`; a bigger one is refused at the sender.
//! - A call's seq carries its core in the top 16 bits, so a Response that reached another
//!   core's socket is forwarded to the core that waits for it.

pub(crate) mod endpoint;
pub(crate) mod limits;

mod dedup;
mod stats;

use foldhash::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::{Command, Flags, FrameRef, HEADER_LEN, parse_frame, write_frame};
use slab::Slab;

use crate::conn::responder::Deferred;
use crate::error::{CallError, TOO_MANY_IN_FLIGHT};
use crate::executor::contain::{CALL_DONE, contain};
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::{CallDone, Mailbox};
use crate::router::Router;
use crate::transport::outqueue::OutQueue;
#[cfg(test)]
use crate::udp::limits::DEFAULT_MAX_DATAGRAM;
pub(crate) use crate::udp::limits::{Retry, UdpLimits};
use dedup::{Admit, Dedup};
pub use stats::UdpStats;

/// Set in a [`ConnId`]'s slot for a datagram peer.
pub(crate) const UDP_SLOT: u32 = crate::ids::DATAGRAM_SLOT_BIT;
struct Peer {
    addr: SocketAddr,
    serial: u64,
    last_seen: Instant,
    /// Requests answered later by a responder, not yet answered.
    in_flight: Deferred,
    /// Rate-limit tokens left, refilled with time.
    tokens: f64,
}

struct PendingCall {
    peer: SocketAddr,
    frame: Bytes,
    attempts: u32,
    max_attempts: u32,
    wait: Duration,
    next_resend: Instant,
    deadline: Instant,
    done: CallDone,
}

impl PendingCall {
    fn next_timer(&self) -> Instant {
        if self.attempts < self.max_attempts {
            self.next_resend.min(self.deadline)
        } else {
            self.deadline
        }
    }
}

/// A Response that arrived at this core for a call another core made.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) core: usize,
    pub(crate) peer: SocketAddr,
    pub(crate) frame: Bytes,
}

/// One core's datagram endpoint state.
pub(crate) struct UdpCore {
    core: u16,
    limits: UdpLimits,
    peers: Slab<Peer>,
    by_addr: HashMap<SocketAddr, usize>,
    serial: u64,
    dedup: Dedup,
    calls: HashMap<u64, PendingCall>,
    next_call: u64,
    scratch: OutQueue,
    /// Datagrams to send this tick.
    pub(crate) out: Vec<(SocketAddr, Bytes)>,
    /// Timers of calls started since the reactor last took them.
    new_timers: Vec<(u64, Instant)>,
    pub(crate) stats: UdpStats,
}

impl std::fmt::Debug for UdpCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpCore")
            .field("core", &self.core)
            .field("peers", &self.peers.len())
            .field("calls", &self.calls.len())
            .field("cached", &self.dedup.len())
            .finish()
    }
}

/// The seq a Response answers, read from an encoded frame.
fn frame_seq(frame: &[u8]) -> Option<u64> {
    frame
        .get(8..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn encode(cmd: Command, flags: Flags, seq: u64, method: &[u8], payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + method.len() + payload.len());
    write_frame(&mut buf, cmd, flags, 0, seq, method, payload);
    buf.freeze()
}

impl UdpCore {
    pub(crate) fn new(core: u16, limits: UdpLimits) -> UdpCore {
        UdpCore {
            core,
            dedup: Dedup::new(limits.dedup_window, limits.dedup_capacity),
            limits,
            peers: Slab::new(),
            by_addr: HashMap::default(),
            serial: 0,
            calls: HashMap::default(),
            next_call: 0,
            scratch: OutQueue::default(),
            out: Vec::new(),
            new_timers: Vec::new(),
            stats: UdpStats::default(),
        }
    }

    /// Whether `id` names a datagram peer (rather than a stream connection).
    pub(crate) fn owns(id: ConnId) -> bool {
        id.is_datagram()
    }

    fn info(&self, idx: usize) -> ConnInfo {
        let peer = &self.peers[idx];
        ConnInfo::new(
            ConnId {
                core: self.core,
                slot: idx as u32 | UDP_SLOT,
                serial: peer.serial,
            },
            peer.addr,
        )
    }

    /// The peer table entry for `addr`, made if there is room; a known peer's rate-limit
    /// tokens are refilled for the time since it was last seen.
    fn peer(&mut self, now: Instant, addr: SocketAddr) -> Option<usize> {
        if let Some(&idx) = self.by_addr.get(&addr) {
            let peer = &mut self.peers[idx];
            if let Some(rate) = self.limits.peer_rate {
                let rate = f64::from(rate);
                let quiet = now.saturating_duration_since(peer.last_seen).as_secs_f64();
                peer.tokens = (peer.tokens + quiet * rate).min(rate);
            }
            peer.last_seen = now;
            return Some(idx);
        }
        if self.peers.len() >= self.limits.max_peers {
            return None;
        }
        self.serial += 1;
        let idx = self.peers.insert(Peer {
            addr,
            serial: self.serial,
            last_seen: now,
            in_flight: Deferred::default(),
            tokens: self.limits.peer_rate.map_or(0.0, f64::from),
        });
        self.by_addr.insert(addr, idx);
        Some(idx)
    }

    /// Takes one of peer `idx`'s rate-limit tokens; `false` when it has none left.
    fn take_token(&mut self, idx: usize) -> bool {
        if self.limits.peer_rate.is_none() {
            return true;
        }
        let peer = &mut self.peers[idx];
        if peer.tokens < 1.0 {
            return false;
        }
        peer.tokens -= 1.0;
        true
    }

    fn push(&mut self, peer: SocketAddr, frame: Bytes) {
        self.out.push((peer, frame));
    }

    /// Queues `frame` for `peer` if it fits a datagram; else counts and drops it.
    fn push_checked(&mut self, peer: SocketAddr, frame: Bytes) -> Result<(), CallError> {
        if frame.len() > self.limits.max_datagram {
            return Err(CallError::TooLarge {
                size: frame.len(),
                max: self.limits.max_datagram,
            });
        }
        self.push(peer, frame);
        Ok(())
    }

    /// One received datagram. Returns a Response to forward when it answers a call another
    /// core made.
    pub(crate) fn on_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        router: &Router,
        mailbox: &Arc<Mailbox>,
    ) -> Option<Forward> {
        self.stats.datagrams_in += 1;
        let frame = match parse_frame(data, self.limits.max_body) {
            Ok(Some((frame, len))) if len == data.len() => frame,
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        match frame.header.cmd {
            Command::Request | Command::Notify => self.on_call(now, from, &frame, router, mailbox),
            Command::Response => {
                let seq = frame.header.seq;
                let owner = (seq >> 48) as usize;
                if owner != self.core as usize {
                    return Some(Forward {
                        core: owner,
                        peer: from,
                        frame: Bytes::copy_from_slice(data),
                    });
                }
                self.on_response(from, &frame);
            }
            Command::Ping => {
                let pong = encode(Command::Pong, Flags::default(), 0, &[], &[]);
                self.push(from, pong);
            }
            Command::Pong | Command::Stream => {}
        }
        None
    }

    fn on_call(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &FrameRef<'_>,
        router: &Router,
        mailbox: &Arc<Mailbox>,
    ) {
        let Some(idx) = self.peer(now, from) else {
            self.stats.refused += 1;
            return;
        };
        if !self.take_token(idx) {
            self.stats.rate_limited += 1;
            return;
        }
        let h = frame.header;
        let is_request = h.cmd == Command::Request;
        if is_request {
            match self.dedup.admit(now, from, h.seq) {
                Admit::Run => {}
                Admit::Running => {
                    self.stats.duplicates += 1;
                    return;
                }
                Admit::Resend(answer) => {
                    self.stats.duplicates += 1;
                    self.push(from, answer);
                    return;
                }
                Admit::Stale => {
                    self.stats.duplicates += 1;
                    self.stats.stale += 1;
                    return;
                }
            }
            if self.peers[idx].in_flight.count() >= self.limits.max_in_flight_per_peer {
                self.stats.refused += 1;
                let flags = Flags(Flags::ERROR | (h.flags.0 & Flags::ASYNC));
                let msg = TOO_MANY_IN_FLIGHT.as_bytes();
                let answer = encode(Command::Response, flags, h.seq, frame.method, msg);
                self.answer(from, h.seq, answer);
                return;
            }
        } else if self.peers[idx].in_flight.count() >= self.limits.max_in_flight_per_peer
            && router.is_blocking(frame.method)
        {
            // A Notify to the blocking pool would hold a place too: dropped.
            self.stats.refused += 1;
            return;
        }
        if is_request {
            self.stats.requests += 1;
        } else {
            self.stats.notifies += 1;
        }
        let info = self.info(idx);
        // Out of the peer for the dispatch (which borrows `scratch`), back right after.
        let in_flight = std::mem::take(&mut self.peers[idx].in_flight);
        // Per-method metrics count TCP and WebSocket requests; UDP has its own counters.
        let mut unmetered = crate::observe::methods::MethodMetrics::default();
        router.dispatch(
            frame,
            None,
            None,
            &info,
            mailbox,
            &in_flight,
            &mut self.scratch,
            &mut unmetered,
        );
        self.peers[idx].in_flight = in_flight;
        if self.scratch.is_empty() {
            return; // a Notify, or answered later through a responder
        }
        let mut batch = Vec::new();
        self.scratch.take_batch(&mut batch);
        let answer: Bytes = match batch.as_slice() {
            [one] => one.clone(),
            many => many.concat().into(),
        };
        self.scratch.sent(&mut batch, answer.len());
        self.answer(from, h.seq, answer);
    }

    /// Sends a Response (now or from a responder), caching it against retries; one too big
    /// for a datagram becomes an error Response saying so.
    fn answer(&mut self, peer: SocketAddr, seq: u64, mut frame: Bytes) {
        if frame.len() > self.limits.max_datagram {
            frame = self.too_large_answer(&frame, seq);
        }
        self.dedup.answered(peer, seq, frame.clone());
        self.push(peer, frame);
    }

    /// The error Response sent instead of an answer over the datagram limit; it fits the
    /// limit itself (at least 64 bytes): a shorter text, then no method, when need be.
    fn too_large_answer(&self, frame: &[u8], seq: u64) -> Bytes {
        let method_len = frame.get(7).copied().unwrap_or(0) as usize;
        let mut method = frame
            .get(HEADER_LEN..HEADER_LEN + method_len)
            .unwrap_or_default();
        let flags = Flags(Flags::ERROR | (frame.get(6).copied().unwrap_or(0) & Flags::ASYNC));
        let room = self.limits.max_datagram.saturating_sub(HEADER_LEN);
        let mut text = format!(
            "response of {} bytes does not fit one datagram (max {})",
            frame.len(),
            self.limits.max_datagram
        );
        if method.len() + text.len() > room {
            text = "response too large for one datagram".to_owned();
        }
        if method.len() + text.len() > room {
            method = &[];
        }
        text.truncate(room);
        encode(Command::Response, flags, seq, method, text.as_bytes())
    }

    fn on_response(&mut self, from: SocketAddr, frame: &FrameRef<'_>) {
        let seq = frame.header.seq;
        match self.calls.get(&seq) {
            Some(call) if call.peer == from => {}
            _ => {
                self.stats.stray_responses += 1;
                return;
            }
        }
        let Some(call) = self.calls.remove(&seq) else {
            return;
        };
        let outcome = if frame.header.flags.is_error() {
            Err(CallError::Remote(
                String::from_utf8_lossy(frame.payload).into_owned(),
            ))
        } else {
            Ok(Bytes::copy_from_slice(frame.payload))
        };
        contain(CALL_DONE, || (call.done)(outcome));
    }

    /// A Response another core received for one of this core's calls.
    pub(crate) fn on_forwarded(&mut self, from: SocketAddr, frame: &[u8]) {
        match parse_frame(frame, self.limits.max_body) {
            Ok(Some((f, _))) => self.on_response(from, &f),
            _ => self.stats.malformed += 1,
        }
    }

    /// A responder's (or handle's) frame for datagram peer `id`: Responses are cached
    /// against retries. Dropped if the peer is gone.
    pub(crate) fn send_to_peer(&mut self, id: ConnId, frame: Bytes, is_answer: bool) {
        let idx = (id.slot & !UDP_SLOT) as usize;
        let Some(peer) = self.peers.get(idx).filter(|p| p.serial == id.serial) else {
            return;
        };
        let addr = peer.addr;
        if is_answer {
            peer.in_flight.answered();
            if let Some(seq) = frame_seq(&frame) {
                self.answer(addr, seq, frame);
            }
        } else if self.push_checked(addr, frame).is_err() {
            self.stats.send_errors += 1;
        }
    }

    /// An async handler of a Notify from datagram peer `id` finished: its in-flight slot
    /// is free.
    pub(crate) fn settle(&mut self, id: ConnId) {
        let idx = (id.slot & !UDP_SLOT) as usize;
        if let Some(peer) = self.peers.get(idx).filter(|p| p.serial == id.serial) {
            peer.in_flight.answered();
        }
    }

    /// The address of datagram peer `id`, if known.
    pub(crate) fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let idx = (id.slot & !UDP_SLOT) as usize;
        self.peers
            .get(idx)
            .filter(|p| p.serial == id.serial)
            .map(|p| p.addr)
    }

    /// A Notify to any address.
    pub(crate) fn notify(&mut self, peer: SocketAddr, frame: Bytes) -> Result<(), CallError> {
        self.push_checked(peer, frame)
    }

    /// Starts a call to `peer`; returns its seq and first timer, or `None` if it failed at
    /// once (`done` has run).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        method: &[u8],
        payload: &[u8],
        timeout: Duration,
        retry: Option<Retry>,
        done: CallDone,
    ) -> Option<(u64, Instant)> {
        self.next_call = (self.next_call + 1) & ((1 << 48) - 1);
        let seq = (u64::from(self.core) << 48) | self.next_call;
        let frame = encode(Command::Request, Flags::default(), seq, method, payload);
        if let Err(e) = self.push_checked(peer, frame.clone()) {
            contain(CALL_DONE, || done(Err(e)));
            return None;
        }
        self.stats.calls += 1;
        let retry = retry.unwrap_or(Retry {
            first_after: timeout,
            max_attempts: 1,
        });
        let call = PendingCall {
            peer,
            frame,
            attempts: 1,
            max_attempts: retry.max_attempts.max(1),
            wait: retry.first_after,
            next_resend: now + retry.first_after,
            deadline: now + timeout,
            done,
        };
        let at = call.next_timer();
        self.calls.insert(seq, call);
        self.new_timers.push((seq, at));
        Some((seq, at))
    }

    /// Timers of the calls started since the last call, for the reactor's deadline heap.
    pub(crate) fn take_new_timers(&mut self) -> std::vec::Drain<'_, (u64, Instant)> {
        self.new_timers.drain(..)
    }

    /// Call `seq`'s timer came due: resend it, or time it out. Returns its next timer.
    pub(crate) fn on_call_timer(&mut self, now: Instant, seq: u64) -> Option<Instant> {
        let call = self.calls.get_mut(&seq)?;
        if now >= call.deadline {
            let call = self.calls.remove(&seq)?;
            self.stats.timeouts += 1;
            contain(CALL_DONE, || (call.done)(Err(CallError::Timeout)));
            return None;
        }
        if call.attempts < call.max_attempts && now >= call.next_resend {
            call.attempts += 1;
            call.wait *= 2;
            call.next_resend = now + call.wait;
            let (peer, frame) = (call.peer, call.frame.clone());
            let at = call.next_timer();
            self.stats.retries += 1;
            self.push(peer, frame);
            return Some(at);
        }
        Some(call.next_timer())
    }

    /// Forgets peers quiet for longer than the dedup window with nothing in flight, and
    /// expired cache entries; returns when to sweep next, and the peers forgotten (the
    /// reactor tells the engine's own disconnect hooks: a datagram peer has no other end).
    pub(crate) fn sweep(&mut self, now: Instant) -> (Instant, Vec<ConnInfo>) {
        self.dedup.expire(now);
        let window = self.limits.dedup_window;
        let stale: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                now.saturating_duration_since(p.last_seen) >= window && p.in_flight.count() == 0
            })
            .map(|(idx, _)| idx)
            .collect();
        let mut forgotten = Vec::with_capacity(stale.len());
        for idx in stale {
            forgotten.push(self.info(idx));
            let peer = self.peers.remove(idx);
            self.by_addr.remove(&peer.addr);
            self.dedup.forget(&peer.addr);
        }
        (now + window, forgotten)
    }

    /// Whether call `seq` still waits for its Response.
    pub(crate) fn has_call(&self, seq: u64) -> bool {
        self.calls.contains_key(&seq)
    }

    /// Fails every pending call (shutdown).
    pub(crate) fn fail_calls(&mut self) {
        for (_, call) in self.calls.drain() {
            contain(CALL_DONE, || (call.done)(Err(CallError::Disconnected)));
        }
    }

    /// Calls waiting for a Response.
    pub(crate) fn calls_pending(&self) -> usize {
        self.calls.len()
    }

    /// Requests cached for duplicate suppression.
    pub(crate) fn cached(&self) -> usize {
        self.dedup.len()
    }
}

#[cfg(test)]
mod tests;
