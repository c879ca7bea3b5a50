//! Messages posted to simulated connections: the inbox the simulating thread claims, and
//! each message carried out on its connection as `reactor::mail::apply` does.

use std::sync::Arc;
use std::time::Instant;

use super::SimConn;
use crate::conn::handle::mark_reactor_thread;
use crate::error::{CallError, StreamError};
use crate::ids::ConnId;
use crate::reactor::mailbox::{Command, Mailbox};

/// The inbox every simulated connection's handles post to; claimed by the simulating
/// thread, so posts land on its local queue and are taken in order.
#[derive(Clone, Debug)]
pub struct SimMailbox(pub(super) Arc<Mailbox>);

impl SimMailbox {
    /// A fresh inbox for `capacity` optional messages, claimed by this thread (which also
    /// counts as a reactor thread from now on: blocking calls and waits refuse).
    pub fn claim(capacity: usize) -> SimMailbox {
        let mailbox = Arc::new(Mailbox::new(capacity));
        mailbox.claim_thread();
        mark_reactor_thread();
        // Whatever an earlier simulation on this thread left behind.
        while let Some(cmd) = mailbox.take_local() {
            cmd.abandon();
        }
        SimMailbox(mailbox)
    }

    /// The next message posted, in order.
    pub fn take(&self) -> Option<SimMail> {
        self.0.take_local().map(SimMail)
    }

    /// Optional messages refused because the inbox was full.
    pub fn refused(&self) -> u64 {
        self.0.refused()
    }
}

impl Drop for SimMailbox {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            while let Some(cmd) = self.0.take_local() {
                cmd.abandon();
            }
        }
    }
}

/// One message posted to a simulated connection's reactor.
pub struct SimMail(pub(super) Command);

impl std::fmt::Debug for SimMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimMail({})", self.kind())
    }
}

/// What applying a message asks the harness to schedule.
#[derive(Debug, Default)]
pub struct Applied {
    /// A call was started: its seq and deadline (`TimerId::Call`).
    pub call: Option<(u64, Instant)>,
    /// A notify (a publication among them) was dropped rather than queued: the connection
    /// was paused or over its send-queue limit, or gone.
    pub dropped: bool,
}

impl SimMail {
    /// The connection it is for (`None`: not for one connection).
    pub fn conn(&self) -> Option<ConnId> {
        match &self.0 {
            Command::Notify { conn, .. }
            | Command::Answer { conn, .. }
            | Command::Call { conn, .. }
            | Command::CallWithMetadata { conn, .. }
            | Command::CallAwaited { conn, .. }
            | Command::CancelCall { conn, .. }
            | Command::StreamOpen { conn, .. }
            | Command::StreamSend { conn, .. }
            | Command::StreamResume { conn, .. }
            | Command::Reply { conn, .. }
            | Command::Close { conn, .. }
            | Command::NotifyCounted { conn, .. }
            | Command::Settled { conn } => Some(*conn),
            _ => None,
        }
    }

    /// The encoded frame a Notify, an Answer or a Reply carries.
    pub fn frame(&self) -> Option<&[u8]> {
        match &self.0 {
            Command::Notify { frame, .. }
            | Command::NotifyCounted { frame, .. }
            | Command::Answer { frame, .. }
            | Command::Reply { frame, .. } => Some(frame),
            _ => None,
        }
    }

    /// The message's kind, for traces.
    pub fn kind(&self) -> &'static str {
        match &self.0 {
            Command::Notify { .. } => "notify",
            Command::Answer { .. } => "answer",
            Command::Call { .. } => "call",
            Command::StreamOpen { .. } => "stream-open",
            Command::StreamSend { .. } => "stream-send",
            Command::StreamResume { .. } => "stream-resume",
            Command::Close { .. } => "close",
            Command::NotifyCounted { .. } => "notify-counted",
            _ => "other",
        }
    }

    /// Carries the message out on `conn` (`None`: that connection is gone), as
    /// `reactor::mail::apply` does for a stream connection.
    pub fn apply(self, conn: Option<&mut SimConn>, now: Instant) -> Applied {
        let mut applied = Applied::default();
        let conn = conn.filter(|c| !c.released && !c.lifecycle.is_dead());
        match (self.0, conn) {
            (Command::Notify { frame, .. }, Some(c)) => {
                if c.lifecycle.is_paused() {
                    applied.dropped = true;
                } else {
                    c.conn.session.out.push_encoded(frame);
                }
            }
            (Command::Answer { frame, .. }, Some(c)) => {
                c.conn.session.out.push_encoded(frame);
                c.conn.session.answer_queued();
            }
            (
                Command::Call {
                    method,
                    payload,
                    timeout,
                    done,
                    ..
                },
                Some(c),
            ) => {
                let deadline = now + timeout;
                if let Some(seq) = c.start_call(&method, &payload, deadline, done) {
                    applied.call = Some((seq, deadline));
                }
            }
            (Command::Call { done, .. }, None) => done(Err(CallError::Disconnected)),
            (Command::StreamOpen { shared, .. }, Some(c)) => {
                let _ = c.conn.session.open_stream(shared);
            }
            (Command::StreamOpen { shared, .. }, None) => {
                shared.finish(Err(StreamError::Disconnected), true);
            }
            (Command::StreamSend { shared, send, .. }, Some(c)) => {
                let paused = c.lifecycle.is_paused();
                let session = &mut c.conn.session;
                session.streams.send(shared, send, paused, &mut session.out);
            }
            (Command::StreamSend { shared, send, .. }, None) => {
                shared.unsent_done(send.window);
                shared.finish(Err(StreamError::Disconnected), true);
            }
            (Command::StreamResume { shared, .. }, Some(c)) => {
                c.conn.session.streams.resume(&shared);
            }
            (Command::Reply { frame, .. }, Some(c)) => c.conn.session.out.push_encoded(frame),
            (Command::Close { .. }, Some(c)) => c.lifecycle.request_close(),
            (Command::NotifyCounted { frame, tally, .. }, Some(c)) => {
                let out = &c.conn.session.out;
                if c.lifecycle.is_paused()
                    || out.backlog_bytes() >= c.cfg.max_send_queue_bytes
                    || out.backlog_frames() >= c.cfg.max_send_queue_frames
                {
                    tally
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    applied.dropped = true;
                } else {
                    tally
                        .queued
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    c.conn.session.out.push_encoded(frame);
                }
            }
            (Command::Settled { .. }, Some(c)) => c.conn.session.answer_queued(),
            (Command::Notify { .. } | Command::NotifyCounted { .. }, None) => {
                applied.dropped = true;
            }
            (other, _) => drop(other),
        }
        applied
    }
}
