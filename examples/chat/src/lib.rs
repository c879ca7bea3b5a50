//! A chat application on ringrpc: the `chat-server` and `chat-client` binaries and what they
//! share.
//!
//! - [`protocol`]: the routes, the server's pushes and their JSON payloads (the terminal
//!   client and the web page speak the same).
//! - [`users`]: the users file.
//! - [`store`]: the embedded database (redb) holding offline messages, block lists and login
//!   history across restarts.
//! - [`server`]: the rules, owned by one chat thread fed by the routes.
//! - [`web`]: the web page, its script and the ringrpc JS client, served by chat-server.

pub mod protocol;
pub mod server;
pub mod store;
pub mod users;
pub mod web;
