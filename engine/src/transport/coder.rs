//! arpc's coders in the engine: gzip compression of outgoing frames and metadata blocks
//! going both ways, on top of the sans-IO codecs in `ringrpc_protocol::{gzip, metadata}`.
//!
//! Where each step happens (`docs/architecture.md`, section 4, "The path of one request"):
//! - inflating: in the framing (`transport::arpc::ArpcFraming`, also inside WebSocket messages),
//!   through `ringrpc_protocol::parse_frame_any`; the inflated bytes live only while their
//!   frame is dispatched;
//! - stripping metadata: in `conn::session::Session::dispatch`, before any handler, middleware or
//!   stream sees the payload;
//! - appending metadata: where a frame is encoded for sending ([`encode_with_metadata`]),
//!   always before compressing;
//! - compressing: in `transport::outqueue::OutQueue`, the one place output frames are written, per
//!   connection ([`Gzip`]).
//!
//! A leaf: nothing from the crate; `PropagateMetadata` is the ready-made middleware
//! built on it.
//!
//! Invariants: frames without `user_flags` bits 0 and 7 never reach this module's code on
//! receive (one bit test each) and, with compression off, never on send; a compressed
//! frame is only ever sent when it is shorter than the plain one (arpc's rule).

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::gzip::compress_frame;
use ringrpc_protocol::metadata::{Metadata, MetadataError, append_metadata};
use ringrpc_protocol::{Command, Flags, write_frame};

/// The deflate level outgoing frames are compressed with: fast, most of the gain on the
/// repetitive payloads worth compressing.
pub(crate) const GZIP_LEVEL: u32 = 1;

/// One connection's outgoing compression: frames longer than `threshold` bytes (header
/// included) are gzipped when that makes them shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gzip {
    pub(crate) threshold: usize,
}

impl Gzip {
    /// Whether a frame of `len` bytes is worth trying to compress.
    #[inline]
    pub(crate) fn wants(&self, len: usize) -> bool {
        len > self.threshold
    }

    /// The compressed form of `frame` (one whole encoded frame), or `None` to send it as it
    /// is (too short, already compressed, or not shorter compressed).
    pub(crate) fn compress(&self, frame: &[u8]) -> Option<Bytes> {
        compress_frame(frame, self.threshold, GZIP_LEVEL)
    }
}

/// Encodes one frame into a buffer of its own with `metadata` appended as arpc's `md`
/// block (`user_flags` bit 0), ready to be queued (and compressed, if the connection does).
pub(crate) fn encode_with_metadata(
    cmd: Command,
    flags: Flags,
    seq: u64,
    method: &[u8],
    payload: &[u8],
    metadata: &Metadata,
) -> Result<Bytes, MetadataError> {
    encode(cmd, 0, flags, seq, method, payload, metadata)
}

/// As [`encode_with_metadata`] for a Stream frame, with its `stream_bits` (local, EOF) in
/// the cmd byte.
pub(crate) fn encode_stream_with_metadata(
    stream_bits: u8,
    flags: Flags,
    id: u64,
    method: &[u8],
    payload: &[u8],
    metadata: &Metadata,
) -> Result<Bytes, MetadataError> {
    encode(
        Command::Stream,
        stream_bits,
        flags,
        id,
        method,
        payload,
        metadata,
    )
}

fn encode(
    cmd: Command,
    stream_bits: u8,
    flags: Flags,
    seq: u64,
    method: &[u8],
    payload: &[u8],
    metadata: &Metadata,
) -> Result<Bytes, MetadataError> {
    let mut buf =
        BytesMut::with_capacity(16 + method.len() + payload.len() + metadata.encoded_len());
    write_frame(&mut buf, cmd, flags, 0, seq, method, payload);
    buf[5] |= stream_bits;
    append_metadata(&mut buf, metadata)?;
    Ok(buf.freeze())
}
