//! What the request windows of every transport share (a TCP or WebSocket [`Connection`] and a
//! UDP socket alike): open-loop send times, the hasher of the seq-keyed table of outstanding
//! requests, and how long a timed-out request is remembered.
//!
//! [`Connection`]: crate::conn::Connection

use std::hash::Hasher;
use std::time::{Duration, Instant};

/// Timed-out requests are forgotten this many timeouts after they were sent, bounding memory
/// against a server that never answers; an answer after that counts as unexpected.
pub(crate) const FORGET_AFTER_TIMEOUTS: u32 = 10;

/// Hashes our own sequence numbers: they are not attacker-chosen, so SipHash's protection
/// buys nothing, and a multiplicative hash spreads consecutive seqs over every bit.
#[derive(Debug, Default)]
pub(crate) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, seq: u64) {
        self.0 = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Open-loop sending times of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Intended send time of the next request; latency is measured from it, so a stalled
    /// server cannot hide its stall by delaying our sends (coordinated omission).
    pub next: Instant,
    pub interval: Duration,
}
