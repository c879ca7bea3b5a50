//! Frames waiting to be sent on one connection, in order, and the vectored batches that
//! carry them to the socket.
//!
//! Invariants: output keeps frame order; small frames are coalesced into one buffer, large
//! payloads stay separate `Bytes` (never copied); a partially sent batch resumes exactly
//! where it stopped; a batch never carries more than [`IOV_MAX`] segments. With gzip on
//! (a per-connection setting), every frame of any push path that is longer than the
//! threshold is encoded into a buffer of its own, compressed, and queued compressed if that
//! is shorter (the WebSocket envelope then wraps the compressed frame); with it off, or
//! for shorter frames, the push paths are unchanged but for one comparison.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use ringrpc_protocol::{Command, Flags, HEADER_LEN, write_frame};

use ringrpc_uring::IOV_MAX;

use crate::transport::coder::Gzip;
use crate::transport::ws::session::binary_message_header;

/// Payloads at least this large are queued as their own `Bytes` instead of being copied.
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;
/// The coalescing buffer grows by at least this much, so a tick's small frames do not
/// reallocate it frame by frame.
pub(crate) const SMALL_GROWTH: usize = 1024;
/// A coalescing buffer up to this large is handed back for reuse when its connection goes
/// quiet ([`OutQueue::take_idle_buffer`]); a larger one (a bulk sender's) stays.
pub(crate) const SPARE_BUFFER_MAX: usize = 64 * 1024;

/// Frames waiting to be sent, in order.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    small: BytesMut,
    segments: VecDeque<Bytes>,
    queued: usize,
    frames: u64,
    /// Bytes handed out in the batch being sent.
    in_flight: usize,
    /// Each frame goes in one WebSocket binary message (after an upgrade).
    websocket: bool,
    /// Compress frames over a threshold, if on.
    gzip: Option<Gzip>,
    /// Frames queued compressed since the last [`OutQueue::take_gzip_out`].
    gzip_out: u64,
}

impl OutQueue {
    /// From now on, each frame is sent as one WebSocket binary message.
    pub(crate) fn wrap_in_websocket(&mut self) {
        self.websocket = true;
    }

    /// Compresses frames longer than `threshold` bytes from now on (`None`: never).
    pub(crate) fn set_gzip_threshold(&mut self, threshold: Option<usize>) {
        self.gzip = threshold.map(|threshold| Gzip { threshold });
    }

    /// Frames queued compressed since the last call.
    pub(crate) fn take_gzip_out(&mut self) -> u64 {
        std::mem::take(&mut self.gzip_out)
    }

    /// Whether a frame of `len` bytes must go through [`OutQueue::push_gzip`].
    #[inline]
    fn wants_gzip(&self, len: usize) -> bool {
        self.gzip.is_some_and(|g| g.wants(len))
    }

