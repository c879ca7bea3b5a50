//! Ring setup: [`setup`] creates the io_uring with the most capable flags this kernel
//! accepts, and [`RingFeatures`] records which it settled on.
//!
//! Invariants:
//! - DEFER_TASKRUN (6.1), SINGLE_ISSUER (6.0) and COOP_TASKRUN (5.19) are used when present.
//!   Only `EINVAL` (a flag this kernel lacks) moves on to the next, less capable attempt; any
//!   other error is diagnosed at once, since fewer flags would not fix it.
//! - Ops newer than the crate's minimum kernel are probed once the ring exists
//!   (`IORING_REGISTER_PROBE`, kernel ≥ 5.6); a failed probe counts as "not supported", so the
//!   op falls back rather than failing at first use.
//! - The receive buffers are registered incremental (`IOU_PBUF_RING_INC`, kernel ≥ 6.12) when
//!   asked and the kernel accepts it; `EINVAL` (a kernel without the flag) registers them
//!   whole instead, any other error is diagnosed.
//! - SINGLE_ISSUER ties the ring to the thread that creates it; that holds because
//!   [`Ring`](crate::Ring) is `!Send`.

use std::io;

use io_uring::{IoUring, Probe, opcode};

use crate::bufring::BufRing;
use crate::error::{self, RingError};

/// What the ring setup settled on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFeatures {
    /// SINGLE_ISSUER was accepted (kernel ≥ 6.0).
    pub single_issuer: bool,
    /// DEFER_TASKRUN was accepted (kernel ≥ 6.1).
    pub defer_taskrun: bool,
    /// COOP_TASKRUN was accepted (kernel ≥ 5.19).
    pub coop_taskrun: bool,
    /// The kernel has zero-copy `sendmsg` (`IORING_OP_SENDMSG_ZC`, kernel ≥ 6.1), probed at
    /// setup (`IORING_REGISTER_PROBE`); without it [`Ring::send_zc`](crate::Ring::send_zc)
    /// sends plainly. [`Ring::disable_send_zc`](crate::Ring::disable_send_zc) turns it off.
    pub send_zc: bool,
    /// The receive buffers are consumed incrementally (`IOU_PBUF_RING_INC`, kernel ≥ 6.12):
    /// asked for in [`RingConfig`](crate::RingConfig) and accepted by the kernel.
    pub incremental_recv_buffers: bool,
}

pub(crate) fn setup(entries: u32) -> Result<(IoUring, RingFeatures), RingError> {
    // Most capable first; EINVAL means this kernel lacks a flag, so try the next.
    let attempts = [
        RingFeatures {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: false,
            send_zc: false,
            incremental_recv_buffers: false,
        },
        RingFeatures {
            single_issuer: true,
            defer_taskrun: false,
            coop_taskrun: true,
            send_zc: false,
            incremental_recv_buffers: false,
        },
        RingFeatures {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
            send_zc: false,
            incremental_recv_buffers: false,
        },
        RingFeatures::default(),
    ];
    let mut last = None;
    for want in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(entries.saturating_mul(4)).setup_submit_all();
        if want.single_issuer {
            b.setup_single_issuer();
        }
        if want.defer_taskrun {
            b.setup_defer_taskrun();
        }
        if want.coop_taskrun {
            b.setup_coop_taskrun();
        }
        match b.build(entries) {
            Ok(ring) => {
                let send_zc = probe_send_zc(&ring);
                return Ok((ring, RingFeatures { send_zc, ..want }));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(error::diagnose_setup(e)),
        }
    }
    Err(RingError::Unsupported {
        source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
    })
}

/// Whether this kernel has `IORING_OP_SENDMSG_ZC` (6.1).
fn probe_send_zc(ring: &IoUring) -> bool {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(opcode::SendMsgZc::CODE)
}

/// `enum io_uring_register_pbuf_ring_flags` in `include/uapi/linux/io_uring.h` (6.12); the
/// io-uring crate's own binding of it is not public.
const IOU_PBUF_RING_INC: u16 = 2;

/// Registers `bufs` as the ring's provided-buffer ring, incremental if `incremental` and the
/// kernel accepts it (kernel ≥ 6.12), else whole; returns whether incremental.
pub(crate) fn register_buf_ring(
    uring: &IoUring,
    bufs: &BufRing,
    incremental: bool,
) -> Result<bool, RingError> {
    let register = |flags: u16| {
        // SAFETY: the entries array is owned by `bufs`, whose Rc the Ring keeps until the
        // kernel has finished every op (see the Ring's Drop) or leaks; it outlives any use by
        // the kernel. With `IOU_PBUF_RING_INC` the kernel also writes the head entry's `addr`
        // and `len`; `bufring` never forms a reference to an entry, so that aliases nothing.
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.count(),
                bufs.bgid(),
                flags,
            )
        }
    };
    if incremental {
        match register(IOU_PBUF_RING_INC) {
            Ok(()) => return Ok(true),
            // A kernel before 6.12 refuses the flag: whole buffers instead.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(error::diagnose_buf_ring(e, bufs.count())),
        }
    }
    match register(0) {
        Ok(()) => Ok(false),
        Err(e) => Err(error::diagnose_buf_ring(e, bufs.count())),
    }
}
