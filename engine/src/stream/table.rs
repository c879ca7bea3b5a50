//! One connection's open streams, sans-IO: Stream frames in (from the session), the sends,
//! opens and resumes other threads post, and the frames they put on the connection's output.
//!
//! Invariants:
//! - A stream is keyed by who opened it and its id: the peer's ids come from the peer's call
//!   counter and ours from ours, so the two never collide. A frame with the local bit was
//!   opened by the peer.
//! - An entry lives until both directions are closed (or the connection goes), then it is
//!   removed, so the table never holds more than `max_streams` entries.
//! - A sender's bytes are queued for the socket only while the connection is not
//!   overstocked; until then they wait here, in order, still counted against their stream's
//!   window, so a sender faster than the peer reads waits instead of growing memory.
//! - While any entry's inbox is full, `holding() > 0` and the connection does not read.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::FrameRef;

use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;

use crate::executor::Executor;
use crate::executor::contain::panic_message;
use crate::stream::frames::{bits, flags, push_error_end, push_with_metadata};

use super::{BiStream, StreamContext, StreamEvent, StreamHandler, StreamLimits, StreamRoute};
use crate::conn::handle::ConnHandle;
use crate::error::{
    STREAM_HANDLER_PANICKED, STREAM_METHOD_NOT_FOUND, STREAM_TIMED_OUT, StreamError,
    TOO_MANY_STREAMS,
};
use crate::stream::shared::{OutFrame, StreamShared};
use crate::transport::outqueue::OutQueue;

/// Who opened a stream (`true` = this side) and its id.
pub(crate) type StreamKey = (bool, u64);

/// How received frames reach the stream's user.
enum Mode {
    /// Into the shared inbox, for a [`BiStream`].
    Inbox,
    /// To a handler on the reactor thread, frame by frame.
    Events(StreamHandler),
    /// The handler panicked: frames are dropped until the peer's EOF.
    Discard,
}

struct Entry {
    shared: Arc<StreamShared>,
    mode: Mode,
    recv_closed: bool,
    send_closed: bool,
    holding: bool,
    frames_in: u64,
}

/// A sender's frame waiting for the connection's output to drain.
struct Held {
    shared: Arc<StreamShared>,
    send: OutFrame,
}

/// What the table counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamStats {
    /// Streams opened by the peer.
    pub opened_by_peer: u64,
    /// Streams opened by this side.
    pub opened_here: u64,
    /// Stream frames received.
    pub frames_in: u64,
    /// Stream frames queued for sending.
    pub frames_out: u64,
    /// Frames for no open stream, or for a method with no stream handler.
    pub unknown: u64,
    /// Streams refused: too many open on the connection.
    pub refused: u64,
}

/// The streams of one connection. The tables are allocated when the first stream opens,
/// so a connection that never streams holds only its limits and one pointer.
pub(crate) struct StreamTable {
    limits: StreamLimits,
    open: Option<Box<Open>>,
}

/// The tables of a connection that has had streams.
struct Open {
    entries: HashMap<StreamKey, Entry>,
    held: VecDeque<Held>,
    holding: usize,
    limits: StreamLimits,
    stats: StreamStats,
}

impl std::fmt::Debug for StreamTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.as_deref();
        f.debug_struct("StreamTable")
            .field("open", &open.map_or(0, |t| t.entries.len()))
            .field("held", &open.map_or(0, |t| t.held.len()))
            .field("holding", &self.holding())
            .finish()
    }
}

impl StreamTable {
    pub(crate) fn new(limits: StreamLimits) -> StreamTable {
        StreamTable { limits, open: None }
    }

    /// The tables, allocated on first use.
    fn open_mut(&mut self) -> &mut Open {
        let limits = self.limits;
        self.open.get_or_insert_with(|| {
            Box::new(Open {
                entries: HashMap::new(),
                held: VecDeque::new(),
                holding: 0,
                limits,
                stats: StreamStats::default(),
            })
        })
    }

    /// Streams open now.
    pub(crate) fn len(&self) -> usize {
        self.open.as_ref().map_or(0, |t| t.entries.len())
    }

    /// Whether stream `key` is open (not yet closed both ways, expired or failed).
    pub(crate) fn is_open(&self, key: StreamKey) -> bool {
        self.open
            .as_ref()
            .is_some_and(|t| t.entries.contains_key(&key))
    }

