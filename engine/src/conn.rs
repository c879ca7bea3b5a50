//! One connection's sans-IO state: bytes in, frames dispatched, responses queued, vectored
//! batches out.
//!
//! Invariants:
//! - Whole frames are decoded straight from the slice they arrived in; only the tail of a
//!   partial frame is copied, into `partial`, and that copy grows only with bytes received
//!   (the header is validated, length limit included, as soon as its 16 bytes are present).
//! - Output keeps frame order: small frames are coalesced into one buffer, large payloads
//!   stay separate `Bytes`, and a partially sent batch resumes exactly where it stopped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ringrpc_protocol::{
    Command, DecodeError, Flags, FrameRef, HEADER_LEN, Header, parse_frame, write_frame,
};

use crate::handle::{CallDone, CallError, ConnInfo};
use crate::mailbox::Mailbox;
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
    /// Requests refused because too many answers were deferred.
    pub refused_in_flight: u64,
    /// Frames dropped: Responses to no pending call (or to one that timed out), Streams.
    pub ignored: u64,
}

/// Frames waiting to be sent, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    small: BytesMut,
    segments: VecDeque<Bytes>,
    queued: usize,
    frames: u64,
    /// Bytes handed out in the batch being sent.
    in_flight: usize,
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

    /// Queues one frame encoded elsewhere (another thread, or once for a broadcast); a
    /// large one is sent from its own buffer, shared, without copying.
    pub fn push_encoded(&mut self, frame: Bytes) {
        if frame.len() < ZERO_COPY_MIN {
            self.small.extend_from_slice(&frame);
        } else {
            self.seal_small();
            self.segments.push_back(frame.clone());
        }
        self.queued += frame.len();
        self.frames += 1;
    }

    /// Queues bytes as they are (reflect mode: no framing, no frame counted).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.small.extend_from_slice(bytes);
        self.queued += bytes.len();
    }

    /// Queues a Ping (keepalive).
    pub fn push_ping(&mut self) {
        self.push_frame(Command::Ping, Flags::default(), 0, 0, &[], &[]);
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

    /// Bytes not yet written to the socket: waiting plus the batch being sent.
    pub fn backlog_bytes(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Frames queued and not yet handed to a send.
    pub fn backlog_frames(&self) -> u64 {
        self.frames
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
        self.in_flight = taken;
        std::mem::take(&mut self.frames)
    }

    /// Takes back a batch of which `written` bytes went out: the unsent rest returns to the
    /// front of the queue. `batch` is left empty for reuse.
    pub fn sent(&mut self, batch: &mut Vec<Bytes>, mut written: usize) {
        self.in_flight = 0;
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

/// Error text of a Request refused because its connection has too many deferred answers.
pub const TOO_MANY_IN_FLIGHT: &str = "too many requests in flight on this connection";

/// Method of the Request that must come first on a server with a shared secret.
pub const AUTH_METHOD: &str = "/_auth";
/// Error text sent to a connection that did not authenticate first.
pub const AUTH_REQUIRED: &str =
    "authentication required: the first frame must be a /_auth request with the shared secret";

/// Compares in time that depends only on the lengths, so response timing does not reveal
/// how much of a guessed secret was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// A call this side made to the peer, waiting for its Response.
struct PendingCall {
    deadline: Instant,
    done: CallDone,
}

/// One connection's protocol state.
pub struct Conn {
    info: ConnInfo,
    mailbox: Arc<Mailbox>,
    max_body: u32,
    calls: HashMap<u64, PendingCall>,
    next_call_seq: u64,
    /// The shared secret the first frame must carry; `None` once authenticated or when
    /// none is required.
    auth: Option<Arc<[u8]>>,
    /// The peer failed to authenticate: nothing more is dispatched.
    rejected: bool,
    /// Requests whose answer was deferred to a responder and not yet sent.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Past this many, new Requests are refused with [`TOO_MANY_IN_FLIGHT`].
    max_in_flight: usize,
    partial: BytesMut,
    /// Responses and other frames to send.
    pub out: OutQueue,
    /// This connection's counters.
    pub stats: ConnStats,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.info.id)
            .field("peer", &self.info.peer)
            .field("partial", &self.partial.len())
            .field("queued", &self.out.queued_bytes())
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl Conn {
    /// A fresh connection accepting bodies up to `max_body`; handlers reach it later
    /// through `mailbox`.
    pub(crate) fn new(info: ConnInfo, mailbox: Arc<Mailbox>, max_body: u32) -> Conn {
        Conn {
            info,
            mailbox,
            max_body,
            calls: HashMap::new(),
            next_call_seq: 1,
            auth: None,
            rejected: false,
            in_flight: Arc::default(),
            max_in_flight: usize::MAX,
            partial: BytesMut::new(),
            out: OutQueue::default(),
            stats: ConnStats::default(),
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.info.peer
    }

    /// Requires the first frame to be an [`AUTH_METHOD`] Request carrying `secret`.
    pub(crate) fn require_auth(&mut self, secret: Arc<[u8]>) {
        self.auth = Some(secret);
    }

    /// Refuses Requests while `max` answers of this connection are deferred.
    pub(crate) fn set_max_in_flight(&mut self, max: usize) {
        self.max_in_flight = max;
    }

    /// Whether the peer failed to authenticate (the connection must be closed once its
    /// error Response is flushed).
    pub fn rejected(&self) -> bool {
        self.rejected
    }

    /// Who this connection is.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Queues a Request to the peer; `done` runs when its Response arrives, at `deadline`
    /// ([`Conn::expire_calls`]) or when the connection closes ([`Conn::fail_calls`]).
    pub(crate) fn start_call(
        &mut self,
        method: &[u8],
        payload: &[u8],
        timeout: Duration,
        now: Instant,
        done: CallDone,
    ) {
        let seq = self.next_call_seq;
        self.next_call_seq += 1;
        self.out
            .push_frame(Command::Request, Flags::default(), 0, seq, method, payload);
        self.calls.insert(
            seq,
            PendingCall {
                deadline: now + timeout,
                done,
            },
        );
    }

    /// Calls waiting for a Response.
    pub fn calls_pending(&self) -> usize {
        self.calls.len()
    }

    /// Fails every call whose deadline has passed with [`CallError::Timeout`]; a Response
    /// arriving later is dropped as unknown.
    pub fn expire_calls(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(call) = self.calls.remove(&seq) {
                (call.done)(Err(CallError::Timeout));
            }
        }
    }

    /// Fails every pending call with `error` (the connection is closing).
    pub fn fail_calls(&mut self, error: CallError) {
        for (_, call) in self.calls.drain() {
            (call.done)(Err(error.clone()));
        }
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
        if self.rejected {
            return Ok(());
        }
        if !self.partial.is_empty() {
            data = self.complete_partial(data, router)?;
            if !self.partial.is_empty() || self.rejected {
                return Ok(());
            }
        }
        while let Some((frame, len)) = parse_frame(data, self.max_body)? {
            self.dispatch(&frame, router);
            if self.rejected {
                return Ok(());
            }
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

    fn answer_call(&mut self, frame: &FrameRef<'_>) {
        let Some(call) = self.calls.remove(&frame.header.seq) else {
            // Unknown, or answered after its timeout.
            self.stats.ignored += 1;
            return;
        };
        let outcome = if frame.header.flags.is_error() {
            Err(CallError::Remote(
                String::from_utf8_lossy(frame.payload).into_owned(),
            ))
        } else {
            Ok(Bytes::copy_from_slice(frame.payload))
        };
        (call.done)(outcome);
    }

    fn dispatch(&mut self, frame: &FrameRef<'_>, router: &Router) {
        self.stats.frames_in += 1;
        if let Some(secret) = &self.auth {
            let h = &frame.header;
            let flags = Flags(h.flags.0 & Flags::ASYNC);
            if h.cmd == Command::Request
                && frame.method == AUTH_METHOD.as_bytes()
                && constant_time_eq(frame.payload, secret)
            {
                self.auth = None;
                self.out
                    .push_frame(Command::Response, flags, 0, h.seq, frame.method, &[]);
            } else {
                self.rejected = true;
                let flags = flags.with_error();
                let method = if h.method_len > 0 {
                    frame.method
                } else {
                    AUTH_METHOD.as_bytes()
                };
                self.out.push_frame(
                    Command::Response,
                    flags,
                    0,
                    h.seq,
                    method,
                    AUTH_REQUIRED.as_bytes(),
                );
            }
            return;
        }
        match frame.header.cmd {
            Command::Request | Command::Notify => {
                if frame.header.cmd == Command::Request {
                    self.stats.requests += 1;
                } else {
                    self.stats.notifies += 1;
                }
                let deferred = self.in_flight.load(std::sync::atomic::Ordering::Acquire);
                if frame.header.cmd == Command::Request && deferred >= self.max_in_flight {
                    // The peer asks faster than the deferred work answers: refuse, don't queue.
                    self.stats.refused_in_flight += 1;
                    let flags = Flags(Flags::ERROR | (frame.header.flags.0 & Flags::ASYNC));
                    let h = &frame.header;
                    let msg = TOO_MANY_IN_FLIGHT.as_bytes();
                    self.out
                        .push_frame(Command::Response, flags, 0, h.seq, frame.method, msg);
                    return;
                }
                match router.dispatch(
                    frame,
                    &self.info,
                    &self.mailbox,
                    &self.in_flight,
                    &mut self.out,
                ) {
                    Dispatched::Handled => {}
                    Dispatched::NotFound => self.stats.not_found += 1,
                    Dispatched::Panicked => self.stats.panics += 1,
                }
            }
            Command::Ping => self.out.push_pong(),
            Command::Pong => {}
            Command::Response => self.answer_call(frame),
            Command::Stream => self.stats.ignored += 1,
        }
    }
}

// Fuzzing support, kept out of the connection logic above; not a stable API.
mod fuzz;
#[doc(hidden)]
pub use fuzz::{FuzzOutcome, fuzz_check};

impl Conn {
    /// A connection with a placeholder identity and a mailbox of its own, for fuzzing and
    /// tests without a reactor. Not a stable API.
    ///
    /// # Panics
    /// If the mailbox's eventfd cannot be created.
    #[doc(hidden)]
    pub fn for_fuzzing(max_body: u32) -> Conn {
        let info = ConnInfo {
            id: crate::handle::ConnId {
                core: 0,
                slot: 0,
                generation: 1,
            },
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        let waker = crate::ring::sys::eventfd().unwrap_or_else(|e| {
            panic!("Conn::for_fuzzing: cannot create the mailbox eventfd: {e}")
        });
        Conn::new(info, Arc::new(Mailbox::new(waker)), max_body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::{Decoder, Frame};

    fn test_conn(max_body: u32) -> Conn {
        let info = ConnInfo {
            id: crate::handle::ConnId {
                core: 0,
                slot: 0,
                generation: 1,
            },
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        let mailbox = Arc::new(Mailbox::new(crate::ring::sys::eventfd().unwrap()));
        Conn::new(info, mailbox, max_body)
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
        let mut conn = test_conn(1 << 20);
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
                let mut conn = test_conn(1 << 20);
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
        let mut conn = test_conn(1024);
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
    fn a_trickled_maximum_body_holds_only_what_arrived() {
        let router = Router::with_builtins();
        let max = ringrpc_protocol::DEFAULT_MAX_BODY;
        let mut conn = test_conn(max);
        let mut head = Vec::new();
        head.extend_from_slice(&max.to_le_bytes());
        head.extend_from_slice(&[0, 1, 0, 5]);
        head.extend_from_slice(&1u64.to_le_bytes());
        head.extend_from_slice(b"/echo");
        conn.handle_recv(&head, &router).unwrap();
        let chunk = vec![1u8; 4096];
        let mut received = head.len();
        for _ in 0..256 {
            conn.handle_recv(&chunk, &router).unwrap();
            received += chunk.len();
            // Growth by doubling at most, never towards the 64 MiB declared.
            assert!(
                conn.partial.capacity() <= 2 * received + 4096,
                "{} for {received}",
                conn.partial.capacity()
            );
        }
        assert_eq!(conn.partial_len(), received);
        assert!(drain_output(&mut conn).is_empty());
    }

    #[test]
    fn unknown_method_gets_error_and_notify_gets_nothing() {
        let router = Router::with_builtins();
        let mut conn = test_conn(1 << 20);
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

    /// Three frames: small, large (its own segment), small.
    fn three_frame_queue() -> OutQueue {
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
        q
    }

    #[test]
    fn partial_send_resumes_where_it_stopped() {
        let mut q = three_frame_queue();
        let total = q.queued_bytes();
        let mut expected = BytesMut::new();
        let mut got = BytesMut::new();
        // Reference: everything in one go.
        {
            let mut b = Vec::new();
            three_frame_queue().take_batch(&mut b);
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
    fn calls_complete_on_response_remote_error_timeout_and_close() {
        use std::sync::Mutex;
        let router = Router::with_builtins();
        let mut conn = test_conn(1 << 20);
        type Outcomes = Arc<Mutex<Vec<(u32, Result<Bytes, CallError>)>>>;
        let outcomes: Outcomes = Arc::default();
        let now = Instant::now();
        for tag in 1..=4u32 {
            let outcomes = outcomes.clone();
            let done: CallDone = Box::new(move |r| outcomes.lock().unwrap().push((tag, r)));
            let timeout = if tag == 3 {
                Duration::ZERO
            } else {
                Duration::from_secs(60)
            };
            conn.start_call(b"/ask", format!("q{tag}").as_bytes(), timeout, now, done);
        }
        // The four Requests went out with seqs 1..=4.
        let sent = drain_output(&mut conn);
        let seqs: Vec<_> = sent.iter().map(|f| (f.header.cmd, f.header.seq)).collect();
        assert_eq!(
            seqs,
            (1..=4).map(|s| (Command::Request, s)).collect::<Vec<_>>()
        );
        assert_eq!(&sent[1].payload[..], b"q2");
        // Call 1 answered, call 2 answered with an error, a stray Response is ignored.
        let mut wire = BytesMut::new();
        Frame::response_to(&sent[0].header, "/ask", "a1").encode_to(&mut wire);
        Frame::error_response_to(&sent[1].header, "/ask", "nope").encode_to(&mut wire);
        Frame::response_to(&Frame::request(99, "/x", "").header, "/x", "").encode_to(&mut wire);
        conn.handle_recv(&wire, &router).unwrap();
        conn.expire_calls(now);
        assert_eq!(conn.calls_pending(), 1);
        conn.fail_calls(CallError::Disconnected);
        let got = outcomes.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (1, Ok(Bytes::from_static(b"a1"))),
                (2, Err(CallError::Remote("nope".into()))),
                (3, Err(CallError::Timeout)),
                (4, Err(CallError::Disconnected)),
            ]
        );
        assert_eq!(conn.stats.ignored, 1);
    }

    #[test]
    fn encoded_frames_keep_their_place_in_the_queue() {
        let mut q = OutQueue::default();
        q.push_frame(Command::Response, Flags::default(), 0, 1, b"/a", b"x");
        q.push_encoded(Frame::notify(0, "/big", vec![1u8; ZERO_COPY_MIN]).to_bytes());
        q.push_encoded(Frame::notify(0, "/small", "y").to_bytes());
        let mut batch = Vec::new();
        assert_eq!(q.take_batch(&mut batch), 3);
        let mut wire: BytesMut = batch.iter().flat_map(|b| b.iter().copied()).collect();
        let mut methods = Vec::new();
        while let Some(f) = Decoder::default().decode(&mut wire).unwrap() {
            methods.push(String::from_utf8(f.method.to_vec()).unwrap());
        }
        assert_eq!(methods, ["/a", "/big", "/small"]);
    }

    #[test]
    fn a_secret_must_come_first_and_is_compared_exactly() {
        let router = Router::with_builtins();
        // Right secret: the auth call is answered, then requests are served.
        let mut conn = test_conn(1 << 20);
        conn.require_auth(Arc::from(&b"s3cret"[..]));
        let mut wire = BytesMut::new();
        Frame::request(1, AUTH_METHOD, "s3cret").encode_to(&mut wire);
        Frame::request(2, "/echo", "hi").encode_to(&mut wire);
        conn.handle_recv(&wire, &router).unwrap();
        let out = drain_output(&mut conn);
        assert!(!out[0].is_error() && out[0].header.seq == 1);
        assert_eq!((&out[1].payload[..], conn.rejected()), (&b"hi"[..], false));
        // Wrong secret, a prefix of it, or anything else first: one error, then nothing.
        for first in [
            Frame::request(1, AUTH_METHOD, "s3creT"),
            Frame::request(1, AUTH_METHOD, "s3cre"),
            Frame::request(1, "/echo", "s3cret"),
            Frame::ping(),
        ] {
            let mut conn = test_conn(1 << 20);
            conn.require_auth(Arc::from(&b"s3cret"[..]));
            let mut wire = BytesMut::new();
            first.encode_to(&mut wire);
            Frame::request(2, "/echo", "hi").encode_to(&mut wire);
            conn.handle_recv(&wire, &router).unwrap();
            conn.handle_recv(&Frame::request(3, "/echo", "x").to_bytes(), &router)
                .unwrap();
            let out = drain_output(&mut conn);
            assert_eq!(out.len(), 1, "only the error for {first:?}");
            assert!(out[0].is_error());
            assert_eq!(&out[0].payload[..], AUTH_REQUIRED.as_bytes());
            assert!(conn.rejected());
        }
        assert!(constant_time_eq(b"", b"") && !constant_time_eq(b"a", b"ab"));
    }

    #[test]
    fn panicking_handler_is_answered_with_an_error() {
        fn boom(_: &mut crate::router::Context<'_>) {
            panic!("boom");
        }
        let mut router = Router::with_builtins();
        router.add("/boom", boom).unwrap();
        let mut conn = test_conn(1 << 20);
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
