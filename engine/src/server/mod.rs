//! The server: [`Server`] (bound, ready to start), its builder (`builder`), the running
//! server and its handle (`running`), its report (`report`), startup errors (`error`), binding
//! one socket per core (`bind`) and graceful shutdown on signals (`signals`).
//!
//! Invariants: every listener of a server shares one port through `SO_REUSEPORT` and is
//! bound before any reactor starts, so address errors surface synchronously; a reactor's
//! io_uring is created on its own thread (SINGLE_ISSUER), and a failure of any one stops
//! the others before `start` returns the error; the NATS bridge and the metrics thread start
//! around the reactors and stop after them.

pub(crate) mod bind;
mod builder;
mod error;
mod report;
mod running;
pub(crate) mod signals;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

#[cfg(feature = "nats")]
use crate::cluster::bridge::Bridge;
use crate::config::Config;
#[cfg(feature = "metrics")]
use crate::observe::http::MetricsServer;
use crate::observe::scrape::Hub;
use crate::reactor::CoreSockets;
#[cfg(feature = "metrics")]
use crate::reactor::runtime::join_all;
use crate::reactor::runtime::spawn_reactors;
use crate::reactor::settings::ReactorSettings;
use crate::reactor::shared::Shared;
use crate::router::Router;

pub use builder::ServerBuilder;
pub use error::{ServerError, StartError};
pub use report::ServerReport;
pub use running::{RunningServer, ServerHandle};

/// A bound server, ready to run: [`Server::builder`] collects routes, hooks and a
/// [`Config`]; [`ServerBuilder::build`] validates and binds every listener (so address
/// errors surface there); [`Server::start`] runs one reactor per core and returns a
/// [`RunningServer`], [`Server::run`] blocks until a [`ServerHandle`] shuts it down.
///
/// ```
/// use std::time::Duration;
/// use ringrpc::{Client, Config, Server};
///
/// let config = Config::builder().cores(1).listen("127.0.0.1:0").build()?;
/// let server = Server::builder()
///     .config(config)
///     .route("/hello", |ctx| ctx.reply(b"hello"))
///     .build()?
///     .start()?;
///
/// let client = Client::connect(&server.local_addr().to_string())?;
/// let answer = client.call("/hello", "".into(), Duration::from_secs(5))?;
/// assert_eq!(&answer[..], b"hello");
/// drop(client);
///
/// let report = server.shutdown()?; // drains, closes, joins every reactor
/// assert_eq!(report.total().requests, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    settings: Arc<ReactorSettings>,
    router: Arc<Router>,
    sockets: Vec<CoreSockets>,
    local_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    /// The Unix socket files made, removed when the running server is done.
    unix_files: Vec<crate::server::bind::UnixSocketFile>,
    udp_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// The bound metrics socket and what it serves, when metrics are on.
    metrics: Option<(TcpListener, Arc<Hub>)>,
    /// The pub/sub served, for the NATS bridge.
    #[cfg(feature = "nats")]
    pubsub: Option<crate::PubSub>,
}

impl Server {
    /// A builder with the built-in `/echo` route.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// The first TCP address actually bound (the real port when 0 was asked for), or the
    /// UDP address for a datagram-only server (`0.0.0.0:0` on Unix sockets only).
    pub fn local_addr(&self) -> SocketAddr {
        first_addr(&self.local_addrs, self.udp_addr)
    }

    /// Every TCP address actually bound, in the order configured.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The WebSocket-only TCP addresses actually bound
    /// ([`ConfigBuilder::ws_listen`](crate::ConfigBuilder::ws_listen)), in order.
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }

    /// The UDP address actually bound, if the server listens on UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The address `GET /metrics` is served on (the real port when 0 was asked for), if
    /// metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that can stop the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
            tls: self.settings.tls.clone(),
        }
    }

    /// Runs until shut down from a [`ServerHandle`]; blocks. It does not react to SIGINT or
    /// SIGTERM (they kill the process, with no drain); [`Server::run_until_signal`] does.
    pub fn run(self) -> Result<ServerReport, ServerError> {
        Ok(self.start()?.join()?)
    }

    /// Starts every reactor, and the NATS bridge when configured
    /// ([`ConfigBuilder::nats`](crate::ConfigBuilder::nats)), and returns once all are
    /// serving. An unreachable NATS server does not stop the start: the bridge keeps
    /// trying, and this node serves its own connections meanwhile.
    pub fn start(self) -> Result<RunningServer, StartError> {
        #[cfg(feature = "nats")]
        let bridge = self.start_bridge()?;
        let threads = match spawn_reactors(&self.settings, &self.router, &self.shared, self.sockets)
        {
            Ok(threads) => threads,
            Err(e) => {
                #[cfg(feature = "nats")]
                if let Some(bridge) = bridge {
                    bridge.stop();
                }
                return Err(e.into());
            }
        };
        #[cfg(feature = "metrics")]
        let metrics = match self.metrics {
            Some((listener, hub)) => match MetricsServer::start(listener, hub) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.shared.shutdown();
                    join_all(threads);
                    #[cfg(feature = "nats")]
                    if let Some(bridge) = bridge {
                        bridge.stop();
                    }
                    return Err(StartError::Resource("the metrics thread", e));
                }
            },
            None => None,
        };
        Ok(RunningServer {
            handle: ServerHandle {
                shared: self.shared,
                tls: self.settings.tls.clone(),
            },
            local_addrs: self.local_addrs,
            ws_addrs: self.ws_addrs,
            unix_files: self.unix_files,
            udp_addr: self.udp_addr,
            threads,
            #[cfg(feature = "metrics")]
            metrics,
            #[cfg(feature = "nats")]
            bridge,
        })
    }

    /// Starts the NATS bridge when the config names NATS servers, and connects pub/sub,
    /// broadcasts and the metrics to it.
    #[cfg(feature = "nats")]
    fn start_bridge(&self) -> Result<Option<Bridge>, StartError> {
        let urls = self.config.nats_urls();
        if urls.is_empty() {
            return Ok(None);
        }
        let bridge = Bridge::start(urls, self.pubsub.clone(), self.shared.clone())
            .map_err(|e| StartError::Resource("the NATS bridge thread", e))?;
        if let Some(pubsub) = &self.pubsub {
            pubsub.attach_bridge(bridge.link().clone());
        }
        let _ = self.shared.bridge.set(bridge.link().clone());
        if let Some((_, hub)) = &self.metrics {
            let _ = hub.bridge.set(bridge.link().clone());
        }
        Ok(Some(bridge))
    }
}

/// The first TCP address, else the UDP one (a valid config has one of them).
fn first_addr(tcp: &[SocketAddr], udp: Option<SocketAddr>) -> SocketAddr {
    // A server on Unix sockets only has no IP address: 0.0.0.0:0.
    tcp.first()
        .copied()
        .or(udp)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}
