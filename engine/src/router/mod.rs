//! Methods and their handlers, the request context a handler sees, the not-found fallback
//! and the middleware chain around every handler.
//!
//! Invariants: a method name is 1..=127 bytes (the wire limit); a Request always gets exactly
//! one Response, whatever the handler or a middleware does (replies twice, never, stops the
//! chain, or panics); a Notify never gets one; every middleware whose `before` ran gets its
//! `after`, in reverse order, once the Response is settled.

pub(crate) mod blocking;
pub(crate) mod json;
pub(crate) mod typed;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;
use ringrpc_protocol::{Command, Flags, FrameRef, Header, MAX_METHOD_LEN};

use crate::conn::handle::{ConnHandle, Deferred, Responder};
use crate::ids::ConnInfo;
use crate::observe::measure::{MethodMetrics, Timing};
use crate::reactor::mailbox::Mailbox;
use crate::router::blocking::{BlockingHandler, BlockingPool, Request};
use crate::router::typed::{
    AsyncHandler, Extensions, HandlerError, IntoReply, Reply, TypedHandler, async_route,
    typed_route,
};
use crate::stream::{BiStream, Replies, StreamContext, StreamRoute};
use crate::transport::outqueue::OutQueue;

/// A request handler: reads the context and replies through it (now, or later through a
/// [`Responder`]). It runs on the reactor thread, so it must not block.
///
/// A Request whose handler returns without replying or taking a responder gets an empty
/// Response.
pub type Handler = Arc<dyn Fn(&mut Context<'_>) + Send + Sync>;

use crate::error::check_body;
pub use crate::error::{
    HANDLER_PANICKED, METHOD_NOT_FOUND, RESPONSE_TOO_LARGE, STOPPED_BY_MIDDLEWARE,
};

/// How far a Request has been answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyState {
    /// Nothing yet; when the handler returns the engine sends an empty Response.
    Pending,
    /// A successful Response is queued.
    Sent,
    /// An error Response is queued.
    SentError,
    /// A [`Responder`] was taken and answers later.
    Deferred,
    /// A Notify: no Response is ever sent.
    NoReply,
}

/// What a task owes the connection it serves: a Request's answer, or a Notify's slot of the
/// in-flight limit.
pub(crate) enum Owed {
    Answer(Responder),
    Notify(NotifySlot),
}

/// A Notify's slot of its connection's in-flight limit, freed (through the mailbox) when
/// dropped.
pub(crate) struct NotifySlot {
    conn: ConnHandle,
}

impl NotifySlot {
    /// A slot its connection already counts as held (see [`Context::owe`]).
    pub(crate) fn new(conn: ConnHandle) -> NotifySlot {
        NotifySlot { conn }
    }
}

impl Drop for NotifySlot {
    fn drop(&mut self) {
        // Owed: never refused.
        let _ = self
            .conn
            .mailbox()
            .post(crate::reactor::mailbox::Command::Settled {
                conn: self.conn.id(),
            });
    }
}

