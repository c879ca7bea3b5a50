//! WebSocket (RFC 6455) transport pieces, sans-IO: the opening handshake
//! ([`handshake`]), the frame codec ([`frame`]) and the per-connection message state
//! ([`session`]). Bytes go in, events and bytes to send come out; nothing here owns a socket.
//!
//! Invariants: server side only (client frames must be masked, ours never are); no
//! extensions are negotiated, so reserved bits are always a protocol error; every refusal
//! maps to one HTTP status (handshake) or one close code (after the upgrade).
//!
//! # How it plugs in
//!
//! [`framing::WsFraming`] is the `transport::tcp::TcpFraming::WebSocket` variant: a connection on
//! the arpc port whose first bytes are `GET ` becomes one (`GET ` read as an arpc body length
//! is 542,393,671, over any body limit a WebSocket-enabled server accepts). It parses the
//! upgrade with [`handshake`], then runs [`session::WsSession`] over what arrives (copied,
//! since masked payloads are unmasked in place) and feeds each message's bytes to an inner
//! `ArpcFraming`, so arpc parsing is unchanged. Bytes to send (the 101 or a refusal,
//! pongs, Close frames) come out as raw output in order with the frames; after the upgrade
//! the `OutQueue` writes [`session::binary_message_header`] before each arpc frame. A
//! refusal, a Close or a protocol error ends decoding with the reason: the connection's
//! lifecycle flushes what was queued, then closes.

pub(crate) mod frame;
pub(crate) mod framing;
pub(crate) mod handshake;
pub(crate) mod session;
