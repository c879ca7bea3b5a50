//! The public face of the engine: bind, start one reactor per core, shut down, report.
//!
//! Invariants: every listener of a server shares one port through `SO_REUSEPORT` and is
//! bound before any reactor starts, so address errors surface synchronously; a reactor's
//! io_uring is created on its own thread (SINGLE_ISSUER), and a failure of any one stops
//! the others before `start` returns the error.

pub(crate) mod bind;
pub(crate) mod signals;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use crate::cluster::bridge::{Bridge, BridgeStats};
use crate::config::{Config, ConfigError};
use crate::conn::handle::ConnHandle;
use crate::conn::hooks::Hooks;
use crate::error::{CallError, DisconnectReason};
use crate::ids::ConnInfo;
use crate::observe::core_stats::CoreStats;
use crate::observe::http::MetricsServer;
use crate::observe::scrape::Hub;
use crate::reactor::CoreSockets;
use crate::reactor::runtime::{
    ReactorThreads, RunError, SpawnError, join_all, new_mailboxes, spawn_reactors,
};
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::Shared;
use crate::router::{RouteError, Router};
use crate::server::bind::{Transport, bind_all};
use crate::transport::ws::handshake::Asset;
use ringrpc_uring::{RingError, sys};

/// Why the server could not start; each message names the cause and the fix.
#[derive(Debug)]
pub enum StartError {
    /// A setting is out of range.
    Config(ConfigError),
    /// A method name is invalid.
    Route(RouteError),
    /// Another socket already listens on the address.
    AddrInUse(SocketAddr),
    /// Binding needs privileges the process lacks.
    PermissionDenied(SocketAddr),
    /// The address is not one of this machine's.
    AddrNotAvailable(SocketAddr),
    /// Any other socket error while binding.
    Bind(SocketAddr, io::Error),
    /// A reactor's io_uring could not be set up.
    Ring(usize, RingError),
    /// A thread or eventfd could not be created.
    Resource(&'static str, io::Error),
    /// The metrics address ([`ConfigBuilder::metrics_listen`](crate::ConfigBuilder::metrics_listen))
    /// could not be bound.
    MetricsBind(SocketAddr, io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Route(e) => write!(f, "{e}"),
            StartError::AddrInUse(a) => write!(
                f,
                "address {a} is already in use: another process listens on port {p} (find it with `ss -ltnp 'sport = :{p}'`); stop it or listen on another port",
                p = a.port()
            ),
            StartError::PermissionDenied(a) => write!(
                f,
                "permission denied binding {a}: ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port of 1024 or more"
            ),
            StartError::AddrNotAvailable(a) => write!(
                f,
                "cannot bind {a}: that address is not assigned to this machine; use :PORT for all interfaces or one of `ip addr`'s addresses"
            ),
            StartError::Bind(a, e) => write!(f, "cannot bind {a}: {e}"),
            StartError::Ring(core, e) => write!(f, "core {core}: {e}"),
            StartError::Resource(what, e) => write!(f, "cannot create {what}: {e}"),
            StartError::MetricsBind(a, e) => match e.raw_os_error() {
                Some(libc::EADDRINUSE) => write!(
                    f,
                    "cannot serve metrics on {a}: the address is already in use (find the process with `ss -ltnp 'sport = :{p}'`); give metrics_listen another port",
                    p = a.port()
                ),
                Some(libc::EACCES) | Some(libc::EPERM) => write!(
                    f,
                    "cannot serve metrics on {a}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE); give metrics_listen a port of 1024 or more"
                ),
                Some(libc::EADDRNOTAVAIL) => write!(
                    f,
                    "cannot serve metrics on {a}: that address is not assigned to this machine; give metrics_listen :PORT or one of `ip addr`'s addresses"
                ),
                _ => write!(f, "cannot serve metrics on {a}: {e}"),
            },
        }
    }
}

impl std::error::Error for StartError {}

