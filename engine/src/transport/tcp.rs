//! What a TCP connection's bytes are ([`TcpFraming`]): raw arpc frames back to back, or arpc
//! frames in WebSocket messages after an HTTP upgrade, chosen by the first bytes; and why its
//! input ends it ([`FramingError`]).
//!
//! Invariants: the choice is made once, from at most the first four bytes (held meanwhile);
//! `GET ` read as an arpc length is over any body a WebSocket-enabled server accepts, so the
//! two never overlap; after the choice every byte goes to the chosen framing.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use ringrpc_protocol::DecodeError;

use crate::error::DisconnectReason;
use crate::transport::arpc::ArpcFraming;
use crate::transport::ws::framing::{WsEnd, WsFraming};
use crate::transport::ws::handshake::HandshakeConfig;

/// The framings a stream connection can speak.
#[derive(Debug)]
pub(crate) enum TcpFraming {
    /// Not decided yet: a connection whose first four bytes start an HTTP request
    /// ([`HTTP_STARTS`]: a WebSocket upgrade, or a GET of a static asset) is HTTP, anything
    /// else raw arpc (each of them read as an arpc length is at least 542,393,671, `GET `'s,
    /// over any body a WebSocket-enabled server accepts). Holds up to 3 bytes while deciding.
    Undecided {
        websocket: Arc<HandshakeConfig>,
        max_body: u32,
        held: Vec<u8>,
    },
    /// arpc frames back to back on the socket.
    Arpc(ArpcFraming),
    /// arpc frames in WebSocket messages, after an HTTP upgrade.
    WebSocket(Box<WsFraming>),
}

/// The first four bytes of an HTTP/1.1 request, one per method.
pub(crate) const HTTP_STARTS: [&[u8; 4]; 9] = [
    b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
];

impl TcpFraming {
    /// Bytes held: an incomplete frame (or upgrade request).
    pub(crate) fn buffered(&self) -> usize {
        match self {
            TcpFraming::Undecided { held, .. } => held.len(),
            TcpFraming::Arpc(f) => f.buffered(),
            TcpFraming::WebSocket(ws) => ws.buffered(),
        }
    }

    /// Compressed frames inflated since the last call.
    pub(crate) fn take_gzip_in(&mut self) -> u32 {
        match self {
            TcpFraming::Undecided { .. } => 0,
            TcpFraming::Arpc(f) => f.take_gzip_in(),
            TcpFraming::WebSocket(ws) => ws.take_gzip_in(),
        }
    }

    /// The held partial arpc frame of a raw arpc connection (for checks in fuzzing and
    /// tests).
    pub(crate) fn partial(&self) -> Option<&BytesMut> {
        match self {
            TcpFraming::Arpc(f) => Some(f.partial()),
            _ => None,
        }
    }

    /// Decides between raw arpc and WebSocket once enough bytes are in; returns the bytes
    /// to decode now (the held ones first).
    pub(crate) fn decide<'d>(&mut self, data: &'d [u8]) -> Cow<'d, [u8]> {
        let TcpFraming::Undecided {
            websocket,
            max_body,
            held,
        } = self
        else {
            return data.into();
        };
        let bytes: Cow<'d, [u8]> = if held.is_empty() {
            data.into()
        } else {
            let mut all = std::mem::take(held);
            all.extend_from_slice(data);
            all.into()
        };
        if bytes.len() < 4 && HTTP_STARTS.iter().any(|start| start.starts_with(&bytes)) {
            *held = bytes.into_owned(); // could still be either
            return Cow::Borrowed(&[]);
        }
        *self = if HTTP_STARTS
            .iter()
            .any(|start| bytes.starts_with(&start[..]))
        {
            TcpFraming::WebSocket(Box::new(WsFraming::new(websocket.clone(), *max_body)))
        } else {
            TcpFraming::Arpc(ArpcFraming::new(*max_body))
        };
        bytes
    }
}

/// Why a connection's input ends it.
#[derive(Debug)]
pub(crate) enum FramingError {
    /// The arpc framing was broken.
    Arpc(DecodeError),
    /// The WebSocket layer ended the connection (refused upgrade, close, protocol error).
    WebSocket(WsEnd),
    /// TLS failed (a bad handshake, a certificate refused, a record that does not verify).
    Tls(String),
}

impl FramingError {
    /// Why the connection closes.
    pub(crate) fn into_reason(self) -> DisconnectReason {
        match self {
            FramingError::Tls(reason) => DisconnectReason::Tls(reason),
            FramingError::Arpc(e) | FramingError::WebSocket(WsEnd::Arpc(e)) => {
                DisconnectReason::Protocol(e)
            }
            FramingError::WebSocket(WsEnd::Served) => DisconnectReason::HttpServed { status: 200 },
            FramingError::WebSocket(WsEnd::Refused(refused)) => {
                DisconnectReason::HandshakeRefused {
                    status: refused.status(),
                }
            }
            FramingError::WebSocket(WsEnd::PeerClosed(code)) => {
                DisconnectReason::WebSocketClosed { code }
            }
            FramingError::WebSocket(WsEnd::Protocol(code)) => {
                DisconnectReason::WebSocketClosed { code: Some(code) }
            }
        }
    }
}
