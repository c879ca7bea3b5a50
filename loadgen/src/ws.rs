//! `--transport ws`: arpc frames in WebSocket messages (RFC 6455), client side — the
//! upgrade handshake, each outgoing frame wrapped in one masked binary message, and the
//! server's messages unwrapped back into the arpc byte stream.
//!
//! Invariants: every message we send is masked (the RFC requires it of clients); the mask
//! key is zero, which the RFC allows and which leaves the payload bytes as they are, so the
//! load generator spends nothing on XOR; a Close, a reserved bit, an unknown opcode or a
//! message over the frame limit from the server fails the connection with the reason.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BufMut, BytesMut};
use ringrpc_protocol::HEADER_LEN;

/// `Sec-WebSocket-Key` we send (any 16 bytes, base64) and the accept value it implies.
const KEY: &str = "bG9hZGdlbiByaW5ncnBjIQ==";
/// Longest HTTP response head we read before giving up.
const MAX_HEAD: usize = 8 * 1024;

/// Performs the upgrade on a connected socket (blocking, within its timeouts).
pub(crate) fn handshake(stream: &mut TcpStream, host: &str, path: &str) -> io::Result<()> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: the server sends nothing after its 101 until we send a frame, and this
    // never reads past the head.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the WebSocket upgrade response head is over 8 KiB",
            ));
        }
        match stream.read(&mut byte)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed during the WebSocket upgrade",
                ));
            }
            _ => head.push(byte[0]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!(
            "WebSocket upgrade refused: {status:?} (is --ws-path right, and WebSocket on at the server?)"
        )));
    }
    Ok(())
}

/// Appends the frame header of one masked binary message of `len` bytes (zero mask key).
fn message_header(dst: &mut BytesMut, len: usize) {
    dst.put_u8(0x82); // FIN, binary
    if len < 126 {
        dst.put_u8(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        dst.put_u8(0x80 | 126);
        dst.put_u16(len as u16);
    } else {
        dst.put_u8(0x80 | 127);
        dst.put_u64(len as u64);
    }
    dst.put_u32(0); // the mask key
}

/// Rewrites `tx[from..]` — whole arpc frames, back to back — as one binary message each.
pub(crate) fn wrap_tail(tx: &mut BytesMut, from: usize) {
    if from == tx.len() {
        return;
    }
    let frames = tx.split_off(from);
    let mut at = 0;
    while at + HEADER_LEN <= frames.len() {
        let body = u32::from_le_bytes([frames[at], frames[at + 1], frames[at + 2], frames[at + 3]]);
        let len = HEADER_LEN + body as usize;
        message_header(tx, len);
        tx.extend_from_slice(&frames[at..at + len]);
        at += len;
    }
    debug_assert_eq!(at, frames.len(), "only whole frames are wrapped");
}

/// The server's messages, unwrapped.
#[derive(Debug, Default)]
pub(crate) struct Unwrapper {
    buf: BytesMut,
    /// Where a connection unwraps each read's messages (kept to reuse its capacity).
    pub(crate) unwrapped: BytesMut,
}

impl Unwrapper {
    /// Takes received bytes and appends the payload of every whole data message to
    /// `arpc`; a Ping is answered by appending a masked Pong to `pongs`.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        arpc: &mut BytesMut,
        pongs: &mut BytesMut,
        max_message: usize,
    ) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        loop {
            let b = &self.buf[..];
            if b.len() < 2 {
                return Ok(());
            }
            let (fin_op, len7) = (b[0], b[1]);
            if fin_op & 0x70 != 0 {
                return Err("the server set reserved WebSocket bits".into());
            }
            let masked = len7 & 0x80 != 0;
            let (len, mut head) = match len7 & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let n = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                    (usize::try_from(n).unwrap_or(usize::MAX), 10)
                }
                126 | 127 => return Ok(()),
                n => (n as usize, 2),
            };
            if len > max_message {
                return Err(format!(
                    "the server sent a WebSocket message of {len} bytes, over the frame limit"
                ));
            }
            let key = if masked {
                if b.len() < head + 4 {
                    return Ok(());
                }
                head += 4;
                Some([b[head - 4], b[head - 3], b[head - 2], b[head - 1]])
            } else {
                None
            };
            if b.len() < head + len {
                return Ok(());
            }
            self.buf.advance(head);
            let mut payload = self.buf.split_to(len);
            if let Some(key) = key {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= key[i % 4];
                }
            }
            match fin_op & 0x0f {
                0x0..=0x2 => arpc.extend_from_slice(&payload),
                0x8 => return Err("the server closed the WebSocket".into()),
                0x9 => {
                    pongs.put_u8(0x8a);
                    pongs.put_u8(0x80 | payload.len() as u8);
                    pongs.put_u32(0);
                    pongs.extend_from_slice(&payload);
                }
                0xa => {}
                op => return Err(format!("the server sent WebSocket opcode {op:#x}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_protocol::Frame;

    #[test]
    fn frames_are_wrapped_one_per_masked_binary_message() {
        let mut tx = BytesMut::from(&b"prefix"[..]);
        let small = Frame::request(1, "/echo", "hi").to_bytes();
        let big = Frame::request(2, "/echo", vec![7u8; 300]).to_bytes();
        tx.extend_from_slice(&small);
        tx.extend_from_slice(&big);
        wrap_tail(&mut tx, 6);
        assert_eq!(&tx[..6], b"prefix");
        let rest = &tx[6..];
        assert_eq!(rest[0], 0x82);
        assert_eq!(rest[1], 0x80 | small.len() as u8);
        assert_eq!(&rest[2..6], &[0, 0, 0, 0]);
        assert_eq!(&rest[6..6 + small.len()], &small[..]);
        let rest = &rest[6 + small.len()..];
        assert_eq!(&rest[..2], &[0x82, 0x80 | 126]);
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]) as usize, big.len());
        assert_eq!(&rest[8..], &big[..]);
    }

    #[test]
    fn messages_are_unwrapped_at_every_split_and_pings_answered() {
        let frame = Frame::request(3, "/echo", "payload").to_bytes();
        let mut wire = BytesMut::new();
        wire.put_u8(0x89); // ping "p"
        wire.put_u8(1);
        wire.put_u8(b'p');
        wire.put_u8(0x82);
        wire.put_u8(frame.len() as u8);
        wire.extend_from_slice(&frame);
        for split in 0..=wire.len() {
            let mut un = Unwrapper::default();
            let (mut arpc, mut pongs) = (BytesMut::new(), BytesMut::new());
            un.feed(&wire[..split], &mut arpc, &mut pongs, 1 << 20)
                .unwrap();
            un.feed(&wire[split..], &mut arpc, &mut pongs, 1 << 20)
                .unwrap();
            assert_eq!(&arpc[..], &frame[..], "split {split}");
            assert_eq!(&pongs[..], &[0x8a, 0x81, 0, 0, 0, 0, b'p']);
        }
    }

    #[test]
    fn a_close_or_an_oversized_message_fails_the_connection() {
        let mut un = Unwrapper::default();
        let (mut a, mut p) = (BytesMut::new(), BytesMut::new());
        assert!(un.feed(&[0x88, 0], &mut a, &mut p, 100).is_err());
        let mut un = Unwrapper::default();
        assert!(un.feed(&[0x82, 126, 0x10, 0], &mut a, &mut p, 100).is_err());
    }
}
