//! The transport seam, input side: turns the bytes a stream socket delivered into whole arpc
//! frames, borrowed where possible.
//!
//! A connection's path is bytes in → framing → frames → dispatch (`conn`) → frames →
//! `OutQueue` → bytes out. This module holds raw arpc framing; `conn::StreamFraming`
//! chooses between it and WebSocket (`ws::stream`), which unwraps messages and hands their
//! bytes to an [`ArpcFraming`] inside it. Datagram transports need no stream framing: each
//! datagram is parsed as exactly one frame and dispatched directly.
//!
//! Invariants: whole frames are decoded straight from the slice they arrived in; only the
//! tail of a partial frame is copied, and that copy grows only with bytes received (the
//! header — length limit included — is validated as soon as its 16 bytes are present).
//! A gzip-compressed frame (`user_flags` bit 7, arpc's gzip coder) has only its length
//! checked until it is whole; it is then inflated (never past the body limit) into a
//! buffer owned by this call and dropped once its frame is dispatched. Plain frames pay one
//! branch on byte 4 for this.

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::{DecodeError, FrameRef, HEADER_LEN, frame_len, parse_frame_any};

/// A partial-frame buffer that grew past this is released once its frame completes.
const PARTIAL_KEEP: usize = 64 * 1024;
/// A partial frame with at least this much still to come is received straight into its own
/// buffer ([`ArpcFraming::take_for_direct`]) instead of through the shared receive buffers.
pub(crate) const DIRECT_MIN: usize = 16 * 1024;
/// A partial frame up to this long has its whole length reserved as soon as its header is
/// in, so its pieces land without the buffer growing (and copying) under them; a longer one
/// reserves this much, then doubles. So a peer that declares a large frame and stops costs at
/// most this much memory it did not send.
pub(crate) const DIRECT_RESERVE: usize = 1024 * 1024;

/// Whether the consumer of frames wants more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Keep decoding.
    Continue,
    /// Stop now and keep none of the rest (the connection is being refused).
    Stop,
}

/// Raw arpc framing: a 16-byte header giving the body length, then the body.
#[derive(Debug)]
pub(crate) struct ArpcFraming {
    max_body: u32,
    partial: BytesMut,
    /// Compressed frames inflated so far.
    gzip_in: u64,
}

impl ArpcFraming {
    /// Bytes of an incomplete frame held.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// The held partial frame (for checks in fuzzing and tests).
    pub(crate) fn partial(&self) -> &BytesMut {
        &self.partial
    }

    /// How much of the partial frame is still to come, when it is at least [`DIRECT_MIN`].
    pub(crate) fn direct_remaining(&self) -> Option<usize> {
        let head = self.partial.first_chunk::<HEADER_LEN>()?;
        let frame_len = frame_len(head, self.max_body).ok()?;
        let remaining = frame_len - self.partial.len();
        (remaining >= DIRECT_MIN).then_some(remaining)
    }

    /// Lends the partial frame's buffer, with room reserved, to a direct receive of up to
    /// the returned number of bytes (never past the frame's end); `None` when
    /// [`ArpcFraming::direct_remaining`] is. Give it back with [`ArpcFraming::end_direct`]
    /// before decoding anything else.
    pub(crate) fn take_for_direct(&mut self) -> Option<(BytesMut, usize)> {
        let remaining = self.direct_remaining()?;
        let held = self.partial.len();
        self.reserve_frame(held + remaining);
        if self.partial.capacity() == held {
            // Past DIRECT_RESERVE and full: double, as appending would.
            self.partial.reserve(remaining.min(held));
        }
        let want = remaining.min(self.partial.capacity() - held);
        Some((std::mem::take(&mut self.partial), want))
    }

    /// Takes back the buffer a direct receive filled (it holds the partial frame, longer).
    pub(crate) fn end_direct(&mut self, buf: BytesMut) {
        debug_assert!(
            self.partial.is_empty(),
            "nothing decoded during a direct receive"
        );
        self.partial = buf;
    }

    /// Accepts bodies up to `max_body` bytes.
    pub(crate) fn new(max_body: u32) -> ArpcFraming {
        ArpcFraming {
            max_body,
            partial: BytesMut::new(),
            gzip_in: 0,
        }
    }

    /// Compressed frames inflated so far.
    pub(crate) fn gzip_in(&self) -> u64 {
        self.gzip_in
    }

