//! Sans-IO codec for the arpc wire format: 16-byte little-endian header, method, payload.
//!
//! Invariants: no I/O, no clock, no `unsafe`. A declared length is checked against the
//! configured maximum before any memory is reserved, so memory grows only with bytes that
//! actually arrived. `docs/protocol.md` is the specification this crate implements.
#![forbid(unsafe_code)]

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// Largest method name a Request, Notify or Stream frame may carry.
pub const MAX_METHOD_LEN: usize = 127;
/// arpc's default limit on `body_len` (64 MiB minus the header).
pub const DEFAULT_MAX_BODY: u32 = 64 * 1024 * 1024 - HEADER_LEN as u32;

/// Bit 7 of the `cmd` byte: the frame belongs to a stream opened by the local side.
pub const CMD_STREAM_LOCAL: u8 = 0x80;
/// Bit 6 of the `cmd` byte: the last frame of a stream.
pub const CMD_STREAM_EOF: u8 = 0x40;
const CMD_MASK: u8 = 0x3f;

/// Frame command (low six bits of the `cmd` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// A call that expects a Response with the same `seq`.
    Request = 1,
    /// The answer to a Request.
    Response = 2,
    /// A one-way message; never answered.
    Notify = 3,
    /// Liveness probe; answered with Pong.
    Ping = 4,
    /// Answer to Ping.
    Pong = 5,
    /// A frame of a stream (see the stream bits).
    Stream = 6,
}

impl Command {
    /// Parses the low six bits of a `cmd` byte.
    pub fn from_bits(bits: u8) -> Option<Command> {
        Some(match bits & CMD_MASK {
            1 => Command::Request,
            2 => Command::Response,
            3 => Command::Notify,
            4 => Command::Ping,
            5 => Command::Pong,
            6 => Command::Stream,
            _ => return None,
        })
    }

    /// Whether frames of this command must name a method (length 1..=127).
    pub fn needs_method(self) -> bool {
        matches!(self, Command::Request | Command::Notify | Command::Stream)
    }

    /// Whether frames of this command are bare 16-byte headers.
    pub fn is_control(self) -> bool {
        matches!(self, Command::Ping | Command::Pong)
    }
}

/// The `flag` byte: error and async bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// The Response carries an error text as its payload.
    pub const ERROR: u8 = 0x01;
    /// The call was made asynchronously (echoed back in its Response).
    pub const ASYNC: u8 = 0x02;

    /// Whether the error bit is set.
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
    /// Whether the async bit is set.
    pub fn is_async(self) -> bool {
        self.0 & Self::ASYNC != 0
    }
    /// Returns these flags with the error bit set.
    pub fn with_error(self) -> Flags {
        Flags(self.0 | Self::ERROR)
    }
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Method length plus payload length (frame length minus 16).
    pub body_len: u32,
    /// Eight application-defined bits (arpc's reserved byte).
    pub user_flags: u8,
    /// The command.
    pub cmd: Command,
    /// Stream bit 7: stream opened by the local side.
    pub stream_local: bool,
    /// Stream bit 6: end of stream.
    pub stream_eof: bool,
    /// Error and async bits.
    pub flags: Flags,
    /// Length of the method name that follows the header.
    pub method_len: u8,
    /// Sequence number; a Response echoes its Request's.
    pub seq: u64,
}

impl Header {
    /// Parses and validates a header against `max_body`.
    ///
    /// Every check that can reject a frame happens here, before the body is read, so a
    /// hostile length is refused without reserving memory for it.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_body: u32) -> Result<Header, DecodeError> {
        let body_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let user_flags = bytes[4];
        let cmd_byte = bytes[5];
        let flag = bytes[6];
        let method_len = bytes[7];
        let seq = u64::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ]);
        let cmd = Command::from_bits(cmd_byte).ok_or(DecodeError::UnknownCommand(cmd_byte))?;
        if body_len > max_body {
            return Err(DecodeError::BodyTooLarge {
                declared: body_len,
                max: max_body,
            });
        }
        // No command may carry a method longer than 127 bytes (a Response echoes its
        // Request's), so every decoded frame can be re-encoded.
        let method_ok = if cmd.needs_method() {
            (1..=MAX_METHOD_LEN).contains(&(method_len as usize))
        } else {
            method_len as usize <= MAX_METHOD_LEN
        };
        if !method_ok {
            return Err(DecodeError::BadMethodLen {
                cmd,
                len: method_len,
            });
        }
        if cmd.is_control() && (body_len != 0 || method_len != 0) {
            return Err(DecodeError::ControlFrameWithBody { cmd });
        }
        if (method_len as u32) > body_len {
            return Err(DecodeError::MethodLongerThanBody {
                method_len,
                body_len,
            });
        }
        Ok(Header {
            body_len,
            user_flags,
            cmd,
            stream_local: cmd_byte & CMD_STREAM_LOCAL != 0,
            stream_eof: cmd_byte & CMD_STREAM_EOF != 0,
            flags: Flags(flag),
            method_len,
            seq,
        })
    }

    /// Total length of the frame this header starts.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Length of the payload after the method.
    pub fn payload_len(&self) -> usize {
        self.body_len as usize - self.method_len as usize
    }

    /// The raw `cmd` byte: command bits plus stream bits.
    pub fn cmd_byte(&self) -> u8 {
        let mut b = self.cmd as u8;
        if self.stream_local {
            b |= CMD_STREAM_LOCAL;
        }
        if self.stream_eof {
            b |= CMD_STREAM_EOF;
        }
        b
    }

    /// Writes the 16 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        out[4] = self.user_flags;
        out[5] = self.cmd_byte();
        out[6] = self.flags.0;
        out[7] = self.method_len;
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out
    }
}

