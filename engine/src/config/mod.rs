//! Server configuration: a builder that validates every knob before anything starts.
//!
//! Invariants: a [`Config`] that exists has passed [`ConfigBuilder::build`]; each knob's doc
//! states what it costs in memory.

mod builder;
mod error;
mod listen;
mod validate;

use std::time::Duration;

pub use builder::{ConfigBuilder, MAX_MAX_BODY, MIN_SEND_ZC_MIN};
pub use error::{ConfigError, Knob, ListenAddrError};
pub use listen::ListenAddr;

/// Validated server settings, made by [`ConfigBuilder::build`], which checks every knob
/// (each knob's doc says what it costs in memory) before anything starts.
///
/// ```
/// use std::time::Duration;
/// use ringrpc::{Config, ConfigError, Knob};
///
/// let config = Config::builder()
///     .cores(2)
///     .listen(":8888")
///     .max_connections(10_000)
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .build()?;
/// assert_eq!(config.cores(), 2);
/// assert_eq!(config.max_connections_per_core(), 5_000);
///
/// // A refused setting names its knob.
/// let refused = Config::builder().cores(0).build().unwrap_err();
/// assert_eq!(refused.knob(), Some(Knob::Cores));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) cores: usize,
    pub(crate) listen: Vec<ListenAddr>,
    pub(crate) ring_entries: u32,
    pub(crate) recv_buffers: u16,
    pub(crate) recv_buffer_size: usize,
    pub(crate) incremental_recv_buffers: bool,
    pub(crate) max_body: u32,
    pub(crate) max_connections: usize,
    pub(crate) max_send_queue_bytes: usize,
    pub(crate) max_send_queue_frames: u64,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) auth_secret: Option<std::sync::Arc<Vec<u8>>>,
    pub(crate) max_connections_per_peer: Option<usize>,
    pub(crate) max_in_flight_per_conn: usize,
    pub(crate) max_streams_per_conn: usize,
    pub(crate) stream_queue_bytes: usize,
    pub(crate) stream_send_window: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown_delay: Duration,
    pub(crate) stats_interval: Option<Duration>,
    pub(crate) pin_cores: bool,
    pub(crate) reflect: bool,
    pub(crate) udp_listen: Option<ListenAddr>,
    pub(crate) ws_listen: Vec<ListenAddr>,
    pub(crate) udp_max_datagram: usize,
    pub(crate) udp_dedup_window: Duration,
    pub(crate) udp_dedup_capacity: usize,
    pub(crate) udp_peer_rate: Option<u32>,
    pub(crate) udp_gso: bool,
    pub(crate) ws_path: Option<String>,
    pub(crate) ws_allowed_origins: Option<Vec<String>>,
    pub(crate) ws_protocols: Vec<String>,
    pub(crate) pubsub: bool,
    pub(crate) pubsub_password: Option<std::sync::Arc<[u8]>>,
    pub(crate) gzip_threshold: Option<usize>,
    pub(crate) send_zc_min: usize,
    pub(crate) metrics_listen: Option<ListenAddr>,
    pub(crate) nats: Vec<String>,
    /// TLS on the stream listeners, loaded and checked.
    pub(crate) tls: Option<std::sync::Arc<crate::transport::tls::ServerTls>>,
    pub(crate) unix_mode: Option<u32>,
}

