//! Streams (arpc's cmd 6) and subscribe on top of them: the [`BiStream`] handle usable from
//! any thread, the [`StreamContext`] a reactor-side stream handler sees frame by frame, and
//! [`Subscription`] / [`Replies`] for request → reply… → end.
//!
//! Invariants:
//! - The wire is arpc's: the opener sets the local bit (0x80) on its frames, EOF is 0x40,
//!   the id is the opener's next call seq, every frame carries the method. Beyond arpc, an
//!   error end is an EOF frame with the error flag (0x01) carrying the text; a Go peer sees
//!   it as data and EOF.
//! - Memory is bounded both ways: a stream's inbox holds at most
//!   [`StreamLimits::queue_bytes`], each frame counted at what it holds (payload, metadata
//!   block, about 200 bytes of overhead), before its connection stops reading (plus the
//!   frames already received then), and a sender may have at most
//!   [`StreamLimits::send_window`] unsent before it waits.
//! - A reactor thread never blocks on a stream: there, a receive or send that would wait
//!   fails with [`StreamError::WouldBlock`] instead.
//! - Dropping a [`BiStream`] closes its send side (an EOF, if none was sent) and discards
//!   whatever arrives for it later.

pub(crate) mod shared;
pub mod transfer;

mod context;
mod frames;
pub(crate) mod table;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use ringrpc_protocol::metadata::Metadata;

use crate::stream::shared::{OutFrame, Received, StreamShared};
pub use context::StreamContext;
pub(crate) use context::StreamEvent;

use crate::conn::handle::{ConnHandle, on_reactor_thread};
use crate::error::{STREAM_HANDLER_PANICKED, StreamError};
use crate::reactor::mailbox::Command;

/// A stream handler run on the reactor thread for every frame of a stream the peer opens
/// (and once for its end): it must not block. Send from it through [`StreamContext`].
pub type StreamHandler = Arc<dyn Fn(&mut StreamContext<'_>) + Send + Sync>;

/// A stream handler that owns a [`BiStream`] on a thread of its own, so it may block on
/// `recv` and `send`.
pub type BlockingStreamHandler = Arc<dyn Fn(BiStream) + Send + Sync>;

/// A stream handler run as a task on the reactor that owns the connection: it owns the
/// [`BiStream`] and awaits `recv_async` and `send_async` (the window is its back-pressure).
pub(crate) type AsyncStreamHandler =
    Arc<dyn Fn(BiStream) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// Stack of a blocking stream handler's thread.
pub(crate) const HANDLER_STACK: usize = 256 * 1024;

/// How a method's streams are served.
#[derive(Clone)]
pub(crate) enum StreamRoute {
    /// Frame by frame on the reactor.
    Events(StreamHandler),
    /// A thread per stream.
    Blocking(BlockingStreamHandler),
    /// A task per stream on the connection's reactor.
    Async(AsyncStreamHandler),
}

/// Per-connection stream limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most streams open at once on one connection; a peer opening more gets an error end.
    pub max_streams: usize,
    /// Bytes a stream's inbox holds before its connection stops reading until a receive
    /// takes it to half. Each frame counts at what it holds: its payload, its metadata
    /// block and about 200 bytes of overhead. A connection's inboxes hold at most
    /// `max_streams` × this, plus the frames already received when reading stopped.
    pub queue_bytes: usize,
    /// Bytes a sender may have posted and not yet queued for the socket before `send`
    /// waits.
    pub send_window: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_streams: 1024,
            queue_bytes: 1 << 20,
            send_window: 1 << 20,
        }
    }
}

mod futures;
pub use futures::{RecvFuture, SendFuture};
use std::future::Future;
use std::pin::Pin;

pub(crate) fn run_blocking(handler: BlockingStreamHandler, stream: BiStream) {
    let sender = stream.sender();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(stream)));
    if outcome.is_err() {
        tracing::error!("blocking stream handler panicked");
        let _ = sender.close_with_error(STREAM_HANDLER_PANICKED);
    }
}

/// Posts a frame the user asked to send, holding `window` bytes of the stream's window
/// until the reactor queues it.
fn post(
    conn: &ConnHandle,
    shared: &Arc<StreamShared>,
    payload: Bytes,
    eof: bool,
    error: bool,
) -> Result<(), StreamError> {
    post_with(conn, shared, payload, eof, error, None)
}

