//! One connection's lifecycle as a sans-IO state machine: where the connection is in its
//! life ([`Phase`]), what its recv is doing ([`RecvState`]), whether a send is in
//! flight, and the clocks behind its timers (idle, read, keepalive, linger).
//!
//! It owns decisions, not resources: the reactor feeds it completions and requests (each a
//! method taking the reactor's `now` where time matters), then calls [`Lifecycle::poll`] with
//! the [`Facts`] it knows about the connection's buffers and gets back [`Actions`] to carry
//! out (start a send, arm or cancel the recv, shut the socket, queue a Ping, report an
//! overstock, release the slot). [`Lifecycle::next_deadline`] says when the connection wants
//! to be polled again without any input. Nothing here touches a socket, the ring or the clock.
//!
//! The life of a connection:
//! `Open` → (close requested or peer EOF) `Finishing` → (output flushed) FIN, `Lingering` →
//! `Closing` → `Released`; `Open` also goes straight to `Lingering` once a shutdown drain
//! target is reached with output flushed; a protocol or authentication failure goes to
//! `Failing` (read no more, flush what the valid frames earned) → `Closing`; socket errors,
//! timeouts and a forced shutdown go straight to `Closing`.
//!
//! Invariants:
//! - A connection is released (its slot may be freed) only in `Closing`, with no recv in
//!   flight (multishot or direct) or being cancelled and no send in flight; release happens once, then every input is
//!   ignored.
//! - The close reason is decided once: the first of failure, error, timeout or shutdown wins
//!   and is the one released; later ones are dropped.
//! - Nothing re-arms the recv after peer EOF, a failure or the decision to close; a recv that
//!   ends is re-armed only while the connection still reads and is not paused.
//! - No send starts once the close is decided; a send in flight is always waited for.
//! - `poll` never allocates: a recv of data that changes nothing costs a few branches.
//! - A shutdown drain drops nothing owed: the FIN waits until every answer owed
//!   (`Facts::answers_owed`) is queued and flushed; only a close request, a failure, an error
//!   or the end of the shutdown grace cuts it short. Peer EOF is a disconnect: what is queued
//!   is flushed, answers still owed are not waited for (their tasks are dropped at release).

use std::io;
use std::time::{Duration, Instant};

use crate::error::DisconnectReason;

mod actions;
pub(crate) use actions::{Actions, Facts};

/// A connection that got our FIN is closed once its peer has sent nothing for this long.
pub(crate) const LINGER_QUIET: Duration = Duration::from_millis(100);
/// Longest a connection lingers after our FIN while its peer keeps sending.
pub(crate) const LINGER_MAX: Duration = Duration::from_secs(2);
/// How soon a lingering connection that is quiet but still has unread input is re-checked.
pub(crate) const LINGER_TICK: Duration = Duration::from_millis(20);

/// The limits and timeouts every connection of a reactor shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LifecycleConfig {
    /// Close a connection whose peer sent nothing for this long.
    pub(crate) idle_timeout: Option<Duration>,
    /// Close a connection holding a partial frame started this long ago.
    pub(crate) read_timeout: Option<Duration>,
    /// Send one Ping after the peer was quiet for this long.
    pub(crate) keepalive: Option<Duration>,
    /// Pause reading above this many unsent bytes (in flight included).
    pub(crate) max_send_queue_bytes: usize,
    /// Pause reading above this many frames not yet handed to a send.
    pub(crate) max_send_queue_frames: u64,
    /// Whether being over those limits stops reading. A server's connections do: their
    /// peer's requests are what fills the output. A client's do not: its own calls fill
    /// it (and new ones are refused past the limits), and a client that stopped reading
    /// answers while a server stopped reading its calls would leave both waiting forever.
    pub(crate) pause_reading: bool,
    pub(crate) linger_quiet: Duration,
    pub(crate) linger_max: Duration,
    pub(crate) linger_tick: Duration,
}

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading and writing.
    Open,
    /// A close was requested or the peer sent EOF: FIN once output is flushed. Input is still
    /// decoded (after a close request; after EOF none comes).
    Finishing,
    /// The peer broke the protocol or did not authenticate: read no more, flush the output
    /// its valid frames earned, then close with this reason (boxed, as in `Closing`).
    Failing(Box<DisconnectReason>),
    /// Our FIN went out at `since`: input is read and discarded until the peer closes, goes
    /// quiet with nothing unread, or `linger_max` passes.
    Lingering { since: Instant },
    /// The close is decided: both directions shut, waiting for the recv and send in flight.
    /// The reason is boxed so that a slot, whose phase is usually `Open`, does not carry
    /// its 32 bytes: one allocation per close, 24 bytes less per connection.
    Closing(Box<DisconnectReason>),
    /// Handed back to the reactor with its reason; every later input is ignored.
    Released,
}

