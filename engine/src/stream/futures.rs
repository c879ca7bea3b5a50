//! Streams and subscriptions for async code: [`BiStream::recv_async`] and
//! [`StreamSender::send_async`] as futures, `futures::Stream` for what a stream (or a
//! subscription, through [`Subscription::into_stream`](super::Subscription::into_stream))
//! receives, and `futures::Sink` for what a stream sends — usable from an
//! async handler (woken on its own reactor, no syscall) or any executor.
//!
//! Invariants: the inbox and the window are the same as for blocking use, so the same
//! bounds hold: a receiver that does not poll holds the connection's reading once the inbox
//! is full, and a sender waits (pending, never blocking a thread) while its window is full;
//! through `Sink` one item may pass a full window (`poll_ready` cannot know its size), so a
//! `Sink` sender has at most the window plus one item unsent; a frame over the wire's
//! 4 GiB limit is refused before it takes any window.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;

use super::{BiStream, StreamSender, check_size, post_reserved};
use crate::error::StreamError;
use crate::stream::shared::Received;

/// One received frame's data and metadata; `None` after the peer's EOF.
type Frame = Option<(Bytes, Option<Metadata>)>;

impl BiStream {
    /// The next frame's data, awaited: `Ok(None)` once the peer closed its send side.
    /// Never blocks a thread, so it is what an async handler uses on its reactor.
    pub fn recv_async(&self) -> RecvFuture<'_> {
        RecvFuture { stream: self }
    }

    /// As [`BiStream::recv_async`], with the frame's metadata, if it carried any.
    pub async fn recv_async_with_metadata(&self) -> Result<Frame, StreamError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Sends one frame once the send window has room (see [`StreamSender::send_async`]).
    pub fn send_async(&self, data: impl Into<Bytes>) -> SendFuture {
        self.sender.send_async(data)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Frame, StreamError>> {
        let shared = &self.sender.shared;
        shared.poll_receive(cx).map(|received| match received {
            Received::Data {
                data,
                metadata,
                resume,
            } => {
                if resume {
                    self.sender.conn.post_stream_resume(shared.clone());
                }
                Ok(Some((data, metadata.map(|m| *m))))
            }
            Received::End(Ok(())) => Ok(None),
            Received::End(Err(e)) => Err(e),
            Received::Empty => Err(StreamError::WouldBlock),
        })
    }
}

/// The future of [`BiStream::recv_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct RecvFuture<'s> {
    stream: &'s BiStream,
}

impl Future for RecvFuture<'_> {
    type Output = Result<Option<Bytes>, StreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.stream
            .poll_recv(cx)
            .map(|r| r.map(|frame| frame.map(|(data, _)| data)))
    }
}

/// What the peer sends, frame by frame; ends after its EOF. An error end (a disconnect, the
/// whole-stream timeout, the peer's error) is the last item.
impl futures_core::Stream for BiStream {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.sender.shared.is_receive_done() {
            return Poll::Ready(None);
        }
        self.poll_recv(cx).map(|r| match r {
            Ok(Some((data, _))) => Some(Ok(data)),
            Ok(None) => {
                self.sender.shared.mark_receive_done();
                None
            }
            Err(e) => {
                self.sender.shared.mark_receive_done();
                Some(Err(e))
            }
        })
    }
}

impl StreamSender {
    /// Sends one frame once the send window has room: pending (never blocking a thread)
    /// while the stream has its whole window unsent. Fails at once if the send side is
    /// closed or the frame is over the wire's limit.
    pub fn send_async(&self, data: impl Into<Bytes>) -> SendFuture {
        let data = data.into();
        let refused = if self.shared.is_send_closed() {
            Some(self.shared.send_refusal())
        } else {
            check_size(&self.shared, &data).err()
        };
        SendFuture {
            sender: self.clone(),
            data: Some(data),
            refused,
        }
    }
}

/// The future of [`StreamSender::send_async`]: `Send`, usable from any executor.
#[must_use = "futures do nothing unless awaited; dropping this sends nothing"]
#[derive(Debug)]
pub struct SendFuture {
    sender: StreamSender,
    data: Option<Bytes>,
    refused: Option<StreamError>,
}

impl Future for SendFuture {
    type Output = Result<(), StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.refused.take() {
            return Poll::Ready(Err(error));
        }
        let Some(len) = self.data.as_ref().map(Bytes::len) else {
            return Poll::Ready(Ok(()));
        };
        match self.sender.shared.poll_reserve(len, cx) {
            Poll::Ready(Ok(())) => {
                let data = self.data.take().unwrap_or_default();
                let sender = &self.sender;
                post_reserved(&sender.conn, &sender.shared, data, false, false, None);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Frames to send: `poll_ready` waits for room in the window, `poll_flush` until everything
/// sent is queued for the socket, `poll_close` closes the send side (EOF) and flushes.
impl futures_sink::Sink<Bytes> for StreamSender {
    type Error = StreamError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        if self.shared.is_send_closed() {
            return Poll::Ready(Err(self.shared.send_refusal()));
        }
        self.shared.poll_room(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), StreamError> {
        if self.shared.is_send_closed() {
            return Err(self.shared.send_refusal());
        }
        check_size(&self.shared, &item)?;
        self.shared.force_reserve(item.len())?;
        post_reserved(&self.conn, &self.shared, item, false, false, None);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        self.shared.poll_flushed(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        if !self.shared.is_send_closed() {
            self.close_send()?;
        }
        self.shared.poll_flushed(cx)
    }
}

/// As the stream's [`StreamSender`].
impl futures_sink::Sink<Bytes> for BiStream {
    type Error = StreamError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        Pin::new(&mut self.sender).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), StreamError> {
        Pin::new(&mut self.sender).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        Pin::new(&mut self.sender).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        Pin::new(&mut self.sender).poll_close(cx)
    }
}
