//! `--io epoll` (also `--driver epoll`): a second client, shaped unlike the io_uring one, to
//! cross-check it. Non-blocking TCP sockets on one edge-triggered epoll loop (mio) per I/O
//! thread: each turn, every connection an event or the clock touched gets its window refilled
//! and one vectored write of its output; a readable connection is read until it is drained,
//! and every answer is checked by the same [`Connection`] code as the other drivers (seq,
//! flags, payload).
//!
//! Invariants: a connection's unsent bytes (the rest of a partial write first) go out in order
//! before anything queued after them; a write that would block waits for the writable edge,
//! and reading never waits on writing; a failed connection's socket is dropped (which takes it
//! out of epoll) and its outstanding requests counted lost by [`Connection::fail`].

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::conn::Connection;
use crate::cpu::WindowCpu;
use crate::worker::{
    HOUSEKEEPING_INTERVAL, Plan, Shared, Touched, WorkerOutput, WorkerState, end_of_turn,
    next_wake, publish,
};

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// epoll's timeout granularity.
const EPOLL_RESOLUTION: Duration = Duration::from_millis(1);
/// Segments handed to one `writev` (well under the kernel's IOV_MAX of 1024).
const MAX_SLICES: usize = 64;

/// Per-connection socket state.
#[derive(Debug, Default)]
struct ConnIo {
    /// The socket while the connection is open.
    stream: Option<TcpStream>,
    /// Output not yet written, oldest first.
    unsent: VecDeque<Bytes>,
}

/// Runs `conns` on one epoll loop until each is done or the drain deadline passes.
pub(crate) fn run_epoll_worker(
    mut conns: Vec<Connection>,
    plan: &Plan,
    shared: &Shared,
) -> Result<WorkerOutput, String> {
    let mut poll = Poll::new().map_err(|e| format!("cannot create an epoll instance: {e}"))?;
    let mut state = WorkerState::new(plan, shared);
    let mut io: Vec<ConnIo> = conns.iter().map(|_| ConnIo::default()).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        let Some(stream) = conn.take_stream() else {
            continue;
        };
        // Large payloads go out as their own segments, straight from the pattern.
        conn.send_by_reference();
        match register(&poll, stream, i) {
            Ok(stream) => io[i].stream = Some(stream),
            Err(e) => conn.fail(format!("cannot register with epoll: {e}"), &mut state),
        }
    }
    let mut events = Events::with_capacity(EVENTS);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
    // As in the io_uring driver, a turn visits only the connections an event touched, unless
    // requests go out on a clock or housekeeping may have freed window slots.
    let paced = conns.iter().any(Connection::is_paced);
    let mut touched = Touched::all(conns.len());
    let mut visit = Vec::with_capacity(conns.len());
    loop {
        let now = Instant::now();
        cpu.observe(now);
        touched.take(paced || now >= next_housekeeping, &mut visit);
        for &i in &visit {
            let conn = &mut conns[i];
            if io[i].unsent.is_empty() && conn.wants_reconnect(now, plan) {
                reconnect(&poll, conn, &mut io[i], i, plan, &mut state);
            }
            if !conn.is_done(now, plan) {
                conn.fill_window(now, plan, &mut state);
            }
            flush(conn, &mut io[i], &mut batch, &mut state);
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
        let timeout = wait_timeout(&conns, plan, now, next_housekeeping);
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("epoll_wait failed: {e}")),
        }
        if timeout.is_zero() && events.is_empty() {
            // Spinning towards a request due within epoll's resolution: let others run.
            std::thread::yield_now();
        }
        let received_at = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            touched.mark(i);
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                receive(&mut conns[i], &mut io[i], received_at, plan, &mut state);
            }
            // Writable: the next turn writes what is queued.
        }
    }
    cpu.finish();
    publish(&mut state, shared);
    Ok(WorkerOutput {
        counters: state.counters,
        cpu_in_window: cpu.used(),
        published_ok: state.published_ok,
    })
}

