//! Collecting a server's routes, hooks, static assets and settings ([`ServerBuilder`]);
//! `build` validates and binds.
//!
//! Invariants: a bad method name or asset path is kept and reported by `build` (the chain of
//! calls never panics); `build` binds every listener, the metrics socket included, before
//! any thread starts, so a port in use fails there; pub/sub from the config is served unless
//! the application registered its own.

use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;

use super::error::bind_error;
use super::{Server, StartError};
use crate::config::Config;
use crate::conn::handle::ConnHandle;
use crate::conn::hooks::Hooks;
use crate::error::DisconnectReason;
use crate::ids::ConnInfo;
use crate::observe::scrape::Hub;
use crate::reactor::CoreSockets;
use crate::reactor::runtime::new_mailboxes;
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::Shared;
use crate::router::{RouteError, Router};
use crate::server::bind::{Transport, bind_all, bind_unix};
use crate::transport::ws::handshake::Asset;
use ringrpc_uring::sys;

/// Collects routes, hooks and settings; [`ServerBuilder::build`] validates and binds.
/// Route errors (a bad method name) are kept and reported by `build`, so the calls chain.
///
/// ```
/// use std::time::Duration;
/// use ringrpc::{Config, HandlerError, LogRequests, Server};
///
/// let server = Server::builder()
///     .config(Config::builder().cores(1).listen("127.0.0.1:0").build()?)
///     // On the reactor thread: must not block.
///     .route("/upper", |ctx| {
///         let loud = ctx.payload().to_ascii_uppercase();
///         ctx.reply(&loud)
///     })
///     // On the blocking pool: may block.
///     .route_blocking("/slow", |req| {
///         std::thread::sleep(Duration::from_millis(10));
///         Ok::<_, HandlerError>(req.payload)
///     })
///     .on_connect(|conn| eprintln!("{} connected", conn.peer()))
///     .middleware(LogRequests)
///     .build()?; // validated and bound; nothing runs until start or run
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    /// Keeps the first route registration error, which `build`/`connect` reports.
    fn keep_error(mut self, added: Result<(), RouteError>) -> Self {
        if let Err(e) = added {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// A builder with the built-in `/echo` route (see [`Server::builder`]).
    pub(super) fn new() -> ServerBuilder {
        ServerBuilder {
            config: None,
            router: Router::with_builtins(),
            route_error: None,
            hooks: Hooks::default(),
            assets: HashMap::new(),
            pubsub: None,
        }
    }

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
    /// from another thread, take [`Context::responder`](crate::Context::responder). A Request
    /// it returns from without replying (and without taking a responder) gets an empty,
    /// successful Response: see [`Handler`](crate::Handler).
    pub fn route(
        mut self,
        method: &str,
        handler: impl Fn(&mut crate::Context<'_>) + Send + Sync + 'static,
    ) -> Self {
        let added = self.router.add(method, handler);
        self.keep_error(added)
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
        let added = self.router.add_blocking(method, handler);
        self.keep_error(added)
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
        let added = self.router.add_typed(method, handler);
        self.keep_error(added)
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
        let added = self.router.add_async(method, handler);
        self.keep_error(added)
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
        let added = self.router.add_stream(method, handler);
        self.keep_error(added)
    }

    /// Serves streams clients open for `method` on a thread each, owning the
    /// [`BiStream`](crate::BiStream) (see [`Router::add_stream_blocking`]).
    pub fn route_stream_blocking(
        mut self,
        method: &str,
        handler: impl Fn(crate::BiStream) + Send + Sync + 'static,
    ) -> Self {
        let added = self.router.add_stream_blocking(method, handler);
        self.keep_error(added)
    }

    /// Serves streams clients open for `method` as async tasks on the connection's reactor,
    /// each owning its [`BiStream`](crate::BiStream) (see [`Router::add_stream_async`]).
    pub fn route_stream_async<F, Fut>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(crate::BiStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let added = self.router.add_stream_async(method, handler);
        self.keep_error(added)
    }

    /// Serves subscribes to `method`: the handler gets the request and the
    /// [`Replies`](crate::Replies) to answer with (see [`Router::add_subscribe`]).
    pub fn route_subscribe(
        mut self,
        method: &str,
        handler: impl Fn(bytes::Bytes, crate::Replies) + Send + Sync + 'static,
    ) -> Self {
        let added = self.router.add_subscribe(method, handler);
        self.keep_error(added)
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
        let mut unix_files = Vec::new();
        for (addr, websocket_only) in config
            .listen_addrs()
            .iter()
            .map(|a| (a, false))
            .chain(config.ws_listen_addrs().iter().map(|a| (a, true)))
            .filter(|(a, _)| a.is_unix())
        {
            let (group, file) = bind_unix(addr, config.cores(), config.unix_mode)
                .map_err(|e| StartError::UnixBind(addr.to_string(), e))?;
            for (core, listener) in group.into_iter().enumerate() {
                sockets[core].unix.push((listener, websocket_only));
            }
            unix_files.extend(file);
        }
        for addr in config.listen_addrs().iter().filter(|a| !a.is_unix()) {
            let (group, bound) = bind_all(addr, config.cores(), Transport::Tcp)
                .map_err(|(a, e)| bind_error(a, e))?;
            for (core, listener) in group.into_iter().enumerate() {
                sockets[core].tcp.push(TcpListener::from(listener));
            }
            local_addrs.push(bound);
        }
        let mut ws_addrs = Vec::new();
        for addr in config.ws_listen_addrs().iter().filter(|a| !a.is_unix()) {
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
            unix_files,
            udp_addr,
            shared: Arc::new(shared),
            metrics,
            #[cfg(feature = "nats")]
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