    /// What the table counted.
    pub(crate) fn stats(&self) -> StreamStats {
        self.open
            .as_ref()
            .map_or_else(StreamStats::default, |t| t.stats)
    }

    /// Inboxes full: while non-zero the connection must not read.
    pub(crate) fn holding(&self) -> usize {
        self.open.as_ref().map_or(0, |t| t.holding)
    }

    /// Whether sends wait for the output to drain.
    pub(crate) fn has_held(&self) -> bool {
        self.open.as_ref().is_some_and(|t| !t.held.is_empty())
    }

    /// Handles one received Stream frame. `conn` makes handles for new streams;
    /// `route` finds the handler for a stream the peer opens.
    pub(crate) fn on_frame<'r>(
        &mut self,
        frame: &FrameRef<'_>,
        metadata: Option<&ringrpc_protocol::metadata::Metadata>,
        conn: &dyn Fn() -> ConnHandle,
        route: impl FnOnce(&[u8]) -> Option<&'r StreamRoute>,
        out: &mut OutQueue,
    ) {
        self.open_mut().on_frame(frame, metadata, conn, route, out);
    }

    /// Registers a stream this side opens with id `id`; `false` (and the stream ended with
    /// an error) when the connection has the most streams allowed.
    pub(crate) fn open_local(&mut self, shared: Arc<StreamShared>, id: u64) -> bool {
        self.open_mut().open_local(shared, id)
    }

    /// Queues a sender's frame, or holds it while the connection is `overstocked` (or
    /// earlier frames are held).
    pub(crate) fn send(
        &mut self,
        shared: Arc<StreamShared>,
        send: OutFrame,
        overstocked: bool,
        out: &mut OutQueue,
    ) {
        self.open_mut().send(shared, send, overstocked, out);
    }

    /// Queues every held frame, in order.
    pub(crate) fn flush_held(&mut self, out: &mut OutQueue) {
        if let Some(t) = self.open.as_mut() {
            t.flush_held(out);
        }
    }

    /// A receive took the stream's inbox to half: reading may go on.
    pub(crate) fn resume(&mut self, shared: &StreamShared) {
        if let Some(t) = self.open.as_mut() {
            t.resume(shared);
        }
    }

    /// Ends the stream `key` with a timeout error both ways.
    pub(crate) fn expire(&mut self, key: StreamKey, out: &mut OutQueue) {
        if let Some(t) = self.open.as_mut() {
            t.expire(key, out);
        }
    }

    /// The connection is gone: every stream ends with [`StreamError::Disconnected`].
    pub(crate) fn fail_all(&mut self) {
        if let Some(t) = self.open.as_mut() {
            t.fail_all();
        }
    }
}

