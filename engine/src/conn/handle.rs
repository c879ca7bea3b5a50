//! [`ConnHandle`]: a connection as user code keeps it, usable from any thread: send
//! notifies, make calls to the peer (blocking, with a callback, or awaited), close.
//!
//! Invariants: every action travels to the owning reactor through its mailbox, never by
//! touching reactor state directly; a handle to a connection that has closed is harmless
//! (its messages are dropped, its calls fail with [`CallError::Disconnected`], or with
//! [`CallError::Stopped`] once its reactor has stopped); blocking calls are refused on a
//! reactor thread; a frame body over the wire's 4 GiB limit is refused where it enters, never
//! truncated.

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::metadata::Metadata;
use ringrpc_protocol::{Command as Cmd, Flags, MAX_METHOD_LEN, write_frame};

use crate::conn::call_future::{CallFuture, CallWithMetadata};
use crate::error::{CallError, check_body};
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::{Command, Mailbox};

thread_local! {
    static ON_REACTOR: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as a reactor thread (blocking calls are refused on it).
pub(crate) fn mark_reactor_thread() {
    ON_REACTOR.with(|f| f.set(true));
}

pub(crate) fn on_reactor_thread() -> bool {
    ON_REACTOR.with(|f| f.get())
}

/// Encodes one frame into a buffer of its own, for sending from another thread.
pub(crate) fn encode(cmd: Cmd, flags: Flags, seq: u64, method: &[u8], payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + method.len() + payload.len());
    write_frame(&mut buf, cmd, flags, 0, seq, method, payload);
    buf.freeze()
}

fn valid_method(method: &str) -> bool {
    (1..=MAX_METHOD_LEN).contains(&method.len())
}

/// A connection, usable from any thread. Cheap to clone. Every action travels to the
/// connection's reactor through its mailbox; once the connection is gone, notifies are
/// dropped and calls fail with [`CallError::Disconnected`].
///
/// Handlers get one from [`Context::conn`](crate::Context::conn), hooks from
/// [`ServerBuilder::on_connect`](crate::ServerBuilder::on_connect), clients from
/// [`Client::conn`](crate::Client::conn). Here a server keeps the handle of each client that
/// connects and notifies it later:
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use ringrpc::{Client, Config, Server};
///
/// let (conns, connected) = mpsc::channel();
/// let server = Server::builder()
///     .config(Config::builder().cores(1).listen("127.0.0.1:0").build()?)
///     .on_connect(move |conn| {
///         let _ = conns.send(conn.clone());
///     })
///     .build()?
///     .start()?;
///
/// let (news, got) = mpsc::channel();
/// let client = Client::builder(&server.local_addr().to_string())
///     .route("/news", move |ctx| {
///         let _ = news.send(ctx.payload().to_vec());
///     })
///     .connect()?;
///
/// let conn = connected.recv_timeout(Duration::from_secs(5))?; // the server's side of it
/// conn.notify("/news", b"hello")?;
/// assert_eq!(got.recv_timeout(Duration::from_secs(5))?, b"hello");
/// # drop(client);
/// # server.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ConnHandle {
    info: ConnInfo,
    mailbox: Arc<Mailbox>,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle")
            .field("id", &self.info.id)
            .field("peer", &self.info.peer)
            .finish()
    }
}

