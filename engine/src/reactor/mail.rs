//! What other threads ask of this reactor: notifies, answers, calls, broadcasts, stream
//! opens, sends and resumes, closes
//! (from the mailbox) and outbound connections to serve (adoptions).
//!
//! Invariants: a message for a connection that is gone is dropped harmlessly (a call fails
//! with `Disconnected`); a notify or broadcast to a connection over its send-queue limit is
//! dropped and counted rather than growing memory; a call to such a connection fails with
//! `Overstocked`; answers a responder owes are always queued (they are bounded by the
//! connection's limit of deferred requests).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Reactor;
use super::slot::Origin;
use super::timers::TimerId;
use crate::conn::call_slot::CallSlot;
use crate::conn::handle::ConnHandle;
use crate::conn::handle::encode;
use crate::error::{CallError, DisconnectReason, StreamError};
use crate::executor::contain::{CALL_DONE, contain};
use crate::ids::ConnId;
use crate::reactor::mailbox::{Command, NotifyTally};
use crate::stream::shared::StreamShared;
use crate::udp::UdpCore;

impl Reactor {
    /// Applies what other threads posted, then what this thread posted to itself.
    pub(super) fn take_mail(&mut self) {
        let mailbox = self.mailbox.clone();
        for cmd in mailbox.drain() {
            self.apply(cmd);
        }
        self.stats.mailbox_refused = mailbox.refused();
        self.take_local_mail();
        for adoption in self.shared.take_adoptions(self.id) {
            if self.draining.is_some() {
                contain("a client's closed callback", || {
                    (adoption.closed)(&DisconnectReason::Shutdown)
                });
                continue;
            }
            let idx = self.open_conn(
                adoption.stream,
                adoption.policy,
                Origin::Adopted(adoption.tls),
            );
            let slot = &mut self.conns[idx];
            slot.on_close = Some(Box::new(adoption.closed));
            let handle = ConnHandle::new(slot.info().clone(), self.mailbox.clone());
            contain("a client's opened callback", || (adoption.opened)(handle));
        }
    }

    /// Applies what handlers and callbacks on this thread posted (in order; what applying
    /// one posts comes after it).
    pub(super) fn take_local_mail(&mut self) {
        while let Some(cmd) = self.mailbox.take_local() {
            self.apply(cmd);
        }
    }

