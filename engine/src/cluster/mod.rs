//! Clustering: the NATS bridge that carries publications and broadcasts between the nodes
//! of a cluster (`bridge`, on its own thread and tokio runtime), and the publish path's end of
//! it (`link`). Both need the `nats` feature; the bridge's counters ([`BridgeStats`]) and
//! queue size are part of the API either way (with the feature off, no server has a bridge).
//!
//! Invariants: local delivery never waits for NATS (see `bridge`).

#[cfg(feature = "nats")]
pub(crate) mod bridge;
#[cfg(feature = "nats")]
pub(crate) mod link;

/// Messages the publish path may hand to the bridge before further ones are dropped (each
/// costs its payload plus about 64 bytes while queued).
pub const OUTBOUND_CAPACITY: usize = 16_384;

/// The counters of a server's NATS bridge, from
/// [`ServerHandle::bridge_stats`](crate::ServerHandle::bridge_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// This node's id in `Ringrpc-Origin` headers.
    pub node_id: u64,
    /// Whether the bridge is connected to NATS now.
    pub connected: bool,
    /// Messages handed to NATS (publications, publications to one, broadcasts).
    pub forwarded: u64,
    /// Messages received from other nodes (each handed to the local subscribers or
    /// connections it was for, if any).
    pub received: u64,
    /// Messages that could not be forwarded: NATS was disconnected or the bridge's queue
    /// was full.
    pub dropped_outbound: u64,
    /// Times the connection to NATS came back after being lost.
    pub reconnects: u64,
    /// Messages that came back from NATS to their origin node and were ignored (normally 0:
    /// the bridge connects with `no_echo`).
    pub ignored_own: u64,
    /// Tasks the bridge holds now: one per NATS subscription (`ringrpc.pub.*`,
    /// `ringrpc.bcast`, and one per topic with local subscribers, for its publish-to-one
    /// queue group), plus a start-up check for its first two seconds.
    pub tasks: usize,
}
