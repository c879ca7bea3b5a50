//! What one stream (see `stream`) shares between its reactor and the threads using it: the inbox of
//! received data (bounded), the send window (bounded), the id the reactor assigned and how
//! the stream ended.
//!
//! Invariants: the reactor only adds to the inbox and only takes from the window; users only
//! take from the inbox and only add to the window, so the two sides meet under one lock and
//! each wait has exactly one waker. The inbox counts each item at what it costs in memory
//! ([`item_cost`]: payload, metadata block and a fixed overhead, never its payload alone,
//! so tiny frames with big metadata cannot queue by the million), and keeps metadata
//! encoded, so an item never takes more than that; it holds the connection's
//! reading (the reactor is told through `held`) from the moment that count reaches its
//! limit until a receive brings it to half; the window lets a sender have at most its size
//! unsent (one frame of any size when nothing else is). Once `end` is set, the inbox takes
//! nothing more and waiting senders fail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use ringrpc_protocol::metadata::{Metadata, split_metadata};

use crate::error::StreamError;

/// What holding one inbox item costs besides its payload and metadata bytes, counted from
/// above: its queue slot, doubled (the queue grows by doubling), and the allocator's
/// headers and rounding for its two buffers.
pub(crate) const ITEM_OVERHEAD: usize = 2 * std::mem::size_of::<Item>() + 64;

/// The bytes an inbox item is counted at: its payload, its metadata block as the inbox
/// keeps it (encoded, as on the wire: a frame of 1 byte carrying a 4 KiB block counts as
/// about 4 KiB) and [`ITEM_OVERHEAD`].
pub(crate) fn item_cost(data: &[u8], metadata_block: Option<&Bytes>) -> usize {
    ITEM_OVERHEAD + data.len() + metadata_block.map_or(0, Bytes::len)
}

/// `metadata` as the inbox keeps it: its encoded block, which takes what it took on the
/// wire (decoded, a block of many tiny entries would take many times that).
fn encode_block(metadata: &Metadata) -> Bytes {
    let mut block = BytesMut::with_capacity(metadata.encoded_len());
    metadata.encode_block(&mut block);
    block.freeze()
}

/// The metadata of a block [`encode_block`] made (so it always decodes).
fn decode_block(block: &[u8]) -> Option<Box<Metadata>> {
    match split_metadata(block) {
        Ok((_, metadata)) => Some(Box::new(metadata)),
        Err(e) => {
            tracing::error!("a stream inbox's own metadata block did not decode: {e}");
            None
        }
    }
}

/// One frame a user of a stream asked to send, on its way to the reactor.
#[derive(Debug)]
pub(crate) struct OutFrame {
    /// The payload (the error text for an error end).
    pub(crate) payload: Bytes,
    /// Close the send side with this frame.
    pub(crate) eof: bool,
    /// The frame carries an error (with EOF).
    pub(crate) error: bool,
    /// Bytes it holds of the stream's window until the reactor queues it.
    pub(crate) window: usize,
    /// Metadata to append (arpc's `md` block).
    pub(crate) metadata: Option<Box<Metadata>>,
}

/// One stream's state shared across threads.
#[derive(Debug)]
pub(crate) struct StreamShared {
    method: Bytes,
    /// Assigned by the reactor when it registers the stream; 0 until then.
    id: AtomicU64,
    /// Opened by this side (its frames carry the local bit).
    opened_here: bool,
    /// The user closed the send side (EOF or error sent, or about to be).
    send_closed: AtomicBool,
    /// The user dropped the receiving handle: data arriving later is discarded.
    abandoned: AtomicBool,
    /// A `futures::Stream` consumer saw the end: later polls give `None`.
    receive_done: AtomicBool,
    queue_limit: AtomicUsize,
    send_window: AtomicUsize,
    state: Mutex<State>,
    readable: Condvar,
    writable: Condvar,
}

/// One received frame waiting in the inbox.
#[derive(Debug)]
struct Item {
    data: Bytes,
    /// Its metadata's encoded block.
    metadata: Option<Bytes>,
    /// What it was counted at ([`item_cost`]).
    cost: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// The items' costs summed: what the inbox holds, in bytes.
    queued: usize,
    /// How the peer ended the stream (`Ok` = EOF); set once.
    end: Option<Result<(), StreamError>>,
    /// The reactor holds the connection's reading for this inbox.
    held: bool,
    /// Bytes posted by senders and not yet queued for the socket.
    unsent: usize,
    /// The connection is gone: waiting senders fail.
    dead: bool,
    /// A task awaiting data (woken like the `readable` condition).
    read_waker: Option<Waker>,
    /// A task awaiting room in the window (woken like `writable`).
    write_waker: Option<Waker>,
}

