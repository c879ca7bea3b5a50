//! The reactor's deadlines: typed timer ids in one min-heap, so each loop turn waits exactly
//! until the earliest deadline instead of sweeping every connection periodically.
//!
//! Invariants: an entry whose owner moved on (a call answered, a stream ended, a connection
//! closed or re-scheduled) is left in place and recognised as stale when it comes due, so
//! scheduling and cancelling are O(log n) and O(1). Stale entries never pile up: once the
//! heap holds twice what its last compaction kept (and at least [`MIN_COMPACT`] entries),
//! the next loop turn drops every entry whose owner no longer wants it
//! ([`Reactor::compact_deadlines`]) and rebuilds the heap, O(n) after at least n/2
//! schedules. Live entries are at most one per connection (`schedule_conn_timer` keeps the
//! earliest), one per pending call (stream or datagram) and one per timed stream, plus a
//! few for the core itself; so the heap holds at most about twice the most timers live at
//! once (at least [`MIN_COMPACT`]), whatever the call rate and timeouts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::Reactor;

/// Entries the heap may hold before its first compaction (and below which it is never
/// compacted): 1024 × 40 B.
pub(crate) const MIN_COMPACT: usize = 1024;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerId {
    /// Log this core's throughput.
    Stats,
    /// Accepting paused after running out of descriptors: try again.
    AcceptRetry,
    /// Shutdown grace expired: close what is left.
    DrainGrace,
    /// The shutdown delay ended: begin the drain.
    ShutdownDelay,
    /// Re-arming the wake-up read failed: try again.
    WakeRetry,
    /// A connection's own timer (idle, read or linger check, keepalive): slot and serial.
    Conn { slot: u32, serial: u64 },
    /// A call to a peer may have timed out: slot, serial and the call's seq.
    Call { slot: u32, serial: u64, seq: u64 },
    /// The whole-stream timeout of stream `id` opened by this side on a connection.
    Stream { slot: u32, serial: u64, id: u64 },
    /// A datagram call is due for a resend or its timeout.
    UdpCall { seq: u64 },
    /// Forget quiet datagram peers and expired duplicate-suppression entries.
    UdpSweep,
}

/// A min-heap of `(deadline, timer)`.
#[derive(Debug)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    /// The heap is compacted once it holds this many: twice what the last compaction kept.
    compact_at: usize,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            compact_at: MIN_COMPACT,
        }
    }
}

impl Deadlines {
    /// Schedules `id` at `at` (stale duplicates are filtered by the owner when due).
    pub(crate) fn schedule(&mut self, at: Instant, id: TimerId) {
        self.heap.push(Reverse((at, id)));
    }

    /// How long to wait from `now` for the earliest deadline (zero if one is due), or `None`
    /// with nothing scheduled.
    pub(crate) fn wait_from(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Takes the next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether stale entries may now outnumber live ones: the heap holds twice what the
    /// last compaction kept.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.heap.len() >= self.compact_at
    }

    /// Keeps only the entries `live` accepts, in a rebuilt heap whose spare room is what it
    /// may hold until the next compaction.
    pub(crate) fn compact(&mut self, mut live: impl FnMut(Instant, TimerId) -> bool) {
        self.heap.retain(|Reverse((at, id))| live(*at, *id));
        self.compact_at = (2 * self.heap.len()).max(MIN_COMPACT);
        self.heap.shrink_to(self.compact_at);
    }
}

