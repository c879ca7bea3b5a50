//! An I/O thread on ringrpc's own io_uring machinery: multishot recv into a provided buffer
//! ring, one vectored send per connection with output, one kernel entry per loop turn.
//!
//! Invariants: at most one send is in flight per connection, and the unsent rest of a
//! partial send goes out before anything queued after it; a failed connection's recv is
//! cancelled; the ring (dropped last) cancels and waits for whatever is still in flight.

use std::io;
use std::time::Instant;

use bytes::Bytes;
use ringrpc::ring::{Cqe, OpKind, Ring, SendDone, Token, sys};

use crate::conn::Connection;
use crate::cpu::WindowCpu;
use crate::worker::{
    HOUSEKEEPING_INTERVAL, Plan, Shared, WorkerOutput, WorkerState, end_of_turn, publish,
};

/// Submission queue entries per I/O thread.
const RING_ENTRIES: u32 = 1024;
/// Receive buffers per I/O thread (power of two) and their size: 4 MiB in all.
const RECV_BUFFERS: u16 = 256;
const RECV_BUFFER_SIZE: usize = 16 * 1024;

/// Per-connection I/O state.
#[derive(Debug, Default)]
struct ConnIo {
    recv_armed: bool,
    sending: bool,
    /// The rest of a partial send, sent before anything newer.
    unsent: Vec<Bytes>,
    spare: Vec<Bytes>,
}

fn recv_token(i: usize) -> Token {
    Token::conn(OpKind::Recv, i, 0)
}

/// Runs `conns` on one io_uring until each is done or the drain deadline passes.
pub(crate) fn run_uring_worker(
    mut conns: Vec<Connection>,
    plan: &Plan,
    shared: &Shared,
) -> Result<WorkerOutput, String> {
    let wake = sys::eventfd().map_err(|e| format!("cannot create an eventfd: {e}"))?;
    let mut ring = Ring::new(RING_ENTRIES, RECV_BUFFERS, RECV_BUFFER_SIZE, wake)
        .map_err(|e| format!("{e} (or run loadgen with --io std)"))?;
    let mut state = WorkerState::new(plan, shared);
    let mut io: Vec<ConnIo> = conns.iter().map(|_| ConnIo::default()).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        if let Some(fd) = conn.raw_fd() {
            match ring.recv_multi(fd, recv_token(i)) {
                Ok(()) => io[i].recv_armed = true,
                Err(e) => conn.fail(format!("cannot arm recv: {e}"), &mut state),
            }
        }
    }
    let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
    let mut cqes: Vec<Cqe> = Vec::with_capacity(1024);
    loop {
        let now = Instant::now();
        cpu.observe(now);
        for (i, conn) in conns.iter_mut().enumerate() {
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
        let mut wake_at = next_housekeeping.min(plan.drain_deadline);
        for edge in [plan.measure_start, plan.deadline] {
            if now < edge {
                wake_at = wake_at.min(edge);
            }
        }
        for conn in &conns {
            if let Some(due) = conn.next_due(plan) {
                wake_at = wake_at.min(due);
            }
        }
        ring.submit_and_wait_for(1, wake_at.saturating_duration_since(now), &mut cqes)
            .map_err(|e| format!("io_uring_enter failed: {e}"))?;
        let received_at = Instant::now();
        for cqe in cqes.drain(..) {
            match cqe.token.kind {
                OpKind::Recv => {
                    let i = cqe.token.slot as usize;
                    on_recv(
                        &mut ring,
                        &cqe,
                        &mut conns[i],
                        &mut io[i],
                        i,
                        received_at,
                        plan,
                        &mut state,
                    );
                }
                OpKind::Send => {
                    // A send's token names the ring's send id; the connection is in `conn`.
                    let Some(done) = ring.take_send(&cqe) else {
                        continue;
                    };
                    let i = done.conn.slot as usize;
                    on_send(&mut ring, done, &mut conns[i], &mut io[i], i, &mut state);
                }
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
    })
}

fn start_send(
    ring: &mut Ring,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    state: &mut WorkerState,
) {
    let Some(fd) = conn.raw_fd() else { return };
    if io.sending {
        return;
    }
    let mut batch = std::mem::take(&mut io.spare);
    batch.append(&mut io.unsent);
    batch.extend(conn.take_output());
    if batch.is_empty() {
        io.spare = batch;
        return;
    }
    match ring.send(fd, Token::conn(OpKind::Send, i, 0), batch) {
        Ok(()) => io.sending = true,
        Err(e) => fail(
            ring,
            conn,
            io,
            i,
            format!("cannot queue a send: {e}"),
            state,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn on_recv(
    ring: &mut Ring,
    cqe: &Cqe,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    if !cqe.more() {
        io.recv_armed = false;
    }
    let mut failure = None;
    if cqe.result > 0 {
        let Some(bid) = cqe.buffer_id() else {
            return fail(
                ring,
                conn,
                io,
                i,
                "recv completion without a buffer".into(),
                state,
            );
        };
        if conn.raw_fd().is_some() {
            let data = ring.bufs().get(bid, cqe.result as usize);
            failure = conn.on_received(data, received_at, plan, state).err();
        }
        ring.bufs().recycle(bid);
    } else if cqe.result == 0 {
        failure = Some("server closed the connection".to_string());
    } else {
        match -cqe.result {
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
        if conn.raw_fd().is_some() {
            fail(ring, conn, io, i, why, state);
        }
        return;
    }
    if !io.recv_armed {
        if let Some(fd) = conn.raw_fd() {
            match ring.recv_multi(fd, recv_token(i)) {
                Ok(()) => io.recv_armed = true,
                Err(e) => fail(ring, conn, io, i, format!("cannot re-arm recv: {e}"), state),
            }
        }
    }
}

fn on_send(
    ring: &mut Ring,
    done: SendDone,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    state: &mut WorkerState,
) {
    io.sending = false;
    if conn.raw_fd().is_none() {
        return;
    }
    if done.result < 0 {
        let why = format!(
            "send failed: {}",
            io::Error::from_raw_os_error(-done.result)
        );
        return fail(ring, conn, io, i, why, state);
    }
    let mut written = done.result as usize;
    let mut segments = done.segments;
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
    i: usize,
    why: String,
    state: &mut WorkerState,
) {
    if io.recv_armed {
        let _ = ring.cancel(recv_token(i));
    }
    io.unsent.clear();
    conn.fail(why, state);
}
