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

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ringrpc::{ConnHandle, ConnId, Responder, ServerBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::{self as p, DeliveryKind, NoticeKind, Refusal};
use crate::store::{Store, Stored};
use crate::users::Users;

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

/// What the chat thread is told.
#[derive(Debug)]
enum Event {
    Request {
        op: Op,
        payload: Vec<u8>,
        conn: ConnHandle,
        responder: Responder,
    },
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
                let _ = events.send(Event::Request {
                    op,
                    payload,
                    conn,
                    responder,
                });
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

/// Why a login did not happen.
enum LoginFail {
    /// Refused by a rule: answered with `ok: false`.
    Refused(Refusal, String, Option<u64>),
    /// A malformed request or a server fault: an error Response.
    Error(String),
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
            Event::Request {
                op,
                payload,
                conn,
                responder,
            } => self.request(op, &payload, &conn, responder),
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

    fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.blocks
            .get(blocker)
            .is_some_and(|set| set.contains(blocked))
    }

    fn login(&mut self, payload: &[u8], conn: &ConnHandle, responder: Responder) {
        let user = match self.admit(payload, conn) {
            Ok(user) => user,
            Err(LoginFail::Refused(refusal, text, retry_after)) => {
                return responder.reply(&json(&p::LoginReply {
                    ok: false,
                    refusal: Some(refusal),
                    text,
                    retry_after,
                }));
            }
            Err(LoginFail::Error(text)) => return responder.reply_error(&text),
        };
        self.sessions.insert(
            user.clone(),
            Session {
                conn: conn.clone(),
                last_active: Instant::now(),
            },
        );
        self.by_conn.insert(conn.id(), user.clone());
        responder.reply(&json(&p::LoginReply {
            ok: true,
            refusal: None,
            text: format!("welcome, {user}"),
            retry_after: None,
        }));
        // After the welcome, in order: what waited for them, then who knows they are here.
        self.commit_receipts();
        match self.store.pending(&user) {
            Ok(waiting) => {
                for (id, msg) in waiting {
                    if !self.in_flight.contains_key(&id) {
                        self.push_private(&user, id, &msg, true);
                    }
                }
            }
            Err(e) => eprintln!("chat-server: cannot read {user}'s stored messages: {e}"),
        }
        self.presence(&user, NoticeKind::Login);
    }

    /// Checks a login against the rules; the user to log in, or why not.
    fn admit(&mut self, payload: &[u8], conn: &ConnHandle) -> Result<String, LoginFail> {
        let refuse = |refusal, text: String| Err(LoginFail::Refused(refusal, text, None));
        if let Some(current) = self.by_conn.get(&conn.id()) {
            return refuse(
                Refusal::ConnectionInUse,
                format!("this connection is already logged in as {current}; log out first"),
            );
        }
        let login: p::Login =
            parse(payload, r#"{"user": ..., "password": ...}"#).map_err(LoginFail::Error)?;
        let user = login.user;
        let Some(password) = self.settings.users.get(&user) else {
            return refuse(
                Refusal::UnknownUser,
                format!("unknown user {user:?}; check the username"),
            );
        };
        let now = Instant::now();
        if let Some(&until) = self.blocked_until.get(&user) {
            if until > now {
                let left = (until - now).as_secs_f64().ceil() as u64;
                return Err(LoginFail::Refused(
                    Refusal::Blocked,
                    format!(
                        "account {user} is blocked after {MAX_FAILURES} wrong passwords; try again in {left} seconds"
                    ),
                    Some(left),
                ));
            }
            self.blocked_until.remove(&user);
        }
        if *password != login.password {
            let failures = self.failures.entry(user.clone()).or_insert(0);
            *failures += 1;
            let failures = *failures;
            if failures >= MAX_FAILURES {
                self.failures.remove(&user);
                let duration = self.settings.block_duration;
                self.blocked_until.insert(user.clone(), now + duration);
                let left = duration.as_secs_f64().ceil() as u64;
                return Err(LoginFail::Refused(
                    Refusal::Blocked,
                    format!(
                        "wrong password; after {MAX_FAILURES} wrong passwords in a row account {user} is blocked for {left} seconds"
                    ),
                    Some(left),
                ));
            }
            return refuse(
                Refusal::WrongPassword,
                format!(
                    "wrong password for {user} (attempt {failures} of {MAX_FAILURES}); try again"
                ),
            );
        }
        self.failures.remove(&user);
        if self.sessions.contains_key(&user) {
            return refuse(
                Refusal::AlreadyLoggedIn,
                format!("{user} is already logged in elsewhere; log out there first"),
            );
        }
        if let Err(e) = self.store.logged_in(&user, now_ms()) {
            eprintln!("chat-server: {e}");
            return Err(LoginFail::Error(
                "server error: cannot record the login; try again".into(),
            ));
        }
        Ok(user)
    }

    /// Tells everyone online but `user` (and those who block `user`) that `user` came or went.
    fn presence(&self, user: &str, kind: NoticeKind) {
        let verb = match kind {
            NoticeKind::Login => "logged in",
            _ => "logged out",
        };
        let notice = json(&p::Notice {
            kind,
            user: user.to_owned(),
            text: format!("{user} {verb}"),
        });
        for (other, session) in &self.sessions {
            if other != user && !self.blocks(other, user) {
                let _ = session.conn.notify(p::NOTICE, &notice);
            }
        }
    }

    fn log_out(&mut self, user: &str) {
        let Some(session) = self.sessions.remove(user) else {
            return;
        };
        self.by_conn.remove(&session.conn.id());
        let now = now_ms();
        self.last_seen.insert(user.to_owned(), now);
        if let Err(e) = self.store.logged_out(&[user.to_owned()], now) {
            eprintln!("chat-server: {e}");
        }
        self.presence(user, NoticeKind::Logout);
    }

    fn log_out_idle(&mut self) {
        let Some(timeout) = self.settings.timeout else {
            return;
        };
        let now = Instant::now();
        let idle: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_active) >= timeout)
            .map(|(user, _)| user.clone())
            .collect();
        for user in idle {
            if let Some(session) = self.sessions.get(&user) {
                let notice = json(&p::Notice {
                    kind: NoticeKind::Timeout,
                    user: user.clone(),
                    text: format!(
                        "you were logged out after {} seconds without activity",
                        timeout.as_secs_f64()
                    ),
                });
                let _ = session.conn.notify(p::NOTICE, &notice);
                // Closes after the notice is sent. Refused only when the reactor's inbox is
                // full: the session is logged out all the same, and the connection is left
                // to its peer or the engine's idle timeout.
                if let Err(e) = session.conn.close() {
                    eprintln!("chat-server: cannot close {user}'s idle connection: {e}");
                }
            }
            self.log_out(&user);
        }
    }

    fn push_private(&mut self, to: &str, id: u64, msg: &Stored, offline: bool) {
        let Some(session) = self.sessions.get(to) else {
            return;
        };
        let conn = session.conn.id();
        let delivery = json(&p::Delivery {
            id,
            from: msg.from.clone(),
            text: msg.text.clone(),
            kind: DeliveryKind::Private,
            at: msg.at,
            offline,
        });
        self.in_flight.insert(id, (to.to_owned(), conn));
        let events = self.events.clone();
        let user = to.to_owned();
        session
            .conn
            .call_with(p::MSG, delivery.into(), RECEIPT_TIMEOUT, move |outcome| {
                let _ = events.send(Event::Receipt {
                    user,
                    id,
                    conn,
                    delivered: outcome.is_ok(),
                });
            });
    }

    fn receipt(&mut self, user: String, id: u64, conn: ConnId, delivered: bool) {
        if self.in_flight.get(&id).is_some_and(|(_, c)| *c == conn) {
            self.in_flight.remove(&id);
        }
        if delivered {
            self.receipts_done.push((user, id));
            return;
        }
        // Still stored. Back on another connection already? Then it goes out now; otherwise
        // at the next login.
        let back = self
            .sessions
            .get(&user)
            .is_some_and(|s| s.conn.id() != conn);
        if back && !self.in_flight.contains_key(&id) {
            self.commit_receipts();
            if let Ok(waiting) = self.store.pending(&user) {
                if let Some((_, msg)) = waiting.into_iter().find(|(i, _)| *i == id) {
                    self.push_private(&user, id, &msg, true);
                }
            }
        }
    }

    fn commit_receipts(&mut self) {
        if self.receipts_done.is_empty() {
            return;
        }
        let done = std::mem::take(&mut self.receipts_done);
        // Not deleted means delivered again later: never lost, at worst twice.
        if let Err(e) = self.store.delete_messages(&done) {
            eprintln!("chat-server: {e}");
        }
    }

    fn check_user(&self, user: &str) -> Result<(), String> {
        if self.settings.users.contains_key(user) {
            Ok(())
        } else {
            Err(format!("unknown user {user:?}"))
        }
    }

    fn check_text(text: &str) -> Result<(), String> {
        if text.trim().is_empty() {
            return Err("the message is empty".into());
        }
        if text.len() > MAX_TEXT {
            return Err(format!(
                "the message is {} bytes long; at most {MAX_TEXT} are allowed",
                text.len()
            ));
        }
        Ok(())
    }

    fn message(&mut self, from: &str, payload: &[u8]) -> Result<p::Reply, String> {
        let msg: p::Message = parse(payload, r#"{"to": ..., "text": ...}"#)?;
        Self::check_text(&msg.text)?;
        if msg.to == from {
            return Err("you cannot message yourself".into());
        }
        self.check_user(&msg.to)?;
        if self.blocks(&msg.to, from) {
            return Err(format!(
                "{} has blocked you; your message was not delivered",
                msg.to
            ));
        }
        let stored = Stored {
            from: from.to_owned(),
            text: msg.text,
            at: now_ms(),
        };
        // Durable first: a crash after this still delivers it; before it, it was never
        // acknowledged.
        let id = self.store.store_message(&msg.to, &stored).map_err(|e| {
            eprintln!("chat-server: {e}");
            "server error: the message could not be stored and was not sent; try again".to_owned()
        })?;
        if self.sessions.contains_key(&msg.to) {
            self.push_private(&msg.to, id, &stored, false);
            Ok(text_reply(format!("message sent to {}", msg.to)))
        } else {
            Ok(p::Reply {
                text: format!(
                    "{} is offline; the message is stored and will be delivered at their next login",
                    msg.to
                ),
                stored: Some(true),
                ..p::Reply::default()
            })
        }
    }

    fn broadcast(&mut self, from: &str, payload: &[u8]) -> Result<p::Reply, String> {
        let msg: p::Broadcast = parse(payload, r#"{"text": ...}"#)?;
        Self::check_text(&msg.text)?;
        let delivery = json(&p::Delivery {
            id: 0,
            from: from.to_owned(),
            text: msg.text,
            kind: DeliveryKind::Broadcast,
            at: now_ms(),
            offline: false,
        });
        let (mut reached, mut missed) = (0, 0);
        for (other, session) in &self.sessions {
            if other == from {
                continue;
            }
            if self.blocks(other, from) {
                missed += 1;
                continue;
            }
            reached += 1;
            session
                .conn
                .call_with(p::MSG, delivery.clone().into(), RECEIPT_TIMEOUT, |_| {});
        }
        let plural = |n: usize| if n == 1 { "user" } else { "users" };
        let text = match (reached, missed) {
            (0, 0) => "no one else is online; nobody received the broadcast".to_owned(),
            (n, 0) => format!("broadcast sent to {n} {}", plural(n)),
            (n, m) => format!(
                "broadcast sent to {n} of {} online {}; some did not receive it: {m} {} blocked you",
                n + m,
                plural(n + m),
                plural(m)
            ),
        };
        Ok(p::Reply {
            text,
            missed: Some(missed),
            ..p::Reply::default()
        })
    }

    fn whoelse(&self, user: &str) -> p::Reply {
        let mut users: Vec<String> = self
            .sessions
            .keys()
            .filter(|u| *u != user)
            .cloned()
            .collect();
        users.sort();
        p::Reply {
            text: list(&users, "online now", "no one else is online"),
            users: Some(users),
            ..p::Reply::default()
        }
    }

    fn whoelsesince(&self, user: &str, payload: &[u8]) -> Result<p::Reply, String> {
        let since: p::Since = parse(payload, r#"{"seconds": N}"#)?;
        let cutoff = now_ms().saturating_sub(since.seconds.saturating_mul(1000));
        let mut users: BTreeSet<String> = self.sessions.keys().cloned().collect();
        users.extend(
            self.last_seen
                .iter()
                .filter(|(_, at)| **at >= cutoff)
                .map(|(u, _)| u.clone()),
        );
        users.remove(user);
        let users: Vec<String> = users.into_iter().collect();
        let n = since.seconds;
        Ok(p::Reply {
            text: list(
                &users,
                &format!("online in the last {n} seconds"),
                &format!("no one else was online in the last {n} seconds"),
            ),
            users: Some(users),
            ..p::Reply::default()
        })
    }

    fn block(&mut self, user: &str, payload: &[u8]) -> Result<p::Reply, String> {
        let target: p::Target = parse(payload, r#"{"user": ...}"#)?;
        if target.user == user {
            return Err("you cannot block yourself".into());
        }
        self.check_user(&target.user)?;
        if self.blocks(user, &target.user) {
            return Ok(text_reply(format!("{} is already blocked", target.user)));
        }
        self.store
            .set_block(user, &target.user, true)
            .map_err(|e| {
                eprintln!("chat-server: {e}");
                "server error: the block could not be stored; try again".to_owned()
            })?;
        self.blocks
            .entry(user.to_owned())
            .or_default()
            .insert(target.user.clone());
        Ok(text_reply(format!(
            "blocked {}: they cannot message you, and you no longer get their broadcasts or presence notices",
            target.user
        )))
    }

    fn unblock(&mut self, user: &str, payload: &[u8]) -> Result<p::Reply, String> {
        let target: p::Target = parse(payload, r#"{"user": ...}"#)?;
        self.check_user(&target.user)?;
        if !self.blocks(user, &target.user) {
            return Err(format!("{} is not blocked", target.user));
        }
        self.store
            .set_block(user, &target.user, false)
            .map_err(|e| {
                eprintln!("chat-server: {e}");
                "server error: the unblock could not be stored; try again".to_owned()
            })?;
        if let Some(set) = self.blocks.get_mut(user) {
            set.remove(&target.user);
        }
        Ok(text_reply(format!("unblocked {}", target.user)))
    }
}
