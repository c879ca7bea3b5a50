//! What the simulated peers did and saw, and the invariants checked against it: every call
//! answered once with its own payload or failed with a fitting error, pushes before the
//! Response that caused them, publications only to subscribers and at most once each,
//! datagram requests run at most once within the dedup window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ringrpc::{CallError, ConnId, Context, Flow, Middleware, Responder, Router};
use ringrpc_protocol::TopicRef;

/// The first 8 bytes of a payload: the tag that names the operation it belongs to.
pub fn tag_of(payload: &[u8]) -> u64 {
    payload
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// A payload of `len` bytes (at least 8) carrying `tag`; its other bytes depend on the tag,
/// so a payload answered to the wrong call is caught.
pub fn tagged(tag: u64, len: usize) -> Vec<u8> {
    let mut p = tag.to_le_bytes().to_vec();
    p.extend((8..len.max(8)).map(|i| (tag as usize).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

/// A connection id as a sortable key: (core, serial), from its `core/slot#serial` form.
pub fn key(id: ConnId) -> (usize, u64) {
    let serial = id
        .to_string()
        .rsplit('#')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (id.core(), serial)
}

/// Server-initiated calls and pushes get tags of their own: the request's tag with this bit.
pub const SERVER_BIT: u64 = 1 << 62;

/// A pub/sub operation as the server dispatched it, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubEvent {
    Subscribe(ConnId, Vec<u8>),
    Unsubscribe(ConnId, Vec<u8>),
    Publish(ConnId, Vec<u8>, u64),
    Released(ConnId),
}

/// Everything the routes and completions record; shared with the handlers.
#[derive(Default)]
pub struct Record {
    /// Client calls' outcomes, by tag, in completion order.
    /// (tag, outcome, whether the push with that tag had arrived by then).
    pub outcomes: Vec<(u64, Result<Bytes, CallError>, bool)>,
    /// Server-initiated calls' outcomes.
    pub server_outcomes: Vec<(u64, Result<Bytes, CallError>)>,
    /// Server pushes received: client connection, tag.
    pub pushes: Vec<(ConnId, u64)>,
    /// Publications received: client connection, tag.
    pub deliveries: Vec<(ConnId, u64)>,
    pub pubsub: Vec<PubEvent>,
    /// Requests the server dispatched: connection, tag, simulated ms.
    pub dispatched: Vec<(ConnId, u64, u64)>,
    /// Responders the `/defer` route took, with the payload to answer.
    pub deferred: Vec<(Responder, Bytes)>,
    /// Simulated time in ms, for the dispatch log.
    pub now_ms: u64,
    /// Server-initiated calls started (tags).
    pub server_calls: Vec<u64>,
}

#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<Record>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Logs what the server dispatches before its handler runs.
struct Log(Shared);

impl Middleware for Log {
    fn before(&self, ctx: &mut Context<'_>) -> Flow {
        let mut rec = self.0.lock();
        let conn = ctx.conn().id();
        if !ctx.is_notify() {
            let at = rec.now_ms;
            rec.dispatched.push((conn, tag_of(ctx.payload()), at));
        }
        let method = ctx.method();
        if let Ok(topic) = TopicRef::parse(ctx.payload()) {
            let name = topic.name.to_vec();
            match method {
                b"in_S" => rec.pubsub.push(PubEvent::Subscribe(conn, name)),
                b"in_U" => rec.pubsub.push(PubEvent::Unsubscribe(conn, name)),
                b"in_P" => rec
                    .pubsub
                    .push(PubEvent::Publish(conn, name, tag_of(topic.data))),
                _ => {}
            }
        }
        Flow::Continue
    }
}

/// The server's routes: the built-ins (`/echo`, `/echo/stream`), `/defer` (answered later by
/// the harness), `/push` (a Notify back, then the Response), `/callback` (a call back to the
/// client, then the Response) and, added by the world, pub/sub.
pub fn server_router(shared: &Shared, call_timeout: std::time::Duration) -> Router {
    let mut r = Router::with_builtins();
    r.add_middleware(Log(shared.clone()));
    let s = shared.clone();
    r.add("/defer", move |ctx: &mut Context<'_>| {
        let payload = ctx.payload_bytes();
        if let Some(responder) = ctx.responder() {
            s.lock().deferred.push((responder, payload));
        }
    })
    .unwrap();
    r.add("/push", |ctx: &mut Context<'_>| {
        let _ = ctx.conn().notify("/client/push", ctx.payload());
        ctx.reply(&[]);
    })
    .unwrap();
    let s = shared.clone();
    r.add("/callback", move |ctx: &mut Context<'_>| {
        let tag = tag_of(ctx.payload()) | SERVER_BIT;
        s.lock().server_calls.push(tag);
        let record = s.clone();
        let payload = Bytes::copy_from_slice(ctx.payload());
        ctx.conn()
            .call_with("/client/echo", payload, call_timeout, move |outcome| {
                record.lock().server_outcomes.push((tag, outcome));
            });
        ctx.reply(&[]);
    })
    .unwrap();
    r
}

