//! Block lists: who blocks whom, stored before it is answered. A user's blocks stop the
//! blocked user's messages, broadcasts and presence notices reaching them.

use super::{State, parse, text_reply};
use crate::protocol as p;

impl State {
    pub(super) fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.blocks
            .get(blocker)
            .is_some_and(|set| set.contains(blocked))
    }

    pub(super) fn block(&mut self, user: &str, payload: &[u8]) -> Result<p::Reply, String> {
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

    pub(super) fn unblock(&mut self, user: &str, payload: &[u8]) -> Result<p::Reply, String> {
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
