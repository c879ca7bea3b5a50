//! The knobs of a server's configuration ([`ConfigBuilder`]): each one's meaning, default
//! and memory cost.
//!
//! Invariants: setting a knob never fails (every check is in `validate`, at `build`); each
//! knob is named as its method, in the errors too; defaults are those documented here.

use std::time::Duration;

use ringrpc_protocol::DEFAULT_MAX_BODY;

/// Builder for [`Config`](super::Config); [`ConfigBuilder::build`] validates.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    pub(super) cores: usize,
    pub(super) listen: Vec<String>,
    pub(super) ring_entries: u32,
    pub(super) recv_buffers: u32,
    pub(super) recv_buffer_size: usize,
    pub(super) incremental_recv_buffers: bool,
    pub(super) max_body: u32,
    pub(super) max_connections: usize,
    pub(super) max_send_queue_bytes: usize,
    pub(super) max_send_queue_frames: u64,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) keepalive: Option<Duration>,
    pub(super) read_timeout: Option<Duration>,
    pub(super) auth_secret: Option<Vec<u8>>,
    pub(super) max_connections_per_peer: Option<usize>,
    pub(super) max_in_flight_per_conn: usize,
    pub(super) max_streams_per_conn: usize,
    pub(super) stream_queue_bytes: usize,
    pub(super) stream_send_window: usize,
    pub(super) shutdown_grace: Duration,
    pub(super) shutdown_delay: Duration,
    pub(super) stats_interval: Option<Duration>,
    pub(super) pin_cores: bool,
    pub(super) reflect: bool,
    pub(super) udp_listen: Option<String>,
    pub(super) ws_listen: Vec<String>,
    pub(super) udp_max_datagram: usize,
    pub(super) udp_dedup_window: Duration,
    pub(super) udp_dedup_capacity: usize,
    pub(super) udp_peer_rate: Option<u32>,
    pub(super) udp_gso: bool,
    pub(super) ws_path: Option<String>,
    pub(super) ws_allowed_origins: Option<Vec<String>>,
    pub(super) ws_protocols: Vec<String>,
    pub(super) pubsub: bool,
    pub(super) pubsub_password: Option<Vec<u8>>,
    pub(super) gzip_threshold: Option<usize>,
    pub(super) send_zc_min: usize,
    pub(super) metrics_listen: Option<String>,
    pub(super) nats: Option<String>,
    pub(super) tls: Option<(String, String)>,
    pub(super) tls_client_ca: Option<String>,
    pub(super) tls_required: bool,
    pub(super) unix_mode: Option<u32>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            listen: vec![":8888".into()],
            ring_entries: 4096,
            recv_buffers: 512,
            recv_buffer_size: 16 * 1024,
            incremental_recv_buffers: false,
            max_body: DEFAULT_MAX_BODY,
            max_connections: 100_000,
            max_send_queue_bytes: 4 << 20,
            max_send_queue_frames: 65_536,
            idle_timeout: Some(Duration::from_secs(3600)),
            keepalive: None,
            read_timeout: Some(Duration::from_secs(30)),
            auth_secret: None,
            max_connections_per_peer: None,
            max_in_flight_per_conn: 4096,
            max_streams_per_conn: 1024,
            stream_queue_bytes: 1 << 20,
            stream_send_window: 1 << 20,
            shutdown_grace: Duration::from_secs(5),
            shutdown_delay: Duration::ZERO,
            stats_interval: None,
            pin_cores: true,
            reflect: false,
            udp_listen: None,
            ws_listen: Vec::new(),
            udp_max_datagram: crate::udp::limits::DEFAULT_MAX_DATAGRAM,
            udp_dedup_window: Duration::from_secs(5),
            udp_dedup_capacity: 65_536,
            udp_peer_rate: None,
            udp_gso: true,
            ws_path: Some("/ws".into()),
            ws_allowed_origins: None,
            ws_protocols: Vec::new(),
            pubsub: false,
            pubsub_password: None,
            gzip_threshold: None,
            send_zc_min: DEFAULT_SEND_ZC_MIN,
            metrics_listen: None,
            nats: None,
            tls: None,
            tls_client_ca: None,
            tls_required: false,
            unix_mode: None,
        }
    }
}

/// `GET ` read as an arpc body length: with WebSocket on, bodies must stay below it so the
/// first bytes tell an upgrade from arpc.
pub(super) const WS_SNIFF_LIMIT: u32 = u32::from_le_bytes(*b"GET ");

