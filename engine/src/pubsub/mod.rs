//! Publish/subscribe, wire-compatible with Go arpc's pub/sub extension (arpcex
//! `extension/pubsub`): the server side ([`PubSub`]); `client::pubsub` is the client side.
//!
//! A peer calls (Request) `in_A` to authenticate with the password, `in_S` / `in_U` to
//! subscribe to / unsubscribe from a topic, `in_P` to publish to every subscriber and `in_P1`
//! to one of them; the payload is the topic bytes ([`Topic`]). Each subscriber gets a Notify
//! `in_P` carrying the publisher's topic bytes unchanged.
//!
//! It owns the registry shared by all cores: topic name → subscribers, and per connection
//! its topics (and, when a password is set, whether it authenticated).
//!
//! Invariants:
//! - A connection's entries leave the registry when it closes (a disconnect hook that runs
//!   before, and never replaces, the user's); a topic with no subscriber has no entry, so
//!   publishing to unknown names costs no memory.
//! - A publication is encoded once; every subscriber gets a clone of the same `Bytes`.
//! - The publisher is answered before any delivery is posted, and is never blocked by a
//!   subscriber: a delivery to a connection over its send-queue limit (or to a core whose
//!   inbox is full) is skipped and counted in [`PubSubStats::skipped`], never queued.
//! - Subscriptions need a stream connection (TCP or WebSocket): a datagram peer has no
//!   disconnect to clean them up. A datagram peer may authenticate (to publish); its entry
//!   goes when the datagram endpoint forgets the peer (quiet for `udp_dedup_window`, see
//!   `udp`), which runs the same disconnect hook, so there are at most as many as the
//!   endpoint's peer table holds (65,536 per core).

pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
#[cfg(feature = "nats")]
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use ringrpc_protocol::{Command as Cmd, Flags, Topic, TopicError, TopicRef};

#[cfg(feature = "nats")]
use crate::cluster::link::{BridgeLink, Outbound};
use crate::config::Config;
use crate::conn::handle::{ConnHandle, encode};
use crate::conn::hooks::DisconnectHook;
use crate::ids::ConnId;
pub(crate) use crate::pubsub::wire::now_ns;
pub use crate::pubsub::wire::{
    AUTHENTICATE, PUBLISH, PUBLISH_TO_ONE, PubSubError, SUBSCRIBE, UNSUBSCRIBE,
};
use crate::reactor::mailbox::NotifyTally;
use crate::router::Context;
use crate::secret::constant_time_eq;

/// Error text of a failed `in_A` (arpc's own).
pub const INVALID_PASSWORD: &str = "invalid password";
/// Error text of a pub/sub call before a successful `in_A` on a server with a password
/// (arpc stays silent there; an answer lets the caller see why).
pub const NOT_AUTHENTICATED: &str = "pubsub: not authenticated; call in_A first";
/// Error text of a subscribe past [`PubSub::max_subscriptions_per_conn`].
pub const TOO_MANY_SUBSCRIPTIONS: &str =
    "pubsub: too many subscriptions on this connection; unsubscribe from some first";
/// Error text of a subscribe over UDP.
pub const NEEDS_STREAM: &str =
    "pubsub: subscribing needs a TCP or WebSocket connection, not datagrams";

/// Subscriptions one connection may hold by default.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONN: usize = 4096;

/// Counters of a [`PubSub`], from [`PubSub::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubSubStats {
    /// Publications accepted (`in_P`, `in_P1`, [`PubSub::publish`], [`PubSub::publish_to_one`]).
    pub published: u64,
    /// Notifies queued on subscribers' connections (counted by their reactors, so a
    /// publication shows here shortly after it was accepted).
    pub delivered: u64,
    /// Deliveries skipped: the subscriber was over its send-queue limit (a slow reader) or
    /// its core's inbox was full.
    pub skipped: u64,
    /// Subscriptions now (one per connection and topic).
    pub subscribers: usize,
    /// Topics with at least one subscriber now.
    pub topics: usize,
    /// Connections (and datagram peers) known now: authenticated with `in_A` (when a
    /// password is set) or subscribed to a topic.
    pub connections: usize,
}

