//! One WebSocket connection after the upgrade, server side, sans-IO: received bytes in,
//! [`WsEvent`]s and bytes to send out. Owns fragment reassembly, UTF-8 validation of text,
//! ping/pong and the close handshake (RFC 6455 §5.4–§5.5, §7).
//!
//! Invariants: a message is delivered only whole, and a fragmented one never holds more than
//! `max_message` bytes (each frame's length is checked against what is left before it is
//! buffered); text is validated as fragments arrive, so bad UTF-8 fails fast; control frames
//! may come between fragments and never disturb the message being assembled; the session
//! sends at most one Close, sends nothing after it, and once closed ignores all input; every
//! protocol error queues exactly one Close carrying its code ([`WsError::close_code`]). The
//! frames this session queues (pong, close) are whole frames, so a writer may put them
//! between, never inside, the data messages it sends.

use bytes::{Bytes, BytesMut};

use super::frame::{self, FrameHeader, Limits, Opcode, WsError};

/// What the peer's bytes amounted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WsEvent {
    /// A whole message (text already validated as UTF-8).
    Message { text: bool, data: Bytes },
    /// A ping; its pong is queued (unless we already sent our Close).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer closed (`code` is `None` for an empty Close). Our echo is queued if we had
    /// not sent a Close; the session is closed: end the connection once output is flushed.
    Closed { code: Option<u16>, reason: String },
    /// The peer broke the protocol; a Close with the error's code is queued (unless we had
    /// sent one) and the session is closed.
    Failed(WsError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// A close we start (`WsSession::close`) and messages we send as text are tested here but
// not used by the engine yet: its shutdown ends WebSocket connections with TCP FIN.
#[cfg_attr(not(test), allow(dead_code))]
enum State {
    Open,
    /// We sent a Close and wait for the peer's.
    CloseSent,
    /// Both sides are done (or we failed); nothing more is read or sent.
    Closed,
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Fragments {
    text: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 (text only).
    utf8_ok: usize,
}

impl Fragments {
    /// Validates the text received since the last call; a sequence cut at the end waits for
    /// the next fragment unless this is the last one.
    fn check_utf8(&mut self, last: bool) -> Result<(), WsError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.utf8_ok..]) {
            Ok(_) => self.utf8_ok = self.data.len(),
            Err(e) if e.error_len().is_none() && !last => self.utf8_ok += e.valid_up_to(),
            Err(_) => return Err(WsError::InvalidUtf8),
        }
        Ok(())
    }
}

/// Whether a close code may appear in a received Close frame (§7.4): the registered codes
/// that are not reserved for local use (1005, 1006, 1015 never go on the wire), and the
/// library/application ranges 3000–4999.
pub(crate) fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The header that turns an already-encoded arpc frame of `len` bytes into one binary
/// message: send these bytes, then the frame unchanged.
pub(crate) fn binary_message_header(len: usize) -> FrameHeader {
    FrameHeader::new(Opcode::Binary, true, len)
}

/// The per-connection WebSocket state, server side.
#[derive(Debug)]
pub(crate) struct WsSession {
    max_message: usize,
    state: State,
    fragments: Option<Fragments>,
    out: BytesMut,
}

