//! A client's options ([`ClientBuilder`]), and connecting: its targets resolved, one
//! dialled, the connection handed to the runtime under the client's own policy.
//!
//! Invariants: `connect` returns only once the connection is served (and authenticated, with
//! a secret); a target that does not resolve is skipped with a warning unless none does;
//! clients given the same targets start at a random one, so they spread.

use std::fmt;
use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::connection::{ClientInner, Reconnect, ReconnectHook};
use super::{Client, ClientError, ClientRuntime};
use crate::client::pubsub::TopicTable;
use crate::error::CallError;
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::ConnPolicy;
use crate::router::{Context, Router};

#[derive(Clone, Copy, Debug, Default)]
struct RuntimeOptions {
    keepalive: Option<Duration>,
    idle_timeout: Option<Duration>,
}

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
    #[cfg(feature = "tls")]
    tls: Option<crate::ClientTls>,
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
    /// Keeps the first route registration error, which `build`/`connect` reports.
    fn keep_error(mut self, added: Result<(), crate::router::RouteError>) -> Self {
        if let Err(e) = added {
            self.route_error.get_or_insert(e);
        }
        self
    }

    /// Options for a connection to any one of `targets` (see [`Client::builder_multi`]).
    pub(super) fn new(targets: Vec<String>) -> ClientBuilder {
        let pubsub = Arc::new(TopicTable::default());
        let mut router = Router::new();
        pubsub.install(&mut router);
        ClientBuilder {
            targets,
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
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves `method` for calls and notifies the server sends to this client. Handlers
    /// run on the client's reactor thread and must not block (take a responder instead); a
    /// call the handler does not answer gets an empty, successful Response (see
    /// [`Handler`](crate::Handler)).
    pub fn route(
        mut self,
        method: &str,
        handler: impl Fn(&mut Context<'_>) + Send + Sync + 'static,
    ) -> Self {
        let added = self.router.add(method, handler);
        self.keep_error(added)
    }

    /// Serves `method` for the server's calls and notifies with a typed `handler` (see
    /// [`Router::add_typed`]).
    pub fn route_typed<Args: 'static>(
        mut self,
        method: &str,
        handler: impl crate::TypedHandler<Args>,
    ) -> Self {
        let added = self.router.add_typed(method, handler);
        self.keep_error(added)
    }

    /// Serves `method` for the server's calls and notifies with an async `handler`, run as
    /// a task on the client's reactor (see [`Router::add_async`]).
    pub fn route_async<Args: 'static>(
        mut self,
        method: &str,
        handler: impl crate::AsyncHandler<Args>,
    ) -> Self {
        let added = self.router.add_async(method, handler);
        self.keep_error(added)
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
        let added = self.router.add_stream(method, handler);
        self.keep_error(added)
    }

    /// Serves streams the server opens to this client for `method` on a thread each (see
    /// [`Router::add_stream_blocking`]).
    pub fn route_stream_blocking(
        mut self,
        method: &str,
        handler: impl Fn(crate::BiStream) + Send + Sync + 'static,
    ) -> Self {
        let added = self.router.add_stream_blocking(method, handler);
        self.keep_error(added)
    }

    /// Serves streams the server opens to this client for `method` as async tasks on the
    /// client's reactor (see [`Router::add_stream_async`]).
    pub fn route_stream_async<F, Fut>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(crate::BiStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let added = self.router.add_stream_async(method, handler);
        self.keep_error(added)
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
            if super::dial::unix_target(&target).is_some() {
                targets.push((target, Vec::new()));
                continue;
            }
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
            #[cfg(feature = "tls")]
            tls: self.tls,
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

    /// Speaks TLS on every connection (feature `tls`): roots, server name and, for mutual
    /// TLS, a client certificate, as [`ClientTls`](crate::ClientTls) says. The handshake
    /// runs while connecting, so `connect` fails with rustls' reason when the server's
    /// certificate is refused (or ours is); ALPN offers `arpc`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// This client's pub/sub handlers and password.
    pub(crate) fn pubsub_table(&self) -> &Arc<TopicTable> {
        &self.pubsub
    }
}

impl ClientBuilder {
    /// Longest a pub/sub call (`pubsub_auth`, `subscribe_topic`, `publish`...) waits for
    /// its answer (default 5 s).
    pub fn pubsub_timeout(self, timeout: Duration) -> Self {
        self.pubsub_table().set_timeout(timeout);
        self
    }
}

/// A random index below `n` (at least 1), from the standard library's hash seed.
fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::pubsub::wire::now_ns());
    (h.finish() % n.max(1) as u64) as usize
}
