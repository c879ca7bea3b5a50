//! What the reactor tells a connection's lifecycle when it polls ([`Facts`]) and what the
//! poll tells it to do ([`Actions`]), in the order it must be done.

use crate::error::DisconnectReason;

/// What the reactor knows about the connection's buffers when it polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Nothing queued to send (a batch in flight does not count).
    pub(crate) output_empty: bool,
    /// Bytes received and decoded so far.
    pub(crate) bytes_in: u64,
    /// Bytes of the partial frame held (0 between frames).
    pub(crate) partial_len: usize,
    /// Unsent bytes, queued or in flight (a Ping this poll asks for is not counted).
    pub(crate) backlog_bytes: usize,
    /// Frames queued and not yet handed to a send; a send started by this poll takes all of
    /// them, so poll counts them as 0 once it starts one.
    pub(crate) backlog_frames: u64,
    /// A consumer is full (a stream's inbox): do not read until it drains.
    pub(crate) hold_reading: bool,
    /// The partial frame's rest is large enough to receive straight into its own buffer.
    pub(crate) direct_wanted: bool,
    /// Answers owed to the peer and not yet queued (a responder, a blocking job or a task
    /// will answer): a shutdown drain's FIN waits for them.
    pub(crate) answers_owed: usize,
}

/// What the reactor must do after a poll, in this order: queue the Ping, start the send,
/// cancel or arm the recv (or start the direct recv), shut write, shut both, report the overstock, release the slot.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Actions {
    pub(super) bits: u8,
    /// Free the slot (fail pending calls, run the disconnect hooks) with this reason.
    pub(crate) release: Option<DisconnectReason>,
}

impl Actions {
    pub(super) const QUEUE_PING: u8 = 1;
    pub(super) const START_SEND: u8 = 1 << 1;
    pub(super) const CANCEL_RECV: u8 = 1 << 2;
    pub(super) const ARM_RECV: u8 = 1 << 3;
    pub(super) const SHUT_WRITE: u8 = 1 << 4;
    pub(super) const SHUT_BOTH: u8 = 1 << 5;
    pub(super) const OVERSTOCKED: u8 = 1 << 6;
    pub(super) const START_DIRECT: u8 = 1 << 7;

    fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    /// Nothing to do.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.bits == 0 && self.release.is_none()
    }
    /// Queue a keepalive Ping (a send for it is also requested).
    pub(crate) fn queue_ping(&self) -> bool {
        self.has(Self::QUEUE_PING)
    }
    /// Hand the queued output to one send; the lifecycle now counts it in flight.
    pub(crate) fn start_send(&self) -> bool {
        self.has(Self::START_SEND)
    }
    /// Cancel the armed recv; its final completion comes back as `recv_cancelled` (or
    /// whatever ended it first).
    pub(crate) fn cancel_recv(&self) -> bool {
        self.has(Self::CANCEL_RECV)
    }
    /// Arm a multishot recv; the lifecycle now counts it armed.
    pub(crate) fn arm_recv(&self) -> bool {
        self.has(Self::ARM_RECV)
    }
    /// Start one recv of the rest of the partial frame into its own buffer; the lifecycle
    /// now counts it as the recv in flight (its completion comes back as `recv_data`,
    /// `recv_eof`, `recv_cancelled` or `recv_error`, like a multishot's last).
    pub(crate) fn start_direct(&self) -> bool {
        self.has(Self::START_DIRECT)
    }
    /// `shutdown(Write)`: send our FIN.
    pub(crate) fn shut_write(&self) -> bool {
        self.has(Self::SHUT_WRITE)
    }
    /// `shutdown(Both)`.
    pub(crate) fn shut_both(&self) -> bool {
        self.has(Self::SHUT_BOTH)
    }
    /// Reading paused for back-pressure: count it and run the overstock hook.
    pub(crate) fn overstocked(&self) -> bool {
        self.has(Self::OVERSTOCKED)
    }
}
