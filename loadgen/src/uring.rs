//! An I/O thread on ringrpc's io_uring layer (`ringrpc_uring`): multishot recv into a
//! provided buffer ring (consumed incrementally for payloads from 16 KiB), one vectored send
//! per connection with output, one kernel entry per loop turn.
//!
//! Invariants: at most one send is in flight per connection, and the unsent rest of a
//! partial send goes out before anything queued after it; a failed connection's recv is
//! cancelled and its ring handle dropped (the ring closes the socket after the recv's final
//! completion); the ring (dropped last) cancels and waits for whatever is still in flight.
//! Each op's tag carries its connection's index and generation (bumped by a
//! `--reconnect-every` reconnect), so a closed socket's late completions are dropped.

use std::io;
use std::time::Instant;

use bytes::Bytes;
use ringrpc_uring::{Completion, OpId, OpKind, Ring, RingConfig, SharedFd};

use crate::conn::Connection;
use crate::cpu::WindowCpu;
use crate::worker::{
    HOUSEKEEPING_INTERVAL, Plan, Shared, Touched, WorkerOutput, WorkerState, end_of_turn,
    next_wake, publish,
};

/// Submission queue entries per I/O thread.
const RING_ENTRIES: u32 = 1024;
/// Receive buffers per I/O thread (power of two) and their size: 4 MiB in all.
const RECV_BUFFERS: u16 = 256;
const RECV_BUFFER_SIZE: usize = 16 * 1024;
/// From this payload size on, answers are received into fewer, larger buffers that the
/// kernel consumes incrementally (`IOU_PBUF_RING_INC`, kernel 6.12; whole buffers where it
/// is refused), also 4 MiB in all: a 64 KiB echo then arrives in one or two completions
/// instead of four or five. Against peer-reflect, loadgen's CPU over the server's fell from
/// 1.42 to 1.24 at 64 KiB, 8 × 10, and from 1.13 to 1.08 at 1 MiB (medians; docs/
/// benchmarks.md, "Where the time goes").
const INCREMENTAL_FROM: usize = 16 * 1024;
const INCREMENTAL_BUFFERS: u16 = 32;
const INCREMENTAL_BUFFER_SIZE: usize = 128 * 1024;

/// The ring for a run whose payloads are `payload_len` bytes.
fn ring_config(payload_len: usize) -> RingConfig {
    let incremental = payload_len >= INCREMENTAL_FROM;
    RingConfig {
        entries: RING_ENTRIES,
        recv_buffers: if incremental {
            INCREMENTAL_BUFFERS
        } else {
            RECV_BUFFERS
        },
        recv_buffer_size: if incremental {
            INCREMENTAL_BUFFER_SIZE
        } else {
            RECV_BUFFER_SIZE
        },
        incremental_recv_buffers: incremental,
    }
}

/// Per-connection I/O state.
#[derive(Debug, Default)]
struct ConnIo {
    /// The ring's handle to the socket while the connection is open.
    fd: Option<SharedFd>,
    /// The armed multishot recv.
    recv: Option<OpId>,
    sending: bool,
    /// The rest of a partial send, sent before anything newer.
    unsent: Vec<Bytes>,
    spare: Vec<Bytes>,
    /// Which socket of this connection's slot the ops are for (see [`op_tag`]).
    generation: u32,
}

/// The tag of connection `i`'s ops on its current socket.
fn op_tag(i: usize, io: &ConnIo) -> u64 {
    (u64::from(io.generation) << 32) | i as u64
}

/// Connection index and generation of a tag.
fn split_tag(tag: u64) -> (usize, u32) {
    ((tag & u64::from(u32::MAX)) as usize, (tag >> 32) as u32)
}

/// Runs `conns` on one io_uring until each is done or the drain deadline passes.
pub(crate) fn run_uring_worker(
    mut conns: Vec<Connection>,
    plan: &Plan,
    shared: &Shared,
) -> Result<WorkerOutput, String> {
    let mut ring = Ring::new(ring_config(plan.payload_len))
        .map_err(|e| format!("{e} (or run loadgen with --io std)"))?;
    let mut state = WorkerState::new(plan, shared);
    let mut io: Vec<ConnIo> = conns.iter().map(|_| ConnIo::default()).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        let Some(stream) = conn.take_stream() else {
            continue;
        };
        conn.send_by_reference();
        start_recv(&mut ring, conn, &mut io[i], i, stream, &mut state);
    }
    let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
    let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
    // A turn visits only the connections a completion touched (10,000 idle ones cost nothing),
    // unless requests go out on a clock or housekeeping may have freed window slots.
    let paced = conns.iter().any(Connection::is_paced);
    let mut touched = Touched::all(conns.len());
    let mut visit = Vec::with_capacity(conns.len());
    loop {
        let now = Instant::now();
        cpu.observe(now);
        touched.take(paced || now >= next_housekeeping, &mut visit);
        for &i in &visit {
            let conn = &mut conns[i];
            if !io[i].sending && conn.wants_reconnect(now, plan) {
                reconnect(&mut ring, conn, &mut io[i], i, plan, &mut state);
            }
            if !conn.is_done(now, plan) {
                conn.fill_window(now, plan, &mut state);
            }
            start_send(&mut ring, conn, &mut io[i], i, &mut state);
        }
        if end_of_turn(
            &mut conns,
            now,
            plan,
            &mut state,
            shared,
            &mut next_housekeeping,
        ) {
            break;
        }
        // Sleep until a completion, the next due request, housekeeping or a phase edge.
        let mut wake_at = next_wake(plan, now, next_housekeeping);
        for conn in conns.iter().filter(|_| paced) {
            if let Some(due) = conn.next_due(plan) {
                wake_at = wake_at.min(due);
            }
        }
        ring.submit_and_wait_for(1, wake_at.saturating_duration_since(now), &mut cqes)
            .map_err(|e| format!("io_uring_enter failed: {e}"))?;
        let received_at = Instant::now();
        for cqe in cqes.drain(..) {
            let (i, generation) = split_tag(cqe.tag());
            if generation != io[i].generation {
                // A closed socket's: its buffers and batch go back as `cqe` drops.
                continue;
            }
            touched.mark(i);
            match cqe.kind() {
                OpKind::Recv => on_recv(
                    &mut ring,
                    cqe,
                    &mut conns[i],
                    &mut io[i],
                    i,
                    received_at,
                    plan,
                    &mut state,
                ),
                OpKind::Send => on_send(&mut ring, cqe, &mut conns[i], &mut io[i], &mut state),
                _ => {}
            }
        }
    }
    cpu.finish();
    publish(&mut state, shared);
    drop(ring);
    Ok(WorkerOutput {
        counters: state.counters,
        cpu_in_window: cpu.used(),
        published_ok: state.published_ok,
    })
}

