//! What a connection is owed: answers to Requests handed to a [`Responder`] (sent later,
//! from any thread), a Notify's place among its deferred work, and the count of both that
//! the in-flight limit and the shutdown drain read.
//!
//! Invariants: a [`Responder`] sends exactly one Response, an error if dropped unanswered;
//! an answer is counted owed from the moment its responder is taken until the reactor queues
//! it, so "nothing owed" means every answer is on the connection's output; a
//! [`NotifySlot`] frees its place once, when dropped.

use std::fmt;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;
use ringrpc_protocol::{Command as Cmd, Flags};

use crate::conn::handle::{ConnHandle, encode};
use crate::error::{RESPONDER_DROPPED, RESPONSE_TOO_LARGE, check_body};
use crate::reactor::mailbox::{AnswerParts, Command};

/// What a task owes the connection it serves: a Request's answer, or a Notify's slot of the
/// in-flight limit.
pub(crate) enum Owed {
    Answer(Responder),
    Notify(NotifySlot),
}

/// A Notify's slot of its connection's in-flight limit, freed (through the mailbox) when
/// dropped.
pub(crate) struct NotifySlot {
    conn: ConnHandle,
}

impl NotifySlot {
    /// A slot its connection already counts as held (see [`Context::owe`]).
    pub(crate) fn new(conn: ConnHandle) -> NotifySlot {
        NotifySlot { conn }
    }
}

impl Drop for NotifySlot {
    fn drop(&mut self) {
        // Owed: never refused.
        let _ = self
            .conn
            .mailbox()
            .post(crate::reactor::mailbox::Command::Settled {
                conn: self.conn.id(),
            });
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
#[derive(Default)]
pub(crate) struct Deferred {
    owed: std::cell::Cell<usize>,
    /// Boxed, and only once a task is tracked: most connections never run an async handler,
    /// and this is every connection's slot (8 bytes here instead of 32).
    #[expect(
        clippy::box_collection,
        reason = "a thin pointer: the Vec's 24 bytes would sit in every slot"
    )]
    tasks: std::cell::Cell<Option<Box<Vec<crate::executor::TaskKey>>>>,
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks = self.tasks.take();
        let tracked = tasks.as_ref().map_or(0, |t| t.len());
        self.tasks.set(tasks);
        f.debug_struct("Deferred")
            .field("owed", &self.owed.get())
            .field("tasks", &tracked)
            .finish()
    }
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
        let mut tasks = self.tasks.take().unwrap_or_default();
        if tasks.len() >= 8 && tasks.len() == tasks.capacity() {
            tasks.retain(|t| crate::executor::Executor::is_alive(*t));
        }
        tasks.push(task);
        self.tasks.set(Some(tasks));
    }

    /// Cancels every task still running for this connection (it is being released).
    pub(crate) fn cancel_tasks(&self) {
        for task in self.tasks.take().into_iter().flat_map(|tasks| *tasks) {
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
    timing: Option<crate::observe::methods::Timing>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("conn", &self.conn.id())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Responder {
    /// A responder for a Request the connection's [`Deferred`] already counts as owed.
    pub(crate) fn new(
        conn: ConnHandle,
        seq: u64,
        method: Bytes,
        flags: Flags,
        timing: Option<crate::observe::methods::Timing>,
    ) -> Responder {
        Responder {
            conn,
            seq,
            method,
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

    /// Sends the Response from `payload` without copying it here: the reactor queues it
    /// (a small payload is copied into the connection's output buffer there, a large one
    /// is sent from this `Bytes`).
    pub fn reply_bytes(mut self, payload: Bytes) {
        if self.metadata.is_some() || check_body(&self.method, &payload).is_err() {
            return self.send(Flags(self.async_flag), &payload);
        }
        self.answered = true;
        // Never refused: answers are bounded by the connection's deferred-request limit.
        let _ = self.conn.mailbox().post(Command::AnswerParts(AnswerParts {
            conn: self.conn.id(),
            seq: self.seq,
            flags: Flags(self.async_flag),
            method: self.method.clone(),
            payload,
            timing: self.timing,
        }));
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
        let _ = self.conn.mailbox().post(Command::Answer {
            conn: self.conn.id(),
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
