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
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;

use crate::conn::handle::ConnHandle;
use crate::error::CallError;
use crate::reactor::mailbox::Command;

/// What a call answered: its payload and the Response's metadata, if any.
pub(crate) type Answered = Result<(Bytes, Option<Metadata>), CallError>;

/// Where a call awaited as a future stands, shared by the future and the reactor.
#[derive(Debug, Default)]
pub(crate) struct CallSlot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Assigned by the reactor when it queues the Request.
    seq: Option<u64>,
    outcome: Option<Answered>,
    waker: Option<Waker>,
    /// The future was dropped: the reactor must not start it, or must forget it.
    cancelled: bool,
}

impl CallSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reactor side: the call is queued as `seq`, unless its future was dropped first
    /// (then it must not be sent: returns false).
    pub(crate) fn start(&self, seq: u64) -> bool {
        let mut state = self.lock();
        if state.cancelled {
            return false;
        }
        state.seq = Some(seq);
        true
    }

    /// Whether the future was dropped before the reactor took the call.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Reactor side: the outcome; wakes the future.
    pub(crate) fn complete(&self, outcome: Answered) {
        let waker = {
            let mut state = self.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

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
        conn: ConnHandle,
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

    /// Posts a call to `conn`'s reactor. `metadata` is appended as arpc's `md` block.
    pub(crate) fn post(
        conn: &ConnHandle,
        method: &str,
        payload: Bytes,
        metadata: Option<Metadata>,
        timeout: std::time::Duration,
    ) -> CallFuture {
        let slot = Arc::new(CallSlot::default());
        let posted = conn.mailbox().post(Command::CallAwaited {
            conn: conn.id(),
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
                conn: conn.clone(),
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
            Pending::Posted { slot, .. } | Pending::Callback(slot) => {
                let mut state = slot.lock();
                match state.outcome.take() {
                    Some(outcome) => {
                        // Done: nothing to cancel on drop.
                        state.cancelled = true;
                        Poll::Ready(outcome)
                    }
                    None => {
                        match &state.waker {
                            Some(w) if w.will_wake(cx.waker()) => {}
                            _ => state.waker = Some(cx.waker().clone()),
                        }
                        Poll::Pending
                    }
                }
            }
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
        let Pending::Posted { slot, conn } = &self.inner else {
            return;
        };
        let seq = {
            let mut state = slot.lock();
            if state.cancelled || state.outcome.is_some() {
                return;
            }
            state.cancelled = true;
            state.seq
        };
        // Started: its pending entry goes now, not at its timeout. Not started yet: the
        // reactor sees the flag and never sends it.
        if let Some(seq) = seq {
            let _ = conn.mailbox().post(Command::CancelCall {
                conn: conn.id(),
                seq,
            });
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
