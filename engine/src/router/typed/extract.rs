//! Extractors: the arguments of a typed or async handler, each built at dispatch from the
//! request's [`Context`] (on the reactor, before any future runs), so a handler reads like
//! its signature and an extractor takes only what it needs: `Json<T>` parses the payload
//! where it lies, `Bytes` shares or copies it, `Request` builds the whole owned request.
//!
//! Invariants: an extractor never panics on network input; a payload it cannot parse is a
//! [`Rejection`] naming the type expected and why, which the engine sends as the error
//! Response (the connection stays open).

use std::any::type_name;
use std::fmt;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;
use serde::de::DeserializeOwned;

use crate::conn::handle::ConnHandle;
use crate::router::context::Context;
use crate::router::request::Request;

/// A request an extractor refused: its text is the error Response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection(String);

impl Rejection {
    /// A rejection answering with `text`.
    pub fn new(text: impl Into<String>) -> Rejection {
        Rejection(text.into())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejection {}

/// Builds a handler argument from the request, at dispatch, on the reactor thread.
pub trait FromRequest: Sized {
    /// The argument, or why the request does not provide it.
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection>;
}

/// A payload as JSON (arpc's default codec): as an argument, the body parsed into `T`; as a
/// return value, `T` serialized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// A payload as MessagePack (one of arpc's codecs, and xiwangshe's default), through
/// `rmp-serde`: as an argument, the body parsed into `T`; as a return value, `T` serialized
/// as a map with field names. Needs the `msgpack` feature (on by default).
#[cfg(feature = "msgpack")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgPack<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Json<T> {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        serde_json::from_slice(ctx.payload())
            .map(Json)
            .map_err(|e| bad_body("JSON", type_name::<T>(), e))
    }
}

#[cfg(feature = "msgpack")]
impl<T: DeserializeOwned> FromRequest for MsgPack<T> {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        rmp_serde::from_slice(ctx.payload())
            .map(MsgPack)
            .map_err(|e| bad_body("MessagePack", type_name::<T>(), e))
    }
}

fn bad_body(codec: &str, expected: &str, error: impl fmt::Display) -> Rejection {
    Rejection(format!(
        "bad request body: expected {codec} for {expected}: {error}"
    ))
}

/// The payload, shared without a copy when the frame had a buffer of its own (a copy
/// otherwise; see [`Context::payload_bytes`]).
impl FromRequest for Bytes {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        Ok(ctx.payload_bytes())
    }
}

/// The request's metadata (empty when it carried none).
impl FromRequest for Metadata {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        Ok(ctx.metadata().cloned().unwrap_or_default())
    }
}

/// The connection the request came on.
impl FromRequest for ConnHandle {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        Ok(ctx.conn())
    }
}

/// The whole request, owned (see [`Context::to_request`]).
impl FromRequest for Request {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        Ok(ctx.to_request())
    }
}

/// Application state registered with `state(..)` on the server, client or UDP endpoint
/// builder, cloned for each request (wrap large state in an `Arc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromRequest for State<T> {
    fn from_request(ctx: &Context<'_>) -> Result<Self, Rejection> {
        ctx.extensions.get::<T>().cloned().map(State).ok_or_else(|| {
            Rejection(format!(
                "internal error: no state of type {} was registered (call .state(..) on the builder)",
                type_name::<T>()
            ))
        })
    }
}
