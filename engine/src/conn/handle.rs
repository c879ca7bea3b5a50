//! Handles user code keeps to act on a connection later, from any thread: send notifies,
//! make calls to the peer, answer a request asynchronously, close.
//!
//! Invariants: every action travels to the owning reactor through its mailbox, never by
//! touching reactor state directly; a handle to a connection that has closed is harmless
//! (its messages are dropped, its calls fail with [`CallError::Disconnected`], or with
//! [`CallError::Stopped`] once its reactor has stopped); a [`Responder`] sends exactly one
//! Response, an error if dropped unanswered; a frame body over the wire's 4 GiB limit is
//! refused where it enters, never truncated.

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::metadata::Metadata;
use ringrpc_protocol::{Command as Cmd, Flags, MAX_METHOD_LEN, write_frame};

use crate::conn::call_future::{CallFuture, CallWithMetadata};
use crate::error::{CallError, RESPONDER_DROPPED, RESPONSE_TOO_LARGE, check_body};
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

/// A connection, usable from any thread. Cheap to clone.
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
        CallFuture::post(self, method, payload, None, timeout)
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
        CallFuture::post(self, method, payload, Some(metadata), timeout).with_metadata()
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

/// How many of a connection's (or UDP peer's) Requests are owed an answer that is not yet
/// queued on it: counted up when a [`Responder`] is taken, down when the reactor queues its
/// answer (not when the responder sends it), so "nothing owed" always means every answer is
/// on the connection's output — the shutdown drain relies on that. Only its reactor's
/// thread touches it.
///
/// It also keeps the connection's async handler tasks, so they are cancelled (their futures
/// dropped) when the connection is released.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    owed: std::cell::Cell<usize>,
    tasks: std::cell::RefCell<Vec<crate::executor::TaskKey>>,
}

impl Deferred {
    /// Answers owed and not yet queued.
    pub(crate) fn count(&self) -> usize {
        self.owed.get()
    }

    /// One more answer is owed (a responder was taken).
    pub(crate) fn owe(&self) {
        self.owed.set(self.owed.get() + 1);
    }

    /// An owed answer was queued (or its connection is gone).
    pub(crate) fn answered(&self) {
        self.owed.set(self.owed.get().saturating_sub(1));
    }

    /// Keeps an async handler task of this connection (finished ones are forgotten as new
    /// ones come, so the list stays within the tasks alive plus a few).
    pub(crate) fn track(&self, task: crate::executor::TaskKey) {
        let mut tasks = self.tasks.borrow_mut();
        if tasks.len() >= 8 && tasks.len() == tasks.capacity() {
            tasks.retain(|t| crate::executor::Executor::is_alive(*t));
        }
        tasks.push(task);
    }

    /// Cancels every task still running for this connection (it is being released).
    pub(crate) fn cancel_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        for task in tasks {
            crate::executor::Executor::cancel(task);
        }
    }
}

/// Answers one Request later, from any thread. Dropping it unanswered sends an error
/// Response, so the caller never waits forever.
pub struct Responder {
    conn: ConnHandle,
    seq: u64,
    method: Bytes,
    async_flag: u8,
    answered: bool,
    /// Metadata the Response carries.
    metadata: Option<Metadata>,
    /// When metrics are on: when the request was dispatched, for its latency.
    timing: Option<crate::observe::measure::Timing>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("conn", &self.conn.info.id)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Responder {
    /// A responder for a Request the connection's [`Deferred`] already counts as owed.
    pub(crate) fn new(
        conn: ConnHandle,
        seq: u64,
        method: &[u8],
        flags: Flags,
        timing: Option<crate::observe::measure::Timing>,
    ) -> Responder {
        Responder {
            conn,
            seq,
            method: Bytes::copy_from_slice(method),
            async_flag: flags.0 & Flags::ASYNC,
            answered: false,
            metadata: None,
            timing,
        }
    }

    /// The Response will carry `metadata` (set on the request's context before the
    /// responder was taken).
    pub(crate) fn with_metadata(mut self, metadata: Metadata) -> Responder {
        self.metadata = Some(metadata);
        self
    }

    /// The connection the Request came on.
    pub fn conn(&self) -> &ConnHandle {
        &self.conn
    }

    /// The method name, shared with whoever needs an owned copy.
    pub(crate) fn method(&self) -> &Bytes {
        &self.method
    }

    /// Sends the Response.
    pub fn reply(mut self, payload: &[u8]) {
        self.send(Flags(self.async_flag), payload);
    }

    /// Sends the Response with `metadata` appended as arpc's `md` block (replacing any
    /// metadata set on the request's context).
    pub fn reply_with_metadata(mut self, payload: &[u8], metadata: Metadata) {
        self.metadata = Some(metadata);
        self.send(Flags(self.async_flag), payload);
    }

    /// Sends an error Response carrying `message`.
    pub fn reply_error(mut self, message: &str) {
        self.send(Flags(self.async_flag).with_error(), message.as_bytes());
    }

    fn send(&mut self, flags: Flags, payload: &[u8]) {
        self.answered = true;
        if check_body(&self.method, payload).is_err() {
            tracing::error!(
                seq = self.seq,
                bytes = payload.len(),
                "{RESPONSE_TOO_LARGE}"
            );
            return self.send(
                Flags(self.async_flag).with_error(),
                RESPONSE_TOO_LARGE.as_bytes(),
            );
        }
        let frame = match self.metadata.take() {
            None => encode(Cmd::Response, flags, self.seq, &self.method, payload),
            Some(md) => crate::transport::coder::encode_with_metadata(
                Cmd::Response,
                flags,
                self.seq,
                &self.method,
                payload,
                &md,
            )
            // Only a body near 4 GiB can overflow: send the Response without it.
            .unwrap_or_else(|_| encode(Cmd::Response, flags, self.seq, &self.method, payload)),
        };
        // Never refused: answers are bounded by the connection's deferred-request limit.
        let _ = self.conn.mailbox.post(Command::Answer {
            conn: self.conn.info.id,
            frame,
            timing: self.timing,
        });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            self.send(
                Flags(self.async_flag).with_error(),
                RESPONDER_DROPPED.as_bytes(),
            );
        }
    }
}
