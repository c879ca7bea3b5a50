//! The client side of pub/sub: [`Client`] calls for `in_A`, `in_S`, `in_U`, `in_P` and
//! `in_P1`, and the `in_P` Notify handler every client carries, which hands each publication
//! to the handler registered for its topic.
//!
//! Invariants: the table of handlers (and the password) belongs to the client, not to one
//! connection: after a reconnect the client authenticates again and resubscribes every
//! topic before the new connection is handed to callers; a handler is registered before its
//! `in_S` goes out, so no publication that follows the subscription is missed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringrpc_protocol::{Topic, TopicRef};

use super::{AUTHENTICATE, PUBLISH, PUBLISH_TO_ONE, PubSubError, SUBSCRIBE, UNSUBSCRIBE, now_ns};
use crate::client::{Client, ClientBuilder};
use crate::handle::ConnHandle;
use crate::router::{Context, Router};

/// Runs for each publication on a subscribed topic.
type TopicHandler = Arc<dyn Fn(Topic) + Send + Sync>;

/// Default timeout of pub/sub calls.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One client's topic handlers, password and call timeout.
pub(crate) struct TopicTable {
    handlers: Mutex<HashMap<Bytes, TopicHandler>>,
    password: Mutex<Option<Bytes>>,
    timeout_ms: AtomicU64,
}

impl Default for TopicTable {
    fn default() -> Self {
        TopicTable {
            handlers: Mutex::default(),
            password: Mutex::default(),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
        }
    }
}

impl fmt::Debug for TopicTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTable")
            .field("topics", &self.handlers().len())
            .finish()
    }
}

impl TopicTable {
    fn handlers(&self) -> MutexGuard<'_, HashMap<Bytes, TopicHandler>> {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn password(&self) -> MutexGuard<'_, Option<Bytes>> {
        self.password.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Installs the `in_P` Notify handler on a client's router (a route the application
    /// registers under that name later replaces it).
    pub(crate) fn install(self: &Arc<Self>, router: &mut Router) {
        let table = Arc::downgrade(self);
        router
            .add(PUBLISH, move |ctx: &mut Context<'_>| {
                if let Some(table) = table.upgrade() {
                    table.on_publication(ctx.payload());
                }
            })
            .expect("in_P is a valid method name");
    }

    /// Hands a publication to its topic's handler (on the client's reactor thread).
    fn on_publication(&self, payload: &[u8]) {
        let name = match TopicRef::parse(payload) {
            Ok(topic) => topic.name,
            Err(e) => {
                tracing::warn!("pubsub: dropped a publication with bad topic bytes: {e}");
                return;
            }
        };
        let Some(handler) = self.handlers().get(name).cloned() else {
            return; // unsubscribed meanwhile
        };
        if let Ok(topic) = Topic::decode(&Bytes::copy_from_slice(payload)) {
            handler(topic);
        }
    }

    /// After a reconnect, before callers see `conn`: authenticate again and resubscribe
    /// every topic. Failures are logged; calls then fail with the server's reason.
    pub(crate) fn restore(&self, conn: &ConnHandle) {
        let timeout = self.timeout();
        let password = self.password().clone();
        if let Some(password) = password {
            if let Err(e) = conn.call(AUTHENTICATE, password, timeout) {
                tracing::warn!("pubsub: authenticating again after a reconnect failed: {e}");
                return;
            }
        }
        let names: Vec<Bytes> = self.handlers().keys().cloned().collect();
        for name in names {
            let resubscribed = topic_bytes(&name, &[])
                .map_err(PubSubError::from)
                .and_then(|bytes| Ok(conn.call(SUBSCRIBE, bytes, timeout)?));
            if let Err(e) = resubscribed {
                tracing::warn!(
                    topic = %String::from_utf8_lossy(&name),
                    "pubsub: resubscribing after a reconnect failed: {e}"
                );
            }
        }
    }
}

fn topic_bytes(name: &[u8], data: &[u8]) -> Result<Bytes, ringrpc_protocol::TopicError> {
    Topic::new(
        Bytes::copy_from_slice(name),
        Bytes::copy_from_slice(data),
        now_ns(),
    )?
    .encode()
}

impl ClientBuilder {
    /// Longest a pub/sub call (`pubsub_auth`, `subscribe_topic`, `publish`...) waits for
    /// its answer (default 5 s).
    pub fn pubsub_timeout(self, timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.pubsub_table().timeout_ms.store(ms, Ordering::Relaxed);
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
