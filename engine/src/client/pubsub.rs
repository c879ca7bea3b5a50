//! The client side of pub/sub: a client's topic handlers, password and call timeout, kept
//! across reconnects; the `in_P` Notify handler every client carries, which hands each
//! publication to its topic's handler; and the re-authentication and resubscription after
//! a reconnect. The calls themselves (`in_A`, `in_S`, `in_U`, `in_P`, `in_P1`) are
//! [`Client`](crate::Client) methods.
//!
//! Invariants: the table belongs to the client, not to one connection: after a reconnect
//! the client authenticates again and resubscribes every topic before the new connection is
//! handed to callers; a handler is registered before its `in_S` goes out, so no publication
//! that follows the subscription is missed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringrpc_protocol::{Topic, TopicRef};

use crate::conn::handle::ConnHandle;
use crate::pubsub::wire::{AUTHENTICATE, PUBLISH, PubSubError, SUBSCRIBE, topic_bytes};
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
    pub(crate) fn handlers(&self) -> MutexGuard<'_, HashMap<Bytes, TopicHandler>> {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn password(&self) -> MutexGuard<'_, Option<Bytes>> {
        self.password.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the timeout of pub/sub calls.
    pub(crate) fn set_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.timeout_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) -> Duration {
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
