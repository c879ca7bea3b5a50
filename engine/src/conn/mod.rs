//! Connections: one connection's sans-IO protocol state ([`Conn`] here, its [`Session`] in
//! `session`), the handles other threads keep to act on it (`handle`, `responder`,
//! `call_future`, `call_slot`), the user's hooks (`hooks`) and its lifecycle (`lifecycle`).
//!
//! Invariants:
//! - [`Conn`] = a [`TcpFraming`] (bytes → frames) + a [`Session`] (frames → dispatch →
//!   output); the session knows nothing of bytes on a socket, so datagram and WebSocket
//!   transports reuse it unchanged.
//! - Once the peer fails authentication nothing more it sends is dispatched.
//! - Every pending call completes exactly once: answered, timed out, or failed at close.

pub(crate) mod call_future;
pub(crate) mod call_slot;
pub(crate) mod handle;
pub(crate) mod hooks;
pub(crate) mod lifecycle;
pub(crate) mod responder;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

use crate::ids::ConnInfo;
use crate::observe::methods::MethodMetrics;
use crate::reactor::mailbox::Mailbox;
use crate::router::Router;
use crate::transport::arpc::{ArpcFraming, Next};
use crate::transport::ws::framing::{Event as WsInput, WsFraming};
use crate::transport::ws::handshake::HandshakeConfig;

pub(crate) use crate::transport::tcp::{FramingError, TcpFraming};
pub(crate) use session::{ConnStats, Session};

/// One connection: its framing and its session.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Bytes → frames.
    pub(crate) framing: TcpFraming,
    /// Frames → dispatch → output.
    pub(crate) session: Session,
}

impl Conn {
    /// A fresh raw-arpc connection accepting bodies up to `max_body`; handlers reach it
    /// later through `mailbox`.
    pub(crate) fn new(info: ConnInfo, mailbox: Arc<Mailbox>, max_body: u32) -> Conn {
        Conn {
            framing: TcpFraming::Arpc(ArpcFraming::new(max_body)),
            session: Session::new(info, mailbox),
        }
    }

    /// As [`Conn::new`], also accepting a WebSocket upgrade (per `websocket`) instead of raw
    /// arpc, told apart by the first bytes.
    pub(crate) fn with_websocket(
        info: ConnInfo,
        mailbox: Arc<Mailbox>,
        max_body: u32,
        websocket: Arc<HandshakeConfig>,
    ) -> Conn {
        Conn {
            framing: TcpFraming::Undecided {
                websocket,
                max_body,
                held: Vec::new(),
            },
            session: Session::new(info, mailbox),
        }
    }

    /// A connection that must start with an HTTP request (a WebSocket upgrade per
    /// `websocket`, or a static asset); anything else is refused with HTTP 400.
    pub(crate) fn websocket_only(
        info: ConnInfo,
        mailbox: Arc<Mailbox>,
        max_body: u32,
        websocket: Arc<HandshakeConfig>,
    ) -> Conn {
        Conn {
            framing: TcpFraming::WebSocket(Box::new(WsFraming::new(websocket, max_body))),
            session: Session::new(info, mailbox),
        }
    }

    /// Takes bytes the peer sent: dispatches every whole frame and keeps the tail.
    ///
    /// An error means the connection must be closed once its queued output is flushed.
    pub(crate) fn handle_recv(&mut self, data: &[u8], router: &Router) -> Result<(), FramingError> {
        self.handle_recv_metered(data, router, &mut MethodMetrics::default(), |_| 0)
    }

    /// As [`Conn::handle_recv`], counting each Request and Notify in `methods` (when on);
    /// `waiting`: bytes arrived after `data`, as `ArpcFraming::decode_from_socket` asks.
    pub(crate) fn handle_recv_metered(
        &mut self,
        data: &[u8],
        router: &Router,
        methods: &mut MethodMetrics,
        waiting: impl FnMut(usize) -> usize,
    ) -> Result<(), FramingError> {
        let session = &mut self.session;
        session.stats.bytes_in += data.len() as u64;
        if session.rejected() {
            return Ok(());
        }
        let data = self.framing.decide(data);
        let decoded = match &mut self.framing {
            TcpFraming::Undecided { .. } => Ok(()),
            TcpFraming::Arpc(f) => f
                .decode_from_socket(&data, waiting, |frame, owner| {
                    session.dispatch_next(frame, owner, router, methods)
                })
                .map_err(FramingError::Arpc),
            TcpFraming::WebSocket(ws) => ws
                .decode(&data, &mut |event| match event {
                    WsInput::Frame(frame) => session.dispatch_next(frame, None, router, methods),
                    WsInput::Raw(bytes) => {
                        session.out.push_raw(&bytes);
                        Next::Continue
                    }
                    WsInput::Upgraded => {
                        session.out.wrap_in_websocket();
                        Next::Continue
                    }
                })
                .map_err(FramingError::WebSocket),
        };
        self.session.stats.gzip_in = self.framing.gzip_in();
        decoded
    }

    /// Reflect mode: queues the received bytes to be written back unchanged, undecoded.
    pub(crate) fn reflect(&mut self, data: &[u8]) {
        self.session.stats.bytes_in += data.len() as u64;
        self.session.out.push_raw(data);
    }

    /// Bytes of an incomplete frame held.
    pub(crate) fn partial_len(&self) -> usize {
        self.framing.buffered()
    }

    /// The rest of a raw arpc connection's partial frame is large enough to receive straight
    /// into its own buffer.
    pub(crate) fn direct_wanted(&self) -> bool {
        matches!(&self.framing, TcpFraming::Arpc(f) if f.direct_remaining().is_some())
    }

    /// Lends the partial frame's buffer to a direct receive: the buffer, with room for what
    /// arrived (`queued` in the socket), and how many bytes to receive. `None` unless
    /// [`Conn::direct_wanted`].
    pub(crate) fn take_for_direct(&mut self, queued: usize) -> Option<(BytesMut, usize)> {
        match &mut self.framing {
            TcpFraming::Arpc(f) => f.take_for_direct(queued),
            _ => None,
        }
    }

    /// Takes back the buffer a direct receive filled, `received` bytes longer; decode it
    /// with [`Conn::handle_recv_metered`] and no new bytes.
    pub(crate) fn end_direct(&mut self, buf: BytesMut, received: usize) {
        if let TcpFraming::Arpc(f) = &mut self.framing {
            f.end_direct(buf);
            self.session.stats.bytes_in += received as u64;
        }
    }
}

// Fuzzing support, kept out of the connection logic above; not a stable API.
mod fuzz;
pub use fuzz::{FuzzOutcome, fuzz_check};

impl Conn {
    /// A connection with a placeholder identity and a mailbox of its own, for fuzzing and
    /// tests without a reactor. Not a stable API.
    pub(crate) fn for_fuzzing(max_body: u32) -> Conn {
        let info = ConnInfo {
            id: crate::ids::ConnId {
                core: 0,
                slot: 0,
                serial: 1,
            },
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        let mailbox = Mailbox::new(crate::reactor::mailbox::DEFAULT_CAPACITY);
        Conn::new(info, Arc::new(mailbox), max_body)
    }
}

#[cfg(test)]
mod tests;
