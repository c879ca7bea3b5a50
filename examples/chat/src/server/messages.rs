//! Private messages and broadcasts: a private message is stored before its sender is answered
//! and pushed to the recipient if online; the recipient's answer is the receipt that deletes
//! it (deletions committed in batches); a failed push leaves it stored for the next login.

use ringrpc::ConnId;

use super::{Event, MAX_TEXT, RECEIPT_TIMEOUT, State, json, now_ms, parse, text_reply};
use crate::protocol::{self as p, DeliveryKind};
use crate::store::Stored;

impl State {
    pub(super) fn push_private(&mut self, to: &str, id: u64, msg: &Stored, offline: bool) {
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

    pub(super) fn receipt(&mut self, user: String, id: u64, conn: ConnId, delivered: bool) {
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

    pub(super) fn commit_receipts(&mut self) {
        if self.receipts_done.is_empty() {
            return;
        }
        let done = std::mem::take(&mut self.receipts_done);
        // Not deleted means delivered again later: never lost, at worst twice.
        if let Err(e) = self.store.delete_messages(&done) {
            eprintln!("chat-server: {e}");
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

    pub(super) fn message(&mut self, from: &str, payload: &[u8]) -> Result<p::Reply, String> {
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

    pub(super) fn broadcast(&mut self, from: &str, payload: &[u8]) -> Result<p::Reply, String> {
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
}
