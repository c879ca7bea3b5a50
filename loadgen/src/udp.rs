//! `--transport udp`: each request is one datagram holding one arpc frame, sent on a
//! non-blocking UDP socket connected to the target (so the kernel drops other senders'
//! datagrams); one epoll loop (mio) per I/O thread drives its sockets, reading each until it
//! would block.
//!
//! Reliability: a request unanswered `retry_after` after its first send is resent with the
//! same seq, the wait doubling after each send, up to `attempts` sends; one backoff after the
//! last send it counts as lost. Latency runs from the first send (or, open loop, the intended
//! send time). A second answer to a seq already answered is a duplicate: counted and
//! discarded, never timed twice.
//!
//! Invariants: a request is in `pending` from its first send until answered, or until it is
//! forgotten [`FORGET_AFTER_TIMEOUTS`] timeouts later once settled (lost or timed out), so a
//! late answer is told from an unknown one; `in_flight` counts the unsettled ones;
//! `next_retry` is never later than the earliest unsettled `retry_at`.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::{Events, Interest, Poll, Token};
use ringrpc_protocol::{Command, Flags, parse_frame, write_frame};

use crate::cli::config::UdpSettings;
use crate::cpu::WindowCpu;
use crate::outcome::record_answer;
use crate::payload;
use crate::window::{FORGET_AFTER_TIMEOUTS, Schedule, SeqHasher};
use crate::worker::{
    HOUSEKEEPING_INTERVAL, Plan, RequestWindow, Shared, WorkerOutput, WorkerState, end_of_turn,
    next_wake, publish,
};

/// Readiness events taken per poll.
const EVENTS: usize = 256;
/// epoll's timeout granularity.
const EPOLL_RESOLUTION: Duration = Duration::from_millis(1);
/// Longest wait for a socket whose send buffer was full to take datagrams again.
const SEND_BACKOFF: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// First send (open loop: intended send time); latency runs from here.
    sent_at: Instant,
    measured: bool,
    /// Lost or timed out: its window slot was reused; an answer now is late.
    settled: bool,
    /// Sends so far.
    attempts: u32,
    /// When to resend, or give up after the last attempt.
    retry_at: Instant,
}

/// One UDP socket and the requests outstanding on it.
#[derive(Debug)]
pub(crate) struct UdpConn {
    id: usize,
    /// `None` once the socket failed.
    socket: Option<mio::net::UdpSocket>,
    pending: HashMap<u64, Pending, BuildHasherDefault<SeqHasher>>,
    in_flight: usize,
    next_seq: u64,
    /// First seq sent in the measured window; duplicates of earlier ones are not counted.
    first_measured_seq: Option<u64>,
    schedule: Option<Schedule>,
    /// Earliest retry (or loss) due, possibly stale-early.
    next_retry: Option<Instant>,
    /// The send buffer was full: no sends until then.
    send_blocked_until: Option<Instant>,
}

/// Opens a non-blocking UDP socket connected to the first address that accepts it.
pub(crate) fn connect_udp(addrs: &[SocketAddr]) -> io::Result<UdpSocket> {
    let mut last_error = None;
    for addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let attempt = UdpSocket::bind(local).and_then(|socket| {
            socket.connect(addr)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        });
        match attempt {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(ErrorKind::AddrNotAvailable, "no addresses")))
}

/// Why a send did not go out.
enum SendError {
    /// Send buffer full (or a transient refusal): try again shortly.
    Again,
    Fatal(String),
}

impl UdpConn {
    pub(crate) fn new(id: usize, socket: UdpSocket, schedule: Option<Schedule>) -> UdpConn {
        UdpConn {
            id,
            socket: Some(mio::net::UdpSocket::from_std(socket)),
            pending: HashMap::default(),
            in_flight: 0,
            next_seq: 1,
            first_measured_seq: None,
            schedule,
            next_retry: None,
            send_blocked_until: None,
        }
    }

