//! JSON payloads (arpc's default codec): binding a request payload to a type and answering
//! with a serialized value, on [`Context`], [`Responder`] and the blocking [`Request`].
//!
//! Invariants: a value that cannot be serialized still answers the Request, with an error
//! Response carrying serde's message, so the exactly-one-Response rule holds; a successful
//! reply from a [`Context`] is serialized once and sent from that buffer without a copy.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::conn::responder::Responder;
use crate::router::Context;
use crate::router::request::Request;

fn encode_failure(error: &serde_json::Error) -> String {
    tracing::warn!("cannot encode a response as JSON: {error}");
    format!("internal error: cannot encode the response as JSON: {error}")
}

impl<'a> Context<'a> {
    /// Parses the payload as JSON into `T`, which may borrow from the receive buffer
    /// (`&'a str` fields). On an error, answer it yourself, e.g. with
    /// [`Context::reply_error`].
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.payload())
    }

    /// Replies with `value` serialized as JSON; a value that fails to serialize is answered
    /// with an error Response naming serde's reason. Ignored once replied, like
    /// [`Context::reply`].
    pub fn reply_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        if self.replied() {
            return;
        }
        match serde_json::to_vec(value) {
            Ok(body) => self.reply_bytes(Bytes::from(body)),
            Err(e) => self.reply_error(&encode_failure(&e)),
        }
    }
}

impl Responder {
    /// Sends `value` serialized as JSON; a value that fails to serialize is answered with an
    /// error Response naming serde's reason.
    pub fn reply_json<T: Serialize + ?Sized>(self, value: &T) {
        match serde_json::to_vec(value) {
            Ok(body) => self.reply(&body),
            Err(e) => self.reply_error(&encode_failure(&e)),
        }
    }
}

impl Request {
    /// Parses the payload as JSON into `T`, which may borrow from this Request.
    pub fn json<'de, T: Deserialize<'de>>(&'de self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}
