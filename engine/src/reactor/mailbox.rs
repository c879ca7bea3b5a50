//! Messages from any thread to one reactor: one FIFO channel plus an eventfd wake-up.
//!
//! Invariants:
//! - A message pushed is seen by the reactor's next drain, in the order it was pushed.
//! - The eventfd is written only when no wake-up is already pending, so a burst of messages
//!   costs one syscall; the reactor clears the pending flag *before* draining, so a message
//!   pushed during a drain either is drained now or triggers a fresh wake-up.
//! - Memory is bounded: messages another thread (or a datagram peer) may cause at will
//!   (notifies, calls, closes, broadcasts, forwarded datagram answers) count against the
//!   capacity and are refused with [`CallError::MailboxFull`] past it; the others are bounded
//!   by construction — answers by each connection's limit of deferred requests, stream sends
//!   by their windows.
//! - A message posted on the reactor's own thread (a handler acting on a connection of its
//!   core) goes to a thread-local queue instead: no channel, no eventfd write. The reactor
//!   applies it before its tick's flush, in the order posted, so what a handler sends to its
//!   own connection leaves in the order it sent it (see `Context`'s reply path).
//! - Once closed (its reactor stopped, normally or not), nothing posted is lost silently: what
//!   is queued and everything posted later is abandoned at once — calls fail with
//!   [`CallError::Stopped`], streams end with [`StreamError::Disconnected`], the rest is
//!   dropped. Either the reactor's final drain or the poster's own check after its send sees
//!   each message (both sides use `SeqCst`), so none can slip between them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use ringrpc_uring::Waker;

use crate::error::{CallError, DisconnectReason, StreamError};
use crate::executor::contain::contain;
use crate::ids::{ConnId, ConnInfo};
use crate::stream::shared::{OutFrame, StreamShared};
use crate::udp::limits::Retry;

/// Completion of a call: runs once, on the reactor thread, with the Response payload.
pub(crate) type CallDone = Box<dyn FnOnce(Result<Bytes, CallError>) + Send>;
/// Completion of a call made with metadata: the Response payload and its metadata.
pub(crate) type CallDoneMd = Box<
    dyn FnOnce(Result<(Bytes, Option<ringrpc_protocol::metadata::Metadata>), CallError>) + Send,
>;
/// Runs on the reactor thread when an adopted connection is gone.
pub(crate) type Closed = Box<dyn FnOnce(&DisconnectReason) + Send>;

/// Decides which connections a broadcast reaches.
pub type BroadcastFilter = Arc<dyn Fn(&ConnInfo) -> bool + Send + Sync>;

/// Messages a reactor accepts from other threads by default before refusing more (about
/// 100 bytes each plus their payloads).
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// Outcomes of counted notifies, kept by the reactors that carry them out.
#[derive(Debug, Default)]
pub(crate) struct NotifyTally {
    /// Queued on the connection's output.
    pub(crate) queued: AtomicU64,
    /// Dropped: the connection was over its send-queue limit.
    pub(crate) dropped: AtomicU64,
}

/// What other threads ask a reactor to do.
/// A Response owed by a responder, in parts (see [`Command::AnswerParts`]).
pub(crate) struct AnswerParts {
    pub(crate) conn: ConnId,
    pub(crate) seq: u64,
    /// The Response's flags (the request's async bit; the error bit for an error).
    pub(crate) flags: ringrpc_protocol::Flags,
    pub(crate) method: Bytes,
    pub(crate) payload: Bytes,
    /// When metrics are on: the request's clock, stopped when this arrives.
    pub(crate) timing: Option<crate::observe::methods::Timing>,
}

