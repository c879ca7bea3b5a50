//! The client side: outbound connections served by a reactor of their own, with calls,
//! notifies, handlers for what the server sends, keepalive and automatic reconnect.
//!
//! Invariants: a [`ClientRuntime`] is a reactor without a listener, so client connections
//! get the same io_uring machinery, batching, backpressure and keepalive as the server's;
//! a call never outlives its connection (calls pending at a disconnect fail at once with
//! [`CallError::Disconnected`], and calls made while disconnected fail at once too); a
//! reconnect runs on a thread of its own, never on the reactor.

pub(crate) mod core_client;
mod pubsub;
pub(crate) mod topics;
mod typed_calls;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::client::topics::TopicTable;
use crate::config::ConfigError;
use crate::conn::call_future::{CallFuture, CallWithMetadata};
use crate::conn::handle::ConnHandle;
use crate::conn::hooks::Hooks;
use crate::error::{AUTH_METHOD, CallError, DisconnectReason, StreamError};
use crate::reactor::CoreSockets;
use crate::reactor::runtime::{ReactorThreads, join_all, new_mailboxes, spawn_reactors};
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::{Adoption, ConnPolicy, Shared};
use crate::router::{Context, Router};
use crate::server::StartError;
use crate::stream::{BiStream, Subscription};

