//! The provided-buffer ring that multishot recv fills (kernel ≥ 5.19), and [`RecvBuf`], the
//! handle to one buffer the kernel has filled.
//!
//! Invariants:
//! - Each buffer id is at any moment either owned by the kernel (published in the ring, the
//!   kernel may write into it) or owned by exactly one [`RecvBuf`]. A `RecvBuf` is created only
//!   from a completion whose flags say the kernel selected that buffer id — the kernel then
//!   consumed the ring entry and will not write the buffer again until we publish it anew —
//!   and the id is published again only by that `RecvBuf`'s `Drop`, which runs at most once.
//!   `RecvBuf` is not `Clone`, so safe code can neither read a buffer the kernel owns nor
//!   recycle one twice. (`mem::forget` of a `RecvBuf` loses that buffer for good; never unsound.)
//! - The entries and the buffers are raw allocations, never behind a `&`/`&mut` to the whole
//!   area, so the kernel writing one buffer does not alias a Rust reference to another.
//! - No reference to an entry ever exists. The ring's tail, which the kernel reads whenever it
//!   looks for a buffer, overlays entry 0's last field (`struct io_uring_buf_ring`), so an
//!   entry is written field by field through raw pointers ([`Entry`]), and the tail is touched
//!   only atomically (a `&AtomicU16` to those two bytes alone, never a `&mut` covering them).
//! - Buffers `0..published` have been handed to the kernel; the rest were never touched (so
//!   they cost address space, not memory) until [`BufRing::grow`] publishes them. Starting
//!   small keeps the buffers that cycle few and warm in the cache: the kernel takes them in
//!   ring order, so every published buffer is reused before any is reused twice.
//! - The memory is freed when the last `Rc<BufRing>` goes: the [`Ring`](crate::Ring) holds one
//!   (and leaks it if the kernel may still write) and every `RecvBuf` holds one.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// One entry of the ring as the kernel lays it out (`struct io_uring_buf`), written only field
/// by field through raw pointers: entry 0's `resv` is the ring's tail, which the kernel reads
/// at any time.
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    /// Entry 0's is the ring's tail; the others' are unused.
    resv: u16,
}

// The layout io_uring's own binding of the entry has (and the kernel's, 16 bytes).
const _: () = assert!(size_of::<Entry>() == size_of::<BufRingEntry>() && size_of::<Entry>() == 16);

/// Page alignment the kernel requires for the ring entries.
const RING_ALIGN: usize = 4096;
/// Buffers published at first; [`BufRing::grow`] doubles that each time recvs run out.
pub(crate) const INITIAL_PUBLISHED: u16 = 64;

/// A ring of `count` receive buffers of `size` bytes each.
pub(crate) struct BufRing {
    entries: *mut Entry,
    entries_layout: Layout,
    buffers: *mut u8,
    buffers_layout: Layout,
    buf_size: usize,
    mask: u16,
    tail: Cell<u16>,
    /// Buffers handed to the kernel so far (`bid < published`).
    published: Cell<u16>,
    bgid: u16,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count())
            .field("buf_size", &self.buf_size)
            .field("published", &self.published.get())
            .field("bgid", &self.bgid)
            .finish()
    }
}