/// What the connection's recv is doing: its multishot recv into the shared buffers, or one
/// recv of the rest of a large frame straight into that frame's own buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// Armed: completions may arrive.
    Armed,
    /// A recv of the rest of the partial frame into its own buffer is in flight; once it
    /// completes the multishot is armed again. Not cancelled for back-pressure: it is bounded
    /// by the one frame already accepted.
    Direct,
    /// Not armed; the next poll arms it (or settles it as `Paused` / `Stopped`).
    Idle,
    /// Not armed because unsent output passed its limit; armed again below half of it.
    Paused,
    /// A cancel was issued; its final completion is still to come.
    Cancelling,
    /// Never armed again (peer EOF, failing, closing).
    Stopped,
}

/// One connection's lifecycle; see the module docs.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: Phase,
    recv: RecvState,
    send_in_flight: bool,
    /// The peer sent EOF.
    peer_eof: bool,
    /// A handle asked to close once queued output is written.
    close_requested: bool,
    /// Back-pressure latch: set above the limits, cleared at or below half of both.
    paused: bool,
    /// `shutdown(Both)` was requested.
    shut_both: bool,
    /// A keepalive Ping went out since the peer last sent anything.
    pinged: bool,
    /// When the peer last sent anything.
    last_active: Instant,
    /// When the partial frame held now was started (`None` between frames).
    partial_since: Option<Instant>,
    /// Shutdown drain: close once this many bytes were decoded and no frame is partial.
    drain_target: Option<u64>,
    /// When a lingering connection wants its next check (set by poll).
    linger_check: Option<Instant>,
}

