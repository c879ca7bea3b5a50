//! The NATS bridge: carries publications and broadcasts between the nodes of a cluster, each
//! node a server connected to the same NATS server (or NATS cluster).
//!
//! It runs beside the reactors, on a thread of its own (`ringrpc-nats`) with a small
//! single-threaded tokio runtime and the `async-nats` client, and talks to them the way any
//! other thread does: publications go through [`PubSub`]'s encode-once local delivery,
//! broadcasts through the reactors' mailboxes.
//!
//! Subjects (`<t>` is the topic name in lowercase hex, so dots, spaces and any byte are
//! safe in one subject token):
//! - `ringrpc.pub.<t>`: a publication to every subscriber (`in_P`, [`PubSub::publish`]);
//!   the body is the arpc topic bytes the publisher sent (name, data, timestamp), unchanged.
//!   Every node subscribes to `ringrpc.pub.*`.
//! - `ringrpc.one.<t>`: a publication to one subscriber, sent only when the origin node has
//!   no local subscriber of its own; a node subscribes to it in queue group `ringrpc.one`
//!   while it has at least one local subscriber to the topic, so NATS picks one such node,
//!   which picks one of its subscribers round-robin.
//! - `ringrpc.bcast`: a [`ServerHandle::broadcast`](crate::ServerHandle::broadcast); the
//!   body is the Notify payload, header `Ringrpc-Method` its method.
//!
//! Every message carries header `Ringrpc-Origin` (the sending node's id, 16 hex digits); a
//! node ignores its own (and also connects with NATS `no_echo`), so nothing loops or comes
//! back to its origin, which delivered locally already.
//!
//! Invariants:
//! - Local delivery never waits for NATS: the publish path delivers locally first, then
//!   hands a copy to the bridge with a non-blocking `try_send` on a bounded channel
//!   ([`OUTBOUND_CAPACITY`] messages); when it is full or NATS is disconnected the message
//!   is dropped and counted in [`BridgeStats::dropped_outbound`](crate::BridgeStats::dropped_outbound), never queued for later
//!   (at most once, like a delivery to a slow subscriber).
//! - A node that cannot reach NATS still starts and serves; the client reconnects forever
//!   (100 ms more per attempt, at most 2 s apart) and resubscribes.
//! - Every task the bridge spawns lives in one `JoinSet` that joins each as it ends, so it
//!   holds only the running ones: two subscriptions plus one queue group per topic with
//!   local subscribers ([`BridgeStats::tasks`](crate::BridgeStats::tasks)), however often topics come and go.

use std::collections::HashMap;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use crate::cluster::OUTBOUND_CAPACITY;
use crate::cluster::link::{BridgeLink, Counters, Outbound};
use crate::pubsub::PubSub;
use crate::reactor::shared::Shared;

const PUB_PREFIX: &str = "ringrpc.pub.";
const ONE_PREFIX: &str = "ringrpc.one.";
const BCAST: &str = "ringrpc.bcast";
const QUEUE_GROUP: &str = "ringrpc.one";
const ORIGIN: &str = "Ringrpc-Origin";
const METHOD: &str = "Ringrpc-Method";

