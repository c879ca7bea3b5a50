//! Metadata: key/value pairs carried in one arpc "appender" block at the end of a frame.
//!
//! arpc's appender coder (`extension/middleware/coder/appender.go`, now in `lesismal/arpcex`)
//! appends `name | value | total_len` to the end of a frame, where `total_len` is a big-endian
//! `u16` counting the name, the value and itself; it sets one bit of `user_flags` and adds
//! the block's length to `body_len`. This module owns the appender named `md` on bit 0
//! ([`USER_FLAG_METADATA`]), whose value is a sequence of entries
//! `key_len u8 | key | value_len u16 LE | value` (`docs/protocol.md`, "Metadata").
//!
//! Invariants: a [`Metadata`] always encodes to at most [`MAX_METADATA_LEN`] bytes, its keys
//! are 1..=[`MAX_KEY_LEN`] bytes of UTF-8 and distinct, and it keeps insertion (or wire)
//! order, so decoding then encoding gives back the same bytes. Parsing never panics and
//! never allocates more than the bytes it was given.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Command, DecodeError, HEADER_LEN, Header};

/// The `user_flags` bit that says a metadata block ends the frame (arpc flag bit index 0,
/// the bit arpc's tracing appender uses).
pub const USER_FLAG_METADATA: u8 = 0x01;
/// The appender name that starts the block.
pub const METADATA_NAME: &[u8; 2] = b"md";
/// Most bytes a whole block (name, entries and the 2-byte length) may take.
pub const MAX_METADATA_LEN: usize = 4096;
/// Longest key, in bytes (its length is one byte on the wire).
pub const MAX_KEY_LEN: usize = 255;

/// Length of the trailing `total_len` field.
const TRAILER_LEN: usize = 2;
/// A block with no entries: the name and the trailer.
const EMPTY_BLOCK_LEN: usize = METADATA_NAME.len() + TRAILER_LEN;
/// Per-entry bytes besides the key and the value: `key_len` and `value_len`.
const ENTRY_OVERHEAD: usize = 1 + 2;

/// An ordered map of UTF-8 keys to byte values, small enough to fit one appender block.
///
/// Equality compares the entries in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Bytes)>,
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Sets `key` to `value`, keeping the key's place if it is already present, and returns
    /// the value it replaces.
    ///
    /// Fails, leaving the map unchanged, if the key is empty or longer than [`MAX_KEY_LEN`]
    /// bytes, or if the block would grow past [`MAX_METADATA_LEN`] bytes.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> Result<Option<Bytes>, MetadataError> {
        let key = key.into();
        let value = value.into();
        check_key_len(key.len())?;
        let old = self.position(&key);
        let without = self.encoded_len() - old.map_or(0, |i| entry_len(&self.entries[i]));
        let len = without + ENTRY_OVERHEAD + key.len() + value.len();
        if len > MAX_METADATA_LEN {
            return Err(MetadataError::TooLarge { len });
        }
        Ok(match old {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.position(key).map(|i| &self.entries[i].1[..])
    }

    /// Removes `key` and returns its value, if it was present.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        self.position(key).map(|i| self.entries.remove(i).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), &v[..]))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Length of the whole encoded block, name and trailer included (at most
    /// [`MAX_METADATA_LEN`]).
    pub fn encoded_len(&self) -> usize {
        EMPTY_BLOCK_LEN + self.entries.iter().map(entry_len).sum::<usize>()
    }

    /// Appends the whole block (`md`, the entries, `total_len` big-endian) to `dst`.
    pub fn encode_block(&self, dst: &mut BytesMut) {
        let len = self.encoded_len();
        dst.reserve(len);
        dst.put_slice(METADATA_NAME);
        for (key, value) in &self.entries {
            dst.put_u8(key.len() as u8);
            dst.put_slice(key.as_bytes());
            dst.put_u16_le(value.len() as u16);
            dst.put_slice(value);
        }
        dst.put_u16(len as u16);
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    /// Parses the entries of a block's value part; `base` is the value's offset in the
    /// block, for error messages.
    fn decode_entries(mut value: &[u8], base: usize) -> Result<Metadata, MetadataError> {
        let mut md = Metadata::new();
        let mut offset = base;
        while let Some((&key_len, rest)) = value.split_first() {
            let key_len = usize::from(key_len);
            check_key_len(key_len)?;
            let truncated = MetadataError::Truncated { offset };
            let (key, rest) = rest.split_at_checked(key_len).ok_or(truncated.clone())?;
            let (len, rest) = rest.split_first_chunk::<2>().ok_or(truncated.clone())?;
            let (val, rest) = rest
                .split_at_checked(usize::from(u16::from_le_bytes(*len)))
                .ok_or(truncated)?;
            let key = std::str::from_utf8(key).map_err(|_| MetadataError::KeyNotUtf8 { offset })?;
            if md.position(key).is_some() {
                return Err(MetadataError::DuplicateKey { key: key.into() });
            }
            md.entries
                .push((key.to_owned(), Bytes::copy_from_slice(val)));
            offset += ENTRY_OVERHEAD + key_len + val.len();
            value = rest;
        }
        Ok(md)
    }
}

fn entry_len((key, value): &(String, Bytes)) -> usize {
    ENTRY_OVERHEAD + key.len() + value.len()
}

fn check_key_len(len: usize) -> Result<(), MetadataError> {
    match len {
        0 => Err(MetadataError::EmptyKey),
        1..=MAX_KEY_LEN => Ok(()),
        _ => Err(MetadataError::KeyTooLong { len }),
    }
}

/// Parses the metadata block that ends `payload`, whether or not a flag says it is there,
/// and returns the payload before it.
pub fn split_metadata(payload: &[u8]) -> Result<(&[u8], Metadata), MetadataError> {
    let n = payload.len();
    let Some(trailer) = payload.last_chunk::<TRAILER_LEN>() else {
        return Err(MetadataError::NoTrailer { len: n });
    };
    let total = usize::from(u16::from_be_bytes(*trailer));
    if total > MAX_METADATA_LEN {
        return Err(MetadataError::TooLarge { len: total });
    }
    if total < EMPTY_BLOCK_LEN || total > n {
        return Err(MetadataError::BadBlockLen {
            declared: total,
            available: n,
        });
    }
    let (before, block) = payload.split_at(n - total);
    let (name, value) = block[..total - TRAILER_LEN].split_at(METADATA_NAME.len());
    if name != METADATA_NAME {
        return Err(MetadataError::WrongName {
            found: [name[0], name[1]],
        });
    }
    let md = Metadata::decode_entries(value, METADATA_NAME.len())?;
    Ok((before, md))
}

/// Takes the metadata off a decoded frame's payload: `(payload, None)` when the header's
/// [`USER_FLAG_METADATA`] bit is clear, otherwise the payload before the block and the block
/// parsed. This is the receive path for a [`crate::FrameRef`]; the header keeps its bit and
/// its `body_len`, which count the block.
pub fn take_metadata<'a>(
    header: &Header,
    payload: &'a [u8],
) -> Result<(&'a [u8], Option<Metadata>), MetadataError> {
    if header.user_flags & USER_FLAG_METADATA == 0 {
        return Ok((payload, None));
    }
    if header.user_flags & crate::gzip::USER_FLAG_GZIP != 0 {
        return Err(MetadataError::Compressed);
    }
    let (payload, md) = split_metadata(payload)?;
    Ok((payload, Some(md)))
}

