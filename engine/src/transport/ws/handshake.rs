//! The WebSocket opening handshake (RFC 6455 §4.2), server side, sans-IO: parses an HTTP/1.1
//! upgrade request from received bytes and produces the exact response bytes to send back,
//! either `101 Switching Protocols` or an error status.
//!
//! Invariants: parsing is incremental and never copies the request (`Ok(None)` means "need
//! more bytes"); a header block longer than [`HandshakeConfig::max_header_bytes`] is refused
//! with 431 as soon as that many bytes are buffered without a complete block, so a peer can
//! never make us hold more than the limit; every refusal maps to one HTTP status and one
//! fixed response; nothing here touches a socket.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

/// The GUID RFC 6455 (§1.3) appends to `Sec-WebSocket-Key` before hashing.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// At most this many header lines are accepted (more is answered 431).
const MAX_HEADERS: usize = 64;

/// What the server accepts in an upgrade request.
#[derive(Clone, Debug)]
pub(crate) struct HandshakeConfig {
    /// The request path that upgrades (query string ignored). Default `/ws`.
    pub(crate) path: String,
    /// The longest request head (request line and headers, final CRLF included). Default 8 KiB.
    pub(crate) max_header_bytes: usize,
    /// When set, only these `Origin` values (compared ASCII case-insensitively) may upgrade;
    /// a request without `Origin` is then refused too.
    pub(crate) allowed_origins: Option<Vec<String>>,
    /// Subprotocols the server speaks; the first one the client offers that is in this list
    /// is chosen. Empty: no subprotocol is ever selected.
    pub(crate) protocols: Vec<String>,
    /// Files answered to a plain HTTP `GET` (or `HEAD`) of their path, e.g. a web page and
    /// its script served from the arpc port.
    pub(crate) assets: Arc<HashMap<String, Asset>>,
}

/// A static file served over plain HTTP.
#[derive(Clone, Debug)]
pub(crate) struct Asset {
    /// The `Content-Type` header value.
    pub(crate) content_type: String,
    /// The body.
    pub(crate) body: Bytes,
}

impl Asset {
    /// The whole `200 OK` response (`head_only`: without the body, for `HEAD`).
    fn response(&self, head_only: bool) -> Bytes {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
            self.content_type,
            self.body.len()
        );
        if head_only {
            return Bytes::from(head);
        }
        let mut out = Vec::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

/// What an acceptable request head asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The WebSocket upgrade.
    Upgrade(Request),
    /// A static asset: the whole HTTP response to send before closing.
    Asset(Bytes),
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            path: "/ws".to_owned(),
            max_header_bytes: 8 * 1024,
            allowed_origins: None,
            protocols: Vec::new(),
            assets: Arc::default(),
        }
    }
}

/// An accepted upgrade request: what the response needs, and what the application may want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The request target as sent (path and query).
    pub(crate) target: String,
    /// The client's `Sec-WebSocket-Key`, as sent.
    pub(crate) key: String,
    /// The `Origin` header, if any.
    pub(crate) origin: Option<String>,
    /// The negotiated subprotocol, if any.
    pub(crate) protocol: Option<String>,
}

