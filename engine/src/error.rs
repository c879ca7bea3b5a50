//! Why things fail: connection close reasons, call errors, and the exact error texts the
//! engine puts on the wire.
//!
//! Invariants: a leaf module (imports nothing else of the crate); every error is a typed enum
//! whose `source()` carries the underlying error; texts never name CLI flags.

use std::fmt;
use std::io;

use ringrpc_protocol::metadata::MetadataError;
use ringrpc_protocol::{DecodeError, MAX_METHOD_LEN};

/// Error text of the Response to a Request for an unknown method.
pub const METHOD_NOT_FOUND: &str = "method not found";
/// Error text of the Response to a Request whose handler (or a middleware) panicked.
pub const HANDLER_PANICKED: &str = "internal error: handler panicked";
/// Error text of the Response to a Request a middleware stopped without replying.
pub const STOPPED_BY_MIDDLEWARE: &str = "request stopped by middleware";
/// Error text sent for a [`Responder`](crate::Responder) dropped without an answer.
pub const RESPONDER_DROPPED: &str =
    "internal error: handler dropped its responder without replying";
/// Error text of a Request refused because its connection has too many deferred answers
/// and blocking Notifies pending (`max_in_flight_per_conn`).
pub const TOO_MANY_IN_FLIGHT: &str = "too many requests in flight on this connection";
/// Error text of a Request for a blocking handler refused because the worker pool holds its
/// most: 65,536 jobs, or 256 MiB of requests, all connections together.
pub const BLOCKING_QUEUE_FULL: &str =
    "server busy: too many requests waiting for blocking handlers";
/// Error text of a datagram Request refused because its peer (or every peer together) has
/// too many requests cached for duplicate suppression.
pub const UDP_PEER_BUSY: &str = "server busy: too many recent requests from this peer; retry later";
/// Start of the error text of the Response to a Request whose metadata block is malformed
/// (followed by `": "` and what is wrong); the connection stays open.
pub const INVALID_METADATA: &str = "invalid metadata";
/// Method of the Request that must come first on a server with a shared secret.
pub const AUTH_METHOD: &str = "/_auth";
/// Error text sent to a connection that did not authenticate first.
pub const AUTH_REQUIRED: &str =
    "authentication required: the first frame must be a /_auth request with the shared secret";

/// Why a connection was closed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer closed its side.
    PeerClosed,
    /// The peer broke the protocol.
    Protocol(DecodeError),
    /// A socket error (reset, broken pipe).
    Socket(io::Error),
    /// The server shut down.
    Shutdown,
    /// Closed through a [`ConnHandle`](crate::ConnHandle).
    Closed,
    /// Sent nothing for longer than the idle timeout.
    IdleTimeout,
    /// Started a frame and did not finish it within the read timeout.
    ReadTimeout,
    /// Did not authenticate with the shared secret first.
    Unauthenticated,
    /// A WebSocket upgrade request was refused with this HTTP status (sent before closing).
    HandshakeRefused {
        /// The HTTP status sent.
        status: u16,
    },
    /// A plain HTTP GET for a static asset was answered (the connection carries one
    /// request).
    HttpServed {
        /// The HTTP status sent.
        status: u16,
    },
    /// The WebSocket closed: the peer's close code (echoed), or the code we closed with
    /// after its protocol error.
    WebSocketClosed {
        /// The close code, if the Close frame carried one.
        code: Option<u16>,
    },
    /// TLS failed: a handshake refused (plaintext on a TLS-only port, a client certificate
    /// that does not verify, no common version or cipher), or a record that does not
    /// verify. rustls' words; its alert was sent before closing.
    Tls(String),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("peer closed"),
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::Socket(e) => write!(f, "socket error: {e}"),
            DisconnectReason::Shutdown => f.write_str("server shutdown"),
            DisconnectReason::Closed => f.write_str("closed by the application"),
            DisconnectReason::IdleTimeout => f.write_str("idle timeout"),
            DisconnectReason::Unauthenticated => f.write_str("did not authenticate first"),
            DisconnectReason::HandshakeRefused { status } => {
                write!(f, "WebSocket upgrade refused with HTTP {status}")
            }
            DisconnectReason::HttpServed { status } => {
                write!(f, "HTTP request answered with {status}")
            }
            DisconnectReason::WebSocketClosed { code: Some(code) } => {
                write!(f, "WebSocket closed with code {code}")
            }
            DisconnectReason::WebSocketClosed { code: None } => {
                f.write_str("WebSocket closed without a code")
            }
            DisconnectReason::Tls(reason) => write!(f, "TLS error: {reason}"),
            DisconnectReason::ReadTimeout => {
                f.write_str("read timeout: a frame was not completed in time")
            }
        }
    }
}