fn start_send(
    ring: &mut Ring,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    state: &mut WorkerState,
) {
    if io.sending {
        return;
    }
    let Some(fd) = io.fd.as_ref() else { return };
    let mut batch = std::mem::take(&mut io.spare);
    batch.append(&mut io.unsent);
    conn.take_output(&mut batch);
    if batch.is_empty() {
        io.spare = batch;
        return;
    }
    match ring.send(fd, op_tag(i, io), batch) {
        Ok(_) => io.sending = true,
        Err(e) => fail(
            ring,
            conn,
            io,
            format!("cannot queue a send: {}", e.error),
            state,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn on_recv(
    ring: &mut Ring,
    mut cqe: Completion,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    if !cqe.more() {
        io.recv = None;
    }
    let mut failure = None;
    if cqe.result() > 0 {
        let Some(data) = cqe.take_recv_buf() else {
            return fail(
                ring,
                conn,
                io,
                "recv completion without a buffer".into(),
                state,
            );
        };
        if conn.is_open() {
            failure = conn.on_received(&data, received_at, plan, state).err();
        }
        // `data` dropped here: its buffer goes back to the kernel.
    } else if cqe.result() == 0 {
        failure = Some("server closed the connection".to_string());
    } else {
        match -cqe.result() {
            // Out of receive buffers for a moment: re-armed below.
            libc::ENOBUFS | libc::ECANCELED => {}
            errno => {
                failure = Some(format!(
                    "recv failed: {}",
                    io::Error::from_raw_os_error(errno)
                ))
            }
        }
    }
    if let Some(why) = failure {
        if conn.is_open() {
            fail(ring, conn, io, why, state);
        }
        return;
    }
    if io.recv.is_none() {
        if let Some(fd) = io.fd.as_ref() {
            match ring.recv_multi(fd, op_tag(i, io)) {
                Ok(id) => io.recv = Some(id),
                Err(e) => fail(ring, conn, io, format!("cannot re-arm recv: {e}"), state),
            }
        }
    }
}

/// Hands `stream` to the ring and arms its multishot recv.
fn start_recv(
    ring: &mut Ring,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    stream: std::net::TcpStream,
    state: &mut WorkerState,
) {
    let fd = SharedFd::from(stream);
    match ring.recv_multi(&fd, op_tag(i, io)) {
        Ok(id) => {
            io.recv = Some(id);
            io.fd = Some(fd);
        }
        Err(e) => conn.fail(format!("cannot arm recv: {e}"), state),
    }
}

/// `--reconnect-every`: closes the connection's socket (its recv cancelled, its late
/// completions dropped by generation) and goes on over a new one.
fn reconnect(
    ring: &mut Ring,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    plan: &Plan,
    state: &mut WorkerState,
) {
    let Some(dialer) = plan.dialer.as_ref() else {
        return;
    };
    if let Some(recv) = io.recv.take() {
        let _ = ring.cancel(recv);
    }
    io.fd = None;
    io.unsent.clear();
    io.generation = io.generation.wrapping_add(1);
    match dialer.redial(false, false) {
        Ok((stream, tls)) => {
            conn.reopen(None, tls);
            start_recv(ring, conn, io, i, stream, state);
        }
        Err(e) => conn.fail(format!("reconnect failed: {e}"), state),
    }
}

fn on_send(
    ring: &mut Ring,
    mut cqe: Completion,
    conn: &mut Connection,
    io: &mut ConnIo,
    state: &mut WorkerState,
) {
    io.sending = false;
    let segments = cqe.take_sent_batch().unwrap_or_default();
    if !conn.is_open() {
        return;
    }
    if cqe.result() < 0 {
        let why = format!(
            "send failed: {}",
            io::Error::from_raw_os_error(-cqe.result())
        );
        return fail(ring, conn, io, why, state);
    }
    let mut written = cqe.result() as usize;
    let mut segments = segments;
    for mut seg in segments.drain(..) {
        if written >= seg.len() {
            written -= seg.len();
        } else {
            io.unsent.push(seg.split_off(written));
            written = 0;
        }
    }
    io.spare = segments;
}

fn fail(
    ring: &mut Ring,
    conn: &mut Connection,
    io: &mut ConnIo,
    why: String,
    state: &mut WorkerState,
) {
    if let Some(recv) = io.recv {
        let _ = ring.cancel(recv);
    }
    // The ring keeps its own handle until the recv's final completion, then closes the socket.
    io.fd = None;
    io.unsent.clear();
    conn.fail(why, state);
}