impl Config {
    /// Starts from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
    /// Number of reactor threads.
    pub fn cores(&self) -> usize {
        self.cores
    }
    /// The first TCP listen address as configured (none for a datagram-only server).
    pub fn listen(&self) -> Option<&ListenAddr> {
        self.listen.first()
    }
    /// Every TCP listen address as configured (none for a datagram-only server).
    pub fn listen_addrs(&self) -> &[ListenAddr] {
        &self.listen
    }
    /// The WebSocket-only TCP addresses as configured (none by default).
    pub fn ws_listen_addrs(&self) -> &[ListenAddr] {
        &self.ws_listen
    }
    /// The UDP address as configured, if any.
    pub fn udp_listen(&self) -> Option<&ListenAddr> {
        self.udp_listen.as_ref()
    }
    /// The address `GET /metrics` is served on, as configured, if any.
    pub fn metrics_listen(&self) -> Option<&ListenAddr> {
        self.metrics_listen.as_ref()
    }
    /// Largest accepted frame body.
    pub fn max_body(&self) -> u32 {
        self.max_body
    }
    /// Frames longer than this are sent gzip-compressed; `None`: none are.
    pub fn gzip_threshold(&self) -> Option<usize> {
        self.gzip_threshold
    }
    /// Sends carrying at least this many bytes go zero-copy; 0: none do.
    pub fn send_zc_min(&self) -> usize {
        self.send_zc_min
    }
    /// The NATS servers the bridge connects to (none: no bridge).
    pub fn nats_urls(&self) -> &[String] {
        &self.nats
    }
    /// Whether TLS is served.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
    /// Connections each reactor accepts before refusing more.
    pub fn max_connections_per_core(&self) -> usize {
        self.max_connections.div_ceil(self.cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_listen_form() {
        assert_eq!(
            ListenAddr::parse(":8888").unwrap(),
            ListenAddr::AllInterfaces(8888)
        );
        assert_eq!(
            ListenAddr::parse("127.0.0.1:9").unwrap(),
            ListenAddr::Addr("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("[::]:80").unwrap(),
            ListenAddr::Addr("[::]:80".parse().unwrap())
        );
        assert!(
            matches!(ListenAddr::parse("localhost:7").unwrap(), ListenAddr::Addr(a) if a.port() == 7)
        );
        let e = ListenAddr::parse(":99999").unwrap_err();
        assert!(e.to_string().contains("out of range (0–65535)"), "{e}");
        let e = ListenAddr::parse("127.0.0.1:70000").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = ListenAddr::parse(":http").unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
        assert!(
            ListenAddr::parse("nonsense")
                .unwrap_err()
                .to_string()
                .contains("nonsense")
        );
    }

    #[test]
    fn rejects_bad_knobs_with_the_range() {
        let e = Config::builder().ring_entries(1000).build().unwrap_err();
        assert_eq!(
            e,
            ConfigError::NotPowerOfTwo {
                knob: Knob::RingEntries,
                value: 1000,
                min: 8,
                max: 32768
            }
        );
        assert_eq!(
            e.to_string(),
            "ring_entries must be a power of two in 8..=32768, got 1000"
        );
        let e = Config::builder().cores(0).build().unwrap_err();
        assert_eq!(e.to_string(), "cores must be 1..=1024, got 0");
        assert_eq!(e.knob(), Some(Knob::Cores));
        assert!(Config::builder().cores(0).build().is_err());
        assert!(Config::builder().recv_buffers(65536).build().is_err());
        assert!(Config::builder().recv_buffer_size(10).build().is_err());
        assert!(Config::builder().max_body(0).build().is_err());
        assert!(
            Config::builder()
                .stats_interval(Some(Duration::ZERO))
                .build()
                .is_err()
        );
        let c = Config::builder()
            .cores(3)
            .max_connections(10)
            .build()
            .unwrap();
        assert_eq!(c.max_connections_per_core(), 4);
    }

    #[test]
    fn a_knob_whose_feature_is_off_is_refused_naming_the_feature() {
        let nats = Config::builder()
            .nats(Some("nats://127.0.0.1:4222"))
            .build();
        if cfg!(feature = "nats") {
            assert!(nats.is_ok(), "{nats:?}");
        } else {
            let e = nats.unwrap_err();
            assert_eq!(
                e,
                ConfigError::FeatureDisabled {
                    knob: Knob::Nats,
                    feature: "nats"
                }
            );
            assert!(e.to_string().contains("`nats` cargo feature"), "{e}");
        }
        let metrics = Config::builder()
            .metrics_listen(Some("127.0.0.1:0"))
            .build();
        if cfg!(feature = "metrics") {
            assert!(metrics.is_ok(), "{metrics:?}");
        } else {
            let e = metrics.unwrap_err();
            assert_eq!(e.knob(), Some(Knob::MetricsListen));
            assert!(e.to_string().contains("`metrics` cargo feature"), "{e}");
        }
    }

    #[test]
    fn incremental_recv_buffers_are_kept_whole_with_a_udp_endpoint() {
        let on = |b: ConfigBuilder| b.incremental_recv_buffers(true).build().unwrap();
        assert!(on(Config::builder()).incremental_recv_buffers);
        let udp = on(Config::builder().udp_listen("127.0.0.1:0"));
        assert!(
            !udp.incremental_recv_buffers,
            "datagrams need whole buffers"
        );
        assert!(!Config::builder().build().unwrap().incremental_recv_buffers);
    }
}
