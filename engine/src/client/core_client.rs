//! Outbound connections for async code on a reactor: [`CoreClient`], one connection per
//! target per core, opened on first use and reused by every handler and task of that core,
//! served by the same reactor (so a call made and answered there costs no cross-thread
//! hop and no syscall beyond its own I/O).
//!
//! Invariants: a core connects to a target at most once at a time — concurrent first uses
//! wait for the same attempt; the connect (name resolution and TCP handshake) runs on the
//! blocking pool, never on the reactor; a connection found lost is replaced on the next
//! use; a target that cannot be reached fails its callers at once with
//! [`CallError::Connect`], and the next use tries again. The table lives in a thread-local
//! of the reactor and goes with it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use crate::conn::handle::ConnHandle;
use crate::error::{CallError, DisconnectReason};
use crate::executor::{NotOnReactor, spawn_blocking, spawn_local};
use crate::reactor::shared::{Adoption, ConnPolicy, Shared};
use crate::router::request::Request;

/// How long a connection attempt of a core client may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The reactor running on this thread, as core clients need it.
struct LocalReactor {
    core: usize,
    shared: Arc<Shared>,
    /// How its outbound connections are served (no routes of their own).
    policy: Arc<ConnPolicy>,
    targets: HashMap<String, Rc<Target>>,
}

thread_local! {
    static REACTOR: RefCell<Option<LocalReactor>> = const { RefCell::new(None) };
}

/// Reactor side: core clients on this thread connect through reactor `core` of `shared`.
pub(crate) fn install(core: usize, shared: Arc<Shared>, policy: Arc<ConnPolicy>) {
    REACTOR.with(|r| {
        *r.borrow_mut() = Some(LocalReactor {
            core,
            shared,
            policy,
            targets: HashMap::new(),
        })
    });
}

/// Reactor side, as it stops: forgets every target (their connections are closing).
pub(crate) fn uninstall() {
    let gone = REACTOR.with(|r| r.borrow_mut().take());
    drop(gone);
}

/// One target's connection on this core.
struct Target {
    addr: String,
    link: RefCell<Link>,
}

enum Link {
    Idle,
    /// A connect is under way; these wait for it.
    Connecting(Vec<Waker>),
    /// Connected; `lost` is set (on the reactor) once the connection is gone.
    Up(ConnHandle, Arc<AtomicBool>),
    /// The last attempt failed; its waiters were given this, the next use tries again.
    Failed(CallError),
}

/// A connection to one server, shared by every task of this core (cheap to clone; `!Send`:
/// it belongs to its core). Get one with [`CoreClient::to`] or
/// [`Request::client`](crate::Request::client).
#[derive(Clone)]
pub struct CoreClient {
    target: Rc<Target>,
}

impl std::fmt::Debug for CoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreClient")
            .field("target", &self.target.addr)
            .finish()
    }
}

impl CoreClient {
    /// This core's client for `addr` (`host:port`); connects on first use. Fails off a
    /// reactor thread.
    pub fn to(addr: &str) -> Result<CoreClient, NotOnReactor> {
        REACTOR.with(|r| {
            let mut r = r.borrow_mut();
            let reactor = r.as_mut().ok_or(NotOnReactor)?;
            let target = reactor
                .targets
                .entry(addr.to_owned())
                .or_insert_with(|| {
                    Rc::new(Target {
                        addr: addr.to_owned(),
                        link: RefCell::new(Link::Idle),
                    })
                })
                .clone();
            Ok(CoreClient { target })
        })
    }

    /// The target, as given.
    pub fn target(&self) -> &str {
        &self.target.addr
    }

    /// The connection, once up (connecting first if needed).
    pub fn conn(&self) -> ConnectFuture {
        ConnectFuture {
            target: self.target.clone(),
            started: false,
        }
    }

    /// Calls `method` on the target (see [`ConnHandle::call_async`]).
    pub fn call_async(
        &self,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, CallError>> + 'static {
        let connect = self.conn();
        let method = method.to_owned();
        async move {
            let conn = connect.await?;
            conn.call_async(&method, payload, timeout).await
        }
    }