pub(crate) enum Command {
    /// Queue an encoded Notify on a connection (counts against the capacity).
    Notify { conn: ConnId, frame: Bytes },
    /// Queue an encoded Response a responder owes (bounded by the deferred-request limit).
    Answer {
        conn: ConnId,
        frame: Bytes,
        /// When metrics are on: the request's clock, stopped when this arrives.
        timing: Option<crate::observe::methods::Timing>,
    },
    /// As `Answer`, not yet encoded: the reactor writes the Response straight into the
    /// connection's output (a `Responder::reply_bytes`, an async handler's answer).
    AnswerParts(AnswerParts),
    /// Start a call to the peer of a connection (counts against the capacity).
    Call {
        conn: ConnId,
        method: Bytes,
        payload: Bytes,
        timeout: Duration,
        done: CallDone,
    },
    /// Start a call whose Request is encoded already (metadata appended, seq 0) (counts
    /// against the capacity).
    CallWithMetadata {
        conn: ConnId,
        frame: Bytes,
        timeout: Duration,
        done: CallDoneMd,
    },
    /// Start a call awaited as a future (counts against the capacity); `slot` gets its seq
    /// and outcome.
    CallAwaited {
        conn: ConnId,
        method: Bytes,
        payload: Bytes,
        metadata: Option<Box<ringrpc_protocol::metadata::Metadata>>,
        timeout: Duration,
        slot: Arc<crate::conn::call_slot::CallSlot>,
    },
    /// A call's future was dropped: forget its pending entry (owed: once per call).
    CancelCall { conn: ConnId, seq: u64 },
    /// Queue an encoded frame on every connection the filter accepts (counts against the
    /// capacity).
    Broadcast {
        frame: Bytes,
        filter: Option<BroadcastFilter>,
    },
    /// Close a connection (queued output is still sent). Counts against the capacity when
    /// `counted` (a user's `ConnHandle::close`); the engine's own closes (a client closing
    /// its one connection) are bounded by construction.
    Close { conn: ConnId, counted: bool },
    /// An async handler of a Notify finished: its slot of the connection's in-flight limit
    /// is free (owed, like an answer).
    Settled { conn: ConnId },
    /// Queue a task of this reactor's executor that was woken on another thread (owed:
    /// a task is queued at most once at a time).
    Wake(crate::executor::TaskKey),
    /// Makes the reactor panic outside any user code: how tests stand in for an engine bug.
    #[cfg(test)]
    Crash,
    /// A Response a handler on the connection's own reactor queued behind the messages it
    /// posted before it (posted only to the local queue; bounded: one per request).
    Reply { conn: ConnId, frame: Bytes },
    /// Call `method` on a datagram peer (counts against the capacity).
    UdpCall {
        peer: SocketAddr,
        method: Bytes,
        payload: Bytes,
        timeout: Duration,
        retry: Option<Retry>,
        done: CallDone,
    },
    /// Send an encoded Notify to a datagram peer (counts against the capacity).
    UdpNotify { peer: SocketAddr, frame: Bytes },
    /// A Response another core's socket received for a call this core made (counts against
    /// the capacity: a peer can send any number of them, forged ones included).
    UdpForward { peer: SocketAddr, frame: Bytes },
    /// Open a stream on `conn`: assign its id and register it (optional).
    StreamOpen {
        conn: ConnId,
        shared: Arc<StreamShared>,
        timeout: Option<Duration>,
    },
    /// A frame for an open stream (owed: its bytes are already bounded by the stream's
    /// send window).
    StreamSend {
        conn: ConnId,
        shared: Arc<StreamShared>,
        send: OutFrame,
    },
    /// A receive drained a stream's inbox to half: the connection may read again (owed).
    StreamResume {
        conn: ConnId,
        shared: Arc<StreamShared>,
    },
    /// As `Notify`, and the outcome is counted in `tally` (pub/sub's delivered and
    /// skipped; counts against the capacity).
    NotifyCounted {
        conn: ConnId,
        frame: Bytes,
        tally: Arc<NotifyTally>,
    },
}

impl Command {
    /// Whether this message counts against the capacity.
    fn optional(&self) -> bool {
        matches!(
            self,
            Command::Notify { .. }
                | Command::Call { .. }
                | Command::CallWithMetadata { .. }
                | Command::CallAwaited { .. }
                | Command::Broadcast { .. }
                | Command::UdpCall { .. }
                | Command::UdpNotify { .. }
                | Command::UdpForward { .. }
                | Command::StreamOpen { .. }
                | Command::NotifyCounted { .. }
                | Command::Close { counted: true, .. }
        )
    }

