//! Connections: one connection's sans-IO protocol state ([`Conn`] here, its [`Session`] in
//! `session`), the handles other threads keep to act on it (`handle`, `responder`,
//! `call_future`, `call_slot`), the user's hooks (`hooks`) and its lifecycle (`lifecycle`).
//!
//! Invariants:
//! - [`Conn`] = a [`TlsState`] (ciphertext ↔ plaintext, when TLS is on) + a [`TcpFraming`]
//!   (bytes → frames) + a [`Session`] (frames → dispatch → output); the session knows
//!   nothing of bytes on a socket, so datagram, WebSocket and TLS transports reuse it
//!   unchanged.
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

use bytes::{Bytes, BytesMut};

use crate::ids::ConnInfo;
use crate::observe::methods::MethodMetrics;
use crate::reactor::mailbox::Mailbox;
use crate::router::Router;
use crate::transport::arpc::{ArpcFraming, Next};
use crate::transport::tls::with_plaintext;
use crate::transport::tls_state::TlsState;
use crate::transport::ws::framing::{Event as WsInput, WsFraming};
use crate::transport::ws::handshake::HandshakeConfig;

pub(crate) use crate::transport::tcp::{FramingError, TcpFraming};
pub(crate) use session::{ConnStats, Session};

/// One connection: its framing and its session.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Ciphertext ↔ plaintext, under the framing (off for plaintext connections).
    pub(crate) tls: TlsState,
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
            tls: TlsState::Off,
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
            tls: TlsState::Off,
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
            tls: TlsState::Off,
            framing: TcpFraming::WebSocket(Box::new(WsFraming::new(websocket, max_body))),
            session: Session::new(info, mailbox),
        }
    }

    /// Takes bytes the peer sent: dispatches every whole frame and keeps the tail.
    ///
    /// An error means the connection must be closed once its queued output is flushed.
    pub(crate) fn handle_recv(&mut self, data: &[u8], router: &Router) -> Result<(), FramingError> {
        self.handle_recv_metered(data, router, &mut MethodMetrics::default(), |_| 0, |_| {})
    }

    /// As [`Conn::handle_recv`], counting each Request and Notify in `methods` (when on);
    /// `waiting`: bytes arrived after `data`, as `ArpcFraming::decode_from_socket` asks;
    /// `announce` runs (before anything is dispatched) when a connection not yet announced
    /// (`Session::unannounced`) is ready: its TLS handshake done, or its first bytes plaintext.
    pub(crate) fn handle_recv_metered(
        &mut self,
        data: &[u8],
        router: &Router,
        methods: &mut MethodMetrics,
        waiting: impl FnMut(usize) -> usize,
        announce: impl FnOnce(&ConnInfo),
    ) -> Result<(), FramingError> {
        self.session.stats.bytes_in += data.len() as u64;
        if self.session.rejected() {
            return Ok(());
        }
        let data = self.tls.decide(data).map_err(FramingError::Tls)?;
        let (framing, session) = (&mut self.framing, &mut self.session);
        let tls = match &mut self.tls {
            TlsState::On(tls) => tls,
            TlsState::Off => {
                if std::mem::take(&mut session.unannounced) {
                    announce(session.info());
                }
                return decode(framing, session, &data, router, methods, waiting);
            }
            TlsState::Sniffing(_) => return Ok(()),
        };
        with_plaintext(|plain| {
            let read = tls.read(&data, plain);
            if let Some(info) = tls.take_settled() {
                session.set_tls(info);
                if std::mem::take(&mut session.unannounced) {
                    announce(session.info());
                }
            }
            // Plaintext that came before a TLS error is still served.
            decode(framing, session, plain, router, methods, waiting)?;
            read.map_err(FramingError::Tls)
        })
    }

    /// Reflect mode: queues the received bytes to be written back unchanged, undecoded.
    pub(crate) fn reflect(&mut self, data: &[u8]) {
        self.session.stats.bytes_in += data.len() as u64;
        self.session.out.push_raw(data);
    }

    /// Bytes of an incomplete frame held (a TLS handshake under way counts as one).
    pub(crate) fn partial_len(&self) -> usize {
        self.framing.buffered() + self.tls.pending_input()
    }

    /// The rest of a raw arpc connection's partial frame is large enough to receive straight
    /// into its own buffer (never under TLS: the socket's bytes are ciphertext).
    pub(crate) fn direct_wanted(&self) -> bool {
        self.tls.is_off()
            && matches!(&self.framing, TcpFraming::Arpc(f) if f.direct_remaining().is_some())
    }

    /// Whether a send now would carry something.
    pub(crate) fn has_output(&self) -> bool {
        match &self.tls {
            TlsState::On(tls) => tls.has_output(&self.session.out),
            _ => !self.session.out.is_empty(),
        }
    }

    /// Bytes not yet written to the socket (plaintext queued, and TLS records).
    pub(crate) fn backlog_bytes(&self) -> usize {
        let tls = match &self.tls {
            TlsState::On(tls) => tls.backlog_bytes(),
            _ => 0,
        };
        self.session.out.backlog_bytes() + tls
    }

    /// Moves the next send's segments into `batch` (TLS records, under TLS); returns how
    /// many frames it carries for the first time.
    pub(crate) fn take_batch(&mut self, batch: &mut Vec<Bytes>) -> u64 {
        match &mut self.tls {
            TlsState::On(tls) => tls.take_batch(&mut self.session.out, batch),
            _ => self.session.out.take_batch(batch),
        }
    }

    /// The connection is closing gracefully: under TLS, tells the peer (close_notify) before
    /// the FIN.
    pub(crate) fn closing(&mut self) {
        if let TlsState::On(tls) = &mut self.tls {
            tls.close_notify();
        }
    }

    /// Takes back a batch of which `written` bytes went out.
    pub(crate) fn sent(&mut self, batch: &mut Vec<Bytes>, written: usize) {
        match &mut self.tls {
            TlsState::On(tls) => tls.sent(batch, written),
            _ => self.session.out.sent(batch, written),
        }
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

/// Decodes plaintext `data` through `framing` into `session`.
fn decode(
    framing: &mut TcpFraming,
    session: &mut Session,
    data: &[u8],
    router: &Router,
    methods: &mut MethodMetrics,
    waiting: impl FnMut(usize) -> usize,
) -> Result<(), FramingError> {
    let data = framing.decide(data);
    let decoded = match framing {
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
    session.stats.gzip_in += u64::from(framing.take_gzip_in());
    decoded
}

// Fuzzing support, kept out of the connection logic above; not a stable API.
mod fuzz;
pub use fuzz::{FuzzOutcome, fuzz_check};

impl Conn {
    /// A connection with a placeholder identity and a mailbox of its own, for fuzzing and
    /// tests without a reactor. Not a stable API.
    pub(crate) fn for_fuzzing(max_body: u32) -> Conn {
        let info = ConnInfo::new(
            crate::ids::ConnId {
                core: 0,
                slot: 0,
                serial: 1,
            },
            SocketAddr::from(([127, 0, 0, 1], 1)),
        );
        let mailbox = Mailbox::new(crate::reactor::mailbox::DEFAULT_CAPACITY);
        Conn::new(info, Arc::new(mailbox), max_body)
    }
}

#[cfg(test)]
mod tests;
