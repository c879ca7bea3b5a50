//! ringrpc: a thread-per-core io_uring RPC server engine speaking the arpc wire format.
//!
//! One reactor thread per core, each pinned to its CPU and owning its io_uring, its
//! `SO_REUSEPORT` listener and a slab of its connections. Data flows one way:
//! ring → reactor → conn → router → conn → ring. All `unsafe` lives in `ring`.
//!
//! ```
//! use std::io::{Read, Write};
//! use ringrpc::{Config, Server};
//! use ringrpc_protocol::Frame;
//!
//! fn upper(ctx: &mut ringrpc::Context<'_>) {
//!     let loud = ctx.payload().to_ascii_uppercase();
//!     ctx.reply(&loud);
//! }
//!
//! let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
//! let server = Server::builder().config(config).route("/upper", upper).build()?.start()?;
//!
//! let mut sock = std::net::TcpStream::connect(server.local_addr())?;
//! sock.write_all(&Frame::request(1, "/upper", "hi").to_bytes())?;
//! let mut answer = [0u8; 16 + 6 + 2];
//! sock.read_exact(&mut answer)?;
//! assert_eq!(&answer[22..], b"HI");
//!
//! let report = server.shutdown()?;
//! assert_eq!(report.total().requests, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod config;
pub mod conn;
pub mod handle;
mod json;
mod mailbox;
mod pool;
pub mod reactor;
pub mod ring;
pub mod router;
pub mod server;
mod signals;

pub use client::{Client, ClientBuilder, ClientError, ClientRuntime, Reconnect};
pub use config::{Config, ConfigBuilder, ConfigError, Knob, ListenAddr, ListenAddrError};
pub use handle::{CallError, ConnHandle, ConnId, ConnInfo, Responder};
pub use mailbox::BroadcastFilter;
pub use pool::Request;
pub use reactor::{CoreStats, DisconnectReason};
pub use router::{Context, Flow, Handler, LogRequests, Middleware, ReplyState, RouteError, Router};
pub use server::{
    RunError, RunningServer, Server, ServerBuilder, ServerError, ServerHandle, ServerReport,
    StartError,
};
pub use signals::ShutdownSignals;

/// The README's code blocks, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