impl BufRing {
    /// Allocates the entries and buffers and publishes the first [`INITIAL_PUBLISHED`] (or
    /// all, if fewer) to the kernel-visible ring. Registration with io_uring is the caller's next step (see `Ring::new`).
    /// `count` must be a power of two ≥ 1 and `buf_size` in `1..=u32::MAX` (checked by the caller).
    pub(crate) fn new(count: u16, buf_size: usize, bgid: u16) -> BufRing {
        debug_assert!(count.is_power_of_two() && buf_size > 0);
        let entries_layout =
            Layout::from_size_align(count as usize * size_of::<Entry>(), RING_ALIGN)
                .expect("buffer ring layout");
        let buffers_layout =
            Layout::from_size_align(count as usize * buf_size, 64).expect("receive buffer layout");
        // SAFETY: the layout has non-zero size (count ≥ 1). The allocation is owned by this
        // struct and freed in Drop with the same layout.
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<Entry>();
        if entries.is_null() {
            std::alloc::handle_alloc_error(entries_layout);
        }
        // SAFETY: non-zero size (count ≥ 1, buf_size ≥ 1); owned by this struct, freed in Drop.
        // Uninitialised bytes are never read: a RecvBuf exposes only the prefix the kernel wrote.
        let buffers = unsafe { alloc(buffers_layout) };
        if buffers.is_null() {
            std::alloc::handle_alloc_error(buffers_layout);
        }
        let ring = BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            buf_size,
            mask: count - 1,
            tail: Cell::new(0),
            published: Cell::new(0),
            bgid,
        };
        ring.publish_up_to(count.min(INITIAL_PUBLISHED));
        ring
    }

    /// Publishes twice as many buffers as so far (up to all); returns whether any were added.
    /// Called when a recv ran out of buffers, so the next one finds more.
    pub(crate) fn grow(&self) -> bool {
        let now = self.published.get();
        let target = now.saturating_mul(2).min(self.count());
        self.publish_up_to(target);
        target > now
    }

    fn publish_up_to(&self, target: u16) {
        for bid in self.published.get()..target {
            self.push(bid);
        }
        self.published.set(self.published.get().max(target));
        self.publish();
    }

    /// Address of the entries array, for registration.
    pub(crate) fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    pub(crate) fn count(&self) -> u16 {
        self.mask + 1
    }

    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Size of each buffer in bytes.
    pub(crate) fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Writes buffer `bid` into the next entry past the tail (not yet visible to the kernel).
    fn push(&self, bid: u16) {
        debug_assert!(bid <= self.mask);
        let tail = self.tail.get();
        let idx = (tail & self.mask) as usize;
        let addr = self.buffers as u64 + (bid as u64 * self.buf_size as u64);
        // SAFETY: `idx < count`, so the entry lies inside our allocation, which lives as long
        // as `self`. The kernel reads entries only between its head and the published tail;
        // this one is at the unpublished tail, and at most `count` buffers exist, so it is not
        // one the kernel may still read. Its three fields are written through raw pointers, so
        // no reference covers entry 0's `resv`, the tail the kernel reads meanwhile. `Ring` is
        // !Send and `BufRing` lives in an `Rc`, so no other thread calls this.
        unsafe {
            let entry = self.entries.add(idx);
            (&raw mut (*entry).addr).write(addr);
            (&raw mut (*entry).len).write(self.buf_size as u32);
            (&raw mut (*entry).bid).write(bid);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    fn publish(&self) {
        self.kernel_tail().store(self.tail.get(), Ordering::Release);
    }

    /// The tail the kernel reads: entry 0's `resv`.
    fn kernel_tail(&self) -> &AtomicU16 {
        // SAFETY: entry 0's `resv` lies inside our allocation (count ≥ 1), which lives as long
        // as `self`, and is 2-aligned (the allocation is page-aligned, the field at offset 14).
        // Only these two bytes are borrowed, and they are only ever accessed atomically: stored
        // here, read by the kernel; `push` writes entries' other fields through raw pointers.
        unsafe { AtomicU16::from_ptr(&raw mut (*self.entries).resv) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts and not freed elsewhere. The
        // last `Rc` is gone, so no RecvBuf points in; the Ring drops (rather than leaks) its
        // `Rc` only once no op that could select a buffer is in flight.
        unsafe {
            dealloc(self.entries.cast(), self.entries_layout);
            dealloc(self.buffers, self.buffers_layout);
        }
    }
}

/// One receive buffer the kernel filled: derefs to the bytes it wrote.
///
/// Dropping it gives the buffer back to the kernel. Keep it only as long as you need the
/// bytes: while held, the buffer is unavailable for receiving, and once all buffers are held
/// multishot recvs finish with `-ENOBUFS`.
///
/// Not `Clone`, so a buffer cannot be read after it was handed back nor recycled twice:
///
/// ```compile_fail,E0599
/// fn dup(b: &ringrpc_uring::RecvBuf) -> ringrpc_uring::RecvBuf {
///     b.clone()
/// }
/// ```
pub struct RecvBuf {
    ring: Rc<BufRing>,
    bid: u16,
    len: u32,
}

impl RecvBuf {
    /// Takes ownership of buffer `bid`, which a completion just reported the kernel filled
    /// with `len` bytes. Only the reaper calls this, once per such completion.
    pub(crate) fn from_completion(ring: &Rc<BufRing>, bid: u16, len: usize) -> RecvBuf {
        assert!(
            bid <= ring.mask && len <= ring.buf_size,
            "kernel reported buffer {bid} with {len} bytes outside the buffer ring"
        );
        RecvBuf {
            ring: Rc::clone(ring),
            bid,
            len: len as u32,
        }
    }

    /// The buffer id (for diagnostics).
    pub fn buffer_id(&self) -> u16 {
        self.bid
    }
}

impl Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: buffer `bid` lies inside the allocation (checked at construction), the
        // kernel handed it to this RecvBuf and will not write it until our Drop republishes it,
        // and it wrote `len` initialised bytes before posting the completion we read.
        unsafe {
            std::slice::from_raw_parts(
                self.ring
                    .buffers
                    .add(self.bid as usize * self.ring.buf_size),
                self.len as usize,
            )
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.ring.push(self.bid);
        self.ring.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads entry `idx` the way the kernel does: field by field, through raw pointers.
    fn entry(ring: &BufRing, idx: usize) -> (u64, u32, u16) {
        assert!(idx < ring.count() as usize);
        // SAFETY: `idx < count`, inside the allocation `ring` owns; no kernel uses this ring.
        unsafe {
            let e = ring.entries.add(idx);
            (
                (&raw const (*e).addr).read(),
                (&raw const (*e).len).read(),
                (&raw const (*e).bid).read(),
            )
        }
    }

    #[test]
    fn entries_and_tail_are_where_the_kernel_reads_them() {
        let ring = BufRing::new(4, 64, 0);
        // SAFETY: `entries` is the ring's base, page-aligned and initialised (zeroed).
        let theirs = unsafe { BufRingEntry::tail(ring.entries.cast()) };
        assert_eq!(
            theirs.cast::<AtomicU16>(),
            std::ptr::from_ref(ring.kernel_tail())
        );
        assert_eq!(ring.kernel_tail().load(Ordering::Acquire), 4);
        for bid in 0..4u16 {
            let addr = ring.buffers as u64 + u64::from(bid) * 64;
            assert_eq!(entry(&ring, usize::from(bid)), (addr, 64, bid));
        }
    }

    /// The kernel may read the tail at any moment, also while the next entry is filled: a
    /// view of the tail held across `push` sees it unchanged until `publish`, and filling
    /// entry 0 leaves the tail's bytes alone.
    #[test]
    fn filling_entry_zero_leaves_the_tail_to_publish() {
        let ring = BufRing::new(4, 64, 0);
        let kernel_view = ring.kernel_tail();
        assert_eq!(kernel_view.load(Ordering::Acquire), 4);
        // All four buffers are published, so the next push lands on entry 4 & 3 = 0.
        ring.push(2);
        assert_eq!(kernel_view.load(Ordering::Acquire), 4, "not published yet");
        ring.publish();
        assert_eq!(kernel_view.load(Ordering::Acquire), 5);
        assert_eq!(entry(&ring, 0), (ring.buffers as u64 + 2 * 64, 64, 2));
    }
}
