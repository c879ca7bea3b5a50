//! gzip: arpc's gzip coder, which compresses a whole frame except its first five bytes.
//!
//! arpc's coder (`extension/middleware/coder/gzip/gzip.go`, now in `lesismal/arpcex`) gzips
//! every byte after `user_flags` (offset 5 on: `cmd`, `flag`, `method_len`, `seq`, method,
//! payload), keeps the result only if the frame gets shorter, sets `user_flags` bit 7
//! ([`USER_FLAG_GZIP`]) and rewrites `body_len` to the new length minus 16, so the frame
//! stays self-delimiting (`docs/protocol.md`, "Compression"). In a compressed frame the
//! bytes at `cmd`, `flag`, `method_len` and `seq` are the gzip header, so such a frame must
//! be inflated by [`decompress_frame`] before [`crate::Header::parse`] can read it.
//!
//! Invariants: no panics on any input; inflating never produces more than the body limit it
//! is given plus one byte, whatever the compressed bytes declare; [`compress_frame`] and
//! [`decompress_frame`] are inverses.

use std::fmt;
use std::io::{Read, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::HEADER_LEN;

/// The `user_flags` bit that says the frame is gzip-compressed (arpc flag bit index 7).
pub const USER_FLAG_GZIP: u8 = 0x80;
/// Offset of the first compressed byte: the one after `user_flags`.
pub const GZIP_OFFSET: usize = 5;
/// Bytes of the header that are compressed with the body (`cmd` to `seq`).
const INNER_HEAD_LEN: usize = HEADER_LEN - GZIP_OFFSET;

/// Whether `frame` starts with a header whose [`USER_FLAG_GZIP`] bit is set. Looks at byte 4
/// only; `false` for fewer than 5 bytes.
pub fn is_compressed(frame: &[u8]) -> bool {
    frame
        .get(4)
        .is_some_and(|&user_flags| user_flags & USER_FLAG_GZIP != 0)
}

/// Compresses one whole encoded frame the way arpc's gzip coder does, returning the whole
/// new frame.
///
/// `None`, meaning send `frame` as it is, when the frame is not longer than `threshold`
/// bytes (arpc compresses only `len > threshold`, header included), when compressing does
/// not make it shorter, when it is already compressed, or when `frame` is not one whole
/// frame (shorter than a header, or `body_len` disagreeing with its length). `level` is
/// the deflate level, 0 (store) to 9 (best); higher values count as 9.
pub fn compress_frame(frame: &[u8], threshold: usize, level: u32) -> Option<Bytes> {
    if frame.len() <= threshold || is_compressed(frame) || !is_whole_frame(frame) {
        return None;
    }
    let mut out = Vec::with_capacity(frame.len());
    out.extend_from_slice(&frame[..GZIP_OFFSET]);
    let mut encoder = GzEncoder::new(out, Compression::new(level.min(9)));
    // Writing into a Vec cannot fail.
    encoder.write_all(&frame[GZIP_OFFSET..]).ok()?;
    let mut out = encoder.finish().ok()?;
    if out.len() >= frame.len() {
        return None;
    }
    // out.len() < frame.len(), which fits a u32 body_len, and a gzip member is at least 18
    // bytes, so this neither underflows nor truncates.
    let body_len = u32::try_from(out.len().checked_sub(HEADER_LEN)?).ok()?;
    out[0..4].copy_from_slice(&body_len.to_le_bytes());
    out[4] |= USER_FLAG_GZIP;
    Some(Bytes::from(out))
}

/// Inflates one whole compressed frame back into the frame it was made from, with
/// [`USER_FLAG_GZIP`] cleared and `body_len` recomputed.
///
/// The inflated frame's body may be at most `max_body` bytes: inflation stops one byte past
/// that and fails, so a zip bomb costs at most the limit in memory. Like Go's
/// `gzip.Reader`, concatenated gzip members are read one after the other, and anything
/// after the last one that is not a gzip member is an error. The returned frame's header is
/// not validated; parse it with [`crate::parse_frame`].
pub fn decompress_frame(frame: &[u8], max_body: u32) -> Result<Bytes, GzipError> {
    let Some(head) = frame.first_chunk::<HEADER_LEN>() else {
        return Err(GzipError::NotAFrame { len: frame.len() });
    };
    let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if !is_whole_frame(frame) {
        return Err(GzipError::LengthMismatch {
            body_len,
            actual: frame.len(),
        });
    }
    if !is_compressed(frame) {
        return Err(GzipError::NotCompressed);
    }
    let limit = INNER_HEAD_LEN as u64 + u64::from(max_body);
    let mut out = Vec::with_capacity(frame.len().min(HEADER_LEN + max_body as usize));
    out.extend_from_slice(&frame[..GZIP_OFFSET]);
    MultiGzDecoder::new(&frame[GZIP_OFFSET..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| GzipError::Corrupt {
            reason: e.to_string(),
        })?;
    let inflated = out.len() - GZIP_OFFSET;
    if inflated as u64 > limit {
        return Err(GzipError::TooLarge { max_body });
    }
    let Some(body) = inflated.checked_sub(INNER_HEAD_LEN) else {
        return Err(GzipError::InnerTooShort { len: inflated });
    };
    // body <= max_body, checked above.
    out[0..4].copy_from_slice(&(body as u32).to_le_bytes());
    out[4] &= !USER_FLAG_GZIP;
    Ok(Bytes::from(out))
}

/// Whether `frame` is at least a header long and its `body_len` counts exactly the bytes
/// after the header.
fn is_whole_frame(frame: &[u8]) -> bool {
    frame.first_chunk::<4>().is_some_and(|len| {
        frame.len() >= HEADER_LEN
            && u64::from(u32::from_le_bytes(*len)) == (frame.len() - HEADER_LEN) as u64
    })
}

/// Why a compressed frame could not be inflated; the connection that sent it should be
/// closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GzipError {
    /// Fewer bytes than a frame header.
    NotAFrame {
        /// How many bytes there were.
        len: usize,
    },
    /// `body_len` does not match the number of bytes after the header.
    LengthMismatch {
        /// `body_len` from the header.
        body_len: u32,
        /// The frame's actual length, header included.
        actual: usize,
    },
    /// The [`USER_FLAG_GZIP`] bit is clear.
    NotCompressed,
    /// The bytes from offset 5 are not a valid gzip stream (bad header, bad deflate data,
    /// checksum or length mismatch, truncated, trailing garbage).
    Corrupt {
        /// What the gzip reader reported.
        reason: String,
    },
    /// The inflated frame's body would exceed the limit.
    TooLarge {
        /// The body limit in force.
        max_body: u32,
    },
    /// The inflated bytes are shorter than the 11 header bytes they must start with.
    InnerTooShort {
        /// How many bytes inflated.
        len: usize,
    },
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::NotAFrame { len } => {
                write!(f, "{len} bytes are shorter than a frame header")
            }
            GzipError::LengthMismatch { body_len, actual } => write!(
                f,
                "body_len {body_len} disagrees with a frame of {actual} bytes (header included)"
            ),
            GzipError::NotCompressed => write!(f, "frame is not gzip-compressed (bit 7 clear)"),
            GzipError::Corrupt { reason } => write!(f, "invalid gzip data: {reason}"),
            GzipError::TooLarge { max_body } => write!(
                f,
                "compressed frame inflates to a body over the maximum of {max_body} bytes"
            ),
            GzipError::InnerTooShort { len } => write!(
                f,
                "compressed frame inflates to {len} bytes, fewer than the \
                 {INNER_HEAD_LEN} header bytes it must hold"
            ),
        }
    }
}

impl std::error::Error for GzipError {}

#[cfg(test)]
mod tests;