impl From<SpawnError> for StartError {
    fn from(e: SpawnError) -> StartError {
        match e {
            SpawnError::Ring { core, source } => StartError::Ring(core, source),
            SpawnError::Resource { what, source } => StartError::Resource(what, source),
        }
    }
}

/// Why [`Server::run`] or [`Server::run_until_signal`] returned an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The server could not start.
    Start(StartError),
    /// SIGINT and SIGTERM could not be caught (only from the signal-handling calls).
    Signals(io::Error),
    /// A reactor stopped with an error or a panic while serving.
    Run(RunError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Start(_) => f.write_str("the server could not start"),
            ServerError::Signals(_) => f.write_str("cannot catch SIGINT and SIGTERM"),
            ServerError::Run(_) => f.write_str("the server stopped with an error"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Start(e) => Some(e),
            ServerError::Signals(e) => Some(e),
            ServerError::Run(e) => Some(e),
        }
    }
}

impl From<StartError> for ServerError {
    fn from(e: StartError) -> Self {
        ServerError::Start(e)
    }
}

impl From<RunError> for ServerError {
    fn from(e: RunError) -> Self {
        ServerError::Run(e)
    }
}

/// Per-core totals after a server stopped.
#[derive(Clone, Debug, Default)]
pub struct ServerReport {
    /// One entry per reactor, in core order.
    pub cores: Vec<CoreStats>,
}

impl ServerReport {
    /// The sum over all cores (`core` is meaningless in it).
    pub fn total(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for c in &self.cores {
            t.add(c);
        }
        t
    }
}

impl fmt::Display for ServerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, c: &CoreStats| {
            writeln!(
                f,
                "{name:>7}: {} connections, {} requests, {} notifies, {} bytes in, {} bytes out, {} sends, {:.1} frames/send, {} protocol errors",
                c.accepted,
                c.requests,
                c.notifies,
                c.bytes_in,
                c.bytes_out,
                c.sends,
                c.frames_per_send(),
                c.protocol_errors
            )
        };
        for c in &self.cores {
            line(f, &format!("core {}", c.core), c)?;
        }
        let total = self.total();
        line(f, "total", &total)?;
        if total.streams_opened + total.stream_frames > 0 {
            writeln!(
                f,
                "streams: {} opened, {} frames in",
                total.streams_opened, total.stream_frames
            )?;
        }
        if total.panics + total.callback_panics + total.answers_abandoned > 0 {
            writeln!(
                f,
                " faults: {} handlers and {} other callbacks panicked (contained); {} answers abandoned at shutdown",
                total.panics, total.callback_panics, total.answers_abandoned
            )?;
        }
        if total.gzip_in + total.gzip_out + total.bad_metadata > 0 {
            writeln!(
                f,
                "   gzip: {} frames inflated, {} sent compressed; {} bad metadata blocks",
                total.gzip_in, total.gzip_out, total.bad_metadata
            )?;
        }
        let u = total.udp;
        if u.datagrams_in + u.datagrams_out > 0 {
            writeln!(
                f,
                "    udp: {} datagrams in, {} out, {} requests, {} notifies, {} duplicates, {} malformed, {} refused, {} calls, {} retries, {} timeouts",
                u.datagrams_in,
                u.datagrams_out,
                u.requests,
                u.notifies,
                u.duplicates,
                u.malformed,
                u.refused,
                u.calls,
                u.retries,
                u.timeouts
            )?;
        }
        Ok(())
    }
}

