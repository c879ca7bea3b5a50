//! The handler traits behind `route_typed` and `route_async`: implemented for functions and
//! closures of up to six extractor arguments, and turned into the router's plain handlers.
//!
//! Invariants: an async handler's future runs as a task of the reactor that owns the
//! connection and is never polled elsewhere (it need not be `Send`); its Request stays owed
//! (counted against `max_in_flight_per_conn`, waited for by the shutdown drain) until the
//! task answers, panics (answered with [`HANDLER_PANICKED`]) or is dropped with its
//! connection; an async Notify holds a slot the same way and answers nothing.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::{FromRequest, IntoReply, Rejection, Reply};
use crate::conn::responder::Owed;
use crate::error::HANDLER_PANICKED;
use crate::executor::Executor;
use crate::executor::contain::panic_message;
use crate::router::context::Context;

/// A function usable with `route_async`: its arguments are extractors, it returns a future
/// (need not be `Send`) of anything [`IntoReply`].
pub trait AsyncHandler<Args>: Send + Sync + 'static {
    /// What the future answers with.
    type Output: IntoReply;
    /// The handler's future.
    type Future: Future<Output = Self::Output> + 'static;
    /// Extracts the arguments from the request's context and starts the handler.
    fn call(&self, ctx: &Context<'_>) -> Result<Self::Future, Rejection>;
}

/// A function usable with `route_typed`: its arguments are extractors, it returns anything
/// [`IntoReply`] at once, on the reactor thread.
pub trait TypedHandler<Args>: Send + Sync + 'static {
    /// What it answers with.
    type Output: IntoReply;
    /// Extracts the arguments from the request's context and runs the handler.
    fn call(&self, ctx: &Context<'_>) -> Result<Self::Output, Rejection>;
}

macro_rules! impl_handlers {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg,)*> AsyncHandler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future + 'static,
            Fut::Output: IntoReply,
            $($arg: FromRequest,)*
        {
            type Output = Fut::Output;
            type Future = Fut;

            #[allow(non_snake_case, unused_variables)]
            fn call(&self, ctx: &Context<'_>) -> Result<Fut, Rejection> {
                $(let $arg = $arg::from_request(ctx)?;)*
                Ok(self($($arg),*))
            }
        }

        impl<F, R, $($arg,)*> TypedHandler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> R + Send + Sync + 'static,
            R: IntoReply,
            $($arg: FromRequest,)*
        {
            type Output = R;

            #[allow(non_snake_case, unused_variables)]
            fn call(&self, ctx: &Context<'_>) -> Result<R, Rejection> {
                $(let $arg = $arg::from_request(ctx)?;)*
                Ok(self($($arg),*))
            }
        }
    };
}

impl_handlers!();
impl_handlers!(T1);
impl_handlers!(T1, T2);
impl_handlers!(T1, T2, T3);
impl_handlers!(T1, T2, T3, T4);
impl_handlers!(T1, T2, T3, T4, T5);
impl_handlers!(T1, T2, T3, T4, T5, T6);

/// A plain router handler that runs `handler` at once and answers with its value.
pub(crate) fn typed_route<H, Args>(handler: H) -> impl Fn(&mut Context<'_>) + Send + Sync + 'static
where
    H: TypedHandler<Args>,
    Args: 'static,
{
    move |ctx: &mut Context<'_>| match handler.call(ctx) {
        Ok(value) => answer(ctx, value.into_reply()),
        Err(rejection) => ctx.reply_error(&rejection.to_string()),
    }
}

/// A plain router handler that starts `handler`'s future as a task of the connection's
/// reactor and leaves the Request owed until the task answers.
pub(crate) fn async_route<H, Args>(handler: H) -> impl Fn(&mut Context<'_>) + Send + Sync + 'static
where
    H: AsyncHandler<Args>,
    Args: 'static,
{
    move |ctx: &mut Context<'_>| {
        let future = match handler.call(ctx) {
            Ok(future) => future,
            Err(rejection) => {
                ctx.reply_error(&rejection.to_string());
                return;
            }
        };
        let owed = ctx.owe();
        let task = async move {
            let outcome = AssertUnwindSafe(future).catch_unwind().await;
            let reply = match outcome {
                Ok(value) => value.into_reply(),
                Err(panic) => {
                    tracing::error!("an async handler panicked: {}", panic_message(&*panic));
                    Reply::error(HANDLER_PANICKED)
                }
            };
            owed.settle(reply);
        };
        match Executor::spawn(task) {
            Ok(key) => ctx.track_task(key),
            Err(e) => {
                // Not on a reactor (a connection driven by hand, as in fuzzing): the owed
                // slot went with the dropped task and answered; say why in the log.
                tracing::error!("cannot start an async handler: {e}");
            }
        }
    }
}

impl Owed {
    /// Answers with `reply` (a Request) or frees the slot (a Notify).
    pub(crate) fn settle(self, reply: Reply) {
        match self {
            Owed::Answer(responder) => {
                let responder = match reply.metadata {
                    Some(md) => responder.with_metadata(md),
                    None => responder,
                };
                match reply.body {
                    Ok(payload) => responder.reply_bytes(payload),
                    Err(text) => responder.reply_error(&text),
                }
            }
            Owed::Notify(slot) => drop(slot),
        }
    }
}

/// Answers the Request in `ctx` with a typed handler's `reply`.
fn answer(ctx: &mut Context<'_>, reply: Reply) {
    if let Some(md) = reply.metadata {
        ctx.set_reply_metadata(md);
    }
    match reply.body {
        Ok(payload) => ctx.reply_bytes(payload),
        Err(text) => ctx.reply_error(&text),
    }
}
