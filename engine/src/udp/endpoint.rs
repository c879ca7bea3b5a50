//! [`UdpEndpoint`]: one UDP port that both serves routes and calls other endpoints, with
//! the reliability datagrams lack — calls retried with backoff, duplicates suppressed on
//! the answering side, timeouts kept precisely.
//!
//! Invariants: an endpoint is a server whose reactors listen on UDP only, so it gets the
//! same routes, middleware, handlers, limits and shutdown as a TCP server; calls travel to a
//! reactor through its mailbox (bounded: refused with `MailboxFull` past it), and every
//! call completes exactly once — answered, timed out, or failed at shutdown.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringrpc_protocol::{Command as Cmd, Flags, MAX_METHOD_LEN};

use crate::config::{Config, ConfigBuilder};
use crate::conn::handle::{encode, on_reactor_thread};
use crate::error::CallError;
use crate::reactor::mailbox::Command;
use crate::reactor::runtime::RunError;
use crate::router::Context;
use crate::server::{RunningServer, Server, ServerBuilder, ServerReport, StartError};
use crate::udp::limits::Retry;

/// Settings and routes of a [`UdpEndpoint`]; [`UdpEndpointBuilder::start`] binds and starts.
pub struct UdpEndpointBuilder {
    addr: String,
    server: ServerBuilder,
    config: ConfigBuilder,
    retry: Retry,
    no_retry: HashSet<Vec<u8>>,
}

impl fmt::Debug for UdpEndpointBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpEndpointBuilder")
            .field("addr", &self.addr)
            .field("retry", &self.retry)
            .finish()
    }
}

impl UdpEndpointBuilder {
    /// Serves `method` with `handler` (as [`ServerBuilder::route`]).
    pub fn route(
        mut self,
        method: &str,
        handler: impl Fn(&mut Context<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.server = self.server.route(method, handler);
        self
    }

    /// Serves `method` with a blocking handler on the worker pool (as
    /// [`ServerBuilder::route_blocking`]).
    pub fn route_blocking<R>(
        mut self,
        method: &str,
        handler: impl Fn(crate::Request) -> Result<R, crate::HandlerError> + Send + Sync + 'static,
    ) -> Self
    where
        R: crate::IntoReply,
    {
        self.server = self.server.route_blocking(method, handler);
        self
    }

    /// Serves `method` with a typed `handler` (as [`ServerBuilder::route_typed`]).
    pub fn route_typed<Args: 'static>(
        mut self,
        method: &str,
        handler: impl crate::TypedHandler<Args>,
    ) -> Self {
        self.server = self.server.route_typed(method, handler);
        self
    }

    /// Serves `method` with an async `handler`, a task on the reactor that received the
    /// datagram (as [`ServerBuilder::route_async`]).
    pub fn route_async<Args: 'static>(
        mut self,
        method: &str,
        handler: impl crate::AsyncHandler<Args>,
    ) -> Self {
        self.server = self.server.route_async(method, handler);
        self
    }

    /// Makes `value` available to the [`State`](crate::State) extractor.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.server = self.server.state(value);
        self
    }

    /// Adds `middleware` around every handler (as [`ServerBuilder::middleware`]).
    pub fn middleware(mut self, middleware: impl crate::Middleware) -> Self {
        self.server = self.server.middleware(middleware);
        self
    }

    /// Reactor threads, each with its own socket on the shared port (default 1).
    pub fn cores(mut self, n: usize) -> Self {
        self.config = self.config.cores(n);
        self
    }

    /// How calls are retried (default: first resend after 20 ms, doubling, 5 sends at most).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Never resends calls to `method` (for handlers that must not see a request twice even
    /// past the answering side's duplicate window): such a call is sent once and times out
    /// if that datagram is lost.
    pub fn no_retry(mut self, method: &str) -> Self {
        self.no_retry.insert(method.as_bytes().to_vec());
        self
    }

    /// Largest datagram (see [`ConfigBuilder::udp_max_datagram`]).
    pub fn max_datagram(mut self, bytes: usize) -> Self {
        self.config = self.config.udp_max_datagram(bytes);
        self
    }

    /// Duplicate-suppression window (see [`ConfigBuilder::udp_dedup_window`]).
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.config = self.config.udp_dedup_window(window);
        self
    }

    /// Any other setting of the underlying server's [`ConfigBuilder`].
    pub fn configure(mut self, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        self.config = f(self.config);
        self
    }

    /// Binds the port and starts serving.
    pub fn start(self) -> Result<UdpEndpoint, StartError> {
        let config: Config = self
            .config
            .no_tcp_listen()
            .udp_listen(self.addr)
            .build()
            .map_err(StartError::Config)?;
        let cores = config.cores();
        let server = self.server.config(config).build()?.start()?;
        Ok(UdpEndpoint {
            addr: server
                .udp_addr()
                .expect("an endpoint's server listens on UDP"),
            server,
            cores,
            next_core: AtomicUsize::new(0),
            retry: self.retry,
            no_retry: self.no_retry,
        })
    }
}