/// Stops a running server from any thread.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ServerHandle {
    /// Stops accepting, answers every request already received, flushes, closes every
    /// connection and lets `run`/`join` return. Answers still owed by a
    /// [`Responder`](crate::Responder) or a blocking handler are waited for, up to
    /// [`ConfigBuilder::shutdown_grace`](crate::ConfigBuilder::shutdown_grace); those still
    /// owed when it ends are counted in [`CoreStats::answers_abandoned`]. Once a reactor has
    /// stopped, calls and streams on its connections fail at once with
    /// [`CallError::Stopped`] (streams: [`StreamError::Disconnected`](crate::StreamError)).
    /// Returns at once; idempotent.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Sends one Notify to every connection on every core. The frame is encoded once and
    /// shared by all connections. With a NATS bridge
    /// ([`ConfigBuilder::nats`](crate::ConfigBuilder::nats)) every other node of the
    /// cluster sends it to its connections too, once each.
    ///
    /// Fails with [`CallError::MailboxFull`] if some reactor's inbox was full (the others
    /// still got it); a connection over its send-queue limit misses it (counted in
    /// [`CoreStats::broadcast_drops`]).
    pub fn broadcast(&self, method: &str, payload: &[u8]) -> Result<(), CallError> {
        let outcome = self.shared.broadcast_local(method, payload, None);
        if outcome.as_ref().err() != Some(&CallError::BadMethod) {
            if let Some(bridge) = self.shared.bridge.get() {
                bridge.forward(crate::cluster::link::Outbound::Broadcast {
                    method: bytes::Bytes::copy_from_slice(method.as_bytes()),
                    payload: bytes::Bytes::copy_from_slice(payload),
                });
            }
        }
        outcome
    }

    /// As [`ServerHandle::broadcast`], to this node's connections only, even with a NATS
    /// bridge.
    pub fn broadcast_local(&self, method: &str, payload: &[u8]) -> Result<(), CallError> {
        self.shared.broadcast_local(method, payload, None)
    }

    /// As [`ServerHandle::broadcast_local`], to the connections `filter` accepts (it runs
    /// on each reactor thread, once per connection). A filter cannot travel, so this never
    /// reaches other nodes.
    pub fn broadcast_filtered(
        &self,
        method: &str,
        payload: &[u8],
        filter: impl Fn(&ConnInfo) -> bool + Send + Sync + 'static,
    ) -> Result<(), CallError> {
        self.shared
            .broadcast_local(method, payload, Some(Arc::new(filter)))
    }

    /// The NATS bridge's counters, if this server has one.
    pub fn bridge_stats(&self) -> Option<BridgeStats> {
        self.shared.bridge.get().map(|b| b.stats())
    }
}

/// Collects routes and settings; [`ServerBuilder::build`] validates and binds.
#[derive(Debug)]
pub struct ServerBuilder {
    config: Option<Config>,
    router: Router,
    route_error: Option<RouteError>,
    hooks: Hooks,
    assets: HashMap<String, Asset>,
    /// The pub/sub served, for its metrics.
    pubsub: Option<crate::PubSub>,
}

impl ServerBuilder {
    /// Runs `hook` for every accepted connection, on its reactor thread (must not block);
    /// the handle may be kept to notify or call the peer later.
    pub fn on_connect(mut self, hook: impl Fn(&ConnHandle) + Send + Sync + 'static) -> Self {
        self.hooks.on_connect = Some(Box::new(hook));
        self
    }

    /// Runs `hook` when a connection's unsent output passes its limit (see
    /// [`ConfigBuilder::max_send_queue_bytes`](crate::ConfigBuilder::max_send_queue_bytes))
    /// and the engine stops reading from it, on its reactor thread.
    pub fn on_overstock(mut self, hook: impl Fn(&ConnInfo) + Send + Sync + 'static) -> Self {
        self.hooks.on_overstock = Some(Box::new(hook));
        self
    }

