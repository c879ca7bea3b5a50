//! Large echoes checked piece by piece as they arrive, never assembled: once the partial
//! frame a connection holds is recognised as the echo of one of its calls with at least
//! [`CHECK_AS_IT_ARRIVES_MIN`] bytes still to come, its payload is compared with what was
//! sent as each piece comes in, and only the first difference is kept.
//!
//! Invariants:
//! - Only an echo whose outcome the payload alone decides is taken over: a Response (or a
//!   reflected Request) to a `call`, with no error or user flags, of the expected length.
//! - Its header and method have arrived before it is taken over, so an [`Incoming`] takes
//!   payload bytes only, and no more than its payload's length: what follows in the same
//!   read belongs to the next frames.

use ringrpc_protocol::{Command, Header};

use crate::pattern::Pattern;
use crate::payload;

/// An echo with at least this much still to come is checked as it arrives instead of being
/// assembled first.
const CHECK_AS_IT_ARRIVES_MIN: usize = 4096;

/// An echo whose payload is checked against what was sent as its pieces arrive.
#[derive(Debug)]
pub(crate) struct Incoming {
    header: Header,
    seed: u64,
    /// Payload bytes checked so far.
    checked: usize,
    /// Payload bytes still to come.
    remaining: usize,
    /// The first payload byte that differed.
    difference: Option<usize>,
}

impl Incoming {
    /// Checks the next bytes of the payload; returns how many of `data` were its.
    pub(crate) fn take(&mut self, data: &[u8]) -> usize {
        let n = self.remaining.min(data.len());
        if self.difference.is_none() {
            self.difference = payload::first_difference_from(self.seed, self.checked, &data[..n]);
        }
        self.checked += n;
        self.remaining -= n;
        n
    }

    /// The whole payload has arrived and been checked.
    pub(crate) fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// The seq of the call it answers.
    pub(crate) fn seq(&self) -> u64 {
        self.header.seq
    }

    /// Why the echo is not the `payload_len`-byte payload sent, or `None` if it is.
    pub(crate) fn mismatch(&self, payload_len: usize) -> Option<String> {
        let seq = self.header.seq;
        self.difference
            .map(|at| payload::difference_message(seq, at, payload_len))
    }
}

/// When `partial` (the start of a frame, all that has arrived of it) is a large echo of one
/// of our calls (`seed_of` gives the seed of an outstanding seq), checks what arrived of its
/// payload and returns the echo to check the rest of as it arrives; the caller then drops
/// `partial` instead of keeping it.
pub(crate) fn check_partial_as_it_arrives(
    partial: &[u8],
    max_body: u32,
    pattern: Pattern,
    reflect: bool,
    payload_len: usize,
    seed_of: impl FnOnce(u64) -> Option<u64>,
) -> Option<Incoming> {
    let head = partial.first_chunk::<{ ringrpc_protocol::HEADER_LEN }>()?;
    // A bad header is refused when the whole frame is parsed.
    let header = Header::parse(head, max_body).ok()?;
    let echo = match header.cmd {
        Command::Response => true,
        Command::Request => reflect,
        _ => false,
    };
    let payload_at = ringrpc_protocol::HEADER_LEN + header.method_len as usize;
    let frame_len = header.frame_len();
    if !echo
        || pattern != Pattern::Call
        || header.flags.is_error()
        || header.user_flags != 0
        || header.payload_len() != payload_len
        || partial.len() < payload_at
        || frame_len - partial.len() < CHECK_AS_IT_ARRIVES_MIN
    {
        return None;
    }
    let seed = seed_of(header.seq)?;
    let mut incoming = Incoming {
        header,
        seed,
        checked: 0,
        remaining: header.payload_len(),
        difference: None,
    };
    incoming.take(&partial[payload_at..]);
    Some(incoming)
}