/// What a handler sees of one Request or Notify, and how it answers.
pub struct Context<'a> {
    header: Header,
    method: &'a [u8],
    payload: &'a [u8],
    conn: &'a ConnInfo,
    mailbox: &'a Arc<Mailbox>,
    in_flight: &'a Deferred,
    out: &'a mut OutQueue,
    state: ReplyState,
    /// The request's metadata block, already taken off `payload`.
    metadata: Option<&'a Metadata>,
    /// Metadata to attach to the Response.
    reply_metadata: Option<Metadata>,
    /// When metrics are on: the clock started at dispatch, handed to a responder.
    timing: Option<Timing>,
    /// The buffer the frame lies in, when it is the frame's own: `payload_bytes` then
    /// shares it instead of copying.
    owner: Option<&'a Bytes>,
    /// The state registered with the builder, for extractors.
    extensions: &'a Arc<Extensions>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("cmd", &self.header.cmd)
            .field("seq", &self.header.seq)
            .field("method", &String::from_utf8_lossy(self.method))
            .field("payload_len", &self.payload.len())
            .field("conn", &self.conn.id)
            .finish()
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        frame: &FrameRef<'a>,
        metadata: Option<&'a Metadata>,
        conn: &'a ConnInfo,
        mailbox: &'a Arc<Mailbox>,
        in_flight: &'a Deferred,
        out: &'a mut OutQueue,
        extensions: &'a Arc<Extensions>,
    ) -> Context<'a> {
        Context {
            header: frame.header,
            method: frame.method,
            payload: frame.payload,
            conn,
            mailbox,
            in_flight,
            out,
            state: if frame.header.cmd == Command::Request {
                ReplyState::Pending
            } else {
                ReplyState::NoReply
            },
            metadata,
            reply_metadata: None,
            timing: None,
            owner: None,
            extensions,
        }
    }

    /// The method name.
    pub fn method(&self) -> &'a [u8] {
        self.method
    }
    /// The request's metadata (arpc's `md` block, `user_flags` bit 0), if it carried any.
    /// The block is already taken off [`Context::payload`].
    pub fn metadata(&self) -> Option<&'a Metadata> {
        self.metadata
    }

    /// Attaches `metadata` to whatever Response this Request gets (the handler's reply, an
    /// error, or a [`Responder`] taken after this call), replacing any set before (a
    /// [`PropagateMetadata`] middleware's included: add keys with
    /// [`Context::reply_metadata_mut`] to keep those). Ignored for a Notify and once
    /// replied.
    pub fn set_reply_metadata(&mut self, metadata: Metadata) {
        self.reply_metadata = Some(metadata);
    }

    /// The metadata the Response will carry, created empty if none was set.
    pub fn reply_metadata_mut(&mut self) -> &mut Metadata {
        self.reply_metadata.get_or_insert_default()
    }

    /// The metadata the Response will carry, if any was set.
    pub fn reply_metadata(&self) -> Option<&Metadata> {
        self.reply_metadata.as_ref()
    }

    /// The request payload, borrowed from the receive buffer.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The request payload as an owned `Bytes`, for keeping beyond the handler or replying
    /// with [`Context::reply_bytes`]: shared without a copy when the frame has a buffer of
    /// its own (see [`Context::payload_shared`]), copied otherwise. [`Context::payload`]
    /// lends it without copying.
    pub fn payload_bytes(&self) -> Bytes {
        self.payload_shared()
            .unwrap_or_else(|| Bytes::copy_from_slice(self.payload))
    }
    /// The request payload shared without a copy, when the frame arrived in pieces and was
    /// assembled in a buffer of its own (frames larger than a receive buffer); `None`
    /// otherwise (the frame lies in a receive buffer that goes back to the kernel).
    pub fn payload_shared(&self) -> Option<Bytes> {
        let owner = self.owner?;
        let within = owner.as_ptr_range();
        let payload = self.payload.as_ptr_range();
        (!self.payload.is_empty() && within.start <= payload.start && payload.end <= within.end)
            .then(|| owner.slice_ref(self.payload))
    }
    /// The caller's sequence number.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }
    /// The eight application flag bits.
    pub fn user_flags(&self) -> u8 {
        self.header.user_flags
    }
    /// Whether the caller made the call asynchronously.
    pub fn is_async(&self) -> bool {
        self.header.flags.is_async()
    }
    /// Whether this is a Notify (no Response will be sent).
    pub fn is_notify(&self) -> bool {
        self.header.cmd == Command::Notify
    }
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }
    /// The connection, as a handle usable later and from any thread (notify or call the
    /// peer, close).
    pub fn conn(&self) -> ConnHandle {
        ConnHandle::new(*self.conn, self.mailbox.clone())
    }

    /// Takes over answering this Request: the returned [`Responder`] is `Send + 'static`
    /// and answers from any thread, whenever the work is done. `None` for a Notify or when
    /// a reply was already queued.
    pub fn responder(&mut self) -> Option<Responder> {
        if self.replied() {
            return None;
        }
        self.state = ReplyState::Deferred;
        self.in_flight.owe();
        let responder = Responder::new(
            self.conn(),
            self.header.seq,
            self.method,
            self.header.flags,
            self.timing,
        );
        Some(match self.reply_metadata.take() {
            None => responder,
            Some(md) => responder.with_metadata(md),
        })
    }
    /// The request as an owned [`Request`] (the payload shared without a copy when the frame
    /// has a buffer of its own, copied otherwise), for typed and async handlers.
    pub(crate) fn to_request(&self) -> Request {
        Request {
            method: Bytes::copy_from_slice(self.method),
            payload: self.payload_bytes(),
            seq: self.header.seq,
            user_flags: self.header.user_flags,
            is_notify: self.is_notify(),
            conn: self.conn(),
            metadata: self.metadata.cloned(),
            extensions: self.extensions.clone(),
        }
    }

    /// Leaves this Request (or Notify) owed to a task: a Request's [`Responder`], or a
    /// Notify's slot of the in-flight limit, freed when the task finishes.
    pub(crate) fn owe(&mut self) -> Owed {
        match self.responder() {
            Some(responder) => Owed::Answer(responder),
            None => {
                self.in_flight.owe();
                Owed::Notify(NotifySlot::new(self.conn()))
            }
        }
    }

    /// Keeps `task` with the connection, so it is cancelled when the connection goes.
    pub(crate) fn track_task(&self, task: crate::executor::TaskKey) {
        self.in_flight.track(task);
    }

    /// Answers with `reply` (a typed handler's value).
    pub(crate) fn reply_with(&mut self, reply: Reply) {
        if let Some(md) = reply.metadata {
            self.set_reply_metadata(md);
        }
        match reply.body {
            Ok(payload) => self.reply_bytes(payload),
            Err(text) => self.reply_error(&text),
        };
    }

    /// Whether a Response has been queued or a responder taken (always true for a Notify).
    pub fn replied(&self) -> bool {
        self.state != ReplyState::Pending
    }
    /// How far this Request has been answered.
    pub fn reply_state(&self) -> ReplyState {
        self.state
    }

    /// Replies with `payload` (copied). Returns false, sending nothing, if already replied.
    pub fn reply(&mut self, payload: &[u8]) -> bool {
        self.respond(Flags::default(), payload)
    }

    /// Replies with `payload` without copying it: it is sent from this `Bytes` directly.
    pub fn reply_bytes(&mut self, payload: Bytes) -> bool {
        if self.replied() {
            return false;
        }
        if check_body(self.method, &payload).is_err() {
            return self.too_large(payload.len());
        }
        self.state = ReplyState::Sent;
        let flags = self.response_flags(Flags::default());
        if self.reply_metadata.is_some() {
            self.respond_with_metadata(flags, &payload);
            return true;
        }
        if self.behind_local_mail() {
            return self.queue_behind(flags, &payload);
        }
        self.out.push_frame_bytes(
            Command::Response,
            flags,
            0,
            self.header.seq,
            self.method,
            payload,
        );
        true
    }

    /// Replies with an error Response carrying `message`.
    pub fn reply_error(&mut self, message: &str) -> bool {
        self.respond(Flags::default().with_error(), message.as_bytes())
    }

    fn respond(&mut self, flags: Flags, payload: &[u8]) -> bool {
        if self.replied() {
            return false;
        }
        if check_body(self.method, payload).is_err() {
            return self.too_large(payload.len());
        }
        self.state = if flags.is_error() {
            ReplyState::SentError
        } else {
            ReplyState::Sent
        };
        let flags = self.response_flags(flags);
        if self.reply_metadata.is_some() {
            self.respond_with_metadata(flags, payload);
            return true;
        }
        if self.behind_local_mail() {
            return self.queue_behind(flags, payload);
        }
        self.out.push_frame(
            Command::Response,
            flags,
            0,
            self.header.seq,
            self.method,
            payload,
        );
        true
    }

    /// A reply over the wire's 4 GiB limit becomes the error [`RESPONSE_TOO_LARGE`] (the
    /// peer learns why; the connection stays usable).
    #[cold]
    fn too_large(&mut self, bytes: usize) -> bool {
        tracing::error!(seq = self.header.seq, bytes, "{RESPONSE_TOO_LARGE}");
        self.respond(Flags::default().with_error(), RESPONSE_TOO_LARGE.as_bytes())
    }

    /// Whether this handler (or an earlier one this turn) posted messages on this reactor's
    /// thread that are still queued: a Response written straight to the output now would
    /// overtake a notify or call the handler sent before it, so it queues behind them.
    #[inline]
    fn behind_local_mail(&self) -> bool {
        crate::reactor::mailbox::local_pending() && !self.conn.id.is_datagram()
    }

    /// Queues the Response behind the messages posted before it (see
    /// [`Context::behind_local_mail`]).
    #[cold]
    fn queue_behind(&mut self, flags: Flags, payload: &[u8]) -> bool {
        let frame = crate::conn::handle::encode(
            Command::Response,
            flags,
            self.header.seq,
            self.method,
            payload,
        );
        self.queue_encoded_behind(frame);
        true
    }

    #[cold]
    fn queue_encoded_behind(&mut self, frame: Bytes) {
        // Owed and posted on the owning reactor's thread: never refused.
        let _ = self.mailbox.post(crate::reactor::mailbox::Command::Reply {
            conn: self.conn.id,
            frame,
        });
    }

    /// Queues the Response with the reply metadata appended.
    #[cold]
    fn respond_with_metadata(&mut self, flags: Flags, payload: &[u8]) {
        let md = self.reply_metadata.take().unwrap_or_default();
        let (seq, method) = (self.header.seq, self.method);
        match crate::transport::coder::encode_with_metadata(
            Command::Response,
            flags,
            seq,
            method,
            payload,
            &md,
        ) {
            Ok(frame) if self.behind_local_mail() => self.queue_encoded_behind(frame),
            Ok(frame) => self.out.push_encoded(frame),
            Err(e) => {
                // Only a body near 4 GiB can overflow: send the Response without it.
                tracing::warn!(seq, "response metadata dropped: {e}");
                self.out
                    .push_frame(Command::Response, flags, 0, seq, method, payload);
            }
        }
    }

    /// A Response keeps the Request's async bit.
    fn response_flags(&self, flags: Flags) -> Flags {
        Flags(flags.0 | (self.header.flags.0 & Flags::ASYNC))
    }
}

