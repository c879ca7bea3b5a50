//! The transport seam, input side: turns the bytes a stream socket delivered into whole arpc
//! frames, borrowed where possible.
//!
//! A connection's path is bytes in → framing → frames → dispatch (`conn`) → frames →
//! `OutQueue` → bytes out. This module holds raw arpc framing; `transport::tcp` chooses
//! between it and WebSocket (`transport::ws::framing`), which unwraps messages and hands
//! their bytes to an [`ArpcFraming`] inside it. Datagram transports need no stream framing: each
//! datagram is parsed as exactly one frame and dispatched directly.
//!
//! Invariants: whole frames are decoded straight from the slice they arrived in; only the
//! tail of a partial frame is copied (the header — length limit included — is validated as
//! soon as its 16 bytes are present). Memory for a partial frame follows the bytes that
//! arrived, never its declared length: its buffer has room for at most twice the frame's
//! bytes in hand or known to wait (later in the receive batch, or in the socket) — at
//! least [`FIRST_STEP`], never past the frame — or is the buffer kept from the connection's
//! previous frame (at most [`PARTIAL_KEEP`]); it grows in doubling steps, and a direct
//! receive asks only for the room so reserved. So a peer that declares a 60 MiB frame,
//! sends 8 KiB and stops pins 16 KiB.
//! A gzip-compressed frame (`user_flags` bit 7, arpc's gzip coder) has only its length
//! checked until it is whole; it is then inflated (never past the body limit) into a
//! buffer owned by this call and dropped once its frame is dispatched. Plain frames pay one
//! branch on byte 4 for this.

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::{DecodeError, FrameRef, HEADER_LEN, frame_len, parse_frame_any};

/// A partial-frame buffer that grew past this is released once its frame completes; a
/// smaller one is kept for the connection's next partial frame.
const PARTIAL_KEEP: usize = 64 * 1024;
/// A partial frame with at least this much still to come is received straight into its own
/// buffer ([`ArpcFraming::take_for_direct`]) instead of through the shared receive buffers.
pub(crate) const DIRECT_MIN: usize = 16 * 1024;
/// The room a partial frame gets first: a frame up to this long is reserved whole as soon as
/// its header is in.
pub(crate) const FIRST_STEP: usize = 16 * 1024;

/// The room a partial frame of `frame_len` bytes may have once `arrived` of its bytes are in
/// (held, or known to wait): twice that, at least [`FIRST_STEP`], never past the frame. So a
/// peer that declares a large frame and stops pins about twice what it sent; a frame that
/// trickles in moves (is copied) about log2(len / FIRST_STEP) times, and one that has
/// arrived gets its room at once.
pub(crate) fn room_for(frame_len: usize, arrived: usize) -> usize {
    frame_len.min(arrived.saturating_mul(2).max(FIRST_STEP))
}

/// Makes room in `buf`, which holds the start of a frame of `frame_len` bytes, for `needed`
/// of them: when it is too small it moves (once, exactly) to [`room_for`] what arrived —
/// `needed`, plus what `waiting` reports of the rest when that could matter (the frame is
/// longer than twice `needed`), so a frame that arrives fast is not moved at every doubling.
fn make_room(
    buf: &mut BytesMut,
    frame_len: usize,
    needed: usize,
    waiting: &mut impl FnMut(usize) -> usize,
) {
    if buf.capacity() >= needed {
        return;
    }
    let mut room = room_for(frame_len, needed);
    if room < frame_len {
        room = room_for(
            frame_len,
            needed.saturating_add(waiting(frame_len - needed)),
        );
    }
    move_to(buf, room);
}

/// Grows `buf`, which holds the start of a frame of `frame_len` bytes, to [`room_for`] what
/// it holds when it has less room than that: room for the bytes to come, in steps that
/// double with what arrived.
pub(crate) fn reserve_ahead(buf: &mut BytesMut, frame_len: usize) {
    let room = room_for(frame_len, buf.len());
    if buf.capacity() < room {
        move_to(buf, room);
    }
}