fn after(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Lifecycle {
    /// A connection accepted at `now`; its recv is armed by the first poll.
    pub(crate) fn new(now: Instant) -> Lifecycle {
        Lifecycle {
            phase: Phase::Open,
            recv: RecvState::Idle,
            send_in_flight: false,
            peer_eof: false,
            close_requested: false,
            paused: false,
            shut_both: false,
            pinged: false,
            last_active: now,
            partial_since: None,
            drain_target: None,
            linger_check: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Closing gracefully: output is being flushed before the FIN.
    pub(crate) fn is_finishing(&self) -> bool {
        matches!(self.phase, Phase::Finishing)
    }

    #[cfg(test)]
    pub(crate) fn recv_state(&self) -> RecvState {
        self.recv
    }

    #[cfg(test)]
    pub(crate) fn send_in_flight(&self) -> bool {
        self.send_in_flight
    }

    /// Reading paused for back-pressure (a broadcast to it is dropped).
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// The close is decided (or done): handles see the connection as gone.
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.phase, Phase::Closing(_) | Phase::Released)
    }

    /// Input is decoded: not failing, not lingering, not closing.
    pub(crate) fn is_reading(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Finishing)
    }

    /// Still takes new output such as broadcasts: not closing and no FIN sent.
    pub(crate) fn is_open(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::Finishing | Phase::Failing(_)
        )
    }

    /// Decides the close reason, unless one is decided already.
    fn close(&mut self, reason: DisconnectReason) {
        if !self.is_dead() {
            self.phase = Phase::Closing(Box::new(reason));
        }
    }

    /// The recv ended (a completion without the "more" flag).
    fn recv_ended(&mut self) {
        if matches!(
            self.recv,
            RecvState::Armed | RecvState::Direct | RecvState::Cancelling
        ) {
            self.recv = RecvState::Idle;
        }
    }

    /// Recv data arrived (`more`: the multishot stays armed). Returns whether to decode it;
    /// if not, the reactor discards it. After decoding, call [`Lifecycle::decoded`].
    pub(crate) fn recv_data(&mut self, now: Instant, more: bool) -> bool {
        if matches!(self.phase, Phase::Released) {
            return false;
        }
        self.last_active = now;
        self.pinged = false;
        if !more {
            self.recv_ended();
        }
        self.is_reading()
    }

    /// Data was decoded; `partial_held`: a partial frame is held after it.
    pub(crate) fn decoded(&mut self, now: Instant, partial_held: bool) {
        if !self.is_reading() {
            return;
        }
        self.partial_since = if partial_held {
            self.partial_since.or(Some(now))
        } else {
            None
        };
    }

    /// The peer broke the protocol or did not authenticate: read no more, flush the output
    /// earned so far, then close with `reason`. Only the first failure counts, and only
    /// while reading.
    pub(crate) fn fail(&mut self, reason: DisconnectReason) {
        if self.is_reading() {
            self.phase = Phase::Failing(Box::new(reason));
        }
    }

    /// Recv result 0: the peer sent EOF (the multishot ended).
    pub(crate) fn recv_eof(&mut self) {
        if matches!(self.phase, Phase::Released) {
            return;
        }
        self.peer_eof = true;
        self.recv_ended();
        if matches!(self.phase, Phase::Open) {
            self.phase = Phase::Finishing;
        }
    }

    /// Recv ENOBUFS: the provided buffers ran out and the multishot ended; it is re-armed.
    pub(crate) fn recv_no_buffers(&mut self) {
        self.recv_ended();
    }

    /// Recv ECANCELED: the cancel took effect.
    pub(crate) fn recv_cancelled(&mut self) {
        self.recv_ended();
    }

    /// Any other recv error; `more` is false for a multishot that ended with it.
    pub(crate) fn recv_error(&mut self, err: io::Error, more: bool) {
        if !more {
            self.recv_ended();
        }
        self.close(DisconnectReason::Socket(err));
    }

    /// Arming the recv (or starting the direct recv) that poll asked for failed.
    pub(crate) fn recv_arm_failed(&mut self, err: io::Error) {
        if matches!(self.recv, RecvState::Armed | RecvState::Direct) {
            self.recv = RecvState::Stopped;
        }
        self.close(DisconnectReason::Socket(err));
    }

    /// Starting the send that poll asked for failed.
    pub(crate) fn send_start_failed(&mut self, err: io::Error) {
        self.send_in_flight = false;
        self.close(DisconnectReason::Socket(err));
    }

    /// The send in flight completed: `Ok(bytes written)` (the reactor consumes them) or the
    /// error that closes the connection.
    pub(crate) fn send_done(&mut self, result: io::Result<usize>) {
        if matches!(self.phase, Phase::Released) {
            return;
        }
        self.send_in_flight = false;
        if let Err(e) = result {
            self.close(DisconnectReason::Socket(e));
        }
    }

    /// A handle asked to close once the queued output is written.
    pub(crate) fn request_close(&mut self) {
        if self.is_dead() {
            return;
        }
        self.close_requested = true;
        if matches!(self.phase, Phase::Open) {
            self.phase = Phase::Finishing;
        }
    }

    /// Server shutdown began: everything the peer sent so far (`bytes_in` decoded plus
    /// `unread` still in the socket, 0 if unknown) is owed an answer, then the connection
    /// closes with [`DisconnectReason::Shutdown`].
    pub(crate) fn begin_drain(&mut self, bytes_in: u64, unread: Option<usize>) {
        self.drain_target = Some(bytes_in + unread.unwrap_or(0) as u64);
    }

    /// The shutdown grace expired.
    pub(crate) fn force_close(&mut self) {
        self.close(DisconnectReason::Shutdown);
    }

    /// Applies due timers and moves the connection on; returns what the reactor must do.
    /// `unread` (bytes unread in the socket, `None` if unknown) is asked only when a
    /// lingering connection has been quiet long enough to close.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        cfg: &LifecycleConfig,
        facts: &Facts,
        unread: impl FnOnce() -> Option<usize>,
    ) -> Actions {
        let mut out = Actions::default();
        if matches!(self.phase, Phase::Released) {
            return out;
        }
        let mut output_empty = facts.output_empty;

        // Timers, for connections neither closing nor lingering.
        if self.is_open() {
            let quiet = now.saturating_duration_since(self.last_active);
            let frame_too_old = self
                .partial_since
                .zip(cfg.read_timeout)
                .is_some_and(|(since, limit)| now.saturating_duration_since(since) >= limit);
            if frame_too_old {
                self.close(DisconnectReason::ReadTimeout);
            } else if cfg.idle_timeout.is_some_and(|limit| quiet >= limit) {
                self.close(DisconnectReason::IdleTimeout);
            } else if !self.pinged && cfg.keepalive.is_some_and(|every| quiet >= every) {
                self.pinged = true;
                out.bits |= Actions::QUEUE_PING;
                output_empty = false;
            }
        }

        // One send at a time, none once the close is decided.
        if !self.is_dead() && !self.send_in_flight && !output_empty {
            self.send_in_flight = true;
            out.bits |= Actions::START_SEND;
        }

        // Back-pressure, with hysteresis.
        let bytes = facts.backlog_bytes;
        let frames = if out.start_send() {
            0
        } else {
            facts.backlog_frames
        };
        if !self.paused
            && !self.is_dead()
            && (bytes > cfg.max_send_queue_bytes || frames > cfg.max_send_queue_frames)
        {
            self.paused = true;
            out.bits |= Actions::OVERSTOCKED;
        } else if self.paused
            && bytes <= cfg.max_send_queue_bytes / 2
            && frames <= cfg.max_send_queue_frames / 2
        {
            self.paused = false;
        }

        // The close sequence.
        self.linger_check = None;
        let output_done = !self.send_in_flight && output_empty;
        if output_done {
            if matches!(self.phase, Phase::Failing(_)) {
                if let Phase::Failing(reason) = std::mem::replace(&mut self.phase, Phase::Open) {
                    self.phase = Phase::Closing(reason);
                }
            } else if !self.is_dead() && (self.peer_eof || self.drained(facts)) {
                // Everything owed is written: FIN, then linger reading and discarding, so
                // input still arriving never turns our close into a reset that destroys
                // responses the peer has not read yet.
                let since = match self.phase {
                    Phase::Lingering { since } => since,
                    _ => {
                        out.bits |= Actions::SHUT_WRITE;
                        self.phase = Phase::Lingering { since: now };
                        now
                    }
                };
                if self.peer_eof {
                    self.close(DisconnectReason::PeerClosed);
                } else {
                    let quiet_at = after(self.last_active, cfg.linger_quiet);
                    let quiet = quiet_at.is_some_and(|t| now >= t) && unread() == Some(0);
                    let too_long = now.saturating_duration_since(since) >= cfg.linger_max;
                    if quiet || too_long {
                        self.close(if self.close_requested {
                            DisconnectReason::Closed
                        } else {
                            DisconnectReason::Shutdown
                        });
                    } else {
                        let recheck = match quiet_at {
                            Some(t) if t > now => Some(t),
                            _ => after(now, cfg.linger_tick),
                        };
                        self.linger_check = earliest(recheck, after(since, cfg.linger_max));
                    }
                }
            }
        }

        if self.is_dead() && !self.shut_both {
            self.shut_both = true;
            out.bits |= Actions::SHUT_BOTH;
        }

        // Bring the recv in line with the phase.
        let may_read = matches!(
            self.phase,
            Phase::Open | Phase::Finishing | Phase::Lingering { .. }
        ) && !self.peer_eof;
        // Held back by our own output (overstocked, on a server) or by a full consumer.
        let hold = (self.paused && cfg.pause_reading) || facts.hold_reading;
        // The multishot gives way to a direct recv of a large frame's rest.
        let direct = facts.direct_wanted && self.is_reading();
        match self.recv {
            RecvState::Armed if !may_read || hold || direct => {
                self.recv = RecvState::Cancelling;
                out.bits |= Actions::CANCEL_RECV;
            }
            RecvState::Direct if !may_read => {
                self.recv = RecvState::Cancelling;
                out.bits |= Actions::CANCEL_RECV;
            }
            RecvState::Idle if may_read && !hold => {
                self.arm(direct, &mut out);
            }
            // Resuming re-arms only a connection that still decodes input.
            RecvState::Paused if may_read && !hold && self.is_reading() => {
                self.arm(direct, &mut out);
            }
            RecvState::Idle if may_read => self.recv = RecvState::Paused,
            RecvState::Paused if may_read && hold => {}
            RecvState::Idle | RecvState::Paused => self.recv = RecvState::Stopped,
            _ => {}
        }

        if matches!(self.phase, Phase::Closing(_))
            && !matches!(
                self.recv,
                RecvState::Armed | RecvState::Direct | RecvState::Cancelling
            )
            && !self.send_in_flight
        {
            if let Phase::Closing(reason) = std::mem::replace(&mut self.phase, Phase::Released) {
                out.release = Some(*reason);
            }
        }
        out
    }

    /// Starts the recv: the direct one when `direct`, else the multishot.
    fn arm(&mut self, direct: bool, out: &mut Actions) {
        if direct {
            self.recv = RecvState::Direct;
            out.bits |= Actions::START_DIRECT;
        } else {
            self.recv = RecvState::Armed;
            out.bits |= Actions::ARM_RECV;
        }
    }

    /// Shutdown drain done: asked to close, or everything owed was decoded, no frame is
    /// partial and no answer is still owed.
    fn drained(&self, facts: &Facts) -> bool {
        self.close_requested
            || self.drain_target.is_some_and(|target| {
                facts.bytes_in >= target && facts.partial_len == 0 && facts.answers_owed == 0
            })
    }

    /// The earliest instant this connection wants to be polled without new input: read,
    /// idle or keepalive timeout while open; while lingering, the instant the peer will
    /// have been quiet for `linger_quiet` (or `linger_tick` after the last poll if it was
    /// quiet but input was still unread), capped at `since + linger_max`; `None` when
    /// nothing is pending (closing connections wait for completions). Recomputed by each
    /// input and poll, so the reactor re-reads it after them.
    pub(crate) fn next_deadline(&self, cfg: &LifecycleConfig) -> Option<Instant> {
        match self.phase {
            Phase::Open | Phase::Finishing | Phase::Failing(_) => {
                let read = self
                    .partial_since
                    .zip(cfg.read_timeout)
                    .and_then(|(t, d)| after(t, d));
                let idle = cfg.idle_timeout.and_then(|d| after(self.last_active, d));
                let ping = cfg
                    .keepalive
                    .filter(|_| !self.pinged)
                    .and_then(|d| after(self.last_active, d));
                earliest(earliest(read, idle), ping)
            }
            Phase::Lingering { .. } => self.linger_check,
            Phase::Closing(_) | Phase::Released => None,
        }
    }
}

#[cfg(test)]
mod tests;
