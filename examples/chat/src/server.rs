//! The chat server's state and rules, owned by one thread (the chat thread) that every
//! route hands its request to.
//!
//! Why one thread: every rule reads and writes the same session table, block lists and
//! database, and per-user delivery order must hold; one owner makes each request atomic
//! and keeps every push to a user in the order it was decided, with no locks. The route
//! handlers run on the reactors and never block: they take the request's
//! [`Responder`] and post it to the chat thread's channel (refusing with "server busy" past
//! [`QUEUE_LIMIT`]); the database's fsyncs happen only on the chat thread. Disconnects and
//! delivery receipts arrive on the same channel, and the thread wakes on its own to log
//! out idle users.
//!
//! Delivery: a private message is committed to the store before its sender is answered,
//! then pushed to the recipient (if online) as a `/chat/msg` Request; the recipient's answer
//! is the receipt that removes it from the store. A message whose push fails stays stored
//! and goes out again at the recipient's next login (or at once, if they are already back
//! on another connection), so nothing is lost; pushes to one user leave in id order.
//!
//! This file holds the chat thread, its events and the routes that feed it; the rules are
//! split by job into `sessions` (logins, logouts, presence, who is online), `messages`
//! (private messages, broadcasts, receipts) and `blocks` (block lists).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ringrpc::{ConnHandle, ConnId, Responder, ServerBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol as p;
use crate::store::Store;
use crate::users::Users;

mod blocks;
mod messages;
mod sessions;

/// Requests waiting for the chat thread before new ones are refused with "server busy".
pub const QUEUE_LIMIT: usize = 65_536;
/// Wrong passwords in a row that block an account.
pub const MAX_FAILURES: u32 = 3;
/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4096;
/// How long a client has to answer a `/chat/msg` push before it counts as undelivered.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Receipts gathered before their deletions are committed together.
const RECEIPT_BATCH: usize = 256;
/// The chat thread wakes at least this often (idle checks).
const MAX_TICK: Duration = Duration::from_millis(500);

/// The rules' settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The accounts.
    pub users: Users,
    /// How long three wrong passwords in a row block an account.
    pub block_duration: Duration,
    /// Log out users idle this long (`None`: never).
    pub timeout: Option<Duration>,
}

/// One chat operation (a route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Login,
    Message,
    Broadcast,
    WhoElse,
    WhoElseSince,
    Block,
    Unblock,
    WhoAmI,
    Logout,
}

const ROUTES: [(&str, Op); 9] = [
    (p::LOGIN, Op::Login),
    (p::MESSAGE, Op::Message),
    (p::BROADCAST, Op::Broadcast),
    (p::WHOELSE, Op::WhoElse),
    (p::WHOELSESINCE, Op::WhoElseSince),
    (p::BLOCK, Op::Block),
    (p::UNBLOCK, Op::Unblock),
    (p::WHOAMI, Op::WhoAmI),
    (p::LOGOUT, Op::Logout),
];

/// One request for the chat thread.
#[derive(Debug)]
struct RequestEvent {
    op: Op,
    payload: Vec<u8>,
    conn: ConnHandle,
    responder: Responder,
}

/// What the chat thread is told.
#[derive(Debug)]
enum Event {
    /// Boxed: the handle and responder make it far larger than the other events.
    Request(Box<RequestEvent>),
    Receipt {
        user: String,
        id: u64,
        conn: ConnId,
        delivered: bool,
    },
    Disconnected(ConnId),
    Stop,
}