/// How long to wait for events: until housekeeping, a phase edge or, open loop, a millisecond
/// before the next due request (epoll waits in whole milliseconds), spinning from there.
fn wait_timeout(
    conns: &[Connection],
    plan: &Plan,
    now: Instant,
    next_housekeeping: Instant,
) -> Duration {
    let mut timeout = next_wake(plan, now, next_housekeeping).saturating_duration_since(now);
    let due = conns.iter().filter_map(|c| c.next_due(plan)).min();
    if let Some(due) = due {
        let until_due = due.saturating_duration_since(now);
        timeout = match until_due.checked_sub(EPOLL_RESOLUTION) {
            Some(before) => timeout.min(before),
            None => Duration::ZERO,
        };
    }
    timeout
}

/// Makes `stream` non-blocking and registers it as connection `i`.
fn register(poll: &Poll, stream: std::net::TcpStream, i: usize) -> std::io::Result<TcpStream> {
    stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(stream);
    let interest = Interest::READABLE | Interest::WRITABLE;
    poll.registry().register(&mut stream, Token(i), interest)?;
    Ok(stream)
}

/// `--reconnect-every`: closes the connection's socket (nothing is unsent or in flight) and
/// goes on over a new one, its TLS handshake done by the dialer.
fn reconnect(
    poll: &Poll,
    conn: &mut Connection,
    io: &mut ConnIo,
    i: usize,
    plan: &Plan,
    state: &mut WorkerState,
) {
    let Some(dialer) = plan.dialer.as_ref() else {
        return;
    };
    if let Some(mut old) = io.stream.take() {
        let _ = poll.registry().deregister(&mut old);
    }
    match dialer.redial(false, false) {
        Ok((stream, tls)) => match register(poll, stream, i) {
            Ok(stream) => {
                conn.reopen(None, tls);
                io.stream = Some(stream);
            }
            Err(e) => conn.fail(format!("cannot register with epoll: {e}"), state),
        },
        Err(e) => conn.fail(format!("reconnect failed: {e}"), state),
    }
}

/// Reads until the socket is drained, handing every read to the connection (which checks the
/// answers and refills its window).
fn receive(
    conn: &mut Connection,
    io: &mut ConnIo,
    received_at: Instant,
    plan: &Plan,
    state: &mut WorkerState,
) {
    loop {
        let Some(stream) = io.stream.as_mut() else {
            return;
        };
        let n = match stream.read(&mut state.read_buf) {
            Ok(0) => return fail(conn, io, "server closed the connection".into(), state),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return fail(conn, io, format!("read failed: {e}"), state),
        };
        let read_buf = std::mem::take(&mut state.read_buf);
        let handled = conn.on_received(&read_buf[..n], received_at, plan, state);
        state.read_buf = read_buf;
        if let Err(why) = handled {
            return fail(conn, io, why, state);
        }
        // A short read emptied the socket; on Linux, bytes arriving later raise a new edge,
        // so the extra read that would only say "would block" is skipped.
        if n < state.read_buf.len() {
            return;
        }
    }
}

/// Queues the connection's new output behind what is unsent and writes it with one `writev`
/// (more only when the output has more segments than one `writev` takes), until the socket
/// pushes back.
fn flush(conn: &mut Connection, io: &mut ConnIo, batch: &mut Vec<Bytes>, state: &mut WorkerState) {
    let Some(stream) = io.stream.as_mut() else {
        return;
    };
    conn.take_output(batch);
    io.unsent.extend(batch.drain(..));
    while !io.unsent.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut offered = 0;
        let mut count = 0;
        for (slice, segment) in slices.iter_mut().zip(io.unsent.iter()) {
            *slice = IoSlice::new(segment);
            offered += segment.len();
            count += 1;
        }
        let wrote = match stream.write_vectored(&slices[..count]) {
            Ok(0) => {
                let why = "write returned 0 bytes: connection closed".to_string();
                return fail(conn, io, why, state);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return fail(conn, io, format!("write failed: {e}"), state),
        };
        let mut written = wrote;
        while written > 0 {
            let front = io
                .unsent
                .front_mut()
                .expect("written bytes came from unsent");
            if written >= front.len() {
                written -= front.len();
                io.unsent.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        if wrote < offered {
            // A short write: the send buffer is full; the writable edge brings us back.
            return;
        }
    }
}

fn fail(conn: &mut Connection, io: &mut ConnIo, why: String, state: &mut WorkerState) {
    // Dropping the socket closes it, which also takes it out of epoll.
    io.stream = None;
    io.unsent.clear();
    if conn.is_open() {
        conn.fail(why, state);
    }
}
