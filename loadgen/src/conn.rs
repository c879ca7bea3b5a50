//! One client connection: keeps its request window full, checks every answer, expires timeouts.
//! How payloads go out is [`crate::payload_frame`]'s; what arrives is handled in `receive`;
//! large echoes checked as they arrive are [`crate::arriving_echo`]'s; how each answer is
//! counted is [`crate::outcome`]'s.
//!
//! Invariants:
//! - `in_flight` counts the units of outstanding requests that have not timed out.
//! - Output goes out as `segments`, then `tx`. Under TLS, `segments` holds sealed records
//!   and `tx` plaintext not yet sealed (payloads are then never sent by reference).
//! - While an echo is checked as it arrives (`incoming`), `rx` holds nothing: the echo's
//!   bytes come first in every read until it is complete.

mod receive;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use ringrpc_protocol::{Command, Flags, write_frame};

use crate::arriving_echo::Incoming;
use crate::pattern::{Pattern, write_stream_frame};
use crate::payload_frame::{self, put_payload_frame};
use crate::pubsub::publication;
use crate::tls::TlsSession;
use crate::window::{FORGET_AFTER_TIMEOUTS, Schedule, SeqHasher};
use crate::worker::{Plan, RequestWindow, WorkerState};

#[derive(Debug, Clone, Copy)]
struct Pending {
    sent_at: Instant,
    /// Sent inside the measured window, so it counts towards the totals.
    measured: bool,
    /// Already counted as a timeout; its slot in the window was reused.
    timed_out: bool,
    /// The number the payload was filled from (the seq, for calls).
    seed: u64,
    /// Units it settles: 1, or a batch of notifies behind a barrier.
    units: u32,
    /// Subscribe: the one reply arrived and matched; the end settles it.
    replied: bool,
}

impl Pending {
    fn new(sent_at: Instant, measured: bool, seed: u64) -> Pending {
        Pending {
            sent_at,
            measured,
            timed_out: false,
            seed,
            units: 1,
            replied: false,
        }
    }
}

/// A connection and the requests outstanding on it.
#[derive(Debug)]
pub(crate) struct Connection {
    id: usize,
    /// The socket while this thread does its I/O (`None` once handed to io_uring or failed).
    stream: Option<TcpStream>,
    /// Not failed.
    open: bool,
    /// Large request payloads go out by reference to the pattern, not copied into `tx`
    /// (io_uring sends take a list of segments; set by the io_uring worker).
    send_by_reference: bool,
    /// Output before `tx`: encoded bytes and pattern windows, in order.
    segments: Vec<Bytes>,
    /// A large echo arriving: checked piece by piece, never assembled in `rx`.
    incoming: Option<Incoming>,
    rx: BytesMut,
    tx: BytesMut,
    pending: HashMap<u64, Pending, BuildHasherDefault<SeqHasher>>,
    /// Requests awaiting an answer that have not timed out.
    in_flight: usize,
    next_seq: u64,
    /// `--pattern stream`: streams opened and not carrying a frame now.
    idle_streams: Vec<u64>,
    /// `--transport ws`: the server's messages, unwrapped into arpc bytes.
    ws: Option<Box<crate::ws::Unwrapper>>,
    /// Open loop: when the next request is due; `None` in the closed loop.
    schedule: Option<Schedule>,
    /// `--tls`: the connection's TLS, its handshake done.
    tls: Option<Box<TlsSession>>,
    /// Calls sent on this connection (for `--reconnect-every`).
    calls_sent: u64,
}

impl Connection {
    pub(crate) fn new(id: usize, stream: TcpStream, schedule: Option<Schedule>) -> Connection {
        Connection {
            id,
            stream: Some(stream),
            open: true,
            send_by_reference: false,
            segments: Vec::new(),
            incoming: None,
            rx: BytesMut::with_capacity(64 * 1024),
            tx: BytesMut::with_capacity(4 * 1024),
            pending: HashMap::default(),
            in_flight: 0,
            next_seq: 1,
            idle_streams: Vec::new(),
            ws: None,
            schedule,
            tls: None,
            calls_sent: 0,
        }
    }

    /// From now on, frames travel under `tls` (its handshake done).
    pub(crate) fn use_tls(&mut self, tls: Option<TlsSession>) {
        self.tls = tls.map(Box::new);
    }