/// The running chat thread; [`Chat::stop`] logs everyone out and waits for it.
#[derive(Debug)]
pub struct Chat {
    events: Sender<Event>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Chat {
    /// Starts the chat thread over `store` (with what it loaded) and adds the chat routes
    /// and the disconnect hook to `builder`.
    pub fn start(
        settings: Settings,
        store: Store,
        loaded: crate::store::Loaded,
        mut builder: ServerBuilder,
    ) -> std::io::Result<(Chat, ServerBuilder)> {
        let (events, inbox) = crossbeam_channel::unbounded();
        for (method, op) in ROUTES {
            let events = events.clone();
            builder = builder.route(method, move |ctx| {
                let payload = ctx.payload().to_vec();
                let conn = ctx.conn();
                if events.len() >= QUEUE_LIMIT {
                    ctx.reply_error("server busy; try again in a moment");
                    return;
                }
                // None for a Notify: every chat operation needs an answer.
                let Some(responder) = ctx.responder() else {
                    return;
                };
                let _ = events.send(Event::Request(Box::new(RequestEvent {
                    op,
                    payload,
                    conn,
                    responder,
                })));
            });
        }
        let gone = events.clone();
        builder = builder.on_disconnect(move |info, _reason| {
            let _ = gone.send(Event::Disconnected(info.id));
        });
        let state = State {
            settings,
            store,
            sessions: HashMap::new(),
            by_conn: HashMap::new(),
            blocks: loaded.blocks,
            last_seen: loaded.last_seen,
            failures: HashMap::new(),
            blocked_until: HashMap::new(),
            in_flight: HashMap::new(),
            receipts_done: Vec::new(),
            events: events.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("chat".into())
            .spawn(move || state.run(&inbox))?;
        Ok((
            Chat {
                events,
                thread: Some(thread),
            },
            builder,
        ))
    }

    /// Logs everyone out (recorded in the store) and stops the chat thread.
    pub fn stop(mut self) {
        let _ = self.events.send(Event::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Session {
    conn: ConnHandle,
    last_active: Instant,
}

struct State {
    settings: Settings,
    store: Store,
    /// user → their session.
    sessions: HashMap<String, Session>,
    /// connection → the user logged in on it.
    by_conn: HashMap<ConnId, String>,
    /// blocker → the users they block.
    blocks: HashMap<String, BTreeSet<String>>,
    /// user → last logout (ms since the epoch).
    last_seen: HashMap<String, u64>,
    /// user → wrong passwords in a row.
    failures: HashMap<String, u32>,
    /// user → blocked from logging in until.
    blocked_until: HashMap<String, Instant>,
    /// message id → (recipient, connection) of pushes not yet answered.
    in_flight: HashMap<u64, (String, ConnId)>,
    /// Answered pushes whose deletion is not yet committed.
    receipts_done: Vec<(String, u64)>,
    /// For receipts from push callbacks.
    events: Sender<Event>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol types serialize")
}

fn parse<T: DeserializeOwned>(payload: &[u8], shape: &str) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| format!("bad request: expected JSON {shape}: {e}"))
}

fn reply(responder: Responder, outcome: Result<p::Reply, String>) {
    match outcome {
        Ok(answer) => responder.reply(&json(&answer)),
        Err(text) => responder.reply_error(&text),
    }
}

fn text_reply(text: String) -> p::Reply {
    p::Reply {
        text,
        ..p::Reply::default()
    }
}

/// "bob, carol" or the `none` text.
fn list(users: &[String], some: &str, none: &str) -> String {
    if users.is_empty() {
        none.to_owned()
    } else {
        format!("{some}: {}", users.join(", "))
    }
}

impl State {
    fn run(mut self, inbox: &Receiver<Event>) {
        loop {
            let wait = self.next_wake();
            match inbox.recv_timeout(wait) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if inbox.is_empty() || self.receipts_done.len() >= RECEIPT_BATCH {
                self.commit_receipts();
            }
            self.log_out_idle();
        }
        self.commit_receipts();
        let everyone: Vec<String> = self.sessions.keys().cloned().collect();
        if let Err(e) = self.store.logged_out(&everyone, now_ms()) {
            eprintln!("chat-server: cannot record the final logouts: {e}");
        }
    }

    fn next_wake(&self) -> Duration {
        let Some(timeout) = self.settings.timeout else {
            return MAX_TICK;
        };
        let now = Instant::now();
        self.sessions
            .values()
            .map(|s| (s.last_active + timeout).saturating_duration_since(now))
            .min()
            .unwrap_or(MAX_TICK)
            .min(MAX_TICK)
            // Never a busy loop on a deadline that just passed.
            .max(Duration::from_millis(5))
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Request(request) => {
                let RequestEvent {
                    op,
                    payload,
                    conn,
                    responder,
                } = *request;
                self.request(op, &payload, &conn, responder)
            }
            Event::Receipt {
                user,
                id,
                conn,
                delivered,
            } => self.receipt(user, id, conn, delivered),
            Event::Disconnected(conn) => {
                if let Some(user) = self.by_conn.get(&conn).cloned() {
                    self.log_out(&user);
                }
            }
            Event::Stop => {}
        }
    }

    fn request(&mut self, op: Op, payload: &[u8], conn: &ConnHandle, responder: Responder) {
        if op == Op::Login {
            return self.login(payload, conn, responder);
        }
        let Some(user) = self.by_conn.get(&conn.id()).cloned() else {
            return responder.reply_error("you are not logged in; log in first");
        };
        if let Some(session) = self.sessions.get_mut(&user) {
            session.last_active = Instant::now();
        }
        let outcome = match op {
            Op::Login => unreachable!("handled above"),
            Op::Message => self.message(&user, payload),
            Op::Broadcast => self.broadcast(&user, payload),
            Op::WhoElse => Ok(self.whoelse(&user)),
            Op::WhoElseSince => self.whoelsesince(&user, payload),
            Op::Block => self.block(&user, payload),
            Op::Unblock => self.unblock(&user, payload),
            Op::WhoAmI => Ok(p::Reply {
                text: format!("you are {user}"),
                user: Some(user.clone()),
                ..p::Reply::default()
            }),
            Op::Logout => {
                self.log_out(&user);
                Ok(text_reply(format!("goodbye, {user}")))
            }
        };
        reply(responder, outcome);
    }

    fn check_user(&self, user: &str) -> Result<(), String> {
        if self.settings.users.contains_key(user) {
            Ok(())
        } else {
            Err(format!("unknown user {user:?}"))
        }
    }
}
