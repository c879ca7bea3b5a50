//! Sans-IO codec for the arpc wire format: 16-byte little-endian header, method, payload.
//!
//! Invariants: no I/O, no clock, no `unsafe`. A declared length is checked against the
//! configured maximum before any memory is reserved, so memory grows only with bytes that
//! actually arrived. `docs/protocol.md` is the specification this crate implements.
//!
//! The wire constants are here; the codec is split by job, each part re-exported here:
//! `header` (the 16 header bytes and why bytes are refused), `frame` (frames as values and
//! their encoding) and `decode` (taking frames off received bytes), plus [`gzip`],
//! [`metadata`] and the pub/sub topic bytes ([`Topic`]). [`units`] is no part of the wire:
//! it parses and writes byte sizes (`64KiB`) for every command line of the workspace.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod frame;
mod header;

pub use decode::{Decoder, RESERVE_STEP, frame_len, parse_frame, parse_frame_any};
pub use frame::{Frame, FrameHead, FrameRef, write_frame};
pub use header::{Command, DecodeError, Flags, Header};

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
/// The command bits of the `cmd` byte.
pub(crate) const CMD_MASK: u8 = 0x3f;

pub mod gzip;
pub mod metadata;
pub mod units;

// Shared by the fuzz targets and the corpus replay tests; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
mod topic;

pub use topic::{
    MAX_TOPIC_NAME_LEN, TOPIC_TRAILER_LEN, Topic, TopicError, TopicRef, check_topic_name,
};

#[cfg(test)]
mod tests;

/// The crate README's code block, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
