//! Messages from any thread to one reactor: a crossbeam channel plus an eventfd wake-up.
//!
//! Invariants: a message pushed is seen by the reactor's next drain; the eventfd is written
//! only when no wake-up is already pending, so a burst of messages costs one syscall; the
//! reactor clears the pending flag *before* draining, so a message pushed during a drain
//! either is drained now or triggers a fresh wake-up.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryIter};

use crate::handle::{CallDone, ConnHandle, ConnId, ConnInfo};
use crate::reactor::DisconnectReason;

/// Runs on the reactor thread once an adopted connection is being served.
pub(crate) type Opened = Box<dyn FnOnce(ConnHandle) + Send>;
/// Runs on the reactor thread when an adopted connection is gone.
pub(crate) type Closed = Box<dyn FnOnce(&DisconnectReason) + Send>;

/// Decides which connections a broadcast reaches.
pub type BroadcastFilter = std::sync::Arc<dyn Fn(&ConnInfo) -> bool + Send + Sync>;

/// What other threads ask a reactor to do.
pub(crate) enum Command {
    /// Queue an already encoded frame on a connection.
    Send { conn: ConnId, frame: Bytes },
    /// Start a call to the peer of a connection.
    Call {
        conn: ConnId,
        method: Bytes,
        payload: Bytes,
        timeout: Duration,
        done: CallDone,
    },
    /// Queue an encoded frame on every connection the filter accepts.
    Broadcast {
        frame: Bytes,
        filter: Option<BroadcastFilter>,
    },
    /// Close a connection (queued output is still sent).
    Close { conn: ConnId },
    /// Serve an already connected socket (a client's outbound connection).
    Adopt {
        stream: std::net::TcpStream,
        opened: Opened,
        closed: Closed,
    },
}

/// One reactor's inbox.
pub(crate) struct Mailbox {
    tx: Sender<Command>,
    rx: Receiver<Command>,
    waker: File,
    wake_pending: AtomicBool,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl Mailbox {
    /// An inbox whose wake-ups are written to `waker` (the reactor reads its other end).
    pub(crate) fn new(waker: File) -> Mailbox {
        let (tx, rx) = crossbeam_channel::unbounded();
        Mailbox {
            tx,
            rx,
            waker,
            wake_pending: AtomicBool::new(false),
        }
    }

    /// Delivers `cmd` and wakes the reactor if it may be asleep.
    pub(crate) fn post(&self, cmd: Command) {
        // The receiver lives as long as the mailbox, so sending cannot fail.
        let _ = self.tx.send(cmd);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Wakes the reactor unconditionally (shutdown).
    pub(crate) fn wake(&self) {
        // A full eventfd counter already guarantees a wake-up, so errors are harmless.
        let _ = (&self.waker).write(&1u64.to_ne_bytes());
    }

    /// Reactor side: everything posted so far.
    pub(crate) fn drain(&self) -> TryIter<'_, Command> {
        self.wake_pending.store(false, Ordering::Release);
        self.rx.try_iter()
    }
}
