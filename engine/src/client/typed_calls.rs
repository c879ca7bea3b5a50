//! Typed calls: a request value encoded as JSON or MessagePack, the answer decoded into the
//! type asked for — blocking and awaitable, on a [`Client`] and a [`ConnHandle`].
//!
//! Invariants: a value that cannot be encoded is never sent; an answer that does not
//! decode into the type asked for is [`CallError::Codec`] naming the codec and the type.

use std::any::type_name;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::conn::handle::ConnHandle;
use crate::error::CallError;

/// The two codecs typed calls speak.
#[derive(Clone, Copy, Debug)]
enum Codec {
    Json,
    #[cfg(feature = "msgpack")]
    MsgPack,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Json => "JSON",
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => "MessagePack",
        }
    }

    fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CallError> {
        let encoded = match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
        };
        encoded.map(Bytes::from).map_err(|e| {
            CallError::Codec(format!(
                "cannot encode the request ({}) as {}: {e}",
                type_name::<T>(),
                self.name()
            ))
        })
    }

    fn decode<T: DeserializeOwned>(self, answer: &[u8]) -> Result<T, CallError> {
        let decoded = match self {
            Codec::Json => serde_json::from_slice(answer).map_err(|e| e.to_string()),
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => rmp_serde::from_slice(answer).map_err(|e| e.to_string()),
        };
        decoded.map_err(|e| {
            CallError::Codec(format!(
                "the answer is not {} for {}: {e}",
                self.name(),
                type_name::<T>()
            ))
        })
    }
}

/// A typed call awaited: the call (already posted, or the encoding error), decoded when
/// it answers.
async fn awaited<R: DeserializeOwned>(
    codec: Codec,
    call: Result<crate::CallFuture, CallError>,
) -> Result<R, CallError> {
    codec.decode(&call?.await?)
}

impl Client {
    /// Calls `method` with `request` as JSON and decodes the JSON answer into `R`.
    pub fn call_json<Q: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let answer = self.call(method, Codec::Json.encode(request)?, timeout)?;
        Codec::Json.decode(&answer)
    }

    /// As [`Client::call_json`] with MessagePack (maps with field names, `rmp-serde`).
    #[cfg(feature = "msgpack")]
    pub fn call_msgpack<Q: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let answer = self.call(method, Codec::MsgPack.encode(request)?, timeout)?;
        Codec::MsgPack.decode(&answer)
    }

    /// As [`Client::call_json`], awaited (see [`Client::call_async`]).
    pub fn call_json_async<Q: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static {
        let call = Codec::Json
            .encode(request)
            .map(|payload| self.call_async(method, payload, timeout));
        awaited(Codec::Json, call)
    }

    /// As [`Client::call_msgpack`], awaited (see [`Client::call_async`]).
    #[cfg(feature = "msgpack")]
    pub fn call_msgpack_async<Q: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static {
        let call = Codec::MsgPack
            .encode(request)
            .map(|payload| self.call_async(method, payload, timeout));
        awaited(Codec::MsgPack, call)
    }
}

impl ConnHandle {
    /// Calls the peer's `method` with `request` as JSON, awaited; decodes the JSON answer
    /// into `R` (see [`ConnHandle::call_async`]).
    pub fn call_json_async<Q: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static {
        let call = Codec::Json
            .encode(request)
            .map(|payload| self.call_async(method, payload, timeout));
        awaited(Codec::Json, call)
    }

    /// As [`ConnHandle::call_json_async`] with MessagePack.
    #[cfg(feature = "msgpack")]
    pub fn call_msgpack_async<Q: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static {
        let call = Codec::MsgPack
            .encode(request)
            .map(|payload| self.call_async(method, payload, timeout));
        awaited(Codec::MsgPack, call)
    }
}