/// A client's routes: `/client/echo` for the server's calls, `/client/push` and `in_P`
/// recording what arrives.
pub fn client_router(shared: &Shared) -> Router {
    let mut r = Router::new();
    r.add("/client/echo", |ctx: &mut Context<'_>| {
        let p = ctx.payload_bytes();
        ctx.reply_bytes(p)
    })
    .unwrap();
    let s = shared.clone();
    r.add("/client/push", move |ctx: &mut Context<'_>| {
        let tag = tag_of(ctx.payload());
        s.lock().pushes.push((ctx.conn().id(), tag));
    })
    .unwrap();
    let s = shared.clone();
    r.add("in_P", move |ctx: &mut Context<'_>| {
        let tag = TopicRef::parse(ctx.payload()).map_or(0, |t| tag_of(t.data));
        s.lock().deliveries.push((ctx.conn().id(), tag));
    })
    .unwrap();
    r
}

/// What a client call was, to judge its outcome.
#[derive(Clone, Debug)]
pub struct CallPlan {
    pub link: Link,
    pub method: &'static str,
    /// The payload an Ok answer must carry.
    pub expect: Vec<u8>,
}

/// Which connection a call went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    Stream(usize),
    Datagram(usize),
}

/// The calls issued, by tag.
#[derive(Debug, Default)]
pub struct Calls {
    pub plans: BTreeMap<u64, CallPlan>,
    /// Tags whose responder the harness dropped unanswered.
    pub dropped_responders: BTreeSet<u64>,
}

/// Why an outcome is wrong, if it is.
///
/// `dropped`: a run of the request had its responder dropped; `ran_again`: a datagram
/// request ran a second time (so it may be answered too).
pub fn judge(
    plan: &CallPlan,
    outcome: &Result<Bytes, CallError>,
    dropped: bool,
    ran_again: bool,
    clean: bool,
) -> Option<String> {
    match outcome {
        Ok(payload) if payload[..] == plan.expect[..] && (!dropped || ran_again) => None,
        Ok(payload) => Some(format!(
            "{} answered with {} bytes (tag {}), expected {} bytes{}",
            plan.method,
            payload.len(),
            tag_of(payload),
            plan.expect.len(),
            if dropped {
                " (its responder was dropped)"
            } else {
                ""
            }
        )),
        Err(CallError::Remote(text)) => {
            // Past the in-flight limit any Request is refused; a dropped responder answers
            // an error.
            let fits = text.contains("too many requests in flight")
                || (plan.method == "/defer" && dropped && text.contains("dropped"));
            (!fits).then(|| format!("{} failed with remote error {text:?}", plan.method))
        }
        Err(CallError::Timeout) => None,
        Err(CallError::Overstocked) => None,
        Err(CallError::Disconnected) if !clean => None,
        Err(e) => Some(format!(
            "{} failed with {e:?} on a connection that stayed up",
            plan.method
        )),
    }
}
