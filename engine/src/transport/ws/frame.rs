//! The RFC 6455 frame codec (§5.2), sans-IO: decodes one frame at a time from a receive
//! buffer (unmasking in place) and encodes the headers of our own, unmasked, frames.
//!
//! Invariants: a frame's header is validated as soon as its bytes are present, so reserved
//! bits, unknown opcodes, a missing (or, client side, present) mask, a fragmented or over-125
//! control frame and a 64-bit length with its top bit set are refused before any payload is
//! buffered; a data frame's length is checked against [`Limits::max_payload`] before any
//! memory is reserved for it, and room for a partial frame grows only with the bytes that
//! arrived (at most twice what the buffer holds, or `transport::arpc::FIRST_STEP`; never the
//! declared length up front); `decode` consumes bytes only when it returns a whole frame and
//! never panics on any input.

use std::fmt;

use bytes::{Buf, BufMut, BytesMut};

use crate::transport::arpc::reserve_ahead;

/// The largest payload of a control frame (§5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub(crate) const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (§5.2); the other values are reserved and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// The opcode's 4-bit wire value.
    pub(crate) fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What the decoder accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest data-frame payload accepted now (the session lowers it by what a
    /// fragmented message already holds). Over it: [`WsError::TooBig`].
    pub(crate) max_payload: usize,
    /// Server side: frames must be masked. Client side: frames must not be.
    pub(crate) expect_masked: bool,
}

/// One decoded frame; the payload is already unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WsFrame {
    pub(crate) fin: bool,
    pub(crate) opcode: Opcode,
    pub(crate) payload: BytesMut,
}

/// Why the peer broke the protocol; each maps to the close code we answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsError {
    /// 1002: a protocol violation.
    Protocol(&'static str),
    /// 1007: text (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// 1009: a message over the size limit.
    TooBig,
}

impl WsError {
    /// The close code that reports this error to the peer.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::InvalidUtf8 => 1007,
            WsError::TooBig => 1009,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Protocol(why) => write!(f, "websocket protocol error: {why}"),
            WsError::InvalidUtf8 => f.write_str("websocket text is not UTF-8"),
            WsError::TooBig => f.write_str("websocket message over the size limit"),
        }
    }
}