fn post_with(
    conn: &ConnHandle,
    shared: &Arc<StreamShared>,
    payload: Bytes,
    eof: bool,
    error: bool,
    metadata: Option<Box<Metadata>>,
) -> Result<(), StreamError> {
    check_size(shared, &payload)?;
    shared.reserve(payload.len(), !on_reactor_thread())?;
    post_reserved(conn, shared, payload, eof, error, metadata);
    Ok(())
}

/// A frame body over the wire's 4 GiB limit is refused before it takes any window.
fn check_size(shared: &StreamShared, payload: &[u8]) -> Result<(), StreamError> {
    match crate::error::check_body(shared.method(), payload) {
        Ok(()) => Ok(()),
        Err(_) => Err(StreamError::TooLarge {
            size: payload.len(),
        }),
    }
}

/// Posts a frame whose bytes already hold their place in the window.
fn post_reserved(
    conn: &ConnHandle,
    shared: &Arc<StreamShared>,
    payload: Bytes,
    eof: bool,
    error: bool,
    metadata: Option<Box<Metadata>>,
) {
    let window = payload.len();
    conn.post_stream_send(
        shared.clone(),
        OutFrame {
            payload,
            eof,
            error,
            window,
            metadata,
        },
    );
}

/// The sending half of a stream, usable from any thread (cheap to clone). Frames go out in
/// the order sent.
#[derive(Clone)]
pub struct StreamSender {
    conn: ConnHandle,
    shared: Arc<StreamShared>,
}

impl fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("conn", &self.conn.id())
            .field("id", &self.shared.id())
            .field("method", &String::from_utf8_lossy(self.shared.method()))
            .finish()
    }
}

impl StreamSender {
    /// Sends one frame. Waits while the stream has its whole send window unsent (fails
    /// with [`StreamError::WouldBlock`] instead on a reactor thread).
    pub fn send(&self, data: impl Into<Bytes>) -> Result<(), StreamError> {
        self.send_frame(data.into(), false, false)
    }

    /// Sends one frame and closes the send side with it (arpc's `SendAndClose`).
    pub fn send_and_close(&self, data: impl Into<Bytes>) -> Result<(), StreamError> {
        self.send_frame(data.into(), true, false)
    }

    /// Sends one frame carrying `metadata` (arpc's `md` block, up to 4 KiB), as
    /// [`StreamSender::send`] otherwise.
    pub fn send_with_metadata(
        &self,
        data: impl Into<Bytes>,
        metadata: Metadata,
    ) -> Result<(), StreamError> {
        if self.shared.is_send_closed() {
            return Err(self.shared.send_refusal());
        }
        post_with(
            &self.conn,
            &self.shared,
            data.into(),
            false,
            false,
            Some(Box::new(metadata)),
        )
    }

    /// Closes the send side with an empty EOF frame (arpc's `CloseSend`); the peer may go on
    /// sending. Closing twice is a no-op.
    pub fn close_send(&self) -> Result<(), StreamError> {
        if !self.shared.close_send() {
            return Ok(());
        }
        post(&self.conn, &self.shared, Bytes::new(), true, false)
    }

    /// Ends the send side with an error: an EOF frame with the error flag carrying `text`
    /// (a Go arpc peer sees it as a last data frame).
    pub fn close_with_error(&self, text: &str) -> Result<(), StreamError> {
        if !self.shared.close_send() {
            return Err(self.shared.send_refusal());
        }
        post(
            &self.conn,
            &self.shared,
            Bytes::copy_from_slice(text.as_bytes()),
            true,
            true,
        )
    }

    fn send_frame(&self, data: Bytes, eof: bool, error: bool) -> Result<(), StreamError> {
        if self.shared.is_send_closed() || (eof && !self.shared.close_send()) {
            return Err(self.shared.send_refusal());
        }
        post(&self.conn, &self.shared, data, eof, error)
    }

    /// The stream id (the frames' seq; 0 until the reactor registered a stream just opened).
    pub fn id(&self) -> u64 {
        self.shared.id()
    }

    /// The connection the stream runs on.
    pub fn conn(&self) -> &ConnHandle {
        &self.conn
    }
}

/// The answering side of a subscribe: replies, then an end or an error, from any thread.
#[derive(Clone, Debug)]
pub struct Replies {
    sender: StreamSender,
}

