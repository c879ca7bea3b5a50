//! io_uring setup, op descriptors turned into SQEs, and ownership of every byte the kernel
//! touches: the engine's only `unsafe`.
//!
//! Invariants:
//! - Memory an in-flight op reads or writes (send batches with their iovecs and msghdr,
//!   timer timespecs, the wake-up counter, the provided buffers) is owned by [`Ring`] from
//!   push until the op's final completion, never by the caller.
//! - Dropping a `Ring` cancels every op still in flight and waits for the kernel to confirm;
//!   if it does not within [`DROP_WAIT`], that memory is leaked rather than freed under the
//!   kernel.
//! - Minimum kernel: 6.0 (multishot recv). Multishot accept and buffer rings need 5.19;
//!   DEFER_TASKRUN (6.1) and COOP_TASKRUN (5.19) are used when present.

mod bufring;
pub mod sys;
pub mod token;

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

pub use bufring::BufRing;
pub use token::{OpKind, Token};

/// Largest number of iovecs one vectored send carries (Linux IOV_MAX).
pub const IOV_MAX: usize = 1024;

/// A completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Cqe {
    /// Which op finished.
    pub token: Token,
    /// Result: bytes, a descriptor, or a negated errno.
    pub result: i32,
    /// Completion flags (buffer id, more-to-come).
    pub flags: u32,
}

impl Cqe {
    /// Whether a multishot op stays armed after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
    /// The provided buffer the kernel filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// A finished vectored send, handed back to its connection.
#[derive(Debug)]
pub struct SendDone {
    /// The connection token given at push.
    pub conn: Token,
    /// Bytes written, or a negated errno.
    pub result: i32,
    /// The segments that were being sent, in order, for resumption or reuse.
    pub segments: Vec<Bytes>,
}

/// What the ring setup settled on.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingFeatures {
    /// SINGLE_ISSUER was accepted.
    pub single_issuer: bool,
    /// DEFER_TASKRUN was accepted.
    pub defer_taskrun: bool,
    /// COOP_TASKRUN was accepted.
    pub coop_taskrun: bool,
}

/// Why the ring could not be set up; the text names the cause and the fix.
#[derive(Debug)]
pub struct RingError(pub String);

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RingError {}

struct InFlightSend {
    conn: Token,
    segments: Vec<Bytes>,
    // Never read again by us: held only so the kernel's pointers stay valid until completion.
    _iovecs: Vec<libc::iovec>,
    _msg: Box<libc::msghdr>,
}

/// Everything an in-flight op may read or write.
struct KernelMem {
    bufs: BufRing,
    sends: Slab<InFlightSend>,
    timers: Vec<Option<Box<types::Timespec>>>,
    wake_buf: Box<u64>,
}

/// One reactor's io_uring plus the memory its ops use.
pub struct Ring {
    uring: IoUring,
    // Freed in Drop only once the kernel has finished every op, else leaked.
    mem: ManuallyDrop<KernelMem>,
    wake_fd: File,
    in_flight: usize,
    features: RingFeatures,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("sends", &self.mem.sends.len())
            .field("features", &self.features)
            .finish()
    }
}

/// How long dropping a ring waits for cancelled ops to finish.
pub const DROP_WAIT: Duration = Duration::from_secs(2);

/// Buffer group id of the receive buffers (one group per ring).
const RECV_BGID: u16 = 0;