impl ConnHandle {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.info.id
    }
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.info.peer
    }

    /// A handle for the connection `info` served by the reactor behind `mailbox`.
    pub(crate) fn new(info: ConnInfo, mailbox: Arc<Mailbox>) -> ConnHandle {
        ConnHandle { info, mailbox }
    }

    /// What hooks learn about this connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Sends a Notify to the peer (fire and forget). Dropped if the connection has closed;
    /// dropped and counted if its send queue is over its limit (the peer is not reading).
    /// Fails with [`CallError::MailboxFull`] if its reactor's inbox is full.
    pub fn notify(&self, method: &str, payload: &[u8]) -> Result<(), CallError> {
        if !valid_method(method) {
            return Err(CallError::BadMethod);
        }
        check_body(method.as_bytes(), payload)?;
        let frame = encode(Cmd::Notify, Flags::default(), 0, method.as_bytes(), payload);
        self.mailbox
            .post(Command::Notify {
                conn: self.info.id,
                frame,
            })
            .map_err(|_| CallError::MailboxFull)
    }

    /// As [`ConnHandle::notify`], with `metadata` appended as arpc's `md` block (`user_flags`
    /// bit 0). Fails with [`CallError::Metadata`] if the frame cannot carry it.
    pub fn notify_with_metadata(
        &self,
        method: &str,
        payload: &[u8],
        metadata: &Metadata,
    ) -> Result<(), CallError> {
        if !valid_method(method) {
            return Err(CallError::BadMethod);
        }
        let frame = crate::transport::coder::encode_with_metadata(
            Cmd::Notify,
            Flags::default(),
            0,
            method.as_bytes(),
            payload,
            metadata,
        )
        .map_err(CallError::Metadata)?;
        self.mailbox
            .post(Command::Notify {
                conn: self.info.id,
                frame,
            })
            .map_err(|_| CallError::MailboxFull)
    }

    /// As [`ConnHandle::call_with`], with `metadata` appended to the Request as arpc's `md`
    /// block; `done` also gets the Response's metadata, if it carried any.
    pub fn call_with_metadata_then(
        &self,
        method: &str,
        payload: &[u8],
        metadata: &Metadata,
        timeout: Duration,
        done: impl FnOnce(Result<(Bytes, Option<Metadata>), CallError>) + Send + 'static,
    ) {
        if !valid_method(method) {
            return done(Err(CallError::BadMethod));
        }
        // Encoded with seq 0; the reactor writes the call's seq into it.
        let frame = match crate::transport::coder::encode_with_metadata(
            Cmd::Request,
            Flags::default(),
            0,
            method.as_bytes(),
            payload,
            metadata,
        ) {
            Ok(frame) => frame,
            Err(e) => return done(Err(CallError::Metadata(e))),
        };
        let posted = self.mailbox.post(Command::CallWithMetadata {
            conn: self.info.id,
            frame,
            timeout,
            done: Box::new(done),
        });
        if let Err(Command::CallWithMetadata { done, .. }) = posted.map_err(|c| *c) {
            done(Err(CallError::MailboxFull));
        }
    }

    /// As [`ConnHandle::call`], with `metadata` appended to the Request; returns the
    /// Response payload and its metadata, if it carried any. Refused on a reactor thread.
    pub fn call_with_metadata(
        &self,
        method: &str,
        payload: &[u8],
        metadata: &Metadata,
        timeout: Duration,
    ) -> Result<(Bytes, Option<Metadata>), CallError> {
        if on_reactor_thread() {
            return Err(CallError::WouldBlockReactor);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.call_with_metadata_then(method, payload, metadata, timeout, move |outcome| {
            let _ = tx.send(outcome);
        });
        rx.recv().unwrap_or(Err(CallError::Disconnected))
    }

    /// Calls `method` on the peer and runs `done` with the outcome, on the reactor thread
    /// (so `done` must not block), or at once on this thread if the call cannot be queued
    /// ([`CallError::MailboxFull`], [`CallError::BadMethod`]). Never blocks the caller.
    pub fn call_with(
        &self,
        method: &str,
        payload: Bytes,
        timeout: Duration,
        done: impl FnOnce(Result<Bytes, CallError>) + Send + 'static,
    ) {
        if !valid_method(method) {
            return done(Err(CallError::BadMethod));
        }
        if let Err(e) = check_body(method.as_bytes(), &payload) {
            return done(Err(e));
        }
        let posted = self.mailbox.post(Command::Call {
            conn: self.info.id,
            method: Bytes::copy_from_slice(method.as_bytes()),
            payload,
            timeout,
            done: Box::new(done),
        });
        if let Err(Command::Call { done, .. }) = posted.map_err(|c| *c) {
            done(Err(CallError::MailboxFull));
        }
    }

    /// Calls `method` on the peer and waits for the Response payload. Refused on a reactor
    /// thread (inside a handler), where waiting would stall the core: use [`ConnHandle::call_with`].
    pub fn call(
        &self,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        if on_reactor_thread() {
            return Err(CallError::WouldBlockReactor);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.call_with(method, payload, timeout, move |outcome| {
            let _ = tx.send(outcome);
        });
        // The reactor always completes the call: answered, timed out, or disconnected.
        rx.recv().unwrap_or(Err(CallError::Disconnected))
    }

    /// Calls `method` on the peer; the future resolves to the Response payload, or fails
    /// with a [`CallError`] (timed out after `timeout`, disconnected, the peer's error). It
    /// is `Send` and needs no particular runtime: await it in an async handler (on the
    /// connection's own reactor it costs no syscall), in tokio, smol or
    /// `futures::executor::block_on`. Dropping it cancels the call: its pending entry is
    /// removed at once and a late Response is discarded.
    pub fn call_async(&self, method: &str, payload: Bytes, timeout: Duration) -> CallFuture {
        if !valid_method(method) {
            return CallFuture::failed(CallError::BadMethod);
        }
        if let Err(e) = check_body(method.as_bytes(), &payload) {
            return CallFuture::failed(e);
        }
        CallFuture::post(&self.mailbox, self.info.id, method, payload, None, timeout)
    }

    /// As [`ConnHandle::call_async`], with `metadata` appended to the Request as arpc's
    /// `md` block; resolves to the payload and the Response's metadata, if any.
    pub fn call_async_with_metadata(
        &self,
        method: &str,
        payload: Bytes,
        metadata: Metadata,
        timeout: Duration,
    ) -> CallWithMetadata {
        if !valid_method(method) {
            return CallFuture::failed(CallError::BadMethod).with_metadata();
        }
        if let Err(e) = check_body(method.as_bytes(), &payload) {
            return CallFuture::failed(e).with_metadata();
        }
        CallFuture::post(
            &self.mailbox,
            self.info.id,
            method,
            payload,
            Some(metadata),
            timeout,
        )
        .with_metadata()
    }

    /// Closes the connection after its queued output is sent. Like a notify, it counts
    /// against the reactor's inbox: fails with [`CallError::MailboxFull`] if that is full
    /// (retry), and does nothing once the connection is gone.
    pub fn close(&self) -> Result<(), CallError> {
        let close = Command::Close {
            conn: self.info.id,
            counted: true,
        };
        self.mailbox.post(close).map_err(|_| CallError::MailboxFull)
    }

    /// As [`ConnHandle::close`], never refused: for the engine's own closes, each made once
    /// per connection (a client closing its connection).
    pub(crate) fn close_owed(&self) {
        let close = Command::Close {
            conn: self.info.id,
            counted: false,
        };
        let _ = self.mailbox.post(close);
    }

    /// The mailbox of the reactor serving this connection.
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Posts an already encoded Notify frame (shared, not copied): pub/sub encodes a
    /// publication once for all its subscribers. The reactor counts it in `tally` as queued,
    /// or dropped because the connection is over its send-queue limit. Fails with
    /// [`CallError::MailboxFull`] if the reactor's inbox is full.
    pub(crate) fn notify_encoded(
        &self,
        frame: Bytes,
        tally: &Arc<crate::reactor::mailbox::NotifyTally>,
    ) -> Result<(), CallError> {
        self.mailbox
            .post(Command::NotifyCounted {
                conn: self.info.id,
                frame,
                tally: tally.clone(),
            })
            .map_err(|_| CallError::MailboxFull)
    }
}
