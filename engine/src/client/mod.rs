//! The client side: outbound connections served by a reactor of their own, with calls,
//! notifies, handlers for what the server sends, keepalive and automatic reconnect.
//!
//! Invariants: a [`ClientRuntime`] is a reactor without a listener, so client connections
//! get the same io_uring machinery, batching, backpressure and keepalive as the server's;
//! a call never outlives its connection (calls pending at a disconnect fail at once with
//! [`CallError::Disconnected`], and calls made while disconnected fail at once too); a
//! reconnect runs on a thread of its own, never on the reactor.

mod builder;
mod connection;
pub(crate) mod core_client;
pub(crate) mod dial;
pub(crate) mod pubsub;
mod runtime;
mod typed_calls;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ringrpc_protocol::Topic;

use crate::client::pubsub::TopicTable;
use crate::config::ConfigError;
use crate::conn::call_future::{CallFuture, CallWithMetadata};
use crate::conn::handle::ConnHandle;
use crate::error::{CallError, StreamError};
use crate::pubsub::wire::{
    AUTHENTICATE, PUBLISH, PUBLISH_TO_ONE, PubSubError, SUBSCRIBE, UNSUBSCRIBE, topic_bytes,
};
use crate::server::StartError;
use crate::stream::{BiStream, Subscription};

pub use builder::ClientBuilder;
use connection::ClientInner;
pub use connection::Reconnect;
pub use runtime::ClientRuntime;

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

/// A connection to an arpc server (ringrpc or Go arpc), usable from any thread (cheap to
/// clone). Its socket is served by a [`ClientRuntime`]: a reactor of its own, or one shared
/// with other clients ([`ClientBuilder::runtime`]). Calls block ([`Client::call`]), take a
/// callback ([`Client::call_with`]) or are awaited from any executor
/// ([`Client::call_async`]); the server can call and notify back through the client's
/// routes ([`ClientBuilder::route`]).
///
/// ```
/// use std::time::Duration;
/// # let config = ringrpc::Config::builder().cores(1).listen("127.0.0.1:0").build()?;
/// # let server = ringrpc::Server::builder().config(config).build()?.start()?;
/// # let addr = server.local_addr().to_string(); // a server with the built-in /echo
/// let client = ringrpc::Client::connect(&addr)?;
/// let answer = client.call("/echo", "hi".into(), Duration::from_secs(5))?;
/// assert_eq!(&answer[..], b"hi");
/// # drop(client);
/// # server.shutdown()?;
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
        ClientBuilder::new(targets.into_iter().map(Into::into).collect())
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

/// Pub/sub calls, compatible with a Go arpc pub/sub server (arpcex) and with
/// [`PubSub`](crate::PubSub).
impl Client {
    fn pubsub_call(&self, method: &str, payload: Bytes) -> Result<(), PubSubError> {
        self.call(method, payload, self.pubsub_table().timeout())?;
        Ok(())
    }

    /// Authenticates with the server's pub/sub password (`in_A`); the client does so again
    /// after every reconnect. A wrong one fails with `CallError::Remote("invalid password")`.
    pub fn pubsub_auth(&self, password: impl AsRef<[u8]>) -> Result<(), PubSubError> {
        let password = Bytes::copy_from_slice(password.as_ref());
        self.pubsub_call(AUTHENTICATE, password.clone())?;
        *self.pubsub_table().password() = Some(password);
        Ok(())
    }

    /// Subscribes to `name` (`in_S`): `handler` runs for each publication on it, on the
    /// client's reactor thread, so it must not block (hand work to another thread). A
    /// second subscription to the same name replaces the handler. The client resubscribes
    /// after every reconnect; publications while disconnected are lost.
    pub fn subscribe_topic(
        &self,
        name: impl AsRef<[u8]>,
        handler: impl Fn(Topic) + Send + Sync + 'static,
    ) -> Result<(), PubSubError> {
        let name = name.as_ref();
        let bytes = topic_bytes(name, &[])?;
        let key = Bytes::copy_from_slice(name);
        let table = self.pubsub_table();
        table.handlers().insert(key.clone(), Arc::new(handler));
        let outcome = self.pubsub_call(SUBSCRIBE, bytes);
        if outcome.is_err() {
            table.handlers().remove(&key);
        }
        outcome
    }

    /// Unsubscribes from `name` (`in_U`). Its handler is dropped at once, whatever the
    /// server answers, and it is not resubscribed after a reconnect.
    pub fn unsubscribe_topic(&self, name: impl AsRef<[u8]>) -> Result<(), PubSubError> {
        let name = name.as_ref();
        let bytes = topic_bytes(name, &[])?;
        self.pubsub_table().handlers().remove(name);
        self.pubsub_call(UNSUBSCRIBE, bytes)
    }

    /// Publishes `data` on `name` to every subscriber (`in_P`, stamped with the current
    /// time); returns once the server accepted it.
    pub fn publish(&self, name: impl AsRef<[u8]>, data: &[u8]) -> Result<(), PubSubError> {
        self.pubsub_call(PUBLISH, topic_bytes(name.as_ref(), data)?)
    }

    /// Publishes `data` on `name` to one subscriber, the next in turn (`in_P1`).
    pub fn publish_to_one(&self, name: impl AsRef<[u8]>, data: &[u8]) -> Result<(), PubSubError> {
        self.pubsub_call(PUBLISH_TO_ONE, topic_bytes(name.as_ref(), data)?)
    }
}
