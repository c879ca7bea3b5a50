//! Duplicate suppression for datagram requests: a bounded, time-windowed map from
//! `(peer, seq)` to what the request got, so a retried request is answered from here and
//! its handler never runs twice.
//!
//! Invariants:
//! - At most `capacity` entries; when full, the oldest entry is evicted to make room, and
//!   entries older than `window` leave in arrival order (the FIFO is time-ordered, so both
//!   cost O(evicted)). Memory is bounded whatever peers send.
//! - At most once, even past eviction: each peer has a `floor`, raised past every seq
//!   evicted for it, and a request below its peer's floor is refused as stale instead of
//!   run again. Peers are expected to number calls upwards (as every arpc client does); a
//!   request reordered behind a newer one that was already evicted is refused too.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What a request `(peer, seq)` has got so far.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
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
    /// Older than anything kept for this peer: it ran (or was overtaken) long ago; drop it.
    Stale,
}

/// The cache.
#[derive(Debug)]
pub(crate) struct Dedup {
    entries: HashMap<(SocketAddr, u64), Seen>,
    order: VecDeque<(Instant, SocketAddr, u64)>,
    /// Per peer, the lowest seq still admitted.
    floors: HashMap<SocketAddr, u64>,
    window: Duration,
    capacity: usize,
    evicted: u64,
}

impl Dedup {
    pub(crate) fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup {
            entries: HashMap::default(),
            order: VecDeque::new(),
            floors: HashMap::default(),
            window,
            capacity: capacity.max(1),
            evicted: 0,
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
        if self.floors.get(&peer).is_some_and(|floor| seq < *floor) {
            return Admit::Stale;
        }
        if self.entries.len() >= self.capacity {
            self.evict_oldest();
        }
        self.entries.insert((peer, seq), Seen::InProgress);
        self.order.push_back((now, peer, seq));
        Admit::Run
    }

    /// Records the Response a request got (ignored if its entry was already evicted).
    pub(crate) fn answered(&mut self, peer: SocketAddr, seq: u64, response: Bytes) {
        if let Some(seen) = self.entries.get_mut(&(peer, seq)) {
            *seen = Seen::Answered(response);
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, peer, seq)) = self.order.pop_front() {
            self.entries.remove(&(peer, seq));
            let floor = self.floors.entry(peer).or_default();
            *floor = (*floor).max(seq.saturating_add(1));
            self.evicted += 1;
        }
    }

    /// Drops the entries older than the window.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, _, _)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.evict_oldest();
        }
    }

    /// Forgets `peer`'s floor (it has been quiet for longer than the window).
    pub(crate) fn forget(&mut self, peer: &SocketAddr) {
        self.floors.remove(peer);
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries evicted so far (by age or to make room).
    #[cfg(test)]
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
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
        let mut d = Dedup::new(Duration::from_secs(5), 100);
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
    fn expired_entries_leave_and_their_retries_are_stale_not_run_again() {
        let t = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(5), 100);
        d.admit(t, addr(1), 1);
        d.admit(t + Duration::from_secs(2), addr(1), 2);
        d.expire(t + Duration::from_secs(5));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.admit(t + Duration::from_secs(6), addr(1), 1),
            Admit::Stale
        );
        // Newer seqs still run.
        assert_eq!(d.admit(t + Duration::from_secs(6), addr(1), 3), Admit::Run);
        d.forget(&addr(1));
        assert_eq!(d.admit(t + Duration::from_secs(6), addr(1), 1), Admit::Run);
    }

    #[test]
    fn a_flood_of_distinct_seqs_stays_within_capacity_and_runs_each_once() {
        let t = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(5), 1000);
        for seq in 0..100_000u64 {
            assert_eq!(d.admit(t, addr(1), seq), Admit::Run);
            assert!(d.len() <= 1000);
        }
        assert_eq!(d.evicted(), 99_000);
        // Every evicted one is refused on retry, every kept one answered from the cache.
        assert_eq!(d.admit(t, addr(1), 5), Admit::Stale);
        assert_eq!(d.admit(t, addr(1), 99_999), Admit::Running);
        // Another peer is unaffected by the first one's floor.
        assert_eq!(d.admit(t, addr(2), 5), Admit::Run);
    }
}