impl Request {
    /// The exact `101 Switching Protocols` response bytes.
    pub(crate) fn response(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            accept_key(&self.key)
        );
        if let Some(p) = &self.protocol {
            out.push_str("Sec-WebSocket-Protocol: ");
            out.push_str(p);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Why an upgrade request was refused; each maps to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// 400: malformed request, or a required header missing or wrong.
    BadRequest(&'static str),
    /// 403: `Origin` not in the allow-list.
    Forbidden,
    /// 404: another path.
    NotFound,
    /// 405: a method other than GET.
    MethodNotAllowed,
    /// 426: `Sec-WebSocket-Version` other than 13.
    UpgradeRequired,
    /// 431: request head over the limit (or too many header lines).
    HeadersTooLarge,
}

impl HandshakeError {
    /// The HTTP status code of the refusal.
    pub(crate) fn status(&self) -> u16 {
        match self {
            HandshakeError::BadRequest(_) => 400,
            HandshakeError::Forbidden => 403,
            HandshakeError::NotFound => 404,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UpgradeRequired => 426,
            HandshakeError::HeadersTooLarge => 431,
        }
    }

    /// The exact response bytes; the connection is closed after sending them.
    pub(crate) fn response(&self) -> Vec<u8> {
        let (status, reason, extra) = match self {
            HandshakeError::BadRequest(_) => (400, "Bad Request", ""),
            HandshakeError::Forbidden => (403, "Forbidden", ""),
            HandshakeError::NotFound => (404, "Not Found", ""),
            HandshakeError::MethodNotAllowed => (405, "Method Not Allowed", "Allow: GET\r\n"),
            HandshakeError::UpgradeRequired => (
                426,
                "Upgrade Required",
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            ),
            HandshakeError::HeadersTooLarge => (431, "Request Header Fields Too Large", ""),
        };
        format!(
            "HTTP/1.1 {status} {reason}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadRequest(why) => write!(f, "400 bad upgrade request: {why}"),
            other => write!(f, "{} upgrade refused", other.status()),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.digest().bytes())
}

/// Whether a comma-separated header value contains `token` (ASCII case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl HandshakeConfig {
    /// Parses the upgrade request at the start of `buf`.
    ///
    /// `Ok(None)`: the head is incomplete and under the limit; call again with more bytes.
    /// `Ok(Some((parsed, consumed)))`: accepted; `consumed` bytes were the request head (any
    /// bytes after an upgrade are already WebSocket frames). `Err`: refused; send
    /// [`HandshakeError::response`] and close.
    pub(crate) fn parse(&self, buf: &[u8]) -> Result<Option<(Parsed, usize)>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let consumed = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() >= self.max_header_bytes {
                    return Err(HandshakeError::HeadersTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeadersTooLarge),
            Err(_) => return Err(HandshakeError::BadRequest("malformed HTTP request")),
        };
        if consumed > self.max_header_bytes {
            return Err(HandshakeError::HeadersTooLarge);
        }
        if req.version != Some(1) {
            return Err(HandshakeError::BadRequest("HTTP version must be 1.1"));
        }
        let target = req.path.unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default();
        if path != self.path {
            let head_only = req.method == Some("HEAD");
            return match self.assets.get(path) {
                Some(asset) if head_only || req.method == Some("GET") => {
                    Ok(Some((Parsed::Asset(asset.response(head_only)), consumed)))
                }
                Some(_) => Err(HandshakeError::MethodNotAllowed),
                None if req.method == Some("GET") || head_only => Err(HandshakeError::NotFound),
                None => Err(HandshakeError::MethodNotAllowed),
            };
        }
        if req.method != Some("GET") {
            return Err(HandshakeError::MethodNotAllowed);
        }

        let mut host = false;
        let mut upgrade = false;
        let mut connection = false;
        let mut version: Option<&[u8]> = None;
        let mut key: Option<&str> = None;
        let mut origin: Option<&str> = None;
        let mut protocol: Option<String> = None;
        for h in req.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HandshakeError::BadRequest("header value not UTF-8"))?
                .trim();
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                host = true;
            } else if name.eq_ignore_ascii_case("upgrade") {
                upgrade |= has_token(value, "websocket");
            } else if name.eq_ignore_ascii_case("connection") {
                connection |= has_token(value, "upgrade");
            } else if name.eq_ignore_ascii_case("sec-websocket-version") {
                if version.is_some() {
                    return Err(HandshakeError::BadRequest(
                        "duplicate Sec-WebSocket-Version",
                    ));
                }
                version = Some(value.as_bytes());
            } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                if key.is_some() {
                    return Err(HandshakeError::BadRequest("duplicate Sec-WebSocket-Key"));
                }
                key = Some(value);
            } else if name.eq_ignore_ascii_case("origin") {
                origin = Some(value);
            } else if name.eq_ignore_ascii_case("sec-websocket-protocol") && protocol.is_none() {
                // Offers may span several header lines; take the first we support, in the
                // client's order (earlier lines come first).
                protocol = value
                    .split(',')
                    .map(str::trim)
                    .find(|offer| self.protocols.iter().any(|p| p == offer))
                    .map(str::to_owned);
            }
        }
        if !host {
            return Err(HandshakeError::BadRequest("missing Host"));
        }
        if !upgrade {
            return Err(HandshakeError::BadRequest("missing Upgrade: websocket"));
        }
        if !connection {
            return Err(HandshakeError::BadRequest("missing Connection: upgrade"));
        }
        match version {
            None => return Err(HandshakeError::BadRequest("missing Sec-WebSocket-Version")),
            Some(b"13") => {}
            Some(_) => return Err(HandshakeError::UpgradeRequired),
        }
        let key = key.ok_or(HandshakeError::BadRequest("missing Sec-WebSocket-Key"))?;
        match BASE64.decode(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => {
                return Err(HandshakeError::BadRequest(
                    "Sec-WebSocket-Key is not 16 bytes",
                ));
            }
        }
        if let Some(allowed) = &self.allowed_origins {
            let ok = origin.is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if !ok {
                return Err(HandshakeError::Forbidden);
            }
        }
        Ok(Some((
            Parsed::Upgrade(Request {
                target: target.to_owned(),
                key: key.to_owned(),
                origin: origin.map(str::to_owned),
                protocol,
            }),
            consumed,
        )))
    }
}

#[cfg(test)]
mod tests;
