//! Puts request payloads on the wire straight from the payload pattern ([`crate::payload`]):
//! copied once into the output and stamped in place, or, for a large call when the sender
//! takes a list of segments (io_uring), by reference to the pattern without a copy.
//!
//! Invariants:
//! - Every payload written equals what [`payload::fill`] makes for its seed, so echoes
//!   are checked against the same bytes whichever way they went out.
//! - The output is `segments` followed by `tx`, in that order: a request by reference first
//!   moves all of `tx` into `segments`, so frames queued before it stay ahead of it.
//! - Only a caller whose output is sent as segments as they are (not over WebSocket, whose
//!   messages wrap what `tx` holds) asks for by reference.

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::{Command, Flags, Header, write_frame};

use crate::payload;

/// Request payloads from this size on are sent by reference: below it, one more segment
/// costs more than the copy. At least 8, so the stamp fits in the copied head.
const BY_REFERENCE_MIN: usize = 2048;

/// Appends Request `seq` to `method` with its payload of `payload_buf.len()` bytes: by
/// reference when `by_reference` and the payload is one window of at least
/// [`BY_REFERENCE_MIN`] bytes, else copied ([`put_payload_frame`]).
pub(crate) fn put_call(
    tx: &mut BytesMut,
    segments: &mut Vec<Bytes>,
    by_reference: bool,
    seq: u64,
    method: &[u8],
    payload_buf: &mut [u8],
) {
    let (cmd, flags) = (Command::Request, Flags::default());
    let len = payload_buf.len();
    match payload::window(seq, len) {
        Some(window) if by_reference && len >= BY_REFERENCE_MIN => {
            put_request_by_reference(tx, segments, seq, method, window);
        }
        _ => put_payload_frame(tx, seq, payload_buf, |tx, payload| {
            write_frame(tx, cmd, flags, 0, seq, method, payload)
        }),
    }
}

/// Queues Request `seq` with its header, method and the stamped first payload bytes in
/// `tx`, and the rest of its payload as a segment pointing into the pattern.
fn put_request_by_reference(
    tx: &mut BytesMut,
    segments: &mut Vec<Bytes>,
    seq: u64,
    method: &[u8],
    window: &'static [u8],
) {
    let header = Header {
        body_len: (method.len() + window.len()) as u32,
        user_flags: 0,
        cmd: Command::Request,
        stream_local: false,
        stream_eof: false,
        flags: Flags::default(),
        method_len: method.len() as u8,
        seq,
    };
    tx.extend_from_slice(&header.to_bytes());
    tx.extend_from_slice(method);
    let stamped = tx.len();
    tx.extend_from_slice(&window[..8]);
    payload::stamp(seq, &mut tx[stamped..]);
    segments.push(tx.split().freeze());
    segments.push(Bytes::from_static(&window[8..]));
}

/// Appends a frame that `write` encodes around request `seed`'s payload, which ends it: the
/// payload is copied once, straight from the pattern, then stamped with `seed` in place.
/// `payload_buf` has the payload's length; it is filled only for a payload longer than one
/// window.
pub(crate) fn put_payload_frame(
    tx: &mut BytesMut,
    seed: u64,
    payload_buf: &mut [u8],
    write: impl FnOnce(&mut BytesMut, &[u8]),
) {
    let len = payload_buf.len();
    match payload::window(seed, len) {
        Some(window) => {
            write(tx, window);
            let at = tx.len() - len;
            payload::stamp(seed, &mut tx[at..]);
        }
        None => {
            payload::fill(seed, payload_buf);
            write(tx, payload_buf);
        }
    }
}
