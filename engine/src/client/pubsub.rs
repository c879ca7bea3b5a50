//! The client side of pub/sub: [`Client`] calls for `in_A`, `in_S`, `in_U`, `in_P` and
//! `in_P1`, and the `in_P` Notify handler every client carries, which hands each publication
//! to the handler registered for its topic.
//!
//! Invariants: the table of handlers (and the password) belongs to the client, not to one
//! connection: after a reconnect the client authenticates again and resubscribes every
//! topic before the new connection is handed to callers; a handler is registered before its
//! `in_S` goes out, so no publication that follows the subscription is missed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringrpc_protocol::Topic;

use crate::client::{Client, ClientBuilder};
use crate::pubsub::wire::topic_bytes;
use crate::pubsub::wire::{
    AUTHENTICATE, PUBLISH, PUBLISH_TO_ONE, PubSubError, SUBSCRIBE, UNSUBSCRIBE,
};

impl ClientBuilder {
    /// Longest a pub/sub call (`pubsub_auth`, `subscribe_topic`, `publish`...) waits for
    /// its answer (default 5 s).
    pub fn pubsub_timeout(self, timeout: Duration) -> Self {
        self.pubsub_table().set_timeout(timeout);
        self
    }
}

/// Pub/sub calls, compatible with a Go arpc pub/sub server (arpcex) and with
/// [`PubSub`](crate::PubSub).
impl Client {
    fn pubsub_call(&self, method: &str, payload: Bytes) -> Result<(), PubSubError> {
        self.call(method, payload, self.pubsub_table().timeout())?;
        Ok(())
    }

    /// Authenticates with the server's pub/sub password (`in_A`); the client does so again
    /// after every reconnect. A wrong one fails with `CallError::Remote("invalid password")`.
    pub fn pubsub_auth(&self, password: impl AsRef<[u8]>) -> Result<(), PubSubError> {
        let password = Bytes::copy_from_slice(password.as_ref());
        self.pubsub_call(AUTHENTICATE, password.clone())?;
        *self.pubsub_table().password() = Some(password);
        Ok(())
    }

    /// Subscribes to `name` (`in_S`): `handler` runs for each publication on it, on the
    /// client's reactor thread, so it must not block (hand work to another thread). A
    /// second subscription to the same name replaces the handler. The client resubscribes
    /// after every reconnect; publications while disconnected are lost.
    pub fn subscribe_topic(
        &self,
        name: impl AsRef<[u8]>,
        handler: impl Fn(Topic) + Send + Sync + 'static,
    ) -> Result<(), PubSubError> {
        let name = name.as_ref();
        let bytes = topic_bytes(name, &[])?;
        let key = Bytes::copy_from_slice(name);
        let table = self.pubsub_table();
        table.handlers().insert(key.clone(), Arc::new(handler));
        let outcome = self.pubsub_call(SUBSCRIBE, bytes);
        if outcome.is_err() {
            table.handlers().remove(&key);
        }
        outcome
    }

    /// Unsubscribes from `name` (`in_U`). Its handler is dropped at once, whatever the
    /// server answers, and it is not resubscribed after a reconnect.
    pub fn unsubscribe_topic(&self, name: impl AsRef<[u8]>) -> Result<(), PubSubError> {
        let name = name.as_ref();
        let bytes = topic_bytes(name, &[])?;
        self.pubsub_table().handlers().remove(name);
        self.pubsub_call(UNSUBSCRIBE, bytes)
    }

    /// Publishes `data` on `name` to every subscriber (`in_P`, stamped with the current
    /// time); returns once the server accepted it.
    pub fn publish(&self, name: impl AsRef<[u8]>, data: &[u8]) -> Result<(), PubSubError> {
        self.pubsub_call(PUBLISH, topic_bytes(name.as_ref(), data)?)
    }

    /// Publishes `data` on `name` to one subscriber, the next in turn (`in_P1`).
    pub fn publish_to_one(&self, name: impl AsRef<[u8]>, data: &[u8]) -> Result<(), PubSubError> {
        self.pubsub_call(PUBLISH_TO_ONE, topic_bytes(name.as_ref(), data)?)
    }
}
