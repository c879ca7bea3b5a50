//! Logins, logouts and presence: the login rules (unknown users, wrong passwords and the block
//! after [`MAX_FAILURES`] of them, one session per user and per connection), what a login
//! delivers (the messages that waited, then the presence notice), idle logouts, and who is or
//! was online.

use std::collections::BTreeSet;
use std::time::Instant;

use ringrpc::{ConnHandle, Responder};

use super::{MAX_FAILURES, Session, State, json, list, now_ms, parse};
use crate::protocol::{self as p, NoticeKind, Refusal};

/// Why a login did not happen.
enum LoginFail {
    /// Refused by a rule: answered with `ok: false`.
    Refused(Refusal, String, Option<u64>),
    /// A malformed request or a server fault: an error Response.
    Error(String),
}

impl State {
    pub(super) fn login(&mut self, payload: &[u8], conn: &ConnHandle, responder: Responder) {
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

    pub(super) fn log_out(&mut self, user: &str) {
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

    pub(super) fn log_out_idle(&mut self) {
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

    pub(super) fn whoelse(&self, user: &str) -> p::Reply {
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

    pub(super) fn whoelsesince(&self, user: &str, payload: &[u8]) -> Result<p::Reply, String> {
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
}
