//! WebSocket (RFC 6455) transport pieces, sans-IO: the opening handshake
//! ([`handshake`]), the frame codec ([`frame`]) and the per-connection message state
//! ([`session`]). Bytes go in, events and bytes to send come out; nothing here owns a socket.
//!
//! Invariants: server side only (client frames must be masked, ours never are); no
//! extensions are negotiated, so reserved bits are always a protocol error; every refusal
//! maps to one HTTP status (handshake) or one close code (after the upgrade).
//!
//! # Next step: plugging into `StreamFraming` (not wired yet)
//!
//! `framing::StreamFraming` gets a `WebSocket(WsFraming)` variant; nothing above `Conn`
//! changes. `WsFraming` holds a phase (`Handshake` → `Open` → `Done`), an input `BytesMut`,
//! a [`session::WsSession`] and an `ArpcFraming` for the unwrapped bytes.
//!
//! - **Choosing the variant.** On a `--ws-listen` socket every connection starts in
//!   `Handshake`. On the shared arpc port the first 4 bytes decide: `GET ` read as arpc's
//!   little-endian body length is 542,393,671, over any allowed body, so a connection whose
//!   first bytes are `GET ` switches from `Arpc` to `WebSocket` before any arpc parsing.
//! - **Handshake.** Received bytes are appended to the input buffer and passed to
//!   [`handshake::HandshakeConfig::parse`]: `Ok(None)` waits (the 8 KiB limit bounds the
//!   buffer); `Ok(Some((req, n)))` queues `req.response()` raw on the `OutQueue`, drops `n`
//!   bytes and goes `Open` with whatever followed (already WS frames); `Err(e)` queues
//!   `e.response()` and ends the connection once it is flushed.
//! - **Open.** Bytes are appended to the input buffer (masked payloads must be unmasked in
//!   place, so the WS path copies what the lent `RecvBuf` holds, unlike raw arpc) and
//!   `WsSession::poll` runs until `None`. Each `Message { data, .. }` (binary or text) is fed
//!   to the inner `ArpcFraming::decode`, so arpc parsing and its `DecodeError`s are
//!   unchanged and an arpc frame may span messages (arpc's Go side reads messages as a
//!   stream). `Ping`/`Pong` need nothing; `Closed`/`Failed` end the connection after the
//!   queued Close is flushed. `max_message` is at least `max_body` + the 16-byte arpc header.
//! - **Output.** `WsSession::take_output` (101/error responses, pongs, Close) is pushed raw
//!   (`OutQueue::push_raw`) between whole frames, never inside one. For each arpc frame the
//!   `OutQueue` writes [`session::binary_message_header`]`(frame_len)` into its coalesced
//!   buffer and then the frame as today, so large payloads still go out uncopied as their own
//!   segment. After our Close no more frames are queued (`WsSession::is_open`).
//! - **Seam changes this needs.** `StreamFraming::decode` must be able to queue bytes (give
//!   it the `OutQueue`, or return them) and to say "close after flushing" rather than
//!   "close now", so a refusal's HTTP status or Close code reaches the peer; a reactor timer
//!   bounds the wait for the peer's Close reply and for a slow handshake.

pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod session;
