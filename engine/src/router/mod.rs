//! Routing and handlers (the public `ringrpc::router` module): the route table ([`Router`]:
//! method names to handlers, the not-found fallback, middleware, the blocking pool), what a
//! handler sees ([`Context`], `context`), the middleware chain (`middleware`), dispatching
//! one frame (`dispatch`), the owned [`Request`] (`request`), blocking handlers
//! (`blocking`), typed and async handlers (`typed`) and JSON helpers (`json`).
//!
//! Invariants: a method name is 1..=127 bytes (the wire limit); a Request always gets exactly
//! one Response, whatever the handler or a middleware does (replies twice, never, stops the
//! chain, or panics); a Notify never gets one; every middleware whose `before` ran gets its
//! `after`, in reverse order, once the Response is settled; the table is fixed once the
//! server is built (network input only looks names up).

pub(crate) mod blocking;
pub(crate) mod context;
mod dispatch;
pub(crate) mod json;
mod middleware;
pub(crate) mod request;
pub(crate) mod typed;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::MAX_METHOD_LEN;

use crate::router::blocking::{BlockingHandler, BlockingPool};
use crate::router::request::{Extensions, Request};
use crate::router::typed::{
    AsyncHandler, HandlerError, IntoReply, TypedHandler, async_route, typed_route,
};
use crate::stream::{BiStream, Replies, StreamContext, StreamRoute};

use crate::conn::responder::Owed;
pub use context::{Context, Handler, ReplyState};
pub(crate) use dispatch::Dispatched;
pub use middleware::{Flow, LogRequests, Middleware, PropagateMetadata};

pub use crate::error::{
    HANDLER_PANICKED, METHOD_NOT_FOUND, RESPONSE_TOO_LARGE, STOPPED_BY_MIDDLEWARE,
};

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
        Some(payload) => ctx.reply_bytes(payload),
        None => {
            let payload = ctx.payload();
            ctx.reply(payload)
        }
    }
}

/// A route's name kept for the life of the process (a few bytes per route, registered once
/// at startup), so the `Bytes` every request and responder of the route holds costs neither
/// a copy nor an atomic refcount shared by every core.
fn static_name(method: &str) -> Bytes {
    Bytes::from_static(Box::leak(method.as_bytes().to_vec().into_boxed_slice()))
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

    /// Registers `handler` for `method`, replacing any earlier one. A Request it leaves
    /// unanswered gets an empty, successful Response (see [`Handler`]).
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
            .or_insert_with(|| Route {
                handler,
                name: static_name(method),
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
    /// `MsgPack` (with the `msgpack` feature), `Bytes`, [`Metadata`](crate::Metadata),
    /// [`ConnHandle`](crate::ConnHandle),
    /// [`State`], [`Request`]) and its
    /// value the Response ([`IntoReply`]). It runs on the reactor thread, like
    /// [`Router::add`], after the payload is copied into a [`Request`]. A body an extractor
    /// cannot parse is answered with an error naming the type expected.
    ///
    /// [`Json`]: crate::Json
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
}

/// A Request/Notify route: its handler and its index among the routes (for metrics).
#[derive(Clone)]
struct Route {
    handler: Handler,
    /// The method name as a static `Bytes`: requests, responders and async handlers share
    /// it without a copy or a refcount (see [`static_name`]).
    name: Bytes,
    index: u32,
    /// Served on the blocking pool.
    blocking: bool,
}
