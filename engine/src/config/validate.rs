//! Validating a configuration: every knob in range, the knobs that must agree, and knobs
//! whose cargo feature is off, checked before anything starts.
//!
//! Invariants: the first problem found is returned, naming its knob ([`ConfigError::knob`]);
//! a [`Config`] exists only once every check passed.

use std::time::Duration;

use super::builder::{MAX_MAX_BODY, MIN_SEND_ZC_MIN, UDP_RECV_HEADER, WS_SNIFF_LIMIT};
use super::{Config, ConfigBuilder, ConfigError, Knob, ListenAddr};

impl ConfigBuilder {
    /// Validates every setting.
    pub fn build(self) -> Result<Config, ConfigError> {
        let range = |knob, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    knob,
                    value,
                    min,
                    max,
                })
            }
        };
        let power_of_two = |knob, value: u64, min, max| {
            if value.is_power_of_two() && (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::NotPowerOfTwo {
                    knob,
                    value,
                    min,
                    max,
                })
            }
        };
        let positive = |knob, d: Option<Duration>| match d {
            Some(d) if d.is_zero() => Err(ConfigError::ZeroDuration { knob }),
            _ => Ok(()),
        };
        range(Knob::Cores, self.cores as u64, 1, 1024)?;
        power_of_two(Knob::RingEntries, self.ring_entries.into(), 8, 32768)?;
        power_of_two(Knob::RecvBuffers, self.recv_buffers.into(), 1, 32768)?;
        range(
            Knob::RecvBufferSize,
            self.recv_buffer_size as u64,
            256,
            1 << 20,
        )?;
        range(Knob::MaxBody, self.max_body.into(), 1, MAX_MAX_BODY.into())?;
        range(
            Knob::MaxConnections,
            self.max_connections as u64,
            1,
            u64::MAX,
        )?;
        range(
            Knob::MaxSendQueueBytes,
            self.max_send_queue_bytes as u64,
            2,
            u64::MAX,
        )?;
        range(
            Knob::MaxSendQueueFrames,
            self.max_send_queue_frames,
            2,
            u64::MAX,
        )?;
        if self.send_zc_min != 0 {
            range(
                Knob::SendZcMin,
                self.send_zc_min as u64,
                MIN_SEND_ZC_MIN as u64,
                u64::MAX,
            )?;
        }
        positive(Knob::StatsInterval, self.stats_interval)?;
        positive(Knob::IdleTimeout, self.idle_timeout)?;
        positive(Knob::Keepalive, self.keepalive)?;
        if let (Some(idle), Some(ping)) = (self.idle_timeout, self.keepalive) {
            if ping >= idle {
                return Err(ConfigError::KeepaliveNotShorterThanIdle {
                    keepalive: ping,
                    idle_timeout: idle,
                });
            }
        }
        if self.auth_secret.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(ConfigError::EmptyAuthSecret);
        }
        range(
            Knob::MaxInFlightPerConn,
            self.max_in_flight_per_conn as u64,
            1,
            u64::MAX,
        )?;
        range(
            Knob::MaxStreamsPerConn,
            self.max_streams_per_conn as u64,
            1,
            u64::MAX,
        )?;
        range(
            Knob::StreamQueueBytes,
            self.stream_queue_bytes as u64,
            1,
            1 << 40,
        )?;
        range(
            Knob::StreamSendWindow,
            self.stream_send_window as u64,
            1,
            1 << 40,
        )?;
        if let Some(n) = self.max_connections_per_peer {
            range(Knob::MaxConnectionsPerPeer, n as u64, 1, u64::MAX)?;
        }
        range(
            Knob::UdpMaxDatagram,
            self.udp_max_datagram as u64,
            64,
            crate::udp::limits::MAX_DATAGRAM as u64,
        )?;
        positive(Knob::UdpDedupWindow, Some(self.udp_dedup_window))?;
        if let Some(rate) = self.udp_peer_rate {
            range(Knob::UdpPeerRate, rate.into(), 1, u64::from(u32::MAX))?;
        }
        range(
            Knob::UdpDedupCapacity,
            self.udp_dedup_capacity as u64,
            1,
            1 << 24,
        )?;
        // A received datagram lands in one receive buffer behind a 144-byte header.
        if self.udp_listen.is_some()
            && self.udp_max_datagram + UDP_RECV_HEADER > self.recv_buffer_size
        {
            return Err(ConfigError::DatagramOverBuffer {
                udp_max_datagram: self.udp_max_datagram,
                recv_buffer_size: self.recv_buffer_size,
            });
        }
        let listen = self
            .listen
            .iter()
            .map(|a| ListenAddr::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let udp_listen = self
            .udp_listen
            .as_deref()
            .map(ListenAddr::parse)
            .transpose()?;
        let ws_listen = self
            .ws_listen
            .iter()
            .map(|a| ListenAddr::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        for (addr, what) in [
            (&udp_listen, "udp_listen"),
            (
                &metrics_listen_early(&self.metrics_listen)?,
                "metrics_listen",
            ),
        ] {
            if let Some(addr) = addr.as_ref().filter(|a| a.is_unix()) {
                return Err(ConfigError::Listen {
                    addr: addr.to_string(),
                    reason: crate::config::ListenAddrError::UnixPath(format!(
                        "{what} needs an IP address; Unix sockets serve the stream listeners only"
                    )),
                });
            }
        }
        if !ws_listen.is_empty() && self.ws_path.is_none() {
            return Err(ConfigError::WsListenWithoutWebSocket);
        }
        let metrics_listen = self
            .metrics_listen
            .as_deref()
            .map(ListenAddr::parse)
            .transpose()?;
        if self.ws_path.is_some() && self.max_body >= WS_SNIFF_LIMIT {
            return Err(ConfigError::WebSocketNeedsSmallerBody {
                max_body: self.max_body,
            });
        }
        if self.pubsub_password.as_ref().is_some_and(|p| p.is_empty()) {
            return Err(ConfigError::EmptyPubsubPassword);
        }
        if self.pubsub_password.is_some() && !self.pubsub {
            return Err(ConfigError::PubsubPasswordWithoutPubsub);
        }
        if listen.is_empty() && udp_listen.is_none() {
            return Err(ConfigError::NothingToListenOn);
        }
        if cfg!(not(feature = "metrics")) && metrics_listen.is_some() {
            return Err(ConfigError::FeatureDisabled {
                knob: Knob::MetricsListen,
                feature: "metrics",
            });
        }
        let mut nats = Vec::new();
        if let Some(urls) = &self.nats {
            if cfg!(not(feature = "nats")) {
                return Err(ConfigError::FeatureDisabled {
                    knob: Knob::Nats,
                    feature: "nats",
                });
            }
            for url in urls.split(',').map(str::trim) {
                #[cfg(feature = "nats")]
                if let Err(e) = url.parse::<async_nats::ServerAddr>() {
                    return Err(ConfigError::Nats {
                        url: url.to_string(),
                        reason: e.to_string(),
                    });
                }
                nats.push(url.to_string());
            }
        }
        if udp_listen.is_some() && self.auth_secret.is_some() {
            return Err(ConfigError::UdpWithAuth);
        }
        if let Some(mode) = self.unix_mode {
            range(Knob::UnixMode, mode.into(), 0, 0o777)?;
        }
        let tls = self.load_tls()?;
        Ok(Config {
            cores: self.cores,
            listen,
            ring_entries: self.ring_entries,
            recv_buffers: self.recv_buffers as u16,
            recv_buffer_size: self.recv_buffer_size,
            // Datagrams need whole buffers (a shared buffer's rest could cut one short).
            incremental_recv_buffers: self.incremental_recv_buffers && udp_listen.is_none(),
            max_body: self.max_body,
            max_connections: self.max_connections,
            max_send_queue_bytes: self.max_send_queue_bytes,
            max_send_queue_frames: self.max_send_queue_frames,
            idle_timeout: self.idle_timeout,
            keepalive: self.keepalive,
            read_timeout: self.read_timeout,
            auth_secret: self.auth_secret.map(std::sync::Arc::new),
            max_connections_per_peer: self.max_connections_per_peer,
            max_in_flight_per_conn: self.max_in_flight_per_conn,
            max_streams_per_conn: self.max_streams_per_conn,
            stream_queue_bytes: self.stream_queue_bytes,
            stream_send_window: self.stream_send_window,
            shutdown_grace: self.shutdown_grace,
            shutdown_delay: self.shutdown_delay,
            stats_interval: self.stats_interval,
            pin_cores: self.pin_cores,
            reflect: self.reflect,
            udp_listen,
            udp_max_datagram: self.udp_max_datagram,
            udp_dedup_window: self.udp_dedup_window,
            udp_dedup_capacity: self.udp_dedup_capacity,
            udp_peer_rate: self.udp_peer_rate,
            udp_gso: self.udp_gso,
            ws_path: self.ws_path,
            ws_allowed_origins: self.ws_allowed_origins,
            ws_protocols: self.ws_protocols,
            pubsub: self.pubsub,
            pubsub_password: self.pubsub_password.map(std::sync::Arc::from),
            gzip_threshold: self.gzip_threshold,
            send_zc_min: self.send_zc_min,
            metrics_listen,
            ws_listen,
            nats,
            tls,
            unix_mode: self.unix_mode,
        })
    }
}

