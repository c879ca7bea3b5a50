//! The decoder's fuzz check, shared by the `decoder` cargo-fuzz target and the stable corpus
//! replay tests so the properties are written once; also the input layout every stream fuzz
//! target of the project uses. The coders' checks (`metadata`, `gzip` targets) live in
//! [`codec`], the pub/sub topic bytes' (`topic` target) in [`topic`]. Hidden from the docs:
//! not part of the stable API.
//!
//! A stream input is one control byte, then chunk sizes, then the byte stream:
//!
//! ```text
//! byte 0        bits 0..=1: body limit, an index into MAX_BODY_CHOICES
//!               bits 2..=7: k, the number of chunk-size bytes that follow (0..=63)
//! bytes 1..=k   chunk sizes: byte s is a chunk of s + 1 bytes; they are used in turn,
//!               cycling, until the stream runs out (k = 0: the stream is one chunk)
//! the rest      the stream, as a peer would send it
//! ```

use bytes::BytesMut;

pub mod codec;
pub mod topic;
pub use codec::{check_gzip, check_metadata};
pub use topic::check_topic;

use crate::{
    DEFAULT_MAX_BODY, DecodeError, Decoder, Frame, HEADER_LEN, Header, MAX_METHOD_LEN,
    RESERVE_STEP, parse_frame, parse_frame_any,
};

/// Body limits an input picks from with the low two bits of its control byte: arpc's
/// default, a mid-size one, one small enough that ordinary frames trip it, and zero.
pub const MAX_BODY_CHOICES: [u32; 4] = [DEFAULT_MAX_BODY, 4096, 64, 0];

/// Most chunk-size bytes an input can carry (six bits of the control byte).
pub const MAX_CHUNK_SIZES: usize = 63;

/// A fuzz input taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input<'a> {
    /// The body limit the receiver enforces.
    pub max_body: u32,
    /// The whole stream.
    pub stream: &'a [u8],
    /// The stream cut into the pieces it arrives in; they concatenate to `stream`.
    pub chunks: Vec<&'a [u8]>,
}

impl<'a> Input<'a> {
    /// Reads the layout described in the module docs; a short input simply has fewer
    /// chunk sizes or an empty stream, so every byte string is a valid input.
    pub fn parse(data: &'a [u8]) -> Input<'a> {
        let Some((&control, rest)) = data.split_first() else {
            return Input {
                max_body: MAX_BODY_CHOICES[0],
                stream: &[],
                chunks: Vec::new(),
            };
        };
        let max_body = MAX_BODY_CHOICES[usize::from(control & 0b11)];
        let (sizes, stream) = rest.split_at(usize::from(control >> 2).min(rest.len()));
        let mut chunks = Vec::new();
        let mut left = stream;
        let mut next = sizes.iter().cycle();
        while !left.is_empty() {
            let size = next
                .next()
                .map_or(left.len(), |&s| usize::from(s) + 1)
                .min(left.len());
            let (chunk, tail) = left.split_at(size);
            chunks.push(chunk);
            left = tail;
        }
        Input {
            max_body,
            stream,
            chunks,
        }
    }
}

/// Builds the bytes of an input: `limit` indexes [`MAX_BODY_CHOICES`], each of
/// `chunk_sizes` is a chunk of that many bytes (1..=256).
///
/// # Panics
/// If `limit` is not 0..=3, there are more than [`MAX_CHUNK_SIZES`] sizes, or a size is
/// outside 1..=256.
pub fn encode_input(limit: usize, chunk_sizes: &[usize], stream: &[u8]) -> Vec<u8> {
    assert!(
        limit < MAX_BODY_CHOICES.len(),
        "limit index {limit} out of range"
    );
    assert!(
        chunk_sizes.len() <= MAX_CHUNK_SIZES,
        "at most {MAX_CHUNK_SIZES} chunk sizes"
    );
    let mut out = Vec::with_capacity(1 + chunk_sizes.len() + stream.len());
    out.push((chunk_sizes.len() as u8) << 2 | limit as u8);
    for &size in chunk_sizes {
        assert!(
            (1..=256).contains(&size),
            "chunk size {size} not in 1..=256"
        );
        out.push((size - 1) as u8);
    }
    out.extend_from_slice(stream);
    out
}

/// What a stream decodes to: its frames, then the error that stopped it, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Every frame before the end of the stream or the first bad header.
    pub frames: Vec<Frame>,
    /// The protocol violation that ends the connection.
    pub error: Option<DecodeError>,
    /// Bytes of the stream not turned into frames (a partial frame, or from the bad header on).
    pub leftover: usize,
}

