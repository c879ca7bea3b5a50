//! Dispatching one Request or Notify: the route looked up, the middleware chain and the
//! handler run with panics caught, and the Response rules settled.
//!
//! Invariants: a panic in a handler or middleware answers [`HANDLER_PANICKED`] and never
//! unwinds into the reactor; a Request nobody answered gets an empty Response (an unknown
//! method [`METHOD_NOT_FOUND`]); with metrics on, a Request is timed from dispatch until its
//! answer is queued (a deferred one when its responder's answer arrives).

use std::sync::Arc;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;
use ringrpc_protocol::{Command, Flags, FrameRef};

use super::{Context, Flow, Handler, ReplyState, Route, Router};
use crate::conn::responder::Deferred;
use crate::error::{HANDLER_PANICKED, METHOD_NOT_FOUND, STOPPED_BY_MIDDLEWARE};
use crate::ids::ConnInfo;
use crate::observe::methods::{MethodMetrics, Timing};
use crate::reactor::mailbox::Mailbox;
use crate::transport::outqueue::OutQueue;

impl Router {
    /// Runs the middleware and handler for a Request or Notify and guarantees the Response
    /// rules above; counts it in `methods` (when on) and records its latency there once
    /// answered (a deferred answer is recorded when the responder's answer arrives).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &self,
        frame: &FrameRef<'_>,
        metadata: Option<&Metadata>,
        owner: Option<&Bytes>,
        conn: &ConnInfo,
        mailbox: &Arc<Mailbox>,
        in_flight: &Deferred,
        out: &mut OutQueue,
        methods: &mut MethodMetrics,
    ) -> Dispatched {
        let found = self.routes.get(frame.method);
        if !methods.is_on() {
            return self.dispatch_to(
                found, frame, metadata, owner, conn, mailbox, in_flight, out, None,
            );
        }
        let timing = methods.start(found.map(|r| r.index));
        let mut deferred = false;
        let dispatched = self.dispatch_to(
            found,
            frame,
            metadata,
            owner,
            conn,
            mailbox,
            in_flight,
            out,
            Some((timing, &mut deferred)),
        );
        if let (Some(timing), false) = (timing, deferred) {
            methods.finish(timing);
        }
        dispatched
    }

    /// [`Router::dispatch`] once the route is looked up; `metered` carries the request's
    /// clock to a responder and reports whether the answer was deferred.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn dispatch_to(
        &self,
        found: Option<&Route>,
        frame: &FrameRef<'_>,
        metadata: Option<&Metadata>,
        owner: Option<&Bytes>,
        conn: &ConnInfo,
        mailbox: &Arc<Mailbox>,
        in_flight: &Deferred,
        out: &mut OutQueue,
        metered: Option<(Option<Timing>, &mut bool)>,
    ) -> Dispatched {
        let route = found.map(|r| &r.handler);
        if route.is_none() && self.not_found.is_none() && self.middleware.is_empty() {
            // Nothing user-defined to run: answer without building a context.
            if frame.header.cmd == Command::Request {
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
        }
        let mut ctx = Context::new(
            frame,
            metadata,
            conn,
            mailbox,
            in_flight,
            out,
            &self.extensions,
        );
        ctx.owner = owner;
        ctx.route_name = found.map(|r| &r.name);
        match metered {
            None => self.run(route, &mut ctx),
            Some((timing, deferred)) => {
                ctx.timing = timing;
                let dispatched = self.run(route, &mut ctx);
                *deferred = ctx.state == ReplyState::Deferred;
                dispatched
            }
        }
    }

    #[inline]
    fn run(&self, route: Option<&Handler>, ctx: &mut Context<'_>) -> Dispatched {
        if self.middleware.is_empty() {
            self.run_handler(route, ctx)
        } else {
            self.run_with_middleware(route, ctx)
        }
    }

    /// Runs the route, or the not-found handler when there is none, and settles the
    /// Response.
    fn run_handler(&self, route: Option<&Handler>, ctx: &mut Context<'_>) -> Dispatched {
        let (handler, dispatched) = match route {
            Some(handler) => (Some(handler), Dispatched::Handled),
            None => (self.not_found.as_ref(), Dispatched::NotFound),
        };
        if let Some(handler) = handler {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&mut *ctx)));
            if outcome.is_err() {
                log_panic(ctx, "handler");
                ctx.reply_error(HANDLER_PANICKED);
                return Dispatched::Panicked;
            }
        }
        if !ctx.replied() {
            if dispatched == Dispatched::NotFound {
                ctx.reply_error(METHOD_NOT_FOUND);
            } else {
                ctx.reply(&[]);
            }
        }
        dispatched
    }

    fn run_with_middleware(&self, route: Option<&Handler>, ctx: &mut Context<'_>) -> Dispatched {
        let mut entered = 0;
        let mut before = Ok(Flow::Continue);
        for middleware in &self.middleware {
            entered += 1;
            before = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                middleware.before(&mut *ctx)
            }));
            if !matches!(before, Ok(Flow::Continue)) {
                break;
            }
        }
        let mut dispatched = match before {
            Ok(Flow::Continue) => self.run_handler(route, ctx),
            Ok(Flow::Stop) => {
                ctx.reply_error(STOPPED_BY_MIDDLEWARE);
                Dispatched::Handled
            }
            Err(_) => {
                log_panic(ctx, "middleware before");
                ctx.reply_error(HANDLER_PANICKED);
                Dispatched::Panicked
            }
        };
        for middleware in self.middleware[..entered].iter().rev() {
            let ctx = &*ctx;
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| middleware.after(ctx)));
            if outcome.is_err() {
                log_panic(ctx, "middleware after");
                dispatched = Dispatched::Panicked;
            }
        }
        dispatched
    }
}

fn log_panic(ctx: &Context<'_>, what: &str) {
    tracing::error!(
        method = %String::from_utf8_lossy(ctx.method()),
        peer = %ctx.peer(),
        "{what} panicked"
    );
}

/// What happened to a dispatched frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dispatched {
    Handled,
    NotFound,
    Panicked,
}
