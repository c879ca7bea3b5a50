//! Methods and their handlers, and the request context a handler sees.
//!
//! Invariants: a method name is 1..=127 bytes (the wire limit); a Request always gets exactly
//! one Response, whatever the handler does (replies twice, never, or panics); a Notify never
//! gets one.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::{Command, Flags, FrameRef, Header, MAX_METHOD_LEN};

use crate::conn::OutQueue;
use crate::handle::{ConnHandle, ConnInfo, Responder};
use crate::mailbox::Mailbox;

/// A request handler: reads the context and replies through it (now, or later through a
/// [`Responder`]). It runs on the reactor thread, so it must not block.
///
/// A Request whose handler returns without replying or taking a responder gets an empty
/// Response.
pub type Handler = Arc<dyn Fn(&mut Context<'_>) + Send + Sync>;

/// Error text of the Response to a Request for an unknown method.
pub const METHOD_NOT_FOUND: &str = "method not found";
/// Error text of the Response to a Request whose handler panicked.
pub const HANDLER_PANICKED: &str = "internal error: handler panicked";

/// What a handler sees of one Request or Notify, and how it answers.
pub struct Context<'a> {
    header: Header,
    method: &'a [u8],
    payload: &'a [u8],
    conn: &'a ConnInfo,
    mailbox: &'a Arc<Mailbox>,
    out: &'a mut OutQueue,
    replied: bool,
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
        conn: &'a ConnInfo,
        mailbox: &'a Arc<Mailbox>,
        out: &'a mut OutQueue,
    ) -> Context<'a> {
        Context {
            header: frame.header,
            method: frame.method,
            payload: frame.payload,
            conn,
            mailbox,
            out,
            // A Notify is never answered: treat it as already replied.
            replied: frame.header.cmd != Command::Request,
        }
    }

    /// The method name.
    pub fn method(&self) -> &'a [u8] {
        self.method
    }
    /// The request payload, borrowed from the receive buffer.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
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
    /// The connection, as a handle usable later and from any thread (notify or call the
    /// peer, close).
    pub fn conn(&self) -> ConnHandle {
        ConnHandle {
            info: *self.conn,
            mailbox: self.mailbox.clone(),
        }
    }

    /// Takes over answering this Request: the returned [`Responder`] is `Send + 'static`
    /// and answers from any thread, whenever the work is done. `None` for a Notify or when
    /// a reply was already queued.
    pub fn responder(&mut self) -> Option<Responder> {
        if self.replied {
            return None;
        }
        self.replied = true;
        Some(Responder::new(
            self.conn(),
            self.header.seq,
            self.method,
            self.header.flags,
        ))
    }
    /// Whether a Response has been queued (always true for a Notify).
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// Replies with `payload` (copied). Returns false, sending nothing, if already replied.
    pub fn reply(&mut self, payload: &[u8]) -> bool {
        self.respond(Flags::default(), payload)
    }

    /// Replies with `payload` without copying it: it is sent from this `Bytes` directly.
    pub fn reply_bytes(&mut self, payload: Bytes) -> bool {
        if self.replied {
            return false;
        }
        self.replied = true;
        let flags = self.response_flags(Flags::default());
        self.out.push_frame_bytes(
            Command::Response,
            flags,
            0,
            self.header.seq,
            self.method,
            payload,
        );
        true
    }

    /// Replies with an error Response carrying `message`.
    pub fn reply_error(&mut self, message: &str) -> bool {
        self.respond(Flags::default().with_error(), message.as_bytes())
    }

    fn respond(&mut self, flags: Flags, payload: &[u8]) -> bool {
        if self.replied {
            return false;
        }
        self.replied = true;
        let flags = self.response_flags(flags);
        self.out.push_frame(
            Command::Response,
            flags,
            0,
            self.header.seq,
            self.method,
            payload,
        );
        true
    }

    /// A Response keeps the Request's async bit.
    fn response_flags(&self, flags: Flags) -> Flags {
        Flags(flags.0 | (self.header.flags.0 & Flags::ASYNC))
    }
}

/// A method name that cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteError(pub String);

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RouteError {}

/// FNV-1a over method names. The route table is fixed before serving and network input only
/// looks keys up, never inserts them, so a flooding-resistant (and slower) hash buys nothing.
#[derive(Debug)]
struct MethodHasher(u64);

impl Default for MethodHasher {
    fn default() -> Self {
        MethodHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for MethodHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Maps method names to handlers.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<Box<[u8]>, Handler, BuildHasherDefault<MethodHasher>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self
            .routes
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        names.sort();
        f.debug_struct("Router").field("methods", &names).finish()
    }
}

/// The built-in `/echo`: answers with the payload unchanged.
pub fn echo(ctx: &mut Context<'_>) {
    let payload = ctx.payload();
    ctx.reply(payload);
}

impl Router {
    /// A router with no methods.
    pub fn new() -> Router {
        Router::default()
    }

    /// A router with the built-in `/echo`.
    pub fn with_builtins() -> Router {
        let mut r = Router::new();
        r.add("/echo", echo).expect("valid built-in method name");
        r
    }

    /// Registers `handler` for `method`, replacing any earlier one.
    pub fn add(
        &mut self,
        method: &str,
        handler: impl Fn(&mut Context<'_>) + Send + Sync + 'static,
    ) -> Result<(), RouteError> {
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            return Err(RouteError(format!(
                "method name {method:?} is {} bytes; it must be 1..={MAX_METHOD_LEN}",
                method.len()
            )));
        }
        self.routes
            .insert(method.as_bytes().into(), Arc::new(handler));
        Ok(())
    }

    /// The handler for `method`, if any.
    pub fn get(&self, method: &[u8]) -> Option<&Handler> {
        self.routes.get(method)
    }

    /// Runs the handler for a Request or Notify and guarantees the Response rules above.
    pub(crate) fn dispatch(
        &self,
        frame: &FrameRef<'_>,
        conn: &ConnInfo,
        mailbox: &Arc<Mailbox>,
        out: &mut OutQueue,
    ) -> Dispatched {
        let is_request = frame.header.cmd == Command::Request;
        let Some(handler) = self.get(frame.method) else {
            if is_request {
                out.push_frame(
                    Command::Response,
                    Flags(Flags::ERROR | (frame.header.flags.0 & Flags::ASYNC)),
                    0,
                    frame.header.seq,
                    frame.method,
                    METHOD_NOT_FOUND.as_bytes(),
                );
            }
            return Dispatched::NotFound;
        };
        let peer = conn.peer;
        let mut ctx = Context::new(frame, conn, mailbox, out);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&mut ctx)));
        if outcome.is_err() {
            tracing::error!(method = %String::from_utf8_lossy(frame.method), %peer, "handler panicked");
            ctx.reply_error(HANDLER_PANICKED);
            return Dispatched::Panicked;
        }
        if !ctx.replied() {
            ctx.reply(&[]);
        }
        Dispatched::Handled
    }
}

/// What happened to a dispatched frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dispatched {
    Handled,
    NotFound,
    Panicked,
}
