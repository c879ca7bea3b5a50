//! Taking frames off received bytes: [`parse_frame`] borrows one whole frame from a slice,
//! [`parse_frame_any`] also inflates gzip-compressed ones, [`frame_len`] sizes a frame from its
//! header alone, and [`Decoder`] splits frames off a [`BytesMut`] receive buffer.
//!
//! Invariant: a declared length is checked against the limit before any memory is reserved
//! for it, and a [`Decoder`] reserves at most [`RESERVE_STEP`] ahead of the bytes received.

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{Frame, FrameRef};
use crate::gzip;
use crate::header::{DecodeError, Header};
use crate::{DEFAULT_MAX_BODY, HEADER_LEN};

/// Parses one whole frame from the front of `buf`.
///
/// `Ok(None)` means `buf` holds only part of a frame; `Ok(Some((frame, len)))` gives the
/// frame and how many bytes it took.
pub fn parse_frame(
    buf: &[u8],
    max_body: u32,
) -> Result<Option<(FrameRef<'_>, usize)>, DecodeError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::parse(head, max_body)?;
    let len = header.frame_len();
    if buf.len() < len {
        return Ok(None);
    }
    let method_end = HEADER_LEN + header.method_len as usize;
    Ok(Some((
        FrameRef {
            header,
            method: &buf[HEADER_LEN..method_end],
            payload: &buf[method_end..len],
        },
        len,
    )))
}

/// The length of the frame whose first 16 bytes are `head`, after every check that can be
/// made before its body arrives.
///
/// A plain frame gets all of [`Header::parse`]'s checks. A gzip-compressed one
/// ([`gzip::USER_FLAG_GZIP`] in byte 4) only has its `body_len` checked against `max_body`:
/// its bytes from offset 5 on are gzip, so the rest of its header is known only once it is
/// inflated ([`parse_frame_any`]).
pub fn frame_len(head: &[u8; HEADER_LEN], max_body: u32) -> Result<usize, DecodeError> {
    if head[4] & gzip::USER_FLAG_GZIP == 0 {
        return Ok(Header::parse(head, max_body)?.frame_len());
    }
    compressed_frame_len(head, max_body)
}

#[cold]
fn compressed_frame_len(head: &[u8; HEADER_LEN], max_body: u32) -> Result<usize, DecodeError> {
    let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if body_len > max_body {
        return Err(DecodeError::BodyTooLarge {
            declared: body_len,
            max: max_body,
        });
    }
    Ok(HEADER_LEN + body_len as usize)
}

/// As [`parse_frame`], also accepting gzip-compressed frames the way arpc's gzip coder
/// writes them (`docs/protocol.md`, "Compression"): one branch on byte 4 decides.
///
/// A plain frame is borrowed from `buf` exactly as [`parse_frame`] does. A compressed one is
/// recognised from its first five bytes, its declared length is checked against `max_body`
/// before anything else (so a hostile length costs nothing), and once it is whole it is
/// inflated into `inflated` — never to a body over `max_body`, so a zip bomb costs at most
/// the limit — and the returned frame borrows from there; `used` still counts the
/// compressed bytes taken from `buf`. `inflated` is left `None` for a plain frame.
pub fn parse_frame_any<'a>(
    buf: &'a [u8],
    max_body: u32,
    inflated: &'a mut Option<Bytes>,
) -> Result<Option<(FrameRef<'a>, usize)>, DecodeError> {
    match buf.get(4) {
        Some(&user_flags) if user_flags & gzip::USER_FLAG_GZIP != 0 => {
            parse_compressed(buf, max_body, inflated)
        }
        _ => parse_frame(buf, max_body),
    }
}

#[cold]
fn parse_compressed<'a>(
    buf: &'a [u8],
    max_body: u32,
    inflated: &'a mut Option<Bytes>,
) -> Result<Option<(FrameRef<'a>, usize)>, DecodeError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = compressed_frame_len(head, max_body)?;
    if buf.len() < len {
        return Ok(None);
    }
    let plain = gzip::decompress_frame(&buf[..len], max_body).map_err(DecodeError::Gzip)?;
    let plain: &'a Bytes = inflated.insert(plain);
    match parse_frame(plain, max_body)? {
        // decompress_frame wrote body_len for exactly the inflated bytes.
        Some((frame, _)) => Ok(Some((frame, len))),
        None => Err(DecodeError::Gzip(gzip::GzipError::InnerTooShort {
            len: plain.len(),
        })),
    }
}

/// Most capacity the decoder reserves ahead of bytes actually received.
pub const RESERVE_STEP: usize = 64 * 1024;

/// Incremental decoder over a [`BytesMut`] receive buffer.
///
/// Bytes arrive in pieces; `decode` takes whole frames off the front and says `Ok(None)`
/// until the next one is complete. A declared body over the limit is an error before any
/// memory is reserved for it.
///
/// ```
/// use bytes::BytesMut;
/// use ringrpc_protocol::{Decoder, Frame};
///
/// let wire = Frame::notify(0, "/log", "hi").to_bytes();
/// let decoder = Decoder::new(1024);
/// let mut buf = BytesMut::new();
/// buf.extend_from_slice(&wire[..10]);                 // a partial header
/// assert_eq!(decoder.decode(&mut buf)?, None);
/// buf.extend_from_slice(&wire[10..]);
/// let frame = decoder.decode(&mut buf)?.expect("complete now");
/// assert_eq!(&frame.payload[..], b"hi");
/// assert!(buf.is_empty());
///
/// let mut huge = Frame::request(1, "/x", vec![0u8; 2048]).to_bytes()[..16].into();
/// assert!(decoder.decode(&mut huge).is_err());        // over 1024: refused from the header
/// # Ok::<(), ringrpc_protocol::DecodeError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    max_body: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_BODY)
    }
}

impl Decoder {
    /// A decoder that rejects bodies longer than `max_body` bytes.
    pub fn new(max_body: u32) -> Decoder {
        Decoder { max_body }
    }

    /// The body limit in force.
    pub fn max_body(&self) -> u32 {
        self.max_body
    }

    /// Takes one frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. Capacity for a pending frame is reserved at most
    /// [`RESERVE_STEP`] at a time, so a peer that declares a large body and trickles it costs
    /// memory only for the bytes it actually sent. The returned method and payload are split
    /// off `buf` without copying.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(head, self.max_body)?;
        let len = header.frame_len();
        if buf.len() < len {
            buf.reserve((len - buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let method = buf.split_to(header.method_len as usize).freeze();
        let payload = buf.split_to(header.payload_len()).freeze();
        Ok(Some(Frame {
            header,
            method,
            payload,
        }))
    }
}
