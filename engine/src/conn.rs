//! One connection's sans-IO state: bytes in, frames dispatched, responses queued, vectored
//! batches out.
//!
//! Invariants:
//! - Whole frames are decoded straight from the slice they arrived in; only the tail of a
//!   partial frame is copied, into `partial`, and that copy grows only with bytes received
//!   (the header is validated, length limit included, as soon as its 16 bytes are present).
//! - Output keeps frame order: small frames are coalesced into one buffer, large payloads
//!   stay separate `Bytes`, and a partially sent batch resumes exactly where it stopped.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use ringrpc_protocol::{
    Command, DecodeError, Flags, FrameRef, HEADER_LEN, Header, parse_frame, write_frame,
};

use crate::ring::IOV_MAX;
use crate::router::{Dispatched, Router};

/// Payloads at least this large are queued as their own `Bytes` instead of being copied.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// A partial-frame buffer that grew past this is released once its frame completes.
const PARTIAL_KEEP: usize = 64 * 1024;

/// Counters one connection contributes to its core's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Requests dispatched.
    pub requests: u64,
    /// Notifies dispatched.
    pub notifies: u64,
    /// Requests or notifies for methods with no handler.
    pub not_found: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Frames this server does not take from a peer (Response, Stream) and dropped.
    pub ignored: u64,
}

/// Frames waiting to be sent, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    small: BytesMut,
    segments: VecDeque<Bytes>,
    queued: usize,
    frames: u64,
}

impl OutQueue {
    /// Queues one frame, copying `payload`.
    pub fn push_frame(
        &mut self,
        cmd: Command,
        flags: Flags,
        user_flags: u8,
        seq: u64,
        method: &[u8],
        payload: &[u8],
    ) {
        let before = self.small.len();
        write_frame(
            &mut self.small,
            cmd,
            flags,
            user_flags,
            seq,
            method,
            payload,
        );
        self.queued += self.small.len() - before;
        self.frames += 1;
    }

    /// Queues one frame; a large `payload` is sent from its own buffer without copying.
    pub fn push_frame_bytes(
        &mut self,
        cmd: Command,
        flags: Flags,
        user_flags: u8,
        seq: u64,
        method: &[u8],
        payload: Bytes,
    ) {
        if payload.len() < ZERO_COPY_MIN {
            return self.push_frame(cmd, flags, user_flags, seq, method, &payload);
        }
        let before = self.small.len();
        write_frame(&mut self.small, cmd, flags, user_flags, seq, method, &[]);
        // write_frame wrote body_len for an empty payload; patch in the real one.
        let body_len = (method.len() + payload.len()) as u32;
        self.small[before..before + 4].copy_from_slice(&body_len.to_le_bytes());
        self.queued += self.small.len() - before + payload.len();
        self.seal_small();
        self.segments.push_back(payload);
        self.frames += 1;
    }

    /// Queues bytes as they are (reflect mode: no framing, no frame counted).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.small.extend_from_slice(bytes);
        self.queued += bytes.len();
    }

    /// Queues a Pong.
    pub fn push_pong(&mut self) {
        self.push_frame(Command::Pong, Flags::default(), 0, 0, &[], &[]);
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Bytes waiting (not counting a batch already handed out).
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            self.segments.push_back(self.small.split().freeze());
        }
    }

    /// Moves the next batch (at most [`IOV_MAX`] segments, in order) into `batch`; returns
    /// how many frames were queued since the previous batch.
    pub fn take_batch(&mut self, batch: &mut Vec<Bytes>) -> u64 {
        self.seal_small();
        let n = self.segments.len().min(IOV_MAX);
        batch.extend(self.segments.drain(..n));
        let taken: usize = batch.iter().map(Bytes::len).sum();
        self.queued -= taken;
        std::mem::take(&mut self.frames)
    }

    /// Takes back a batch of which `written` bytes went out: the unsent rest returns to the
    /// front of the queue. `batch` is left empty for reuse.
    pub fn sent(&mut self, batch: &mut Vec<Bytes>, mut written: usize) {
        let mut rest = Vec::new();
        for mut seg in batch.drain(..) {
            if written >= seg.len() {
                written -= seg.len();
                continue;
            }
            seg.advance(written);
            written = 0;
            rest.push(seg);
        }
        for seg in rest.into_iter().rev() {
            self.queued += seg.len();
            self.segments.push_front(seg);
        }
    }
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    max_body: u32,
    partial: BytesMut,
    /// Responses and other frames to send.
    pub out: OutQueue,
    /// This connection's counters.
    pub stats: ConnStats,
}

