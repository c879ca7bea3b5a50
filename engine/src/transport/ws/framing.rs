//! WebSocket as a stream framing: the upgrade handshake (or one plain HTTP GET of a static
//! asset), then arpc frames carried in
//! WebSocket messages (one frame per binary message when we send; any split when we read,
//! as arpc's Go side reads messages as a byte stream).
//!
//! Invariants: bytes to send (the 101 or an HTTP refusal, pongs, Close frames) come out as
//! [`Event::Raw`] in order with the frames, never inside one; after an HTTP refusal or a
//! Close (ours or the peer's) nothing more is read and decoding ends with the reason, so
//! the connection closes once what was queued is flushed; the input buffer is bounded by the
//! handshake's header limit before the upgrade and by the message limit after it, and grows
//! only with the bytes received (a frame's room is at most twice its bytes held, whatever
//! length it announces; so is the inner arpc framing's).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::{DecodeError, FrameRef};

use super::handshake::{HandshakeConfig, HandshakeError, Parsed};
use super::session::{WsEvent, WsSession};
use crate::transport::arpc::{ArpcFraming, Next};

/// What decoding produced, in order.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A whole arpc frame.
    Frame(&'a FrameRef<'a>),
    /// Bytes to send as they are (HTTP response, WebSocket control frames).
    Raw(Bytes),
    /// The upgrade succeeded: from now on every arpc frame sent goes in a binary message.
    Upgraded,
}

/// Why a WebSocket connection ends.
#[derive(Debug)]
pub(crate) enum WsEnd {
    /// The upgrade request was refused with this HTTP status (already queued).
    Refused(HandshakeError),
    /// A plain HTTP request for a static asset was answered (the response is queued).
    Served,
    /// The peer closed with this code (our echo is queued).
    PeerClosed(Option<u16>),
    /// The peer broke the WebSocket protocol; the Close with this code is queued.
    Protocol(u16),
    /// A message's bytes were not valid arpc frames.
    Arpc(DecodeError),
}

#[derive(Debug)]
enum Phase {
    Handshake,
    Open(WsSession),
    Done,
}

/// The WebSocket framing of one connection.
#[derive(Debug)]
pub(crate) struct WsFraming {
    config: Arc<HandshakeConfig>,
    phase: Phase,
    input: BytesMut,
    inner: ArpcFraming,
    max_message: usize,
}

impl WsFraming {
    /// A connection that starts with the upgrade request; messages up to `max_message`.
    pub(crate) fn new(config: Arc<HandshakeConfig>, max_body: u32) -> WsFraming {
        WsFraming {
            config,
            phase: Phase::Handshake,
            input: BytesMut::new(),
            inner: ArpcFraming::new(max_body),
            max_message: max_body as usize + ringrpc_protocol::HEADER_LEN,
        }
    }

    /// Compressed frames inflated since the last call.
    pub(crate) fn take_gzip_in(&mut self) -> u32 {
        self.inner.take_gzip_in()
    }

    /// Bytes held: the request head or undecoded frames, plus a partial arpc frame.
    pub(crate) fn buffered(&self) -> usize {
        self.input.len() + self.inner.buffered()
    }

    /// Feeds received bytes; reports frames and bytes to send through `on_event`. `Err`
    /// ends the connection (after what was queued is flushed).
    pub(crate) fn decode(
        &mut self,
        data: &[u8],
        on_event: &mut dyn FnMut(Event<'_>) -> Next,
    ) -> Result<(), WsEnd> {
        if matches!(self.phase, Phase::Done) {
            return Ok(());
        }
        self.input.extend_from_slice(data);
        if matches!(self.phase, Phase::Handshake) {
            match self.config.parse(&self.input) {
                Ok(None) => return Ok(()),
                Ok(Some((Parsed::Upgrade(request), consumed))) => {
                    let _ = self.input.split_to(consumed);
                    on_event(Event::Raw(Bytes::from(request.response())));
                    on_event(Event::Upgraded);
                    self.phase = Phase::Open(WsSession::new(self.max_message));
                }
                Ok(Some((Parsed::Asset(response), _))) => {
                    self.phase = Phase::Done;
                    self.input = BytesMut::new();
                    on_event(Event::Raw(response));
                    return Err(WsEnd::Served);
                }
                Err(refused) => {
                    self.phase = Phase::Done;
                    self.input = BytesMut::new();
                    on_event(Event::Raw(Bytes::from(refused.response())));
                    return Err(WsEnd::Refused(refused));
                }
            }
        }
        let Phase::Open(session) = &mut self.phase else {
            return Ok(());
        };
        while let Some(event) = session.poll(&mut self.input) {
            if let Some(out) = session.take_output() {
                on_event(Event::Raw(out));
            }
            let end = match event {
                WsEvent::Message { data, .. } => {
                    let mut stopped = false;
                    let decoded = self.inner.decode(&data, |frame, _| {
                        let next = on_event(Event::Frame(frame));
                        stopped |= next == Next::Stop;
                        next
                    });
                    match decoded {
                        Err(e) => Some(WsEnd::Arpc(e)),
                        Ok(()) if stopped => return Ok(()),
                        Ok(()) => None,
                    }
                }
                WsEvent::Ping(_) | WsEvent::Pong(_) => None,
                WsEvent::Closed { code, .. } => Some(WsEnd::PeerClosed(code)),
                WsEvent::Failed(e) => Some(WsEnd::Protocol(e.close_code())),
            };
            if let Some(end) = end {
                self.phase = Phase::Done;
                self.input = BytesMut::new();
                return Err(end);
            }
        }
        Ok(())
    }
}
