//! ringrpc: a thread-per-core io_uring RPC server engine speaking the arpc wire format.
//!
//! One reactor thread per core, each pinned to its CPU and owning its io_uring, its
//! `SO_REUSEPORT` listener and a slab of its connections. Data flows one way:
//! ring → reactor → conn → router → conn → ring. All `unsafe` lives in the `ringrpc-uring` crate.
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
#![deny(unsafe_code)]

mod client;
mod cluster;
mod config;
mod conn;
pub mod error;
mod executor;
mod ids;
mod observe;
pub mod pubsub;
mod reactor;
pub mod router;
mod secret;
mod server;
mod stream;
mod transport;
mod udp;

pub use client::core_client::{CONNECT_TIMEOUT, ConnectFuture, CoreClient};
pub use client::{Client, ClientBuilder, ClientError, ClientRuntime, Reconnect};
pub use cluster::{BridgeStats, OUTBOUND_CAPACITY as NATS_OUTBOUND_CAPACITY};
pub use config::{
    Config, ConfigBuilder, ConfigError, Knob, ListenAddr, ListenAddrError, MAX_MAX_BODY,
};
pub use conn::call_future::{CallFuture, CallWithMetadata};
pub use conn::handle::ConnHandle;
pub use conn::hooks::{ConnectHook, DisconnectHook, OverstockHook};
pub use conn::responder::Responder;
pub use error::{CallError, DisconnectReason, StreamError};
pub use executor::time;
pub use executor::{
    BlockingError, BlockingJoin, Cancelled, JoinHandle, NotOnReactor, YieldNow, spawn_blocking,
    spawn_local, yield_now,
};
pub use ids::{ConnId, ConnInfo};
pub use observe::core_stats::CoreStats;
pub use pubsub::{PubSub, PubSubError, PubSubStats};
pub use reactor::mailbox::BroadcastFilter;
pub use reactor::runtime::{RunError, SpawnError};
pub use ringrpc_protocol::metadata::{MAX_METADATA_LEN, Metadata, MetadataError};
pub use ringrpc_protocol::{Topic, TopicError};
pub use router::request::Request;
#[cfg(feature = "msgpack")]
pub use router::typed::MsgPack;
pub use router::typed::{
    AsyncHandler, FromRequest, HandlerError, IntoReply, Json, Rejection, Reply, State, TypedHandler,
};
pub use router::{
    Context, Flow, Handler, LogRequests, Middleware, PropagateMetadata, ReplyState, RouteError,
    Router,
};
pub use server::signals::ShutdownSignals;
pub use server::{
    RunningServer, Server, ServerBuilder, ServerError, ServerHandle, ServerReport, StartError,
};
pub use stream::transfer;
pub use stream::{
    BiStream, BlockingStreamHandler, RecvFuture, Replies, SendFuture, StreamContext, StreamHandler,
    StreamLimits, StreamSender, Subscription, echo_stream,
};
pub use udp::UdpStats;
pub use udp::endpoint::{UdpEndpoint, UdpEndpointBuilder};
pub use udp::limits::Retry;

/// Fuzzing support for the `conn` fuzz target and its stable replay; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::conn::{FuzzOutcome, fuzz_check};
}

/// The async guide's code blocks, compiled and run as doc tests.
#[doc = include_str!("../../docs/async.md")]
#[cfg(doctest)]
pub struct AsyncGuideDoctests;

/// The README's code blocks, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
