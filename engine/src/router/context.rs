//! What a handler sees of one Request or Notify ([`Context`]) and how it answers: straight
//! into the connection's output, or later through a [`Responder`].
//!
//! Invariants: a context lives for one dispatch; it queues at most one Response (later replies
//! are ignored, `ReplyState` says which one went); a Response written while messages this
//! reactor posted to itself still wait is queued behind them, so a handler's notify or call
//! to its own connection leaves before its answer; a reply over the wire's 4 GiB limit
//! becomes an error Response, never a truncated frame.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;
use ringrpc_protocol::{Command, Flags, FrameRef, Header};

use crate::conn::handle::ConnHandle;
use crate::conn::responder::{Deferred, NotifySlot, Owed, Responder};
use crate::error::{RESPONSE_TOO_LARGE, check_body};
use crate::ids::ConnInfo;
use crate::observe::methods::Timing;
use crate::reactor::mailbox::Mailbox;
use crate::router::request::Extensions;
use crate::router::request::Request;
use crate::transport::outqueue::OutQueue;

/// A request handler: reads the context and replies through it (now, or later through a
/// [`Responder`]). It runs on the reactor thread, so it must not block.
///
/// **A Request the handler leaves unanswered is answered with an empty, successful
/// Response**: when it returns without replying and without taking a responder, the engine
/// sends the caller `Ok` with an empty payload (arpc's caller sees `Ok(b"")`), so a handler
/// that only counts or logs still completes every call. To fail the call, reply with
/// [`Context::reply_error`]; to answer later, take [`Context::responder`]. A Notify gets no
/// Response whatever the handler does.
pub type Handler = Arc<dyn Fn(&mut Context<'_>) + Send + Sync>;

/// How far a Request has been answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyState {
    /// Nothing yet; when the handler returns the engine sends an empty Response.
    Pending,
    /// A successful Response is queued.
    Sent,
    /// An error Response is queued.
    SentError,
    /// A [`Responder`] was taken and answers later.
    Deferred,
    /// A Notify: no Response is ever sent.
    NoReply,
}