/// Why a client could not connect or start.
#[derive(Debug)]
pub enum ClientError {
    /// The address did not resolve.
    Resolve(String, io::Error),
    /// No address of the target accepted a connection.
    Connect(String, io::Error),
    /// The client's reactor could not start.
    Start(StartError),
    /// A method name given to the builder is invalid.
    Route(crate::router::RouteError),
    /// A setting is out of range.
    Config(ConfigError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve(addr, e) => write!(f, "cannot resolve {addr}: {e}"),
            ClientError::Connect(addr, e) => write!(
                f,
                "cannot connect to {addr}: {e}; is the server running and listening there?"
            ),
            ClientError::Start(e) => write!(f, "client reactor: {e}"),
            ClientError::Route(e) => write!(f, "{e}"),
            ClientError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A reactor thread that serves client connections; cheap to clone, shared by as many
/// clients as you like. It stops when the last clone and the last client using it drop.
#[derive(Clone, Debug)]
pub struct ClientRuntime {
    inner: Arc<RuntimeInner>,
}

#[derive(Debug)]
struct RuntimeInner {
    shared: Arc<Shared>,
    threads: Mutex<ReactorThreads>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.shared.shutdown();
        // Dropped from a callback on its own reactor: joining would wait for ourselves.
        if crate::conn::handle::on_reactor_thread() {
            return;
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for failure in join_all(threads).into_iter().filter_map(Result::err) {
            tracing::error!("client reactor failed: {failure}");
        }
    }
}

impl ClientRuntime {
    /// A runtime: one reactor thread, unpinned, serving the connections of every client
    /// built on it — each with its own handlers, keepalive and idle timeout.
    pub fn new() -> Result<ClientRuntime, ClientError> {
        let settings = ReactorSettings::client();
        let start = |e| ClientError::Start(StartError::from(e));
        let mailboxes = new_mailboxes(1, settings.mailbox_capacity);
        let shared = Arc::new(Shared::new(mailboxes, Hooks::default()));
        let threads = spawn_reactors(
            &Arc::new(settings),
            &Arc::new(Router::new()),
            &shared,
            vec![CoreSockets::default()],
        )
        .map_err(start)?;
        Ok(ClientRuntime {
            inner: Arc::new(RuntimeInner {
                shared,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Hands a connected socket to the reactor, served under `policy`; `closed` runs on the
    /// reactor thread when it is gone. Returns its handle once the reactor serves it.
    fn adopt(
        &self,
        stream: TcpStream,
        policy: Arc<ConnPolicy>,
        closed: impl FnOnce(&DisconnectReason) + Send + 'static,
    ) -> Result<ConnHandle, CallError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.shared.adopt(
            0,
            Adoption {
                stream,
                policy,
                opened: Box::new(move |handle| {
                    let _ = tx.send(handle);
                }),
                closed: Box::new(closed),
            },
        );
        // The reactor either serves it (sends the handle) or, stopping or stopped, drops it.
        rx.recv().map_err(|_| CallError::Stopped)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RuntimeOptions {
    keepalive: Option<Duration>,
    idle_timeout: Option<Duration>,
}

/// How a client reconnects after losing its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// Wait before the first attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before giving up (the client then stays disconnected).
    pub max_attempts: u32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_attempts: 10,
        }
    }
}

type ReconnectHook = Arc<dyn Fn(u32) + Send + Sync>;

/// Options of a [`Client`]; [`ClientBuilder::connect`] connects.
pub struct ClientBuilder {
    /// Every address to try, in order; the first connection starts at a random one.
    targets: Vec<String>,
    router: Router,
    route_error: Option<crate::router::RouteError>,
    runtime: Option<ClientRuntime>,
    options: RuntimeOptions,
    connect_timeout: Duration,
    reconnect: Option<Reconnect>,
    on_reconnect: Option<ReconnectHook>,
    auth: Option<Bytes>,
    pubsub: Arc<TopicTable>,
    gzip_threshold: Option<usize>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("targets", &self.targets)
            .field("router", &self.router)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

impl ClientBuilder {
    /// Serves `method` for calls and notifies the server sends to this client. Handlers
    /// run on the client's reactor thread and must not block (take a responder instead).
    pub fn route(
        mut self,
        method: &str,
        handler: impl Fn(&mut Context<'_>) + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.router.add(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves `method` for the server's calls and notifies with a typed `handler` (see
    /// [`Router::add_typed`]).
    pub fn route_typed<Args: 'static>(
        mut self,
        method: &str,
        handler: impl crate::TypedHandler<Args>,
    ) -> Self {
        if let Err(e) = self.router.add_typed(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves `method` for the server's calls and notifies with an async `handler`, run as
    /// a task on the client's reactor (see [`Router::add_async`]).
    pub fn route_async<Args: 'static>(
        mut self,
        method: &str,
        handler: impl crate::AsyncHandler<Args>,
    ) -> Self {
        if let Err(e) = self.router.add_async(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Makes `value` available to the [`State`](crate::State) extractor of this client's
    /// typed and async handlers.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.router.insert_state(value);
        self
    }

    /// Serves streams the server opens to this client for `method`, frame by frame on the
    /// client's reactor thread (see [`Router::add_stream`]).
    pub fn route_stream(
        mut self,
        method: &str,
        handler: impl Fn(&mut crate::StreamContext<'_>) + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.router.add_stream(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves streams the server opens to this client for `method` on a thread each (see
    /// [`Router::add_stream_blocking`]).
    pub fn route_stream_blocking(
        mut self,
        method: &str,
        handler: impl Fn(crate::BiStream) + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.router.add_stream_blocking(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves streams the server opens to this client for `method` as async tasks on the
    /// client's reactor (see [`Router::add_stream_async`]).
    pub fn route_stream_async<F, Fut>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(crate::BiStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        if let Err(e) = self.router.add_stream_async(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves this client on a shared runtime instead of a reactor thread of its own; its
    /// handlers, keepalive and idle timeout still apply to its own connection.
    pub fn runtime(mut self, runtime: &ClientRuntime) -> Self {
        self.runtime = Some(runtime.clone());
        self
    }

    /// Ping the server when it has sent nothing for this long (default off).
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.options.keepalive = every;
        self
    }

    /// Close the connection when the server sent nothing for this long (default off); with
    /// keepalive, a dead server is noticed (and, with reconnect, replaced).
    pub fn idle_timeout(mut self, after: Option<Duration>) -> Self {
        self.options.idle_timeout = after;
        self
    }

    /// Longest a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Authenticate every connection (the first and each reconnect) with the server's
    /// shared secret before using it (see `ConfigBuilder::auth_secret`).
    pub fn auth(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.auth = Some(Bytes::copy_from_slice(secret.as_ref()));
        self
    }

    /// Reconnect automatically after a disconnect (default off).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Runs `hook` with the attempt number after each successful reconnect, on the
    /// reconnecting thread.
    pub fn on_reconnect(mut self, hook: impl Fn(u32) + Send + Sync + 'static) -> Self {
        self.on_reconnect = Some(Arc::new(hook));
        self
    }

    /// Sends frames longer than this many bytes gzip-compressed, arpc's way, when that makes
    /// them shorter (default `None`: off); see `ConfigBuilder::gzip_threshold`. The server
    /// must decode arpc gzip frames (ringrpc, or Go arpc with the gzip coder). Compressed
    /// frames from the server are accepted either way.
    pub fn gzip_threshold(mut self, bytes: Option<usize>) -> Self {
        self.gzip_threshold = bytes;
        self
    }

    /// Connects (blocking until connected or failed).
    pub fn connect(self) -> Result<Client, ClientError> {
        if let Some(e) = self.route_error {
            return Err(ClientError::Route(e));
        }
        let runtime = match self.runtime {
            Some(rt) => rt,
            None => ClientRuntime::new()?,
        };
        let mut policy = ConnPolicy::new(
            Arc::new(self.router),
            &ReactorSettings::client(),
            self.options.idle_timeout,
            self.options.keepalive,
            None,
        );
        policy.gzip_threshold = self.gzip_threshold;
        let policy = Arc::new(policy);
        let mut targets = Vec::with_capacity(self.targets.len());
        let mut unresolved = None;
        for target in self.targets {
            match target.to_socket_addrs() {
                Ok(addrs) => targets.push((target, addrs.collect())),
                Err(e) if targets.is_empty() => unresolved = Some((target, e)),
                Err(e) => tracing::warn!(target, "cannot resolve a client address: {e}"),
            }
        }
        if targets.is_empty() {
            let (target, e) = unresolved.unwrap_or_else(|| {
                (
                    String::new(),
                    io::Error::new(io::ErrorKind::InvalidInput, "no address given"),
                )
            });
            return Err(ClientError::Resolve(target, e));
        }
        if let Some((target, e)) = unresolved {
            tracing::warn!(target, "cannot resolve a client address: {e}");
        }
        // Clients given the same list spread over it.
        let start = random_index(targets.len());
        let inner = Arc::new(ClientInner {
            targets,
            cursor: AtomicUsize::new(start),
            runtime,
            policy,
            current: Mutex::new(None),
            closed: AtomicBool::new(false),
            connect_timeout: self.connect_timeout,
            reconnect: self.reconnect,
            on_reconnect: self.on_reconnect,
            auth: self.auth,
            pubsub: self.pubsub,
        });
        let stream = inner
            .dial(start)
            .map_err(|e| ClientError::Connect(inner.all_targets(), e))?;
        ClientInner::attach(&inner, stream).map_err(|e| {
            let why = match e {
                // The server refused us (authentication): its words say why.
                CallError::Remote(text) => io::Error::new(io::ErrorKind::PermissionDenied, text),
                other => io::Error::new(io::ErrorKind::NotConnected, other.to_string()),
            };
            ClientError::Connect(inner.target(), why)
        })?;
        Ok(Client { inner })
    }

    /// This client's pub/sub handlers and password.
    pub(crate) fn pubsub_table(&self) -> &Arc<TopicTable> {
        &self.pubsub
    }
}

struct ClientInner {
    /// Each address given and what it resolved to.
    targets: Vec<(String, Vec<SocketAddr>)>,
    /// The target of the current (or last) connection.
    cursor: AtomicUsize,
    runtime: ClientRuntime,
    /// Handlers and timeouts of this client's connection.
    policy: Arc<ConnPolicy>,
    /// The live connection, `None` while disconnected.
    current: Mutex<Option<ConnHandle>>,
    /// Closed by the user: no reconnect.
    closed: AtomicBool,
    connect_timeout: Duration,
    reconnect: Option<Reconnect>,
    on_reconnect: Option<ReconnectHook>,
    auth: Option<Bytes>,
    /// Pub/sub handlers and password, restored on every new connection.
    pubsub: Arc<TopicTable>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(conn) = self
            .current
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            conn.close_owed();
        }
    }
}

impl ClientInner {
    /// Connects to the first target, from `start` on and round, that accepts; it becomes
    /// the current target.
    fn dial(&self, start: usize) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
        let n = self.targets.len();
        for i in 0..n {
            let at = (start + i) % n;
            for addr in &self.targets[at].1 {
                match TcpStream::connect_timeout(addr, self.connect_timeout) {
                    Ok(stream) => {
                        self.cursor.store(at, Ordering::Relaxed);
                        return Ok(stream);
                    }
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// The current (or last) target.
    fn target(&self) -> String {
        self.targets[self.cursor.load(Ordering::Relaxed) % self.targets.len()]
            .0
            .clone()
    }

    /// Every target, for errors.
    fn all_targets(&self) -> String {
        let names: Vec<&str> = self.targets.iter().map(|(t, _)| t.as_str()).collect();
        names.join(", ")
    }

    /// Hands `stream` to the runtime and makes it the current connection.
    fn attach(this: &Arc<ClientInner>, stream: TcpStream) -> Result<(), CallError> {
        let weak = Arc::downgrade(this);
        let handle = this
            .runtime
            .adopt(stream, this.policy.clone(), move |reason| {
                if let Some(inner) = weak.upgrade() {
                    inner.lost(reason);
                }
            })?;
        if let Some(secret) = &this.auth {
            // Callers see the connection only once it is authenticated.
            if let Err(e) = handle.call(AUTH_METHOD, secret.clone(), this.connect_timeout) {
                handle.close_owed();
                return Err(e);
            }
        }
        this.pubsub.restore(&handle);
        *this.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// The connection is gone (reactor thread): forget it, and reconnect if asked to.
    fn lost(self: Arc<Self>, reason: &DisconnectReason) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(target = %self.target(), "client connection lost: {reason}");
        let Some(policy) = self.reconnect else { return };
        let spawned = std::thread::Builder::new()
            .name("ringrpc-reconnect".into())
            .spawn(move || self.reconnect_loop(policy));
        if let Err(e) = spawned {
            tracing::error!("cannot start the reconnect thread: {e}");
        }
    }

    fn reconnect_loop(self: Arc<Self>, policy: Reconnect) {
        let mut backoff = policy.initial_backoff;
        for attempt in 1..=policy.max_attempts {
            std::thread::sleep(backoff);
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // The lost target is tried last.
            let next = self.cursor.load(Ordering::Relaxed) + 1;
            match self.dial(next) {
                Ok(stream) => {
                    if ClientInner::attach(&self, stream).is_err() {
                        return; // the runtime is shutting down
                    }
                    tracing::info!(target = %self.target(), attempt, "client reconnected");
                    if let Some(hook) = &self.on_reconnect {
                        hook(attempt);
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(targets = %self.all_targets(), attempt, "reconnect failed: {e}");
                }
            }
            backoff = (backoff * 2).min(policy.max_backoff);
        }
        tracing::error!(
            targets = %self.all_targets(),
            attempts = policy.max_attempts,
            "giving up reconnecting; calls fail with Disconnected"
        );
    }

    fn current(&self) -> Option<ConnHandle> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A connection to an arpc server, usable from any thread (cheap to clone).
///
/// ```no_run
/// use std::time::Duration;
/// let client = ringrpc::Client::connect("127.0.0.1:8888")?;
/// let answer = client.call("/echo", "hi".into(), Duration::from_secs(1))?;
/// assert_eq!(&answer[..], b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.inner.target())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Client {
    /// Connects to `target` (`host:port`) with default options on a reactor of its own.
    pub fn connect(target: &str) -> Result<Client, ClientError> {
        Client::builder(target).connect()
    }

    /// Options for a connection to `target`.
    pub fn builder(target: &str) -> ClientBuilder {
        Client::builder_multi([target])
    }

    /// Options for a connection to any one of `targets` (`host:port` each), the nodes of a
    /// cluster: the client connects to one picked at random (so clients spread), moving on
    /// to the next in turn when it refuses. With [`ClientBuilder::reconnect`], a lost
    /// connection fails over to the next target (the lost one is tried last), with the
    /// policy's backoff between rounds, and the client authenticates and resubscribes its
    /// pub/sub topics there before callers see the new connection, as after any reconnect.
    /// Calls in flight when a connection is lost fail with
    /// [`CallError::Disconnected`]; retry them if they are safe to repeat.
    ///
    /// ```no_run
    /// use ringrpc::{Client, Reconnect};
    /// let client = Client::builder_multi(["10.0.0.1:8888", "10.0.0.2:8888", "10.0.0.3:8888"])
    ///     .reconnect(Reconnect::default())
    ///     .connect()?;
    /// # Ok::<(), ringrpc::ClientError>(())
    /// ```
    pub fn builder_multi<I, S>(targets: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let pubsub = Arc::new(TopicTable::default());
        let mut router = Router::new();
        pubsub.install(&mut router);
        ClientBuilder {
            targets: targets.into_iter().map(Into::into).collect(),
            router,
            route_error: None,
            runtime: None,
            options: RuntimeOptions::default(),
            connect_timeout: Duration::from_secs(5),
            reconnect: None,
            on_reconnect: None,
            auth: None,
            pubsub,
            gzip_threshold: None,
        }
    }

    /// The address of the current (or, while disconnected, the last) connection, as given.
    pub fn target(&self) -> String {
        self.inner.target()
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.current().is_some()
    }

    /// The current connection's handle, if connected.
    pub fn conn(&self) -> Option<ConnHandle> {
        self.inner.current()
    }

    /// Calls `method` and waits for the Response payload, at most `timeout`. Fails at once
    /// with [`CallError::Disconnected`] while disconnected; refused inside a handler on the
    /// client's reactor thread, where waiting would stall it (use [`Client::call_async`] or
    /// [`Client::call_with`]).
    pub fn call(
        &self,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        match self.inner.current() {
            Some(conn) => conn.call(method, payload, timeout),
            None => Err(CallError::Disconnected),
        }
    }

    /// Calls `method`; the future resolves to the Response payload (see
    /// [`ConnHandle::call_async`]): `Send`, usable from any executor (tokio, smol,
    /// `futures::executor::block_on`, an async handler), cancelled when dropped. Fails at
    /// once with [`CallError::Disconnected`] while disconnected.
    ///
    /// ```no_run
    /// # async fn demo(client: ringrpc::Client) -> Result<(), ringrpc::CallError> {
    /// use std::time::Duration;
    /// let answer = client.call_async("/echo", "hi".into(), Duration::from_secs(1)).await?;
    /// assert_eq!(&answer[..], b"hi");
    /// # Ok(()) }
    /// ```
    pub fn call_async(&self, method: &str, payload: Bytes, timeout: Duration) -> CallFuture {
        match self.inner.current() {
            Some(conn) => conn.call_async(method, payload, timeout),
            None => CallFuture::failed(CallError::Disconnected),
        }
    }

    /// As [`Client::call_async`], with `metadata` appended to the Request; resolves to the
    /// payload and the Response's metadata, if any.
    pub fn call_async_with_metadata(
        &self,
        method: &str,
        payload: Bytes,
        metadata: crate::Metadata,
        timeout: Duration,
    ) -> CallWithMetadata {
        match self.inner.current() {
            Some(conn) => conn.call_async_with_metadata(method, payload, metadata, timeout),
            None => CallFuture::failed(CallError::Disconnected).with_metadata(),
        }
    }

    /// Calls `method` and runs `done` with the outcome on the client's reactor thread (so
    /// it must not block). Never blocks the caller.
    pub fn call_with(
        &self,
        method: &str,
        payload: Bytes,
        timeout: Duration,
        done: impl FnOnce(Result<Bytes, CallError>) + Send + 'static,
    ) {
        match self.inner.current() {
            Some(conn) => conn.call_with(method, payload, timeout, done),
            None => done(Err(CallError::Disconnected)),
        }
    }

    /// As [`Client::call`], with `metadata` appended to the Request as arpc's `md` block
    /// (`user_flags` bit 0); returns the Response payload and its metadata, if it carried
    /// any. Metadata is at most [`MAX_METADATA_LEN`](crate::MAX_METADATA_LEN) bytes by
    /// construction; a frame that cannot carry it fails with [`CallError::Metadata`].
    pub fn call_with_metadata(
        &self,
        method: &str,
        payload: &[u8],
        metadata: &crate::Metadata,
        timeout: Duration,
    ) -> Result<(Bytes, Option<crate::Metadata>), CallError> {
        match self.inner.current() {
            Some(conn) => conn.call_with_metadata(method, payload, metadata, timeout),
            None => Err(CallError::Disconnected),
        }
    }

    /// As [`Client::notify`], with `metadata` appended as arpc's `md` block.
    pub fn notify_with_metadata(
        &self,
        method: &str,
        payload: &[u8],
        metadata: &crate::Metadata,
    ) -> Result<(), CallError> {
        match self.inner.current() {
            Some(conn) => conn.notify_with_metadata(method, payload, metadata),
            None => Err(CallError::Disconnected),
        }
    }

    /// Sends a Notify (fire and forget).
    pub fn notify(&self, method: &str, payload: &[u8]) -> Result<(), CallError> {
        match self.inner.current() {
            Some(conn) => conn.notify(method, payload),
            None => Err(CallError::Disconnected),
        }
    }

    /// Opens a stream to the server for `method` (see
    /// [`ConnHandle::open_stream`](crate::ConnHandle::open_stream)). Fails at once with
    /// [`StreamError::Disconnected`] while disconnected; a stream never moves to a new
    /// connection after a reconnect (it ends with `Disconnected`).
    pub fn open_stream(&self, method: &str) -> Result<BiStream, StreamError> {
        self.open_stream_with(method, None)
    }

    /// As [`Client::open_stream`], with a whole-stream timeout.
    pub fn open_stream_with(
        &self,
        method: &str,
        timeout: Option<Duration>,
    ) -> Result<BiStream, StreamError> {
        match self.inner.current() {
            Some(conn) => conn.open_stream_with(method, timeout),
            None => Err(StreamError::Disconnected),
        }
    }

    /// Subscribes (a request answered by replies and an end): opens a stream for `method`,
    /// sends `payload` with EOF, and returns the replies as an iterator that ends with the
    /// server's end, or yields an error last (the server's error end, a disconnect, or
    /// `timeout` for the whole subscription). Works against any stream handler that
    /// answers and closes, a Go arpc one included.
    pub fn subscribe(
        &self,
        method: &str,
        payload: impl Into<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Subscription, StreamError> {
        let stream = self.open_stream_with(method, timeout)?;
        stream.send_and_close(payload)?;
        Ok(Subscription::new(stream))
    }

    /// Closes the connection after queued output is sent; no reconnect follows.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(conn) = self.inner.current() {
            conn.close_owed();
        }
    }

    /// This client's pub/sub handlers and password.
    pub(crate) fn pubsub_table(&self) -> &Arc<TopicTable> {
        &self.inner.pubsub
    }
}

/// A random index below `n` (at least 1), from the standard library's hash seed.
fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::pubsub::wire::now_ns());
    (h.finish() % n.max(1) as u64) as usize
}