    /// Sends a Notify to the target (connecting first if needed).
    pub fn notify(
        &self,
        method: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), CallError>> + 'static {
        let connect = self.conn();
        let method = method.to_owned();
        async move { connect.await?.notify(&method, &payload) }
    }
}

/// Resolves to a target's connection on this core (see [`CoreClient::conn`]).
#[must_use = "futures do nothing unless awaited"]
pub struct ConnectFuture {
    target: Rc<Target>,
    started: bool,
}

impl std::fmt::Debug for ConnectFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectFuture")
            .field("target", &self.target.addr)
            .finish()
    }
}

impl Future for ConnectFuture {
    type Output = Result<ConnHandle, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let target = self.target.clone();
        let mut link = target.link.borrow_mut();
        match &mut *link {
            Link::Up(conn, lost) if !lost.load(Ordering::Acquire) => {
                return Poll::Ready(Ok(conn.clone()));
            }
            Link::Failed(error) if self.started => return Poll::Ready(Err(error.clone())),
            Link::Connecting(waiters) => {
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                self.started = true;
                return Poll::Pending;
            }
            // Idle, lost, or an earlier caller's failure: (re)connect.
            _ => {}
        }
        *link = Link::Connecting(vec![cx.waker().clone()]);
        drop(link);
        self.started = true;
        if let Err(e) = spawn_local(connect(target.clone())) {
            *target.link.borrow_mut() = Link::Failed(CallError::Connect {
                target: target.addr.clone(),
                reason: e.to_string(),
            });
        }
        Poll::Pending
    }
}

/// Connects `target` on the blocking pool and hands the socket to this core's reactor;
/// wakes everyone waiting for it.
async fn connect(target: Rc<Target>) {
    let addr = target.addr.clone();
    let dialed = spawn_blocking(move || dial(&addr)).await;
    let outcome = match dialed {
        Ok(Ok(stream)) => adopt_here(stream).await,
        Ok(Err(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    };
    let next = match outcome {
        Ok((conn, lost)) => Link::Up(conn, lost),
        Err(reason) => {
            tracing::debug!(target = %target.addr, "core client cannot connect: {reason}");
            Link::Failed(CallError::Connect {
                target: target.addr.clone(),
                reason,
            })
        }
    };
    let previous = std::mem::replace(&mut *target.link.borrow_mut(), next);
    if let Link::Connecting(waiters) = previous {
        for waiter in waiters {
            waiter.wake();
        }
    }
}

/// Resolves and connects (blocking; on the pool).
fn dial(addr: &str) -> Result<TcpStream, String> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve it: {e}"))?;
    let mut last = "it resolved to no address".to_owned();
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Hands `stream` to this thread's reactor; resolves once it serves it.
async fn adopt_here(stream: TcpStream) -> Result<(ConnHandle, Arc<AtomicBool>), String> {
    let (core, shared, policy) = REACTOR
        .with(|r| {
            r.borrow()
                .as_ref()
                .map(|r| (r.core, r.shared.clone(), r.policy.clone()))
        })
        .ok_or_else(|| "the reactor stopped".to_owned())?;
    let (opened_tx, opened_rx) = futures_channel::oneshot::channel();
    let lost = Arc::new(AtomicBool::new(false));
    let mark_lost = lost.clone();
    shared.adopt(
        core,
        Adoption {
            stream: crate::reactor::shared::StreamSocket::Tcp(stream),
            tls: None,
            policy,
            opened: Box::new(move |conn| {
                let _ = opened_tx.send(conn);
            }),
            closed: Box::new(move |_: &DisconnectReason| mark_lost.store(true, Ordering::Release)),
        },
    );
    let conn = opened_rx
        .await
        .map_err(|_| "the reactor stopped".to_owned())?;
    Ok((conn, lost))
}

impl Request {
    /// This core's client for `addr` (`host:port`), connected on first use and shared by
    /// every handler and task of the core (see [`CoreClient`]). Fails
    /// off a reactor thread (a blocking handler's worker).
    pub fn client(&self, addr: &str) -> Result<CoreClient, NotOnReactor> {
        CoreClient::to(addr)
    }
}
