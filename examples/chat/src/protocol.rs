//! The chat protocol: arpc routes the client calls, the methods the server sends, and their
//! JSON payloads. The terminal client and the web page speak exactly this.
//!
//! | client → server (Request) | payload | success answer |
//! | --- | --- | --- |
//! | `/chat/login` | [`Login`] | [`LoginReply`] (refusals too: `ok: false`) |
//! | `/chat/message` | [`Message`] | [`Reply`] |
//! | `/chat/broadcast` | [`Broadcast`] | [`Reply`] (`missed` > 0: some did not receive it) |
//! | `/chat/whoelse` | empty | [`Reply`] with `users` |
//! | `/chat/whoelsesince` | [`Since`] | [`Reply`] with `users` |
//! | `/chat/block`, `/chat/unblock` | [`Target`] | [`Reply`] |
//! | `/chat/whoami` | empty | [`Reply`] with `user` |
//! | `/chat/logout` | empty | [`Reply`] |
//!
//! Every refusal but the login's is an arpc error Response whose text is meant for people.
//!
//! | server → client | kind | payload |
//! | --- | --- | --- |
//! | `/chat/msg` | Request, answered with anything (the answer is the receipt) | [`Delivery`] |
//! | `/chat/notice` | Notify | [`Notice`] |
//!
//! A private message is stored durably before the sender's answer; it leaves the store only
//! once the recipient's client has answered its `/chat/msg`, so a message is never lost (a
//! receipt lost in a crash means it is delivered again at the next login).

use serde::{Deserialize, Serialize};

/// Log in on this connection.
pub const LOGIN: &str = "/chat/login";
/// Send a private message.
pub const MESSAGE: &str = "/chat/message";
/// Send a message to everyone online.
pub const BROADCAST: &str = "/chat/broadcast";
/// Who else is online now.
pub const WHOELSE: &str = "/chat/whoelse";
/// Who else was online in the last N seconds.
pub const WHOELSESINCE: &str = "/chat/whoelsesince";
/// Block a user.
pub const BLOCK: &str = "/chat/block";
/// Unblock a user.
pub const UNBLOCK: &str = "/chat/unblock";
/// Who am I.
pub const WHOAMI: &str = "/chat/whoami";
/// Log out (the connection stays open).
pub const LOGOUT: &str = "/chat/logout";
/// Server → client: a message (Request; the client's answer is the receipt).
pub const MSG: &str = "/chat/msg";
/// Server → client: a notice (Notify).
pub const NOTICE: &str = "/chat/notice";

/// `/chat/login` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    /// The username.
    pub user: String,
    /// The password.
    pub password: String,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No such user: ask for the username again.
    UnknownUser,
    /// Wrong password: ask for the password again.
    WrongPassword,
    /// The account is blocked for a while (after three wrong passwords in a row).
    Blocked,
    /// The user is logged in on another connection.
    AlreadyLoggedIn,
    /// This connection already has a user logged in.
    ConnectionInUse,
}

/// `/chat/login` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginReply {
    /// Logged in.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// For people.
    pub text: String,
    /// Seconds until a blocked account may log in again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// `/chat/message` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// Recipient.
    pub to: String,
    /// Text.
    pub text: String,
}

/// `/chat/broadcast` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broadcast {
    /// Text.
    pub text: String,
}

/// `/chat/whoelsesince` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Since {
    /// How many seconds back.
    pub seconds: u64,
}

/// `/chat/block` and `/chat/unblock` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The user.
    pub user: String,
}

/// A successful answer: `text` for people, the rest for programs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// For people.
    pub text: String,
    /// `whoelse`, `whoelsesince`: the users, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// `whoami`: the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `broadcast`: online users who did not receive it (they blocked the sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<usize>,
    /// `message`: the recipient was offline; delivered at their next login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<bool>,
}

/// The kind of a [`Delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// To this user alone.
    Private,
    /// To everyone online.
    Broadcast,
}

/// `/chat/msg` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Private messages: the stored message's id (increasing in send order); 0 for
    /// broadcasts, which are not stored.
    pub id: u64,
    /// Sender.
    pub from: String,
    /// Text.
    pub text: String,
    /// Private or broadcast.
    pub kind: DeliveryKind,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub at: u64,
    /// Sent while the recipient was offline.
    #[serde(default)]
    pub offline: bool,
}

/// The kind of a [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// `user` logged in.
    Login,
    /// `user` logged out.
    Logout,
    /// You were logged out for inactivity; the server closes the connection next.
    Timeout,
}

/// `/chat/notice` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    /// What happened.
    pub kind: NoticeKind,
    /// Who it is about.
    pub user: String,
    /// For people: "alice logged in".
    pub text: String,
}