impl std::error::Error for DisconnectReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DisconnectReason::Protocol(e) => Some(e),
            DisconnectReason::Socket(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a call, notify or answer to a peer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No Response within the timeout; a late one is discarded.
    Timeout,
    /// The connection closed before the Response arrived (or was already closed).
    Disconnected,
    /// The peer answered with an error Response carrying this text.
    Remote(String),
    /// A blocking call was made on a reactor thread, where waiting would stall every
    /// connection of that core; use a callback instead.
    WouldBlockReactor,
    /// The method name is not 1..=127 bytes.
    BadMethod,
    /// The owning reactor's inbox is full (it is not keeping up with other threads); the
    /// message was not queued. Retry later or slow down.
    MailboxFull,
    /// The connection's unsent output is over its limit (the peer is not reading); the
    /// message was not queued.
    Overstocked,
    /// The metadata could not be attached to the frame (sending), or the Response's
    /// metadata block is malformed (receiving).
    Metadata(MetadataError),
    /// The connection cannot do this (metadata calls over UDP).
    Unsupported(&'static str),
    /// A typed call's request could not be encoded, or its answer did not decode into the
    /// type asked for (the text says which codec and type).
    Codec(String),
    /// A connection to `target` could not be made (a core client's first use).
    Connect {
        /// The address, as given.
        target: String,
        /// Why: the resolver's or the socket's error.
        reason: String,
    },
    /// The reactor serving the connection has stopped (its server shut down, its client
    /// runtime was dropped, or it failed); nothing was sent and nothing more will be.
    Stopped,
    /// The frame is over the largest the transport carries — one datagram over UDP, a
    /// 4 GiB body (the wire's 32-bit length) on a stream connection; it was not sent.
    TooLarge {
        /// The frame's size in bytes (its body's, for the 4 GiB limit).
        size: usize,
        /// The largest allowed.
        max: usize,
    },
}

/// The largest frame body the wire's 32-bit length field can carry.
pub(crate) const MAX_WIRE_BODY: usize = u32::MAX as usize;

/// Error text of the error Response sent instead of a Response whose body would not fit the
/// wire's 32-bit length (over 4 GiB).
pub const RESPONSE_TOO_LARGE: &str =
    "internal error: the response is over the wire's 4 GiB frame limit";

/// Whether a frame of `method` and `payload` fits the wire's 32-bit body length; the
/// [`CallError::TooLarge`] to return when not.
pub(crate) fn check_body(method: &[u8], payload: &[u8]) -> Result<(), CallError> {
    let size = method.len() + payload.len();
    if size > MAX_WIRE_BODY {
        return Err(CallError::TooLarge {
            size,
            max: MAX_WIRE_BODY,
        });
    }
    Ok(())
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("call timed out"),
            CallError::Disconnected => f.write_str("connection closed before the response arrived"),
            CallError::Remote(text) => write!(f, "peer returned an error: {text}"),
            CallError::WouldBlockReactor => f.write_str(
                "a blocking call on a reactor thread would stall its core; use call_with and a callback",
            ),
            CallError::BadMethod => write!(f, "method names must be 1..={MAX_METHOD_LEN} bytes"),
            CallError::MailboxFull => f.write_str(
                "the connection's reactor inbox is full; the message was not queued (slow down or retry)",
            ),
            CallError::Codec(text) => f.write_str(text),
            CallError::Connect { target, reason } => write!(
                f,
                "cannot connect to {target}: {reason}; is the server running and listening there?"
            ),
            CallError::Stopped => f.write_str(
                "the reactor serving this connection has stopped (server shut down or client runtime dropped); nothing was sent",
            ),
            CallError::TooLarge { size, max } if *max == MAX_WIRE_BODY => write!(
                f,
                "a frame body of {size} bytes is over the wire's limit of {max} bytes; send less, or use a stream"
            ),
            CallError::TooLarge { size, max } => write!(
                f,
                "a frame of {size} bytes does not fit one datagram (at most {max}); send less, or use TCP"
            ),
            CallError::Metadata(e) => write!(f, "metadata: {e}"),
            CallError::Unsupported(what) => write!(f, "{what} is not supported on this connection"),
            CallError::Overstocked => f.write_str(
                "the connection's send queue is over its limit (the peer is not reading); the message was not queued",
            ),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Metadata(e) => Some(e),
            _ => None,
        }
    }
}

