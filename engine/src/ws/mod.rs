//! WebSocket (RFC 6455) transport pieces, sans-IO: the opening handshake
//! ([`handshake`]), the frame codec ([`frame`]) and the per-connection message state
//! ([`session`]). Bytes go in, events and bytes to send come out; nothing here owns a socket.
//!
//! Invariants: server side only (client frames must be masked, ours never are); no
//! extensions are negotiated, so reserved bits are always a protocol error; every refusal
//! maps to one HTTP status (handshake) or one close code (after the upgrade).

pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod session;
