//! The provided-buffer ring that multishot recv fills (kernel ≥ 5.19), and [`RecvBuf`], the
//! handle to bytes the kernel wrote into one of its buffers.
//!
//! The ring is registered either whole-buffer (each completion consumes a buffer however few
//! bytes it carries) or incremental (`IOU_PBUF_RING_INC`, kernel ≥ 6.12): the kernel then
//! consumes a buffer in pieces, a completion flagged `IORING_CQE_F_BUF_MORE` meaning it keeps
//! the rest of that buffer, and the next completion naming the same buffer id carries the
//! bytes that follow (io_uring_setup_buf_ring(3): "each completion of a given buffer ID will
//! continue where the previous one left off"). The kernel tracks the rest by advancing the
//! head entry's `addr` and shrinking its `len` in place (`io_kbuf_inc_commit`), and steps past
//! the entry only when it has finished the buffer, in a completion without `BUF_MORE`. The
//! whole-buffer case is the special case in which no completion has `BUF_MORE`, so one code
//! path serves both.
//!
//! Invariants:
//! - Each buffer id is at any moment either published (in the ring between the kernel's head
//!   and our tail; the kernel may write into the part of it no completion has reported yet)
//!   or retired (the kernel posted a completion for it without `BUF_MORE`, stepped past its
//!   entry and will not write the buffer again). A `RecvBuf` is a slice `(bid, offset, len)`
//!   created only from a completion whose flags name that buffer id, covering exactly the
//!   bytes that completion reported: bytes the kernel wrote before posting it and, the next
//!   completion for that id starting where this one ended, never writes again until the id is
//!   published anew. [`BidState`] counts the slices alive per id; the id is published again
//!   only when it is retired *and* its last slice is dropped, by that slice's `Drop`, so safe
//!   code can neither read bytes the kernel may still write nor recycle a buffer twice.
//!   `RecvBuf` is not `Clone`. (`mem::forget` of a `RecvBuf` loses that buffer for good;
//!   never unsound.)
//! - The entries and the buffers are raw allocations, never behind a `&`/`&mut` to the whole
//!   area, so the kernel writing one buffer (or the unreported rest of one whose first bytes a
//!   `RecvBuf` borrows) does not alias a Rust reference.
//! - No reference to an entry ever exists: the kernel reads every published entry and, in
//!   incremental mode, writes the head entry's `addr` and `len`. The ring's tail, which the
//!   kernel reads whenever it looks for a buffer, overlays entry 0's last field (`struct
//!   io_uring_buf_ring`), so an entry is written field by field through raw pointers
//!   ([`Entry`]), only at our unpublished tail (never between the kernel's head and our tail:
//!   at most `count` ids exist and a retired one is off the kernel's part of the ring), and the
//!   tail is touched only atomically (a `&AtomicU16` to those two bytes alone).
//! - Buffers `0..published` have been handed to the kernel; the rest were never touched (so
//!   they cost address space, not memory) until [`BufRing::grow`] publishes them. Starting
//!   small keeps the buffers that cycle few and warm in the cache: the kernel takes them in
//!   ring order, so every published buffer is reused before any is reused twice. An
//!   incremental ring starts with 1 MiB of them ([`BufRing::publish_initial`]), since the
//!   kernel writes each from end to end.
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
/// Whole buffers published at first; [`BufRing::grow`] doubles that each time recvs run out.
pub(crate) const INITIAL_PUBLISHED: u16 = 64;
/// Bytes of incremental buffers published at first (at least one buffer, at most
/// [`INITIAL_PUBLISHED`]): the kernel fills each of those from end to end, in ring order,
/// before it reuses any, so this is the memory its receive copies cycle through. A whole
/// buffer, by contrast, is reused after each completion, which touches only its first bytes.
pub(crate) const INITIAL_PUBLISHED_INC_BYTES: usize = 1 << 20;