/// Why bytes could not be decoded; the connection that sent them should be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The command bits name no known command (0 or 7..=63).
    UnknownCommand(u8),
    /// The declared body is longer than the configured maximum.
    BodyTooLarge {
        /// `body_len` from the header.
        declared: u32,
        /// The limit in force.
        max: u32,
    },
    /// A Request, Notify or Stream frame whose method length is not 1..=127, or any frame
    /// whose method is longer than 127 bytes.
    BadMethodLen {
        /// The frame's command.
        cmd: Command,
        /// The declared method length.
        len: u8,
    },
    /// A Ping or Pong that is not a bare header.
    ControlFrameWithBody {
        /// Ping or Pong.
        cmd: Command,
    },
    /// `method_len` exceeds `body_len`.
    MethodLongerThanBody {
        /// The declared method length.
        method_len: u8,
        /// The declared body length.
        body_len: u32,
    },
    /// A gzip-compressed frame ([`gzip::USER_FLAG_GZIP`]) that could not be inflated:
    /// corrupt gzip data, or a body that inflates past the limit (a zip bomb).
    Gzip(gzip::GzipError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownCommand(b) => {
                write!(f, "unknown command {} (cmd byte {b:#04x})", b & CMD_MASK)
            }
            DecodeError::BodyTooLarge { declared, max } => {
                write!(
                    f,
                    "declared body of {declared} bytes exceeds the maximum of {max}"
                )
            }
            DecodeError::BadMethodLen { cmd, len } => {
                write!(
                    f,
                    "{cmd:?} frame with method length {len} (must be 1..={MAX_METHOD_LEN})"
                )
            }
            DecodeError::ControlFrameWithBody { cmd } => {
                write!(f, "{cmd:?} frame must be a bare 16-byte header")
            }
            DecodeError::MethodLongerThanBody {
                method_len,
                body_len,
            } => {
                write!(
                    f,
                    "method length {method_len} exceeds body length {body_len}"
                )
            }
            DecodeError::Gzip(e) => write!(f, "gzip-compressed frame: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Gzip(e) => Some(e),
            _ => None,
        }
    }
}

/// A frame borrowed from a byte slice: what the engine decodes straight out of a kernel buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The validated header.
    pub header: Header,
    /// Method name bytes.
    pub method: &'a [u8],
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl FrameRef<'_> {
    /// Copies the borrowed bytes into an owned [`Frame`].
    pub fn to_owned(&self) -> Frame {
        Frame {
            header: self.header,
            method: Bytes::copy_from_slice(self.method),
            payload: Bytes::copy_from_slice(self.payload),
        }
    }
}

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

/// An owned frame whose method and payload share the receive buffer's allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The validated header.
    pub header: Header,
    /// Method name bytes.
    pub method: Bytes,
    /// Payload bytes.
    pub payload: Bytes,
}

impl Frame {
    /// Builds a Request frame.
    pub fn request(seq: u64, method: impl Into<Bytes>, payload: impl Into<Bytes>) -> Frame {
        Frame::new(
            Command::Request,
            Flags::default(),
            seq,
            method.into(),
            payload.into(),
        )
    }

    /// Builds a Notify frame.
    pub fn notify(seq: u64, method: impl Into<Bytes>, payload: impl Into<Bytes>) -> Frame {
        Frame::new(
            Command::Notify,
            Flags::default(),
            seq,
            method.into(),
            payload.into(),
        )
    }

    /// Builds a Ping (seq 0, no body).
    pub fn ping() -> Frame {
        Frame::new(
            Command::Ping,
            Flags::default(),
            0,
            Bytes::new(),
            Bytes::new(),
        )
    }

    /// Builds a Pong (seq 0, no body).
    pub fn pong() -> Frame {
        Frame::new(
            Command::Pong,
            Flags::default(),
            0,
            Bytes::new(),
            Bytes::new(),
        )
    }

