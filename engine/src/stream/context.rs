//! What a reactor-side stream handler sees of one frame ([`StreamContext`]) and how it
//! answers on the same stream, straight into the connection's output.
//!
//! Invariants: a context lives for one handler call; sends go to the connection's output
//! in call order, after whatever the connection queued before; the send side closes at
//! most once (shared with every [`StreamSender`] of the stream).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;

use super::StreamSender;
use crate::conn::handle::ConnHandle;
use crate::error::StreamError;
use crate::stream::frames;
use crate::stream::shared::StreamShared;
use crate::transport::outqueue::OutQueue;

/// What one call of a [`StreamHandler`] is about.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StreamEvent<'a> {
    /// A data frame (possibly empty when it only carries EOF).
    Data { data: &'a [u8], eof: bool },
    /// The peer ended the stream with an error.
    Error(&'a str),
}

/// What a reactor-side stream handler sees of one frame, and how it answers on the same
/// stream. Sends go straight to the connection's output (no window: the handler only runs
/// when input arrives, and the connection's send-queue limit pauses that input).
pub struct StreamContext<'a> {
    shared: &'a Arc<StreamShared>,
    conn: &'a dyn Fn() -> ConnHandle,
    event: StreamEvent<'a>,
    first: bool,
    out: &'a mut OutQueue,
    frames_out: u64,
    closed_send: bool,
    /// This frame's metadata block, already taken off its data.
    pub(crate) metadata: Option<&'a ringrpc_protocol::metadata::Metadata>,
}

impl fmt::Debug for StreamContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamContext")
            .field("id", &self.shared.id())
            .field("method", &String::from_utf8_lossy(self.shared.method()))
            .field("event", &self.event)
            .finish()
    }
}

impl<'a> StreamContext<'a> {
    pub(crate) fn new(
        shared: &'a Arc<StreamShared>,
        conn: &'a dyn Fn() -> ConnHandle,
        event: StreamEvent<'a>,
        first: bool,
        out: &'a mut OutQueue,
    ) -> StreamContext<'a> {
        StreamContext {
            shared,
            conn,
            event,
            first,
            out,
            frames_out: 0,
            closed_send: false,
            metadata: None,
        }
    }

    /// This frame's metadata (arpc's `md` block, `user_flags` bit 0), if it carried any;
    /// the block is already taken off [`StreamContext::data`].
    pub fn metadata(&self) -> Option<&'a ringrpc_protocol::metadata::Metadata> {
        self.metadata
    }

    pub(crate) fn frames_out(&self) -> u64 {
        self.frames_out
    }
    pub(crate) fn closed_send(&self) -> bool {
        self.closed_send
    }

    /// This frame's data (empty for an error or a bare EOF).
    pub fn data(&self) -> &'a [u8] {
        match self.event {
            StreamEvent::Data { data, .. } => data,
            StreamEvent::Error(_) => &[],
        }
    }
    /// Whether the peer closed its send side with this frame (it sends nothing more).
    pub fn is_eof(&self) -> bool {
        match self.event {
            StreamEvent::Data { eof, .. } => eof,
            StreamEvent::Error(_) => true,
        }
    }
    /// The peer ended the stream with this error text.
    pub fn error(&self) -> Option<&'a str> {
        match self.event {
            StreamEvent::Error(text) => Some(text),
            StreamEvent::Data { .. } => None,
        }
    }
    /// Whether this is the stream's first frame (the peer just opened it).
    pub fn is_first(&self) -> bool {
        self.first
    }
    /// The stream id.
    pub fn id(&self) -> u64 {
        self.shared.id()
    }
    /// The method named by the stream's frames.
    pub fn method(&self) -> &[u8] {
        self.shared.method()
    }
    /// The connection, as a handle usable later and from any thread.
    pub fn conn(&self) -> ConnHandle {
        (self.conn)()
    }
    /// A sending handle usable later and from any thread.
    pub fn sender(&self) -> StreamSender {
        StreamSender {
            conn: self.conn(),
            shared: self.shared.clone(),
        }
    }

    /// Sends `data` (copied) on this stream.
    pub fn send(&mut self, data: &[u8]) -> Result<(), StreamError> {
        self.push(Bytes::copy_from_slice(data), false, false)
    }
    /// Sends `data` without copying it.
    pub fn send_bytes(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.push(data, false, false)
    }
    /// Sends `data` with `metadata` appended (arpc's `md` block).
    pub fn send_with_metadata(
        &mut self,
        data: &[u8],
        metadata: &Metadata,
    ) -> Result<(), StreamError> {
        if self.shared.is_send_closed() {
            return Err(StreamError::SendClosed);
        }
        frames::push_with_metadata(
            self.out,
            frames::bits(self.shared.opened_here(), false),
            frames::flags(false),
            self.shared.id(),
            self.shared.method(),
            data,
            metadata,
        );
        self.frames_out += 1;
        Ok(())
    }
    /// Sends `data` and closes the send side with it.
    pub fn send_and_close(&mut self, data: &[u8]) -> Result<(), StreamError> {
        self.push(Bytes::copy_from_slice(data), true, false)
    }
    /// Closes the send side with an empty EOF frame (a no-op if already closed).
    pub fn close_send(&mut self) -> Result<(), StreamError> {
        if self.shared.is_send_closed() {
            return Ok(());
        }
        self.push(Bytes::new(), true, false)
    }
    /// Ends the send side with an error text.
    pub fn close_with_error(&mut self, text: &str) -> Result<(), StreamError> {
        self.push(Bytes::copy_from_slice(text.as_bytes()), true, true)
    }

    fn push(&mut self, payload: Bytes, eof: bool, error: bool) -> Result<(), StreamError> {
        if self.shared.is_send_closed() || (eof && !self.shared.close_send()) {
            return Err(StreamError::SendClosed);
        }
        let bits = frames::bits(self.shared.opened_here(), eof);
        let (id, method) = (self.shared.id(), self.shared.method());
        self.out
            .push_stream_frame(bits, frames::flags(error), id, method, payload);
        self.frames_out += 1;
        if eof {
            self.closed_send = true;
        }
        Ok(())
    }
}
