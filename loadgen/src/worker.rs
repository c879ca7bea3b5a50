//! What every I/O thread shares, whatever drives its connections (`std_worker`, `uring`,
//! `epoll`, `udp`): the run's [`Plan`], the thread's [`WorkerState`] and what it publishes for the
//! progress line ([`Shared`]), the bookkeeping at the end of each loop turn, and
//! which connections a turn visits ([`Touched`]).
//!
//! Invariant: an I/O thread's latencies reach its [`Shared`] only through [`publish`], at
//! least every [`HOUSEKEEPING_INTERVAL`] and once more when the thread ends (gRPC callers,
//! which are not I/O threads, record into theirs as each answer comes).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ringrpc_protocol::Decoder;

use crate::cli::config::UdpSettings;
use crate::connect::Dialer;
use crate::counters::Counters;
use crate::cpu::CpuSource;
use crate::pattern::Pattern;
use crate::pubsub::deliveries::SeqBits;
use crate::pubsub::publication::PubsubPlan;

/// Bytes asked of each read.
const READ_SIZE: usize = 64 * 1024;
/// How often timeouts are checked and latencies published for the progress line.
pub(crate) const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(10);

/// What every worker needs to know about the run; shared read-only.
#[derive(Debug)]
pub(crate) struct Plan {
    pub per_conn: usize,
    /// What one unit of load is.
    pub pattern: Pattern,
    pub method: Bytes,
    pub payload_len: usize,
    pub timeout: Duration,
    /// Requests sent from here on are measured.
    pub measure_start: Instant,
    /// No request is sent from here on; outstanding ones are drained.
    pub deadline: Instant,
    /// Whatever is still outstanding now has timed out.
    pub drain_deadline: Instant,
    /// How threads read their own CPU time; `None` when /proc is unreadable.
    pub cpu_source: Option<CpuSource>,
    /// Reflected Request frames count as answers.
    pub reflect: bool,
    /// Retry settings of `--transport udp`.
    pub udp: Option<UdpSettings>,
    /// `--pattern pubsub`: the topic and the clock publications carry.
    pub pubsub: Option<PubsubPlan>,
    /// `--reconnect-every`: calls per connection before a new one takes its place.
    pub reconnect_every: Option<u64>,
    /// Opens the new connections of `--reconnect-every`.
    pub dialer: Option<Dialer>,
}

/// What a worker publishes while running, for the progress line and the final merge.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Frames received in every phase.
    pub frames: AtomicU64,
    /// Measured latencies (ns) published so far.
    pub latencies: Mutex<Histogram<u64>>,
}

impl Shared {
    pub(crate) fn new(empty: Histogram<u64>) -> Shared {
        Shared {
            frames: AtomicU64::new(0),
            latencies: Mutex::new(empty),
        }
    }
}

/// Per-thread scratch and tallies the connections write into.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub counters: Counters,
    /// Latencies recorded since the last publish.
    pub latencies: Histogram<u64>,
    pub frames_received: u64,
    pub decoder: Decoder,
    pub read_buf: Vec<u8>,
    pub payload_buf: Vec<u8>,
    /// `--pattern pubsub`, per publisher (connection id): the measured publishes answered OK.
    pub published_ok: Vec<SeqBits>,
}

impl WorkerState {
    pub(crate) fn new(plan: &Plan, shared: &Shared) -> WorkerState {
        let empty = shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        WorkerState {
            counters: Counters::default(),
            latencies: empty,
            frames_received: 0,
            decoder: Decoder::default(),
            read_buf: vec![0; READ_SIZE],
            payload_buf: vec![0; plan.payload_len],
            published_ok: Vec::new(),
        }
    }
}

/// What a worker thread returns.
#[derive(Debug)]
pub(crate) struct WorkerOutput {
    pub counters: Counters,
    /// This thread's CPU time in the measured window; `None` when unreadable.
    pub cpu_in_window: Option<Duration>,
    /// `--pattern pubsub`: [`WorkerState::published_ok`].
    pub published_ok: Vec<SeqBits>,
}

/// What [`end_of_turn`] needs of a connection, whatever its transport.
pub(crate) trait RequestWindow {
    /// Counts requests unanswered for `plan.timeout` as timeouts and frees their slots.
    fn expire(&mut self, now: Instant, plan: &Plan, state: &mut WorkerState);
    /// At the end of the drain: whatever is still unanswered timed out.
    fn expire_all(&mut self, state: &mut WorkerState);
    /// Failed, or past the deadline with nothing left to wait for.
    fn is_done(&self, now: Instant, plan: &Plan) -> bool;
}

/// The bookkeeping every I/O engine does at the end of a loop turn: at the drain deadline
/// whatever is outstanding times out; every [`HOUSEKEEPING_INTERVAL`] timeouts are expired and
/// latencies published. Returns whether the worker is finished.
pub(crate) fn end_of_turn<C: RequestWindow>(
    conns: &mut [C],
    now: Instant,
    plan: &Plan,
    state: &mut WorkerState,
    shared: &Shared,
    next_housekeeping: &mut Instant,
) -> bool {
    if now >= plan.drain_deadline {
        conns.iter_mut().for_each(|c| c.expire_all(state));
        return true;
    }
    if now >= *next_housekeeping {
        conns.iter_mut().for_each(|c| c.expire(now, plan, state));
        publish(state, shared);
        *next_housekeeping = now + HOUSEKEEPING_INTERVAL;
    }
    conns.iter().all(|c| c.is_done(now, plan))
}

/// The latest instant a worker may sleep until: the next housekeeping, the drain deadline,
/// or a phase edge (measurement start, deadline) still ahead of `now`.
pub(crate) fn next_wake(plan: &Plan, now: Instant, next_housekeeping: Instant) -> Instant {
    let mut wake_at = next_housekeeping.min(plan.drain_deadline);
    for edge in [plan.measure_start, plan.deadline] {
        if now < edge {
            wake_at = wake_at.min(edge);
        }
    }
    wake_at
}

pub(crate) fn publish(state: &mut WorkerState, shared: &Shared) {
    shared
        .frames
        .store(state.frames_received, Ordering::Relaxed);
    if state.latencies.is_empty() {
        return;
    }
    let mut published = shared.latencies.lock().unwrap_or_else(|e| e.into_inner());
    published
        .add(&state.latencies)
        .expect("worker and shared histograms are built with the same bounds");
    state.latencies.reset();
}

/// The connections to visit next turn, each once (the io_uring and epoll drivers').
pub(crate) struct Touched {
    list: Vec<usize>,
    marked: Vec<bool>,
}

impl Touched {
    /// Every one of `n` connections marked.
    pub(crate) fn all(n: usize) -> Touched {
        Touched {
            list: (0..n).collect(),
            marked: vec![true; n],
        }
    }

    pub(crate) fn mark(&mut self, i: usize) {
        if !std::mem::replace(&mut self.marked[i], true) {
            self.list.push(i);
        }
    }

    /// Moves the marked connections (every one with `all`: requests go out on a clock, or
    /// housekeeping may have freed window slots), in the order marked, into `into` (emptied
    /// first; its storage becomes the next turn's list) and unmarks them.
    pub(crate) fn take(&mut self, all: bool, into: &mut Vec<usize>) {
        if all {
            for i in 0..self.marked.len() {
                self.mark(i);
            }
        }
        into.clear();
        std::mem::swap(&mut self.list, into);
        for &i in into.iter() {
            self.marked[i] = false;
        }
    }
}