    /// Under `--reconnect-every`: every call due on this connection is answered, so a new
    /// connection takes its place (not past the deadline).
    pub(crate) fn wants_reconnect(&self, now: Instant, plan: &Plan) -> bool {
        self.open
            && now < plan.deadline
            && self.in_flight == 0
            && plan.reconnect_every.is_some_and(|n| self.calls_sent >= n)
    }

    /// Goes on over a new connection: `stream` (for `--io std`; `None` when io_uring has
    /// it) under `tls`. Requests still pending had timed out; their answers cannot come.
    pub(crate) fn reopen(&mut self, stream: Option<TcpStream>, tls: Option<TlsSession>) {
        self.stream = stream;
        self.use_tls(tls);
        self.segments.clear();
        self.incoming = None;
        self.rx.clear();
        self.tx.clear();
        self.pending.clear();
        self.calls_sent = 0;
    }

    /// From now on, frames travel in WebSocket messages (the upgrade is done).
    pub(crate) fn use_websocket(&mut self) {
        self.ws = Some(Box::default());
    }

    /// `--transport ws`: wraps the frames written since `from` in WebSocket messages.
    fn seal(&mut self, from: usize) {
        if self.ws.is_some() {
            crate::ws::wrap_tail(&mut self.tx, from);
        }
    }