impl State {
    fn wake_reader(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.write_waker.take() {
            waker.wake();
        }
    }
}

/// What a receive found.
pub(crate) enum Received {
    /// Data and its metadata; `resume` = the inbox fell to half and the reactor must be
    /// told to read again.
    Data {
        data: Bytes,
        metadata: Option<Box<Metadata>>,
        resume: bool,
    },
    /// The stream ended (`Ok(())` = EOF).
    End(Result<(), StreamError>),
    /// Nothing before the deadline (or nothing now, when not waiting).
    Empty,
}

impl StreamShared {
    pub(crate) fn new(
        method: Bytes,
        opened_here: bool,
        queue_limit: usize,
        send_window: usize,
    ) -> StreamShared {
        StreamShared {
            method,
            id: AtomicU64::new(0),
            opened_here,
            send_closed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            receive_done: AtomicBool::new(false),
            queue_limit: AtomicUsize::new(queue_limit.max(1)),
            send_window: AtomicUsize::new(send_window.max(1)),
            state: Mutex::default(),
            readable: Condvar::new(),
            writable: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn method(&self) -> &Bytes {
        &self.method
    }

    pub(crate) fn opened_here(&self) -> bool {
        self.opened_here
    }

    /// The stream id (the frames' seq), 0 while the reactor has not registered it yet.
    pub(crate) fn id(&self) -> u64 {
        self.id.load(Ordering::Acquire)
    }

    /// Registers the stream: its id and the limits of the connection it is on.
    pub(crate) fn register(&self, id: u64, queue_limit: usize, send_window: usize) {
        self.queue_limit
            .store(queue_limit.max(1), Ordering::Relaxed);
        self.send_window
            .store(send_window.max(1), Ordering::Relaxed);
        self.id.store(id, Ordering::Release);
    }

    fn queue_limit(&self) -> usize {
        self.queue_limit.load(Ordering::Relaxed)
    }

    /// Marks the send side closed; false if it already was.
    pub(crate) fn close_send(&self) -> bool {
        !self.send_closed.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_send_closed(&self) -> bool {
        self.send_closed.load(Ordering::Acquire)
    }

    /// A `futures::Stream` consumer has seen the end.
    pub(crate) fn mark_receive_done(&self) {
        self.receive_done.store(true, Ordering::Release);
    }

    /// Whether a `futures::Stream` consumer has seen the end.
    pub(crate) fn is_receive_done(&self) -> bool {
        self.receive_done.load(Ordering::Acquire)
    }

    /// The receiving handle is gone: drops what waits and discards what comes; returns
    /// true if the inbox was holding the connection's reading (the reactor must be told).
    pub(crate) fn abandon(&self) -> bool {
        self.abandoned.store(true, Ordering::Release);
        let mut state = self.lock();
        state.items.clear();
        state.queued = 0;
        std::mem::take(&mut state.held)
    }

    /// Whether the inbox holds the connection's reading now. A resume the reactor takes
    /// from its mail may be stale: the inbox can have filled again since it was posted.
    pub(crate) fn is_held(&self) -> bool {
        self.lock().held
    }

    // ---- reactor side ----

    /// Adds received data; returns true when the inbox just became full, so the reactor
    /// must hold the connection's reading until a receive posts a resume.
    pub(crate) fn deliver(&self, data: Bytes, metadata: Option<&Metadata>) -> bool {
        if self.abandoned.load(Ordering::Acquire) {
            return false;
        }
        let metadata = metadata.map(encode_block);
        let cost = item_cost(&data, metadata.as_ref());
        let mut state = self.lock();
        if state.end.is_some() {
            return false;
        }
        state.queued += cost;
        state.items.push_back(Item {
            data,
            metadata,
            cost,
        });
        self.readable.notify_one();
        state.wake_reader();
        if !state.held && state.queued >= self.queue_limit() {
            state.held = true;
            return true;
        }
        false
    }

    /// Ends the stream (the first end wins); wakes receivers. `dead` also fails senders.
    pub(crate) fn finish(&self, end: Result<(), StreamError>, dead: bool) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        if dead {
            state.dead = true;
            self.writable.notify_all();
            state.wake_writer();
        }
        self.readable.notify_all();
        state.wake_reader();
    }

    /// `bytes` posted by a sender are now queued for the socket (or dropped).
    pub(crate) fn unsent_done(&self, bytes: usize) {
        let mut state = self.lock();
        state.unsent = state.unsent.saturating_sub(bytes);
        self.writable.notify_all();
        state.wake_writer();
    }

    // ---- user side ----

    /// Why sending is impossible: how the stream died (timeout, disconnect), else
    /// [`StreamError::SendClosed`].
    pub(crate) fn send_refusal(&self) -> StreamError {
        let state = self.lock();
        match &state.end {
            Some(Err(e)) if state.dead => e.clone(),
            _ => StreamError::SendClosed,
        }
    }

    /// The next item or the end, if either is there now (the lock is released before a
    /// metadata block is decoded).
    fn take<'s>(
        &'s self,
        mut state: MutexGuard<'s, State>,
    ) -> Result<Received, MutexGuard<'s, State>> {
        if let Some(Item {
            data,
            metadata,
            cost,
        }) = state.items.pop_front()
        {
            state.queued -= cost;
            let resume = state.held && state.queued <= self.queue_limit() / 2;
            if resume {
                state.held = false;
            }
            drop(state);
            return Ok(Received::Data {
                data,
                metadata: metadata.as_deref().and_then(decode_block),
                resume,
            });
        }
        match &state.end {
            Some(end) => Ok(Received::End(end.clone())),
            None => Err(state),
        }
    }