impl WsSession {
    /// A session that accepts messages of at most `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            state: State::Open,
            fragments: None,
            out: BytesMut::new(),
        }
    }

    /// Decodes from `input` until one event is ready (`None`: need more bytes, or closed).
    /// Call again until `None`; whole frames are consumed, a partial one stays in `input`.
    pub(crate) fn poll(&mut self, input: &mut BytesMut) -> Option<WsEvent> {
        loop {
            if self.state == State::Closed {
                input.clear();
                return None;
            }
            let held = self.fragments.as_ref().map_or(0, |f| f.data.len());
            let limits = Limits {
                max_payload: self.max_message.saturating_sub(held),
                expect_masked: true,
            };
            let frame = match frame::decode(input, &limits) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) => return Some(self.fail(input, e)),
            };
            let step = match frame.opcode {
                Opcode::Ping => {
                    if self.state == State::Open {
                        frame::encode_frame(Opcode::Pong, true, &frame.payload, &mut self.out);
                    }
                    Ok(Some(WsEvent::Ping(frame.payload.freeze())))
                }
                Opcode::Pong => Ok(Some(WsEvent::Pong(frame.payload.freeze()))),
                Opcode::Close => self.on_close(frame.payload).map(Some),
                Opcode::Text | Opcode::Binary => {
                    self.on_first(frame.opcode, frame.fin, frame.payload)
                }
                Opcode::Continuation => self.on_continuation(frame.fin, &frame.payload),
            };
            match step {
                Ok(Some(event)) => return Some(event),
                Ok(None) => {}
                Err(e) => return Some(self.fail(input, e)),
            }
        }
    }

    fn on_first(
        &mut self,
        opcode: Opcode,
        fin: bool,
        payload: BytesMut,
    ) -> Result<Option<WsEvent>, WsError> {
        if self.fragments.is_some() {
            return Err(WsError::Protocol("new message inside a fragmented one"));
        }
        let mut f = Fragments {
            text: opcode == Opcode::Text,
            data: payload,
            utf8_ok: 0,
        };
        f.check_utf8(fin)?;
        if fin {
            return Ok(Some(WsEvent::Message {
                text: f.text,
                data: f.data.freeze(),
            }));
        }
        self.fragments = Some(f);
        Ok(None)
    }

    fn on_continuation(&mut self, fin: bool, payload: &[u8]) -> Result<Option<WsEvent>, WsError> {
        let Some(f) = self.fragments.as_mut() else {
            return Err(WsError::Protocol("continuation without a message"));
        };
        f.data.extend_from_slice(payload);
        f.check_utf8(fin)?;
        if !fin {
            return Ok(None);
        }
        let f = self.fragments.take().expect("checked above");
        Ok(Some(WsEvent::Message {
            text: f.text,
            data: f.data.freeze(),
        }))
    }

    fn on_close(&mut self, payload: BytesMut) -> Result<WsEvent, WsError> {
        let (code, reason) = match payload.len() {
            0 => (None, String::new()),
            1 => return Err(WsError::Protocol("close payload of one byte")),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !close_code_valid(code) {
                    return Err(WsError::Protocol("invalid close code"));
                }
                let reason =
                    std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
                (Some(code), reason.to_owned())
            }
        };
        if self.state == State::Open {
            let echo = code.map(u16::to_be_bytes);
            let echo: &[u8] = echo.as_ref().map_or(&[], |c| &c[..]);
            frame::encode_frame(Opcode::Close, true, echo, &mut self.out);
        }
        self.state = State::Closed;
        self.fragments = None;
        Ok(WsEvent::Closed { code, reason })
    }

    fn fail(&mut self, input: &mut BytesMut, e: WsError) -> WsEvent {
        if self.state == State::Open {
            let code = e.close_code().to_be_bytes();
            frame::encode_frame(Opcode::Close, true, &code, &mut self.out);
        }
        self.state = State::Closed;
        self.fragments = None;
        input.clear();
        WsEvent::Failed(e)
    }

    /// Starts the close handshake from our side: queues a Close with `code` and `reason`
    /// (cut to fit 125 bytes at a character boundary). Returns false, queuing nothing, if a
    /// Close was already sent or `code` may not be sent.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn close(&mut self, code: u16, reason: &str) -> bool {
        if self.state != State::Open || !close_code_valid(code) {
            return false;
        }
        let mut end = reason.len().min(frame::MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        frame::encode_frame(Opcode::Close, true, &payload, &mut self.out);
        self.state = State::CloseSent;
        true
    }

    /// Queues one whole message (a binary one carries e.g. an arpc frame). Returns false,
    /// queuing nothing, once our Close is sent.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn send(&mut self, text: bool, payload: &[u8]) -> bool {
        if self.state != State::Open {
            return false;
        }
        let op = if text { Opcode::Text } else { Opcode::Binary };
        frame::encode_frame(op, true, payload, &mut self.out);
        true
    }

    /// The bytes queued to send since the last call (whole frames), if any.
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// Whether we may still send data messages (no Close sent yet).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the session is over: flush the output, then end the connection.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
}

#[cfg(test)]
mod tests;