impl Conn {
    /// A fresh connection from `peer` accepting bodies up to `max_body`.
    pub fn new(peer: SocketAddr, max_body: u32) -> Conn {
        Conn {
            peer,
            max_body,
            partial: BytesMut::new(),
            out: OutQueue::default(),
            stats: ConnStats::default(),
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Bytes of an incomplete frame held.
    pub fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Takes bytes the peer sent: dispatches every whole frame and keeps the tail.
    ///
    /// An error means the peer broke the protocol; the connection must be closed.
    pub fn handle_recv(&mut self, mut data: &[u8], router: &Router) -> Result<(), DecodeError> {
        self.stats.bytes_in += data.len() as u64;
        if !self.partial.is_empty() {
            data = self.complete_partial(data, router)?;
            if !self.partial.is_empty() {
                return Ok(());
            }
        }
        while let Some((frame, len)) = parse_frame(data, self.max_body)? {
            self.dispatch(&frame, router);
            data = &data[len..];
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// Reflect mode: queues the received bytes to be written back unchanged, undecoded.
    pub fn reflect(&mut self, data: &[u8]) {
        self.stats.bytes_in += data.len() as u64;
        self.out.push_raw(data);
    }

    /// Feeds `data` into the pending partial frame; returns what is left after it.
    fn complete_partial<'d>(
        &mut self,
        mut data: &'d [u8],
        router: &Router,
    ) -> Result<&'d [u8], DecodeError> {
        if self.partial.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        let Some(head) = self.partial.first_chunk::<HEADER_LEN>() else {
            return Ok(data);
        };
        let frame_len = Header::parse(head, self.max_body)?.frame_len();
        let take = (frame_len - self.partial.len()).min(data.len());
        self.partial.extend_from_slice(&data[..take]);
        data = &data[take..];
        if self.partial.len() == frame_len {
            let whole = std::mem::take(&mut self.partial);
            let (frame, _) = parse_frame(&whole, self.max_body)?.expect("a whole frame");
            self.dispatch(&frame, router);
            if whole.capacity() <= PARTIAL_KEEP {
                self.partial = whole;
                self.partial.clear();
            }
        }
        Ok(data)
    }

    fn dispatch(&mut self, frame: &FrameRef<'_>, router: &Router) {
        self.stats.frames_in += 1;
        match frame.header.cmd {
            Command::Request | Command::Notify => {
                if frame.header.cmd == Command::Request {
                    self.stats.requests += 1;
                } else {
                    self.stats.notifies += 1;
                }
                match router.dispatch(frame, self.peer, &mut self.out) {
                    Dispatched::Handled => {}
                    Dispatched::NotFound => self.stats.not_found += 1,
                    Dispatched::Panicked => self.stats.panics += 1,
                }
            }
            Command::Ping => self.out.push_pong(),
            Command::Pong => {}
            Command::Response | Command::Stream => self.stats.ignored += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::{Decoder, Frame};

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn drain_output(conn: &mut Conn) -> Vec<Frame> {
        let mut batch = Vec::new();
        conn.out.take_batch(&mut batch);
        let mut wire = BytesMut::new();
        for seg in &batch {
            wire.extend_from_slice(seg);
        }
        let written = wire.len();
        conn.out.sent(&mut batch, written);
        let mut frames = Vec::new();
        while let Some(f) = Decoder::default().decode(&mut wire).unwrap() {
            frames.push(f);
        }
        assert!(wire.is_empty());
        frames
    }

    #[test]
    fn whole_frames_are_answered_in_order() {
        let router = Router::with_builtins();
        let mut conn = Conn::new(peer(), 1 << 20);
        let mut wire = BytesMut::new();
        for seq in 0..5u64 {
            Frame::request(seq, "/echo", format!("p{seq}")).encode_to(&mut wire);
        }
        conn.handle_recv(&wire, &router).unwrap();
        let out = drain_output(&mut conn);
        assert_eq!(out.len(), 5);
        for (seq, f) in out.iter().enumerate() {
            assert_eq!(f.header.cmd, Command::Response);
            assert_eq!(f.header.seq, seq as u64);
            assert_eq!(f.payload, format!("p{seq}").as_bytes());
        }
        assert_eq!(conn.stats.requests, 5);
        assert_eq!(conn.partial_len(), 0);
    }

    #[test]
    fn frames_split_at_every_offset_are_reassembled() {
        let router = Router::with_builtins();
        let mut wire = BytesMut::new();
        Frame::request(1, "/echo", vec![7u8; 40]).encode_to(&mut wire);
        Frame::ping().encode_to(&mut wire);
        Frame::notify(2, "/echo", "n").encode_to(&mut wire);
        Frame::request(3, "/echo", "last").encode_to(&mut wire);
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut conn = Conn::new(peer(), 1 << 20);
                for chunk in [&wire[..a], &wire[a..b], &wire[b..]] {
                    conn.handle_recv(chunk, &router).unwrap();
                }
                let out = drain_output(&mut conn);
                let seqs: Vec<_> = out.iter().map(|f| (f.header.cmd, f.header.seq)).collect();
                assert_eq!(
                    seqs,
                    vec![
                        (Command::Response, 1),
                        (Command::Pong, 0),
                        (Command::Response, 3)
                    ],
                    "split {a}/{b}"
                );
                assert_eq!(conn.partial_len(), 0);
            }
        }
    }

    #[test]
    fn oversized_body_is_rejected_from_the_header_alone() {
        let router = Router::with_builtins();
        let mut conn = Conn::new(peer(), 1024);
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        head[5] = 1;
        head[7] = 5;
        // Arriving in two pieces: the limit is enforced once the 16th byte is in.
        conn.handle_recv(&head[..10], &router).unwrap();
        let err = conn.handle_recv(&head[10..], &router).unwrap_err();
        assert!(matches!(err, DecodeError::BodyTooLarge { .. }));
        assert!(conn.partial.capacity() < 1024);
    }

    #[test]
    fn unknown_method_gets_error_and_notify_gets_nothing() {
        let router = Router::with_builtins();
        let mut conn = Conn::new(peer(), 1 << 20);
        let mut wire = BytesMut::new();
        Frame::request(9, "/nope", "x").encode_to(&mut wire);
        Frame::notify(10, "/nope", "x").encode_to(&mut wire);
        Frame::notify(11, "/echo", "x").encode_to(&mut wire);
        conn.handle_recv(&wire, &router).unwrap();
        let out = drain_output(&mut conn);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_error());
        assert_eq!(out[0].header.seq, 9);
        assert_eq!(
            &out[0].payload[..],
            crate::router::METHOD_NOT_FOUND.as_bytes()
        );
        assert_eq!(conn.stats.not_found, 2);
    }

    #[test]
    fn partial_send_resumes_where_it_stopped() {
        let mut q = OutQueue::default();
        q.push_frame(Command::Response, Flags::default(), 0, 1, b"/a", b"one");
        q.push_frame_bytes(
            Command::Response,
            Flags::default(),
            0,
            2,
            b"/b",
            Bytes::from(vec![5u8; ZERO_COPY_MIN]),
        );
        q.push_frame(Command::Response, Flags::default(), 0, 3, b"/c", b"three");
        let total = q.queued_bytes();
        let mut expected = BytesMut::new();
        let mut got = BytesMut::new();
        // Reference: everything in one go.
        {
            let mut q2 = OutQueue::default();
            q2.push_frame(Command::Response, Flags::default(), 0, 1, b"/a", b"one");
            q2.push_frame_bytes(
                Command::Response,
                Flags::default(),
                0,
                2,
                b"/b",
                Bytes::from(vec![5u8; ZERO_COPY_MIN]),
            );
            q2.push_frame(Command::Response, Flags::default(), 0, 3, b"/c", b"three");
            let mut b = Vec::new();
            q2.take_batch(&mut b);
            for s in &b {
                expected.extend_from_slice(s);
            }
        }
        assert_eq!(expected.len(), total);
        // Now in sends of 7 bytes each.
        let mut batch = Vec::new();
        while !q.is_empty() {
            q.take_batch(&mut batch);
            let flat: Vec<u8> = batch.iter().flat_map(|s| s.iter().copied()).collect();
            let n = flat.len().min(7);
            got.extend_from_slice(&flat[..n]);
            q.sent(&mut batch, n);
            assert!(batch.is_empty());
        }
        assert_eq!(got, expected);
        let mut wire = got;
        let mut seqs = Vec::new();
        while let Some(f) = Decoder::default().decode(&mut wire).unwrap() {
            seqs.push(f.header.seq);
        }
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn panicking_handler_is_answered_with_an_error() {
        fn boom(_: &mut crate::router::Context<'_>) {
            panic!("boom");
        }
        let mut router = Router::with_builtins();
        router.add("/boom", boom).unwrap();
        let mut conn = Conn::new(peer(), 1 << 20);
        let mut wire = BytesMut::new();
        Frame::request(4, "/boom", "").encode_to(&mut wire);
        Frame::request(5, "/echo", "ok").encode_to(&mut wire);
        conn.handle_recv(&wire, &router).unwrap();
        let out = drain_output(&mut conn);
        assert!(out[0].is_error());
        assert_eq!(
            &out[0].payload[..],
            crate::router::HANDLER_PANICKED.as_bytes()
        );
        assert_eq!(&out[1].payload[..], b"ok");
        assert_eq!(conn.stats.panics, 1);
    }
}