/// Parses the metrics address (also checked, for its kind, before the rest).
fn metrics_listen_early(addr: &Option<String>) -> Result<Option<ListenAddr>, ConfigError> {
    addr.as_deref().map(ListenAddr::parse).transpose()
}

impl ConfigBuilder {
    /// The TLS knobs agree, and the files load (with the `tls` feature).
    fn load_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::transport::tls::ServerTls>>, ConfigError> {
        let Some((cert, key)) = &self.tls else {
            if self.tls_client_ca.is_some() {
                return Err(ConfigError::TlsOptionWithoutTls {
                    knob: Knob::TlsClientCa,
                });
            }
            if self.tls_required {
                return Err(ConfigError::TlsOptionWithoutTls {
                    knob: Knob::TlsRequired,
                });
            }
            return Ok(None);
        };
        #[cfg(feature = "tls")]
        {
            use crate::transport::tls::{ServerTls, TlsFiles};
            let files = TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca: self.tls_client_ca.as_ref().map(Into::into),
            };
            let knob = if self.tls_client_ca.is_some() {
                Knob::TlsClientCa
            } else {
                Knob::Tls
            };
            ServerTls::load(files, self.tls_required)
                .map(|tls| Some(std::sync::Arc::new(tls)))
                .map_err(|e| ConfigError::Tls {
                    knob: if e.to_string().contains("client CA") {
                        knob
                    } else {
                        Knob::Tls
                    },
                    reason: e.to_string(),
                })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (cert, key);
            Err(ConfigError::FeatureDisabled {
                knob: Knob::Tls,
                feature: "tls",
            })
        }
    }
}