    /// Fails a message no reactor will ever apply (its mailbox is closed): a call's
    /// completion gets [`CallError::Stopped`], a stream ends with
    /// [`StreamError::Disconnected`], a counted notify is counted as dropped, the rest is
    /// dropped. A completion that panics is contained and logged.
    pub(crate) fn abandon(self) {
        match self {
            Command::Call { done, .. } | Command::UdpCall { done, .. } => {
                contain("a call's completion", || done(Err(CallError::Stopped)));
            }
            Command::CallWithMetadata { done, .. } => {
                contain("a call's completion", || done(Err(CallError::Stopped)));
            }
            Command::CallAwaited { slot, .. } => slot.complete(Err(CallError::Stopped)),
            Command::StreamOpen { shared, .. } => {
                shared.finish(Err(StreamError::Disconnected), true);
            }
            Command::StreamSend { shared, send, .. } => {
                shared.unsent_done(send.window);
                shared.finish(Err(StreamError::Disconnected), true);
            }
            Command::NotifyCounted { tally, .. } => {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Command::Notify { .. }
            | Command::Answer { .. }
            | Command::AnswerParts(_)
            | Command::Broadcast { .. }
            | Command::Close { .. }
            | Command::Reply { .. }
            | Command::UdpNotify { .. }
            | Command::UdpForward { .. }
            | Command::StreamResume { .. }
            | Command::Wake(_)
            | Command::CancelCall { .. }
            | Command::Settled { .. } => {}
            #[cfg(test)]
            Command::Crash => {}
        }
    }
}

thread_local! {
    /// The mailbox of the reactor running on this thread (its address; 0 on other threads).
    static OWN_MAILBOX: Cell<usize> = const { Cell::new(0) };
    /// Messages this thread's reactor posted to itself, applied before its next flush.
    static LOCAL: RefCell<VecDeque<Command>> = const { RefCell::new(VecDeque::new()) };
    /// How many messages wait in `LOCAL` (read without borrowing it).
    static LOCAL_PENDING: Cell<usize> = const { Cell::new(0) };
}

/// Whether messages posted on this thread wait in the local queue, so that a frame written
/// straight to a connection's output now would overtake them: the reply path then queues
/// behind them instead.
pub(crate) fn local_pending() -> bool {
    LOCAL_PENDING.with(Cell::get) > 0
}

/// One reactor's inbox.
pub(crate) struct Mailbox {
    tx: Sender<Command>,
    rx: Receiver<Command>,
    /// The reactor's ring wake-up, set once its ring is up (messages posted before that
    /// are taken by the reactor's first drain).
    waker: OnceLock<Waker>,
    wake_pending: AtomicBool,
    /// Optional messages queued and not yet drained.
    optional_queued: AtomicUsize,
    capacity: usize,
    /// Optional messages refused because the inbox was full.
    refused: AtomicU64,
    /// The reactor stopped: posts are abandoned (see the module docs).
    closed: AtomicBool,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("queued", &self.rx.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Mailbox {
    /// An inbox holding at most `capacity` optional messages.
    pub(crate) fn new(capacity: usize) -> Mailbox {
        let (tx, rx) = crossbeam_channel::unbounded();
        Mailbox {
            tx,
            rx,
            waker: OnceLock::new(),
            wake_pending: AtomicBool::new(false),
            optional_queued: AtomicUsize::new(0),
            capacity,
            refused: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Delivers `cmd` and wakes the reactor if it may be asleep; refuses an optional
    /// message when the inbox is full, handing it back (counted as refused). On the
    /// reactor's own thread the message goes to its local queue (no wake-up needed); once the
    /// mailbox is closed it is abandoned ([`Command::abandon`]) instead of delivered.
    pub(crate) fn post(&self, cmd: Command) -> Result<(), Box<Command>> {
        if cmd.optional() && self.optional_queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.optional_queued.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(cmd));
        }
        // Only this thread closes the mailbox, so on it a relaxed load sees that.
        if self.is_own_thread() && !self.closed.load(Ordering::Relaxed) {
            LOCAL.with(|queue| queue.borrow_mut().push_back(cmd));
            LOCAL_PENDING.with(|n| n.set(n.get() + 1));
            return Ok(());
        }
        // The receiver lives as long as the mailbox, so sending cannot fail.
        let _ = self.tx.send(cmd);
        if self.closed.load(Ordering::SeqCst) {
            // The reactor may have finished its last drain before this send.
            self.abandon_queued();
            return Ok(());
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.wake();
        }
        Ok(())
    }

    /// Whether this thread runs this mailbox's reactor.
    pub(crate) fn is_own_thread(&self) -> bool {
        OWN_MAILBOX.with(Cell::get) == self as *const Mailbox as usize
    }

    /// Reactor side, once on its thread before the loop: posts from this thread go to the
    /// local queue.
    pub(crate) fn claim_thread(&self) {
        OWN_MAILBOX.with(|own| own.set(self as *const Mailbox as usize));
    }

    /// Reactor side: takes the next message its own thread posted (after the ones before
    /// it); a message it applies may post more, which come after.
    pub(crate) fn take_local(&self) -> Option<Command> {
        let cmd = LOCAL.with(|queue| queue.borrow_mut().pop_front())?;
        LOCAL_PENDING.with(|n| n.set(n.get() - 1));
        if cmd.optional() {
            self.optional_queued.fetch_sub(1, Ordering::AcqRel);
        }
        Some(cmd)
    }

    /// Reactor side, when its loop has ended (normally or not): refuses everything from
    /// now on and abandons what is queued, the local queue included.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.abandon_queued();
        if self.is_own_thread() {
            while let Some(cmd) = self.take_local() {
                cmd.abandon();
            }
        }
    }

    /// Whether the reactor has stopped taking messages.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Abandons everything in the channel (any thread may do this once closed).
    fn abandon_queued(&self) {
        while let Ok(cmd) = self.rx.try_recv() {
            if cmd.optional() {
                self.optional_queued.fetch_sub(1, Ordering::AcqRel);
            }
            cmd.abandon();
        }
    }

    /// Connects the inbox to its reactor's ring (once, before the reactor's first drain).
    pub(crate) fn set_waker(&self, waker: Waker) {
        let _ = self.waker.set(waker);
    }

    /// Wakes the reactor unconditionally (shutdown).
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.get() {
            if let Err(e) = waker.wake() {
                tracing::error!("cannot wake a reactor: {e}");
            }
        }
    }

