//! One connection's sans-IO protocol state: frames in (from its framing), dispatched to the
//! router, answers and calls queued on its output, Responses matched to pending calls.
//!
//! Invariants:
//! - [`Conn`] = a [`StreamFraming`] (bytes → frames) + a [`Session`] (frames → dispatch →
//!   output); the session knows nothing of bytes on a socket, so datagram and WebSocket
//!   transports reuse it unchanged.
//! - Once the peer fails authentication nothing more it sends is dispatched.
//! - Every pending call completes exactly once: answered, timed out, or failed at close.

pub(crate) mod call_future;
pub(crate) mod handle;
pub(crate) mod hooks;
pub(crate) mod lifecycle;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::metadata::{Metadata, MetadataError, USER_FLAG_METADATA, take_metadata};
use ringrpc_protocol::{Command, DecodeError, Flags, FrameRef};

use crate::conn::call_future::{Answered, CallSlot};
use crate::conn::handle::{ConnHandle, Deferred};
use crate::error::{
    AUTH_METHOD, AUTH_REQUIRED, CallError, DisconnectReason, INVALID_METADATA, TOO_MANY_IN_FLIGHT,
};
use crate::executor::contain::contain;
use crate::ids::ConnInfo;
use crate::observe::measure::MethodMetrics;
use crate::reactor::mailbox::{CallDone, CallDoneMd, Mailbox};
use crate::router::{Dispatched, Router};
use crate::secret::constant_time_eq;
use crate::stream::StreamLimits;
use crate::stream::shared::StreamShared;
use crate::stream::table::StreamTable;
use crate::transport::arpc::{ArpcFraming, Next};
use crate::transport::outqueue::OutQueue;
use crate::transport::ws::framing::{Event as WsInput, WsEnd, WsFraming};
use crate::transport::ws::handshake::HandshakeConfig;

/// Counters one connection contributes to its core's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Requests dispatched.
    pub requests: u64,
    /// Notifies dispatched.
    pub notifies: u64,
    /// Requests or notifies for methods with no handler.
    pub not_found: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Requests refused, and Notifies to blocking methods dropped, because too many answers
    /// or blocking jobs were pending.
    pub refused_in_flight: u64,
    /// Frames dropped: Responses to no pending call (or to one that timed out).
    pub ignored: u64,
    /// Streams the peer opened.
    pub streams_opened: u64,
    /// Stream frames received.
    pub stream_frames: u64,
    /// gzip-compressed frames received and inflated.
    pub gzip_in: u64,
    /// Frames whose metadata block was malformed (a Request answered with an error, a
    /// Notify or Stream frame dropped, a Response failing its call).
    pub bad_metadata: u64,
}

/// A call this side made to the peer, waiting for its Response.
struct PendingCall {
    deadline: Instant,
    done: Completion,
}

/// How a call's outcome is delivered.
enum Completion {
    /// The payload only (any metadata of the Response is dropped).
    Plain(CallDone),
    /// The payload and the Response's metadata.
    WithMetadata(CallDoneMd),
    /// A future awaits it.
    Awaited(Arc<CallSlot>),
}

impl Completion {
    fn fail(self, error: CallError) {
        self.deliver(Err(error));
    }

    fn deliver(self, outcome: Answered) {
        match self {
            Completion::Plain(done) => {
                contain(CALL_DONE, || done(outcome.map(|(payload, _)| payload)));
            }
            Completion::WithMetadata(done) => {
                contain(CALL_DONE, || done(outcome));
            }
            Completion::Awaited(slot) => slot.complete(outcome),
        }
    }
}

/// What a call's completion is called in panic reports.
pub(crate) const CALL_DONE: &str = "a call's completion";

/// The framings a stream connection can speak.
#[derive(Debug)]
pub(crate) enum StreamFraming {
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
const HTTP_STARTS: [&[u8; 4]; 9] = [
    b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
];

impl StreamFraming {
    /// Bytes held: an incomplete frame (or upgrade request).
    pub(crate) fn buffered(&self) -> usize {
        match self {
            StreamFraming::Undecided { held, .. } => held.len(),
            StreamFraming::Arpc(f) => f.buffered(),
            StreamFraming::WebSocket(ws) => ws.buffered(),
        }
    }

    /// Compressed frames inflated so far.
    fn gzip_in(&self) -> u64 {
        match self {
            StreamFraming::Undecided { .. } => 0,
            StreamFraming::Arpc(f) => f.gzip_in(),
            StreamFraming::WebSocket(ws) => ws.gzip_in(),
        }
    }