/// The subscribers of one topic, in subscription order (swap-removed), for round-robin.
#[derive(Default)]
struct TopicSubs {
    subs: Vec<ConnHandle>,
    index: HashMap<ConnId, usize>,
    /// Next start of `in_P1`'s round-robin.
    cursor: AtomicUsize,
}

impl TopicSubs {
    fn add(&mut self, conn: ConnHandle) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.index.entry(conn.id()) {
            e.insert(self.subs.len());
            self.subs.push(conn);
        }
    }

    fn remove(&mut self, id: ConnId) {
        let Some(at) = self.index.remove(&id) else {
            return;
        };
        self.subs.swap_remove(at);
        if let Some(moved) = self.subs.get(at) {
            self.index.insert(moved.id(), at);
        }
    }
}

#[derive(Default)]
struct Registry {
    topics: HashMap<Bytes, TopicSubs>,
    /// Connections that authenticated or subscribed, with their topics.
    conns: HashMap<ConnId, HashSet<Bytes>>,
    subscriptions: usize,
    /// Whether to note topics that gain their first or lose their last subscriber (for the
    /// NATS bridge's publish-to-one queue groups).
    track_interest: bool,
    /// Those topics, since the bridge last took them.
    interest_changed: Vec<Bytes>,
}

impl Registry {
    fn unsubscribe(&mut self, id: ConnId, name: &[u8]) {
        let Some(topics) = self.conns.get_mut(&id) else {
            return;
        };
        if !topics.remove(name) {
            return;
        }
        self.subscriptions -= 1;
        self.drop_sub(id, name);
    }

    fn drop_sub(&mut self, id: ConnId, name: &[u8]) {
        if let Some(subs) = self.topics.get_mut(name) {
            subs.remove(id);
            if subs.subs.is_empty() {
                if let Some((name, _)) = self.topics.remove_entry(name) {
                    if self.track_interest {
                        self.interest_changed.push(name);
                    }
                }
            }
        }
    }

    fn forget(&mut self, id: ConnId) {
        let Some(topics) = self.conns.remove(&id) else {
            return;
        };
        self.subscriptions -= topics.len();
        for name in topics {
            self.drop_sub(id, &name);
        }
    }
}

/// What all clones of a [`PubSub`] share.
#[derive(Default)]
struct State {
    registry: RwLock<Registry>,
    published: AtomicU64,
    refused: AtomicU64,
    /// What the subscribers' reactors did with what was posted.
    tally: Arc<NotifyTally>,
    /// The NATS bridge, when the server has one: publications go to other nodes too.
    #[cfg(feature = "nats")]
    bridge: OnceLock<Arc<BridgeLink>>,
}

