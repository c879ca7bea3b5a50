//! Writing Stream frames (arpc's cmd 6) to a connection's output: the cmd byte's stream
//! bits, the error flag of an error end, and arpc's metadata block.
//!
//! Invariants: a frame of a stream we opened carries the local bit, the peer's never; an
//! error end is an EOF frame with the error flag carrying its text; a metadata block that
//! cannot be appended never loses the frame (it goes out without it, logged).

use bytes::Bytes;
use ringrpc_protocol::{CMD_STREAM_EOF, CMD_STREAM_LOCAL, Flags};

use crate::transport::outqueue::OutQueue;

/// The stream bits of the cmd byte for a frame of a stream opened here or by the peer.
pub(crate) fn bits(opened_here: bool, eof: bool) -> u8 {
    (if opened_here { CMD_STREAM_LOCAL } else { 0 }) | (if eof { CMD_STREAM_EOF } else { 0 })
}

/// The flag byte of a stream frame: the error bit on an error end.
pub(crate) fn flags(error: bool) -> Flags {
    if error {
        Flags(Flags::ERROR)
    } else {
        Flags::default()
    }
}

/// Queues one Stream frame with `metadata` appended (arpc's `md` block); a block that
/// cannot be appended (the frame would overflow) sends the frame without it, logged.
pub(crate) fn push_with_metadata(
    out: &mut OutQueue,
    stream_bits: u8,
    flags: Flags,
    id: u64,
    method: &[u8],
    payload: &[u8],
    metadata: &ringrpc_protocol::metadata::Metadata,
) {
    match crate::transport::coder::encode_stream_with_metadata(
        stream_bits,
        flags,
        id,
        method,
        payload,
        metadata,
    ) {
        Ok(frame) => out.push_encoded(frame),
        Err(e) => {
            tracing::warn!(id, "stream frame metadata dropped: {e}");
            out.push_stream_frame(
                stream_bits,
                flags,
                id,
                method,
                Bytes::copy_from_slice(payload),
            );
        }
    }
}

/// Queues an error end for stream `id` (opened by us when `opened_here`).
pub(crate) fn push_error_end(
    out: &mut OutQueue,
    opened_here: bool,
    id: u64,
    method: &[u8],
    text: &str,
) {
    out.push_stream_frame(
        bits(opened_here, true),
        flags(true),
        id,
        method,
        Bytes::copy_from_slice(text.as_bytes()),
    );
}