    /// When this socket next has something to do on the clock: a retry, or the end of a send
    /// backoff (a millisecond late is fine).
    fn next_wake(&self) -> Option<Instant> {
        self.socket.as_ref()?;
        [self.next_retry, self.send_blocked_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Open loop: when the next request is due (latency counts from then, so it must go out
    /// on time).
    fn next_due(&self, plan: &Plan) -> Option<Instant> {
        self.socket.as_ref()?;
        self.schedule
            .filter(|s| self.in_flight < plan.per_conn && s.next < plan.deadline)
            .map(|s| s.next)
    }

    /// Sends new requests until `per_conn` are in flight (closed loop) or none is due yet
    /// (open loop); none at or after the deadline.
    fn fill_window(&mut self, now: Instant, plan: &Plan, udp: &UdpSettings, io: &mut Io<'_>) {
        if self.socket.is_none() || now >= plan.deadline || self.send_blocked(now) {
            return;
        }
        while self.in_flight < plan.per_conn {
            let sent_at = match self.schedule {
                None => now,
                Some(s) if s.next <= now && s.next < plan.deadline => s.next,
                Some(_) => break,
            };
            let seq = self.next_seq;
            match self.send(seq, plan, io) {
                Ok(()) => {}
                Err(SendError::Again) => {
                    self.send_blocked_until = Some(now + SEND_BACKOFF);
                    break;
                }
                Err(SendError::Fatal(why)) => return self.fail(why, io.state),
            }
            if let Some(s) = self.schedule.as_mut() {
                s.next += s.interval;
            }
            self.next_seq += 1;
            let measured = sent_at >= plan.measure_start;
            if measured {
                io.state.counters.sent += 1;
                self.first_measured_seq.get_or_insert(seq);
            }
            let retry_at = now + udp.backoff(1);
            self.pending.insert(
                seq,
                Pending {
                    sent_at,
                    measured,
                    settled: false,
                    attempts: 1,
                    retry_at,
                },
            );
            self.next_retry = Some(self.next_retry.map_or(retry_at, |r| r.min(retry_at)));
            self.in_flight += 1;
        }
    }

    fn send_blocked(&mut self, now: Instant) -> bool {
        match self.send_blocked_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.send_blocked_until = None;
                false
            }
            None => false,
        }
    }

    /// Encodes request `seq` (its payload regenerated from the seq) and sends it as one
    /// datagram.
    fn send(&mut self, seq: u64, plan: &Plan, io: &mut Io<'_>) -> Result<(), SendError> {
        let Some(socket) = self.socket.as_ref() else {
            return Err(SendError::Fatal("socket closed".into()));
        };
        payload::fill(seq, &mut io.state.payload_buf);
        io.datagram.clear();
        write_frame(
            io.datagram,
            Command::Request,
            Flags::default(),
            0,
            seq,
            &plan.method,
            &io.state.payload_buf,
        );
        loop {
            return match socket.send(io.datagram) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ECONNREFUSED reports an ICMP "port unreachable" for an earlier datagram:
                // that datagram is lost (retries cover it), this one was not sent.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::ConnectionRefused
                    ) =>
                {
                    Err(SendError::Again)
                }
                Err(e) => Err(SendError::Fatal(format!("send failed: {e}"))),
            };
        }
    }

    /// Resends what is due and settles requests out of attempts as lost.
    fn retry_due(&mut self, now: Instant, plan: &Plan, udp: &UdpSettings, io: &mut Io<'_>) {
        match self.next_retry {
            Some(at) if at <= now && self.socket.is_some() => {}
            _ => return,
        }
        if self.send_blocked(now) {
            return;
        }
        let mut next: Option<Instant> = None;
        let mut due: Vec<u64> = std::mem::take(&mut io.due);
        for (&seq, p) in self.pending.iter_mut().filter(|(_, p)| !p.settled) {
            if p.retry_at > now {
                next = Some(next.map_or(p.retry_at, |n| n.min(p.retry_at)));
            } else if p.attempts >= udp.attempts {
                p.settled = true;
                self.in_flight -= 1;
                if p.measured {
                    io.state.counters.lost += 1;
                }
            } else {
                due.push(seq);
            }
        }
        for &seq in &due {
            match self.send(seq, plan, io) {
                Ok(()) => {}
                Err(SendError::Again) => {
                    // The rest stay due; try again once the send buffer drains.
                    self.send_blocked_until = Some(now + SEND_BACKOFF);
                    next = Some(now + SEND_BACKOFF);
                    break;
                }
                Err(SendError::Fatal(why)) => {
                    due.clear();
                    io.due = due;
                    return self.fail(why, io.state);
                }
            }
            let p = self
                .pending
                .get_mut(&seq)
                .expect("a due request is pending");
            p.attempts += 1;
            p.retry_at = now + udp.backoff(p.attempts);
            if p.measured {
                io.state.counters.retries += 1;
            }
            next = Some(next.map_or(p.retry_at, |n| n.min(p.retry_at)));
        }
        due.clear();
        io.due = due;
        self.next_retry = next;
    }

    /// Reads datagrams until the socket would block; each must be exactly one frame.
    fn receive(&mut self, received_at: Instant, plan: &Plan, io: &mut Io<'_>) {
        loop {
            let Some(socket) = self.socket.as_ref() else {
                return;
            };
            let n = match socket.recv(&mut io.state.read_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // An ICMP error for an earlier datagram: that datagram is lost; go on.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return self.fail(format!("recv failed: {e}"), io.state),
            };
            io.state.frames_received += 1;
            let read_buf = std::mem::take(&mut io.state.read_buf);
            self.on_datagram(&read_buf[..n], received_at, plan, io.state);
            io.state.read_buf = read_buf;
        }
    }

    fn on_datagram(
        &mut self,
        datagram: &[u8],
        received_at: Instant,
        plan: &Plan,
        state: &mut WorkerState,
    ) {
        let frame = match parse_frame(datagram, state.decoder.max_body()) {
            Ok(Some((frame, len))) if len == datagram.len() => frame,
            Ok(Some((_, len))) => {
                return state.counters.note_unexpected(format!(
                    "a {}-byte datagram holding more than one frame (the first is {len} bytes)",
                    datagram.len()
                ));
            }
            Ok(None) => {
                return state.counters.note_unexpected(format!(
                    "a {}-byte datagram holding a truncated frame",
                    datagram.len()
                ));
            }
            Err(e) => {
                return state
                    .counters
                    .note_unexpected(format!("an undecodable datagram: {e}"));
            }
        };
        let header = frame.header;
        match header.cmd {
            Command::Response => {}
            // A reflecting server sends our own request back as the answer.
            Command::Request if plan.reflect => {}
            other => {
                return state.counters.note_unexpected(format!(
                    "unsolicited {other:?} datagram with seq {}",
                    header.seq
                ));
            }
        }
        let Some(pending) = self.pending.remove(&header.seq) else {
            if header.seq != 0 && header.seq < self.next_seq {
                // Answered already (a retry's answer, or the server sent two).
                if self
                    .first_measured_seq
                    .is_some_and(|first| header.seq >= first)
                {
                    state.counters.duplicates += 1;
                }
            } else {
                state.counters.note_unexpected(format!(
                    "response to seq {}, which was never sent",
                    header.seq
                ));
            }
            return;
        };
        if pending.settled {
            if pending.measured {
                state.counters.late += 1;
            }
            return;
        }
        self.in_flight -= 1;
        if pending.measured {
            record_answer(
                &header,
                frame.payload,
                header.seq,
                pending.sent_at,
                received_at,
                plan,
                state,
            );
        }
    }

    /// Closes a failed socket; its measured unsettled requests are lost.
    fn fail(&mut self, reason: String, state: &mut WorkerState) {
        let lost = self
            .pending
            .values()
            .filter(|p| p.measured && !p.settled)
            .count();
        state.counters.lost += lost as u64;
        state
            .counters
            .note_connection_failure(format!("socket {}: {reason}", self.id));
        self.pending.clear();
        self.in_flight = 0;
        self.next_retry = None;
        self.socket = None;
    }
}