impl std::error::Error for WsError {}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)`: incomplete (nothing consumed; once the length is known and accepted, room is
/// reserved ahead in steps that double with the bytes held, never past the frame).
/// `Ok(Some(frame))`: its bytes were consumed. `Err`: close the connection with
/// [`WsError::close_code`].
pub(crate) fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<WsFrame>, WsError> {
    let Some(&[b0, b1]) = buf.get(..2) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::Protocol("unknown opcode"))?;
    let masked = b1 & 0x80 != 0;
    if masked != limits.expect_masked {
        return Err(WsError::Protocol(if masked {
            "masked frame from server"
        } else {
            "unmasked frame from client"
        }));
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(WsError::Protocol("fragmented control frame"));
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(WsError::Protocol("control frame over 125 bytes"));
        }
    }
    let (len, mut at) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("64-bit length with top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let len = match usize::try_from(len) {
        Ok(len) if len <= limits.max_payload || opcode.is_control() => len,
        _ => return Err(WsError::TooBig),
    };
    let mask = if masked {
        match buf.get(at..at + 4) {
            Some(m) => {
                at += 4;
                Some([m[0], m[1], m[2], m[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    let total = at + len;
    if buf.len() < total {
        reserve_ahead(buf, total);
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len);
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    Ok(Some(WsFrame {
        fin,
        opcode,
        payload,
    }))
}

/// XORs `data` with the 4-byte `mask`, starting at mask offset 0 (masking is its own inverse).
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// The header of one unmasked (server) frame, ready to go in front of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl FrameHeader {
    /// The header for a frame of `opcode` carrying `len` payload bytes, minimal length form.
    pub(crate) fn new(opcode: Opcode, fin: bool, len: usize) -> Self {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[0] = (u8::from(fin) << 7) | opcode.bits();
        let n = if len <= 125 {
            // `len` fits in 7 bits here.
            bytes[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self { bytes, len: n }
    }

    /// The header bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends the header of an unmasked (server) frame to `out`.
pub(crate) fn encode_header(opcode: Opcode, fin: bool, len: usize, out: &mut impl BufMut) {
    out.put_slice(FrameHeader::new(opcode, fin, len).as_bytes());
}

/// Appends one whole unmasked frame.
pub(crate) fn encode_frame(opcode: Opcode, fin: bool, payload: &[u8], out: &mut BytesMut) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    encode_header(opcode, fin, payload.len(), out);
    out.put_slice(payload);
}

#[cfg(test)]
pub(crate) mod tests {
    //! Frame codec cases (RFC 6455 §5.1–§5.5): every opcode, masked, in each length form
    //! (7-bit, 16-bit, 64-bit, including non-minimal forms), decoded whole, split in two at
    //! every offset and fed one byte at a time; back-to-back frames; unmasked client frame →
    //! 1002; each reserved bit → 1002; every reserved opcode → 1002; ping/close over 125 bytes
    //! and fragmented control frames → 1002 (from the 2 header bytes alone); 64-bit length
    //! with the top bit → 1002; oversize data frame → 1009 with only the header present and
    //! no memory reserved; a large or hugely announced frame reserves only as it arrives;
    //! server headers round-trip through a client-side decoder in all three
    //! length forms; random bytes never panic.

    use super::*;

    pub(crate) const LIMITS: Limits = Limits {
        max_payload: 1 << 20,
        expect_masked: true,
    };

    /// Which length encoding a test frame uses.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum LenForm {
        Short,
        Mid,
        Long,
    }

    /// A masked client frame, as a browser would send it.
    pub(crate) fn client_frame(b0: u8, payload: &[u8], form: LenForm) -> Vec<u8> {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        let mut out = vec![b0];
        match form {
            LenForm::Short => out.push(0x80 | payload.len() as u8),
            LenForm::Mid => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            LenForm::Long => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        apply_mask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    fn samples() -> Vec<(Vec<u8>, bool, Opcode, Vec<u8>)> {
        let mut v = Vec::new();
        let small = b"Hello".to_vec();
        let mid: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        for (op, fin) in [
            (Opcode::Text, true),
            (Opcode::Binary, true),
            (Opcode::Binary, false),
            (Opcode::Continuation, true),
            (Opcode::Continuation, false),
        ] {
            let b0 = (u8::from(fin) << 7) | op.bits();
            v.push((
                client_frame(b0, &small, LenForm::Short),
                fin,
                op,
                small.clone(),
            ));
            v.push((
                client_frame(b0, &small, LenForm::Mid),
                fin,
                op,
                small.clone(),
            ));
            v.push((client_frame(b0, &mid, LenForm::Mid), fin, op, mid.clone()));
            v.push((client_frame(b0, &mid, LenForm::Long), fin, op, mid.clone()));
            v.push((client_frame(b0, b"", LenForm::Short), fin, op, Vec::new()));
        }
        for op in [Opcode::Close, Opcode::Ping, Opcode::Pong] {
            let b0 = 0x80 | op.bits();
            v.push((client_frame(b0, b"", LenForm::Short), true, op, Vec::new()));
            v.push((
                client_frame(b0, &[0x03, 0xE8, b'o', b'k'], LenForm::Short),
                true,
                op,
                vec![0x03, 0xE8, b'o', b'k'],
            ));
            v.push((
                client_frame(b0, &[7; 125], LenForm::Short),
                true,
                op,
                vec![7; 125],
            ));
        }
        v
    }

    fn check(frame: WsFrame, fin: bool, op: Opcode, payload: &[u8]) {
        assert_eq!(frame.fin, fin);
        assert_eq!(frame.opcode, op);
        assert_eq!(&frame.payload[..], payload);
    }

    #[test]
    fn every_kind_whole_and_at_every_split() {
        for (bytes, fin, op, payload) in samples() {
            let mut buf = BytesMut::from(&bytes[..]);
            check(
                decode(&mut buf, &LIMITS).unwrap().unwrap(),
                fin,
                op,
                &payload,
            );
            assert!(buf.is_empty());
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(decode(&mut buf, &LIMITS), Ok(None), "{op:?} cut {cut}");
                assert_eq!(buf.len(), cut, "nothing consumed");
                buf.extend_from_slice(&bytes[cut..]);
                check(
                    decode(&mut buf, &LIMITS).unwrap().unwrap(),
                    fin,
                    op,
                    &payload,
                );
                assert!(buf.is_empty());
            }
            let mut buf = BytesMut::new();
            let mut got = None;
            for (i, b) in bytes.iter().enumerate() {
                buf.put_u8(*b);
                match decode(&mut buf, &LIMITS).unwrap() {
                    Some(f) => {
                        assert_eq!(i, bytes.len() - 1);
                        got = Some(f);
                    }
                    None => assert!(i < bytes.len() - 1),
                }
            }
            check(got.unwrap(), fin, op, &payload);
        }
    }

    /// A frame large enough to be buffered in growing steps, masked, cut at many offsets
    /// (every one near the header and the growth steps): it decodes whole, and while
    /// incomplete the buffer holds no more room than twice its bytes (or the first step).
    #[test]
    fn a_large_frame_at_many_splits_reserves_only_as_it_arrives() {
        use crate::transport::arpc::{FIRST_STEP, room_for};
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let bytes = client_frame(0x82, &payload, LenForm::Long);
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(499).collect();
        for edge in [14, FIRST_STEP, 2 * FIRST_STEP, 4 * FIRST_STEP] {
            cuts.extend(edge - 14..edge + 14);
        }
        for cut in cuts {
            let mut buf = BytesMut::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                buf.extend_from_slice(part);
                if let Some(frame) = decode(&mut buf, &LIMITS).unwrap() {
                    check(frame, true, Opcode::Binary, &payload);
                    assert!(buf.is_empty());
                    continue;
                }
                assert_eq!(buf.len(), cut, "nothing consumed");
                assert!(
                    buf.capacity() <= room_for(bytes.len(), cut).max(cut),
                    "{} reserved for {cut} bytes",
                    buf.capacity()
                );
            }
        }
    }

    /// A frame announcing 60 MiB reserves room for what arrived, not the announced length.
    #[test]
    fn a_huge_announced_frame_reserves_only_for_its_bytes() {
        let limits = Limits {
            max_payload: 64 << 20,
            expect_masked: true,
        };
        let mut b = BytesMut::from(&[0x82, 0x80 | 127][..]);
        b.extend_from_slice(&(60u64 << 20).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&[7; 8192]);
        assert_eq!(decode(&mut b, &limits), Ok(None));
        assert_eq!(b.len(), 14 + 8192);
        assert!(b.capacity() <= 2 * b.len(), "{}", b.capacity());
    }

    #[test]
    fn back_to_back_frames() {
        let mut all = Vec::new();
        let s = samples();
        for (bytes, ..) in &s {
            all.extend_from_slice(bytes);
        }
        let mut buf = BytesMut::from(&all[..]);
        for (_, fin, op, payload) in &s {
            check(
                decode(&mut buf, &LIMITS).unwrap().unwrap(),
                *fin,
                *op,
                payload,
            );
        }
        assert_eq!(decode(&mut buf, &LIMITS), Ok(None));
    }

    fn code(bytes: &[u8]) -> u16 {
        decode(&mut BytesMut::from(bytes), &LIMITS)
            .unwrap_err()
            .close_code()
    }

    #[test]
    fn unmasked_client_frame_1002() {
        assert_eq!(code(&[0x82, 0x02, 1, 2]), 1002);
        // And the other way round: a client-side decoder refuses masked frames.
        let client = Limits {
            expect_masked: false,
            ..LIMITS
        };
        let masked = client_frame(0x82, b"ab", LenForm::Short);
        let err = decode(&mut BytesMut::from(&masked[..]), &client).unwrap_err();
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn reserved_bits_1002() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(code(&[0x82 | rsv, 0x80]), 1002);
        }
    }

    #[test]
    fn unknown_opcodes_1002() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(code(&[0x80 | op, 0x80]), 1002, "opcode {op:#x}");
        }
    }

    #[test]
    fn bad_control_frames_1002() {
        for op in [Opcode::Close, Opcode::Ping, Opcode::Pong] {
            // 126 bytes, announced with the 16-bit form: refused from two header bytes.
            assert_eq!(code(&[0x80 | op.bits(), 0x80 | 126]), 1002);
            assert_eq!(code(&[0x80 | op.bits(), 0x80 | 127]), 1002);
            // Not final.
            assert_eq!(code(&[op.bits(), 0x80]), 1002);
        }
    }

    #[test]
    fn long_length_top_bit_1002() {
        let mut b = vec![0x82, 0x80 | 127];
        b.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(code(&b), 1002);
    }

    #[test]
    fn oversize_1009_before_reserving() {
        let limits = Limits {
            max_payload: 1000,
            expect_masked: true,
        };
        let mut b = BytesMut::from(&[0x82, 0x80 | 127][..]);
        b.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let cap = b.capacity();
        assert_eq!(decode(&mut b, &limits), Err(WsError::TooBig));
        assert_eq!(b.capacity(), cap);
        let mut b = BytesMut::from(&[0x82, 0x80 | 126, 0x03, 0xE9][..]);
        assert_eq!(decode(&mut b, &limits).unwrap_err().close_code(), 1009);
        // Exactly at the limit is fine.
        let ok = client_frame(0x82, &[0u8; 1000], LenForm::Mid);
        assert!(
            decode(&mut BytesMut::from(&ok[..]), &limits)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn server_headers_round_trip() {
        let client = Limits {
            max_payload: 1 << 20,
            expect_masked: false,
        };
        for (len, hdr) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = vec![0xA5; len];
            let mut out = BytesMut::new();
            encode_frame(Opcode::Binary, true, &payload, &mut out);
            assert_eq!(out.len(), hdr + len);
            let f = decode(&mut out, &client).unwrap().unwrap();
            check(f, true, Opcode::Binary, &payload);
        }
        assert_eq!(
            FrameHeader::new(Opcode::Text, false, 5).as_bytes(),
            &[0x01, 0x05]
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), max in 0usize..200) {
            let limits = Limits { max_payload: max, expect_masked: true };
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, &limits) {}
        }
    }
}
