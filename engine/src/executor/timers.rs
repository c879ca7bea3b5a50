//! One reactor's timers for tasks (`time::sleep`, `time::timeout`): a min-heap of
//! deadlines over a slab of live entries.
//!
//! Invariants: a timer is cancelled by removing its slab entry (O(1)); its heap entry goes
//! stale and is skipped when it reaches the top, and the heap is rebuilt from the live
//! entries whenever stale ones outnumber them (past a small floor), so its size stays
//! within twice the live timers plus that floor, whatever the rate of cancellations;
//! wakers are returned, never called, while the timers are borrowed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::Waker;
use std::time::Instant;

use slab::Slab;

/// Stale heap entries tolerated before a rebuild is considered.
const STALE_FLOOR: usize = 64;

/// Names one timer: its slab key and the generation it was armed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: usize,
    generation: u64,
}

struct Entry {
    deadline: Instant,
    generation: u64,
    waker: Waker,
}

/// A reactor's task timers (see the module docs).
#[derive(Default)]
pub(crate) struct Timers {
    live: Slab<Entry>,
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_generation: u64,
}

impl Timers {
    /// Arms a timer that wakes `waker` at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        self.next_generation += 1;
        let generation = self.next_generation;
        let index = self.live.insert(Entry {
            deadline,
            generation,
            waker,
        });
        self.heap.push(Reverse((deadline, index, generation)));
        TimerKey { index, generation }
    }

    /// Whether timer `key` is still armed (it has not fired and was not removed).
    pub(crate) fn is_armed(&self, key: TimerKey) -> bool {
        self.live
            .get(key.index)
            .is_some_and(|e| e.generation == key.generation)
    }

    /// Replaces the waker of timer `key`, if it is still armed and the waker differs.
    pub(crate) fn set_waker(&mut self, key: TimerKey, waker: &Waker) {
        if let Some(entry) = self.live.get_mut(key.index) {
            if entry.generation == key.generation && !entry.waker.will_wake(waker) {
                entry.waker = waker.clone();
            }
        }
    }

    /// Disarms timer `key` (nothing if it fired already).
    pub(crate) fn remove(&mut self, key: TimerKey) {
        if self.is_armed(key) {
            self.live.remove(key.index);
            self.compact_if_stale();
        }
    }

    /// The earliest deadline of an armed timer.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Disarms every timer due at `now` and returns their wakers.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, index, generation))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self
                .live
                .get(index)
                .is_some_and(|e| e.generation == generation)
            {
                due.push(self.live.remove(index).waker);
            }
        }
        due
    }

    /// Armed timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Heap entries, stale ones included.
    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn drop_stale_top(&mut self) {
        while let Some(&Reverse((_, index, generation))) = self.heap.peek() {
            if self
                .live
                .get(index)
                .is_some_and(|e| e.generation == generation)
            {
                return;
            }
            self.heap.pop();
        }
    }

    fn compact_if_stale(&mut self) {
        let stale = self.heap.len() - self.live.len();
        if stale > STALE_FLOOR && stale > self.live.len() {
            self.heap = self
                .live
                .iter()
                .map(|(index, e)| Reverse((e.deadline, index, e.generation)))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn noop() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn due_timers_fire_in_order_and_removed_ones_never() {
        let base = Instant::now();
        let mut t = Timers::default();
        let a = t.insert(base + Duration::from_millis(30), noop());
        let b = t.insert(base + Duration::from_millis(10), noop());
        let c = t.insert(base + Duration::from_millis(20), noop());
        t.remove(b);
        assert_eq!(t.next_deadline(), Some(base + Duration::from_millis(20)));
        assert_eq!(t.take_due(base + Duration::from_millis(25)).len(), 1);
        assert!(!t.is_armed(c) && t.is_armed(a));
        t.remove(c); // already fired: nothing happens
        assert_eq!(t.len(), 1);
    }

    /// Many timers armed and cancelled before they come due (timeouts that did not fire)
    /// leave the heap bounded by the live ones, not by how many were ever armed.
    #[test]
    fn cancelled_timers_do_not_pile_up() {
        let base = Instant::now() + Duration::from_secs(3600);
        let mut t = Timers::default();
        let keep: Vec<_> = (0..10)
            .map(|i| t.insert(base + Duration::from_secs(i), noop()))
            .collect();
        for i in 0..100_000 {
            let k = t.insert(base + Duration::from_millis(i), noop());
            t.remove(k);
        }
        assert_eq!(t.len(), 10);
        assert!(
            t.heap_len() <= 2 * t.len() + STALE_FLOOR + 1,
            "{}",
            t.heap_len()
        );
        assert!(keep.iter().all(|k| t.is_armed(*k)));
        assert_eq!(t.next_deadline(), Some(base));
    }
}