    /// Reactor side: everything posted so far, in order.
    pub(crate) fn drain(&self) -> impl Iterator<Item = Command> + '_ {
        self.wake_pending.store(false, Ordering::Release);
        self.rx.try_iter().inspect(|cmd| {
            if cmd.optional() {
                self.optional_queued.fetch_sub(1, Ordering::AcqRel);
            }
        })
    }

    /// Optional messages refused so far because the inbox was full.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A task's wake-up from another thread travels as [`Command::Wake`].
impl crate::executor::RemoteWake for Mailbox {
    fn is_own_thread(&self) -> bool {
        Mailbox::is_own_thread(self)
    }

    fn wake_from_afar(&self, key: crate::executor::TaskKey) {
        // Owed (never refused): each task is queued at most once at a time.
        let _ = self.post(Command::Wake(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify() -> Command {
        Command::Notify {
            conn: ConnId {
                core: 0,
                slot: 0,
                serial: 1,
            },
            frame: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn optional_messages_are_refused_past_capacity_and_owed_ones_never() {
        let mailbox = Mailbox::new(2);
        assert!(mailbox.post(notify()).is_ok());
        assert!(mailbox.post(notify()).is_ok());
        assert!(matches!(
            mailbox.post(notify()).map_err(|c| *c),
            Err(Command::Notify { .. })
        ));
        let conn = ConnId {
            core: 0,
            slot: 0,
            serial: 1,
        };
        let answer = Command::Answer {
            conn,
            frame: Bytes::new(),
            timing: None,
        };
        assert!(mailbox.post(answer).is_ok());
        let owed_close = Command::Close {
            conn,
            counted: false,
        };
        assert!(mailbox.post(owed_close).is_ok());
        let user_close = Command::Close {
            conn,
            counted: true,
        };
        assert!(mailbox.post(user_close).is_err(), "a user's close counts");
        assert_eq!(mailbox.refused(), 2);
        assert_eq!(mailbox.drain().count(), 4);
        // Drained: room again.
        assert!(mailbox.post(notify()).is_ok());
    }
}
