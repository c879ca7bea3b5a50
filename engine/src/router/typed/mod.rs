//! Typed handlers in the axum style, for sync and async routes alike: what a handler
//! returns ([`IntoReply`]: bytes, text, [`Json`], `MsgPack` with the `msgpack` feature,
//! `Result`), the error type
//! that `?` converts into ([`HandlerError`]), and the extractors its arguments are built
//! from ([`FromRequest`]).
//!
//! Invariants: every value a handler returns becomes exactly one Response (an `Err` an
//! error Response carrying its text; a value that fails to serialize an error Response
//! saying so); a body an extractor cannot parse is answered with an error naming the
//! expected type, and the connection is kept.

mod extract;
mod handler;

use std::fmt;

use bytes::Bytes;
use ringrpc_protocol::metadata::Metadata;
use serde::Serialize;

#[cfg(feature = "msgpack")]
pub use extract::MsgPack;
pub use extract::{FromRequest, Json, Rejection, State};
pub use handler::{AsyncHandler, TypedHandler};
pub(crate) use handler::{async_route, typed_route};

/// The answer to one Request: a payload or an error text, and optional metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub(crate) body: Result<Bytes, String>,
    pub(crate) metadata: Option<Metadata>,
}

impl Reply {
    /// A successful Response carrying `payload`.
    pub fn ok(payload: impl Into<Bytes>) -> Reply {
        Reply {
            body: Ok(payload.into()),
            metadata: None,
        }
    }

    /// An error Response carrying `text`.
    pub fn error(text: impl Into<String>) -> Reply {
        Reply {
            body: Err(text.into()),
            metadata: None,
        }
    }

    /// The Response carries `metadata` (arpc's `md` block).
    pub fn with_metadata(mut self, metadata: Metadata) -> Reply {
        self.metadata = Some(metadata);
        self
    }

    /// Whether this is an error Response.
    pub fn is_error(&self) -> bool {
        self.body.is_err()
    }
}

/// What a typed or async handler may return.
pub trait IntoReply {
    /// The Response it becomes.
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Reply::ok(Bytes::new())
    }
}

impl IntoReply for Bytes {
    fn into_reply(self) -> Reply {
        Reply::ok(self)
    }
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> Reply {
        Reply::ok(self)
    }
}

impl IntoReply for &'static [u8] {
    fn into_reply(self) -> Reply {
        Reply::ok(Bytes::from_static(self))
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Reply {
        Reply::ok(Bytes::from_static(self.as_bytes()))
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Reply {
        Reply::ok(self)
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Reply {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Reply::ok(body),
            Err(e) => Reply::error(format!(
                "internal error: cannot encode the response as JSON: {e}"
            )),
        }
    }
}

#[cfg(feature = "msgpack")]
impl<T: Serialize> IntoReply for MsgPack<T> {
    fn into_reply(self) -> Reply {
        match rmp_serde::to_vec_named(&self.0) {
            Ok(body) => Reply::ok(body),
            Err(e) => Reply::error(format!(
                "internal error: cannot encode the response as MessagePack: {e}"
            )),
        }
    }
}

/// `Ok` answers with the value, `Err` with an error Response carrying its text.
impl<T: IntoReply, E: fmt::Display> IntoReply for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(value) => value.into_reply(),
            Err(e) => Reply::error(e.to_string()),
        }
    }
}

/// An error a handler answers with: its text becomes the error Response. `?` converts the
/// engine's errors (calls, streams, timeouts), serde's and I/O errors into it; for an
/// error type of your own, implement `From` or use [`HandlerError::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError(String);

impl HandlerError {
    /// An error answering with `text`.
    pub fn new(text: impl fmt::Display) -> HandlerError {
        HandlerError(text.to_string())
    }

    /// The text the caller receives.
    pub fn text(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! handler_error_from {
    ($($ty:ty),* $(,)?) => {
        $(impl From<$ty> for HandlerError {
            fn from(e: $ty) -> HandlerError {
                HandlerError::new(e)
            }
        })*
    };
}

handler_error_from!(
    crate::error::CallError,
    crate::error::StreamError,
    crate::executor::time::Elapsed,
    crate::executor::Cancelled,
    crate::executor::NotOnReactor,
    crate::executor::BlockingError,
    serde_json::Error,
    std::io::Error,
    std::fmt::Error,
    String,
    &str,
    Rejection,
    Box<dyn std::error::Error + Send + Sync>,
);

#[cfg(feature = "msgpack")]
handler_error_from!(rmp_serde::encode::Error, rmp_serde::decode::Error);

#[cfg(test)]
mod tests;