/// A method name that cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// The name is empty or longer than the wire allows.
    BadMethodLength {
        /// The name given.
        method: String,
    },
    /// A static asset's path is not an absolute URL path, or is the WebSocket path.
    BadAssetPath {
        /// The path given.
        path: String,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadMethodLength { method } => write!(
                f,
                "method name {method:?} is {} bytes; it must be 1..={MAX_METHOD_LEN}",
                method.len()
            ),
            RouteError::BadAssetPath { path } => write!(
                f,
                "static asset path {path:?} must start with '/', hold no spaces or '?', and differ from the WebSocket path"
            ),
        }
    }
}
impl std::error::Error for RouteError {}

/// FNV-1a over method names. The route table is fixed before serving and network input only
/// looks keys up, never inserts them, so a flooding-resistant (and slower) hash buys nothing.
#[derive(Debug)]
struct MethodHasher(u64);

impl Default for MethodHasher {
    fn default() -> Self {
        MethodHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for MethodHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Whether a Request or Notify goes on to the next middleware and the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next middleware, then the handler.
    Continue,
    /// Skip the later middlewares and the handler. A Request the middleware did not answer
    /// gets the error Response [`STOPPED_BY_MIDDLEWARE`].
    Stop,
}

/// Code run around every handler, the not-found one included, on the reactor thread (so it
/// must not block). Register with
/// [`ServerBuilder::middleware`](crate::ServerBuilder::middleware).
///
/// `before` runs in registration order and may answer or [`Flow::Stop`] the request; `after`
/// runs in reverse order once the Response is settled (queued, handed to a responder, or
/// none for a Notify), for every middleware whose `before` ran: also after a stop, an
/// unknown method or a panic. A panic in either is caught like a handler's.
pub trait Middleware: Send + Sync + 'static {
    /// Runs before the handler. Replying here and returning [`Flow::Continue`] leaves the
    /// handler's replies ignored.
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        let _ = ctx;
        Flow::Continue
    }
    /// Runs after the handler, once the Response is settled (see
    /// [`Context::reply_state`]).
    fn after(&self, ctx: &Context<'_>) {
        let _ = ctx;
    }
}