    /// Feeds received bytes; calls `on_frame` for every whole frame in order, with the
    /// buffer it lies in when that buffer is the frame's own (a frame completed from pieces),
    /// so its payload can be kept or sent without a copy. An error means the peer broke the
    /// protocol; the connection must be closed.
    pub(crate) fn decode(
        &mut self,
        mut data: &[u8],
        mut on_frame: impl FnMut(&FrameRef<'_>, Option<&Bytes>) -> Next,
    ) -> Result<(), DecodeError> {
        if !self.partial.is_empty() {
            let (rest, next) = self.complete_partial(data, &mut on_frame)?;
            if !self.partial.is_empty() || next == Next::Stop {
                return Ok(());
            }
            data = rest;
        }
        loop {
            let mut inflated = None;
            let Some((frame, len)) = parse_frame_any(data, self.max_body, &mut inflated)? else {
                break;
            };
            let next = on_frame(&frame, None);
            self.gzip_in += u64::from(inflated.is_some());
            if next == Next::Stop {
                return Ok(());
            }
            data = &data[len..];
        }
        if let Some(head) = data.first_chunk::<HEADER_LEN>() {
            // Checked by the parse above.
            self.reserve_frame(frame_len(head, self.max_body)?);
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// Reserves room for the partial frame of `frame_len` bytes once, so its pieces are
    /// never moved by growth: the whole frame up to [`DIRECT_RESERVE`]; past that, appending
    /// doubles the buffer as it fills.
    fn reserve_frame(&mut self, frame_len: usize) {
        let target = frame_len.min(DIRECT_RESERVE);
        self.partial
            .reserve(target.saturating_sub(self.partial.len()));
    }

    /// Feeds `data` into the pending partial frame; returns what is left after it.
    fn complete_partial<'d>(
        &mut self,
        mut data: &'d [u8],
        on_frame: &mut impl FnMut(&FrameRef<'_>, Option<&Bytes>) -> Next,
    ) -> Result<(&'d [u8], Next), DecodeError> {
        if self.partial.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        let Some(head) = self.partial.first_chunk::<HEADER_LEN>() else {
            return Ok((data, Next::Continue));
        };
        let frame_len = frame_len(head, self.max_body)?;
        self.reserve_frame(frame_len);
        let take = (frame_len - self.partial.len()).min(data.len());
        self.partial.extend_from_slice(&data[..take]);
        data = &data[take..];
        let mut next = Next::Continue;
        if self.partial.len() == frame_len {
            let whole = std::mem::take(&mut self.partial).freeze();
            // An inflated frame lies in a buffer of its own, not in `whole`.
            let owner = (!ringrpc_protocol::gzip::is_compressed(&whole)).then_some(&whole);
            let mut inflated = None;
            let (frame, _) =
                parse_frame_any(&whole, self.max_body, &mut inflated)?.expect("a whole frame");
            next = on_frame(&frame, owner);
            self.gzip_in += u64::from(inflated.is_some());
            // Reused unless a handler kept part of it (a reply sent without copying).
            if let Ok(mut buf) = whole.try_into_mut() {
                if buf.capacity() <= PARTIAL_KEEP {
                    buf.clear();
                    self.partial = buf;
                }
            }
        }
        Ok((data, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame completed from pieces is handed over with the buffer it lies in (so its
    /// payload can be shared); one decoded straight from the input is not; and a buffer a
    /// handler kept a slice of is not reused for the next frame.
    /// A large frame's rest is received into the partial buffer lent out (as the kernel
    /// would, within the room reserved: no growth), then decodes with its own buffer.
    #[test]
    fn a_direct_receive_completes_a_large_frame_in_its_reserved_buffer() {
        let wire = Frame::request(3, "/echo", vec![9u8; 200_000]).to_bytes();
        let mut framing = ArpcFraming::new(1 << 20);
        framing
            .decode(&wire[..4096], |_, _| panic!("not whole"))
            .unwrap();
        assert_eq!(framing.direct_remaining(), Some(wire.len() - 4096));
        let (mut buf, want) = framing.take_for_direct().unwrap();
        assert_eq!(want, wire.len() - 4096);
        assert!(
            buf.capacity() >= wire.len(),
            "the whole frame reserved up front"
        );
        let capacity = buf.capacity();
        buf.extend_from_slice(&wire[4096..]);
        assert_eq!(buf.capacity(), capacity, "filled in place");
        framing.end_direct(buf);
        let mut got = None;
        framing
            .decode(&[], |frame, owner| {
                assert!(owner.is_some());
                got = Some((frame.header.seq, frame.payload.len()));
                Next::Continue
            })
            .unwrap();
        assert_eq!(got, Some((3, 200_000)));
        assert_eq!(framing.buffered(), 0);
        assert_eq!(framing.direct_remaining(), None);
    }

    /// Small rests stay on the shared buffers; a declared frame over `DIRECT_RESERVE` reserves
    /// no more than that before its bytes come (a peer that stops costs at most that).
    #[test]
    fn direct_receives_are_for_large_rests_and_reserve_a_bounded_amount() {
        let small = Frame::request(1, "/echo", vec![1u8; DIRECT_MIN]).to_bytes();
        let mut framing = ArpcFraming::new(64 << 20);
        framing.decode(&small[..100], |_, _| panic!()).unwrap();
        assert_eq!(
            framing.direct_remaining(),
            None,
            "{} to go",
            small.len() - 100
        );
        let mut framing = ArpcFraming::new(64 << 20);
        let big = Frame::request(2, "/echo", Vec::new()).to_bytes();
        let mut head = big[..HEADER_LEN].to_vec();
        head[..4].copy_from_slice(&(60u32 << 20).to_le_bytes());
        framing.decode(&head, |_, _| panic!()).unwrap();
        assert!(framing.partial().capacity() <= DIRECT_RESERVE + 64);
        let (buf, want) = framing.take_for_direct().unwrap();
        assert!(want <= DIRECT_RESERVE && buf.capacity() <= DIRECT_RESERVE + 64);
    }

    #[test]
    fn frames_completed_from_pieces_come_with_their_own_buffer() {
        let wire = Frame::request(1, "/echo", vec![7u8; 100]).to_bytes();
        let mut framing = ArpcFraming::new(1 << 20);
        let mut kept = None;
        framing
            .decode(&wire[..40], |_, _| panic!("not whole yet"))
            .unwrap();
        framing
            .decode(&wire[40..], |frame, owner| {
                let owner = owner.expect("assembled from pieces");
                kept = Some(owner.slice_ref(frame.payload));
                Next::Continue
            })
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&[7u8; 100][..]));
        let mut owned = None;
        framing
            .decode(&wire, |_, owner| {
                owned = Some(owner.is_some());
                Next::Continue
            })
            .unwrap();
        assert_eq!(
            owned,
            Some(false),
            "a whole frame in the input has no buffer of its own"
        );
        // The kept slice is still intact after more input.
        framing.decode(&wire[..10], |_, _| Next::Continue).unwrap();
        assert_eq!(kept.as_deref(), Some(&[7u8; 100][..]));
    }
    use ringrpc_protocol::Frame;
    use ringrpc_protocol::gzip::compress_frame;

    /// A compressed frame between two plain ones, cut at every pair of offsets: the same
    /// three frames come out, the middle one inflated, and it is counted.
    #[test]
    fn compressed_frames_decode_at_every_split() {
        let big = Frame::request(2, "/echo", "split me ".repeat(30)).to_bytes();
        let packed = compress_frame(&big, 0, 6).unwrap();
        let mut stream = Frame::request(1, "/echo", "a").to_bytes().to_vec();
        stream.extend_from_slice(&packed);
        stream.extend_from_slice(&Frame::ping().to_bytes());
        for cut in 0..=stream.len() {
            for cut2 in [cut, (cut + 7).min(stream.len())] {
                let mut framing = ArpcFraming::new(4096);
                let mut seen = Vec::new();
                for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    framing
                        .decode(part, |f, _| {
                            seen.push((f.header.seq, f.payload.len()));
                            Next::Continue
                        })
                        .unwrap();
                }
                assert_eq!(seen, [(1, 1), (2, 270), (0, 0)], "cut at {cut}, {cut2}");
                assert_eq!(framing.gzip_in(), 1);
                assert_eq!(framing.buffered(), 0);
            }
        }
    }

    #[test]
    fn a_compressed_frame_over_the_limit_is_refused_from_its_header() {
        let big = Frame::request(2, "/echo", vec![b'x'; 5000]).to_bytes();
        let packed = compress_frame(&big, 0, 6).unwrap();
        // Its body fits on the wire but inflates past 1000 bytes.
        let mut framing = ArpcFraming::new(1000);
        let err = framing.decode(&packed, |_, _| Next::Continue).unwrap_err();
        assert!(matches!(err, DecodeError::Gzip(_)), "{err:?}");
        // A declared length over the limit is refused with only the header in.
        let mut framing = ArpcFraming::new(8);
        let err = framing
            .decode(&packed[..16], |_, _| Next::Continue)
            .unwrap_err();
        assert!(matches!(err, DecodeError::BodyTooLarge { .. }), "{err:?}");
    }
}