    /// Runs `hook` when a connection is gone, with the reason, on its reactor thread.
    pub fn on_disconnect(
        mut self,
        hook: impl Fn(&ConnInfo, &DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_disconnect = Some(Box::new(hook));
        self
    }

    /// Uses `config` (default: [`Config::builder`]'s defaults).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Serves `method` with `handler`, replacing a built-in of the same name. The handler
    /// runs on the reactor thread of the connection and must not block; to answer later or
    /// from another thread, take [`Context::responder`](crate::Context::responder).
    pub fn route(
        mut self,
        method: &str,
        handler: impl Fn(&mut crate::Context<'_>) + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.router.add(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves `method` with a blocking `handler`, run on a shared worker pool instead of the
    /// reactor thread, so it may block (disk, locks, calls to other services) without
    /// delaying other requests. `Ok` is the Response ([`IntoReply`](crate::IntoReply)), `Err`
    /// an error Response carrying the [`HandlerError`](crate::HandlerError)'s text, a panic
    /// the error
    /// [`HANDLER_PANICKED`](crate::router::HANDLER_PANICKED); a Notify's value is discarded.
    /// See [`Router::add_blocking`].
    pub fn route_blocking<R>(
        mut self,
        method: &str,
        handler: impl Fn(crate::Request) -> Result<R, crate::HandlerError> + Send + Sync + 'static,
    ) -> Self
    where
        R: crate::IntoReply,
    {
        if let Err(e) = self.router.add_blocking(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves `method` with a typed `handler` on the reactor thread: its arguments are
    /// extractors, its value the Response (see [`Router::add_typed`]).
    ///
    /// ```
    /// use ringrpc::{Json, Server};
    /// #[derive(serde::Deserialize)]
    /// struct Args { a: i64, b: i64 }
    /// let builder = Server::builder().route_typed("/sum", |Json(args): Json<Args>| Json(args.a + args.b));
    /// ```
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

    /// Serves `method` with an async `handler`, run as a task on the reactor that owns the
    /// connection (see [`Router::add_async`]): it may await calls, timers and streams
    /// without blocking its core, and its future need not be `Send`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringrpc::{Request, Server};
    /// let builder = Server::builder().route_async("/later", |req: Request| async move {
    ///     ringrpc::time::sleep(Duration::from_millis(10)).await;
    ///     req.payload
    /// });
    /// ```
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

    /// Makes `value` available to the [`State`](crate::State) extractor of typed and async
    /// handlers (one value per type).
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.router.insert_state(value);
        self
    }

    /// Serves streams clients open for `method`, frame by frame on the reactor thread (see
    /// [`Router::add_stream`]).
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

    /// Serves streams clients open for `method` on a thread each, owning the
    /// [`BiStream`](crate::BiStream) (see [`Router::add_stream_blocking`]).
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

    /// Serves streams clients open for `method` as async tasks on the connection's reactor,
    /// each owning its [`BiStream`](crate::BiStream) (see [`Router::add_stream_async`]).
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

    /// Serves subscribes to `method`: the handler gets the request and the
    /// [`Replies`](crate::Replies) to answer with (see [`Router::add_subscribe`]).
    pub fn route_subscribe(
        mut self,
        method: &str,
        handler: impl Fn(bytes::Bytes, crate::Replies) + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.router.add_subscribe(method, handler) {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Serves `body` as `content_type` to a plain HTTP `GET` (or `HEAD`) of `path` on the
    /// TCP ports, so an application ships its web page and scripts from the port its
    /// WebSocket clients use. Each such connection answers one request and closes; other
    /// paths get 404, other methods 405. Needs WebSocket on (the default
    /// [`ConfigBuilder::ws_path`](crate::ConfigBuilder::ws_path)). Costs the body's size, shared
    /// by every core.
    pub fn static_asset(
        mut self,
        path: &str,
        content_type: &str,
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        let valid = path.starts_with('/') && !path.contains([' ', '?', '\r', '\n']);
        if !valid || content_type.contains(['\r', '\n']) {
            self.route_error.get_or_insert(RouteError::BadAssetPath {
                path: path.to_owned(),
            });
            return self;
        }
        self.assets.insert(
            path.to_owned(),
            Asset {
                content_type: content_type.to_owned(),
                body: body.into(),
            },
        );
        self
    }

    /// Runs blocking handlers on `threads` threads named `ringrpc-blocking-N` (at least 1;
    /// default: the number of CPUs, at least 2). They start with the first blocking request
    /// and exit once the server is gone.
    pub fn blocking_threads(mut self, threads: usize) -> Self {
        self.router.set_blocking_threads(threads);
        self
    }

    /// Calls `handler` for every Request and Notify whose method has no route, instead of
    /// the built-in "method not found" error; a Request it leaves unanswered still gets
    /// that error. Runs on the reactor thread and must not block.
    pub fn not_found(
        mut self,
        handler: impl Fn(&mut crate::Context<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.router.set_not_found(handler);
        self
    }

    /// Appends `middleware` to the chain run around every handler: `before` in
    /// registration order, `after` in reverse (see [`Middleware`](crate::Middleware)).
    pub fn middleware(mut self, middleware: impl crate::Middleware) -> Self {
        self.router.add_middleware(middleware);
        self
    }

    /// Validates, raises the open-files soft limit to the hard limit, and binds the
    /// listeners (one per core, sharing the port).
    pub fn build(mut self) -> Result<Server, StartError> {
        // `ConfigBuilder::pubsub`, unless the application registered its own `PubSub`.
        if let Some(pubsub) = self.config.as_ref().and_then(crate::PubSub::from_config) {
            if self
                .router
                .get(crate::pubsub::SUBSCRIBE.as_bytes())
                .is_none()
            {
                self = self.pubsub(pubsub);
            }
        }
        if let Some(e) = self.route_error {
            return Err(StartError::Route(e));
        }
        let config = match self.config {
            Some(c) => c,
            None => Config::builder().build().map_err(StartError::Config)?,
        };
        match sys::raise_nofile_limit() {
            Ok((old, new)) if old != new => {
                tracing::debug!("raised open-files limit from {old} to {new}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
        }
        // Per core, one listener for each TCP address and the UDP socket.
        let mut sockets: Vec<CoreSockets> = (0..config.cores())
            .map(|_| CoreSockets::default())
            .collect();
        let mut local_addrs = Vec::new();
        for addr in config.listen_addrs() {
            let (group, bound) = bind_all(addr, config.cores(), Transport::Tcp)
                .map_err(|(a, e)| bind_error(a, e))?;
            for (core, listener) in group.into_iter().enumerate() {
                sockets[core].tcp.push(TcpListener::from(listener));
            }
            local_addrs.push(bound);
        }
        let mut ws_addrs = Vec::new();
        for addr in config.ws_listen_addrs() {
            let (group, bound) = bind_all(addr, config.cores(), Transport::Tcp)
                .map_err(|(a, e)| bind_error(a, e))?;
            for (core, listener) in group.into_iter().enumerate() {
                sockets[core].websocket.push(TcpListener::from(listener));
            }
            ws_addrs.push(bound);
        }
        let mut udp_addr = None;
        if let Some(addr) = config.udp_listen() {
            let (group, bound) = bind_all(addr, config.cores(), Transport::Udp)
                .map_err(|(a, e)| bind_error(a, e))?;
            for (core, socket) in group.into_iter().enumerate() {
                sockets[core].udp = Some(UdpSocket::from(socket));
            }
            udp_addr = Some(bound);
        }
        let metrics_listener = match config.metrics_listen() {
            Some(addr) => Some(bind_metrics(addr)?),
            None => None,
        };
        let mut settings = ReactorSettings::from_config(&config);
        if let Some(ws) = settings.websocket.as_mut() {
            if self.assets.contains_key(&ws.path) {
                return Err(StartError::Route(RouteError::BadAssetPath {
                    path: ws.path.clone(),
                }));
            }
            Arc::make_mut(ws).assets = Arc::new(self.assets);
        }
        let mailboxes = new_mailboxes(config.cores(), settings.mailbox_capacity);
        let mut shared = Shared::new(mailboxes, self.hooks);
        let metrics = metrics_listener.map(|listener| {
            let hub = Arc::new(Hub::new(
                shared.mailboxes.clone(),
                self.router.method_names(),
                self.pubsub.clone(),
            ));
            shared.metrics = Some(hub.clone());
            (listener, hub)
        });
        Ok(Server {
            config: Arc::new(config),
            settings: Arc::new(settings),
            router: Arc::new(self.router),
            sockets,
            local_addrs,
            ws_addrs,
            udp_addr,
            shared: Arc::new(shared),
            metrics,
            pubsub: self.pubsub,
        })
    }

    /// Serves Go arpc-compatible publish/subscribe: routes `in_A`, `in_S`, `in_U`, `in_P`
    /// and `in_P1` (replacing routes of those names), and forgets a connection's
    /// subscriptions when it closes (beside any [`on_disconnect`](Self::on_disconnect)
    /// hook, which still runs). Keep a clone of `pubsub` to publish from the application
    /// or read its stats.
    pub fn pubsub(mut self, pubsub: crate::PubSub) -> Self {
        self.pubsub = Some(pubsub.clone());
        for (method, handler) in pubsub.routes() {
            self = self.route(method, handler);
        }
        self.hooks
            .internal_disconnect
            .push(pubsub.disconnect_hook());
        self.pubsub = Some(pubsub);
        self
    }
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    settings: Arc<ReactorSettings>,
    router: Arc<Router>,
    sockets: Vec<CoreSockets>,
    local_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// The bound metrics socket and what it serves, when metrics are on.
    metrics: Option<(TcpListener, Arc<Hub>)>,
    pubsub: Option<crate::PubSub>,
}

impl Server {
    /// A builder with the built-in `/echo` route.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: None,
            router: Router::with_builtins(),
            route_error: None,
            hooks: Hooks::default(),
            assets: HashMap::new(),
            pubsub: None,
        }
    }

    /// The first TCP address actually bound (the real port when 0 was asked for), or the
    /// UDP address for a datagram-only server.
    pub fn local_addr(&self) -> SocketAddr {
        first_addr(&self.local_addrs, self.udp_addr)
    }

    /// Every TCP address actually bound, in the order configured.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The WebSocket-only TCP addresses actually bound
    /// ([`ConfigBuilder::ws_listen`](crate::ConfigBuilder::ws_listen)), in order.
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }

    /// The UDP address actually bound, if the server listens on UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The address `GET /metrics` is served on (the real port when 0 was asked for), if
    /// metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that can stop the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until shut down from a [`ServerHandle`]; blocks. It does not react to SIGINT or
    /// SIGTERM (they kill the process, with no drain); [`Server::run_until_signal`] does.
    pub fn run(self) -> Result<ServerReport, ServerError> {
        Ok(self.start()?.join()?)
    }

    /// Starts every reactor, and the NATS bridge when configured
    /// ([`ConfigBuilder::nats`](crate::ConfigBuilder::nats)), and returns once all are
    /// serving. An unreachable NATS server does not stop the start: the bridge keeps
    /// trying, and this node serves its own connections meanwhile.
    pub fn start(self) -> Result<RunningServer, StartError> {
        let bridge = match self.config.nats_urls() {
            [] => None,
            urls => {
                let bridge = Bridge::start(urls, self.pubsub.clone(), self.shared.clone())
                    .map_err(|e| StartError::Resource("the NATS bridge thread", e))?;
                if let Some(pubsub) = &self.pubsub {
                    pubsub.attach_bridge(bridge.link().clone());
                }
                let _ = self.shared.bridge.set(bridge.link().clone());
                if let Some((_, hub)) = &self.metrics {
                    let _ = hub.bridge.set(bridge.link().clone());
                }
                Some(bridge)
            }
        };
        let threads = match spawn_reactors(&self.settings, &self.router, &self.shared, self.sockets)
        {
            Ok(threads) => threads,
            Err(e) => {
                if let Some(bridge) = bridge {
                    bridge.stop();
                }
                return Err(e.into());
            }
        };
        let metrics = match self.metrics {
            Some((listener, hub)) => match MetricsServer::start(listener, hub) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.shared.shutdown();
                    join_all(threads);
                    if let Some(bridge) = bridge {
                        bridge.stop();
                    }
                    return Err(StartError::Resource("the metrics thread", e));
                }
            },
            None => None,
        };
        Ok(RunningServer {
            handle: ServerHandle {
                shared: self.shared,
            },
            local_addrs: self.local_addrs,
            ws_addrs: self.ws_addrs,
            udp_addr: self.udp_addr,
            threads,
            metrics,
            bridge,
        })
    }
}

/// A server whose reactors are running.
#[derive(Debug)]
pub struct RunningServer {
    handle: ServerHandle,
    local_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    threads: ReactorThreads,
    metrics: Option<MetricsServer>,
    bridge: Option<Bridge>,
}

impl RunningServer {
    /// The first TCP address actually bound, or the UDP address for a datagram-only
    /// server.
    pub fn local_addr(&self) -> SocketAddr {
        first_addr(&self.local_addrs, self.udp_addr)
    }
    /// Every TCP address actually bound, in the order configured.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The WebSocket-only TCP addresses actually bound
    /// ([`ConfigBuilder::ws_listen`](crate::ConfigBuilder::ws_listen)), in order.
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }
    /// The UDP address actually bound, if the server listens on UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }
    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
    /// The address `GET /metrics` is served on, if metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::addr)
    }
    /// The NATS bridge's counters, if this server has one.
    pub fn bridge_stats(&self) -> Option<BridgeStats> {
        self.handle.bridge_stats()
    }
    /// Shuts down and waits for every reactor.
    pub fn shutdown(self) -> Result<ServerReport, RunError> {
        self.handle.shutdown();
        self.join()
    }
    /// Waits for every reactor to finish (after a shutdown from some handle), then stops
    /// the NATS bridge, if any.
    pub fn join(self) -> Result<ServerReport, RunError> {
        let mut report = ServerReport::default();
        let mut failure = None;
        let results = join_all(self.threads);
        if let Some(bridge) = self.bridge {
            bridge.stop();
        }
        for result in results {
            match result {
                Ok(stats) => report.cores.push(stats),
                Err(e) => {
                    // One core failing takes the server down rather than serving on a subset.
                    self.handle.shutdown();
                    failure.get_or_insert(e);
                }
            }
        }
        // Scrapes are answered through the drain; the endpoint closes with the reactors.
        if let Some(metrics) = self.metrics {
            metrics.stop();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// Binds the metrics endpoint's listening socket (the first of `addr`'s candidates that
/// this machine supports).
fn bind_metrics(addr: &crate::ListenAddr) -> Result<TcpListener, StartError> {
    let candidates = addr.candidates();
    let last = candidates.len() - 1;
    for (i, a) in candidates.into_iter().enumerate() {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            // `:PORT` on a machine without IPv6: fall back to IPv4.
            Err(e)
                if i < last
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                    ) => {}
            Err(e) => return Err(StartError::MetricsBind(a, e)),
        }
    }
    unreachable!("the last candidate returns")
}

/// The startup error for binding `addr` failing with `e`.
fn bind_error(addr: SocketAddr, e: io::Error) -> StartError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => StartError::AddrInUse(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => StartError::PermissionDenied(addr),
        Some(libc::EADDRNOTAVAIL) => StartError::AddrNotAvailable(addr),
        _ => StartError::Bind(addr, e),
    }
}

/// The first TCP address, else the UDP one (a valid config has one of them).
fn first_addr(tcp: &[SocketAddr], udp: Option<SocketAddr>) -> SocketAddr {
    tcp.first()
        .copied()
        .or(udp)
        .expect("a validated config listens somewhere")
}
