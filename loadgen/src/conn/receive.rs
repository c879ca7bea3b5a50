//! What arrives on a [`Connection`]: the bytes of a read (unwrapped from WebSocket messages
//! first, with `--transport ws`) cut into frames, each frame matched with the unit it answers
//! and settled through [`crate::outcome`], and the window refilled.
//!
//! Invariant: only a partial frame's bytes are copied (into `rx`); whole frames are checked
//! straight from the read.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use ringrpc_protocol::{Command, Flags, Header, parse_frame, write_frame};

use super::Connection;
use crate::arriving_echo::{self, Incoming};
use crate::outcome::{record_answer, record_batch, record_checked, record_publish, record_success};
use crate::pattern::Pattern;
use crate::payload;
use crate::worker::{Plan, WorkerState};

impl Connection {
    /// Handles bytes that arrived, by whatever I/O, and refills the window. Whole frames are
    /// checked straight from `data`; only a partial frame's bytes are copied.
    pub(crate) fn on_received(
        &mut self,
        data: &[u8],
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) -> Result<(), String> {
        if let Some(mut tls) = self.tls.take() {
            let result = tls.open(data, |plain| {
                self.on_received_arpc(plain, received_at, plan, state)
            });
            if self.open {
                self.tls = Some(tls);
            }
            return result;
        }
        if let Some(ws) = self.ws.as_mut() {
            // Unwrap the messages, then decode their bytes as if read from a raw socket; the
            // buffer they are unwrapped into is reused from one read to the next.
            let mut arpc = std::mem::take(&mut ws.unwrapped);
            let max = state.decoder.max_body() as usize + ringrpc_protocol::HEADER_LEN;
            let result = ws
                .feed(data, &mut arpc, &mut self.tx, max)
                .and_then(|()| self.on_received_arpc(&arpc, received_at, plan, state));
            arpc.clear();
            if let Some(ws) = self.ws.as_mut() {
                ws.unwrapped = arpc;
            }
            return result;
        }
        self.on_received_arpc(data, received_at, plan, state)
    }

    fn on_received_arpc(
        &mut self,
        data: &[u8],
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) -> Result<(), String> {
        let mut data = data;
        if let Some(incoming) = self.incoming.as_mut() {
            data = &data[incoming.take(data)..];
            if !incoming.is_complete() {
                return Ok(());
            }
            let done = self.incoming.take().expect("checked above");
            self.finish_incoming(done, received_at, plan, state);
        }
        // A partial frame held in `rx` is completed with only the bytes it lacks (its header,
        // then its method, then the rest); a large echo is taken over as soon as its method
        // is in. Whatever follows is handled straight from `data`.
        while !self.rx.is_empty() && !data.is_empty() {
            let take = bytes_lacking(&self.rx, state.decoder.max_body()).min(data.len());
            self.rx.extend_from_slice(&data[..take]);
            data = &data[take..];
            let rx = std::mem::take(&mut self.rx);
            let consumed = self.handle_frames(&rx, received_at, plan, state);
            self.rx = rx;
            self.rx.advance(consumed?);
            if let Some(incoming) = self.check_partial(&self.rx, plan, state) {
                self.rx.clear();
                self.incoming = Some(incoming);
                return self.on_received_arpc(data, received_at, plan, state);
            }
        }
        if self.rx.is_empty() {
            let n = self.handle_frames(data, received_at, plan, state)?;
            // A large echo's start is checked straight from the read, never copied.
            let tail = &data[n..];
            self.incoming = self.check_partial(tail, plan, state);
            if self.incoming.is_none() {
                reserve_frame(&mut self.rx, tail, state.decoder.max_body());
                self.rx.extend_from_slice(tail);
            }
        }
        self.fill_window(received_at, plan, state);
        Ok(())
    }

    /// The echo to check as it arrives when `partial` (a frame's start) is a large echo of
    /// one of our calls.
    fn check_partial(&self, partial: &[u8], plan: &Plan, state: &WorkerState) -> Option<Incoming> {
        let pending = &self.pending;
        arriving_echo::check_partial_as_it_arrives(
            partial,
            state.decoder.max_body(),
            plan.pattern,
            plan.reflect,
            plan.payload_len,
            |seq| pending.get(&seq).map(|p| p.seed),
        )
    }

    /// The last piece of an echo checked as it arrived is in: settles its call.
    fn finish_incoming(
        &mut self,
        done: Incoming,
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) {
        state.frames_received += 1;
        let Some(pending) = self.settle_answer(done.seq(), state) else {
            return;
        };
        let mismatch = done.mismatch(plan.payload_len);
        record_checked(mismatch, pending.sent_at, received_at, plan, state);
    }

    /// Handles every whole frame at the front of `bytes`; returns how many bytes they took.
    fn handle_frames(
        &mut self,
        bytes: &[u8],
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) -> Result<usize, String> {
        let mut used = 0;
        loop {
            match parse_frame(&bytes[used..], state.decoder.max_body()) {
                Ok(Some((frame, len))) => {
                    state.frames_received += 1;
                    self.handle(frame.header, frame.payload, received_at, plan, state);
                    used += len;
                }
                Ok(None) => return Ok(used),
                Err(e) => return Err(format!("undecodable frame from the server: {e}")),
            }
        }
    }

