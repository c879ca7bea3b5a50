//! Prometheus metrics: per-core counters, read while the server runs, served as text on
//! `GET /metrics` (see [`ConfigBuilder::metrics_listen`](crate::ConfigBuilder::metrics_listen)).
//!
//! How the numbers reach a scrape without costing the request path anything shared:
//! - Each reactor counts in its own [`CoreStats`], per-reason close counters and
//!   per-method [`MethodMetrics`] — plain integers only its thread writes.
//! - A scrape (on the metrics thread, never a reactor) bumps each core's request number
//!   and wakes the reactor through its mailbox's eventfd.
//! - At the end of each loop turn a reactor with metrics on compares that request number
//!   with the last it answered (one atomic load per turn, not per request); when they
//!   differ it copies its counters into its [`CoreSlot`]'s snapshot under a mutex only the
//!   scrape also takes, and signals the condition variable.
//! - The scrape waits (at most [`SCRAPE_WAIT`] in all) for every core's fresh snapshot, then
//!   merges them and encodes with `prometheus-client` in the text format 0.0.4. A core that
//!   does not answer in time (a handler blocking its thread) is served from its last
//!   snapshot and counted in `ringrpc_metrics_stale_cores`.
//!
//! Invariants: with metrics off no reactor reads a clock or an atomic for them; label
//! cardinality is bounded (cores, a fixed set of close reasons, registered routes plus
//! `_not_found`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(feature = "metrics")]
use std::time::{Duration, Instant};

#[cfg(feature = "metrics")]
use crate::cluster::BridgeStats;
use crate::observe::core_stats::CoreStats;
use crate::pubsub::PubSub;
#[cfg(feature = "metrics")]
use crate::pubsub::PubSubStats;
use crate::reactor::mailbox::Mailbox;

use crate::observe::closes::ClosedBy;
use crate::observe::methods::{MethodMetrics, MethodStats};

/// How long one scrape waits for the reactors' fresh snapshots, all cores together.
#[cfg(feature = "metrics")]
pub(crate) const SCRAPE_WAIT: Duration = Duration::from_millis(500);

/// What one reactor publishes for a scrape.
#[derive(Clone, Debug, Default)]
pub(crate) struct CoreSnapshot {
    /// The scrape request this answers (0: none yet).
    pub(crate) answered: u64,
    pub(crate) stats: CoreStats,
    /// Connections open now.
    pub(crate) open: u64,
    pub(crate) closed_by: ClosedBy,
    /// By route index, `_not_found` last.
    pub(crate) methods: Vec<MethodStats>,
}

/// One core's mailbox for snapshots.
#[derive(Debug, Default)]
pub(crate) struct CoreSlot {
    /// Bumped by each scrape that wants a fresh snapshot.
    requested: AtomicU64,
    /// Set once the reactor stopped (its last snapshot is final: nobody will answer).
    stopped: AtomicBool,
    snapshot: Mutex<CoreSnapshot>,
    published: Condvar,
}

impl CoreSlot {
    fn lock(&self) -> MutexGuard<'_, CoreSnapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the metrics thread and every reactor of one server share.
#[derive(Debug)]
pub(crate) struct Hub {
    cores: Vec<CoreSlot>,
    /// Route names by index (`_not_found` is implied after them).
    methods: Vec<String>,
    /// What a scrape reads beyond the reactors' snapshots: their mailboxes to wake them,
    /// the pub/sub counters.
    #[cfg(feature = "metrics")]
    mailboxes: Vec<Arc<Mailbox>>,
    #[cfg(feature = "metrics")]
    pubsub: Option<PubSub>,
    /// The NATS bridge, once the server starts one.
    #[cfg(feature = "nats")]
    pub(crate) bridge: std::sync::OnceLock<Arc<crate::cluster::link::BridgeLink>>,
}

impl Hub {
    /// A hub for the reactors behind `mailboxes`, serving `methods` (by route index).
    pub(crate) fn new(
        mailboxes: Vec<Arc<Mailbox>>,
        methods: Vec<String>,
        pubsub: Option<PubSub>,
    ) -> Hub {
        #[cfg(not(feature = "metrics"))]
        let _ = pubsub; // nothing scrapes without the feature
        Hub {
            cores: mailboxes.iter().map(|_| CoreSlot::default()).collect(),
            methods,
            #[cfg(feature = "metrics")]
            mailboxes,
            #[cfg(feature = "metrics")]
            pubsub,
            #[cfg(feature = "nats")]
            bridge: std::sync::OnceLock::new(),
        }
    }