impl State {
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the bridge which topics gained or lost local interest (under the write lock,
    /// so the bridge sees changes in order).
    fn report_interest(&self, registry: &mut Registry) {
        #[cfg(feature = "nats")]
        if let Some(bridge) = self.bridge.get() {
            bridge.interest_changed(&mut registry.interest_changed);
        }
        #[cfg(not(feature = "nats"))]
        let _ = registry;
    }

    fn post(&self, to: &ConnHandle, frame: &Bytes) -> bool {
        match to.notify_encoded(frame.clone(), &self.tally) {
            Ok(()) => true,
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Posts `frame` to every subscriber of `name`; returns how many took it.
    fn deliver_all(&self, name: &[u8], frame: &Bytes) -> usize {
        let registry = self.read();
        let Some(topic) = registry.topics.get(name) else {
            return 0;
        };
        topic.subs.iter().filter(|to| self.post(to, frame)).count()
    }

    /// Posts `frame` to the next subscriber of `name` in turn, past those whose inbox is
    /// full; returns whether one took it.
    fn deliver_one(&self, name: &[u8], frame: &Bytes) -> bool {
        let registry = self.read();
        let Some(topic) = registry.topics.get(name) else {
            return false;
        };
        let n = topic.subs.len();
        let start = topic.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).any(|i| self.post(&topic.subs[(start + i) % n], frame))
    }
}

/// A route handler, boxed to be registered like any other.
type BoxedRoute = Box<dyn Fn(&mut Context<'_>) + Send + Sync>;

/// The Notify every subscriber receives: method `in_P`, the topic bytes as payload.
fn publication(topic_bytes: &[u8]) -> Bytes {
    encode(
        Cmd::Notify,
        Flags::default(),
        0,
        PUBLISH.as_bytes(),
        topic_bytes,
    )
}

/// Publish/subscribe served on a server's connections, compatible with Go arpc's pub/sub
/// extension; register it with [`ServerBuilder::pubsub`](crate::ServerBuilder::pubsub).
/// Clones share one registry.
///
/// ```
/// use ringrpc::{Config, PubSub, Server};
///
/// let pubsub = PubSub::new().password("s3cret");
/// let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
/// let server = Server::builder().config(config).pubsub(pubsub.clone()).build()?.start()?;
/// // Peers now call in_A, in_S, in_P...; the application may publish too.
/// assert_eq!(pubsub.publish("news", b"hello")?, 0); // nobody subscribed yet
/// assert_eq!(pubsub.stats().published, 1);
/// server.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PubSub {
    password: Option<Arc<[u8]>>,
    max_subscriptions_per_conn: usize,
    state: Arc<State>,
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSub")
            .field("password", &self.password.is_some())
            .field(
                "max_subscriptions_per_conn",
                &self.max_subscriptions_per_conn,
            )
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for PubSub {
    fn default() -> Self {
        PubSub::new()
    }
}

impl PubSub {
    /// Pub/sub without a password: any connection may subscribe and publish (`in_A`
    /// succeeds whatever it carries, for Go clients that always call it).
    pub fn new() -> PubSub {
        PubSub {
            password: None,
            max_subscriptions_per_conn: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONN,
            state: Arc::default(),
        }
    }

    /// Pub/sub as `config` asks ([`ConfigBuilder::pubsub`](crate::ConfigBuilder::pubsub)),
    /// `None` when it is off.
    pub fn from_config(config: &Config) -> Option<PubSub> {
        config.pubsub.then(|| PubSub {
            password: config.pubsub_password.clone(),
            ..PubSub::new()
        })
    }

    /// Requires each connection to call `in_A` with this password (compared in constant
    /// time) before any other pub/sub call; until then those get the error
    /// [`NOT_AUTHENTICATED`], and a wrong password [`INVALID_PASSWORD`]. Set it before
    /// registering (clones made earlier keep the old setting).
    pub fn password(mut self, password: impl AsRef<[u8]>) -> PubSub {
        self.password = Some(Arc::from(password.as_ref()));
        self
    }

    /// Most topics one connection may subscribe to (default 4096); past it `in_S` gets the
    /// error [`TOO_MANY_SUBSCRIPTIONS`]. Each subscription costs about 100 bytes plus its
    /// name, twice (topic → connection and connection → topic).
    pub fn max_subscriptions_per_conn(mut self, n: usize) -> PubSub {
        self.max_subscriptions_per_conn = n.max(1);
        self
    }

    /// Publishes `data` under `name` to every subscriber, as a peer's `in_P` would (stamped
    /// with the current time). Returns how many subscribers it was handed to (a slow one
    /// may still skip it, see [`PubSubStats::skipped`]). Never blocks on subscribers.
    ///
    /// With a NATS bridge ([`ConfigBuilder::nats`](crate::ConfigBuilder::nats)) it also
    /// reaches the subscribers on every other node; the count is of this node's.
    pub fn publish(&self, name: impl AsRef<[u8]>, data: &[u8]) -> Result<usize, TopicError> {
        let (name, topic) = self.encode(name.as_ref(), data)?;
        Ok(self.publish_all(&name, &topic))
    }

    /// Publishes `data` under `name` to one subscriber, the next in turn; returns whether
    /// one took it.
    ///
    /// With a NATS bridge, a local subscriber is preferred; with none here it goes to one
    /// other node that has one (NATS picks the node), and `true` then means it was handed
    /// to the bridge.
    pub fn publish_to_one(&self, name: impl AsRef<[u8]>, data: &[u8]) -> Result<bool, TopicError> {
        let (name, topic) = self.encode(name.as_ref(), data)?;
        Ok(self.publish_one(&name, &topic))
    }

    /// Delivers arpc topic bytes to this node's subscribers of `name`, then hands them to
    /// the bridge, if any.
    fn publish_all(&self, name: &[u8], topic: &[u8]) -> usize {
        self.state.published.fetch_add(1, Ordering::Relaxed);
        let n = self.state.deliver_all(name, &publication(topic));
        #[cfg(feature = "nats")]
        if let Some(bridge) = self.state.bridge.get() {
            bridge.forward(Outbound::Publish {
                name: Bytes::copy_from_slice(name),
                topic: Bytes::copy_from_slice(topic),
            });
        }
        n
    }

    /// Delivers arpc topic bytes to one local subscriber of `name`, or, with none here,
    /// hands them to the bridge for one on another node.
    fn publish_one(&self, name: &[u8], topic: &[u8]) -> bool {
        self.state.published.fetch_add(1, Ordering::Relaxed);
        if self.state.deliver_one(name, &publication(topic)) {
            return true;
        }
        #[cfg(feature = "nats")]
        if let Some(bridge) = self.state.bridge.get() {
            bridge.forward(Outbound::PublishToOne {
                name: Bytes::copy_from_slice(name),
                topic: Bytes::copy_from_slice(topic),
            });
            return true;
        }
        false
    }

    /// Connects this registry to a server's NATS bridge.
    #[cfg(feature = "nats")]
    pub(crate) fn attach_bridge(&self, link: Arc<BridgeLink>) {
        if self.state.bridge.set(link).is_ok() {
            let mut registry = self.state.write();
            registry.track_interest = true;
            // Topics subscribed before the bridge started.
            let mut names: Vec<Bytes> = registry.topics.keys().cloned().collect();
            registry.interest_changed.append(&mut names);
            self.state.report_interest(&mut registry);
        }
    }

    /// Whether this node has a subscriber to `name`.
    #[cfg(feature = "nats")]
    pub(crate) fn has_local(&self, name: &[u8]) -> bool {
        self.state.read().topics.contains_key(name)
    }

    /// Delivers a publication another node forwarded (arpc topic bytes) to every local
    /// subscriber, or to one when `one`; never forwards it again.
    #[cfg(feature = "nats")]
    pub(crate) fn deliver_remote(&self, topic: &Bytes, one: bool) {
        let name = match TopicRef::parse(topic) {
            Ok(t) => t.name,
            Err(e) => {
                tracing::debug!("NATS bridge: dropped a publication with bad topic bytes: {e}");
                return;
            }
        };
        let frame = publication(topic);
        if one {
            self.state.deliver_one(name, &frame);
        } else {
            self.state.deliver_all(name, &frame);
        }
    }

    /// The counters, and the subscriptions and topics now.
    pub fn stats(&self) -> PubSubStats {
        let dropped = self.state.tally.dropped.load(Ordering::Relaxed);
        let (subscribers, topics, connections) = {
            let registry = self.state.read();
            let r = &*registry;
            (r.subscriptions, r.topics.len(), r.conns.len())
        };
        PubSubStats {
            published: self.state.published.load(Ordering::Relaxed),
            delivered: self.state.tally.queued.load(Ordering::Relaxed),
            skipped: self.state.refused.load(Ordering::Relaxed) + dropped,
            subscribers,
            topics,
            connections,
        }
    }

    /// The topic name and arpc topic bytes of a publication.
    fn encode(&self, name: &[u8], data: &[u8]) -> Result<(Bytes, Bytes), TopicError> {
        let topic = Topic::new(
            Bytes::copy_from_slice(name),
            Bytes::copy_from_slice(data),
            now_ns(),
        )?;
        Ok((topic.name.clone(), topic.encode()?))
    }

    /// The five routes, for [`ServerBuilder::pubsub`](crate::ServerBuilder::pubsub).
    pub(crate) fn routes(&self) -> Vec<(&'static str, BoxedRoute)> {
        let on = |f: fn(&PubSub, &mut Context<'_>)| {
            let this = self.clone();
            Box::new(move |ctx: &mut Context<'_>| f(&this, ctx)) as BoxedRoute
        };
        vec![
            (AUTHENTICATE, on(PubSub::on_authenticate)),
            (SUBSCRIBE, on(PubSub::on_subscribe)),
            (UNSUBSCRIBE, on(PubSub::on_unsubscribe)),
            (PUBLISH, on(PubSub::on_publish)),
            (PUBLISH_TO_ONE, on(PubSub::on_publish_to_one)),
        ]
    }

    /// Forgets a closed connection's subscriptions.
    pub(crate) fn disconnect_hook(&self) -> DisconnectHook {
        let state = self.state.clone();
        Box::new(move |info, _| {
            let mut registry = state.write();
            registry.forget(info.id);
            state.report_interest(&mut registry);
        })
    }

    fn on_authenticate(&self, ctx: &mut Context<'_>) {
        let Some(password) = &self.password else {
            ctx.reply(&[]);
            return;
        };
        if constant_time_eq(ctx.payload(), password) {
            self.state.write().conns.entry(ctx.conn().id()).or_default();
            ctx.reply(&[]);
        } else {
            ctx.reply_error(INVALID_PASSWORD);
        }
    }

    /// Whether the caller may use pub/sub; answers the error when not.
    fn admitted(&self, ctx: &mut Context<'_>) -> bool {
        if self.password.is_none() || self.state.read().conns.contains_key(&ctx.conn().id()) {
            return true;
        }
        ctx.reply_error(NOT_AUTHENTICATED);
        false
    }

    /// The topic in the payload of an admitted caller; answers the error otherwise.
    fn topic<'a>(&self, ctx: &mut Context<'a>) -> Option<TopicRef<'a>> {
        if !self.admitted(ctx) {
            return None;
        }
        match TopicRef::parse(ctx.payload()) {
            Ok(topic) => Some(topic),
            Err(e) => {
                ctx.reply_error(&e.to_string());
                None
            }
        }
    }

    fn on_subscribe(&self, ctx: &mut Context<'_>) {
        let Some(topic) = self.topic(ctx) else { return };
        let conn = ctx.conn();
        if conn.id().is_datagram() {
            ctx.reply_error(NEEDS_STREAM);
            return;
        }
        let mut guard = self.state.write();
        let registry = &mut *guard;
        let mine = registry.conns.entry(conn.id()).or_default();
        if !mine.contains(topic.name) {
            if mine.len() >= self.max_subscriptions_per_conn {
                drop(guard);
                ctx.reply_error(TOO_MANY_SUBSCRIPTIONS);
                return;
            }
            let name = Bytes::copy_from_slice(topic.name);
            mine.insert(name.clone());
            registry.subscriptions += 1;
            if registry.track_interest && !registry.topics.contains_key(&name) {
                registry.interest_changed.push(name.clone());
            }
            registry.topics.entry(name).or_default().add(conn);
            self.state.report_interest(registry);
        }
        drop(guard);
        ctx.reply(&[]);
    }

    fn on_unsubscribe(&self, ctx: &mut Context<'_>) {
        let Some(topic) = self.topic(ctx) else { return };
        {
            let mut registry = self.state.write();
            registry.unsubscribe(ctx.conn().id(), topic.name);
            self.state.report_interest(&mut registry);
        }
        ctx.reply(&[]);
    }

    fn on_publish(&self, ctx: &mut Context<'_>) {
        let Some(topic) = self.topic(ctx) else { return };
        ctx.reply(&[]);
        self.publish_all(topic.name, ctx.payload());
    }

    fn on_publish_to_one(&self, ctx: &mut Context<'_>) {
        let Some(topic) = self.topic(ctx) else { return };
        ctx.reply(&[]);
        self.publish_one(topic.name, ctx.payload());
    }
}