/// Moves what `buf` holds into a buffer of exactly `room` bytes (`BytesMut::reserve` could
/// double past it).
fn move_to(buf: &mut BytesMut, room: usize) {
    let mut bigger = BytesMut::with_capacity(room);
    bigger.extend_from_slice(buf);
    *buf = bigger;
}

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
    /// Compressed frames inflated since [`ArpcFraming::take_gzip_in`] last took them (a
    /// `u32` taken after every read, so the struct packs into 40 bytes of every slot).
    gzip_in: u32,
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

    /// Lends the partial frame's buffer to a direct receive of up to the returned number of
    /// bytes: the room it has (never past the frame's end), grown first to [`room_for`] what
    /// arrived — the bytes held plus `queued`, those waiting in the socket — when what it
    /// has is under half of that. So each direct receive asks for at most about as
    /// much as has arrived, and a peer that stops mid-frame pins only that. `None` when
    /// [`ArpcFraming::direct_remaining`] is. Give it back with [`ArpcFraming::end_direct`]
    /// before decoding anything else.
    pub(crate) fn take_for_direct(&mut self, queued: usize) -> Option<(BytesMut, usize)> {
        let remaining = self.direct_remaining()?;
        let held = self.partial.len();
        let frame_len = held + remaining;
        let room = room_for(frame_len, held.saturating_add(queued));
        let spare = self.partial.capacity() - held;
        if spare < (room - held) / 2 {
            move_to(&mut self.partial, room);
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

    /// Compressed frames inflated since the last call.
    pub(crate) fn take_gzip_in(&mut self) -> u32 {
        std::mem::take(&mut self.gzip_in)
    }

    /// [`ArpcFraming::decode_from_socket`] of bytes with nothing known to follow them.
    pub(crate) fn decode(
        &mut self,
        data: &[u8],
        on_frame: impl FnMut(&FrameRef<'_>, Option<&Bytes>) -> Next,
    ) -> Result<(), DecodeError> {
        self.decode_from_socket(data, |_| 0, on_frame)
    }

    /// Feeds received bytes; calls `on_frame` for every whole frame in order, with the
    /// buffer it lies in when that buffer is the frame's own (a frame completed from pieces),
    /// so its payload can be kept or sent without a copy. `waiting(rest)` tells how many
    /// more bytes have arrived and wait to be decoded (received but not yet fed, or in the
    /// socket; it may stop counting at `rest`); it is asked only when a partial frame's
    /// buffer must grow and the bytes in hand leave it short of the whole frame. An error
    /// means the peer broke the protocol; the connection must be closed.
    pub(crate) fn decode_from_socket(
        &mut self,
        mut data: &[u8],
        mut waiting: impl FnMut(usize) -> usize,
        mut on_frame: impl FnMut(&FrameRef<'_>, Option<&Bytes>) -> Next,
    ) -> Result<(), DecodeError> {
        if !self.partial.is_empty() {
            let (rest, next) = self.complete_partial(data, &mut waiting, &mut on_frame)?;
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
            self.gzip_in += u32::from(inflated.is_some());
            if next == Next::Stop {
                return Ok(());
            }
            data = &data[len..];
        }
        if let Some(head) = data.first_chunk::<HEADER_LEN>() {
            // Checked by the parse above.
            let frame_len = frame_len(head, self.max_body)?;
            make_room(&mut self.partial, frame_len, data.len(), &mut waiting);
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// Feeds `data` into the pending partial frame; returns what is left after it.
    fn complete_partial<'d>(
        &mut self,
        mut data: &'d [u8],
        waiting: &mut impl FnMut(usize) -> usize,
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
        let take = (frame_len - self.partial.len()).min(data.len());
        let needed = self.partial.len() + take;
        make_room(&mut self.partial, frame_len, needed, waiting);
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
            self.gzip_in += u32::from(inflated.is_some());
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

    /// Receives the rest of `framing`'s partial frame by direct receives of what each one
    /// asks for (as the kernel would, within the room lent: no growth), the socket holding
    /// `queued` more bytes each time; checks every loan against what had arrived and returns
    /// how many receives it took.
    fn receive_directly(framing: &mut ArpcFraming, wire: &[u8], queued: usize) -> usize {
        let mut receives = 0;
        while let Some(remaining) = framing.direct_remaining() {
            let held = framing.buffered();
            let (mut buf, want) = framing.take_for_direct(queued).unwrap();
            let arrived = held + queued;
            assert!(want > 0 && want <= remaining, "{want} of {remaining}");
            assert!(
                buf.capacity() <= room_for(wire.len(), arrived),
                "{} reserved with {arrived} arrived",
                buf.capacity()
            );
            let capacity = buf.capacity();
            buf.extend_from_slice(&wire[held..held + want]);
            assert_eq!(buf.capacity(), capacity, "filled in place");
            framing.end_direct(buf);
            receives += 1;
        }
        receives
    }

    /// A large frame's rest is received into the partial buffer lent out, in steps that
    /// double what arrived (a direct receive never asks for more than that), then decodes
    /// with its own buffer; the small rest the last step leaves comes as ordinary input.
    #[test]
    fn direct_receives_of_a_large_frame_ask_for_what_arrived_in_doubling_steps() {
        let wire = Frame::request(3, "/echo", vec![9u8; 200_000]).to_bytes();
        let mut framing = ArpcFraming::new(1 << 20);
        framing
            .decode(&wire[..4096], |_, _| panic!("not whole"))
            .unwrap();
        assert_eq!(framing.partial().capacity(), FIRST_STEP);
        let receives = receive_directly(&mut framing, &wire, 0);
        // 16 KiB, then 32, 64, 128 KiB and the rest of the frame.
        assert!((4..=5).contains(&receives), "{receives} receives");
        let held = framing.buffered();
        let mut got = None;
        framing
            .decode(&wire[held..], |frame, owner| {
                assert!(owner.is_some());
                got = Some((frame.header.seq, frame.payload.len()));
                Next::Continue
            })
            .unwrap();
        assert_eq!(got, Some((3, 200_000)));
        assert_eq!(framing.buffered(), 0);
        assert_eq!(framing.direct_remaining(), None);
    }

    /// When the rest of the frame is already waiting in the socket, room for all of it is
    /// reserved at once and one direct receive takes it.
    #[test]
    fn a_frame_already_waiting_in_the_socket_is_received_in_one_step() {
        let wire = Frame::request(3, "/echo", vec![9u8; 1 << 20]).to_bytes();
        let mut framing = ArpcFraming::new(2 << 20);
        framing
            .decode(&wire[..16384], |_, _| panic!("not whole"))
            .unwrap();
        let rest = wire.len() - 16384;
        assert_eq!(receive_directly(&mut framing, &wire, rest), 1);
        assert_eq!(
            framing.partial().capacity(),
            wire.len(),
            "exactly the frame"
        );
        let mut got = None;
        framing
            .decode(&[], |frame, _| {
                got = Some(frame.payload.len());
                Next::Continue
            })
            .unwrap();
        assert_eq!(got, Some(1 << 20));
    }

    /// With the rest of a frame already waiting in the socket, the piece that starts it gets
    /// room for the whole frame at once (the socket is asked once); a frame that fits twice
    /// what arrived never asks.
    #[test]
    fn room_for_bytes_waiting_in_the_socket_is_made_at_once() {
        let wire = Frame::request(4, "/echo", vec![2u8; 65536]).to_bytes();
        let mut framing = ArpcFraming::new(1 << 20);
        let mut asked = 0;
        let waiting = |rest| {
            asked += 1;
            assert_eq!(rest, wire.len() - 16384);
            rest
        };
        framing
            .decode_from_socket(&wire[..16384], waiting, |_, _| panic!("not whole"))
            .unwrap();
        assert_eq!((asked, framing.partial().capacity()), (1, wire.len()));
        let mut got = None;
        for piece in wire[16384..].chunks(16384) {
            framing
                .decode_from_socket(
                    piece,
                    |_| panic!("room enough"),
                    |f, _| {
                        got = Some(f.payload.len());
                        Next::Continue
                    },
                )
                .unwrap();
        }
        assert_eq!(got, Some(65536));
        let small = Frame::request(5, "/echo", vec![1u8; 5000]).to_bytes();
        framing
            .decode_from_socket(&small[..100], |_| panic!("not asked"), |_, _| panic!())
            .unwrap();
        assert_eq!(framing.partial().capacity(), small.len());
    }

    /// Small rests stay on the shared buffers; a declared frame of 60 MiB of which 8 KiB
    /// came reserves twice that, and a direct receive for it asks for no more than that (a
    /// peer that stops costs at most that).
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
        let mut big = Frame::request(2, "/echo", Vec::new()).to_bytes().to_vec();
        big[..4].copy_from_slice(&(60u32 << 20).to_le_bytes());
        big.resize(big.len() + 8192, 7);
        framing.decode(&big, |_, _| panic!()).unwrap();
        assert_eq!(framing.partial().capacity(), 2 * big.len());
        let (buf, want) = framing.take_for_direct(0).unwrap();
        assert_eq!(
            buf.capacity(),
            2 * big.len(),
            "not grown: half the room is spare"
        );
        assert_eq!(want, big.len());
    }

    /// Trickled through ordinary input, a partial frame's buffer is always within twice what
    /// arrived (or the first step), grows only when full, and the frame decodes whole.
    #[test]
    fn a_trickled_frame_holds_at_most_twice_what_arrived() {
        let wire = Frame::request(5, "/echo", vec![4u8; 300_000]).to_bytes();
        let mut framing = ArpcFraming::new(1 << 20);
        let mut moves = 0;
        let mut last_capacity = 0;
        let mut got = None;
        for piece in wire.chunks(1000) {
            framing
                .decode(piece, |frame, _| {
                    got = Some(frame.payload.len());
                    Next::Continue
                })
                .unwrap();
            let capacity = framing.partial().capacity();
            if got.is_none() {
                assert!(
                    capacity <= room_for(wire.len(), framing.buffered()),
                    "{capacity} for {}",
                    framing.buffered()
                );
                moves += usize::from(capacity != last_capacity);
                last_capacity = capacity;
            }
        }
        assert_eq!(got, Some(300_000));
        // 16, 32, 64, 128, 256 KiB, then the whole frame.
        assert!(moves <= 6, "{moves} moves");
    }

    /// Plain frames around one large enough to grow in steps, cut at many pairs of offsets
    /// (every offset near the frame edges and the growth steps): the same frames come out.
    #[test]
    fn frames_that_grow_in_steps_decode_at_every_split() {
        let mut stream = Frame::request(1, "/echo", "a").to_bytes().to_vec();
        let first = stream.len();
        stream.extend_from_slice(&Frame::request(2, "/echo", vec![6u8; 70_000]).to_bytes());
        let second = stream.len();
        stream.extend_from_slice(&Frame::ping().to_bytes());
        let mut cuts: Vec<usize> = (0..=stream.len()).step_by(997).collect();
        for edge in [first, first + HEADER_LEN, first + FIRST_STEP, second] {
            cuts.extend(edge.saturating_sub(20)..(edge + 20).min(stream.len()));
        }
        for &cut in &cuts {
            for cut2 in [
                cut,
                (cut + 7).min(stream.len()),
                (cut + 40_000).min(stream.len()),
            ] {
                let mut framing = ArpcFraming::new(1 << 20);
                let mut seen = Vec::new();
                for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    framing
                        .decode(part, |f, _| {
                            seen.push((f.header.seq, f.payload.len()));
                            Next::Continue
                        })
                        .unwrap();
                }
                assert_eq!(seen, [(1, 1), (2, 70_000), (0, 0)], "cut at {cut}, {cut2}");
                assert_eq!(framing.buffered(), 0);
            }
        }
    }

    /// A frame completed from pieces is handed over with the buffer it lies in (so its
    /// payload can be shared); one decoded straight from the input is not; and a buffer a
    /// handler kept a slice of is not reused for the next frame.
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
                assert_eq!(framing.take_gzip_in(), 1);
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