    /// Encodes a frame over the threshold into a buffer of its own and queues it through
    /// compression.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn push_gzip(
        &mut self,
        stream_bits: u8,
        cmd: Command,
        flags: Flags,
        user_flags: u8,
        seq: u64,
        method: &[u8],
        payload: &[u8],
    ) {
        let mut frame = BytesMut::with_capacity(HEADER_LEN + method.len() + payload.len());
        write_frame(&mut frame, cmd, flags, user_flags, seq, method, payload);
        frame[5] |= stream_bits;
        self.push_gzip_encoded(frame.freeze());
    }

    /// Queues `frame` compressed if that makes it shorter, else as it is.
    #[cold]
    fn push_gzip_encoded(&mut self, frame: Bytes) {
        let compressed = self.gzip.and_then(|g| g.compress(&frame));
        match compressed {
            Some(small) => {
                self.gzip_out += 1;
                self.push_encoded_plain(small);
            }
            None => self.push_encoded_plain(frame),
        }
    }

    /// Makes room for `len` more bytes in the coalescing buffer, growing it by at least
    /// [`SMALL_GROWTH`].
    #[inline]
    fn small_room(&mut self, len: usize) {
        if self.small.capacity() - self.small.len() < len {
            // A power of two, so doubling lands on the sizes `SPARE_BUFFER_MAX` is.
            self.small
                .reserve(len.max(SMALL_GROWTH).next_power_of_two());
        }
    }

    /// With nothing queued or being sent: takes the coalescing buffer, emptied and with its
    /// room reclaimed, so a quiet connection holds none. `None` when something is pending;
    /// also when the buffer is larger than [`SPARE_BUFFER_MAX`] (it stays) or smaller than
    /// [`SMALL_GROWTH`] (it is freed). Give one back with [`OutQueue::give_buffer`].
    pub(crate) fn take_idle_buffer(&mut self) -> Option<BytesMut> {
        if self.queued != 0 || self.in_flight != 0 || !self.segments.is_empty() {
            return None;
        }
        // `try_reclaim` answers whether the allocation can hold that much, without allocating.
        if self.small.try_reclaim(SPARE_BUFFER_MAX + 1) {
            // A bulk sender's: kept, so its next burst does not grow a buffer from scratch.
            return None;
        }
        let mut buf = std::mem::take(&mut self.small);
        buf.try_reclaim(SMALL_GROWTH).then_some(buf)
    }

    /// Whether the coalescing buffer has no room (a connection that went quiet).
    pub(crate) fn wants_buffer(&self) -> bool {
        self.small.capacity() == 0
    }

    /// Uses `buf` (empty) as the coalescing buffer, when it has no room.
    pub(crate) fn give_buffer(&mut self, buf: BytesMut) {
        debug_assert!(buf.is_empty());
        if self.small.is_empty() {
            self.small = buf;
        }
    }

    /// Writes the WebSocket message header for a frame of `frame_len` bytes, if wrapping.
    fn envelope(&mut self, frame_len: usize) {
        if self.websocket {
            let header = binary_message_header(frame_len);
            self.small_room(header.as_bytes().len());
            self.small.extend_from_slice(header.as_bytes());
            self.queued += header.as_bytes().len();
        }
    }

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
        self.push_copied(0, cmd, flags, user_flags, seq, method, payload);
    }

    /// As [`OutQueue::push_frame`], with `stream_bits` (local, EOF) or-ed into the cmd byte.
    #[allow(clippy::too_many_arguments)]
    fn push_copied(
        &mut self,
        stream_bits: u8,
        cmd: Command,
        flags: Flags,
        user_flags: u8,
        seq: u64,
        method: &[u8],
        payload: &[u8],
    ) {
        let len = HEADER_LEN + method.len() + payload.len();
        if self.wants_gzip(len) {
            return self.push_gzip(stream_bits, cmd, flags, user_flags, seq, method, payload);
        }
        self.envelope(len);
        self.small_room(len);
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
        self.small[before + 5] |= stream_bits;
        self.queued += self.small.len() - before;
        self.frames += 1;
    }

    /// Queues one Stream frame (`stream_bits` = local and EOF bits of the cmd byte); a large
    /// `payload` is sent from its own buffer without copying.
    pub fn push_stream_frame(
        &mut self,
        stream_bits: u8,
        flags: Flags,
        id: u64,
        method: &[u8],
        payload: Bytes,
    ) {
        self.push_shared(stream_bits, Command::Stream, flags, 0, id, method, payload);
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
        self.push_shared(0, cmd, flags, user_flags, seq, method, payload);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_shared(
        &mut self,
        stream_bits: u8,
        cmd: Command,
        flags: Flags,
        user_flags: u8,
        seq: u64,
        method: &[u8],
        payload: Bytes,
    ) {
        if payload.len() < ZERO_COPY_MIN {
            return self.push_copied(stream_bits, cmd, flags, user_flags, seq, method, &payload);
        }
        let len = HEADER_LEN + method.len() + payload.len();
        if self.wants_gzip(len) {
            return self.push_gzip(stream_bits, cmd, flags, user_flags, seq, method, &payload);
        }
        self.envelope(len);
        self.small_room(HEADER_LEN + method.len());
        let before = self.small.len();
        write_frame(&mut self.small, cmd, flags, user_flags, seq, method, &[]);
        self.small[before + 5] |= stream_bits;
        // write_frame wrote body_len for an empty payload; patch in the real one. Every public
        // way in refuses a body over the wire's 32-bit length first (`error::check_body`), so
        // this never truncates silently.
        let body_len = u32::try_from(method.len() + payload.len())
            .expect("frame bodies over 4 GiB are refused before they are queued");
        self.small[before..before + 4].copy_from_slice(&body_len.to_le_bytes());
        self.queued += self.small.len() - before + payload.len();
        self.seal_small();
        self.segments.push_back(payload);
        self.frames += 1;
    }

    /// Queues one frame encoded elsewhere (another thread, or once for a broadcast); a
    /// large one is sent from its own buffer, shared, without copying.
    pub fn push_encoded(&mut self, frame: Bytes) {
        if self.wants_gzip(frame.len()) {
            return self.push_gzip_encoded(frame);
        }
        self.push_encoded_plain(frame);
    }

    /// [`OutQueue::push_encoded`] without compression.
    fn push_encoded_plain(&mut self, frame: Bytes) {
        self.envelope(frame.len());
        if frame.len() < ZERO_COPY_MIN {
            self.small_room(frame.len());
            self.small.extend_from_slice(&frame);
        } else {
            self.seal_small();
            self.segments.push_back(frame.clone());
        }
        self.queued += frame.len();
        self.frames += 1;
    }

    /// Queues bytes as they are, never wrapped (reflect mode, HTTP responses, WebSocket
    /// control frames: no frame counted).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.small_room(bytes.len());
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
        if self.segments.is_empty() {
            // Only small frames (the common case): straight from their buffer, so a
            // connection that never queues a large payload never allocates the deque.
            if !self.small.is_empty() {
                batch.push(self.small.split().freeze());
            }
        } else {
            self.seal_small();
            let n = self.segments.len().min(IOV_MAX);
            batch.extend(self.segments.drain(..n));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::{Decoder, Frame};

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

    /// Small frames only: one segment straight from the coalescing buffer.
    #[test]
    fn small_frames_go_out_as_one_segment() {
        let mut q = OutQueue::default();
        q.push_frame(Command::Response, Flags::default(), 0, 1, b"/a", b"one");
        q.push_frame(Command::Response, Flags::default(), 0, 2, b"/a", b"two");
        let mut batch = Vec::new();
        assert_eq!(q.take_batch(&mut batch), 2);
        assert_eq!(batch.len(), 1);
        let d = Decoder::new(usize::MAX as u32);
        let mut wire = BytesMut::from(&batch[0][..]);
        assert_eq!(&d.decode(&mut wire).unwrap().unwrap().payload[..], b"one");
        assert_eq!(&d.decode(&mut wire).unwrap().unwrap().payload[..], b"two");
    }

    /// A quiet queue gives up its buffer (so an idle connection holds none) only once the
    /// send is done and nothing waits; a buffer given back is used without allocating.
    #[test]
    fn a_quiet_queue_hands_over_its_buffer_and_uses_one_given() {
        let mut q = OutQueue::default();
        q.push_frame(Command::Response, Flags::default(), 0, 1, b"/a", b"one");
        let mut batch = Vec::new();
        q.take_batch(&mut batch);
        assert!(q.take_idle_buffer().is_none(), "a batch is in flight");
        q.sent(&mut batch, 5);
        assert!(q.take_idle_buffer().is_none(), "the rest still waits");
        q.take_batch(&mut batch);
        let rest = batch.iter().map(Bytes::len).sum();
        q.sent(&mut batch, rest);
        let buf = q.take_idle_buffer().expect("quiet: the buffer comes out");
        assert!(buf.is_empty() && buf.capacity() >= SMALL_GROWTH);
        assert!(q.wants_buffer());
        let room = buf.as_ptr();
        q.give_buffer(buf);
        q.push_frame(Command::Response, Flags::default(), 0, 2, b"/a", b"two");
        q.take_batch(&mut batch);
        assert_eq!(batch[0].as_ptr(), room, "written into the buffer given");
    }

    /// A buffer past the reuse limit stays with its connection for the next burst.
    #[test]
    fn a_large_quiet_buffer_stays() {
        let mut q = OutQueue::default();
        // Copied (each under ZERO_COPY_MIN), together past SPARE_BUFFER_MAX.
        for seq in 1..=(SPARE_BUFFER_MAX / 15_000 + 1) as u64 {
            q.push_frame(
                Command::Response,
                Flags::default(),
                0,
                seq,
                b"/a",
                &[0u8; 15_000],
            );
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch);
        let all = batch.iter().map(Bytes::len).sum();
        q.sent(&mut batch, all);
        assert!(q.take_idle_buffer().is_none());
        assert!(!q.wants_buffer(), "kept, with its room");
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

    /// Every push path compresses frames over the threshold (when that is shorter) and
    /// leaves the others alone; order is kept.
    #[test]
    fn gzip_applies_to_every_push_path_over_the_threshold() {
        use ringrpc_protocol::gzip::{decompress_frame, is_compressed};
        let big = vec![b'a'; 300];
        let mut q = OutQueue::default();
        q.set_gzip_threshold(Some(64));
        q.push_frame(Command::Response, Flags::default(), 0, 1, b"/a", &big);
        q.push_frame(Command::Response, Flags::default(), 0, 2, b"/a", b"short");
        q.push_frame_bytes(
            Command::Notify,
            Flags::default(),
            0,
            3,
            b"/b",
            Bytes::from(vec![7u8; ZERO_COPY_MIN]),
        );
        q.push_encoded(Frame::notify(4, "/c", big.clone()).to_bytes());
        q.push_stream_frame(0xc0, Flags::default(), 5, b"/s", Bytes::from(big.clone()));
        q.push_pong();
        assert_eq!(q.take_gzip_out(), 4);
        let mut batch = Vec::new();
        assert_eq!(q.take_batch(&mut batch), 6);
        let wire: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        let mut rest = &wire[..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let len = 16 + u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let (frame, tail) = rest.split_at(len);
            rest = tail;
            let plain = if is_compressed(frame) {
                decompress_frame(frame, u32::MAX - 16).unwrap()
            } else {
                Bytes::copy_from_slice(frame)
            };
            let mut buf = BytesMut::from(&plain[..]);
            let f = Decoder::default().decode(&mut buf).unwrap().unwrap();
            seen.push((f.header.seq, is_compressed(frame), f.payload.len()));
            if f.header.cmd == Command::Stream {
                assert!(f.header.stream_local && f.header.stream_eof);
            }
        }
        assert_eq!(
            seen,
            [
                (1, true, 300),
                (2, false, 5),
                (3, true, ZERO_COPY_MIN),
                (4, true, 300),
                (5, true, 300),
                (0, false, 0)
            ]
        );
    }
}