    /// Whether the connection is still open (not failed).
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Hands the socket to an I/O thread that drives it through io_uring (one descriptor per
    /// connection, so 10,000 connections fit under 20,000 open files); the connection stays
    /// open until it fails. `None` once it failed or was handed over.
    pub(crate) fn take_stream(&mut self) -> Option<TcpStream> {
        self.stream.take()
    }

    /// From now on, large Request payloads (not over WebSocket, whose messages wrap what `tx`
    /// holds) are sent from the pattern itself ([`payload_frame::put_call`]);
    /// [`Connection::take_output`] hands them out as segments of their own.
    pub(crate) fn send_by_reference(&mut self) {
        self.send_by_reference = self.tls.is_none();
    }

    /// Under TLS: seals what `tx` holds into records at the end of `segments`.
    fn seal_tx(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        if !self.tx.is_empty() {
            tls.seal([&self.tx[..]]);
            self.tx.clear();
        }
        if let Some(records) = tls.take_sealed() {
            self.segments.push(records);
        }
    }

    /// Encoded requests waiting to be written, appended to `batch` for a vectored send.
    pub(crate) fn take_output(&mut self, batch: &mut Vec<Bytes>) {
        self.seal_tx();
        batch.append(&mut self.segments);
        if !self.tx.is_empty() {
            batch.push(self.tx.split().freeze());
        }
    }

    /// Requests go out on a clock (`--rate`), not only as answers free the window.
    pub(crate) fn is_paced(&self) -> bool {
        self.schedule.is_some()
    }

    /// When this connection next has a request to send, if it is waiting on the clock.
    pub(crate) fn next_due(&self, plan: &Plan) -> Option<Instant> {
        let s = self.schedule?;
        (self.open && self.in_flight < plan.per_conn && s.next < plan.deadline).then_some(s.next)
    }

    /// Finished: failed, or past the deadline with nothing left to wait for.
    pub(crate) fn is_done(&self, now: Instant, plan: &Plan) -> bool {
        !self.open || (now >= plan.deadline && self.in_flight == 0)
    }

    /// Sends what is due, reads once, handles every whole frame read and refills the window.
    /// Returns whether anything happened.
    pub(crate) fn step(&mut self, now: Instant, plan: &Plan, state: &mut WorkerState) -> bool {
        let queued = self.fill_window(now, plan, state);
        let result = self
            .flush()
            .and_then(|()| self.read_and_handle(plan, state));
        match result {
            Ok(received) => queued > 0 || received,
            Err(reason) => {
                self.fail(reason, state);
                true
            }
        }
    }

    /// Queues new requests until `per_conn` are in flight (closed loop) or until none is due
    /// yet (open loop); none at or after the deadline.
    pub(crate) fn fill_window(
        &mut self,
        now: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) -> usize {
        if !self.open || now >= plan.deadline {
            return 0;
        }
        let mut queued = 0;
        let calls_allowed = plan.reconnect_every.unwrap_or(u64::MAX);
        while self.in_flight < plan.per_conn && self.calls_sent < calls_allowed {
            let sent_at = match self.schedule.as_mut() {
                None => now,
                Some(s) if s.next <= now && s.next < plan.deadline => {
                    let due = s.next;
                    s.next += s.interval;
                    due
                }
                Some(_) => break,
            };
            let measured = sent_at >= plan.measure_start;
            let from = self.tx.len();
            let units = self.queue_unit(sent_at, measured, plan, state);
            self.seal(from);
            self.in_flight += units;
            queued += units;
            if measured {
                state.counters.sent += units as u64;
            }
        }
        queued
    }

    /// Queues one unit of `plan.pattern` (see [`crate::pattern`]); returns how many units
    /// of the window it fills.
    fn queue_unit(
        &mut self,
        sent_at: Instant,
        measured: bool,
        plan: &Plan,
        state: &mut WorkerState,
    ) -> usize {
        let method = &plan.method;
        let mut next = || {
            let seq = self.next_seq;
            self.next_seq += 1;
            seq
        };
        let (key, pending) = match plan.pattern {
            Pattern::Call => {
                self.calls_sent += 1;
                let seq = next();
                payload_frame::put_call(
                    &mut self.tx,
                    &mut self.segments,
                    self.send_by_reference && self.ws.is_none(),
                    seq,
                    method,
                    &mut state.payload_buf,
                );
                (seq, Pending::new(sent_at, measured, seq))
            }
            Pattern::Stream => {
                let id = match self.idle_streams.pop() {
                    Some(id) => id,
                    None => next(),
                };
                let seed = next();
                put_payload_frame(&mut self.tx, seed, &mut state.payload_buf, |tx, payload| {
                    write_stream_frame(tx, id, method, payload, false)
                });
                (id, Pending::new(sent_at, measured, seed))
            }
            Pattern::Subscribe => {
                let id = next();
                put_payload_frame(&mut self.tx, id, &mut state.payload_buf, |tx, payload| {
                    write_stream_frame(tx, id, method, payload, true)
                });
                (id, Pending::new(sent_at, measured, id))
            }
            Pattern::Pubsub => {
                // One publication; the per-publisher seq is the Request's seq.
                let seq = next();
                let pubsub = plan
                    .pubsub
                    .as_ref()
                    .expect("a pubsub run's plan has the topic");
                publication::encode_for_plan(
                    &mut state.payload_buf,
                    pubsub,
                    self.id,
                    seq,
                    sent_at,
                    measured,
                    plan.payload_len,
                );
                let (cmd, flags) = (Command::Request, Flags::default());
                write_frame(&mut self.tx, cmd, flags, 0, seq, method, &state.payload_buf);
                (seq, Pending::new(sent_at, measured, seq))
            }
            Pattern::Notify => {
                // The whole window as one batch, then the barrier that confirms it.
                let batch = plan.per_conn - self.in_flight;
                for _ in 0..batch {
                    let seq = next();
                    let (cmd, flags) = (Command::Notify, Flags::default());
                    put_payload_frame(&mut self.tx, seq, &mut state.payload_buf, |tx, payload| {
                        write_frame(tx, cmd, flags, 0, seq, method, payload)
                    });
                }
                let barrier = next();
                let (cmd, flags) = (Command::Request, Flags::default());
                write_frame(&mut self.tx, cmd, flags, 0, barrier, method, &[]);
                let mut pending = Pending::new(sent_at, measured, barrier);
                pending.units = batch as u32;
                (barrier, pending)
            }
        };
        let units = pending.units as usize;
        self.pending.insert(key, pending);
        units
    }

    /// Writes queued bytes until done or the socket pushes back (would-block, or the blocking
    /// mode's short write timeout), so a full send buffer never stops us reading answers.
    fn flush(&mut self) -> Result<(), String> {
        if self.stream.is_none() {
            return Ok(());
        }
        if self.tls.is_some() {
            return self.flush_sealed();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while !self.tx.is_empty() {
            match stream.write(&self.tx) {
                Ok(0) => return Err("write returned 0 bytes: connection closed".into()),
                Ok(n) => self.tx.advance(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        Ok(())
    }

    /// [`Connection::flush`] under TLS: seals `tx`, then writes the records in order.
    fn flush_sealed(&mut self) -> Result<(), String> {
        self.seal_tx();
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while let Some(records) = self.segments.first_mut() {
            match stream.write(records) {
                Ok(0) => return Err("write returned 0 bytes: connection closed".into()),
                Ok(n) if n == records.len() => {
                    self.segments.remove(0);
                }
                Ok(n) => records.advance(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        Ok(())
    }

    /// One read; handles the frames it completes. Returns whether bytes arrived.
    fn read_and_handle(&mut self, plan: &Plan, state: &mut WorkerState) -> Result<bool, String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        let n = match stream.read(&mut state.read_buf) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(format!("read failed: {e}")),
        };
        // Frames that arrived in one read are stamped with one receive time.
        let received_at = Instant::now();
        let read_buf = std::mem::take(&mut state.read_buf);
        let result = self.on_received(&read_buf[..n], received_at, plan, state);
        state.read_buf = read_buf;
        result?;
        self.flush()?;
        Ok(true)
    }

    /// The answer to `seq` arrived: takes its pending unit and settles it; `Some` when its
    /// outcome is to be recorded (an answer to nothing outstanding is counted unexpected).
    fn settle_answer(&mut self, seq: u64, state: &mut WorkerState) -> Option<Pending> {
        let Some(pending) = self.pending.remove(&seq) else {
            state
                .counters
                .note_unexpected(format!("response to seq {seq}, which is not outstanding"));
            return None;
        };
        self.settle(&pending, state).then_some(pending)
    }

    /// Frees a settled unit's window slots; whether its outcome is to be recorded (not if
    /// it had timed out, or was sent before measuring).
    fn settle(&mut self, pending: &Pending, state: &mut WorkerState) -> bool {
        if pending.timed_out {
            if pending.measured {
                state.counters.late += pending.units as u64;
            }
            return false;
        }
        self.in_flight -= pending.units as usize;
        pending.measured
    }

    /// Counts requests unanswered for `plan.timeout` as timeouts and frees their window slots.
    pub(crate) fn expire(&mut self, now: Instant, plan: &Plan, state: &mut WorkerState) {
        let forget_after = plan.timeout * FORGET_AFTER_TIMEOUTS;
        let mut freed = 0;
        self.pending.retain(|_, pending| {
            let age = now.saturating_duration_since(pending.sent_at);
            if !pending.timed_out && age >= plan.timeout {
                pending.timed_out = true;
                freed += pending.units as usize;
                if pending.measured {
                    state.counters.timeouts += pending.units as u64;
                }
            }
            !(pending.timed_out && age >= forget_after)
        });
        self.in_flight -= freed;
    }

    /// At the end of the drain: whatever is still unanswered timed out.
    pub(crate) fn expire_all(&mut self, state: &mut WorkerState) {
        for pending in self.pending.values_mut().filter(|p| !p.timed_out) {
            pending.timed_out = true;
            if pending.measured {
                state.counters.timeouts += pending.units as u64;
            }
        }
        self.in_flight = 0;
    }

    /// Closes a broken connection; its measured outstanding requests are lost.
    pub(crate) fn fail(&mut self, reason: String, state: &mut WorkerState) {
        let lost: u64 = self
            .pending
            .values()
            .filter(|p| p.measured && !p.timed_out)
            .map(|p| p.units as u64)
            .sum();
        state.counters.lost += lost;
        state
            .counters
            .note_connection_failure(format!("connection {}: {reason}", self.id));
        self.pending.clear();
        self.in_flight = 0;
        self.tx.clear();
        self.incoming = None;
        self.stream = None;
        self.tls = None;
        self.open = false;
    }
}

impl RequestWindow for Connection {
    fn expire(&mut self, now: Instant, plan: &Plan, state: &mut WorkerState) {
        Connection::expire(self, now, plan, state);
    }
    fn expire_all(&mut self, state: &mut WorkerState) {
        Connection::expire_all(self, state);
    }
    fn is_done(&self, now: Instant, plan: &Plan) -> bool {
        Connection::is_done(self, now, plan)
    }
}
