//! ringrpc: a thread-per-core io_uring RPC engine speaking Go arpc's wire format.
//!
//! One reactor thread per core, each pinned to its CPU and owning its io_uring, its
//! `SO_REUSEPORT` listeners and a slab of its connections. Data flows one way: ring →
//! reactor → framing → session → router → handler → output queue → ring. Handlers run on
//! the reactor that owns their connection: plain ones at once ([`Server::builder`]'s
//! `route`), async ones as tasks of that core's executor (`route_async`), blocking ones on
//! a worker pool (`route_blocking`). The same machinery serves [`Client`] connections,
//! WebSocket peers ([`ConfigBuilder::ws_path`]), UDP ([`UdpEndpoint`]), streams
//! ([`BiStream`]) and pub/sub ([`PubSub`]). All `unsafe` lives in the `ringrpc-uring` crate.
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
//!
//! # Where to start
//!
//! | you want to | start at |
//! |---|---|
//! | serve methods | [`Server`], [`ServerBuilder`], [`Context`], [`Config`] |
//! | answer later, or from another thread | [`Context::responder`], [`Responder`] |
//! | typed and async handlers | [`ServerBuilder::route_typed`], [`ServerBuilder::route_async`], [`Json`], [`IntoReply`], [`HandlerError`] |
//! | call a server | [`Client`], [`CallFuture`] |
//! | act on a connection later | [`ConnHandle`] |
//! | streams | [`BiStream`], [`StreamContext`], [`transfer`] |
//! | publish/subscribe | [`PubSub`], [`Client::subscribe_topic`] |
//! | UDP | [`UdpEndpoint`], [`ConfigBuilder::udp_listen`] |
//! | shut down on SIGINT/SIGTERM | [`Server::run_until_signal`], [`ShutdownSignals`] |
//! | counters | [`ServerReport`], [`CoreStats`] |
//!
//! `docs/architecture.md` in the repository maps the modules and follows one request
//! through them; `docs/async.md` covers async handlers and the awaitable client.
//!
//! # Cargo features
//!
//! | feature | default | what it adds | extra dependencies |
//! |---|---|---|---|
//! | `msgpack` | on | MessagePack (arpc's msgpack codec): the `MsgPack` extractor and reply, `Client::call_msgpack` and `call_msgpack_async` | `rmp-serde` |
//! | `nats` | off | the NATS bridge between the nodes of a cluster: [`ConfigBuilder::nats`] | `async-nats`, `tokio` (a single-threaded runtime on a thread of its own) |
//! | `metrics` | off | Prometheus metrics over HTTP: [`ConfigBuilder::metrics_listen`] | `prometheus-client` |
//! | `tls` | off | TLS 1.3/1.2 and mutual TLS on the reactors: [`ConfigBuilder::tls`], `ClientBuilder::tls`, `ServerHandle::reload_tls` | `rustls` (ring provider), `webpki-roots`, `rustls-native-certs`, `x509-cert` |
//!
//! Why the defaults: the library's core is the reactors and what they serve, and every
//! embedder pays for it; `msgpack` is a small codec that typed handlers expect beside JSON,
//! so it is on. `nats` and `metrics` each bring a runtime, threads and a network endpoint of
//! their own (and `nats` a TLS stack: some sixty more crates), which only deployments
//! that run a cluster or scrape Prometheus want: they are off, the way tokio leaves its
//! optional parts off, and the `engine` binary turns both on. `tls` brings a crypto library
//! (ring: C and assembly built with the C compiler) that an embedder behind a TLS proxy, or
//! on Unix sockets, does not need: off, on in the `engine` binary. `cargo tree -p ringrpc
//! --no-default-features -e normal` shows neither tokio, async-nats nor rustls.
//!
//! The API does not change with the features. A knob whose part is compiled out is refused
//! by [`ConfigBuilder::build`] with [`ConfigError::FeatureDisabled`], which names the
//! feature to turn on; [`ServerHandle::bridge_stats`] and [`RunningServer::metrics_addr`]
//! then answer `None`. Only the `msgpack` and `tls` items (`ClientTls`, `TlsError`,
//! `ClientBuilder::tls`, `ServerHandle::reload_tls`) are absent without their feature (a
//! type cannot be refused at run time).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod cluster;
mod config;
mod conn;
pub mod error;
mod executor;
mod guide_doctests;
mod ids;
mod observe;
pub mod pubsub;
mod reactor;
pub mod router;
mod secret;
mod server;
mod sim;
mod stream;
mod transport;
mod udp;

pub use client::core_client::{CONNECT_TIMEOUT, ConnectFuture, CoreClient};
pub use client::{Client, ClientBuilder, ClientError, ClientRuntime, Reconnect};
pub use cluster::{BridgeStats, OUTBOUND_CAPACITY as NATS_OUTBOUND_CAPACITY};
pub use config::{
    Config, ConfigBuilder, ConfigError, Knob, ListenAddr, ListenAddrError, MAX_MAX_BODY,
    MIN_SEND_ZC_MIN,
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
pub use ids::{ConnId, ConnInfo, PeerCertificate, TlsInfo};
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
#[cfg(feature = "tls")]
pub use transport::tls::{ALPN_ARPC, ALPN_HTTP1, ClientTls, TlsError};
pub use udp::UdpStats;
pub use udp::endpoint::{UdpEndpoint, UdpEndpointBuilder};
pub use udp::limits::Retry;

/// Fuzzing support for the `conn`, `websocket`, `udp` and `stream` fuzz targets and their
/// stable replay; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::conn::{FuzzOutcome, fuzz_check};
    pub use crate::sim::fuzz::{
        StreamOutcome, UdpOutcome, WsOutcome, check_streams, check_udp, check_websocket,
    };
    #[cfg(feature = "tls")]
    pub use crate::sim::fuzz::{TlsOutcome, check_tls};
}

/// Deterministic simulation support (`engine/tests/simulate/`): the sans-IO connection,
/// datagram and WebSocket state machines driven without sockets; not a stable API.
#[doc(hidden)]
pub mod simulation {
    pub use crate::sim::udp::{SimUdp, SimUdpLimits};
    pub use crate::sim::ws;
    pub use crate::sim::{
        Applied, LINGER_LIMIT, SimActions, SimConfig, SimConn, SimFraming, SimGauges, SimMail,
        SimMailbox, add_pubsub, conn_id, peer_addr,
    };
}

/// The async guide's code blocks, compiled and run as doc tests (they use `MsgPack`).
#[doc = include_str!("../../docs/async.md")]
#[cfg(all(doctest, feature = "msgpack"))]
pub struct AsyncGuideDoctests;

/// The README's code blocks, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