/// Bytes of a receive buffer that a datagram's header and address take.
pub(super) const UDP_RECV_HEADER: usize = 144;

/// Smallest `send_zc_min` other than 0 (off): below a page, pinning costs more than the
/// copy it saves.
pub const MIN_SEND_ZC_MIN: usize = 4096;

/// `send_zc_min`'s default: off (0). On loopback it cost more CPU per request at every size
/// measured, 16 KiB to 1 MiB (docs/benchmarks.md, "Zero-copy send"): the kernel copies each
/// zero-copy buffer at delivery anyway, after pinning it.
const DEFAULT_SEND_ZC_MIN: usize = 0;

/// Largest `max_body` accepted: the frame must still fit a `u32` length.
pub const MAX_MAX_BODY: u32 = u32::MAX - 16;

impl ConfigBuilder {
    /// Reactor threads, one per core (default: CPUs available). Each costs one thread, one
    /// io_uring and one receive buffer ring.
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = n;
        self
    }
    /// Listen address: `:PORT`, `HOST:PORT` or `[IPV6]:PORT` (default `:8888`); replaces
    /// any set before.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = vec![addr.into()];
        self
    }
    /// Also listens on `addr` for WebSocket (and static assets over HTTP) only: a
    /// connection there must start with an HTTP request, raw arpc is refused with HTTP 400.
    /// For browsers on a port of their own (say, behind a TLS proxy) while `listen` serves
    /// arpc; the `listen` ports accept WebSocket too. Repeat for several. Needs WebSocket
    /// on ([`ws_path`](Self::ws_path)). Each address costs one listening socket per core.
    pub fn ws_listen(mut self, addr: impl Into<String>) -> Self {
        self.ws_listen.push(addr.into());
        self
    }
    /// Listens on `addr` too. Each address costs one listening socket per core.
    pub fn also_listen(mut self, addr: impl Into<String>) -> Self {
        self.listen.push(addr.into());
        self
    }
    /// Submission queue entries per core, a power of two in 8..=32768 (default 4096). Costs
    /// 64 B per entry plus 4 completion entries of 16 B each: 128 B per entry per core.
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n;
        self
    }
    /// Receive buffers per core, a power of two in 1..=32768 (default 512). Costs
    /// `recv_buffer_size` bytes each plus 16 B of ring entry: 8 MiB per core by default, of
    /// address space; memory only for those in use: 64 are handed to the kernel at first,
    /// twice as many each time receives run out (counted in `recv_buffers_exhausted`).
    pub fn recv_buffers(mut self, n: u32) -> Self {
        self.recv_buffers = n;
        self
    }
    /// Size of each receive buffer in bytes, 256..=1 MiB (default 16 KiB: a 4 KiB frame
    /// arrives whole in one, a 64 KiB one in four completions). See `recv_buffers`.
    pub fn recv_buffer_size(mut self, n: usize) -> Self {
        self.recv_buffer_size = n;
        self
    }
    /// Let the kernel consume receive buffers incrementally (io_uring `IOU_PBUF_RING_INC`,
    /// kernel ≥ 6.12; default off): a recv completion takes only the bytes it carries, so
    /// small reads share a buffer instead of each taking a whole one (counted in
    /// `recv_buffer_shared`). A buffer goes back to the kernel once the kernel has filled it
    /// and the engine has copied every read out of it. Costs no memory of its own: the
    /// buffers cost what `recv_buffers` says; larger buffers then suit it, since few bytes
    /// no longer waste them. Ignored (whole buffers) with `udp_listen`, whose datagrams need
    /// whole buffers, and on kernels without the flag.
    pub fn incremental_recv_buffers(mut self, on: bool) -> Self {
        self.incremental_recv_buffers = on;
        self
    }
    /// Largest frame body (method + payload) a peer may declare, 1..=u32::MAX−16 (default
    /// 64 MiB − 16, as arpc). A connection holds at most this much for one partial frame,
    /// and only as its bytes arrive: room for at most twice the bytes received (at least
    /// 16 KiB), on raw arpc and WebSocket alike.
    pub fn max_body(mut self, n: u32) -> Self {
        self.max_body = n;
        self
    }
    /// Open connections over all cores before new ones are refused (default 100 000),
    /// split evenly across cores. Each costs about 870 B idle plus its queued output;
    /// each core reserves about 700 B of address space per connection it may hold (a
    /// 600 B slot and a 100 B op record, at most 131,072 of each) up front, touched only
    /// as connections come.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Most output one connection may have unsent before the engine stops reading from it
    /// (default 4 MiB): this bounds the memory a peer that sends and never reads can cost.
    /// Reading resumes below half; broadcasts to a connection over the limit are dropped.
    pub fn max_send_queue_bytes(mut self, n: usize) -> Self {
        self.max_send_queue_bytes = n;
        self
    }
    /// The same limit counted in frames (default 65 536), for small frames whose queue
    /// overhead outweighs their bytes.
    pub fn max_send_queue_frames(mut self, n: u64) -> Self {
        self.max_send_queue_frames = n;
        self
    }
    /// Close a connection that sent nothing for this long (default 1 hour, as Envoy; `None`
    /// keeps idle connections forever). With [`ConfigBuilder::keepalive`] this detects dead
    /// peers: a live one answers the Ping.
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Ping a connection that sent nothing for this long (default off); any frame, the
    /// Pong included, counts as activity.
    pub fn keepalive(mut self, d: Option<Duration>) -> Self {
        self.keepalive = d;
        self
    }
    /// Close a connection whose frame, once started, is not complete within this long
    /// (default 30 s): a peer trickling a frame (slowloris) cannot hold a connection and its
    /// partial-frame buffer forever. `None` turns it off.
    pub fn read_timeout(mut self, d: Option<Duration>) -> Self {
        self.read_timeout = d;
        self
    }
    /// Require every connection to authenticate first: its first frame must be a Request to
    /// [`AUTH_METHOD`](crate::error::AUTH_METHOD) carrying this secret (compared in constant
    /// time). Anything else gets one error Response and the connection is closed. Default
    /// off.
    pub fn auth_secret(mut self, secret: Option<impl AsRef<[u8]>>) -> Self {
        self.auth_secret = secret.map(|s| s.as_ref().to_vec());
        self
    }
    /// Most connections one peer IP address may hold open (default unlimited); the next is
    /// refused. Costs one map entry per connected address.
    pub fn max_connections_per_peer(mut self, n: Option<usize>) -> Self {
        self.max_connections_per_peer = n;
        self
    }
    /// Most Requests of one connection whose answers are deferred (to a responder or the
    /// blocking pool), and Notifies waiting for or running in a blocking handler, at once
    /// (default 4096); past it new Requests get the error "too many requests in flight on
    /// this connection" at once instead of queueing work, and Notifies to blocking methods
    /// are dropped and counted. Each blocking job holds its request (method, payload,
    /// metadata) until its handler returns; all connections' jobs together hold at most
    /// 65,536 jobs and 256 MiB of requests (one of any size when none is held), so one
    /// connection's worst case is the smaller of this × `max_body` and 256 MiB + `max_body`.
    pub fn max_in_flight_per_conn(mut self, n: usize) -> Self {
        self.max_in_flight_per_conn = n;
        self
    }
    /// Most streams open at once on one connection (default 1024); a peer opening more gets
    /// the error end "too many open streams on this connection". Each open stream costs
    /// about 200 bytes plus what its inbox holds (see
    /// [`stream_queue_bytes`](Self::stream_queue_bytes) for the total per connection).
    pub fn max_streams_per_conn(mut self, n: usize) -> Self {
        self.max_streams_per_conn = n;
        self
    }
    /// Bytes one stream's inbox holds before its connection stops reading until the
    /// consumer takes it to half (default 1 MiB): the memory a slow stream consumer can
    /// cost. Each frame counts at what it holds: payload, metadata block (kept encoded) and
    /// about 200 bytes. Worst case per connection: `max_streams_per_conn` × this (1 GiB by
    /// default), plus the frames already received when reading stopped (at most the core's
    /// receive buffers, `recv_buffers` × `recv_buffer_size`: 8 MiB of frames).
    pub fn stream_queue_bytes(mut self, n: usize) -> Self {
        self.stream_queue_bytes = n;
        self
    }
    /// Bytes a stream sender may have posted and not yet queued for the socket before
    /// `send` waits (default 1 MiB): the memory a fast sender to a slow peer can cost per
    /// stream.
    pub fn stream_send_window(mut self, n: usize) -> Self {
        self.stream_send_window = n;
        self
    }
    /// How long shutdown waits for in-progress connections to drain before closing them
    /// (default 5 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }
    /// How long shutdown keeps serving the open connections, with the listeners already
    /// closed, before the drain begins (default 0: drain at once). New connections are
    /// refused meanwhile, so a load balancer's health checks fail and it sends new clients
    /// to other nodes, while clients already here finish their work; the drain starts as
    /// soon as the last connection closes, or when this ends. Set it to the balancer's
    /// time to mark a node down plus the time clients need to move. Costs nothing.
    pub fn shutdown_delay(mut self, d: Duration) -> Self {
        self.shutdown_delay = d;
        self
    }
    /// Log a one-line summary per core at this interval (default off). No memory cost.
    pub fn stats_interval(mut self, d: Option<Duration>) -> Self {
        self.stats_interval = d;
        self
    }
    /// Pin each reactor thread to its own CPU (default on).
    pub fn pin_cores(mut self, pin: bool) -> Self {
        self.pin_cores = pin;
        self
    }

    /// Benchmark mode: write every received byte straight back without decoding (default
    /// off). It measures the transport alone (recv, buffer handling, vectored send) and is
    /// not an RPC server: no frames are parsed, no limits apply to frames.
    pub fn reflect(mut self, on: bool) -> Self {
        self.reflect = on;
        self
    }

    /// Serves the same routes over UDP on `addr` too (one socket per core sharing the port
    /// with `SO_REUSEPORT`): each datagram carries exactly one arpc frame. Costs one socket
    /// per core plus the duplicate-suppression cache (see
    /// [`udp_dedup_window`](Self::udp_dedup_window)).
    pub fn udp_listen(mut self, addr: impl Into<String>) -> Self {
        self.udp_listen = Some(addr.into());
        self
    }

    /// Serves Prometheus metrics on `addr` (`:PORT`, `HOST:PORT` or `[IPV6]:PORT`; port 0
    /// picks a free one): `GET /metrics` answers in the text format 0.0.4 from a thread of
    /// its own (default `None`: no endpoint, and the reactors measure nothing for it).
    ///
    /// Costs one thread and one listening socket; per core, a snapshot of its counters
    /// (about 1 KiB plus 176 bytes per route), and on the request path two clock reads per
    /// Request or Notify for its latency. Reactors copy their counters only when a scrape
    /// asks, so nothing is shared per request. The address is bound by
    /// [`ServerBuilder::build`](crate::ServerBuilder::build), so a port in use fails there.
    ///
    /// Needs the `metrics` cargo feature: without it, [`ConfigBuilder::build`] refuses an
    /// address with [`ConfigError::FeatureDisabled`](crate::ConfigError::FeatureDisabled).
    pub fn metrics_listen(mut self, addr: Option<impl Into<String>>) -> Self {
        self.metrics_listen = addr.map(Into::into);
        self
    }

    /// Listens on no TCP address (a datagram-only server: give [`udp_listen`](Self::udp_listen)).
    pub fn no_tcp_listen(mut self) -> Self {
        self.listen.clear();
        self
    }

    /// Largest datagram sent or answered (default 1472: one Ethernet MTU less the IP and
    /// UDP headers; at most 65,507). A frame that does not fit is refused at the sender
    /// (`CallError::TooLarge`), and an answer that does not fit becomes an error answer.
    /// Each cached answer costs up to this much memory.
    pub fn udp_max_datagram(mut self, bytes: usize) -> Self {
        self.udp_max_datagram = bytes;
        self
    }

    /// How long a datagram request's answer is kept to answer its retries without running
    /// the handler again (default 5 s; should exceed the callers' whole retry span). Older
    /// retries are dropped as stale, never run again. A peer quiet this long is forgotten,
    /// with its pub/sub authentication (`in_A`).
    pub fn udp_dedup_window(mut self, window: Duration) -> Self {
        self.udp_dedup_window = window;
        self
    }

    /// Datagram requests whose answers are kept for duplicate suppression, per core
    /// (default 65,536). Memory: up to this many × (about 100 bytes +
    /// [`udp_max_datagram`](Self::udp_max_datagram)) per core. When full, the oldest is
    /// evicted and a retry of it is dropped as stale (never run again).
    pub fn udp_dedup_capacity(mut self, entries: usize) -> Self {
        self.udp_dedup_capacity = entries;
        self
    }

    /// Requests and notifies one UDP peer address may send per second (default unlimited).
    /// Past it, its datagrams are dropped and counted (`UdpStats::rate_limited`) before
    /// they cost anything; a burst of up to one second's worth passes. Costs nothing extra.
    pub fn udp_peer_rate(mut self, per_second: Option<u32>) -> Self {
        self.udp_peer_rate = per_second;
        self
    }

    /// Sends runs of equal-sized datagrams to one peer as one UDP GSO send (`UDP_SEGMENT`,
    /// Linux 4.18+; default on: it cut the server's CPU per request by about a quarter in
    /// the echo benchmark). A reactor whose kernel refuses it turns it off by itself and
    /// logs so. Costs nothing.
    pub fn udp_gso(mut self, on: bool) -> Self {
        self.udp_gso = on;
        self
    }

    /// Accepts WebSocket upgrades (RFC 6455) for this request path on the TCP ports, beside
    /// raw arpc: a connection whose first bytes are `GET ` is an upgrade request (default
    /// `Some("/ws")`; `None`: raw arpc only). Each arpc frame then travels in one binary
    /// message (text messages are accepted too). Costs nothing until a connection upgrades;
    /// an upgraded one buffers what it receives (unmasking needs a copy), up to
    /// [`max_body`](Self::max_body) plus 16 bytes per message, and its request head up to
    /// 8 KiB.
    pub fn ws_path(mut self, path: Option<impl Into<String>>) -> Self {
        self.ws_path = path.map(Into::into);
        self
    }

    /// Only WebSocket upgrades whose `Origin` is one of these may proceed (others get HTTP
    /// 403; default: any origin, and none required).
    pub fn ws_allowed_origins(mut self, origins: Option<Vec<String>>) -> Self {
        self.ws_allowed_origins = origins;
        self
    }

    /// WebSocket subprotocols (`Sec-WebSocket-Protocol`) the server agrees to, in order of
    /// preference among those a client offers (default none: no subprotocol is selected,
    /// and clients offering some still connect, as with arpc). Costs nothing.
    pub fn ws_protocols(mut self, protocols: Vec<String>) -> Self {
        self.ws_protocols = protocols;
        self
    }

    /// Serves Go arpc-compatible publish/subscribe (routes `in_A`, `in_S`, `in_U`, `in_P`,
    /// `in_P1`; see [`PubSub`](crate::PubSub)) on the TCP and WebSocket connections
    /// (default off). Costs nothing until peers subscribe: about 100 bytes plus the name,
    /// twice, per subscription, at most 4096 per connection.
    pub fn pubsub(mut self, on: bool) -> Self {
        self.pubsub = on;
        self
    }

    /// Requires pub/sub peers to authenticate with `in_A` and this password (compared in
    /// constant time) before subscribing or publishing (default none: anyone may). Needs
    /// [`pubsub`](Self::pubsub) on; must not be empty. Costs nothing.
    pub fn pubsub_password(mut self, password: Option<impl AsRef<[u8]>>) -> Self {
        self.pubsub_password = password.map(|p| p.as_ref().to_vec());
        self
    }

    /// Sends every frame longer than this many bytes (header included) gzip-compressed the
    /// way arpc's gzip coder does, when that makes it shorter (default `None`: off).
    /// Responses, notifies, broadcasts, calls and stream frames alike, per connection.
    /// Turn it on only when every peer decodes arpc gzip frames (`user_flags` bit 7): a Go
    /// arpc peer with the gzip coder registered, or ringrpc. Costs CPU, not memory: each
    /// frame over it is deflated (level 1) on the reactor thread into a buffer of its own,
    /// once per connection for a broadcast. Compressed frames are accepted whatever this
    /// is.
    pub fn gzip_threshold(mut self, bytes: Option<usize>) -> Self {
        self.gzip_threshold = bytes;
        self
    }

    /// Sends a connection's output with zero-copy `sendmsg` (io_uring `SENDMSG_ZC`, kernel
    /// ≥ 6.1) whenever one send carries at least this many bytes (default 0: off; else at
    /// least [`MIN_SEND_ZC_MIN`], 4 KiB). The kernel then sends straight from the answers'
    /// own buffers instead of copying them into socket memory; where it lacks zero-copy
    /// sends, or the socket cannot (Unix sockets), the send is a plain one.
    ///
    /// Costs memory for time: each such send's buffers (the whole `Bytes` of every answer
    /// in it, and the coalescing buffer it was cut from) stay allocated until the kernel's
    /// notification says it no longer reads them, which is when the peer has acknowledged
    /// the bytes: up to the socket's send buffer (`net.ipv4.tcp_wmem`, 4 MiB at most by
    /// default) per connection, longer while a peer does not read. A plain send lets them
    /// go at once, the kernel holding a copy instead.
    ///
    /// Off by default because it did not pay where measured: on loopback (where the kernel
    /// copies each zero-copy buffer at delivery anyway, after pinning it) it cost the core
    /// 1.05 to 2.2 times the CPU per request of plain sends from 16 KiB to 1 MiB answers
    /// (docs/benchmarks.md, "Zero-copy send"). Whether it pays towards a real NIC is for a
    /// measurement there; `sends_zc` and `zc_copied` in the report say what happened.
    pub fn send_zc_min(mut self, bytes: usize) -> Self {
        self.send_zc_min = bytes;
        self
    }

    /// Bridges this server to a NATS server (default none: a single node): every broadcast
    /// and pub/sub publication reaches the subscribers and connections of every node
    /// bridged to the same NATS, once each, and a publish-to-one finds a subscriber on
    /// another node when this one has none. `url` is `nats://HOST:PORT` (or `HOST:PORT`);
    /// several NATS servers of one NATS cluster are separated by commas. An unreachable
    /// NATS does not stop the server: it serves its own connections and the bridge keeps
    /// reconnecting. Costs one thread and, while NATS is slow, at most
    /// [`NATS_OUTBOUND_CAPACITY`](crate::NATS_OUTBOUND_CAPACITY) queued messages (each its
    /// payload plus about 64 bytes).
    ///
    /// Needs the `nats` cargo feature: without it, [`ConfigBuilder::build`] refuses a URL
    /// with [`ConfigError::FeatureDisabled`](crate::ConfigError::FeatureDisabled).
    pub fn nats(mut self, url: Option<impl Into<String>>) -> Self {
        self.nats = url.map(Into::into);
        self
    }

    /// Serves TLS 1.3 and 1.2 on every TCP and Unix listen address (default none): `cert`
    /// is a PEM certificate chain, leaf first; `key` its PEM private key (PKCS#8, RSA or
    /// EC; RSA, ECDSA and Ed25519 keys). Both are read and checked against each other by
    /// [`build`](ConfigBuilder::build), so a missing file or a key that does not match is a
    /// startup error naming the files; [`ServerHandle::reload_tls`](crate::ServerHandle)
    /// reads them again. Unless [`tls_required`](Self::tls_required), plaintext arpc and
    /// WebSocket share the ports with TLS, told apart by the first bytes (a ClientHello).
    /// ALPN offers `arpc` and `http/1.1` (`wss://`).
    ///
    /// Costs, per TLS connection, rustls' state (about 1 KiB idle; up to about 34 KiB of
    /// record buffers while records are in flight) and, per send, the records sealed (at
    /// most 256 KiB ahead of the socket); one handshake's CPU per connection.
    ///
    /// Needs the `tls` cargo feature: without it, [`ConfigBuilder::build`] refuses it
    /// with [`ConfigError::FeatureDisabled`](crate::ConfigError::FeatureDisabled).
    pub fn tls(mut self, cert: impl Into<String>, key: impl Into<String>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// Mutual TLS: requires every TLS client to present a certificate issued by a CA of
    /// this PEM file (default none: no client certificate asked for). Handlers see the
    /// verified identity in [`ConnInfo::tls`](crate::ConnInfo). Needs [`tls`](Self::tls).
    /// Costs the CA certificates' memory, once.
    pub fn tls_client_ca(mut self, path: Option<impl Into<String>>) -> Self {
        self.tls_client_ca = path.map(Into::into);
        self
    }

    /// Serves TLS only (default off): a connection that does not start with a TLS
    /// ClientHello fails its handshake and is closed. Needs [`tls`](Self::tls). Costs
    /// nothing.
    pub fn tls_required(mut self, on: bool) -> Self {
        self.tls_required = on;
        self
    }

    /// Permissions of the Unix socket files this server creates (`unix:` listen
    /// addresses), e.g. `0o660` (default: as the process's umask leaves them). Costs
    /// nothing.
    pub fn unix_mode(mut self, mode: Option<u32>) -> Self {
        self.unix_mode = mode;
        self
    }
}
