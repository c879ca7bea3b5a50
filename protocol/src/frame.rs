//! Frames as values and on the wire: [`FrameRef`] (borrowed from a receive buffer), [`Frame`]
//! (owned, sharing the buffer's allocation), [`FrameHead`] (header and method inline, the
//! first iovec of a vectored write) and [`write_frame`] (append one without building a
//! [`Frame`]).
//!
//! Invariant: a frame built here has a method of at most [`MAX_METHOD_LEN`] bytes and a body
//! that fits a `u32`, or building it panics (a bug on the sending side, never network input).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::{Command, Flags, Header};
use crate::{HEADER_LEN, MAX_METHOD_LEN};

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

/// An owned frame whose method and payload share the receive buffer's allocation.
///
/// ```
/// use bytes::BytesMut;
/// use ringrpc_protocol::{Command, Decoder, Frame};
///
/// let request = Frame::request(7, "/echo", "hello");
/// let wire = request.to_bytes();                     // 16-byte header, method, payload
/// assert_eq!(wire.len(), 16 + 5 + 5);
///
/// let mut received = BytesMut::from(&wire[..]);
/// let decoded = Decoder::default().decode(&mut received)?.expect("one whole frame");
/// assert_eq!(decoded, request);
/// assert_eq!(decoded.header.cmd, Command::Request);
/// assert_eq!(decoded.header.seq, 7);
/// # Ok::<(), ringrpc_protocol::DecodeError>(())
/// ```
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