    /// Carries out one message.
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Notify { conn, frame } if UdpCore::owns(conn) => {
                self.udp_send_to_peer(conn, frame, false)
            }
            Command::Answer { conn, frame, .. } if UdpCore::owns(conn) => {
                self.udp_send_to_peer(conn, frame, true)
            }
            Command::AnswerParts(parts) if UdpCore::owns(parts.conn) => {
                let frame = encode(
                    ringrpc_protocol::Command::Response,
                    parts.flags,
                    parts.seq,
                    &parts.method,
                    &parts.payload,
                );
                self.udp_send_to_peer(parts.conn, frame, true)
            }
            Command::Call {
                conn,
                method,
                payload,
                timeout,
                done,
            } if UdpCore::owns(conn) => self.udp_call_peer(conn, &method, &payload, timeout, done),
            Command::UdpCall {
                peer,
                method,
                payload,
                timeout,
                retry,
                done,
            } => self.udp_call(peer, &method, &payload, timeout, retry, done),
            Command::UdpNotify { peer, frame } => {
                if let Some(udp) = self.udp.as_mut() {
                    if udp.core.notify(peer, frame).is_err() {
                        udp.core.stats.send_errors += 1;
                    }
                }
            }
            Command::UdpForward { peer, frame } => {
                if let Some(udp) = self.udp.as_mut() {
                    udp.core.on_forwarded(peer, &frame);
                }
            }
            Command::Notify { conn, frame } => {
                if let Some(idx) = self.live_id(conn) {
                    let slot = &mut self.conns[idx];
                    if slot.lifecycle.is_paused() {
                        self.stats.notify_drops += 1;
                        return;
                    }
                    slot.conn.session.out.push_encoded(frame);
                    self.mark_dirty(idx);
                }
            }
            Command::Answer {
                conn,
                frame,
                timing,
            } => {
                if let Some(timing) = timing {
                    self.methods.finish(timing);
                }
                if let Some(idx) = self.live_id(conn) {
                    let session = &mut self.conns[idx].conn.session;
                    session.out.push_encoded(frame);
                    session.answer_queued();
                    self.mark_dirty(idx);
                }
            }
            Command::AnswerParts(parts) => {
                if let Some(timing) = parts.timing {
                    self.methods.finish(timing);
                }
                if let Some(idx) = self.live_id(parts.conn) {
                    let session = &mut self.conns[idx].conn.session;
                    session.out.push_frame_bytes(
                        ringrpc_protocol::Command::Response,
                        parts.flags,
                        0,
                        parts.seq,
                        &parts.method,
                        parts.payload,
                    );
                    session.answer_queued();
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
                Some(idx) if self.conns[idx].lifecycle.is_paused() => {
                    contain(CALL_DONE, || done(Err(CallError::Overstocked)));
                }
                Some(idx) => self.start_call(idx, &method, &payload, self.now + timeout, done),
                None => {
                    contain(CALL_DONE, || done(Err(CallError::Disconnected)));
                }
            },
            Command::CallWithMetadata {
                conn,
                frame,
                timeout,
                done,
            } => {
                let refusal = match self.live_id(conn) {
                    _ if UdpCore::owns(conn) => {
                        CallError::Unsupported("a call with metadata over UDP")
                    }
                    Some(idx) if self.conns[idx].lifecycle.is_paused() => CallError::Overstocked,
                    Some(idx) => {
                        return self.start_call_with_metadata(idx, frame, self.now + timeout, done);
                    }
                    None => CallError::Disconnected,
                };
                contain(CALL_DONE, || done(Err(refusal)));
            }
            Command::CallAwaited {
                conn,
                method,
                payload,
                metadata,
                timeout,
                slot,
            } => self.start_awaited(conn, method, payload, metadata, timeout, slot),
            Command::CancelCall { conn, seq } => {
                if let Some(idx) = self.live_id(conn) {
                    if self.conns[idx].conn.session.cancel_call(seq) {
                        self.stats.calls_cancelled += 1;
                    }
                }
            }
            Command::Broadcast { frame, filter } => {
                let mut reached = Vec::new();
                for (idx, slot) in self.conns.iter_mut() {
                    if !slot.lifecycle.is_open() {
                        continue;
                    }
                    if let Some(f) = &filter {
                        // A filter that panics is taken as "no" for that connection.
                        if contain("a broadcast filter", || f(slot.info())) != Some(true) {
                            continue;
                        }
                    }
                    // A slow reader loses broadcasts rather than growing our memory.
                    if slot.lifecycle.is_paused() {
                        self.stats.broadcast_drops += 1;
                        continue;
                    }
                    slot.conn.session.out.push_encoded(frame.clone());
                    reached.push(idx);
                }
                self.stats.broadcasts += reached.len() as u64;
                for idx in reached {
                    self.mark_dirty(idx);
                }
            }
            Command::StreamOpen {
                conn,
                shared,
                timeout,
            } => self.open_stream(conn, shared, timeout),
            Command::StreamSend { conn, shared, send } => match self.live_id(conn) {
                Some(idx) => {
                    let slot = &mut self.conns[idx];
                    let overstocked = slot.lifecycle.is_paused();
                    let session = &mut slot.conn.session;
                    session
                        .streams
                        .send(shared, send, overstocked, &mut session.out);
                    self.mark_dirty(idx);
                }
                None => {
                    shared.unsent_done(send.window);
                    shared.finish(Err(StreamError::Disconnected), true);
                }
            },
            Command::StreamResume { conn, shared } => {
                if let Some(idx) = self.live_id(conn) {
                    self.conns[idx].conn.session.streams.resume(&shared);
                    self.mark_dirty(idx);
                }
            }
            Command::Reply { conn, frame } => {
                if let Some(idx) = self.live_id(conn) {
                    self.conns[idx].conn.session.out.push_encoded(frame);
                    self.mark_dirty(idx);
                }
            }
            Command::Close { conn, .. } => {
                if let Some(idx) = self.live_id(conn) {
                    self.conns[idx].lifecycle.request_close();
                    self.mark_dirty(idx);
                }
            }
            Command::NotifyCounted { conn, frame, tally } => {
                self.notify_counted(conn, frame, &tally)
            }
            Command::Settled { conn } if UdpCore::owns(conn) => {
                if let Some(udp) = self.udp.as_mut() {
                    udp.core.settle(conn);
                }
            }
            Command::Settled { conn } => {
                if let Some(idx) = self.live_id(conn) {
                    self.conns[idx].conn.session.answer_queued();
                    // The drain may have been waiting for it.
                    self.mark_dirty(idx);
                }
            }
            Command::Wake(task) => crate::executor::Executor::wake_from_mail(task),
            #[cfg(test)]
            Command::Crash => panic!("crash injected by a test"),
        }
    }

    /// Registers a stream this side opens on `conn` and schedules its whole-stream timeout.
    fn open_stream(&mut self, conn: ConnId, shared: Arc<StreamShared>, timeout: Option<Duration>) {
        let Some(idx) = self.live_id(conn) else {
            shared.finish(Err(StreamError::Disconnected), true);
            return;
        };
        let slot = &mut self.conns[idx];
        let Some(id) = slot.conn.session.open_stream(shared) else {
            return;
        };
        self.stats.streams_opened += 1;
        if let Some(timeout) = timeout {
            let timer = TimerId::Stream {
                slot: idx as u32,
                serial: slot.serial(),
                id,
            };
            self.deadlines.schedule(self.now + timeout, timer);
        }
    }

    /// Queues a Notify unless the connection is paused or its output already at its limit
    /// (checked per frame, so a burst in one drain cannot overshoot): then it is dropped and
    /// counted, in the core's `notify_drops` and in `tally`.
    fn notify_counted(&mut self, conn: ConnId, frame: Bytes, tally: &NotifyTally) {
        if UdpCore::owns(conn) {
            return self.udp_send_to_peer(conn, frame, false);
        }
        let Some(idx) = self.live_id(conn) else {
            return;
        };
        let slot = &mut self.conns[idx];
        let out = &slot.conn.session.out;
        let limits = &slot.policy.lifecycle;
        if slot.lifecycle.is_paused()
            || out.backlog_bytes() >= limits.max_send_queue_bytes
            || out.backlog_frames() >= limits.max_send_queue_frames
        {
            self.stats.notify_drops += 1;
            tally.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tally.queued.fetch_add(1, Ordering::Relaxed);
        slot.conn.session.out.push_encoded(frame);
        self.mark_dirty(idx);
    }

    /// Starts a call awaited as a future, unless the future was dropped first.
    fn start_awaited(
        &mut self,
        conn: ConnId,
        method: Bytes,
        payload: Bytes,
        metadata: Option<Box<ringrpc_protocol::metadata::Metadata>>,
        timeout: Duration,
        slot: Arc<CallSlot>,
    ) {
        if slot.is_cancelled() {
            return;
        }
        if UdpCore::owns(conn) {
            if metadata.is_some() {
                return slot.complete(Err(CallError::Unsupported("a call with metadata over UDP")));
            }
            let done = Box::new(move |r: Result<Bytes, CallError>| {
                slot.complete(r.map(|payload| (payload, None)))
            });
            return self.udp_call_peer(conn, &method, &payload, timeout, done);
        }
        let Some(idx) = self.live_id(conn) else {
            return slot.complete(Err(CallError::Disconnected));
        };
        if self.conns[idx].lifecycle.is_paused() {
            return slot.complete(Err(CallError::Overstocked));
        }
        let deadline = self.now + timeout;
        let session = &mut self.conns[idx].conn.session;
        if let Some(seq) =
            session.start_awaited_call(&method, &payload, metadata.as_deref(), deadline, slot)
        {
            self.call_queued(idx, seq, deadline);
        }
    }

    /// Queues a call whose Request is encoded already on connection `idx` and schedules
    /// its timeout.
    fn start_call_with_metadata(
        &mut self,
        idx: usize,
        frame: bytes::Bytes,
        deadline: Instant,
        done: crate::reactor::mailbox::CallDoneMd,
    ) {
        let seq = self.conns[idx]
            .conn
            .session
            .start_encoded_call(frame, deadline, done);
        self.call_queued(idx, seq, deadline);
    }

    /// Queues a call on connection `idx` and schedules its timeout.
    fn start_call(
        &mut self,
        idx: usize,
        method: &[u8],
        payload: &[u8],
        deadline: Instant,
        done: crate::reactor::mailbox::CallDone,
    ) {
        let seq = self.conns[idx]
            .conn
            .session
            .start_call(method, payload, deadline, done);
        self.call_queued(idx, seq, deadline);
    }

    /// Call `seq` was queued on connection `idx`: schedules its timeout and sends it.
    fn call_queued(&mut self, idx: usize, seq: u64, deadline: Instant) {
        let timer = TimerId::Call {
            slot: idx as u32,
            serial: self.conns[idx].serial(),
            seq,
        };
        self.deadlines.schedule(deadline, timer);
        self.stats.calls += 1;
        self.mark_dirty(idx);
    }
}