/// Middleware that copies the named keys from a Request's metadata onto its Response's
/// (whatever Response it gets: the handler's, an error, a responder's later answer), e.g. a
/// request id passed through. Keys the request does not carry are skipped; a key the
/// handler sets itself with [`Context::reply_metadata_mut`] wins.
///
/// ```
/// let mut router = ringrpc::Router::with_builtins();
/// router.add_middleware(ringrpc::PropagateMetadata::new(["x-request-id"]));
/// ```
#[derive(Clone, Debug)]
pub struct PropagateMetadata {
    keys: Vec<String>,
}

impl PropagateMetadata {
    /// Copies these keys.
    pub fn new<K: Into<String>>(keys: impl IntoIterator<Item = K>) -> PropagateMetadata {
        PropagateMetadata {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }
}

impl Middleware for PropagateMetadata {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        let Some(md) = ctx.metadata() else {
            return Flow::Continue;
        };
        if ctx.is_notify() {
            return Flow::Continue;
        }
        for key in &self.keys {
            if let Some(value) = md.get(key) {
                // Cannot fail: the key and value came from a valid block of at most the
                // same size.
                let _ = ctx
                    .reply_metadata_mut()
                    .insert(key.as_str(), Bytes::copy_from_slice(value));
            }
        }
        Flow::Continue
    }
}