/// A UDP endpoint that serves routes and calls other endpoints on the same socket.
///
/// ```
/// use std::time::Duration;
/// let server = ringrpc::UdpEndpoint::builder("127.0.0.1:0").start()?;   // serves /echo
/// let client = ringrpc::UdpEndpoint::builder("127.0.0.1:0").start()?;
/// let answer = client.call(server.local_addr(), "/echo", "hi".into(), Duration::from_secs(1))?;
/// assert_eq!(&answer[..], b"hi");
/// client.shutdown()?;
/// server.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UdpEndpoint {
    server: RunningServer,
    addr: SocketAddr,
    cores: usize,
    next_core: AtomicUsize,
    retry: Retry,
    no_retry: HashSet<Vec<u8>>,
}

impl fmt::Debug for UdpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpEndpoint")
            .field("addr", &self.addr)
            .field("cores", &self.cores)
            .finish()
    }
}

impl UdpEndpoint {
    /// An endpoint on `addr` (`host:port`, `:port`; port 0 picks one), serving `/echo`.
    pub fn builder(addr: &str) -> UdpEndpointBuilder {
        UdpEndpointBuilder {
            addr: addr.to_owned(),
            server: Server::builder(),
            config: Config::builder().cores(1),
            retry: Retry::default(),
            no_retry: HashSet::new(),
        }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn post(&self, cmd: Command) -> Result<(), Box<Command>> {
        let core = self.next_core.fetch_add(1, Ordering::Relaxed) % self.cores;
        self.server.handle().shared.mailboxes[core].post(cmd)
    }

    /// Calls `method` on `peer` and runs `done` with the outcome on a reactor thread (it
    /// must not block), or at once on this thread if the call cannot be queued. Never
    /// blocks. Retried as configured; a frame bigger than the datagram limit fails with
    /// [`CallError::TooLarge`].
    pub fn call_with(
        &self,
        peer: SocketAddr,
        method: &str,
        payload: Bytes,
        timeout: Duration,
        done: impl FnOnce(Result<Bytes, CallError>) + Send + 'static,
    ) {
        if !(1..=MAX_METHOD_LEN).contains(&method.len()) {
            return done(Err(CallError::BadMethod));
        }
        if let Err(e) = crate::error::check_body(method.as_bytes(), &payload) {
            return done(Err(e));
        }
        let retry = (!self.no_retry.contains(method.as_bytes())).then_some(self.retry);
        let posted = self.post(Command::UdpCall {
            peer,
            method: Bytes::copy_from_slice(method.as_bytes()),
            payload,
            timeout,
            retry,
            done: Box::new(done),
        });
        if let Err(Command::UdpCall { done, .. }) = posted.map_err(|c| *c) {
            done(Err(CallError::MailboxFull));
        }
    }

    /// Calls `method` on `peer` and waits for the answer, at most `timeout`. Refused on a
    /// reactor thread, where waiting would stall it (use [`UdpEndpoint::call_async`] or
    /// [`UdpEndpoint::call_with`]).
    pub fn call(
        &self,
        peer: SocketAddr,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        if on_reactor_thread() {
            return Err(CallError::WouldBlockReactor);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.call_with(peer, method, payload, timeout, move |outcome| {
            let _ = tx.send(outcome);
        });
        rx.recv().unwrap_or(Err(CallError::Disconnected))
    }

    /// Calls `method` on `peer`; the future resolves to the answer (retried as configured;
    /// see [`UdpEndpoint::call_with`]). `Send` and runtime-agnostic; dropping it does not
    /// stop the call's retries, whose late answer is discarded.
    pub fn call_async(
        &self,
        peer: SocketAddr,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> crate::CallFuture {
        let (future, done) = crate::CallFuture::with_callback();
        self.call_with(peer, method, payload, timeout, done);
        future
    }

    /// Sends a Notify to `peer` (fire and forget: not retried, may be lost).
    pub fn notify(&self, peer: SocketAddr, method: &str, payload: &[u8]) -> Result<(), CallError> {
        if !(1..=MAX_METHOD_LEN).contains(&method.len()) {
            return Err(CallError::BadMethod);
        }
        crate::error::check_body(method.as_bytes(), payload)?;
        let frame = encode(Cmd::Notify, Flags::default(), 0, method.as_bytes(), payload);
        self.post(Command::UdpNotify { peer, frame })
            .map_err(|_| CallError::MailboxFull)
    }

    /// Stops serving (calls still pending fail with [`CallError::Disconnected`]) and
    /// returns the per-core totals, datagram counters included.
    pub fn shutdown(self) -> Result<ServerReport, RunError> {
        self.server.shutdown()
    }
}
