//! Calls awaited as futures: [`CallFuture`] is what `call_async` on a [`ConnHandle`] or a
//! [`Client`](crate::Client) returns. It is `Send` and needs no particular runtime: the
//! connection's reactor completes it and wakes whatever executor polls it — a task on the
//! same reactor (no syscall), tokio, smol or `futures::executor::block_on`.
//!
//! Invariants: every call completes exactly once — answered, failed, timed out, or
//! cancelled by dropping its future; a dropped future's pending entry is removed from its
//! connection at once (its reactor is told with `Command::CancelCall`, never refused), and
//! a Response arriving after that is discarded and counted as ignored; the future's waker is
//! woken outside the slot's lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;

use crate::conn::call_slot::{Answered, CallSlot};
use crate::error::CallError;
use crate::ids::ConnId;
use crate::reactor::mailbox::{Command, Mailbox};

/// A call in flight; resolves to the Response payload. Drop it to cancel the call.
#[must_use = "futures do nothing unless awaited; dropping this cancels the call"]
#[derive(Debug)]
pub struct CallFuture {
    inner: Pending,
}

#[derive(Debug)]
enum Pending {
    /// Failed before it was posted.
    Failed(Option<CallError>),
    /// Posted to the connection's reactor.
    Posted {
        slot: Arc<CallSlot>,
        mailbox: Arc<Mailbox>,
        conn: ConnId,
    },
    /// Completed by a callback (a datagram call): dropping it does not cancel the call,
    /// which runs to its answer or timeout.
    Callback(Arc<CallSlot>),
}

impl CallFuture {
    /// A call that failed before anything was sent.
    pub(crate) fn failed(error: CallError) -> CallFuture {
        CallFuture {
            inner: Pending::Failed(Some(error)),
        }
    }

    /// Posts a call to the reactor behind `mailbox`, which serves `conn`. `metadata` is
    /// appended as arpc's `md` block.
    pub(crate) fn post(
        mailbox: &Arc<Mailbox>,
        conn: ConnId,
        method: &str,
        payload: Bytes,
        metadata: Option<Metadata>,
        timeout: std::time::Duration,
    ) -> CallFuture {
        let slot = Arc::new(CallSlot::default());
        let posted = mailbox.post(Command::CallAwaited {
            conn,
            method: Bytes::copy_from_slice(method.as_bytes()),
            payload,
            metadata: metadata.map(Box::new),
            timeout,
            slot: slot.clone(),
        });
        if posted.is_err() {
            return CallFuture::failed(CallError::MailboxFull);
        }
        CallFuture {
            inner: Pending::Posted {
                slot,
                mailbox: mailbox.clone(),
                conn,
            },
        }
    }

    /// A future completed by the callback this returns (for calls made through the
    /// callback API, such as datagram calls).
    pub(crate) fn with_callback() -> (CallFuture, impl FnOnce(Result<Bytes, CallError>) + Send) {
        let slot = Arc::new(CallSlot::default());
        let done = {
            let slot = slot.clone();
            move |outcome: Result<Bytes, CallError>| {
                slot.complete(outcome.map(|payload| (payload, None)))
            }
        };
        let future = CallFuture {
            inner: Pending::Callback(slot),
        };
        (future, done)
    }

    fn poll_answered(&mut self, cx: &mut Context<'_>) -> Poll<Answered> {
        match &mut self.inner {
            Pending::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(CallError::Stopped))),
            Pending::Posted { slot, .. } | Pending::Callback(slot) => slot.poll_outcome(cx),
        }
    }

    /// Resolves to the payload and the Response's metadata, if it carried any.
    pub fn with_metadata(self) -> CallWithMetadata {
        CallWithMetadata(self)
    }
}

impl Future for CallFuture {
    type Output = Result<Bytes, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_answered(cx)
            .map(|r| r.map(|(payload, _)| payload))
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        let Pending::Posted {
            slot,
            mailbox,
            conn,
        } = &self.inner
        else {
            return;
        };
        // Started: its pending entry goes now, not at its timeout. Not started yet: the
        // reactor sees the flag and never sends it.
        if let Some(Some(seq)) = slot.cancel() {
            let _ = mailbox.post(Command::CancelCall { conn: *conn, seq });
        }
    }
}

/// A [`CallFuture`] that also yields the Response's metadata.
#[must_use = "futures do nothing unless awaited; dropping this cancels the call"]
#[derive(Debug)]
pub struct CallWithMetadata(CallFuture);

impl Future for CallWithMetadata {
    type Output = Result<(Bytes, Option<Metadata>), CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_answered(cx)
    }
}
