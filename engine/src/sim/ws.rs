//! A WebSocket client's side of the framing, for the simulator: the upgrade request, masked
//! frames out, and the server's answer (the `101` head, then unmasked frames) decoded with
//! the engine's own frame codec in client mode.

use bytes::{BufMut, BytesMut};

use crate::transport::ws::frame::{self, Limits, Opcode};

/// The upgrade request a client sends first, for path `/ws`.
pub fn upgrade_request(key_seed: u64) -> Vec<u8> {
    use base64::Engine as _;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&key_seed.to_le_bytes());
    raw[8..].copy_from_slice(&key_seed.rotate_left(17).to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(raw);
    format!(
        "GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

fn masked(opcode: Opcode, fin: bool, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push((u8::from(fin) << 7) | opcode.bits());
    let len = payload.len();
    if len <= 125 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    frame::apply_mask(&mut out[start..], mask);
}

/// `data` as one binary message cut into frames of the given sizes (the last frame takes
/// the rest; continuation frames after the first), each masked with `mask`; a Ping is put
/// between fragments where `ping_after` says (fragment indices).
pub fn client_message(data: &[u8], cuts: &[usize], ping_after: &[usize], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16 * (cuts.len() + 1));
    let mut rest = data;
    let mut index = 0;
    loop {
        let take = cuts
            .get(index)
            .copied()
            .unwrap_or(rest.len())
            .min(rest.len());
        let last = take == rest.len();
        let opcode = if index == 0 {
            Opcode::Binary
        } else {
            Opcode::Continuation
        };
        masked(opcode, last, &rest[..take], mask, &mut out);
        rest = &rest[take..];
        if last {
            return out;
        }
        if ping_after.contains(&index) {
            masked(Opcode::Ping, true, b"sim", mask, &mut out);
        }
        index += 1;
    }
}

/// A masked Close frame with `code`.
pub fn client_close(code: u16, mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    masked(Opcode::Close, true, &code.to_be_bytes(), mask, &mut out);
    out
}

/// What the server sent, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// The response head's status (`101` for an upgrade).
    Status(u16),
    /// Payload of a binary or continuation frame (arpc bytes).
    Data(Vec<u8>),
    /// A Pong (to our Ping).
    Pong,
    /// A Close, with its code if any.
    Close(Option<u16>),
}

/// Decodes a server's bytes: the HTTP head, then frames.
#[derive(Debug, Default)]
pub struct ServerDecoder {
    buf: BytesMut,
    upgraded: bool,
}

impl ServerDecoder {
    /// Takes received bytes; returns what they completed, or the protocol error.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<ServerEvent>, String> {
        self.buf.put_slice(data);
        let mut events = Vec::new();
        if !self.upgraded {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(events);
            };
            let head = self.buf.split_to(end + 4);
            let text = String::from_utf8_lossy(&head);
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
            events.push(ServerEvent::Status(status));
            if status != 101 {
                return Ok(events);
            }
            self.upgraded = true;
        }
        let limits = Limits {
            max_payload: usize::MAX >> 1,
            expect_masked: false,
        };
        while let Some(f) = frame::decode(&mut self.buf, &limits).map_err(|e| e.to_string())? {
            events.push(match f.opcode {
                Opcode::Binary | Opcode::Continuation | Opcode::Text => {
                    ServerEvent::Data(f.payload.to_vec())
                }
                Opcode::Pong => ServerEvent::Pong,
                Opcode::Ping => continue,
                Opcode::Close => {
                    ServerEvent::Close(f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                }
            });
        }
        Ok(events)
    }
}