impl RequestWindow for UdpConn {
    fn expire(&mut self, now: Instant, plan: &Plan, state: &mut WorkerState) {
        let forget_after = plan.timeout * FORGET_AFTER_TIMEOUTS;
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let age = now.saturating_duration_since(p.sent_at);
            if !p.settled && age >= plan.timeout {
                p.settled = true;
                freed += 1;
                if p.measured {
                    state.counters.timeouts += 1;
                }
            }
            !(p.settled && age >= forget_after)
        });
        self.in_flight -= freed;
    }

    fn expire_all(&mut self, state: &mut WorkerState) {
        for p in self.pending.values_mut().filter(|p| !p.settled) {
            p.settled = true;
            if p.measured {
                state.counters.timeouts += 1;
            }
        }
        self.in_flight = 0;
    }

    fn is_done(&self, now: Instant, plan: &Plan) -> bool {
        self.socket.is_none() || (now >= plan.deadline && self.in_flight == 0)
    }
}

/// Per-thread scratch the sockets share.
struct Io<'a> {
    state: &'a mut WorkerState,
    /// The datagram being encoded.
    datagram: &'a mut BytesMut,
    /// Seqs due for a resend, reused.
    due: Vec<u64>,
}

/// Runs `conns` on one epoll loop until each is done or the drain deadline passes.
pub(crate) fn run_udp_worker(
    mut conns: Vec<UdpConn>,
    plan: &Plan,
    shared: &Shared,
) -> Result<WorkerOutput, String> {
    let udp = plan
        .udp
        .expect("a UDP run has UDP settings (checked with the flags)");
    let mut poll = Poll::new().map_err(|e| format!("cannot create an epoll instance: {e}"))?;
    let mut state = WorkerState::new(plan, shared);
    for (i, conn) in conns.iter_mut().enumerate() {
        if let Some(socket) = conn.socket.as_mut() {
            if let Err(e) = poll
                .registry()
                .register(socket, Token(i), Interest::READABLE)
            {
                conn.fail(format!("cannot register with epoll: {e}"), &mut state);
            }
        }
    }
    let mut datagram = BytesMut::with_capacity(udp.max_datagram);
    let mut due = Vec::with_capacity(plan.per_conn);
    let mut events = Events::with_capacity(EVENTS);
    let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
    loop {
        let now = Instant::now();
        cpu.observe(now);
        {
            let mut io = Io {
                state: &mut state,
                datagram: &mut datagram,
                due: std::mem::take(&mut due),
            };
            for conn in conns.iter_mut() {
                conn.retry_due(now, plan, &udp, &mut io);
                if !conn.is_done(now, plan) {
                    conn.fill_window(now, plan, &udp, &mut io);
                }
            }
            due = io.due;
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
        let mut wake_at = next_wake(plan, now, next_housekeeping);
        let mut due_at: Option<Instant> = None;
        for conn in &conns {
            if let Some(at) = conn.next_wake() {
                wake_at = wake_at.min(at);
            }
            if let Some(at) = conn.next_due(plan) {
                due_at = Some(due_at.map_or(at, |d| d.min(at)));
            }
        }
        // epoll waits in whole milliseconds (mio rounds up): wake a millisecond before a due
        // request and spin from there, as the std engine does.
        let mut timeout = wake_at.saturating_duration_since(now);
        let mut spinning = false;
        if let Some(due) = due_at {
            let until_due = due.saturating_duration_since(now);
            if until_due < EPOLL_RESOLUTION {
                timeout = Duration::ZERO;
                spinning = true;
            } else {
                timeout = timeout.min(until_due - EPOLL_RESOLUTION);
            }
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("epoll_wait failed: {e}")),
        }
        if spinning && events.is_empty() {
            std::thread::yield_now();
        }
        let received_at = Instant::now();
        let mut io = Io {
            state: &mut state,
            datagram: &mut datagram,
            due: std::mem::take(&mut due),
        };
        for event in events.iter() {
            if let Some(conn) = conns.get_mut(event.token().0) {
                conn.receive(received_at, plan, &mut io);
            }
        }
        // Refill at once the windows that answers opened, as the TCP engines do.
        for conn in conns.iter_mut() {
            conn.fill_window(received_at, plan, &udp, &mut io);
        }
        due = io.due;
    }
    cpu.finish();
    publish(&mut state, shared);
    Ok(WorkerOutput {
        counters: state.counters,
        cpu_in_window: cpu.used(),
        published_ok: state.published_ok,
    })
}