/// A running bridge: its thread and how to stop it.
#[derive(Debug)]
pub(crate) struct Bridge {
    link: Arc<BridgeLink>,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Starts the bridge thread for a server with these NATS `urls` (validated by the
    /// config), its pub/sub if any, and its reactors' `shared` state.
    pub(crate) fn start(
        urls: &[String],
        pubsub: Option<PubSub>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Bridge> {
        let addrs: Vec<ServerAddr> = urls
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let link = Arc::new(BridgeLink {
            node_id: new_node_id(),
            tx,
            counters: Counters::default(),
            interest: Mutex::default(),
            wake: Notify::new(),
        });
        let stop = Arc::new(Notify::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let task = Task {
            origin: format!("{:016x}", link.node_id).into(),
            link: link.clone(),
            pubsub,
            shared,
            urls: urls.join(","),
        };
        let thread = std::thread::Builder::new()
            .name("ringrpc-nats".into())
            .spawn({
                let stop = stop.clone();
                move || runtime.block_on(task.run(addrs, rx, stop))
            })?;
        Ok(Bridge {
            link,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn link(&self) -> &Arc<BridgeLink> {
        &self.link
    }

    /// Stops the bridge (after flushing what it holds, at most 1 s) and waits for it.
    pub(crate) fn stop(mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A random node id: the process's hash seed mixed with its id and the time.
fn new_node_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(crate::pubsub::now_ns().into());
    h.finish()
}

fn hex(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len() * 2);
    for b in name {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Which subscription a message came in on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Publish,
    One,
    Broadcast,
}

#[derive(Clone)]
struct Task {
    link: Arc<BridgeLink>,
    /// This node's id as sent in `Ringrpc-Origin`.
    origin: Arc<str>,
    pubsub: Option<PubSub>,
    shared: Arc<Shared>,
    urls: String,
}

impl Task {
    async fn run(
        self,
        addrs: Vec<ServerAddr>,
        mut rx: mpsc::Receiver<Outbound>,
        stop: Arc<Notify>,
    ) {
        let events = self.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("ringrpc node {:016x}", self.link.node_id))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(10))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(2000))
            })
            .event_callback(move |event| {
                let task = events.clone();
                async move { task.on_event(event) }
            });
        let client = match options.connect(addrs).await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(nats = %self.urls, "NATS bridge cannot start: {e}; cross-node delivery is off");
                stop.notified().await;
                return;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (subject, kind) in [
            (format!("{PUB_PREFIX}*"), Kind::Publish),
            (BCAST.to_string(), Kind::Broadcast),
        ] {
            match client.subscribe(subject.clone()).await {
                Ok(sub) => {
                    tasks.spawn(self.clone().inbound(sub, kind));
                }
                Err(e) => tracing::error!(subject, "NATS bridge cannot subscribe: {e}"),
            }
        }
        {
            let task = self.clone();
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if !task.link.counters.ever_connected.load(Ordering::Acquire) {
                    tracing::warn!(
                        nats = %task.urls,
                        "NATS bridge cannot reach the NATS server yet; serving local traffic only, cross-node delivery is off until it connects (retrying)"
                    );
                }
            });
        }
        let mut one_subs: HashMap<Bytes, tokio::task::AbortHandle> = HashMap::new();
        self.count_tasks(&tasks);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.send(&client, msg).await,
                    None => break,
                },
                () = self.link.wake.notified() => {
                    self.apply_interest(&client, &mut one_subs, &mut tasks).await;
                    self.count_tasks(&tasks);
                }
                // Joins each task that ended (an aborted queue group's, the start-up check),
                // so the set holds only running ones.
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = ended {
                        if e.is_panic() {
                            tracing::error!("NATS bridge task panicked: {e}");
                        }
                    }
                    self.count_tasks(&tasks);
                }
                () = stop.notified() => break,
            }
        }
        // Hand over what was accepted already, briefly.
        while let Ok(msg) = rx.try_recv() {
            self.send(&client, msg).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        tasks.abort_all();
    }

    /// Publishes how many tasks the bridge holds ([`BridgeStats::tasks`](crate::BridgeStats::tasks)).
    fn count_tasks(&self, tasks: &tokio::task::JoinSet<()>) {
        self.link
            .counters
            .tasks
            .store(tasks.len(), Ordering::Relaxed);
    }

    fn on_event(&self, event: async_nats::Event) {
        let c = &self.link.counters;
        match event {
            async_nats::Event::Connected => {
                c.connected.store(true, Ordering::Release);
                if c.ever_connected.swap(true, Ordering::AcqRel) {
                    c.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(nats = %self.urls, "NATS bridge reconnected; cross-node delivery resumes");
                } else {
                    tracing::info!(nats = %self.urls, "NATS bridge connected; cross-node delivery is on");
                }
            }
            async_nats::Event::Disconnected => {
                c.connected.store(false, Ordering::Release);
                tracing::warn!(
                    nats = %self.urls,
                    "NATS bridge lost its connection; local delivery continues, cross-node messages are dropped and counted until it reconnects"
                );
            }
            other => tracing::info!(nats = %self.urls, "NATS bridge: {other}"),
        }
    }

    async fn send(&self, client: &async_nats::Client, msg: Outbound) {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, &*self.origin);
        let (subject, body) = match msg {
            Outbound::Publish { name, topic } => (format!("{PUB_PREFIX}{}", hex(&name)), topic),
            Outbound::PublishToOne { name, topic } => {
                (format!("{ONE_PREFIX}{}", hex(&name)), topic)
            }
            Outbound::Broadcast { method, payload } => {
                headers.insert(METHOD, String::from_utf8_lossy(&method).as_ref());
                (BCAST.to_string(), payload)
            }
        };
        let c = &self.link.counters;
        match client.publish_with_headers(subject, headers, body).await {
            Ok(()) => c.forwarded.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!("NATS bridge could not forward: {e}");
                c.dropped_outbound.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Joins or leaves the publish-to-one queue group of each topic whose local interest
    /// changed.
    async fn apply_interest(
        &self,
        client: &async_nats::Client,
        subs: &mut HashMap<Bytes, tokio::task::AbortHandle>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        let Some(pubsub) = &self.pubsub else { return };
        let names =
            std::mem::take(&mut *self.link.interest.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            let wanted = pubsub.has_local(&name);
            match (wanted, subs.contains_key(&name)) {
                (true, false) => {
                    let subject = format!("{ONE_PREFIX}{}", hex(&name));
                    match client.queue_subscribe(subject, QUEUE_GROUP.into()).await {
                        Ok(sub) => {
                            let handle = tasks.spawn(self.clone().inbound(sub, Kind::One));
                            subs.insert(name, handle);
                        }
                        Err(e) => tracing::warn!("NATS bridge cannot join a queue group: {e}"),
                    }
                }
                (false, true) => {
                    // Dropping the subscriber (with its task) unsubscribes.
                    if let Some(handle) = subs.remove(&name) {
                        handle.abort();
                    }
                }
                _ => {}
            }
        }
    }

    async fn inbound(self, mut sub: async_nats::Subscriber, kind: Kind) {
        while let Some(msg) = sub.next().await {
            self.deliver(kind, &msg);
        }
    }

    fn deliver(&self, kind: Kind, msg: &async_nats::Message) {
        let c = &self.link.counters;
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        if header(ORIGIN).as_deref() == Some(&*self.origin) {
            c.ignored_own.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.received.fetch_add(1, Ordering::Relaxed);
        match kind {
            Kind::Publish | Kind::One => {
                if let Some(pubsub) = &self.pubsub {
                    pubsub.deliver_remote(&msg.payload, matches!(kind, Kind::One));
                }
            }
            Kind::Broadcast => {
                let Some(method) = header(METHOD) else {
                    tracing::debug!("NATS bridge: a broadcast without a method header");
                    return;
                };
                if let Err(e) = self.shared.broadcast_local(&method, &msg.payload, None) {
                    tracing::debug!("NATS bridge: a broadcast was not posted everywhere: {e}");
                }
            }
        }
    }
}