/// Decodes `stream`, whole, with [`parse_frame`]: the reference every chunked path must match.
pub fn decode_reference(stream: &[u8], max_body: u32) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = stream;
    let error = loop {
        match parse_frame(rest, max_body) {
            Ok(Some((frame, used))) => {
                frames.push(frame.to_owned());
                rest = &rest[used..];
            }
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    Outcome {
        frames,
        error,
        leftover: rest.len(),
    }
}

/// As [`decode_reference`], with [`parse_frame_any`]: gzip-compressed frames are inflated
/// (the reference for the engine's connections, which accept them; the frames are the
/// inflated ones).
pub fn decode_reference_any(stream: &[u8], max_body: u32) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = stream;
    let error = loop {
        let mut inflated = None;
        match parse_frame_any(rest, max_body, &mut inflated) {
            Ok(Some((frame, used))) => {
                frames.push(frame.to_owned());
                rest = &rest[used..];
            }
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    Outcome {
        frames,
        error,
        leftover: rest.len(),
    }
}

/// Asserts what holds for every decoded frame: it respects the limits and re-encodes to
/// exactly the bytes it was decoded from.
///
/// # Panics
/// On any violation.
pub fn check_frame(frame: &Frame, wire: &[u8], max_body: u32) {
    let h = &frame.header;
    assert!(
        h.body_len <= max_body,
        "frame body of {} bytes over the limit {max_body}",
        h.body_len
    );
    assert_eq!(frame.method.len(), usize::from(h.method_len));
    assert!(frame.method.len() <= MAX_METHOD_LEN);
    assert_eq!(
        frame.method.len() + frame.payload.len(),
        h.body_len as usize
    );
    if h.cmd.needs_method() {
        assert!(!frame.method.is_empty(), "{:?} without a method", h.cmd);
    }
    if h.cmd.is_control() {
        assert_eq!(h.body_len, 0, "{:?} with a body", h.cmd);
    }
    assert_eq!(frame.encoded_len(), wire.len());
    assert_eq!(
        &frame.to_bytes()[..],
        wire,
        "frame does not re-encode to its bytes"
    );
}

/// The `decoder` fuzz check: feeds the input's stream chunk by chunk to [`Decoder::decode`]
/// and, in lockstep, to [`parse_frame`] over the bytes received so far, and asserts that
/// both agree on every frame and on the error, that every frame passes [`check_frame`], that
/// the receive buffer grows only with bytes received, and that the split points change
/// nothing (the outcome equals [`decode_reference`] over the whole stream).
///
/// # Panics
/// On any violation: that is the finding.
pub fn check_stream(data: &[u8]) -> Outcome {
    let input = Input::parse(data);
    let max_body = input.max_body;
    let decoder = Decoder::new(max_body);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut error = None;
    let mut received = 0;
    let mut consumed = 0;
    'feed: for chunk in &input.chunks {
        buf.extend_from_slice(chunk);
        received += chunk.len();
        loop {
            let pending = &input.stream[consumed..received];
            let sliced = parse_frame(pending, max_body);
            let before = buf.len();
            match (decoder.decode(&mut buf), sliced) {
                (Ok(Some(frame)), Ok(Some((frame_ref, used)))) => {
                    assert_eq!(
                        frame_ref.to_owned(),
                        frame,
                        "the two paths decoded different frames"
                    );
                    assert_eq!(
                        before - buf.len(),
                        used,
                        "the two paths consumed different lengths"
                    );
                    check_frame(&frame, &pending[..used], max_body);
                    consumed += used;
                    frames.push(frame);
                }
                (Ok(None), Ok(None)) => {
                    // Lengths only: the bytes are compared when they complete a frame, and
                    // comparing the whole pending tail on every chunk would be quadratic.
                    assert_eq!(
                        buf.len(),
                        pending.len(),
                        "the receive buffer lost or gained bytes"
                    );
                    // Reserving ahead is capped at RESERVE_STEP; allocation may round up to
                    // twice what was needed, never more.
                    assert!(
                        buf.capacity() <= 2 * (received + RESERVE_STEP),
                        "receive buffer capacity {} after only {received} bytes",
                        buf.capacity()
                    );
                    break;
                }
                (Err(decoded), Err(sliced)) => {
                    assert_eq!(decoded, sliced, "the two paths gave different errors");
                    let head = pending
                        .first_chunk::<HEADER_LEN>()
                        .expect("an error before a whole header arrived");
                    assert_eq!(Header::parse(head, max_body), Err(decoded.clone()));
                    assert!(!decoded.to_string().is_empty());
                    error = Some(decoded);
                    break 'feed;
                }
                (decoded, sliced) => panic!(
                    "Decoder::decode gave {decoded:?} but parse_frame gave {:?}",
                    sliced.map(|f| f.map(|(frame, used)| (frame.to_owned(), used)))
                ),
            }
        }
    }
    let outcome = Outcome {
        frames,
        error,
        leftover: input.stream.len() - consumed,
    };
    assert_eq!(
        outcome,
        decode_reference(input.stream, max_body),
        "splitting the stream changed what it decodes to"
    );
    outcome
}
