//! Large transfers over a stream: a payload of any size (past `max_body`) sent from a reader
//! as chunks behind a declared total length, and received chunk by chunk or reassembled,
//! with progress.
//!
//! The wire is a plain stream: the first frame is the declared total length (8 bytes, u64
//! little-endian), then data frames of at most the sender's chunk size, then EOF. Any arpc
//! peer can produce or read it.
//!
//! Invariants: the sender holds at most its chunk buffer plus the stream's send window; the
//! receiver, consuming chunk by chunk, holds at most the stream's inbox; a transfer whose
//! data disagrees with its declared length (more, or less before EOF) fails with
//! [`TransferError::LengthMismatch`] and is never reported complete; reassembly refuses a
//! declared length over the caller's limit before reading any data.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::error::StreamError;
use crate::stream::{BiStream, StreamSender};

/// Default chunk size of [`send_from`]: large enough to amortise per-frame costs, small
/// enough to bound memory (Socket.D fragments at 16 MiB; a frame per 256 KiB keeps a
/// stream's window of 1 MiB four frames deep).
pub const DEFAULT_CHUNK: usize = 256 * 1024;

/// Why a transfer failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransferError {
    /// The stream failed (disconnect, timeout, the peer's error end).
    Stream(StreamError),
    /// Reading the source or writing the destination failed.
    Io(io::Error),
    /// The first frame was not an 8-byte declared length.
    BadHeader {
        /// Its length.
        len: usize,
    },
    /// The data did not match the declared length.
    LengthMismatch {
        /// What the sender declared.
        declared: u64,
        /// What arrived (or was read from the source) when the mismatch showed.
        actual: u64,
    },
    /// Reassembly refused: the declared length is over the caller's limit.
    TooLarge {
        /// What the sender declared.
        declared: u64,
        /// The caller's limit.
        limit: u64,
    },
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Stream(e) => write!(f, "transfer stream: {e}"),
            TransferError::Io(e) => write!(f, "transfer I/O: {e}"),
            TransferError::BadHeader { len } => write!(
                f,
                "a transfer starts with an 8-byte declared length; the first frame had {len} bytes"
            ),
            TransferError::LengthMismatch { declared, actual } => write!(
                f,
                "the transfer declared {declared} bytes but carried {actual}"
            ),
            TransferError::TooLarge { declared, limit } => write!(
                f,
                "the transfer declares {declared} bytes, over the limit of {limit}; receive it chunk by chunk instead"
            ),
        }
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransferError::Stream(e) => Some(e),
            TransferError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StreamError> for TransferError {
    fn from(e: StreamError) -> Self {
        TransferError::Stream(e)
    }
}

impl From<io::Error> for TransferError {
    fn from(e: io::Error) -> Self {
        TransferError::Io(e)
    }
}

/// Sends `total` bytes read from `source` on `stream`: the declared length, chunks of at
/// most `chunk` bytes, then EOF (the receive side stays open for the peer's answer).
/// `progress(sent, total)` runs after each chunk. Waits on the stream's send window, so a
/// slow receiver slows the reader instead of growing memory. If `source` ends early or has
/// more, the stream is ended with an error and [`TransferError::LengthMismatch`] returned.
pub fn send_from(
    stream: &StreamSender,
    mut source: impl Read,
    total: u64,
    chunk: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let chunk = chunk.max(1);
    stream.send(Bytes::copy_from_slice(&total.to_le_bytes()))?;
    let mut sent = 0u64;
    while sent < total {
        let want = (total - sent).min(chunk as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = stream.close_with_error(&format!("transfer source failed: {e}"));
                    return Err(e.into());
                }
            }
        }
        if filled < want {
            let actual = sent + filled as u64;
            let _ = stream.close_with_error("transfer source ended early");
            return Err(TransferError::LengthMismatch {
                declared: total,
                actual,
            });
        }
        buf.truncate(filled);
        stream.send(buf.freeze())?;
        sent += filled as u64;
        progress(sent, total);
    }
    let mut probe = [0u8; 1];
    if matches!(source.read(&mut probe), Ok(n) if n > 0) {
        let _ = stream.close_with_error("transfer source has more than declared");
        return Err(TransferError::LengthMismatch {
            declared: total,
            actual: total + 1,
        });
    }
    stream.close_send()?;
    Ok(sent)
}