    /// The held partial arpc frame of a raw arpc connection (for checks in fuzzing and
    /// tests).
    pub(crate) fn partial(&self) -> Option<&BytesMut> {
        match self {
            StreamFraming::Arpc(f) => Some(f.partial()),
            _ => None,
        }
    }

    /// Decides between raw arpc and WebSocket once enough bytes are in; returns the bytes
    /// to decode now (the held ones first).
    fn decide<'d>(&mut self, data: &'d [u8]) -> Cow<'d, [u8]> {
        let StreamFraming::Undecided {
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
            StreamFraming::WebSocket(Box::new(WsFraming::new(websocket.clone(), *max_body)))
        } else {
            StreamFraming::Arpc(ArpcFraming::new(*max_body))
        };
        bytes
    }
}

/// Why a connection's input ends it.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The arpc framing was broken.
    Arpc(DecodeError),
    /// The WebSocket layer ended the connection (refused upgrade, close, protocol error).
    WebSocket(WsEnd),
}

impl ConnError {
    /// Why the connection closes.
    pub(crate) fn into_reason(self) -> DisconnectReason {
        match self {
            ConnError::Arpc(e) | ConnError::WebSocket(WsEnd::Arpc(e)) => {
                DisconnectReason::Protocol(e)
            }
            ConnError::WebSocket(WsEnd::Served) => DisconnectReason::HttpServed { status: 200 },
            ConnError::WebSocket(WsEnd::Refused(refused)) => DisconnectReason::HandshakeRefused {
                status: refused.status(),
            },
            ConnError::WebSocket(WsEnd::PeerClosed(code)) => {
                DisconnectReason::WebSocketClosed { code }
            }
            ConnError::WebSocket(WsEnd::Protocol(code)) => {
                DisconnectReason::WebSocketClosed { code: Some(code) }
            }
        }
    }
}

/// One connection: its framing and its session.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Bytes → frames.
    pub(crate) framing: StreamFraming,
    /// Frames → dispatch → output.
    pub(crate) session: Session,
}