/// Appends `md` as a block to `frame`, one whole encoded frame, setting
/// [`USER_FLAG_METADATA`] and adding the block to `body_len`; on error `frame` is unchanged.
///
/// Refused: bytes that are not one whole frame with a valid header, a Ping or Pong (they
/// must stay bare headers), a frame that already carries metadata, and a compressed frame
/// (compress after appending: arpc decodes coders in reverse, so the peer inflates first).
/// The result may exceed the receiver's body limit; that check is the caller's.
pub fn append_metadata(frame: &mut BytesMut, md: &Metadata) -> Result<(), MetadataError> {
    let header = frame_header(frame)?;
    if header.user_flags & USER_FLAG_METADATA != 0 {
        return Err(MetadataError::AlreadyPresent);
    }
    if header.cmd.is_control() {
        return Err(MetadataError::ControlFrame { cmd: header.cmd });
    }
    let block_len = md.encoded_len();
    let body_len = u32::try_from(block_len)
        .ok()
        .and_then(|b| header.body_len.checked_add(b))
        .ok_or(MetadataError::BodyOverflow {
            body_len: header.body_len,
            block_len,
        })?;
    md.encode_block(frame);
    frame[0..4].copy_from_slice(&body_len.to_le_bytes());
    frame[4] |= USER_FLAG_METADATA;
    Ok(())
}

/// The inverse of [`append_metadata`]: if `frame` (one whole encoded frame) carries a
/// metadata block, removes it, clears the bit, fixes `body_len` and returns the metadata;
/// `Ok(None)` if the bit is clear. On error `frame` is unchanged.
pub fn strip_metadata(frame: &mut BytesMut) -> Result<Option<Metadata>, MetadataError> {
    let header = frame_header(frame)?;
    if header.user_flags & USER_FLAG_METADATA == 0 {
        return Ok(None);
    }
    let method_end = HEADER_LEN + usize::from(header.method_len);
    let (payload, md) = split_metadata(&frame[method_end..])?;
    let body_len = header.body_len - (frame.len() - method_end - payload.len()) as u32;
    frame.truncate(method_end + payload.len());
    frame[0..4].copy_from_slice(&body_len.to_le_bytes());
    frame[4] &= !USER_FLAG_METADATA;
    Ok(Some(md))
}