impl Replies {
    /// Sends one reply.
    pub fn reply(&self, data: impl Into<Bytes>) -> Result<(), StreamError> {
        self.sender.send(data)
    }
    /// Ends the replies (the subscriber's iterator ends).
    pub fn reply_end(&self) -> Result<(), StreamError> {
        self.sender.close_send()
    }
    /// Ends the replies with an error the subscriber sees as [`StreamError::Remote`].
    pub fn reply_error(&self, text: &str) -> Result<(), StreamError> {
        self.sender.close_with_error(text)
    }
    /// The underlying stream sender.
    pub fn sender(&self) -> &StreamSender {
        &self.sender
    }
}

/// One stream (arpc's cmd 6): send and receive from any thread. Made by
/// [`ConnHandle::open_stream`](crate::ConnHandle::open_stream),
/// [`Client::open_stream`](crate::Client::open_stream), or handed to a blocking or async
/// stream handler. Its inbox and its send window are bounded
/// ([`StreamLimits`]); async code uses [`BiStream::recv_async`], or the stream as a
/// `futures::Stream` and `Sink`.
///
/// ```
/// use std::time::Duration;
/// use ringrpc::{Client, Config, Server};
///
/// let server = Server::builder() // serves the built-in /echo/stream
///     .config(Config::builder().cores(1).listen("127.0.0.1:0").build()?)
///     .build()?
///     .start()?;
/// let client = Client::connect(&server.local_addr().to_string())?;
///
/// let stream = client.open_stream("/echo/stream")?;
/// stream.send("one")?;
/// stream.send_and_close("two")?;
/// let wait = Duration::from_secs(5);
/// assert_eq!(stream.recv_timeout(wait)?.as_deref(), Some(&b"one"[..]));
/// assert_eq!(stream.recv_timeout(wait)?.as_deref(), Some(&b"two"[..]));
/// assert_eq!(stream.recv_timeout(wait)?, None); // the server's EOF
/// # drop(stream);
/// # drop(client);
/// # server.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BiStream {
    sender: StreamSender,
}

impl fmt::Debug for BiStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BiStream").field(&self.sender).finish()
    }
}

impl Drop for BiStream {
    fn drop(&mut self) {
        let shared = &self.sender.shared;
        if !shared.is_send_closed() {
            let _ = self.sender.close_send();
        }
        if shared.abandon() {
            self.sender.conn.post_stream_resume(shared.clone());
        }
    }
}

impl BiStream {
    pub(crate) fn new(conn: ConnHandle, shared: Arc<StreamShared>) -> BiStream {
        BiStream {
            sender: StreamSender { conn, shared },
        }
    }

    /// The next frame's data; `Ok(None)` once the peer closed its send side (EOF).
    /// Waits for it (on a reactor thread, fails with [`StreamError::WouldBlock`] instead
    /// of waiting). Empty frames without EOF carry nothing and are skipped.
    pub fn recv(&self) -> Result<Option<Bytes>, StreamError> {
        self.receive(!on_reactor_thread(), None)
    }

    /// As [`BiStream::recv`], waiting at most `timeout` ([`StreamError::Timeout`] after).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Bytes>, StreamError> {
        self.receive(!on_reactor_thread(), Some(Instant::now() + timeout))
    }

    /// As [`BiStream::recv`], with the frame's metadata (arpc's `md` block), if it carried
    /// any.
    pub fn recv_with_metadata(&self) -> Result<Option<(Bytes, Option<Metadata>)>, StreamError> {
        self.receive_with(!on_reactor_thread(), None)
    }

    fn receive(&self, wait: bool, deadline: Option<Instant>) -> Result<Option<Bytes>, StreamError> {
        Ok(self.receive_with(wait, deadline)?.map(|(data, _)| data))
    }

    fn receive_with(
        &self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<(Bytes, Option<Metadata>)>, StreamError> {
        let shared = &self.sender.shared;
        match shared.receive(wait, deadline) {
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
            Received::Empty if wait => Err(StreamError::Timeout),
            Received::Empty => Err(StreamError::WouldBlock),
        }
    }

    /// Sends one frame (see [`StreamSender::send`]).
    pub fn send(&self, data: impl Into<Bytes>) -> Result<(), StreamError> {
        self.sender.send(data)
    }
    /// Sends one frame and closes the send side with it.
    pub fn send_and_close(&self, data: impl Into<Bytes>) -> Result<(), StreamError> {
        self.sender.send_and_close(data)
    }
    /// Sends one frame carrying `metadata` (see [`StreamSender::send_with_metadata`]).
    pub fn send_with_metadata(
        &self,
        data: impl Into<Bytes>,
        metadata: Metadata,
    ) -> Result<(), StreamError> {
        self.sender.send_with_metadata(data, metadata)
    }
    /// Closes the send side (empty EOF frame); receiving goes on.
    pub fn close_send(&self) -> Result<(), StreamError> {
        self.sender.close_send()
    }
    /// Ends the send side with an error text.
    pub fn close_with_error(&self, text: &str) -> Result<(), StreamError> {
        self.sender.close_with_error(text)
    }
    /// A sending handle to keep or move to another thread.
    pub fn sender(&self) -> StreamSender {
        self.sender.clone()
    }
    /// The stream id (the frames' seq).
    pub fn id(&self) -> u64 {
        self.sender.id()
    }
    /// The method named by the stream's frames.
    pub fn method(&self) -> &[u8] {
        self.sender.shared.method()
    }
    /// The connection the stream runs on.
    pub fn conn(&self) -> &ConnHandle {
        &self.sender.conn
    }
}