impl Ring {
    /// Creates the ring with `entries` submission slots (completion queue 4× that), and
    /// registers `buf_count` receive buffers of `buf_size` bytes.
    ///
    /// Must be called on the thread that will use the ring (SINGLE_ISSUER).
    pub fn new(
        entries: u32,
        buf_count: u16,
        buf_size: usize,
        wake_fd: File,
    ) -> Result<Ring, RingError> {
        let (uring, features) = setup(entries)?;
        let bufs = BufRing::new(buf_count, buf_size, RECV_BGID);
        // SAFETY: the entries array lives in `bufs`, which the Ring keeps until the kernel
        // has finished every op (see Drop), or leaks; it outlives any use by the kernel.
        let reg = unsafe {
            uring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.count(),
                RECV_BGID,
                0,
            )
        };
        if let Err(e) = reg {
            return Err(diagnose_buf_ring(e, bufs.count()));
        }
        Ok(Ring {
            uring,
            mem: ManuallyDrop::new(KernelMem {
                bufs,
                sends: Slab::new(),
                timers: Vec::new(),
                wake_buf: Box::new(0),
            }),
            wake_fd,
            in_flight: 0,
            features,
        })
    }

    /// The flags the kernel accepted.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// The receive buffers, to read what a recv completion delivered and recycle it.
    pub fn bufs(&mut self) -> &mut BufRing {
        &mut self.mem.bufs
    }

    /// Ops pushed and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Arms multishot accept on `listener` (kernel ≥ 5.19).
    pub fn accept_multi(&mut self, listener: RawFd, token: Token) -> io::Result<()> {
        self.push(
            opcode::AcceptMulti::new(types::Fd(listener))
                .flags(libc::SOCK_CLOEXEC)
                .build(),
            token,
        )
    }

    /// Arms multishot recv on `fd` into the receive buffers (kernel ≥ 6.0).
    pub fn recv_multi(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.push(
            opcode::RecvMulti::new(types::Fd(fd), self.mem.bufs.bgid()).build(),
            token,
        )
    }

    /// Arms a read of the wake-up eventfd.
    pub fn wake_read(&mut self, token: Token) -> io::Result<()> {
        let fd = self.wake_fd.as_raw_fd();
        let buf: *mut u64 = &mut *self.mem.wake_buf;
        self.push(
            opcode::Read::new(types::Fd(fd), buf.cast(), 8).build(),
            token,
        )
    }

    /// Arms a one-shot timer `after` from now; `token.slot` identifies it. At most one timer
    /// per slot is armed at a time (its timespec is kept until the completion).
    pub fn timer(&mut self, after: Duration, token: Token) -> io::Result<()> {
        let slot = token.slot as usize;
        if self.mem.timers.len() <= slot {
            self.mem.timers.resize_with(slot + 1, || None);
        }
        if self.mem.timers[slot].is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "timer already armed",
            ));
        }
        let ts = self.mem.timers[slot].insert(Box::new(types::Timespec::from(after)));
        let ptr: *const types::Timespec = &**ts;
        self.push(opcode::Timeout::new(ptr).build(), token)
    }

    /// Asks the kernel to cancel the op carrying `target`.
    pub fn cancel(&mut self, target: Token) -> io::Result<()> {
        self.push(
            opcode::AsyncCancel::new(target.pack()).build(),
            Token::bare(OpKind::Cancel, 0),
        )
    }

    /// Sends `segments` in order with one `sendmsg` (at most [`IOV_MAX`] of them). The ring
    /// keeps the segments until the completion and returns them in [`SendDone`].
    pub fn send(&mut self, fd: RawFd, conn: Token, segments: Vec<Bytes>) -> io::Result<()> {
        assert!(
            !segments.is_empty() && segments.len() <= IOV_MAX,
            "send batch of {} segments",
            segments.len()
        );
        let iovecs: Vec<libc::iovec> = segments
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        let msg = Box::new(libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            msg_iov: iovecs.as_ptr() as *mut libc::iovec,
            msg_iovlen: iovecs.len(),
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        });
        let msg_ptr: *const libc::msghdr = &*msg;
        let id = self.mem.sends.insert(InFlightSend {
            conn,
            segments,
            _iovecs: iovecs,
            _msg: msg,
        });
        let entry = opcode::SendMsg::new(types::Fd(fd), msg_ptr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        let result = self.push(entry, Token::bare(OpKind::Send, id as u32));
        if result.is_err() {
            self.mem.sends.remove(id);
        }
        result
    }

    /// Pushes one SQE, making room by submitting if the queue is full. Every op's memory is
    /// owned by `self` (see the module invariants) before this is called.
    fn push(&mut self, entry: squeue::Entry, token: Token) -> io::Result<()> {
        let entry = entry.user_data(token.pack());
        loop {
            // SAFETY: every pointer inside `entry` refers to memory owned by this Ring (send
            // batches in `sends`, timespecs in `timers`, `wake_buf`, the buffer ring) or to
            // descriptors whose owners keep them open until the op's final completion; that
            // memory is released only when the completion is reaped (`take_send`) or after
            // the ring itself is gone.
            let pushed = unsafe { self.uring.submission().push(&entry) };
            if pushed.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.uring.submit()?;
        }
    }

    /// Submits everything queued and waits for at least `want` completions; appends them
    /// to `out`. Pass every `OpKind::Send` completion to [`Ring::take_send`] to get its
    /// segments back. `EINTR` and `EBUSY` (completion queue backlog) count as a normal wake-up.
    pub fn submit_and_wait(&mut self, want: usize, out: &mut Vec<Cqe>) -> io::Result<()> {
        let entered = self.uring.submit_and_wait(want);
        self.reap(entered, out)
    }

    /// As [`Ring::submit_and_wait`], but returns after `timeout` even with no completion
    /// (kernel ≥ 5.11).
    pub fn submit_and_wait_for(
        &mut self,
        want: usize,
        timeout: Duration,
        out: &mut Vec<Cqe>,
    ) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        let entered = self.uring.submitter().submit_with_args(want, &args);
        self.reap(entered, out)
    }

    fn reap(&mut self, entered: io::Result<usize>, out: &mut Vec<Cqe>) -> io::Result<()> {
        match entered {
            Ok(_) => {}
            // Interrupted, completion backlog, or the wait timing out: a normal wake-up.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)
                ) => {}
            Err(e) => return Err(e),
        }
        for cqe in self.uring.completion() {
            let Some(token) = Token::unpack(cqe.user_data()) else {
                continue;
            };
            let c = Cqe {
                token,
                result: cqe.result(),
                flags: cqe.flags(),
            };
            if !c.more() {
                self.in_flight -= 1;
                if token.kind == OpKind::Timer {
                    if let Some(t) = self.mem.timers.get_mut(token.slot as usize) {
                        *t = None;
                    }
                }
            }
            out.push(c);
        }
        Ok(())
    }

    /// Takes back a finished send's segments (call for each `OpKind::Send` completion).
    pub fn take_send(&mut self, cqe: &Cqe) -> Option<SendDone> {
        let send = self.mem.sends.try_remove(cqe.token.slot as usize)?;
        Some(SendDone {
            conn: send.conn,
            result: cqe.result,
            segments: send.segments,
        })
    }
}