/// Middleware that logs every Request and Notify at `info` level once it is answered:
/// method, seq, peer, payload length and how it was answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogRequests;

/// A shared middleware: register a clone and keep the other to read its state.
impl<M: Middleware> Middleware for Arc<M> {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        (**self).before(ctx)
    }
    fn after(&self, ctx: &Context<'_>) {
        (**self).after(ctx)
    }
}

impl Middleware for LogRequests {
    fn after(&self, ctx: &Context<'_>) {
        tracing::info!(
            method = %String::from_utf8_lossy(ctx.method()),
            seq = ctx.seq(),
            peer = %ctx.peer(),
            payload_len = ctx.payload().len(),
            reply = ?ctx.reply_state(),
            "request"
        );
    }
}

/// Maps method names to handlers, with an optional not-found handler, a middleware chain and
/// a worker pool for blocking handlers. Clones share the blocking pool.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<Box<[u8]>, Route, BuildHasherDefault<MethodHasher>>,
    streams: HashMap<Box<[u8]>, StreamRoute, BuildHasherDefault<MethodHasher>>,
    not_found: Option<Handler>,
    middleware: Vec<Arc<dyn Middleware>>,
    blocking: Arc<BlockingPool>,
    /// State for the `State` extractor.
    extensions: Arc<Extensions>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self
            .routes
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        names.sort();
        let mut streams: Vec<_> = self
            .streams
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        streams.sort();
        f.debug_struct("Router")
            .field("methods", &names)
            .field("streams", &streams)
            .field("custom_not_found", &self.not_found.is_some())
            .field("middleware", &self.middleware.len())
            .field("blocking", &self.blocking)
            .finish()
    }
}

/// The built-in `/echo`: answers with the payload unchanged (a large payload is sent from
/// the buffer it arrived in, without a copy).
pub fn echo(ctx: &mut Context<'_>) {
    match ctx.payload_shared() {
        Some(payload) => {
            ctx.reply_bytes(payload);
        }
        None => {
            let payload = ctx.payload();
            ctx.reply(payload);
        }
    }
}

fn check_method(method: &str) -> Result<(), RouteError> {
    if method.is_empty() || method.len() > MAX_METHOD_LEN {
        return Err(RouteError::BadMethodLength {
            method: method.to_owned(),
        });
    }
    Ok(())
}

/// Copies the frame in `ctx` into a [`Request`], takes its responder (a Notify: a place
/// among the connection's deferred work) and queues both for a worker of `pool`. Runs on
/// the reactor thread, so it never blocks.
fn submit_blocking(pool: &BlockingPool, ctx: &mut Context<'_>, handler: &BlockingHandler) {
    let owed = ctx.owe();
    // The responder already holds the method; share its copy.
    let method = match &owed {
        Owed::Answer(r) => r.method().clone(),
        Owed::Notify(_) => Bytes::copy_from_slice(ctx.method()),
    };
    let request = Request {
        method,
        payload: Bytes::copy_from_slice(ctx.payload()),
        seq: ctx.seq(),
        user_flags: ctx.user_flags(),
        is_notify: ctx.is_notify(),
        conn: ctx.conn(),
        metadata: ctx.metadata().cloned(),
        extensions: ctx.extensions.clone(),
    };
    pool.submit(handler.clone(), request, owed);
}

fn log_panic(ctx: &Context<'_>, what: &str) {
    tracing::error!(
        method = %String::from_utf8_lossy(ctx.method()),
        peer = %ctx.peer(),
        "{what} panicked"
    );
}

impl Router {
    /// A router with no methods.
    pub fn new() -> Router {
        Router::default()
    }

    /// A router with the built-ins: `/echo` and the stream `/echo/stream`.
    pub fn with_builtins() -> Router {
        let mut r = Router::new();
        r.add("/echo", echo).expect("valid built-in method name");
        r.add_stream("/echo/stream", crate::stream::echo_stream)
            .expect("valid built-in method name");
        r
    }