    fn handle(
        &mut self,
        header: Header,
        payload: &[u8],
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) {
        match header.cmd {
            Command::Stream if plan.pattern.uses_streams() && !header.stream_local => {
                return self.handle_stream(header, payload, received_at, plan, state);
            }
            Command::Response => {}
            // A reflecting server sends our own request back as the answer.
            Command::Request if plan.reflect => {}
            Command::Ping => {
                let from = self.tx.len();
                write_frame(
                    &mut self.tx,
                    Command::Pong,
                    Flags::default(),
                    0,
                    header.seq,
                    b"",
                    b"",
                );
                self.seal(from);
                return;
            }
            Command::Pong => return,
            other => {
                state.counters.note_unexpected(format!(
                    "unsolicited {other:?} frame with seq {}",
                    header.seq
                ));
                return;
            }
        }
        let Some(pending) = self.settle_answer(header.seq, state) else {
            return;
        };
        if plan.pattern == Pattern::Pubsub {
            record_publish(
                &header,
                payload,
                pending.sent_at,
                self.id,
                received_at,
                plan,
                state,
            );
        } else if pending.units > 1 || plan.pattern == Pattern::Notify {
            // A barrier: it echoes nothing; it confirms the notifies before it.
            record_batch(
                &header,
                payload,
                pending.units,
                pending.sent_at,
                received_at,
                plan,
                state,
            );
        } else {
            record_answer(
                &header,
                payload,
                pending.seed,
                pending.sent_at,
                received_at,
                plan,
                state,
            );
        }
    }

    /// A frame on one of our streams (`--pattern stream|subscribe`).
    fn handle_stream(
        &mut self,
        header: Header,
        payload: &[u8],
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) {
        let id = header.seq;
        let bare_end = header.stream_eof && payload.is_empty() && !header.flags.is_error();
        if plan.pattern == Pattern::Stream {
            if bare_end {
                return; // the server closing a stream; we never ask it to
            }
            let Some(pending) = self.pending.remove(&id) else {
                state.counters.note_unexpected(format!(
                    "stream {id} frame while none of ours is outstanding on it"
                ));
                return;
            };
            if !header.stream_eof {
                self.idle_streams.push(id);
            }
            if self.settle(&pending, state) {
                record_answer(
                    &header,
                    payload,
                    pending.seed,
                    pending.sent_at,
                    received_at,
                    plan,
                    state,
                );
            }
            return;
        }
        // Subscribe: one reply that echoes the payload, then the end.
        let Some(pending) = self.pending.get_mut(&id) else {
            if !bare_end {
                state
                    .counters
                    .note_unexpected(format!("stream {id} frame for no outstanding subscribe"));
            }
            return;
        };
        let failed = header.flags.is_error()
            || (!payload.is_empty()
                && (pending.replied
                    || payload::mismatch(pending.seed, plan.payload_len, payload).is_some()));
        if !failed && !payload.is_empty() {
            pending.replied = true;
        }
        if !(failed || header.stream_eof) {
            return;
        }
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if !self.settle(&pending, state) {
            return;
        }
        if !failed && pending.replied {
            record_success(1, pending.sent_at, received_at, plan, state);
        } else if !failed {
            let counters = &mut state.counters;
            counters.mismatches += 1;
            counters
                .first_mismatch
                .get_or_insert_with(|| format!("subscribe {id} ended without a reply"));
        } else {
            record_answer(
                &header,
                payload,
                pending.seed,
                pending.sent_at,
                received_at,
                plan,
                state,
            );
        }
    }
}

/// How many more bytes the partial frame `rx` needs before it can be looked at again: the
/// rest of its header, then of its method (so a large echo can be recognised), then of the
/// frame. A header over `max_body` asks for everything: it fails when it is parsed.
fn bytes_lacking(rx: &[u8], max_body: u32) -> usize {
    let Some(head) = rx.first_chunk::<{ ringrpc_protocol::HEADER_LEN }>() else {
        return ringrpc_protocol::HEADER_LEN - rx.len();
    };
    let Ok(header) = Header::parse(head, max_body) else {
        return usize::MAX;
    };
    let method_end = ringrpc_protocol::HEADER_LEN + header.method_len as usize;
    if rx.len() < method_end {
        method_end - rx.len()
    } else {
        header.frame_len() - rx.len()
    }
}

/// Reserves room for the whole frame that `tail` starts, once its header is in, so its
/// pieces are appended without the buffer growing (and copying) under them. A header over
/// `max_body` reserves nothing: it fails when it is parsed.
fn reserve_frame(rx: &mut BytesMut, tail: &[u8], max_body: u32) {
    if let Some(head) = tail.first_chunk::<{ ringrpc_protocol::HEADER_LEN }>() {
        if let Ok(len) = ringrpc_protocol::frame_len(head, max_body) {
            rx.reserve(len);
        }
    }
}
