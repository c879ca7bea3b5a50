//! Why a configuration was refused: which knob, the value, what is allowed.
//!
//! Invariants: every knob is named as its [`ConfigBuilder`](super::ConfigBuilder) method;
//! texts never name CLI flags (the binary adds those).

use std::fmt;
use std::time::Duration;

/// A [`ConfigBuilder`](super::ConfigBuilder) setting, named as its builder method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Knob {
    /// [`ConfigBuilder::cores`](super::ConfigBuilder::cores)
    Cores,
    /// [`ConfigBuilder::ring_entries`](super::ConfigBuilder::ring_entries)
    RingEntries,
    /// [`ConfigBuilder::recv_buffers`](super::ConfigBuilder::recv_buffers)
    RecvBuffers,
    /// [`ConfigBuilder::recv_buffer_size`](super::ConfigBuilder::recv_buffer_size)
    RecvBufferSize,
    /// [`ConfigBuilder::max_body`](super::ConfigBuilder::max_body)
    MaxBody,
    /// [`ConfigBuilder::max_connections`](super::ConfigBuilder::max_connections)
    MaxConnections,
    /// [`ConfigBuilder::max_send_queue_bytes`](super::ConfigBuilder::max_send_queue_bytes)
    MaxSendQueueBytes,
    /// [`ConfigBuilder::max_send_queue_frames`](super::ConfigBuilder::max_send_queue_frames)
    MaxSendQueueFrames,
    /// [`ConfigBuilder::idle_timeout`](super::ConfigBuilder::idle_timeout)
    IdleTimeout,
    /// [`ConfigBuilder::keepalive`](super::ConfigBuilder::keepalive)
    Keepalive,
    /// [`ConfigBuilder::read_timeout`](super::ConfigBuilder::read_timeout)
    ReadTimeout,
    /// [`ConfigBuilder::auth_secret`](super::ConfigBuilder::auth_secret)
    AuthSecret,
    /// [`ConfigBuilder::max_connections_per_peer`](super::ConfigBuilder::max_connections_per_peer)
    MaxConnectionsPerPeer,
    /// [`ConfigBuilder::max_in_flight_per_conn`](super::ConfigBuilder::max_in_flight_per_conn)
    MaxInFlightPerConn,
    /// [`ConfigBuilder::stats_interval`](super::ConfigBuilder::stats_interval)
    StatsInterval,
    /// [`ConfigBuilder::max_streams_per_conn`](super::ConfigBuilder::max_streams_per_conn)
    MaxStreamsPerConn,
    /// [`ConfigBuilder::stream_queue_bytes`](super::ConfigBuilder::stream_queue_bytes)
    StreamQueueBytes,
    /// [`ConfigBuilder::stream_send_window`](super::ConfigBuilder::stream_send_window)
    StreamSendWindow,
    /// [`ConfigBuilder::udp_max_datagram`](super::ConfigBuilder::udp_max_datagram)
    UdpMaxDatagram,
    /// [`ConfigBuilder::udp_dedup_window`](super::ConfigBuilder::udp_dedup_window)
    UdpDedupWindow,
    /// [`ConfigBuilder::udp_dedup_capacity`](super::ConfigBuilder::udp_dedup_capacity)
    UdpDedupCapacity,
    /// [`ConfigBuilder::udp_peer_rate`](super::ConfigBuilder::udp_peer_rate)
    UdpPeerRate,
    /// [`ConfigBuilder::udp_listen`](super::ConfigBuilder::udp_listen)
    UdpListen,
    /// [`ConfigBuilder::ws_listen`](super::ConfigBuilder::ws_listen)
    WsListen,
    /// [`ConfigBuilder::pubsub`](super::ConfigBuilder::pubsub)
    Pubsub,
    /// [`ConfigBuilder::nats`](super::ConfigBuilder::nats)
    Nats,
    /// [`ConfigBuilder::pubsub_password`](super::ConfigBuilder::pubsub_password)
    PubsubPassword,
    /// [`ConfigBuilder::metrics_listen`](super::ConfigBuilder::metrics_listen)
    MetricsListen,
    /// [`ConfigBuilder::tls`](super::ConfigBuilder::tls)
    Tls,
    /// [`ConfigBuilder::tls_client_ca`](super::ConfigBuilder::tls_client_ca)
    TlsClientCa,
    /// [`ConfigBuilder::tls_required`](super::ConfigBuilder::tls_required)
    TlsRequired,
    /// [`ConfigBuilder::unix_mode`](super::ConfigBuilder::unix_mode)
    UnixMode,
    /// [`ConfigBuilder::send_zc_min`](super::ConfigBuilder::send_zc_min)
    SendZcMin,
}