    /// Serves streams the peer opens for `method` frame by frame on the reactor thread:
    /// `handler` runs for each frame and once for the end, and must not block (take a
    /// [`StreamSender`](crate::StreamSender) to send from elsewhere).
    pub fn add_stream(
        &mut self,
        method: &str,
        handler: impl Fn(&mut StreamContext<'_>) + Send + Sync + 'static,
    ) -> Result<(), RouteError> {
        check_method(method)?;
        self.streams.insert(
            method.as_bytes().into(),
            StreamRoute::Events(Arc::new(handler)),
        );
        Ok(())
    }

    /// Serves streams the peer opens for `method` on a thread each: `handler` owns the
    /// [`BiStream`] and may block on it. Costs a thread (256 KiB of stack) per open stream.
    pub fn add_stream_blocking(
        &mut self,
        method: &str,
        handler: impl Fn(BiStream) + Send + Sync + 'static,
    ) -> Result<(), RouteError> {
        check_method(method)?;
        self.streams.insert(
            method.as_bytes().into(),
            StreamRoute::Blocking(Arc::new(handler)),
        );
        Ok(())
    }

    /// Serves streams the peer opens for `method` as tasks on the reactor that owns the
    /// connection: `handler` owns the [`BiStream`] and awaits
    /// [`recv_async`](BiStream::recv_async) and [`send_async`](BiStream::send_async) (or
    /// uses it as a `futures::Stream` and `Sink`), the send window being its back-pressure.
    /// Its future need not be `Send`. A panic ends the stream with an error; when the
    /// connection goes, the stream ends with `Disconnected`.
    pub fn add_stream_async<F, Fut>(&mut self, method: &str, handler: F) -> Result<(), RouteError>
    where
        F: Fn(BiStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        check_method(method)?;
        self.streams.insert(
            method.as_bytes().into(),
            StreamRoute::Async(Arc::new(move |stream| Box::pin(handler(stream)))),
        );
        Ok(())
    }

    /// Serves subscribes to `method`: `handler` runs on the reactor thread with the request
    /// payload (the stream's first frame) and the [`Replies`] to answer with, now or later
    /// from any thread. Works with any peer that opens a stream and reads until EOF.
    pub fn add_subscribe(
        &mut self,
        method: &str,
        handler: impl Fn(Bytes, Replies) + Send + Sync + 'static,
    ) -> Result<(), RouteError> {
        check_method(method)?;
        self.streams.insert(
            method.as_bytes().into(),
            StreamRoute::Events(crate::stream::subscribe_handler(handler)),
        );
        Ok(())
    }

    /// How streams for `method` are served, if at all.
    pub(crate) fn stream_route(&self, method: &[u8]) -> Option<&StreamRoute> {
        self.streams.get(method)
    }

    /// Registers `handler` for `method`, replacing any earlier one.
    pub fn add(
        &mut self,
        method: &str,
        handler: impl Fn(&mut Context<'_>) + Send + Sync + 'static,
    ) -> Result<(), RouteError> {
        self.add_route(method, Arc::new(handler), false)
    }

    /// Registers `handler` for `method`; `blocking`: it queues work for the pool (so a
    /// Notify takes a place among the connection's deferred work).
    fn add_route(
        &mut self,
        method: &str,
        handler: Handler,
        blocking: bool,
    ) -> Result<(), RouteError> {
        check_method(method)?;
        let next = self.routes.len() as u32;
        self.routes
            .entry(method.as_bytes().into())
            .and_modify(|r| {
                r.handler = handler.clone();
                r.blocking = blocking;
            })
            .or_insert(Route {
                handler,
                index: next,
                blocking,
            });
        Ok(())
    }

    /// Whether `method` is served on the blocking pool, where a Notify too holds a place
    /// among its connection's deferred work until its handler returns.
    pub(crate) fn is_blocking(&self, method: &[u8]) -> bool {
        self.routes.get(method).is_some_and(|r| r.blocking)
    }

    /// Registers a blocking `handler` for `method`, replacing any earlier one: it runs on the
    /// router's worker pool, never on a reactor thread, so it may block (disk, locks, calls
    /// to other services) without stalling other connections.
    ///
    /// The payload is copied once out of the receive buffer into the [`Request`]. For a
    /// Request, `Ok` is the Response ([`IntoReply`]: bytes, text, [`Json`], ...), `Err` an
    /// error Response carrying the [`HandlerError`]'s text (`?` converts a [`CallError`],
    /// serde's and I/O errors into one; `"text".into()` makes one), a panic the error
    /// [`HANDLER_PANICKED`]; for a Notify the value is discarded. Requests
    /// of one connection may be answered out of order. The pool's threads start with the
    /// first blocking request.
    ///
    /// [`Json`]: crate::Json
    /// [`CallError`]: crate::CallError
    pub fn add_blocking<R>(
        &mut self,
        method: &str,
        handler: impl Fn(Request) -> Result<R, HandlerError> + Send + Sync + 'static,
    ) -> Result<(), RouteError>
    where
        R: IntoReply,
    {
        check_method(method)?;
        let handler: BlockingHandler = Arc::new(move |request| handler(request).into_reply());
        let pool = self.blocking.clone();
        let route: Handler =
            Arc::new(move |ctx: &mut Context<'_>| submit_blocking(&pool, ctx, &handler));
        self.add_route(method, route, true)
    }

    /// Registers a typed `handler` for `method`: its arguments are extractors ([`Json`],
    /// [`MsgPack`], `Bytes`, [`Metadata`], [`ConnHandle`], [`State`], [`Request`]) and its
    /// value the Response ([`IntoReply`]). It runs on the reactor thread, like
    /// [`Router::add`], after the payload is copied into a [`Request`]. A body an extractor
    /// cannot parse is answered with an error naming the type expected.
    ///
    /// [`Json`]: crate::Json
    /// [`MsgPack`]: crate::MsgPack
    /// [`State`]: crate::State
    pub fn add_typed<Args: 'static>(
        &mut self,
        method: &str,
        handler: impl TypedHandler<Args>,
    ) -> Result<(), RouteError> {
        self.add(method, typed_route(handler))
    }

    /// Registers an async `handler` for `method`: it runs as a task on the reactor that owns
    /// the connection, so its future need not be `Send` and may hold `Rc`s; it may await
    /// calls, timers ([`crate::time`]), streams and other tasks without blocking the core.
    /// Its arguments are extractors and its output the Response, as for
    /// [`Router::add_typed`]. The Request counts against `max_in_flight_per_conn` until
    /// answered; a panic answers [`HANDLER_PANICKED`]; a task whose connection closes is
    /// dropped.
    pub fn add_async<Args: 'static>(
        &mut self,
        method: &str,
        handler: impl AsyncHandler<Args>,
    ) -> Result<(), RouteError> {
        self.add(method, async_route(handler))
    }

    /// Makes `value` available to the [`State`](crate::State) extractor of every typed and
    /// async handler (one value per type; a later one replaces it).
    pub fn insert_state<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.extensions).insert(value);
    }

    /// Sets how many threads run blocking handlers (at least 1; default: the number of
    /// CPUs, at least 2). Has no effect once the first blocking request has started them.
    pub fn set_blocking_threads(&mut self, threads: usize) {
        self.blocking.set_threads(threads.max(1));
    }

    /// How many threads run (or will run) blocking handlers.
    pub fn blocking_threads(&self) -> usize {
        self.blocking.threads()
    }

    /// Calls `handler` for every Request and Notify whose method has no route, instead of
    /// answering [`METHOD_NOT_FOUND`] at once. A Request it neither answers nor hands to a
    /// responder still gets the [`METHOD_NOT_FOUND`] error.
    pub fn set_not_found(&mut self, handler: impl Fn(&mut Context<'_>) + Send + Sync + 'static) {
        self.not_found = Some(Arc::new(handler));
    }

    /// Appends `middleware` to the chain run around every handler (see [`Middleware`]).
    pub fn add_middleware(&mut self, middleware: impl Middleware) {
        self.middleware.push(Arc::new(middleware));
    }

    /// The handler for `method`, if any.
    pub fn get(&self, method: &[u8]) -> Option<&Handler> {
        self.routes.get(method).map(|r| &r.handler)
    }

    /// The Request/Notify methods, by route index (the per-method metrics' labels).
    pub(crate) fn method_names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.routes.len()];
        for (name, route) in &self.routes {
            names[route.index as usize] = String::from_utf8_lossy(name).into_owned();
        }
        names
    }

    /// Runs the middleware and handler for a Request or Notify and guarantees the Response
    /// rules above; counts it in `methods` (when on) and records its latency there once
    /// answered (a deferred answer is recorded when the responder's answer arrives).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &self,
        frame: &FrameRef<'_>,
        metadata: Option<&Metadata>,
        owner: Option<&Bytes>,
        conn: &ConnInfo,
        mailbox: &Arc<Mailbox>,
        in_flight: &Deferred,
        out: &mut OutQueue,
        methods: &mut MethodMetrics,
    ) -> Dispatched {
        let found = self.routes.get(frame.method);
        if !methods.is_on() {
            return self.dispatch_to(
                found, frame, metadata, owner, conn, mailbox, in_flight, out, None,
            );
        }
        let timing = methods.start(found.map(|r| r.index));
        let mut deferred = false;
        let dispatched = self.dispatch_to(
            found,
            frame,
            metadata,
            owner,
            conn,
            mailbox,
            in_flight,
            out,
            Some((timing, &mut deferred)),
        );
        if let (Some(timing), false) = (timing, deferred) {
            methods.finish(timing);
        }
        dispatched
    }

    /// [`Router::dispatch`] once the route is looked up; `metered` carries the request's
    /// clock to a responder and reports whether the answer was deferred.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn dispatch_to(
        &self,
        found: Option<&Route>,
        frame: &FrameRef<'_>,
        metadata: Option<&Metadata>,
        owner: Option<&Bytes>,
        conn: &ConnInfo,
        mailbox: &Arc<Mailbox>,
        in_flight: &Deferred,
        out: &mut OutQueue,
        metered: Option<(Option<Timing>, &mut bool)>,
    ) -> Dispatched {
        let route = found.map(|r| &r.handler);
        if route.is_none() && self.not_found.is_none() && self.middleware.is_empty() {
            // Nothing user-defined to run: answer without building a context.
            if frame.header.cmd == Command::Request {
                out.push_frame(
                    Command::Response,
                    Flags(Flags::ERROR | (frame.header.flags.0 & Flags::ASYNC)),
                    0,
                    frame.header.seq,
                    frame.method,
                    METHOD_NOT_FOUND.as_bytes(),
                );
            }
            return Dispatched::NotFound;
        }
        let mut ctx = Context::new(
            frame,
            metadata,
            conn,
            mailbox,
            in_flight,
            out,
            &self.extensions,
        );
        ctx.owner = owner;
        match metered {
            None => self.run(route, &mut ctx),
            Some((timing, deferred)) => {
                ctx.timing = timing;
                let dispatched = self.run(route, &mut ctx);
                *deferred = ctx.state == ReplyState::Deferred;
                dispatched
            }
        }
    }

    #[inline]
    fn run(&self, route: Option<&Handler>, ctx: &mut Context<'_>) -> Dispatched {
        if self.middleware.is_empty() {
            self.run_handler(route, ctx)
        } else {
            self.run_with_middleware(route, ctx)
        }
    }

    /// Runs the route, or the not-found handler when there is none, and settles the
    /// Response.
    fn run_handler(&self, route: Option<&Handler>, ctx: &mut Context<'_>) -> Dispatched {
        let (handler, dispatched) = match route {
            Some(handler) => (Some(handler), Dispatched::Handled),
            None => (self.not_found.as_ref(), Dispatched::NotFound),
        };
        if let Some(handler) = handler {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&mut *ctx)));
            if outcome.is_err() {
                log_panic(ctx, "handler");
                ctx.reply_error(HANDLER_PANICKED);
                return Dispatched::Panicked;
            }
        }
        if !ctx.replied() {
            if dispatched == Dispatched::NotFound {
                ctx.reply_error(METHOD_NOT_FOUND);
            } else {
                ctx.reply(&[]);
            }
        }
        dispatched
    }

    fn run_with_middleware(&self, route: Option<&Handler>, ctx: &mut Context<'_>) -> Dispatched {
        let mut entered = 0;
        let mut before = Ok(Flow::Continue);
        for middleware in &self.middleware {
            entered += 1;
            before = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                middleware.before(&mut *ctx)
            }));
            if !matches!(before, Ok(Flow::Continue)) {
                break;
            }
        }
        let mut dispatched = match before {
            Ok(Flow::Continue) => self.run_handler(route, ctx),
            Ok(Flow::Stop) => {
                ctx.reply_error(STOPPED_BY_MIDDLEWARE);
                Dispatched::Handled
            }
            Err(_) => {
                log_panic(ctx, "middleware before");
                ctx.reply_error(HANDLER_PANICKED);
                Dispatched::Panicked
            }
        };
        for middleware in self.middleware[..entered].iter().rev() {
            let ctx = &*ctx;
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| middleware.after(ctx)));
            if outcome.is_err() {
                log_panic(ctx, "middleware after");
                dispatched = Dispatched::Panicked;
            }
        }
        dispatched
    }
}

/// A Request/Notify route: its handler and its index among the routes (for metrics).
#[derive(Clone)]
struct Route {
    handler: Handler,
    index: u32,
    /// Served on the blocking pool.
    blocking: bool,
}

/// What happened to a dispatched frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dispatched {
    Handled,
    NotFound,
    Panicked,
}
