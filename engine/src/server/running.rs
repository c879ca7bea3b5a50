//! A server whose reactors run ([`RunningServer`]): its addresses, the handle that stops
//! it or broadcasts from any thread ([`ServerHandle`]), and the join that returns its report.
//!
//! Invariants: `shutdown` is idempotent and returns at once; `join` waits for every reactor,
//! then stops the NATS bridge and the metrics endpoint; one core failing takes the server down
//! rather than serving on a subset.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{ServerReport, first_addr};
use crate::cluster::BridgeStats;
#[cfg(feature = "nats")]
use crate::cluster::bridge::Bridge;
use crate::error::CallError;
use crate::ids::ConnInfo;
#[cfg(feature = "metrics")]
use crate::observe::http::MetricsServer;
use crate::reactor::runtime::{ReactorThreads, RunError, join_all};
use crate::reactor::shared::Shared;

/// Stops a running server from any thread.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
    /// The server's TLS files and configuration, when it serves TLS.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls: Option<Arc<crate::transport::tls::ServerTls>>,
}

impl ServerHandle {
    /// Stops accepting, answers every request already received, flushes, closes every
    /// connection and lets `run`/`join` return. Answers still owed by a
    /// [`Responder`](crate::Responder) or a blocking handler are waited for, up to
    /// [`ConfigBuilder::shutdown_grace`](crate::ConfigBuilder::shutdown_grace); those still
    /// owed when it ends are counted in [`CoreStats::answers_abandoned`](crate::CoreStats::answers_abandoned). Once a reactor has
    /// stopped, calls and streams on its connections fail at once with
    /// [`CallError::Stopped`] (streams: [`StreamError::Disconnected`](crate::StreamError)).
    /// Returns at once; idempotent.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Sends one Notify to every connection on every core. The frame is encoded once and
    /// shared by all connections. With a NATS bridge
    /// ([`ConfigBuilder::nats`](crate::ConfigBuilder::nats)) every other node of the
    /// cluster sends it to its connections too, once each.
    ///
    /// Fails with [`CallError::MailboxFull`] if some reactor's inbox was full (the others
    /// still got it); a connection over its send-queue limit misses it (counted in
    /// [`CoreStats::broadcast_drops`](crate::CoreStats::broadcast_drops)).
    pub fn broadcast(&self, method: &str, payload: &[u8]) -> Result<(), CallError> {
        let outcome = self.shared.broadcast_local(method, payload, None);
        if outcome.as_ref().err() != Some(&CallError::BadMethod) {
            #[cfg(feature = "nats")]
            if let Some(bridge) = self.shared.bridge.get() {
                bridge.forward(crate::cluster::link::Outbound::Broadcast {
                    method: bytes::Bytes::copy_from_slice(method.as_bytes()),
                    payload: bytes::Bytes::copy_from_slice(payload),
                });
            }
        }
        outcome
    }

    /// As [`ServerHandle::broadcast`], to this node's connections only, even with a NATS
    /// bridge.
    pub fn broadcast_local(&self, method: &str, payload: &[u8]) -> Result<(), CallError> {
        self.shared.broadcast_local(method, payload, None)
    }

    /// As [`ServerHandle::broadcast_local`], to the connections `filter` accepts (it runs
    /// on each reactor thread, once per connection). A filter cannot travel, so this never
    /// reaches other nodes.
    pub fn broadcast_filtered(
        &self,
        method: &str,
        payload: &[u8],
        filter: impl Fn(&ConnInfo) -> bool + Send + Sync + 'static,
    ) -> Result<(), CallError> {
        self.shared
            .broadcast_local(method, payload, Some(Arc::new(filter)))
    }

    /// Reads the TLS certificate, key and client CA files again
    /// ([`ConfigBuilder::tls`](crate::ConfigBuilder::tls)): new connections use them, open
    /// ones keep theirs, none is dropped. A file that does not load is refused with the
    /// reason (and logged), and the files loaded before stay in use. The `engine` binary
    /// does this on SIGHUP.
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self) -> Result<(), crate::TlsError> {
        let Some(tls) = &self.tls else {
            return Err(crate::TlsError::not_configured());
        };
        match tls.reload() {
            Ok(()) => {
                tracing::info!("TLS certificate and key reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("TLS reload refused, the previous certificate stays in use: {e}");
                Err(e)
            }
        }
    }

    /// The NATS bridge's counters, if this server has one (never without the `nats`
    /// feature).
    pub fn bridge_stats(&self) -> Option<BridgeStats> {
        #[cfg(feature = "nats")]
        return self.shared.bridge.get().map(|b| b.stats());
        #[cfg(not(feature = "nats"))]
        None
    }
}

/// A server whose reactors are running.
#[derive(Debug)]
pub struct RunningServer {
    pub(super) handle: ServerHandle,
    pub(super) local_addrs: Vec<SocketAddr>,
    pub(super) ws_addrs: Vec<SocketAddr>,
    pub(super) unix_files: Vec<crate::server::bind::UnixSocketFile>,
    pub(super) udp_addr: Option<SocketAddr>,
    pub(super) threads: ReactorThreads,
    #[cfg(feature = "metrics")]
    pub(super) metrics: Option<MetricsServer>,
    #[cfg(feature = "nats")]
    pub(super) bridge: Option<Bridge>,
}

impl RunningServer {
    /// The first TCP address actually bound, or the UDP address for a datagram-only
    /// server.
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
    /// The Unix socket files this server made (removed once it has stopped).
    pub fn unix_paths(&self) -> Vec<&std::path::Path> {
        self.unix_files.iter().map(|f| f.path()).collect()
    }
    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
    /// The address `GET /metrics` is served on, if metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "metrics")]
        return self.metrics.as_ref().map(MetricsServer::addr);
        #[cfg(not(feature = "metrics"))]
        None
    }
    /// The NATS bridge's counters, if this server has one.
    pub fn bridge_stats(&self) -> Option<BridgeStats> {
        self.handle.bridge_stats()
    }
    /// Shuts down and waits for every reactor.
    pub fn shutdown(self) -> Result<ServerReport, RunError> {
        self.handle.shutdown();
        self.join()
    }
    /// Waits for every reactor to finish (after a shutdown from some handle), then stops
    /// the NATS bridge, if any.
    pub fn join(self) -> Result<ServerReport, RunError> {
        let mut report = ServerReport::default();
        let mut failure = None;
        let results = join_all(self.threads);
        #[cfg(feature = "nats")]
        if let Some(bridge) = self.bridge {
            bridge.stop();
        }
        for result in results {
            match result {
                Ok(stats) => report.cores.push(stats),
                Err(e) => {
                    // One core failing takes the server down rather than serving on a subset.
                    self.handle.shutdown();
                    failure.get_or_insert(e);
                }
            }
        }
        // Scrapes are answered through the drain; the endpoint closes with the reactors.
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics {
            metrics.stop();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}
