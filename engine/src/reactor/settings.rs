//! What each reactor needs to know, server or client: ring sizes, limits, timeouts.
//!
//! Invariants: a leaf above `config` and `mailbox` (their defaults); nothing here knows
//! about listen addresses (a client runtime has none) or core counts.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::reactor::mailbox;
use crate::stream::StreamLimits;
use crate::transport::ws::handshake::HandshakeConfig;
use crate::udp::limits::UdpLimits;

/// What each reactor needs to know, server or client.
#[derive(Clone, Debug)]
pub(crate) struct ReactorSettings {
    pub(crate) ring_entries: u32,
    pub(crate) recv_buffers: u16,
    pub(crate) recv_buffer_size: usize,
    pub(crate) incremental_recv_buffers: bool,
    pub(crate) max_body: u32,
    pub(crate) max_connections_per_core: usize,
    pub(crate) max_connections_per_peer: Option<usize>,
    pub(crate) max_send_queue_bytes: usize,
    pub(crate) max_send_queue_frames: u64,
    /// An overstocked connection stops reading (a server's; see `LifecycleConfig`).
    pub(crate) pause_reading: bool,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) auth_secret: Option<Arc<Vec<u8>>>,
    pub(crate) max_in_flight_per_conn: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown_delay: Duration,
    pub(crate) stats_interval: Option<Duration>,
    pub(crate) pin_cores: bool,
    pub(crate) reflect: bool,
    pub(crate) mailbox_capacity: usize,
    pub(crate) udp: UdpLimits,
    /// WebSocket upgrades accepted on TCP connections, if on.
    pub(crate) websocket: Option<Arc<HandshakeConfig>>,
    /// Send runs of equal-sized datagrams to one peer as one UDP GSO send.
    pub(crate) udp_gso: bool,
    /// Per-connection stream limits.
    pub(crate) streams: StreamLimits,
    /// Frames longer than this are sent gzip-compressed.
    pub(crate) gzip_threshold: Option<usize>,
    /// Sends carrying at least this many bytes go zero-copy; 0: off.
    pub(crate) send_zc_min: usize,
    /// TLS on accepted connections, if on.
    pub(crate) tls: Option<Arc<crate::transport::tls::ServerTls>>,
}

impl ReactorSettings {
    /// A server's reactors: everything of `config` but the cores and listen addresses.
    pub(crate) fn from_config(config: &Config) -> ReactorSettings {
        ReactorSettings {
            ring_entries: config.ring_entries,
            recv_buffers: config.recv_buffers,
            recv_buffer_size: config.recv_buffer_size,
            incremental_recv_buffers: config.incremental_recv_buffers,
            max_body: config.max_body,
            max_connections_per_core: config.max_connections_per_core(),
            max_connections_per_peer: config.max_connections_per_peer,
            max_send_queue_bytes: config.max_send_queue_bytes,
            max_send_queue_frames: config.max_send_queue_frames,
            pause_reading: true,
            idle_timeout: config.idle_timeout,
            keepalive: config.keepalive,
            read_timeout: config.read_timeout,
            auth_secret: config.auth_secret.clone(),
            max_in_flight_per_conn: config.max_in_flight_per_conn,
            shutdown_grace: config.shutdown_grace,
            shutdown_delay: config.shutdown_delay,
            stats_interval: config.stats_interval,
            pin_cores: config.pin_cores,
            reflect: config.reflect,
            mailbox_capacity: mailbox::DEFAULT_CAPACITY,
            udp_gso: config.udp_gso,
            gzip_threshold: config.gzip_threshold,
            send_zc_min: config.send_zc_min,
            tls: config.tls.clone(),
            streams: StreamLimits {
                max_streams: config.max_streams_per_conn,
                queue_bytes: config.stream_queue_bytes,
                send_window: config.stream_send_window,
            },
            websocket: config.ws_path.as_ref().map(|path| {
                Arc::new(HandshakeConfig {
                    path: path.clone(),
                    allowed_origins: config.ws_allowed_origins.clone(),
                    protocols: config.ws_protocols.clone(),
                    ..HandshakeConfig::default()
                })
            }),
            udp: UdpLimits {
                max_datagram: config.udp_max_datagram,
                max_body: config.max_body,
                dedup_window: config.udp_dedup_window,
                dedup_capacity: config.udp_dedup_capacity,
                max_peers: 65_536,
                max_in_flight_per_peer: config.max_in_flight_per_conn,
                peer_rate: config.udp_peer_rate,
            },
        }
    }

    /// A client runtime's single reactor: small rings, no limits a server needs, per-client
    /// timeouts (set on each connection, not here).
    pub(crate) fn client() -> ReactorSettings {
        let mut settings = ReactorSettings::from_config(
            &Config::builder()
                .cores(1)
                .build()
                .expect("the default settings are valid"),
        );
        settings.ring_entries = 256;
        settings.recv_buffers = 256;
        settings.pin_cores = false;
        settings.idle_timeout = None;
        settings.read_timeout = None;
        settings.shutdown_grace = Duration::from_secs(1);
        settings.websocket = None;
        settings.tls = None;
        // Its calls fill its output: it refuses new ones, but keeps reading the answers.
        settings.pause_reading = false;
        settings
    }
}