    /// Builds the Response to `request`: same seq, method and async bit.
    pub fn response_to(
        request: &Header,
        method: impl Into<Bytes>,
        payload: impl Into<Bytes>,
    ) -> Frame {
        let flags = Flags(request.flags.0 & Flags::ASYNC);
        Frame::new(
            Command::Response,
            flags,
            request.seq,
            method.into(),
            payload.into(),
        )
    }

    /// Builds the error Response to `request`, carrying `text` as its payload.
    pub fn error_response_to(
        request: &Header,
        method: impl Into<Bytes>,
        text: impl Into<Bytes>,
    ) -> Frame {
        let flags = Flags(request.flags.0 & Flags::ASYNC).with_error();
        Frame::new(
            Command::Response,
            flags,
            request.seq,
            method.into(),
            text.into(),
        )
    }

    /// Builds a frame with a computed header.
    ///
    /// # Panics
    /// If `method` is longer than 127 bytes or the body does not fit a `u32`; both are
    /// programming errors on the sending side, not network input.
    pub fn new(cmd: Command, flags: Flags, seq: u64, method: Bytes, payload: Bytes) -> Frame {
        let header = make_header(cmd, flags, 0, seq, method.len(), payload.len());
        Frame {
            header,
            method,
            payload,
        }
    }

    /// Whether this is an error Response.
    pub fn is_error(&self) -> bool {
        self.header.cmd == Command::Response && self.header.flags.is_error()
    }

    /// Total encoded length.
    pub fn encoded_len(&self) -> usize {
        self.header.frame_len()
    }

    /// Encodes into a small header-plus-method block and the payload `Bytes` unchanged, for
    /// a vectored write that never copies the payload.
    pub fn encode(&self) -> (FrameHead, Bytes) {
        (
            FrameHead::new(&self.header, &self.method),
            self.payload.clone(),
        )
    }

    /// Appends the whole encoded frame to `dst` (copies the payload).
    pub fn encode_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_slice(&self.header.to_bytes());
        dst.put_slice(&self.method);
        dst.put_slice(&self.payload);
    }

    /// The whole encoded frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode_to(&mut b);
        b.freeze()
    }
}

fn make_header(
    cmd: Command,
    flags: Flags,
    user_flags: u8,
    seq: u64,
    method_len: usize,
    payload_len: usize,
) -> Header {
    assert!(
        method_len <= MAX_METHOD_LEN,
        "method longer than {MAX_METHOD_LEN} bytes"
    );
    let body_len =
        u32::try_from(method_len + payload_len).expect("frame body exceeds u32::MAX bytes");
    Header {
        body_len,
        user_flags,
        cmd,
        stream_local: false,
        stream_eof: false,
        flags,
        method_len: method_len as u8,
        seq,
    }
}

/// Header plus method, stored inline: the first iovec of a vectored frame write.
#[derive(Clone, Copy)]
pub struct FrameHead {
    buf: [u8; HEADER_LEN + MAX_METHOD_LEN],
    len: u8,
}

impl FrameHead {
    /// Encodes `header` followed by `method` (whose length must equal `header.method_len`).
    pub fn new(header: &Header, method: &[u8]) -> FrameHead {
        assert_eq!(
            method.len(),
            header.method_len as usize,
            "method length disagrees with header"
        );
        let mut buf = [0u8; HEADER_LEN + MAX_METHOD_LEN];
        buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        buf[HEADER_LEN..HEADER_LEN + method.len()].copy_from_slice(method);
        FrameHead {
            buf,
            len: (HEADER_LEN + method.len()) as u8,
        }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl fmt::Debug for FrameHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameHead")
            .field("bytes", &self.as_bytes())
            .finish()
    }
}

/// Appends one encoded frame to `dst` without building a [`Frame`]: the engine's hot path for
/// small responses.
///
/// # Panics
/// As [`Frame::new`].
pub fn write_frame(
    dst: &mut BytesMut,
    cmd: Command,
    flags: Flags,
    user_flags: u8,
    seq: u64,
    method: &[u8],
    payload: &[u8],
) {
    let header = make_header(cmd, flags, user_flags, seq, method.len(), payload.len());
    dst.reserve(header.frame_len());
    dst.put_slice(&header.to_bytes());
    dst.put_slice(method);
    dst.put_slice(payload);
}

/// Most capacity the decoder reserves ahead of bytes actually received.
pub const RESERVE_STEP: usize = 64 * 1024;

/// Incremental decoder over a [`BytesMut`] receive buffer.
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

pub mod gzip;
pub mod metadata;

// Shared by the fuzz targets and the corpus replay tests; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
mod topic;

pub use topic::{
    MAX_TOPIC_NAME_LEN, TOPIC_TRAILER_LEN, Topic, TopicError, TopicRef, check_topic_name,
};

#[cfg(test)]
mod tests;