    /// One reactor's publishing side.
    pub(crate) fn core_metrics(self: &Arc<Hub>, core: usize) -> CoreMetrics {
        CoreMetrics {
            hub: self.clone(),
            core,
            answered: 0,
        }
    }

    /// Fresh per-method counters for one reactor (on).
    pub(crate) fn method_metrics(&self) -> MethodMetrics {
        MethodMetrics::new(self.methods.len())
    }

    /// Every core's snapshot, fresh where the reactor answered within [`SCRAPE_WAIT`], and
    /// how many were stale.
    #[cfg(feature = "metrics")]
    pub(crate) fn collect(&self) -> (Vec<CoreSnapshot>, usize) {
        let wanted: Vec<u64> = self
            .cores
            .iter()
            .zip(&self.mailboxes)
            .map(|(slot, mailbox)| {
                let n = slot.requested.fetch_add(1, Ordering::AcqRel) + 1;
                mailbox.wake();
                n
            })
            .collect();
        let deadline = Instant::now() + SCRAPE_WAIT;
        let mut stale = 0;
        let snapshots = self
            .cores
            .iter()
            .zip(wanted)
            .map(|(slot, want)| {
                let mut snap = slot.lock();
                while snap.answered < want && !slot.stopped.load(Ordering::Acquire) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        stale += 1;
                        break;
                    }
                    snap = slot
                        .published
                        .wait_timeout(snap, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                snap.clone()
            })
            .collect();
        (snapshots, stale)
    }

    /// Everything one scrape reports: every core's snapshot (see [`Hub::collect`]), the
    /// route names, and the pub/sub and NATS bridge counters when there are some.
    #[cfg(feature = "metrics")]
    pub(crate) fn scrape(&self) -> Scrape<'_> {
        let (cores, stale) = self.collect();
        Scrape {
            cores,
            stale,
            methods: &self.methods,
            pubsub: self.pubsub.as_ref().map(PubSub::stats),
            #[cfg(feature = "nats")]
            bridge: self.bridge.get().map(|b| b.stats()),
            #[cfg(not(feature = "nats"))]
            bridge: None,
        }
    }
}

/// One scrape's numbers, ready to encode.
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct Scrape<'a> {
    /// Every core's snapshot, in core order.
    pub(crate) cores: Vec<CoreSnapshot>,
    /// Cores served from their last snapshot (they did not answer in time).
    pub(crate) stale: usize,
    /// Route names by index (`_not_found` is implied after them).
    pub(crate) methods: &'a [String],
    pub(crate) pubsub: Option<PubSubStats>,
    pub(crate) bridge: Option<BridgeStats>,
}

/// A reactor's side: what it counts beyond [`CoreStats`] and how it publishes.
#[derive(Debug)]
pub(crate) struct CoreMetrics {
    hub: Arc<Hub>,
    core: usize,
    /// The last scrape request published.
    answered: u64,
}

/// What a reactor publishes, borrowed from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Published<'a> {
    pub(crate) stats: &'a CoreStats,
    /// Connections open now.
    pub(crate) open: u64,
    pub(crate) closed_by: &'a ClosedBy,
    pub(crate) methods: &'a MethodMetrics,
}

impl CoreMetrics {
    /// Whether a scrape waits for a fresh snapshot (one atomic load; call once per loop
    /// turn).
    #[inline]
    pub(crate) fn wanted(&self) -> Option<u64> {
        let want = self.hub.cores[self.core].requested.load(Ordering::Acquire);
        (want != self.answered).then_some(want)
    }

    /// Publishes a snapshot answering scrape request `want`.
    pub(crate) fn publish(&mut self, want: u64, now: Published<'_>) {
        self.publish_inner(want, now, false);
    }

    /// Publishes the final snapshot: the reactor stops and answers no more scrapes.
    pub(crate) fn publish_final(&mut self, now: Published<'_>) {
        let want = self.hub.cores[self.core].requested.load(Ordering::Acquire);
        self.publish_inner(want, now, true);
    }

    fn publish_inner(&mut self, want: u64, now: Published<'_>, last: bool) {
        self.answered = want;
        let slot = &self.hub.cores[self.core];
        {
            let mut snap = slot.lock();
            snap.answered = want;
            snap.stats = *now.stats;
            snap.open = now.open;
            snap.closed_by = *now.closed_by;
            snap.methods.clear();
            snap.methods.extend_from_slice(now.methods.stats());
            if last {
                // Under the lock, so a scrape checking it before waiting cannot miss it.
                slot.stopped.store(true, Ordering::Release);
            }
        }
        slot.published.notify_all();
    }
}