impl Conn {
    /// A fresh raw-arpc connection accepting bodies up to `max_body`; handlers reach it
    /// later through `mailbox`.
    pub(crate) fn new(info: ConnInfo, mailbox: Arc<Mailbox>, max_body: u32) -> Conn {
        Conn {
            framing: StreamFraming::Arpc(ArpcFraming::new(max_body)),
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
            framing: StreamFraming::Undecided {
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
            framing: StreamFraming::WebSocket(Box::new(WsFraming::new(websocket, max_body))),
            session: Session::new(info, mailbox),
        }
    }

    /// Takes bytes the peer sent: dispatches every whole frame and keeps the tail.
    ///
    /// An error means the connection must be closed once its queued output is flushed.
    pub(crate) fn handle_recv(&mut self, data: &[u8], router: &Router) -> Result<(), ConnError> {
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
    ) -> Result<(), ConnError> {
        let session = &mut self.session;
        session.stats.bytes_in += data.len() as u64;
        if session.rejected {
            return Ok(());
        }
        let data = self.framing.decide(data);
        let decoded = match &mut self.framing {
            StreamFraming::Undecided { .. } => Ok(()),
            StreamFraming::Arpc(f) => f
                .decode_from_socket(&data, waiting, |frame, owner| {
                    session.dispatch_next(frame, owner, router, methods)
                })
                .map_err(ConnError::Arpc),
            StreamFraming::WebSocket(ws) => ws
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
                .map_err(ConnError::WebSocket),
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
        matches!(&self.framing, StreamFraming::Arpc(f) if f.direct_remaining().is_some())
    }

    /// Lends the partial frame's buffer to a direct receive: the buffer, with room for what
    /// arrived (`queued` in the socket), and how many bytes to receive. `None` unless
    /// [`Conn::direct_wanted`].
    pub(crate) fn take_for_direct(&mut self, queued: usize) -> Option<(BytesMut, usize)> {
        match &mut self.framing {
            StreamFraming::Arpc(f) => f.take_for_direct(queued),
            _ => None,
        }
    }

    /// Takes back the buffer a direct receive filled, `received` bytes longer; decode it
    /// with [`Conn::handle_recv_metered`] and no new bytes.
    pub(crate) fn end_direct(&mut self, buf: BytesMut, received: usize) {
        if let StreamFraming::Arpc(f) = &mut self.framing {
            f.end_direct(buf);
            self.session.stats.bytes_in += received as u64;
        }
    }
}

/// One connection's protocol state above the framing.
pub(crate) struct Session {
    info: ConnInfo,
    mailbox: Arc<Mailbox>,
    /// Calls this side made, by seq (a `BTreeMap`: empty, it costs no allocation and less
    /// room in the connection's slot than a `HashMap`).
    calls: BTreeMap<u64, PendingCall>,
    next_call_seq: u64,
    /// The shared secret the first frame must carry; `None` once authenticated or when
    /// none is required.
    auth: Option<Arc<[u8]>>,
    /// The peer failed to authenticate: nothing more is dispatched.
    rejected: bool,
    /// Requests whose answer was deferred to a responder and not yet sent.
    in_flight: Deferred,
    /// Past this many, new Requests are refused with [`TOO_MANY_IN_FLIGHT`].
    max_in_flight: usize,
    /// Responses and other frames to send.
    pub(crate) out: OutQueue,
    /// Open streams.
    pub(crate) streams: StreamTable,
    /// This connection's counters.
    pub(crate) stats: ConnStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.info.id)
            .field("peer", &self.info.peer)
            .field("queued", &self.out.queued_bytes())
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl Session {
    fn new(info: ConnInfo, mailbox: Arc<Mailbox>) -> Session {
        Session {
            info,
            mailbox,
            calls: BTreeMap::new(),
            next_call_seq: 1,
            auth: None,
            rejected: false,
            in_flight: Deferred::default(),
            max_in_flight: usize::MAX,
            out: OutQueue::default(),
            streams: StreamTable::new(StreamLimits::default()),
            stats: ConnStats::default(),
        }
    }

    /// Sets this connection's stream limits (before any stream opens).
    pub(crate) fn set_stream_limits(&mut self, limits: StreamLimits) {
        self.streams = StreamTable::new(limits);
    }

    /// Registers a stream this side opens, with the next call seq as its id; returns the
    /// id, or `None` if the connection has the most streams allowed (the stream is ended).
    pub(crate) fn open_stream(&mut self, shared: Arc<StreamShared>) -> Option<u64> {
        let id = self.next_call_seq;
        if !self.streams.open_local(shared, id) {
            return None;
        }
        self.next_call_seq += 1;
        Some(id)
    }

    /// Requires the first frame to be an [`AUTH_METHOD`] Request carrying `secret`.
    pub(crate) fn require_auth(&mut self, secret: Arc<[u8]>) {
        self.auth = Some(secret);
    }

    /// Refuses Requests while `max` answers of this connection are deferred.
    pub(crate) fn set_max_in_flight(&mut self, max: usize) {
        self.max_in_flight = max;
    }

    /// Whether the peer failed to authenticate (the connection must be closed once its
    /// error Response is flushed).
    pub(crate) fn rejected(&self) -> bool {
        self.rejected
    }

    /// Who this connection is.
    pub(crate) fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Answers owed to the peer and not yet queued (responders outstanding).
    pub(crate) fn answers_owed(&self) -> usize {
        self.in_flight.count()
    }

    /// A responder's answer was queued on the output.
    pub(crate) fn answer_queued(&mut self) {
        self.in_flight.answered();
    }

    /// Drops the connection's async handler tasks still running (it is being released).
    pub(crate) fn cancel_tasks(&mut self) {
        self.in_flight.cancel_tasks();
    }

    /// Queues a Request to the peer and returns its seq; `done` runs when its Response
    /// arrives, when [`Session::expire_call`] is called for it after `deadline`, or when the
    /// connection closes ([`Session::fail_calls`]).
    pub(crate) fn start_call(
        &mut self,
        method: &[u8],
        payload: &[u8],
        deadline: Instant,
        done: CallDone,
    ) -> u64 {
        let seq = self.next_call_seq;
        self.next_call_seq += 1;
        self.out
            .push_frame(Command::Request, Flags::default(), 0, seq, method, payload);
        let done = Completion::Plain(done);
        self.calls.insert(seq, PendingCall { deadline, done });
        seq
    }

    /// As [`Session::start_call`] for a Request encoded already (`frame`, metadata
    /// appended, seq 0): writes the call's seq into a copy and queues it.
    pub(crate) fn start_encoded_call(
        &mut self,
        frame: Bytes,
        deadline: Instant,
        done: CallDoneMd,
    ) -> u64 {
        let seq = self.next_call_seq;
        self.next_call_seq += 1;
        let mut frame = BytesMut::from(&frame[..]);
        frame[8..16].copy_from_slice(&seq.to_le_bytes());
        self.out.push_encoded(frame.freeze());
        let done = Completion::WithMetadata(done);
        self.calls.insert(seq, PendingCall { deadline, done });
        seq
    }

    /// As [`Session::start_call`] for a call awaited as a future: `None` (nothing sent) if
    /// its future was dropped first, or if its metadata cannot be attached (the future then
    /// has its error).
    pub(crate) fn start_awaited_call(
        &mut self,
        method: &[u8],
        payload: &[u8],
        metadata: Option<&Metadata>,
        deadline: Instant,
        slot: Arc<CallSlot>,
    ) -> Option<u64> {
        let seq = self.next_call_seq;
        if !slot.start(seq) {
            return None;
        }
        match metadata {
            None => {
                self.out
                    .push_frame(Command::Request, Flags::default(), 0, seq, method, payload)
            }
            Some(md) => match crate::transport::coder::encode_with_metadata(
                Command::Request,
                Flags::default(),
                seq,
                method,
                payload,
                md,
            ) {
                Ok(frame) => self.out.push_encoded(frame),
                Err(e) => {
                    slot.complete(Err(CallError::Metadata(e)));
                    return None;
                }
            },
        }
        self.next_call_seq += 1;
        let done = Completion::Awaited(slot);
        self.calls.insert(seq, PendingCall { deadline, done });
        Some(seq)
    }

    /// Forgets call `seq` (its future was dropped); a Response arriving later is ignored.
    pub(crate) fn cancel_call(&mut self, seq: u64) -> bool {
        self.calls.remove(&seq).is_some()
    }

    /// The mailbox handles of this connection post to.
    #[cfg(test)]
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Whether call `seq` still waits for its Response.
    pub(crate) fn has_call(&self, seq: u64) -> bool {
        self.calls.contains_key(&seq)
    }

    /// Calls waiting for a Response.
    #[cfg(test)]
    pub(crate) fn calls_pending(&self) -> usize {
        self.calls.len()
    }

    /// Fails call `seq` with [`CallError::Timeout`] if it is still pending and its deadline
    /// is at or before `now`; a Response arriving later is dropped as unknown.
    pub(crate) fn expire_call(&mut self, seq: u64, now: Instant) {
        if self.calls.get(&seq).is_some_and(|c| c.deadline <= now) {
            if let Some(call) = self.calls.remove(&seq) {
                call.done.fail(CallError::Timeout);
            }
        }
    }

    /// Fails every pending call with `error` and ends every stream (the connection is
    /// closing).
    pub(crate) fn fail_calls(&mut self, error: CallError) {
        for (_, call) in std::mem::take(&mut self.calls) {
            call.done.fail(error.clone());
        }
        self.streams.fail_all();
    }

    fn answer_call(&mut self, frame: &FrameRef<'_>, metadata: Option<Metadata>) {
        let Some(call) = self.calls.remove(&frame.header.seq) else {
            // Unknown, or answered after its timeout.
            self.stats.ignored += 1;
            return;
        };
        if frame.header.flags.is_error() {
            let text = String::from_utf8_lossy(frame.payload).into_owned();
            return call.done.fail(CallError::Remote(text));
        }
        let payload = Bytes::copy_from_slice(frame.payload);
        call.done.deliver(Ok((payload, metadata)));
    }

    /// A frame with `user_flags` bit 0: takes its metadata block off the payload and
    /// dispatches the rest, or deals with a malformed block.
    #[cold]
    fn dispatch_with_metadata(
        &mut self,
        frame: &FrameRef<'_>,
        owner: Option<&Bytes>,
        router: &Router,
        methods: &mut MethodMetrics,
    ) {
        if frame.header.cmd.is_control() {
            // A bare header: the bit means nothing there.
            return self.dispatch_frame(frame, None, owner, router, methods);
        }
        match take_metadata(&frame.header, frame.payload) {
            Ok((payload, metadata)) => {
                let stripped = FrameRef { payload, ..*frame };
                self.dispatch_frame(&stripped, metadata, owner, router, methods);
            }
            Err(e) => self.bad_metadata(frame, e),
        }
    }

    /// A malformed metadata block: a Request gets an error Response naming the problem, a
    /// Response fails its call, a Notify or Stream frame is dropped; all are counted.
    fn bad_metadata(&mut self, frame: &FrameRef<'_>, error: MetadataError) {
        let h = &frame.header;
        match h.cmd {
            // Not reached: bare headers are dispatched as they are.
            Command::Ping | Command::Pong => return,
            Command::Request => {
                self.stats.requests += 1;
                let flags = Flags(Flags::ERROR | (h.flags.0 & Flags::ASYNC));
                let text = format!("{INVALID_METADATA}: {error}");
                self.out.push_frame(
                    Command::Response,
                    flags,
                    0,
                    h.seq,
                    frame.method,
                    text.as_bytes(),
                );
            }
            Command::Notify => self.stats.notifies += 1,
            Command::Response => match self.calls.remove(&h.seq) {
                Some(call) => call.done.fail(CallError::Metadata(error)),
                None => self.stats.ignored += 1,
            },
            Command::Stream => {}
        }
        self.stats.bad_metadata += 1;
    }

    /// Dispatches `frame` and says whether to go on (not after a failed authentication).
    /// `owner` is the buffer the frame lies in when it is the frame's own: its payload is
    /// then kept or answered without a copy.
    fn dispatch_next(
        &mut self,
        frame: &FrameRef<'_>,
        owner: Option<&Bytes>,
        router: &Router,
        methods: &mut MethodMetrics,
    ) -> Next {
        self.dispatch(frame, owner, router, methods);
        if self.rejected {
            Next::Stop
        } else {
            Next::Continue
        }
    }

    fn dispatch(
        &mut self,
        frame: &FrameRef<'_>,
        owner: Option<&Bytes>,
        router: &Router,
        methods: &mut MethodMetrics,
    ) {
        self.stats.frames_in += 1;
        if frame.header.user_flags & USER_FLAG_METADATA != 0 && self.auth.is_none() {
            return self.dispatch_with_metadata(frame, owner, router, methods);
        }
        if let Some(secret) = &self.auth {
            let h = &frame.header;
            let flags = Flags(h.flags.0 & Flags::ASYNC);
            if h.cmd == Command::Request
                && frame.method == AUTH_METHOD.as_bytes()
                && constant_time_eq(frame.payload, secret)
            {
                self.auth = None;
                self.out
                    .push_frame(Command::Response, flags, 0, h.seq, frame.method, &[]);
            } else {
                self.rejected = true;
                let flags = flags.with_error();
                let method = if h.method_len > 0 {
                    frame.method
                } else {
                    AUTH_METHOD.as_bytes()
                };
                self.out.push_frame(
                    Command::Response,
                    flags,
                    0,
                    h.seq,
                    method,
                    AUTH_REQUIRED.as_bytes(),
                );
            }
            return;
        }
        self.dispatch_frame(frame, None, owner, router, methods);
    }

    /// Dispatches an authenticated frame whose metadata (if any) is taken off already.
    #[inline]
    fn dispatch_frame(
        &mut self,
        frame: &FrameRef<'_>,
        metadata: Option<Metadata>,
        owner: Option<&Bytes>,
        router: &Router,
        methods: &mut MethodMetrics,
    ) {
        match frame.header.cmd {
            Command::Request | Command::Notify => {
                if frame.header.cmd == Command::Request {
                    self.stats.requests += 1;
                } else {
                    self.stats.notifies += 1;
                }
                if self.in_flight.count() >= self.max_in_flight
                    && self.refuse_past_in_flight(frame, router)
                {
                    return;
                }
                match router.dispatch(
                    frame,
                    metadata.as_ref(),
                    owner,
                    &self.info,
                    &self.mailbox,
                    &self.in_flight,
                    &mut self.out,
                    methods,
                ) {
                    Dispatched::Handled => {}
                    Dispatched::NotFound => self.stats.not_found += 1,
                    Dispatched::Panicked => self.stats.panics += 1,
                }
            }
            Command::Ping => self.out.push_pong(),
            Command::Pong => {}
            Command::Response => self.answer_call(frame, metadata),
            Command::Stream => {
                let (info, mailbox) = (self.info, &self.mailbox);
                let conn = || ConnHandle::new(info, mailbox.clone());
                let route = |m: &[u8]| router.stream_route(m);
                let md = metadata.as_ref();
                self.streams
                    .on_frame(frame, md, &conn, route, &mut self.out);
                self.stats.stream_frames += 1;
                self.stats.streams_opened = self.streams.stats().opened_by_peer;
            }
        }
    }
}

impl Session {
    /// The connection has its most deferred work pending: a Request is refused, a Notify to
    /// a blocking method (which would hold a place too) dropped, both counted. Returns
    /// whether `frame` was refused; other Notifies go on.
    #[cold]
    fn refuse_past_in_flight(&mut self, frame: &FrameRef<'_>, router: &Router) -> bool {
        let h = &frame.header;
        if h.cmd == Command::Request {
            // The peer asks faster than the deferred work answers: refuse, don't queue.
            let flags = Flags(Flags::ERROR | (h.flags.0 & Flags::ASYNC));
            let msg = TOO_MANY_IN_FLIGHT.as_bytes();
            self.out
                .push_frame(Command::Response, flags, 0, h.seq, frame.method, msg);
        } else if !router.is_blocking(frame.method) {
            return false;
        }
        self.stats.refused_in_flight += 1;
        true
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