/// What the ring knows of one buffer id since it was last published.
#[derive(Clone, Copy, Debug, Default)]
struct BidState {
    /// Bytes the kernel has reported writing into it: where the next completion's start.
    filled: u32,
    /// [`RecvBuf`] slices of it alive.
    slices: u32,
    /// The kernel is done with it (a completion without `BUF_MORE`).
    retired: bool,
}

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
    /// Per buffer id: reported bytes, live slices, retired (see the module invariants).
    states: Box<[Cell<BidState>]>,
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
    /// Allocates the entries and buffers, none published yet: registration with io_uring
    /// and then [`BufRing::publish_initial`] are the caller's next steps (see `Ring::new`).
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
        BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            buf_size,
            mask: count - 1,
            tail: Cell::new(0),
            published: Cell::new(0),
            bgid,
            states: (0..count).map(|_| Cell::new(BidState::default())).collect(),
        }
    }

    /// Publishes the first buffers: [`INITIAL_PUBLISHED`] whole ones, or for a ring the kernel
    /// consumes incrementally as many as hold [`INITIAL_PUBLISHED_INC_BYTES`]; all, if fewer.
    pub(crate) fn publish_initial(&self, incremental: bool) {
        let first = if incremental {
            (INITIAL_PUBLISHED_INC_BYTES / self.buf_size).clamp(1, INITIAL_PUBLISHED.into()) as u16
        } else {
            INITIAL_PUBLISHED
        };
        self.publish_up_to(self.count().min(first));
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
        // as `self`. The kernel reads entries, and in incremental mode writes the head entry's
        // `addr` and `len`, only between its head and the published tail; this one is at the
        // unpublished tail, and `bid` is retired (or never published) while the others in the
        // ring are at most `count - 1`, so it is not one the kernel may still read or write.
        // Its three fields are written through raw pointers, so no reference covers entry 0's
        // `resv`, the tail the kernel reads meanwhile. `Ring` is !Send and `BufRing` lives in
        // an `Rc`, so no other thread calls this.
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

/// The bytes one recv completion delivered into a receive buffer: derefs to them.
///
/// With whole buffers ([`RingFeatures::incremental_recv_buffers`](crate::RingFeatures) false)
/// it is the start of its own buffer; with incremental ones several completions, one after the
/// other, may be slices of one buffer ([`RecvBuf::offset`]). Dropping the last slice of a
/// buffer the kernel is done with gives the buffer back to the kernel. Keep it only as long
/// as you need the bytes: while held, its buffer is unavailable for receiving, and once all
/// buffers are held multishot recvs finish with `-ENOBUFS`.
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
    offset: u32,
    len: u32,
}

impl RecvBuf {
    /// Takes the `len` bytes a completion just reported the kernel wrote into buffer `bid`,
    /// starting where the previous completion for `bid` ended; `buf_more`: the completion
    /// said the kernel keeps using the rest (`IORING_CQE_F_BUF_MORE`). Only the reaper calls
    /// this, once per such completion, in completion order.
    pub(crate) fn from_completion(
        ring: &Rc<BufRing>,
        bid: u16,
        len: usize,
        buf_more: bool,
    ) -> RecvBuf {
        assert!(
            bid <= ring.mask,
            "kernel reported buffer {bid} outside the buffer ring"
        );
        let cell = &ring.states[bid as usize];
        let mut state = cell.get();
        let offset = state.filled as usize;
        assert!(
            !state.retired && offset + len <= ring.buf_size,
            "kernel reported {len} bytes at {offset} of buffer {bid} ({state:?}), outside it"
        );
        state.filled += len as u32;
        state.slices += 1;
        state.retired = !buf_more;
        cell.set(state);
        RecvBuf {
            ring: Rc::clone(ring),
            bid,
            offset: offset as u32,
            len: len as u32,
        }
    }

    /// The buffer id (for diagnostics).
    pub fn buffer_id(&self) -> u16 {
        self.bid
    }

    /// Where these bytes start in their buffer: 0 for a buffer's first completion, more for
    /// the later ones of a buffer consumed incrementally.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }
}

