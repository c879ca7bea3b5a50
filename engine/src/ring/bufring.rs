//! The provided-buffer ring that multishot recv fills (kernel ≥ 5.19).
//!
//! Invariants: a buffer id is either owned by the kernel (published in the ring) or lent to
//! exactly one completion being processed; [`BufRing::recycle`] hands it back to the kernel.
//! The ring memory and the buffers live until the `BufRing` is dropped, which must happen
//! after the io_uring that registered it has no recv in flight.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// Page alignment the kernel requires for the ring entries.
const RING_ALIGN: usize = 4096;

/// A registered ring of `count` receive buffers of `size` bytes each.
#[derive(Debug)]
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    buffers: Box<[u8]>,
    buf_size: usize,
    mask: u16,
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocates the entries and buffers and publishes every buffer to the kernel-visible
    /// ring. Registration with io_uring is the caller's next step (see `Ring::new`).
    pub(super) fn new(count: u16, buf_size: usize, bgid: u16) -> BufRing {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
        let entries_layout =
            Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), RING_ALIGN)
                .expect("buffer ring layout");
        // SAFETY: the layout has non-zero size (count >= 1). The allocation is owned by this
        // struct and freed in Drop with the same layout.
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            std::alloc::handle_alloc_error(entries_layout);
        }
        let mut ring = BufRing {
            entries,
            entries_layout,
            buffers: vec![0u8; count as usize * buf_size].into_boxed_slice(),
            buf_size,
            mask: count - 1,
            tail: 0,
            bgid,
        };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
        ring
    }

    /// Address of the entries array, for registration.
    pub(super) fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// Number of entries.
    pub(super) fn count(&self) -> u16 {
        self.mask + 1
    }

    /// Buffer group id the recvs select from.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// The `len` bytes the kernel wrote into buffer `bid`.
    ///
    /// Panics if `bid` or `len` is outside the ring, which would mean a kernel or bookkeeping
    /// bug, never network input.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.buf_size;
        assert!(
            len <= self.buf_size,
            "completion length {len} exceeds buffer size"
        );
        &self.buffers[start..start + len]
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & self.mask) as usize;
        let addr = self.buffers[bid as usize * self.buf_size..].as_ptr() as u64;
        // SAFETY: `idx < count`, so the entry lies inside our allocation. The kernel reads
        // entries only between the old and new published tail, and this one is beyond the
        // published tail until `publish` runs, so nobody else accesses it now.
        let entry = unsafe { &mut *self.entries.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's reserved field inside our allocation;
        // it is only ever accessed atomically, and the kernel only reads it.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout and not freed elsewhere.
        unsafe { dealloc(self.entries.cast(), self.entries_layout) };
    }
}
