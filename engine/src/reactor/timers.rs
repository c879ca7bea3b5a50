//! The reactor's deadlines: typed timer ids in one min-heap, so each loop turn waits exactly
//! until the earliest deadline instead of sweeping every connection periodically.
//!
//! Invariants: entries are never removed early — an entry whose owner moved on (a call
//! answered, a connection closed or re-scheduled) is recognised as stale when it comes due
//! and ignored, so scheduling and cancelling are O(log n) and O(1); the heap holds at most
//! one live entry per connection (`Reactor::schedule_conn_timer` keeps the earliest) plus
//! one per pending call, so its size is bounded by what the reactor already holds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

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
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