impl Knob {
    /// The builder method's name, e.g. `"max_in_flight_per_conn"`.
    pub fn name(self) -> &'static str {
        match self {
            Knob::Cores => "cores",
            Knob::RingEntries => "ring_entries",
            Knob::RecvBuffers => "recv_buffers",
            Knob::RecvBufferSize => "recv_buffer_size",
            Knob::MaxBody => "max_body",
            Knob::MaxConnections => "max_connections",
            Knob::MaxSendQueueBytes => "max_send_queue_bytes",
            Knob::MaxSendQueueFrames => "max_send_queue_frames",
            Knob::IdleTimeout => "idle_timeout",
            Knob::Keepalive => "keepalive",
            Knob::ReadTimeout => "read_timeout",
            Knob::AuthSecret => "auth_secret",
            Knob::MaxConnectionsPerPeer => "max_connections_per_peer",
            Knob::MaxInFlightPerConn => "max_in_flight_per_conn",
            Knob::StatsInterval => "stats_interval",
            Knob::MaxStreamsPerConn => "max_streams_per_conn",
            Knob::StreamQueueBytes => "stream_queue_bytes",
            Knob::StreamSendWindow => "stream_send_window",
            Knob::UdpMaxDatagram => "udp_max_datagram",
            Knob::UdpDedupWindow => "udp_dedup_window",
            Knob::UdpDedupCapacity => "udp_dedup_capacity",
            Knob::UdpPeerRate => "udp_peer_rate",
            Knob::UdpListen => "udp_listen",
            Knob::WsListen => "ws_listen",
            Knob::Pubsub => "pubsub",
            Knob::Nats => "nats",
            Knob::PubsubPassword => "pubsub_password",
            Knob::MetricsListen => "metrics_listen",
            Knob::Tls => "tls",
            Knob::TlsClientCa => "tls_client_ca",
            Knob::TlsRequired => "tls_required",
            Knob::UnixMode => "unix_mode",
            Knob::SendZcMin => "send_zc_min",
        }
    }

    /// What its numbers count, for messages.
    fn unit(self) -> &'static str {
        match self {
            Knob::RecvBufferSize
            | Knob::MaxBody
            | Knob::MaxSendQueueBytes
            | Knob::StreamQueueBytes
            | Knob::StreamSendWindow
            | Knob::UdpMaxDatagram
            | Knob::SendZcMin => " bytes",
            _ => "",
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A setting that cannot work: which knob, the value given and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number outside `min..=max`.
    OutOfRange {
        /// The setting.
        knob: Knob,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A number that must be a power of two in `min..=max`.
    NotPowerOfTwo {
        /// The setting.
        knob: Knob,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A duration of zero where only a positive one (or `None`, for off) makes sense.
    ZeroDuration {
        /// The setting.
        knob: Knob,
    },
    /// The keepalive is not shorter than the idle timeout, so a live peer would be closed
    /// before it is pinged.
    KeepaliveNotShorterThanIdle {
        /// The keepalive given.
        keepalive: Duration,
        /// The idle timeout given.
        idle_timeout: Duration,
    },
    /// An empty auth secret.
    EmptyAuthSecret,
    /// WebSocket-only listen addresses while WebSocket is off.
    WsListenWithoutWebSocket,
    /// A shared secret together with datagram listening: datagrams carry no session to
    /// authenticate.
    UdpWithAuth,
    /// Neither a TCP nor a UDP address to listen on.
    NothingToListenOn,
    /// WebSocket upgrades are told from arpc by their first bytes, which only works while
    /// no arpc body may be as long as `GET ` read as a length (542,393,671 bytes).
    WebSocketNeedsSmallerBody {
        /// The body limit given.
        max_body: u32,
    },
    /// The largest datagram does not fit a receive buffer (with its 144-byte header).
    DatagramOverBuffer {
        /// The datagram limit given.
        udp_max_datagram: usize,
        /// The receive buffer size given.
        recv_buffer_size: usize,
    },
    /// An empty pub/sub password.
    EmptyPubsubPassword,
    /// A pub/sub password while pub/sub is off.
    PubsubPasswordWithoutPubsub,
    /// A NATS server address that cannot be used.
    Nats {
        /// The address as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A knob whose part of the engine this build lacks: ringrpc was compiled without the
    /// cargo feature that provides it.
    FeatureDisabled {
        /// The setting.
        knob: Knob,
        /// The cargo feature it needs.
        feature: &'static str,
    },
    /// TLS files that cannot be used: which, and why (rustls' or the system's words).
    Tls {
        /// The setting.
        knob: Knob,
        /// What is wrong, naming the file(s).
        reason: String,
    },
    /// A TLS option without the certificate and key ([`tls`](super::ConfigBuilder::tls)).
    TlsOptionWithoutTls {
        /// The option given.
        knob: Knob,
    },
    /// A listen address that cannot be used.
    Listen {
        /// The address as given.
        addr: String,
        /// Why.
        reason: ListenAddrError,
    },
}

impl ConfigError {
    /// The setting at fault.
    pub fn knob(&self) -> Option<Knob> {
        match self {
            ConfigError::OutOfRange { knob, .. }
            | ConfigError::NotPowerOfTwo { knob, .. }
            | ConfigError::ZeroDuration { knob } => Some(*knob),
            ConfigError::KeepaliveNotShorterThanIdle { .. } => Some(Knob::Keepalive),
            ConfigError::EmptyAuthSecret | ConfigError::UdpWithAuth => Some(Knob::AuthSecret),
            ConfigError::NothingToListenOn => None,
            ConfigError::WebSocketNeedsSmallerBody { .. } => Some(Knob::MaxBody),
            ConfigError::DatagramOverBuffer { .. } => Some(Knob::UdpMaxDatagram),
            ConfigError::Listen { .. } => None,
            ConfigError::WsListenWithoutWebSocket => Some(Knob::WsListen),
            ConfigError::Nats { .. } => Some(Knob::Nats),
            ConfigError::FeatureDisabled { knob, .. }
            | ConfigError::Tls { knob, .. }
            | ConfigError::TlsOptionWithoutTls { knob } => Some(*knob),
            ConfigError::EmptyPubsubPassword | ConfigError::PubsubPasswordWithoutPubsub => {
                Some(Knob::PubsubPassword)
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::OutOfRange {
                knob,
                value,
                min,
                max,
            } => {
                let unit = knob.unit();
                if *max == u64::MAX {
                    write!(f, "{knob} must be at least {min}{unit}, got {value}")
                } else {
                    write!(f, "{knob} must be {min}..={max}{unit}, got {value}")
                }
            }
            ConfigError::NotPowerOfTwo {
                knob,
                value,
                min,
                max,
            } => write!(
                f,
                "{knob} must be a power of two in {min}..={max}{}, got {value}",
                knob.unit()
            ),
            ConfigError::ZeroDuration { knob } => {
                write!(f, "{knob} must be longer than zero")
            }
            ConfigError::KeepaliveNotShorterThanIdle {
                keepalive,
                idle_timeout,
            } => write!(
                f,
                "keepalive ({keepalive:?}) must be shorter than the idle timeout ({idle_timeout:?}), or a live peer is closed before it is pinged"
            ),
            ConfigError::EmptyAuthSecret => f.write_str("auth_secret must not be empty"),
            ConfigError::UdpWithAuth => f.write_str(
                "auth_secret cannot be combined with udp_listen: datagrams carry no session to authenticate; serve UDP from a server without a secret",
            ),
            ConfigError::DatagramOverBuffer {
                udp_max_datagram,
                recv_buffer_size,
            } => write!(
                f,
                "udp_max_datagram ({udp_max_datagram} bytes) must fit a receive buffer with its 144-byte header: raise recv_buffer_size (now {recv_buffer_size}) to at least {} or lower udp_max_datagram",
                udp_max_datagram + 144
            ),
            ConfigError::WebSocketNeedsSmallerBody { max_body } => write!(
                f,
                "max_body ({max_body} bytes) must be below 542393671 while WebSocket upgrades share the arpc port (the first bytes tell them apart); lower max_body or turn WebSocket off with ws_path(None)"
            ),
            ConfigError::NothingToListenOn => {
                f.write_str("no address to listen on: give a TCP listen address or a udp_listen address")
            }
            ConfigError::EmptyPubsubPassword => f.write_str("pubsub_password must not be empty"),
            ConfigError::PubsubPasswordWithoutPubsub => f.write_str(
                "pubsub_password is set but pubsub is off: turn pubsub on or drop the password",
            ),
            ConfigError::WsListenWithoutWebSocket => f.write_str(
                "ws_listen needs WebSocket on: give ws_path a path (the default /ws) or drop ws_listen",
            ),
            ConfigError::Nats { url, reason } => write!(
                f,
                "invalid nats address {url:?}: {reason} (use nats://HOST:PORT, several separated by commas)"
            ),
            ConfigError::FeatureDisabled { knob, feature } => write!(
                f,
                "{knob} needs ringrpc's `{feature}` cargo feature, which this build lacks: enable it (ringrpc = {{ version = \"0.1\", features = [\"{feature}\"] }}) or leave {knob} unset"
            ),
            ConfigError::Listen { addr, reason } => write!(
                f,
                "invalid listen address {addr:?}: {reason} (use :PORT, HOST:PORT, [IPV6]:PORT, unix:/PATH or unix:@NAME)"
            ),
            ConfigError::Tls { reason, .. } => write!(f, "{reason}"),
            ConfigError::TlsOptionWithoutTls { knob } => write!(
                f,
                "{knob} needs TLS on: give tls a certificate and key, or drop {knob}"
            ),
        }
    }
}
impl std::error::Error for ConfigError {}

/// Why a listen address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddrError {
    /// The port is a number past 65535.
    PortOutOfRange(String),
    /// The port is not a number.
    PortNotANumber(String),
    /// The host name could not be resolved; the resolver's message.
    Resolve(String),
    /// The host name resolves to no address.
    NoAddress,
    /// A Unix socket path or abstract name that cannot be used.
    UnixPath(String),
}

impl fmt::Display for ListenAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddrError::PortOutOfRange(p) => {
                write!(f, "port {p} is out of range (0–65535)")
            }
            ListenAddrError::PortNotANumber(p) => {
                write!(f, "port {p:?} is not a number (0–65535)")
            }
            ListenAddrError::Resolve(e) => f.write_str(e),
            ListenAddrError::NoAddress => f.write_str("the host name resolves to no address"),
            ListenAddrError::UnixPath(why) => f.write_str(why),
        }
    }
}
