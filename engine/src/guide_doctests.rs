//! The user guides' code blocks under `docs/` (and the chat example's README), compiled and
//! run as doc tests, one item per page, so no page's Rust can drift from the API.
//!
//! Invariant: only `#[cfg(doctest)]` items: nothing here is part of the library. The
//! README and docs/async.md are included from `lib.rs`.

/// docs/embedding.md: servers, clients, handlers, shutdown, logging.
#[doc = include_str!("../../docs/embedding.md")]
#[cfg(doctest)]
pub struct EmbeddingGuideDoctests;

/// docs/streams.md: streams, subscribe and pub/sub.
#[doc = include_str!("../../docs/streams.md")]
#[cfg(doctest)]
pub struct StreamsGuideDoctests;

/// docs/udp.md: datagram endpoints.
#[doc = include_str!("../../docs/udp.md")]
#[cfg(doctest)]
pub struct UdpGuideDoctests;

/// docs/websocket.md: WebSocket and static assets.
#[doc = include_str!("../../docs/websocket.md")]
#[cfg(doctest)]
pub struct WebSocketGuideDoctests;

/// docs/metrics.md: the Prometheus endpoint.
#[doc = include_str!("../../docs/metrics.md")]
#[cfg(doctest)]
pub struct MetricsGuideDoctests;

/// docs/clusters.md: NATS bridge, failover, scripts/cluster.
#[doc = include_str!("../../docs/clusters.md")]
#[cfg(doctest)]
pub struct ClustersGuideDoctests;

/// docs/reliability.md: limits and what is tested.
#[doc = include_str!("../../docs/reliability.md")]
#[cfg(doctest)]
pub struct ReliabilityGuideDoctests;

/// docs/cli.md: the `engine` and `loadgen` reference.
#[doc = include_str!("../../docs/cli.md")]
#[cfg(doctest)]
pub struct CliReferenceDoctests;

/// docs/benchmarks.md: how the comparisons are run.
#[doc = include_str!("../../docs/benchmarks.md")]
#[cfg(doctest)]
pub struct BenchmarksDoctests;

/// docs/tls.md: TLS natively, or in front; Unix sockets.
#[doc = include_str!("../../docs/tls.md")]
#[cfg(doctest)]
pub struct TlsGuideDoctests;

/// docs/scaling.md: measured cluster figures and a sizing.
#[doc = include_str!("../../docs/scaling.md")]
#[cfg(doctest)]
pub struct ScalingDoctests;

/// docs/protocol.md: the wire format.
#[doc = include_str!("../../docs/protocol.md")]
#[cfg(doctest)]
pub struct ProtocolDoctests;

/// docs/README.md: the index.
#[doc = include_str!("../../docs/README.md")]
#[cfg(doctest)]
pub struct DocsIndexDoctests;

/// examples/chat/README.md: the chat application.
#[doc = include_str!("../../examples/chat/README.md")]
#[cfg(doctest)]
pub struct ChatReadmeDoctests;
