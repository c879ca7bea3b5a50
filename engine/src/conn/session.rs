//! One connection's protocol state above its framing: frames dispatched to the router (or to
//! its streams), the `/_auth` handshake, the in-flight limit, and the calls this side made,
//! waiting for their Responses.
//!
//! Invariants: once the peer fails authentication nothing more it sends is dispatched; past
//! `max_in_flight` deferred answers a Request is refused at once with `TOO_MANY_IN_FLIGHT`
//! (never queued); every pending call completes exactly once (answered, timed out, or failed
//! at close), its completion's panics contained; a malformed metadata block fails only its
//! own frame.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringrpc_protocol::metadata::{Metadata, MetadataError, USER_FLAG_METADATA, take_metadata};
use ringrpc_protocol::{Command, Flags, FrameRef};

use crate::conn::call_slot::{Answered, CallSlot};
use crate::conn::handle::ConnHandle;
use crate::conn::responder::Deferred;
use crate::error::{AUTH_METHOD, AUTH_REQUIRED, CallError, INVALID_METADATA, TOO_MANY_IN_FLIGHT};
use crate::executor::contain::{CALL_DONE, contain};
use crate::ids::ConnInfo;
use crate::observe::methods::MethodMetrics;
use crate::reactor::mailbox::{CallDone, CallDoneMd, Mailbox};
use crate::router::{Dispatched, Router};
use crate::secret::constant_time_eq;
use crate::stream::StreamLimits;
use crate::stream::shared::StreamShared;
use crate::stream::table::StreamTable;
use crate::transport::arpc::Next;
use crate::transport::outqueue::OutQueue;

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

/// One connection's protocol state above the framing.
pub(crate) struct Session {
    info: ConnInfo,
    mailbox: Arc<Mailbox>,
    /// Calls this side made, by seq (a `BTreeMap`: empty, it costs no allocation and less
    /// room in the connection's slot than a `HashMap`).
    calls: BTreeMap<u64, PendingCall>,
    next_call_seq: u64,
    /// The shared secret the first frame must carry; `None` once authenticated or when
    /// none is required. An `Arc<Vec>`, not an `Arc<[u8]>`: a thin pointer, 8 bytes less
    /// in every slot.
    auth: Option<Arc<Vec<u8>>>,
    /// The peer failed to authenticate: nothing more is dispatched.
    rejected: bool,
    /// Not yet announced to the connect hook: a connection that may be TLS is announced
    /// once its handshake is done (or its first bytes say plaintext), so the hook sees the
    /// verified identity and nothing it sends goes out before the handshake.
    pub(crate) unannounced: bool,
    /// Requests whose answer was deferred to a responder and not yet sent.
    in_flight: Deferred,
    /// Past this many, new Requests are refused with [`TOO_MANY_IN_FLIGHT`] (a `u32`, which
    /// packs beside the flags: every connection's slot carries it).
    max_in_flight: u32,
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
    pub(super) fn new(info: ConnInfo, mailbox: Arc<Mailbox>) -> Session {
        Session {
            info,
            mailbox,
            calls: BTreeMap::new(),
            next_call_seq: 1,
            auth: None,
            rejected: false,
            unannounced: false,
            in_flight: Deferred::default(),
            max_in_flight: u32::MAX,
            out: OutQueue::default(),
            streams: StreamTable::new(StreamLimits::default()),
            stats: ConnStats::default(),
        }
    }

    /// What the connection's TLS handshake settled, for hooks and handlers from now on.
    pub(crate) fn set_tls(&mut self, tls: crate::ids::TlsInfo) {
        self.info.tls = Some(Arc::new(tls));
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
    pub(crate) fn require_auth(&mut self, secret: Arc<Vec<u8>>) {
        self.auth = Some(secret);
    }

    /// Refuses Requests while `max` answers of this connection are deferred.
    pub(crate) fn set_max_in_flight(&mut self, max: usize) {
        self.max_in_flight = u32::try_from(max).unwrap_or(u32::MAX);
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
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Whether call `seq` still waits for its Response.
    pub(crate) fn has_call(&self, seq: u64) -> bool {
        self.calls.contains_key(&seq)
    }

    /// Calls waiting for a Response.
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
    pub(super) fn dispatch_next(
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
                if self.in_flight.count() >= self.max_in_flight as usize
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
                let (info, mailbox) = (&self.info, &self.mailbox);
                let conn = || ConnHandle::new(info.clone(), mailbox.clone());
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
