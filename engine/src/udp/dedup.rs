//! Duplicate suppression for datagram requests: a bounded, time-windowed map from
//! `(peer, seq)` to what the request got, so a retried request is answered from here and
//! its handler never runs twice.
//!
//! Invariants: at most `capacity` entries in all and `per_peer` per peer (a request past
//! either limit is refused, not cached, and nothing is evicted early to make room — so an
//! entry inside its window always suppresses its duplicates); entries leave in insertion
//! order once older than `window` (the FIFO is time-ordered, so expiry costs O(expired)).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What a request `(peer, seq)` has got so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Its handler is running (or answers later through a responder).
    InProgress,
    /// Its Response, to resend to a retry.
    Answered(Bytes),
}

/// What to do with an arriving request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// New: run it.
    Run,
    /// A retry of one still running: drop it (the answer goes out when ready).
    Running,
    /// A retry of one answered: resend this.
    Resend(Bytes),
    /// The cache or the peer's share of it is full: refuse it.
    Full,
}

/// The cache.
#[derive(Debug)]
pub(crate) struct Dedup {
    entries: HashMap<(SocketAddr, u64), Seen>,
    order: VecDeque<(Instant, SocketAddr, u64)>,
    per_peer: HashMap<SocketAddr, usize>,
    window: Duration,
    capacity: usize,
    per_peer_limit: usize,
}

impl Dedup {
    pub(crate) fn new(window: Duration, capacity: usize, per_peer_limit: usize) -> Dedup {
        Dedup {
            entries: HashMap::new(),
            order: VecDeque::new(),
            per_peer: HashMap::new(),
            window,
            capacity,
            per_peer_limit,
        }
    }

    /// Looks up a request arriving at `now`; a new one is recorded as running.
    pub(crate) fn admit(&mut self, now: Instant, peer: SocketAddr, seq: u64) -> Admit {
        self.expire(now);
        if let Some(seen) = self.entries.get(&(peer, seq)) {
            return match seen {
                Seen::InProgress => Admit::Running,
                Seen::Answered(bytes) => Admit::Resend(bytes.clone()),
            };
        }
        let held = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.entries.len() >= self.capacity || held >= self.per_peer_limit {
            return Admit::Full;
        }
        self.entries.insert((peer, seq), Seen::InProgress);
        self.order.push_back((now, peer, seq));
        *self.per_peer.entry(peer).or_default() += 1;
        Admit::Run
    }

    /// Records the Response a request got (ignored if its entry already expired).
    pub(crate) fn answered(&mut self, peer: SocketAddr, seq: u64, response: Bytes) {
        if let Some(seen) = self.entries.get_mut(&(peer, seq)) {
            *seen = Seen::Answered(response);
        }
    }

    /// Drops the entries older than the window.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, peer, seq)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&(peer, seq));
            if let Entry::Occupied(mut held) = self.per_peer.entry(peer) {
                *held.get_mut() -= 1;
                if *held.get() == 0 {
                    held.remove();
                }
            }
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// When the oldest entry expires, if any.
    #[cfg(test)]
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _, _)| *at + self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_retry_is_dropped_while_running_and_answered_from_the_cache_after() {
        let t = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(5), 100, 10);
        assert_eq!(d.admit(t, addr(1), 7), Admit::Run);
        assert_eq!(d.admit(t, addr(1), 7), Admit::Running);
        // Another peer's seq 7 is another request.
        assert_eq!(d.admit(t, addr(2), 7), Admit::Run);
        d.answered(addr(1), 7, Bytes::from_static(b"answer"));
        assert_eq!(
            d.admit(t, addr(1), 7),
            Admit::Resend(Bytes::from_static(b"answer"))
        );
    }

    #[test]
    fn entries_expire_after_the_window_in_order() {
        let t = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(5), 100, 10);
        d.admit(t, addr(1), 1);
        d.admit(t + Duration::from_secs(2), addr(1), 2);
        assert_eq!(d.next_expiry(), Some(t + Duration::from_secs(5)));
        d.expire(t + Duration::from_secs(5));
        assert_eq!(d.len(), 1);
        // Expired: a late retry runs again (the window must exceed the callers' retries).
        assert_eq!(d.admit(t + Duration::from_secs(6), addr(1), 1), Admit::Run);
        d.expire(t + Duration::from_secs(60));
        assert_eq!(d.len(), 0);
        assert!(d.per_peer.is_empty());
    }

    #[test]
    fn a_flood_of_distinct_seqs_stays_within_the_limits() {
        let t = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(5), 1000, 100);
        let mut refused = 0;
        for seq in 0..100_000u64 {
            if d.admit(t, addr(1), seq) == Admit::Full {
                refused += 1;
            }
        }
        assert_eq!(d.len(), 100);
        assert_eq!(refused, 100_000 - 100);
        // Other peers still get their share, up to the total.
        for port in 2..100 {
            for seq in 0..100u64 {
                d.admit(t, addr(port), seq);
            }
        }
        assert_eq!(d.len(), 1000);
    }
}
