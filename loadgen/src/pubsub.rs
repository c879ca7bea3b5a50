//! `--pattern pubsub`: publishers and subscribers of one topic, on Go arpc's pub/sub wire
//! (`in_A`, `in_S`, `in_P`; see docs/protocol.md).
//!
//! Publishers are the `--conns` connections of the ordinary I/O threads: one unit is one
//! `in_P` Request, settled by its Response like a call (see the `conn` module). Subscribers are
//! `--subscribers` further connections, each read by a thread of its own over a plain
//! blocking socket; they authenticate and subscribe (every `in_S` answered) before the first
//! publish.
//!
//! Each publication's data is a [`Message`] header (publisher id, per-publisher seq, send
//! time, measured or not) followed by `--payload` pattern bytes, so a subscriber checks and
//! times every delivery by itself. Per subscriber and publisher a [`SeqBits`] remembers the
//! seqs delivered (a second one is a duplicate); publishers remember the seqs whose `in_P`
//! was answered OK. After the publishers drain, the subscribers read on until each has
//! every expected delivery or `--timeout` more passes; then `lost` is, per subscriber, the
//! publishes answered OK that it never received.
//!
//! Invariant: per subscriber, every measured publish answered OK is exactly one of
//! delivered or lost; `expected = answered × subscribers`.
//!
//! The parts, imports pointing one way: `publication` (the bytes of a publication, its routes
//! and clock), `deliveries` (seq sets and one subscriber's counts; uses `publication`) and
//! `subscribers` (the subscriber threads and a publisher's `in_A`; uses both).

pub(crate) mod deliveries;
pub(crate) mod publication;
pub(crate) mod subscribers;

pub use deliveries::{Deliveries, Delivery, SeqBits};
pub use publication::{
    MESSAGE_HEADER_LEN, METHOD_AUTH, METHOD_PUBLISH, METHOD_SUBSCRIBE, Message, decode_publication,
    encode_publication,
};