impl Reactor {
    /// Drops the deadline entries whose owners moved on, once they may outnumber the live
    /// ones (see the module doc). An entry is live when its owner would act on it when due.
    pub(super) fn compact_deadlines(&mut self) {
        if !self.deadlines.wants_compaction() {
            return;
        }
        let (conns, udp) = (&self.conns, &self.udp);
        let slot = |idx: u32, serial: u64| conns.get(idx as usize).filter(|s| s.serial() == serial);
        self.deadlines.compact(|at, id| match id {
            TimerId::Conn { slot: idx, serial } => {
                slot(idx, serial).is_some_and(|s| s.timer_at == Some(at))
            }
            TimerId::Call {
                slot: idx,
                serial,
                seq,
            } => slot(idx, serial).is_some_and(|s| s.conn.session.has_call(seq)),
            TimerId::Stream {
                slot: idx,
                serial,
                id,
            } => slot(idx, serial).is_some_and(|s| s.conn.session.streams.is_open((true, id))),
            TimerId::UdpCall { seq } => udp.as_ref().is_some_and(|u| u.core.has_call(seq)),
            // One at a time, each for the core itself.
            TimerId::Stats
            | TimerId::AcceptRetry
            | TimerId::DrainGrace
            | TimerId::ShutdownDelay
            | TimerId::WakeRetry
            | TimerId::UdpSweep => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls answered soon after they start, each with a timeout far beyond the test, as the
    /// reactor sees them: one schedule per call, and a compaction at the end of any loop
    /// turn that wants one. The heap stays near the calls pending, not the calls made.
    #[test]
    fn many_short_calls_with_long_timeouts_leave_the_heap_bounded() {
        let base = Instant::now();
        let mut d = Deadlines::default();
        let mut pending = std::collections::BTreeSet::new();
        let mut most = 0;
        for seq in 0..200_000u64 {
            let timer = TimerId::Call {
                slot: 3,
                serial: 1,
                seq,
            };
            d.schedule(base + Duration::from_secs(3600), timer);
            pending.insert(seq);
            // 100 in flight: each call is answered 100 calls later.
            if seq >= 100 {
                pending.remove(&(seq - 100));
            }
            if d.wants_compaction() {
                d.compact(
                    |_, id| matches!(id, TimerId::Call { seq, .. } if pending.contains(&seq)),
                );
            }
            most = most.max(d.len());
        }
        assert!(
            most <= MIN_COMPACT,
            "the heap held {most} entries for 100 pending calls"
        );
        // What is left is exactly the pending calls, still in deadline order.
        d.compact(|_, id| matches!(id, TimerId::Call { seq, .. } if pending.contains(&seq)));
        assert_eq!(d.len(), pending.len());
        let later = base + Duration::from_secs(7200);
        let due: Vec<u64> = std::iter::from_fn(|| d.pop_due(later))
            .map(|(_, id)| match id {
                TimerId::Call { seq, .. } => seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(due.len(), 100);
        assert!(due.iter().all(|seq| pending.contains(seq)));
    }

    /// Many live timers: compaction keeps them all and waits for the heap to double again.
    #[test]
    fn compaction_keeps_every_live_entry_and_waits_for_the_heap_to_double() {
        let base = Instant::now();
        let mut d = Deadlines::default();
        for seq in 0..(3 * MIN_COMPACT as u64) {
            d.schedule(base + Duration::from_millis(seq), TimerId::UdpCall { seq });
            if d.wants_compaction() {
                d.compact(|_, _| true);
            }
        }
        assert_eq!(d.len(), 3 * MIN_COMPACT);
        assert!(!d.wants_compaction(), "kept 2048, next at 4096");
        let first = d.pop_due(base).map(|(_, id)| id);
        assert_eq!(first, Some(TimerId::UdpCall { seq: 0 }));
    }

    #[test]
    fn due_timers_come_out_in_deadline_order_and_later_ones_wait() {
        let base = Instant::now();
        let mut d = Deadlines::default();
        d.schedule(base + Duration::from_millis(30), TimerId::Stats);
        d.schedule(base + Duration::from_millis(10), TimerId::AcceptRetry);
        d.schedule(
            base + Duration::from_millis(20),
            TimerId::Conn { slot: 1, serial: 7 },
        );
        assert_eq!(d.wait_from(base), Some(Duration::from_millis(10)));
        let now = base + Duration::from_millis(25);
        let due: Vec<_> = std::iter::from_fn(|| d.pop_due(now).map(|(_, id)| id)).collect();
        assert_eq!(
            due,
            vec![TimerId::AcceptRetry, TimerId::Conn { slot: 1, serial: 7 }]
        );
        assert_eq!(d.wait_from(now), Some(Duration::from_millis(5)));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.wait_from(base + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
    }
}