/// The receiving side of a transfer: the declared length, then the chunks as they come.
#[derive(Debug)]
pub struct Download<'s> {
    stream: &'s BiStream,
    total: u64,
    received: u64,
    timeout: Option<Duration>,
}

impl<'s> Download<'s> {
    /// Reads the declared length (the stream's first frame). `timeout` bounds each wait for
    /// a frame (`None`: wait as long as the stream lives).
    pub fn start(
        stream: &'s BiStream,
        timeout: Option<Duration>,
    ) -> Result<Download<'s>, TransferError> {
        let first = recv(stream, timeout)?.ok_or(TransferError::BadHeader { len: 0 })?;
        let header: [u8; 8] = first[..]
            .try_into()
            .map_err(|_| TransferError::BadHeader { len: first.len() })?;
        Ok(Download {
            stream,
            total: u64::from_le_bytes(header),
            received: 0,
            timeout,
        })
    }

    /// The declared length.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk; `Ok(None)` once all the declared bytes arrived and the sender closed.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, TransferError> {
        match recv(self.stream, self.timeout)? {
            Some(chunk) => {
                self.received += chunk.len() as u64;
                if self.received > self.total {
                    return Err(self.mismatch());
                }
                Ok(Some(chunk))
            }
            None if self.received == self.total => Ok(None),
            None => Err(self.mismatch()),
        }
    }

    /// Writes every chunk to `sink` as it arrives, calling `progress(received, total)`
    /// after each; holds at most one chunk (plus the stream's inbox).
    pub fn copy_to(
        mut self,
        mut sink: impl Write,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, TransferError> {
        while let Some(chunk) = self.next_chunk()? {
            sink.write_all(&chunk)?;
            progress(self.received, self.total);
        }
        sink.flush()?;
        Ok(self.received)
    }

    /// Reassembles the whole payload, refusing (before reading any data) a declared length
    /// over `limit`.
    pub fn into_bytes(mut self, limit: u64) -> Result<Bytes, TransferError> {
        if self.total > limit {
            return Err(TransferError::TooLarge {
                declared: self.total,
                limit,
            });
        }
        let mut all = BytesMut::with_capacity(self.total as usize);
        while let Some(chunk) = self.next_chunk()? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }

    fn mismatch(&self) -> TransferError {
        TransferError::LengthMismatch {
            declared: self.total,
            actual: self.received,
        }
    }
}

impl crate::Client {
    /// Uploads `total` bytes from `source` to the stream handler of `method` in
    /// [`DEFAULT_CHUNK`] chunks (see [`send_from`]) and returns its answer: the first frame
    /// it sends back (empty if it only closes).
    pub fn upload(
        &self,
        method: &str,
        source: impl Read,
        total: u64,
        progress: impl FnMut(u64, u64),
    ) -> Result<Bytes, TransferError> {
        let stream = self.open_stream(method)?;
        send_from(&stream.sender(), source, total, DEFAULT_CHUNK, progress)?;
        Ok(stream.recv()?.unwrap_or_default())
    }
}

fn recv(stream: &BiStream, timeout: Option<Duration>) -> Result<Option<Bytes>, StreamError> {
    match timeout {
        Some(t) => stream.recv_timeout(t),
        None => stream.recv(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_numbers_and_the_fix() {
        let e = TransferError::TooLarge {
            declared: 10,
            limit: 5,
        };
        assert!(e.to_string().contains("chunk by chunk"));
        let e = TransferError::LengthMismatch {
            declared: 10,
            actual: 7,
        };
        assert_eq!(
            e.to_string(),
            "the transfer declared 10 bytes but carried 7"
        );
    }
}