/// The replies to a subscribe: an iterator that yields each reply and ends after the end;
/// an error end (or a disconnect, or the timeout) is yielded as the last item.
#[derive(Debug)]
pub struct Subscription {
    stream: BiStream,
    done: bool,
}

impl Subscription {
    pub(crate) fn new(stream: BiStream) -> Subscription {
        Subscription {
            stream,
            done: false,
        }
    }
    /// The stream under the subscription.
    pub fn stream(&self) -> &BiStream {
        &self.stream
    }

    /// The replies as a `futures::Stream` (each reply, then the end; an error end is the
    /// last item), for async code; the iterator's blocking waits never happen.
    pub fn into_stream(self) -> BiStream {
        self.stream
    }
}

impl Iterator for Subscription {
    type Item = Result<Bytes, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.stream.recv() {
            Ok(Some(data)) => Some(Ok(data)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Wraps a subscribe handler as a reactor-side stream handler: it runs once, for the
/// stream's first frame (the request), with the request payload and the replies.
pub(crate) fn subscribe_handler(
    handler: impl Fn(Bytes, Replies) + Send + Sync + 'static,
) -> StreamHandler {
    Arc::new(move |ctx: &mut StreamContext<'_>| {
        if !ctx.is_first() || ctx.error().is_some() {
            return;
        }
        let request = Bytes::copy_from_slice(ctx.data());
        handler(
            request,
            Replies {
                sender: ctx.sender(),
            },
        );
    })
}

/// The built-in `/echo/stream`: every frame's data back on the same stream, EOF after the
/// peer's EOF.
pub fn echo_stream(ctx: &mut StreamContext<'_>) {
    let data = ctx.data();
    if !data.is_empty() {
        let _ = ctx.send(data);
    }
    if ctx.is_eof() {
        let _ = ctx.close_send();
    }
}

/// A stream made here, not yet registered by the reactor.
pub(crate) fn new_local(method: &str, limits: StreamLimits) -> Arc<StreamShared> {
    Arc::new(StreamShared::new(
        Bytes::copy_from_slice(method.as_bytes()),
        true,
        limits.queue_bytes,
        limits.send_window,
    ))
}

impl ConnHandle {
    /// Opens a stream to the peer for `method` (its stream handler serves it). Nothing is
    /// sent until the first [`BiStream::send`].
    pub fn open_stream(&self, method: &str) -> Result<BiStream, StreamError> {
        self.open_stream_with(method, None)
    }

    /// As [`ConnHandle::open_stream`], with a whole-stream timeout: if the stream has not
    /// ended both ways by then, it ends here with [`StreamError::Timeout`] and an error end
    /// is sent to the peer.
    pub fn open_stream_with(
        &self,
        method: &str,
        timeout: Option<Duration>,
    ) -> Result<BiStream, StreamError> {
        if method.is_empty() || method.len() > ringrpc_protocol::MAX_METHOD_LEN {
            return Err(StreamError::BadMethod);
        }
        let shared = new_local(method, StreamLimits::default());
        self.mailbox()
            .post(Command::StreamOpen {
                conn: self.id(),
                shared: shared.clone(),
                timeout,
            })
            .map_err(|_| StreamError::MailboxFull)?;
        Ok(BiStream::new(self.clone(), shared))
    }

    fn post_stream_send(&self, shared: Arc<StreamShared>, send: OutFrame) {
        let _ = self.mailbox().post(Command::StreamSend {
            conn: self.id(),
            shared,
            send,
        });
    }

    fn post_stream_resume(&self, shared: Arc<StreamShared>) {
        let _ = self.mailbox().post(Command::StreamResume {
            conn: self.id(),
            shared,
        });
    }
}