    /// Takes the next item, or registers `cx`'s waker to be woken when one (or the end)
    /// arrives.
    pub(crate) fn poll_receive(&self, cx: &mut Context<'_>) -> Poll<Received> {
        match self.take(self.lock()) {
            Ok(received) => Poll::Ready(received),
            Err(mut state) => {
                state.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Claims `bytes` of the send window, or registers `cx`'s waker to be woken when room
    /// frees up (or the stream dies).
    pub(crate) fn poll_reserve(
        &self,
        bytes: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamError>> {
        match self.reserve(bytes, false) {
            Err(StreamError::WouldBlock) => {
                let mut state = self.lock();
                // Room may have freed up between the two locks: look once more.
                if state.unsent == 0
                    || state.unsent + bytes <= self.send_window.load(Ordering::Relaxed)
                {
                    drop(state);
                    return Poll::Ready(self.reserve(bytes, false));
                }
                state.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            done => Poll::Ready(done),
        }
    }

    /// Claims `bytes` of the send window whatever it holds (a `Sink` item, after
    /// [`StreamShared::poll_room`] said there was room): the window is then exceeded by at
    /// most that one item. Fails only when the stream is dead.
    pub(crate) fn force_reserve(&self, bytes: usize) -> Result<(), StreamError> {
        let mut state = self.lock();
        if state.dead {
            return Err(match &state.end {
                Some(Err(e)) => e.clone(),
                _ => StreamError::Disconnected,
            });
        }
        state.unsent += bytes;
        Ok(())
    }

    /// Ready once the window has room (less than its size unsent), or the stream is dead.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        self.poll_until(cx, |state, window| state.unsent < window)
    }

    /// Ready once everything posted is queued for the socket, or the stream is dead.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        self.poll_until(cx, |state, _| state.unsent == 0)
    }

    fn poll_until(
        &self,
        cx: &mut Context<'_>,
        ready: impl Fn(&State, usize) -> bool,
    ) -> Poll<Result<(), StreamError>> {
        let mut state = self.lock();
        if state.dead {
            return Poll::Ready(Err(match &state.end {
                Some(Err(e)) => e.clone(),
                _ => StreamError::Disconnected,
            }));
        }
        if ready(&state, self.send_window.load(Ordering::Relaxed)) {
            return Poll::Ready(Ok(()));
        }
        state.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Takes the next item, waiting until `deadline` (`None`: forever) when `wait`.
    pub(crate) fn receive(&self, wait: bool, deadline: Option<Instant>) -> Received {
        let mut state = self.lock();
        loop {
            state = match self.take(state) {
                Ok(received) => return received,
                Err(state) => state,
            };
            if !wait {
                return Received::Empty;
            }
            state = match deadline {
                None => self.readable.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Received::Empty;
                    }
                    self.readable
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Claims `bytes` of the send window, waiting for room when `wait`.
    pub(crate) fn reserve(&self, bytes: usize, wait: bool) -> Result<(), StreamError> {
        let mut state = self.lock();
        loop {
            if state.dead {
                return Err(match &state.end {
                    Some(Err(e)) => e.clone(),
                    _ => StreamError::Disconnected,
                });
            }
            if state.unsent == 0 || state.unsent + bytes <= self.send_window.load(Ordering::Relaxed)
            {
                state.unsent += bytes;
                return Ok(());
            }
            if !wait {
                return Err(StreamError::WouldBlock);
            }
            state = self.writable.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Bytes the inbox holds, each item at its [`item_cost`].
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_holds_reading_at_its_limit_and_resumes_at_half() {
        let item = item_cost(&[0u8; 60], None);
        let s = StreamShared::new(Bytes::from_static(b"/s"), true, 2 * item + 1, 100);
        assert!(!s.deliver(Bytes::from(vec![0u8; 60]), None));
        assert!(!s.deliver(Bytes::from(vec![0u8; 60]), None));
        assert!(
            s.deliver(Bytes::from(vec![0u8; 60]), None),
            "full at 3 items >= 2 items + 1"
        );
        assert!(!s.deliver(Bytes::from(vec![0u8; 60]), None), "told once");
        let Received::Data { resume, .. } = s.receive(false, None) else {
            panic!("data expected")
        };
        assert!(!resume, "3 items left, over half");
        let Received::Data { resume, .. } = s.receive(false, None) else {
            panic!("data expected")
        };
        assert!(!resume, "2 items left, over half");
        let Received::Data { resume, .. } = s.receive(false, None) else {
            panic!("data expected")
        };
        assert!(resume, "1 item left, at most half");
        assert_eq!(s.queued(), item);
    }

    /// A peer sending 1-byte frames each carrying a 4 KiB metadata block must fill the
    /// inbox by what those frames hold in memory, not by their payload bytes.
    #[test]
    fn tiny_frames_with_big_metadata_fill_the_inbox_by_what_they_hold() {
        let limit = 1 << 20;
        let s = StreamShared::new(Bytes::from_static(b"/s"), true, limit, 100);
        let mut md = Metadata::new();
        md.insert("k", vec![7u8; 4000]).unwrap();
        let mut delivered = 0;
        while !s.deliver(Bytes::from_static(b"x"), Some(&md)) {
            delivered += 1;
            assert!(
                delivered <= limit / 4000,
                "{delivered} frames carrying 4 KiB of metadata each still fit a {limit}-byte inbox"
            );
        }
        assert!(s.queued() >= limit);
        let Received::Data { metadata, .. } = s.receive(false, None) else {
            panic!("data expected")
        };
        assert_eq!(
            metadata.as_deref(),
            Some(&md),
            "kept encoded, given back decoded"
        );
    }

    #[test]
    fn end_comes_after_the_data_and_stays() {
        let s = StreamShared::new(Bytes::from_static(b"/s"), true, 100, 100);
        s.deliver(Bytes::from_static(b"a"), None);
        s.finish(Ok(()), false);
        assert!(
            !s.deliver(Bytes::from_static(b"late"), None),
            "nothing after the end"
        );
        assert!(matches!(s.receive(false, None), Received::Data { .. }));
        assert!(matches!(s.receive(true, None), Received::End(Ok(()))));
        assert!(matches!(s.receive(true, None), Received::End(Ok(()))));
    }

    #[test]
    fn window_admits_one_big_frame_then_waits_and_fails_when_dead() {
        let s = StreamShared::new(Bytes::from_static(b"/s"), true, 10, 10);
        s.reserve(50, false).unwrap();
        assert_eq!(s.reserve(1, false), Err(StreamError::WouldBlock));
        s.unsent_done(50);
        s.reserve(6, false).unwrap();
        s.reserve(4, false).unwrap();
        assert_eq!(s.reserve(1, false), Err(StreamError::WouldBlock));
        s.finish(Err(StreamError::Disconnected), true);
        assert_eq!(s.reserve(1, true), Err(StreamError::Disconnected));
    }

    #[test]
    fn a_waiting_receiver_wakes_for_data_from_another_thread() {
        let s = std::sync::Arc::new(StreamShared::new(Bytes::from_static(b"/s"), true, 10, 10));
        let t = {
            let s = s.clone();
            std::thread::spawn(move || matches!(s.receive(true, None), Received::Data { .. }))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.deliver(Bytes::from_static(b"x"), None);
        assert!(t.join().unwrap());
    }

    #[test]
    fn an_abandoned_inbox_discards_and_never_holds_reading() {
        let s = StreamShared::new(Bytes::from_static(b"/s"), false, 1, 1);
        s.abandon();
        assert!(!s.deliver(Bytes::from(vec![0u8; 100]), None));
        assert_eq!(s.queued(), 0);
    }
}