/// Error text of the error EOF sent for a stream opened with a method that has no stream
/// handler.
pub const STREAM_METHOD_NOT_FOUND: &str = "stream method not found";
/// Error text of the error EOF sent for a stream refused because its connection has the
/// most open streams allowed.
pub const TOO_MANY_STREAMS: &str = "too many open streams on this connection";
/// Error text of the error EOF sent when a stream's whole-stream timeout expires.
pub const STREAM_TIMED_OUT: &str = "stream timed out";
/// Error text of the error EOF sent when a stream handler panicked.
pub const STREAM_HANDLER_PANICKED: &str = "internal error: stream handler panicked";

/// Why a stream operation failed or how a stream ended abnormally.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer ended the stream with an error frame carrying this text.
    Remote(String),
    /// The connection closed before the stream ended.
    Disconnected,
    /// The stream's whole-stream timeout expired, or a receive waited longer than asked.
    Timeout,
    /// The send side was already closed (after `close_send`, `send_and_close` or an error).
    SendClosed,
    /// Sending would block (the stream's unsent bytes are over its window) and the caller is
    /// a reactor thread, which must not wait.
    WouldBlock,
    /// The method name is not 1..=127 bytes.
    BadMethod,
    /// The connection has the most open streams allowed; open fewer or raise the limit.
    TooManyStreams,
    /// The owning reactor's inbox is full; nothing was queued.
    MailboxFull,
    /// The frame's body is over the wire's 4 GiB limit; nothing was queued.
    TooLarge {
        /// The body's size in bytes.
        size: usize,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Remote(text) => write!(f, "peer ended the stream with an error: {text}"),
            StreamError::Disconnected => f.write_str("connection closed before the stream ended"),
            StreamError::Timeout => f.write_str("stream timed out"),
            StreamError::SendClosed => f.write_str("the stream's send side is already closed"),
            StreamError::WouldBlock => f.write_str(
                "the stream's send window is full and a reactor thread must not wait; retry from the stream's next event or send from another thread",
            ),
            StreamError::BadMethod => write!(f, "method names must be 1..={MAX_METHOD_LEN} bytes"),
            StreamError::TooManyStreams => f.write_str(TOO_MANY_STREAMS),
            StreamError::MailboxFull => f.write_str(
                "the connection's reactor inbox is full; nothing was queued (slow down or retry)",
            ),
            StreamError::TooLarge { size } => write!(
                f,
                "a stream frame body of {size} bytes is over the wire's limit of {MAX_WIRE_BODY} bytes; send it in pieces"
            ),
        }
    }
}

impl std::error::Error for StreamError {}
