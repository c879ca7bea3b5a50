//! Where a call awaited as a future stands: the one piece of state its future
//! ([`CallFuture`](crate::CallFuture)) and the connection's reactor share. The mailbox
//! carries it to the reactor (`Command::CallAwaited`), which starts the call and completes
//! it; the future polls it.
//!
//! Invariants: an outcome is set at most once (a later one is ignored); a call whose future
//! was dropped before the reactor took it is never started; the waker is woken outside the
//! lock.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;

use crate::error::CallError;

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

    /// Future side: the outcome, once there is one (the slot then counts as done, so
    /// nothing is cancelled on drop); until then `cx`'s waker is kept for the reactor.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Answered> {
        let mut state = self.lock();
        match state.outcome.take() {
            Some(outcome) => {
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

    /// Future side, when it is dropped: marks the call cancelled. `None` when it was done
    /// or cancelled already; else the seq the reactor gave it, if it started it (its
    /// pending entry must then be removed).
    pub(crate) fn cancel(&self) -> Option<Option<u64>> {
        let mut state = self.lock();
        if state.cancelled || state.outcome.is_some() {
            return None;
        }
        state.cancelled = true;
        Some(state.seq)
    }
}
