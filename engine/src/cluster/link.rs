//! The publish path's end of the NATS bridge (see `bridge`): what `PubSub`, the server
//! handle and the metrics hold of it — a bounded queue to the bridge thread, its counters,
//! and the topics whose local interest changed. A leaf, so the publish path and the
//! metrics reach the bridge without importing it.
//!
//! Invariants: nothing here blocks — a message the queue cannot take now, or any while NATS
//! is disconnected, is dropped and counted; counters are relaxed atomics read only for
//! reports.

use std::fmt;

use crate::cluster::BridgeStats;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

/// What the publish path hands to the bridge.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Arpc topic bytes for every subscriber of the topic `name`.
    Publish { name: Bytes, topic: Bytes },
    /// Arpc topic bytes for one subscriber of the topic `name`.
    PublishToOne { name: Bytes, topic: Bytes },
    /// A broadcast Notify.
    Broadcast { method: Bytes, payload: Bytes },
}

/// The bridge's counters, written by its thread and the publish path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connected: AtomicBool,
    pub(crate) ever_connected: AtomicBool,
    pub(crate) forwarded: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped_outbound: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) ignored_own: AtomicU64,
    pub(crate) tasks: AtomicUsize,
}

/// The publish path's end of the bridge, shared by `PubSub` and the server handle.
pub(crate) struct BridgeLink {
    pub(crate) node_id: u64,
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) counters: Counters,
    /// Topics whose local interest changed (first subscriber came or last one left).
    pub(crate) interest: Mutex<Vec<Bytes>>,
    pub(crate) wake: Notify,
}

impl fmt::Debug for BridgeLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeLink")
            .field("stats", &self.stats())
            .finish()
    }
}

impl BridgeLink {
    /// Hands `msg` to the bridge without blocking; counts it as dropped when NATS is
    /// disconnected or the queue is full.
    pub(crate) fn forward(&self, msg: Outbound) {
        if !self.counters.connected.load(Ordering::Acquire) || self.tx.try_send(msg).is_err() {
            self.counters
                .dropped_outbound
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes that `name` gained its first or lost its last local subscriber.
    pub(crate) fn interest_changed(&self, names: &mut Vec<Bytes>) {
        if names.is_empty() {
            return;
        }
        self.interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(names);
        self.wake.notify_one();
    }

    pub(crate) fn stats(&self) -> BridgeStats {
        let c = &self.counters;
        BridgeStats {
            node_id: self.node_id,
            connected: c.connected.load(Ordering::Acquire),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped_outbound: c.dropped_outbound.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            ignored_own: c.ignored_own.load(Ordering::Relaxed),
            tasks: c.tasks.load(Ordering::Relaxed),
        }
    }
}