impl Ring {
    /// Cancels every op in flight and waits up to [`DROP_WAIT`] for the kernel to finish
    /// them all; returns whether it did.
    pub fn cancel_all_and_wait(&mut self) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
        if self
            .push(cancel_all, Token::bare(OpKind::Cancel, 0))
            .is_err()
        {
            return false;
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut cqes = Vec::new();
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.submit_and_wait(1, &mut cqes).is_err() {
                break;
            }
            for cqe in cqes.drain(..) {
                if cqe.token.kind == OpKind::Send {
                    self.take_send(&cqe);
                }
            }
        }
        self.in_flight == 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.cancel_all_and_wait() {
            // SAFETY: no op is in flight, so the kernel holds no pointer into `mem`; it is
            // dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.mem) };
        } else {
            tracing::error!(
                in_flight = self.in_flight,
                "io_uring ops did not finish after cancellation; leaking their buffers"
            );
        }
    }
}

fn setup(entries: u32) -> Result<(IoUring, RingFeatures), RingError> {
    // Most capable first; EINVAL means this kernel lacks a flag, so try the next.
    let attempts = [
        RingFeatures {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: false,
        },
        RingFeatures {
            single_issuer: true,
            defer_taskrun: false,
            coop_taskrun: true,
        },
        RingFeatures {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
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
            Ok(ring) => return Ok((ring, want)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(diagnose_setup(e)),
        }
    }
    Err(RingError(format!(
        "io_uring_setup rejected every flag combination ({}): this kernel is too old; ringrpc needs Linux 6.0 or newer",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

fn diagnose_setup(e: io::Error) -> RingError {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let msg = match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM), Some(2)) => {
            "io_uring is disabled on this machine (kernel.io_uring_disabled = 2); enable it with `sysctl -w kernel.io_uring_disabled=0`".to_string()
        }
        (Some(libc::EPERM), Some(1)) => {
            "io_uring is restricted to the group in kernel.io_uring_group (kernel.io_uring_disabled = 1); run as a member of that group or set `sysctl -w kernel.io_uring_disabled=0`".to_string()
        }
        (Some(libc::EPERM), _) | (Some(libc::ENOSYS), _) => format!(
            "io_uring_setup was refused ({e}): a seccomp profile blocks io_uring (Docker's default does); run with `--security-opt seccomp=unconfined` or a profile that allows io_uring_setup, io_uring_enter and io_uring_register, and check the kernel is Linux 6.0 or newer"
        ),
        (Some(libc::ENOMEM), _) => format!(
            "io_uring_setup ran out of locked memory ({e}): memlock limit is too low: {}; raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity in the systemd unit) or use a smaller --ring-entries",
            memlock_limit_text()
        ),
        (Some(libc::EMFILE), _) | (Some(libc::ENFILE), _) => {
            format!("io_uring_setup could not get a file descriptor ({e}); raise the open-files limit with `ulimit -n`")
        }
        _ => format!("io_uring_setup failed: {e}"),
    };
    RingError(msg)
}

fn diagnose_buf_ring(e: io::Error, count: u16) -> RingError {
    let need = (count as usize * 16).div_ceil(4096) * 4096;
    let msg = match e.raw_os_error() {
        Some(libc::ENOMEM) => format!(
            "registering the receive buffer ring failed ({e}): memlock limit is too low: {} (need {need} bytes more); raise it with `ulimit -l unlimited` or use a smaller --buffers",
            memlock_limit_text()
        ),
        Some(libc::EINVAL) => format!(
            "registering the receive buffer ring failed ({e}): provided buffer rings need Linux 5.19 or newer, and --buffers must be a power of two no larger than 32768"
        ),
        _ => format!("registering the receive buffer ring failed: {e}"),
    };
    RingError(msg)
}

/// The memlock limits as /proc/self/limits states them.
fn memlock_limit_text() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max locked memory"))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!(
                        "soft {} hard {} bytes",
                        f.get(3).unwrap_or(&"?"),
                        f.get(4).unwrap_or(&"?")
                    )
                })
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn cancel_all_finishes_multishot_recv_timers_and_sends() {
        let mut ring = Ring::new(64, 8, 4096, sys::eventfd().unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        ring.recv_multi(server.as_raw_fd(), Token::conn(OpKind::Recv, 1, 1))
            .unwrap();
        ring.timer(Duration::from_secs(3600), Token::bare(OpKind::Timer, 0))
            .unwrap();
        ring.wake_read(Token::bare(OpKind::Wake, 0)).unwrap();
        ring.send(
            client.as_raw_fd(),
            Token::conn(OpKind::Send, 2, 1),
            vec![Bytes::from_static(b"hi")],
        )
        .unwrap();
        let mut cqes = Vec::new();
        ring.submit_and_wait(0, &mut cqes).unwrap();
        for c in cqes.iter().filter(|c| c.token.kind == OpKind::Send) {
            ring.take_send(c).expect("the send's segments");
        }
        assert!(ring.in_flight() >= 3);
        assert!(ring.cancel_all_and_wait());
        assert_eq!(ring.in_flight(), 0);
        assert_eq!(ring.mem.sends.len(), 0);
    }

    #[test]
    fn recv_delivers_into_a_provided_buffer_that_is_recycled() {
        let mut ring = Ring::new(64, 2, 4096, sys::eventfd().unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        ring.recv_multi(server.as_raw_fd(), Token::conn(OpKind::Recv, 3, 9))
            .unwrap();
        let mut seen = Vec::new();
        // Two buffers only: more messages than buffers proves each one comes back.
        for i in 0..6u8 {
            std::io::Write::write_all(&mut client, &[i; 10]).unwrap();
            let mut cqes = Vec::new();
            while cqes.is_empty() {
                ring.submit_and_wait(1, &mut cqes).unwrap();
            }
            for c in cqes {
                assert_eq!(c.token, Token::conn(OpKind::Recv, 3, 9));
                let bid = c.buffer_id().expect("a provided buffer");
                seen.extend_from_slice(ring.bufs().get(bid, c.result as usize));
                ring.bufs().recycle(bid);
            }
        }
        assert_eq!(seen.len(), 60);
        assert!(ring.cancel_all_and_wait());
    }
}