impl Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `offset + len ≤ buf_size` and `bid < count` (checked at construction), so
        // the slice lies inside the allocation, which our `Rc` keeps alive. The kernel wrote
        // these `len` bytes before posting the completion we read, and writes only past them
        // (the next completion for `bid` starts where this one ended) until the buffer is
        // published again, which waits for this slice's Drop. Only these bytes are borrowed;
        // the kernel may meanwhile write the rest of the buffer, which no reference covers.
        unsafe {
            std::slice::from_raw_parts(
                self.ring
                    .buffers
                    .add(self.bid as usize * self.ring.buf_size + self.offset as usize),
                self.len as usize,
            )
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("bid", &self.bid)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        let cell = &self.ring.states[self.bid as usize];
        let mut state = cell.get();
        state.slices -= 1;
        if state.slices == 0 && state.retired {
            // The kernel is done with it and no slice is left: a fresh, whole buffer again.
            state = BidState::default();
            self.ring.push(self.bid);
            self.ring.publish();
        }
        cell.set(state);
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
        ring.publish_initial(false);
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
        ring.publish_initial(false);
        let kernel_view = ring.kernel_tail();
        assert_eq!(kernel_view.load(Ordering::Acquire), 4);
        // All four buffers are published, so the next push lands on entry 4 & 3 = 0.
        ring.push(2);
        assert_eq!(kernel_view.load(Ordering::Acquire), 4, "not published yet");
        ring.publish();
        assert_eq!(kernel_view.load(Ordering::Acquire), 5);
        assert_eq!(entry(&ring, 0), (ring.buffers as u64 + 2 * 64, 64, 2));
    }

    /// The kernel's part, simulated: a buffer consumed in three completions goes back only
    /// once the last came (without `BUF_MORE`) and every slice of it was dropped; each slice
    /// reads its own bytes.
    #[test]
    fn a_buffer_goes_back_when_retired_and_its_last_slice_is_dropped() {
        let ring = Rc::new(BufRing::new(2, 64, 0));
        ring.publish_initial(true);
        let tail = |r: &BufRing| r.kernel_tail().load(Ordering::Acquire);
        assert_eq!(tail(&ring), 2);
        // SAFETY: buffer 0's 64 bytes lie inside the allocation; no kernel uses this ring and
        // no RecvBuf exists yet, so nothing else reads or writes them.
        unsafe { std::ptr::copy_nonoverlapping([7u8; 64].as_ptr(), ring.buffers, 64) };
        let a = RecvBuf::from_completion(&ring, 0, 10, true);
        let b = RecvBuf::from_completion(&ring, 0, 20, true);
        assert_eq!((a.offset(), a.len(), b.offset(), b.len()), (0, 10, 10, 20));
        drop(a);
        assert_eq!(tail(&ring), 2, "the kernel still fills buffer 0");
        let c = RecvBuf::from_completion(&ring, 0, 34, false);
        assert_eq!((c.offset(), &c[..2]), (30, &[7u8, 7][..]));
        drop(c);
        assert_eq!(tail(&ring), 2, "a slice of buffer 0 is still held");
        drop(b);
        assert_eq!(tail(&ring), 3, "republished once retired and unreferenced");
        assert_eq!(entry(&ring, 0), (ring.buffers as u64, 64, 0));
        // Published anew, it is whole again: the next completion starts at its beginning.
        assert_eq!(RecvBuf::from_completion(&ring, 0, 5, false).offset(), 0);
    }

    #[test]
    #[should_panic(expected = "outside it")]
    fn a_completion_past_the_end_of_its_buffer_is_refused() {
        let ring = Rc::new(BufRing::new(1, 64, 0));
        ring.publish_initial(true);
        let _a = RecvBuf::from_completion(&ring, 0, 60, true);
        let _b = RecvBuf::from_completion(&ring, 0, 5, false);
    }

    #[test]
    fn incremental_rings_start_with_a_mebibyte_of_buffers_whole_ones_with_64() {
        let published = |count, size, incremental| {
            let ring = BufRing::new(count, size, 0);
            ring.publish_initial(incremental);
            ring.kernel_tail().load(Ordering::Acquire)
        };
        assert_eq!(published(512, 16 << 10, false), 64);
        assert_eq!(published(512, 128 << 10, false), 64);
        assert_eq!(published(512, 16 << 10, true), 64);
        assert_eq!(published(64, 128 << 10, true), 8);
        assert_eq!(published(64, 4 << 20, true), 1);
        assert_eq!(published(4, 64, true), 4);
    }
}