/// Validates that `frame` is one whole uncompressed frame and returns its header.
fn frame_header(frame: &[u8]) -> Result<Header, MetadataError> {
    let Some(head) = frame.first_chunk::<HEADER_LEN>() else {
        return Err(MetadataError::NotAFrame { len: frame.len() });
    };
    if head[4] & crate::gzip::USER_FLAG_GZIP != 0 {
        return Err(MetadataError::Compressed);
    }
    let header = Header::parse(head, u32::MAX).map_err(MetadataError::Frame)?;
    if header.frame_len() != frame.len() {
        return Err(MetadataError::LengthMismatch {
            body_len: header.body_len,
            actual: frame.len(),
        });
    }
    Ok(header)
}

/// Why metadata could not be built, parsed, appended or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// A key of zero bytes.
    EmptyKey,
    /// A key longer than [`MAX_KEY_LEN`] bytes.
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The block would be, or declares itself, longer than [`MAX_METADATA_LEN`] bytes.
    TooLarge {
        /// The block's length in bytes.
        len: usize,
    },
    /// The payload is too short to end with a 2-byte block length.
    NoTrailer {
        /// The payload's length.
        len: usize,
    },
    /// The block length is shorter than an empty block (4 bytes) or longer than the payload.
    BadBlockLen {
        /// `total_len` from the trailer.
        declared: usize,
        /// Bytes of payload it must fit in.
        available: usize,
    },
    /// The block does not start with the name `md`: another appender's block.
    WrongName {
        /// The two bytes found where the name should be.
        found: [u8; 2],
    },
    /// An entry runs past the end of the block.
    Truncated {
        /// Offset of the entry within the block.
        offset: usize,
    },
    /// A key that is not UTF-8.
    KeyNotUtf8 {
        /// Offset of the entry within the block.
        offset: usize,
    },
    /// A key that appears twice in one block.
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// Fewer bytes than a frame header.
    NotAFrame {
        /// How many bytes there were.
        len: usize,
    },
    /// The frame's header is invalid.
    Frame(DecodeError),
    /// `body_len` does not match the number of bytes after the header.
    LengthMismatch {
        /// `body_len` from the header.
        body_len: u32,
        /// The frame's actual length, header included.
        actual: usize,
    },
    /// Ping and Pong must stay bare headers.
    ControlFrame {
        /// Ping or Pong.
        cmd: Command,
    },
    /// The frame already carries a metadata block.
    AlreadyPresent,
    /// The frame is gzip-compressed; its block is inside the compressed bytes.
    Compressed,
    /// `body_len` plus the block would not fit a `u32`.
    BodyOverflow {
        /// `body_len` before appending.
        body_len: u32,
        /// The block's length.
        block_len: usize,
    },
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::EmptyKey => write!(f, "metadata key is empty"),
            MetadataError::KeyTooLong { len } => {
                write!(f, "metadata key of {len} bytes (at most {MAX_KEY_LEN})")
            }
            MetadataError::TooLarge { len } => write!(
                f,
                "metadata block of {len} bytes exceeds the maximum of {MAX_METADATA_LEN}"
            ),
            MetadataError::NoTrailer { len } => write!(
                f,
                "payload of {len} bytes is too short to end with a metadata block length"
            ),
            MetadataError::BadBlockLen {
                declared,
                available,
            } => write!(
                f,
                "metadata block length {declared} not in {EMPTY_BLOCK_LEN}..={available} \
                 (the payload's length)"
            ),
            MetadataError::WrongName { found } => write!(
                f,
                "appended block named {:?}, not \"md\"",
                String::from_utf8_lossy(found)
            ),
            MetadataError::Truncated { offset } => write!(
                f,
                "metadata entry at byte {offset} of the block runs past its end"
            ),
            MetadataError::KeyNotUtf8 { offset } => write!(
                f,
                "metadata key of the entry at byte {offset} of the block is not UTF-8"
            ),
            MetadataError::DuplicateKey { key } => {
                write!(f, "metadata key {key:?} appears more than once")
            }
            MetadataError::NotAFrame { len } => {
                write!(f, "{len} bytes are shorter than a frame header")
            }
            MetadataError::Frame(e) => write!(f, "invalid frame header: {e}"),
            MetadataError::LengthMismatch { body_len, actual } => write!(
                f,
                "body_len {body_len} disagrees with a frame of {actual} bytes (header included)"
            ),
            MetadataError::ControlFrame { cmd } => {
                write!(f, "{cmd:?} frames cannot carry metadata")
            }
            MetadataError::AlreadyPresent => write!(f, "frame already carries a metadata block"),
            MetadataError::Compressed => write!(
                f,
                "frame is gzip-compressed; decompress it before reading or adding metadata"
            ),
            MetadataError::BodyOverflow {
                body_len,
                block_len,
            } => write!(
                f,
                "body_len {body_len} plus a {block_len}-byte metadata block overflows u32"
            ),
        }
    }
}

impl std::error::Error for MetadataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetadataError::Frame(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
