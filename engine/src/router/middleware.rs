//! Middleware: code run around every handler ([`Middleware`], [`Flow`]), and the two the
//! engine ships ([`PropagateMetadata`], [`LogRequests`]).
//!
//! Invariants: middleware runs on the reactor thread, like handlers; `before` in registration
//! order, `after` in reverse, for every middleware whose `before` ran (see `dispatch`).

use std::sync::Arc;

use bytes::Bytes;

use super::Context;

/// Whether a Request or Notify goes on to the next middleware and the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next middleware, then the handler.
    Continue,
    /// Skip the later middlewares and the handler. A Request the middleware did not answer
    /// gets the error Response [`STOPPED_BY_MIDDLEWARE`](crate::router::STOPPED_BY_MIDDLEWARE).
    Stop,
}

/// Code run around every handler, the not-found one included, on the reactor thread (so it
/// must not block). Register with
/// [`ServerBuilder::middleware`](crate::ServerBuilder::middleware).
///
/// `before` runs in registration order and may answer or [`Flow::Stop`] the request; `after`
/// runs in reverse order once the Response is settled (queued, handed to a responder, or
/// none for a Notify), for every middleware whose `before` ran: also after a stop, an
/// unknown method or a panic. A panic in either is caught like a handler's.
pub trait Middleware: Send + Sync + 'static {
    /// Runs before the handler. Replying here and returning [`Flow::Continue`] leaves the
    /// handler's replies ignored.
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        let _ = ctx;
        Flow::Continue
    }
    /// Runs after the handler, once the Response is settled (see
    /// [`Context::reply_state`]).
    fn after(&self, ctx: &Context<'_>) {
        let _ = ctx;
    }
}

/// Middleware that copies the named keys from a Request's metadata onto its Response's
/// (whatever Response it gets: the handler's, an error, a responder's later answer), e.g. a
/// request id passed through. Keys the request does not carry are skipped; a key the
/// handler sets itself with [`Context::reply_metadata_mut`] wins.
///
/// ```
/// let mut router = ringrpc::Router::with_builtins();
/// router.add_middleware(ringrpc::PropagateMetadata::new(["x-request-id"]));
/// ```
#[derive(Clone, Debug)]
pub struct PropagateMetadata {
    keys: Vec<String>,
}

impl PropagateMetadata {
    /// Copies these keys.
    pub fn new<K: Into<String>>(keys: impl IntoIterator<Item = K>) -> PropagateMetadata {
        PropagateMetadata {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }
}

impl Middleware for PropagateMetadata {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        let Some(md) = ctx.metadata() else {
            return Flow::Continue;
        };
        if ctx.is_notify() {
            return Flow::Continue;
        }
        for key in &self.keys {
            if let Some(value) = md.get(key) {
                // Cannot fail: the key and value came from a valid block of at most the
                // same size.
                let _ = ctx
                    .reply_metadata_mut()
                    .insert(key.as_str(), Bytes::copy_from_slice(value));
            }
        }
        Flow::Continue
    }
}

/// Middleware that logs every Request and Notify at `info` level once it is answered:
/// method, seq, peer, payload length and how it was answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogRequests;

/// A shared middleware: register a clone and keep the other to read its state.
impl<M: Middleware> Middleware for Arc<M> {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        (**self).before(ctx)
    }
    fn after(&self, ctx: &Context<'_>) {
        (**self).after(ctx)
    }
}

impl Middleware for LogRequests {
    fn after(&self, ctx: &Context<'_>) {
        tracing::info!(
            method = %String::from_utf8_lossy(ctx.method()),
            seq = ctx.seq(),
            peer = %ctx.peer(),
            payload_len = ctx.payload().len(),
            reply = ?ctx.reply_state(),
            "request"
        );
    }
}