/// The work behind [`StreamTable`]'s methods of the same names, on tables that exist.
impl Open {
    fn on_frame<'r>(
        &mut self,
        frame: &FrameRef<'_>,
        metadata: Option<&ringrpc_protocol::metadata::Metadata>,
        conn: &dyn Fn() -> ConnHandle,
        route: impl FnOnce(&[u8]) -> Option<&'r StreamRoute>,
        out: &mut OutQueue,
    ) {
        self.stats.frames_in += 1;
        let h = &frame.header;
        let key = (!h.stream_local, h.seq);
        if !self.entries.contains_key(&key) {
            if key.0 {
                // Ours, but closed already (or never opened): nothing to deliver to.
                self.stats.unknown += 1;
                return;
            }
            if !self.open_remote(frame, conn, route, out) {
                return;
            }
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.frames_in += 1;
        let end = if h.flags.is_error() {
            Some(Err(StreamError::Remote(
                String::from_utf8_lossy(frame.payload).into_owned(),
            )))
        } else if h.stream_eof {
            Some(Ok(()))
        } else {
            None
        };
        if end.is_some() {
            entry.recv_closed = true;
        }
        let data = if h.flags.is_error() {
            &[][..]
        } else {
            frame.payload
        };
        match &entry.mode {
            Mode::Discard => {}
            Mode::Inbox => {
                if !data.is_empty()
                    && entry.shared.deliver(Bytes::copy_from_slice(data), metadata)
                    && !entry.holding
                {
                    // Counted once: the inbox can fill again before the reactor takes the
                    // resume a receive posted in between (see `resume`).
                    entry.holding = true;
                    self.holding += 1;
                }
                if let Some(end) = end {
                    entry.shared.finish(end, false);
                }
            }
            Mode::Events(handler) => {
                // An empty frame without an end carries nothing (as in arpc).
                if data.is_empty() && end.is_none() {
                    return;
                }
                let handler = handler.clone();
                let first = entry.frames_in == 1;
                let event = match &end {
                    Some(Err(StreamError::Remote(text))) => StreamEvent::Error(text),
                    _ => StreamEvent::Data {
                        data,
                        eof: end.is_some(),
                    },
                };
                let mut ctx = StreamContext::new(&entry.shared, conn, event, first, out);
                ctx.metadata = metadata;
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&mut ctx)));
                let closed_by_handler = ctx.closed_send();
                let frames_out = ctx.frames_out();
                if closed_by_handler {
                    entry.send_closed = true;
                }
                if outcome.is_err() {
                    tracing::error!(
                        method = %String::from_utf8_lossy(entry.shared.method()),
                        "stream handler panicked"
                    );
                    entry.mode = Mode::Discard;
                    if !entry.send_closed && entry.shared.close_send() {
                        entry.send_closed = true;
                        push_error_end(
                            out,
                            false,
                            key.1,
                            entry.shared.method(),
                            STREAM_HANDLER_PANICKED,
                        );
                    }
                }
                self.stats.frames_out += frames_out;
            }
        }
        self.remove_if_done(key);
    }

    /// The peer opens stream `frame.header.seq`: registers it with its route's handler, or
    /// answers with an error end. Returns whether it was registered.
    fn open_remote<'r>(
        &mut self,
        frame: &FrameRef<'_>,
        conn: &dyn Fn() -> ConnHandle,
        route: impl FnOnce(&[u8]) -> Option<&'r StreamRoute>,
        out: &mut OutQueue,
    ) -> bool {
        let id = frame.header.seq;
        let Some(route) = route(frame.method) else {
            self.stats.unknown += 1;
            if !frame.header.flags.is_error() {
                push_error_end(out, false, id, frame.method, STREAM_METHOD_NOT_FOUND);
            }
            return false;
        };
        if self.entries.len() >= self.limits.max_streams {
            self.stats.refused += 1;
            push_error_end(out, false, id, frame.method, TOO_MANY_STREAMS);
            return false;
        }
        let shared = Arc::new(StreamShared::new(
            Bytes::copy_from_slice(frame.method),
            false,
            self.limits.queue_bytes,
            self.limits.send_window,
        ));
        shared.register(id, self.limits.queue_bytes, self.limits.send_window);
        let mode = match route {
            StreamRoute::Events(handler) => Mode::Events(handler.clone()),
            StreamRoute::Blocking(handler) => {
                let stream = BiStream::new(conn(), shared.clone());
                let handler = handler.clone();
                let spawned = std::thread::Builder::new()
                    .name("ringrpc-stream".into())
                    .stack_size(super::HANDLER_STACK)
                    .spawn(move || super::run_blocking(handler, stream));
                if let Err(e) = spawned {
                    tracing::error!("cannot start a stream handler thread: {e}");
                    self.stats.refused += 1;
                    shared.close_send();
                    push_error_end(out, false, id, frame.method, TOO_MANY_STREAMS);
                    return false;
                }
                Mode::Inbox
            }
            StreamRoute::Async(handler) => {
                let stream = BiStream::new(conn(), shared.clone());
                let sender = stream.sender();
                let future = handler(stream);
                let task = async move {
                    let outcome = AssertUnwindSafe(future).catch_unwind().await;
                    if let Err(panic) = outcome {
                        tracing::error!(
                            "async stream handler panicked: {}",
                            panic_message(&*panic)
                        );
                        let _ = sender.close_with_error(STREAM_HANDLER_PANICKED);
                    }
                };
                if let Err(e) = Executor::spawn(task) {
                    tracing::error!("cannot start an async stream handler: {e}");
                    self.stats.refused += 1;
                    shared.close_send();
                    push_error_end(out, false, id, frame.method, TOO_MANY_STREAMS);
                    return false;
                }
                Mode::Inbox
            }
        };
        self.stats.opened_by_peer += 1;
        self.entries.insert(
            (false, id),
            Entry {
                shared,
                mode,
                recv_closed: false,
                send_closed: false,
                holding: false,
                frames_in: 0,
            },
        );
        true
    }

    /// Registers a stream this side opens with id `id`; false (and the stream ended with
    /// [`StreamError::TooManyStreams`]) when the connection has the most allowed.
    fn open_local(&mut self, shared: Arc<StreamShared>, id: u64) -> bool {
        if self.entries.len() >= self.limits.max_streams {
            self.stats.refused += 1;
            shared.finish(Err(StreamError::TooManyStreams), true);
            return false;
        }
        shared.register(id, self.limits.queue_bytes, self.limits.send_window);
        self.stats.opened_here += 1;
        self.entries.insert(
            (true, id),
            Entry {
                shared,
                mode: Mode::Inbox,
                recv_closed: false,
                send_closed: false,
                holding: false,
                frames_in: 0,
            },
        );
        true
    }

    /// A user's frame for `shared`'s stream: queued now, or held while `overstocked`.
    fn send(
        &mut self,
        shared: Arc<StreamShared>,
        send: OutFrame,
        overstocked: bool,
        out: &mut OutQueue,
    ) {
        if overstocked || !self.held.is_empty() {
            self.held.push_back(Held { shared, send });
            return;
        }
        self.queue(&shared, send, out);
    }

    /// Queues what waited for the output to drain.
    fn flush_held(&mut self, out: &mut OutQueue) {
        while let Some(Held { shared, send }) = self.held.pop_front() {
            self.queue(&shared, send, out);
        }
    }

    fn queue(&mut self, shared: &StreamShared, send: OutFrame, out: &mut OutQueue) {
        let key = (shared.opened_here(), shared.id());
        let window = send.window;
        match self.entries.get_mut(&key) {
            Some(entry) if !entry.send_closed => {
                let flags = flags(send.error);
                let bits = bits(key.0, send.eof || send.error);
                match &send.metadata {
                    None => {
                        out.push_stream_frame(bits, flags, key.1, shared.method(), send.payload)
                    }
                    Some(md) => push_with_metadata(
                        out,
                        bits,
                        flags,
                        key.1,
                        shared.method(),
                        &send.payload,
                        md,
                    ),
                }
                self.stats.frames_out += 1;
                if send.eof || send.error {
                    entry.send_closed = true;
                }
                self.remove_if_done(key);
            }
            // Gone (ended by the peer's error, a timeout or a refusal): dropped.
            _ => {}
        }
        if window > 0 {
            shared.unsent_done(window);
        }
    }

    /// A receive drained `shared`'s inbox to half: stop holding the connection for it,
    /// unless the inbox filled again after that resume was posted (then a later receive
    /// posts another). Before this check, such a stale resume released a hold that was
    /// still needed, and the hold counted twice was never released: the connection
    /// stopped reading for good (`a_slow_consumer_bounds_memory_and_loses_nothing` hung
    /// about one run in ten).
    fn resume(&mut self, shared: &StreamShared) {
        let key = (shared.opened_here(), shared.id());
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.holding && !shared.is_held() {
                entry.holding = false;
                self.holding -= 1;
            }
        }
    }

    /// The whole-stream timeout of `key` expired: ends it on both sides.
    fn expire(&mut self, key: StreamKey, out: &mut OutQueue) {
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        if entry.holding {
            self.holding -= 1;
        }
        // Closed before the end is visible, so a user woken by it cannot send.
        let send_was_open = entry.shared.close_send() && !entry.send_closed;
        entry.shared.finish(Err(StreamError::Timeout), true);
        if send_was_open {
            push_error_end(out, key.0, key.1, entry.shared.method(), STREAM_TIMED_OUT);
        }
    }

    /// The connection is gone: every stream ends with `Disconnected`, held sends are
    /// dropped.
    fn fail_all(&mut self) {
        for (_, entry) in self.entries.drain() {
            entry.shared.finish(Err(StreamError::Disconnected), true);
        }
        for held in self.held.drain(..) {
            held.shared.finish(Err(StreamError::Disconnected), true);
        }
        self.holding = 0;
    }

    fn remove_if_done(&mut self, key: StreamKey) {
        if let Some(entry) = self.entries.get(&key) {
            if entry.recv_closed && entry.send_closed {
                if entry.holding {
                    self.holding -= 1;
                }
                self.entries.remove(&key);
            }
        }
    }
}