/// What a handler sees of one Request or Notify, and how it answers: now, straight into the
/// connection's output ([`Context::reply`], [`Context::reply_bytes`],
/// [`Context::reply_error`]), or later from any thread through a [`Responder`]
/// ([`Context::responder`]). A Request gets exactly one Response: later replies are
/// ignored, and one the handler never sends is an empty, successful Response (see
/// [`Handler`]).
///
/// ```
/// use ringrpc::{Context, Server};
///
/// fn greet(ctx: &mut Context<'_>) {
///     match std::str::from_utf8(ctx.payload()) {
///         Ok(name) if !name.is_empty() => ctx.reply(format!("hello, {name}").as_bytes()),
///         _ => ctx.reply_error("send a name"),
///     }
/// }
///
/// fn later(ctx: &mut Context<'_>) {
///     // Answered from another thread once the work is done.
///     if let Some(responder) = ctx.responder() {
///         std::thread::spawn(move || responder.reply(b"done"));
///     }
/// }
///
/// let builder = Server::builder().route("/greet", greet).route("/later", later);
/// ```
pub struct Context<'a> {
    header: Header,
    method: &'a [u8],
    payload: &'a [u8],
    conn: &'a ConnInfo,
    mailbox: &'a Arc<Mailbox>,
    in_flight: &'a Deferred,
    out: &'a mut OutQueue,
    pub(super) state: ReplyState,
    /// The request's metadata block, already taken off `payload`.
    metadata: Option<&'a Metadata>,
    /// Metadata to attach to the Response.
    reply_metadata: Option<Metadata>,
    /// When metrics are on: the clock started at dispatch, handed to a responder.
    pub(super) timing: Option<Timing>,
    /// The buffer the frame lies in, when it is the frame's own: `payload_bytes` then
    /// shares it instead of copying.
    pub(super) owner: Option<&'a Bytes>,
    /// The state registered with the builder, for extractors.
    pub(crate) extensions: &'a Arc<Extensions>,
    /// The route's own name, when the method has one: shared without a copy.
    pub(super) route_name: Option<&'a Bytes>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("cmd", &self.header.cmd)
            .field("seq", &self.header.seq)
            .field("method", &String::from_utf8_lossy(self.method))
            .field("payload_len", &self.payload.len())
            .field("conn", &self.conn.id)
            .finish()
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        frame: &FrameRef<'a>,
        metadata: Option<&'a Metadata>,
        conn: &'a ConnInfo,
        mailbox: &'a Arc<Mailbox>,
        in_flight: &'a Deferred,
        out: &'a mut OutQueue,
        extensions: &'a Arc<Extensions>,
    ) -> Context<'a> {
        Context {
            header: frame.header,
            method: frame.method,
            payload: frame.payload,
            conn,
            mailbox,
            in_flight,
            out,
            state: if frame.header.cmd == Command::Request {
                ReplyState::Pending
            } else {
                ReplyState::NoReply
            },
            metadata,
            reply_metadata: None,
            timing: None,
            owner: None,
            extensions,
            route_name: None,
        }
    }

    /// The method name as an owned `Bytes`: the route's static name when there is one,
    /// else a copy.
    fn method_bytes(&self) -> Bytes {
        match self.route_name {
            Some(name) => name.clone(),
            None => Bytes::copy_from_slice(self.method),
        }
    }

    /// The method name.
    pub fn method(&self) -> &'a [u8] {
        self.method
    }
    /// The request's metadata (arpc's `md` block, `user_flags` bit 0), if it carried any.
    /// The block is already taken off [`Context::payload`].
    pub fn metadata(&self) -> Option<&'a Metadata> {
        self.metadata
    }

    /// Attaches `metadata` to whatever Response this Request gets (the handler's reply, an
    /// error, or a [`Responder`] taken after this call), replacing any set before (a
    /// [`PropagateMetadata`](crate::PropagateMetadata) middleware's included: add keys with
    /// [`Context::reply_metadata_mut`] to keep those). Ignored for a Notify and once
    /// replied.
    pub fn set_reply_metadata(&mut self, metadata: Metadata) {
        self.reply_metadata = Some(metadata);
    }

    /// The metadata the Response will carry, created empty if none was set.
    pub fn reply_metadata_mut(&mut self) -> &mut Metadata {
        self.reply_metadata.get_or_insert_default()
    }

    /// The metadata the Response will carry, if any was set.
    pub fn reply_metadata(&self) -> Option<&Metadata> {
        self.reply_metadata.as_ref()
    }

    /// The request payload, borrowed from the receive buffer.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The request payload as an owned `Bytes`, for keeping beyond the handler or replying
    /// with [`Context::reply_bytes`]: shared without a copy when the frame has a buffer of
    /// its own (see [`Context::payload_shared`]), copied otherwise. [`Context::payload`]
    /// lends it without copying.
    pub fn payload_bytes(&self) -> Bytes {
        self.payload_shared()
            .unwrap_or_else(|| Bytes::copy_from_slice(self.payload))
    }
    /// The request payload shared without a copy, when the frame arrived in pieces and was
    /// assembled in a buffer of its own (frames larger than a receive buffer); `None`
    /// otherwise (the frame lies in a receive buffer that goes back to the kernel).
    pub fn payload_shared(&self) -> Option<Bytes> {
        let owner = self.owner?;
        let within = owner.as_ptr_range();
        let payload = self.payload.as_ptr_range();
        (!self.payload.is_empty() && within.start <= payload.start && payload.end <= within.end)
            .then(|| owner.slice_ref(self.payload))
    }
    /// The caller's sequence number.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }
    /// The eight application flag bits.
    pub fn user_flags(&self) -> u8 {
        self.header.user_flags
    }
    /// Whether the caller made the call asynchronously.
    pub fn is_async(&self) -> bool {
        self.header.flags.is_async()
    }
    /// Whether this is a Notify (no Response will be sent).
    pub fn is_notify(&self) -> bool {
        self.header.cmd == Command::Notify
    }
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }
    /// The connection as hooks see it: its id, peer address and, under TLS, what the
    /// handshake settled ([`ConnInfo::tls`]; a mutual-TLS client's verified certificate
    /// through [`ConnInfo::peer_certificate`], for authorisation in middleware).
    pub fn info(&self) -> &'a ConnInfo {
        self.conn
    }
    /// The connection, as a handle usable later and from any thread (notify or call the
    /// peer, close).
    pub fn conn(&self) -> ConnHandle {
        ConnHandle::new(self.conn.clone(), self.mailbox.clone())
    }

    /// Takes over answering this Request: the returned [`Responder`] is `Send + 'static`
    /// and answers from any thread, whenever the work is done (dropped unanswered, it sends
    /// an error). `None` when there is nothing left to answer: for a Notify (it gets no
    /// Response), and once this Request is answered or owed, that is after a reply (or an
    /// error) was queued or a responder was taken before; [`Context::replied`] tells.
    pub fn responder(&mut self) -> Option<Responder> {
        if self.replied() {
            return None;
        }
        self.state = ReplyState::Deferred;
        self.in_flight.owe();
        let responder = Responder::new(
            self.conn(),
            self.header.seq,
            self.method_bytes(),
            self.header.flags,
            self.timing,
        );
        Some(match self.reply_metadata.take() {
            None => responder,
            Some(md) => responder.with_metadata(md),
        })
    }
    /// The request as an owned [`Request`] (the payload shared without a copy when the frame
    /// has a buffer of its own, copied otherwise), to keep beyond the handler or move to
    /// another thread.
    pub fn to_request(&self) -> Request {
        Request {
            method: self.method_bytes(),
            payload: self.payload_bytes(),
            seq: self.header.seq,
            user_flags: self.header.user_flags,
            is_notify: self.is_notify(),
            conn: self.conn(),
            metadata: self.metadata.cloned(),
            extensions: self.extensions.clone(),
        }
    }

    /// Leaves this Request (or Notify) owed to a task: a Request's [`Responder`], or a
    /// Notify's slot of the in-flight limit, freed when the task finishes.
    pub(crate) fn owe(&mut self) -> Owed {
        match self.responder() {
            Some(responder) => Owed::Answer(responder),
            None => {
                self.in_flight.owe();
                Owed::Notify(NotifySlot::new(self.conn()))
            }
        }
    }

    /// Keeps `task` with the connection, so it is cancelled when the connection goes.
    pub(crate) fn track_task(&self, task: crate::executor::TaskKey) {
        self.in_flight.track(task);
    }

    /// Whether a Response has been queued or a responder taken (always true for a Notify).
    pub fn replied(&self) -> bool {
        self.state != ReplyState::Pending
    }
    /// How far this Request has been answered.
    pub fn reply_state(&self) -> ReplyState {
        self.state
    }

    /// Replies with `payload` (copied). A Request gets one Response: once it has replied
    /// (or a [`Responder`] was taken; see [`Context::replied`]), further replies are
    /// ignored, and a Notify's are never sent.
    pub fn reply(&mut self, payload: &[u8]) {
        self.respond(Flags::default(), payload);
    }

    /// Replies with `payload` without copying it: it is sent from this `Bytes` directly.
    /// Ignored once replied, like [`Context::reply`].
    pub fn reply_bytes(&mut self, payload: Bytes) {
        if self.replied() {
            return;
        }
        if check_body(self.method, &payload).is_err() {
            return self.too_large(payload.len());
        }
        self.state = ReplyState::Sent;
        let flags = self.response_flags(Flags::default());
        if self.reply_metadata.is_some() {
            return self.respond_with_metadata(flags, &payload);
        }
        if self.behind_local_mail() {
            return self.queue_behind(flags, &payload);
        }
        self.out.push_frame_bytes(
            Command::Response,
            flags,
            0,
            self.header.seq,
            self.method,
            payload,
        );
    }

    /// Replies with an error Response carrying `message`. Ignored once replied, like
    /// [`Context::reply`].
    pub fn reply_error(&mut self, message: &str) {
        self.respond(Flags::default().with_error(), message.as_bytes());
    }

    fn respond(&mut self, flags: Flags, payload: &[u8]) {
        if self.replied() {
            return;
        }
        if check_body(self.method, payload).is_err() {
            return self.too_large(payload.len());
        }
        self.state = if flags.is_error() {
            ReplyState::SentError
        } else {
            ReplyState::Sent
        };
        let flags = self.response_flags(flags);
        if self.reply_metadata.is_some() {
            return self.respond_with_metadata(flags, payload);
        }
        if self.behind_local_mail() {
            return self.queue_behind(flags, payload);
        }
        self.out.push_frame(
            Command::Response,
            flags,
            0,
            self.header.seq,
            self.method,
            payload,
        );
    }

    /// A reply over the wire's 4 GiB limit becomes the error [`RESPONSE_TOO_LARGE`] (the
    /// peer learns why; the connection stays usable).
    #[cold]
    fn too_large(&mut self, bytes: usize) {
        tracing::error!(seq = self.header.seq, bytes, "{RESPONSE_TOO_LARGE}");
        self.respond(Flags::default().with_error(), RESPONSE_TOO_LARGE.as_bytes())
    }

    /// Whether this handler (or an earlier one this turn) posted messages on this reactor's
    /// thread that are still queued: a Response written straight to the output now would
    /// overtake a notify or call the handler sent before it, so it queues behind them.
    #[inline]
    fn behind_local_mail(&self) -> bool {
        crate::reactor::mailbox::local_pending() && !self.conn.id.is_datagram()
    }

    /// Queues the Response behind the messages posted before it (see
    /// [`Context::behind_local_mail`]).
    #[cold]
    fn queue_behind(&mut self, flags: Flags, payload: &[u8]) {
        let frame = crate::conn::handle::encode(
            Command::Response,
            flags,
            self.header.seq,
            self.method,
            payload,
        );
        self.queue_encoded_behind(frame);
    }

    #[cold]
    fn queue_encoded_behind(&mut self, frame: Bytes) {
        // Owed and posted on the owning reactor's thread: never refused.
        let _ = self.mailbox.post(crate::reactor::mailbox::Command::Reply {
            conn: self.conn.id,
            frame,
        });
    }

    /// Queues the Response with the reply metadata appended.
    #[cold]
    fn respond_with_metadata(&mut self, flags: Flags, payload: &[u8]) {
        let md = self.reply_metadata.take().unwrap_or_default();
        let (seq, method) = (self.header.seq, self.method);
        match crate::transport::coder::encode_with_metadata(
            Command::Response,
            flags,
            seq,
            method,
            payload,
            &md,
        ) {
            Ok(frame) if self.behind_local_mail() => self.queue_encoded_behind(frame),
            Ok(frame) => self.out.push_encoded(frame),
            Err(e) => {
                // Only a body near 4 GiB can overflow: send the Response without it.
                tracing::warn!(seq, "response metadata dropped: {e}");
                self.out
                    .push_frame(Command::Response, flags, 0, seq, method, payload);
            }
        }
    }

    /// A Response keeps the Request's async bit.
    fn response_flags(&self, flags: Flags) -> Flags {
        Flags(flags.0 | (self.header.flags.0 & Flags::ASYNC))
    }
}
