//! Pub/sub's words on the wire, shared by the server side (`pubsub`) and the client side
//! (`client::pubsub`): the route names of Go arpc's pub/sub extension, the client's error,
//! and how a topic's bytes are made. A leaf (only `error` from the crate).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringrpc_protocol::{Topic, TopicError};

use crate::error::CallError;

/// Method a peer calls to authenticate (payload: the password).
pub const AUTHENTICATE: &str = "in_A";
/// Method a peer calls to subscribe (payload: topic bytes, data normally empty).
pub const SUBSCRIBE: &str = "in_S";
/// Method a peer calls to unsubscribe (payload: topic bytes, data normally empty).
pub const UNSUBSCRIBE: &str = "in_U";
/// Method a peer calls to publish to every subscriber, and the method of the Notify each
/// subscriber receives.
pub const PUBLISH: &str = "in_P";
/// Method a peer calls to publish to one subscriber (round-robin).
pub const PUBLISH_TO_ONE: &str = "in_P1";

/// Nanoseconds since the Unix epoch (0 for a clock before it).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Topic bytes for `name` carrying `data`, stamped now.
pub(crate) fn topic_bytes(name: &[u8], data: &[u8]) -> Result<Bytes, ringrpc_protocol::TopicError> {
    Topic::new(
        Bytes::copy_from_slice(name),
        Bytes::copy_from_slice(data),
        now_ns(),
    )?
    .encode()
}

/// Why a client's pub/sub call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PubSubError {
    /// The topic name is empty or longer than 1024 bytes.
    Topic(TopicError),
    /// The call failed (the server's error text is in [`CallError::Remote`]).
    Call(CallError),
}

impl fmt::Display for PubSubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PubSubError::Topic(e) => write!(f, "{e}"),
            PubSubError::Call(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PubSubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PubSubError::Topic(e) => Some(e),
            PubSubError::Call(e) => Some(e),
        }
    }
}

impl From<TopicError> for PubSubError {
    fn from(e: TopicError) -> Self {
        PubSubError::Topic(e)
    }
}

impl From<CallError> for PubSubError {
    fn from(e: CallError) -> Self {
        PubSubError::Call(e)
    }
}
