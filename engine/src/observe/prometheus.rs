//! Turning merged snapshots into the Prometheus text format 0.0.4 with `prometheus-client`
//! (a collector registered for one scrape; counters get their `_total` suffix from it).
//!
//! Invariants: every family has HELP and TYPE lines (so `promtool check metrics` passes);
//! per-core families carry a `core` label, per-method ones a `method` label only (summed
//! over cores).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cluster::BridgeStats;
use crate::observe::closes::CloseKind;
use crate::observe::core_stats::CoreStats;
use crate::observe::methods::{BUCKETS_NS, LatencyHistogram, MethodStats};
use crate::observe::scrape::CoreSnapshot;

/// The label of requests for methods with no route.
const NOT_FOUND_LABEL: &str = "_not_found";
use crate::pubsub::PubSubStats;

/// Per-core counters: name (without `_total`), help, and how to read it.
type CounterDef = (&'static str, &'static str, fn(&CoreStats) -> u64);

const CORE_COUNTERS: &[CounterDef] = &[
    (
        "ringrpc_connections_accepted",
        "Connections accepted.",
        |s| s.accepted,
    ),
    (
        "ringrpc_connections_refused",
        "Connections refused at the connection limits.",
        |s| s.refused,
    ),
    ("ringrpc_requests", "Requests dispatched.", |s| s.requests),
    ("ringrpc_notifies", "Notifies dispatched.", |s| s.notifies),
    ("ringrpc_frames_received", "Frames received.", |s| {
        s.frames_in
    }),
    (
        "ringrpc_frames_sent",
        "Frames sent (divide by ringrpc_sends_total for frames per send).",
        |s| s.frames_out,
    ),
    (
        "ringrpc_received_bytes",
        "Bytes received on TCP connections.",
        |s| s.bytes_in,
    ),
    (
        "ringrpc_sent_bytes",
        "Bytes sent on TCP connections.",
        |s| s.bytes_out,
    ),
    ("ringrpc_sends", "Vectored sends issued.", |s| s.sends),
    (
        "ringrpc_not_found",
        "Requests and notifies for methods with no route.",
        |s| s.not_found,
    ),
    ("ringrpc_handler_panics", "Handlers that panicked.", |s| {
        s.panics
    }),
    (
        "ringrpc_callback_panics",
        "Other user callbacks on a reactor that panicked (call completions, hooks, broadcast filters).",
        |s| s.callback_panics,
    ),
    (
        "ringrpc_answers_abandoned",
        "Answers still owed when the shutdown grace ended.",
        |s| s.answers_abandoned,
    ),
    (
        "ringrpc_refused_in_flight",
        "Requests refused and blocking Notifies dropped: their connection had too many pending.",
        |s| s.refused_in_flight,
    ),
    (
        "ringrpc_protocol_errors",
        "Connections closed for breaking the protocol.",
        |s| s.protocol_errors,
    ),
    (
        "ringrpc_socket_errors",
        "Connections closed by a socket error.",
        |s| s.socket_errors,
    ),
    (
        "ringrpc_recv_buffers_exhausted",
        "Times the receive buffers ran out.",
        |s| s.recv_buffers_exhausted,
    ),
    (
        "ringrpc_recv_buffer_shared",
        "Recv completions that followed an earlier one in the same receive buffer.",
        |s| s.recv_buffer_shared,
    ),
    (
        "ringrpc_direct_recvs",
        "Large frames whose rest was received straight into their own buffer.",
        |s| s.direct_recvs,
    ),
    (
        "ringrpc_sends_zc",
        "Sends issued zero-copy (send_zc_min).",
        |s| s.sends_zc,
    ),
    (
        "ringrpc_zc_notifications",
        "Zero-copy sends whose buffers the kernel released.",
        |s| s.zc_notifications,
    ),
    (
        "ringrpc_zc_copied",
        "Zero-copy sends the kernel copied after all.",
        |s| s.zc_copied,
    ),
    (
        "ringrpc_zc_refused",
        "Zero-copy sends a socket refused, sent again plainly.",
        |s| s.zc_refused,
    ),
    (
        "ringrpc_accept_errors",
        "Accept failures (descriptor or memory exhaustion).",
        |s| s.accept_errors,
    ),
    (
        "ringrpc_broadcasts",
        "Broadcast frames queued on connections.",
        |s| s.broadcasts,
    ),
    ("ringrpc_calls", "Calls made to peers.", |s| s.calls),
    (
        "ringrpc_overstocks",
        "Times a connection's unsent output passed its limit and reading paused.",
        |s| s.overstocks,
    ),
    (
        "ringrpc_broadcast_drops",
        "Broadcast frames dropped: the connection was over its send-queue limit.",
        |s| s.broadcast_drops,
    ),
    (
        "ringrpc_notify_drops",
        "Notifies from other threads dropped: the connection was over its send-queue limit.",
        |s| s.notify_drops,
    ),
    (
        "ringrpc_mailbox_refused",
        "Messages other threads could not queue: the reactor's inbox was full.",
        |s| s.mailbox_refused,
    ),
    (
        "ringrpc_loop_errors",
        "Wake-up or timer failures of the event loop.",
        |s| s.loop_errors,
    ),
    ("ringrpc_streams_opened", "Streams opened.", |s| {
        s.streams_opened
    }),
    ("ringrpc_stream_frames", "Stream frames received.", |s| {
        s.stream_frames
    }),
    (
        "ringrpc_gzip_frames_received",
        "gzip-compressed frames received and inflated.",
        |s| s.gzip_in,
    ),
    (
        "ringrpc_gzip_frames_sent",
        "Frames sent gzip-compressed.",
        |s| s.gzip_out,
    ),
    (
        "ringrpc_bad_metadata",
        "Frames whose metadata block was malformed.",
        |s| s.bad_metadata,
    ),
    (
        "ringrpc_udp_datagrams_received",
        "UDP datagrams received.",
        |s| s.udp.datagrams_in,
    ),
    ("ringrpc_udp_datagrams_sent", "UDP datagrams sent.", |s| {
        s.udp.datagrams_out
    }),
    ("ringrpc_udp_requests", "UDP requests dispatched.", |s| {
        s.udp.requests
    }),
    ("ringrpc_udp_notifies", "UDP notifies dispatched.", |s| {
        s.udp.notifies
    }),
    (
        "ringrpc_udp_malformed",
        "UDP datagrams that were not one whole frame.",
        |s| s.udp.malformed,
    ),
    (
        "ringrpc_udp_duplicates",
        "UDP request retries answered from the duplicate cache.",
        |s| s.udp.duplicates,
    ),
    (
        "ringrpc_udp_refused",
        "UDP requests and notifies refused (peer table full, or in-flight limit).",
        |s| s.udp.refused,
    ),
    (
        "ringrpc_udp_rate_limited",
        "UDP datagrams dropped by the per-peer rate limit.",
        |s| s.udp.rate_limited,
    ),
    ("ringrpc_udp_calls", "UDP calls made to peers.", |s| {
        s.udp.calls
    }),
    ("ringrpc_udp_retries", "UDP call retries sent.", |s| {
        s.udp.retries
    }),
    ("ringrpc_udp_timeouts", "UDP calls that timed out.", |s| {
        s.udp.timeouts
    }),
    ("ringrpc_udp_send_errors", "UDP sends that failed.", |s| {
        s.udp.send_errors
    }),
];

/// One scrape's data, encoded by `prometheus-client` as a collector.
#[derive(Debug)]
struct Scrape {
    cores: Vec<CoreSnapshot>,
    stale: usize,
    /// (label, merged over cores), `_not_found` last.
    methods: Vec<(String, MethodStats)>,
    pubsub: Option<PubSubStats>,
    bridge: Option<BridgeStats>,
}

/// The exposition text of one scrape.
pub(super) fn render(
    cores: &[CoreSnapshot],
    stale: usize,
    names: &[String],
    pubsub: Option<PubSubStats>,
    bridge: Option<BridgeStats>,
) -> String {
    let mut methods: Vec<(String, MethodStats)> = names
        .iter()
        .cloned()
        .chain(std::iter::once(NOT_FOUND_LABEL.to_owned()))
        .map(|n| (n, MethodStats::default()))
        .collect();
    for core in cores {
        for (merged, m) in methods.iter_mut().zip(&core.methods) {
            merged.1.calls += m.calls;
            merged.1.latency.add(&m.latency);
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        cores: cores.to_vec(),
        stale,
        methods,
        pubsub,
        bridge,
    }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        family.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

fn core_label(core: usize) -> Vec<(&'static str, String)> {
    vec![("core", core.to_string())]
}

/// `(upper bound in seconds, count in that bucket alone)` pairs, `+Inf` last (the encoder
/// makes them cumulative).
fn buckets(h: &LatencyHistogram) -> Vec<(f64, u64)> {
    h.buckets
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let le = BUCKETS_NS
                .get(i)
                .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
            (le, n)
        })
        .collect()
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let per_core = |get: &dyn Fn(&CoreSnapshot) -> u64| {
            self.cores
                .iter()
                .map(move |c| (core_label(c.stats.core), get(c)))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut encoder,
            "ringrpc_cores",
            "Reactor threads (one per core).",
            std::iter::once((Vec::new(), self.cores.len() as u64)),
        )?;
        gauge(
            &mut encoder,
            "ringrpc_metrics_stale_cores",
            "Cores whose counters in this scrape are from an earlier one (the reactor did not answer in time).",
            std::iter::once((Vec::new(), self.stale as u64)),
        )?;
        gauge(
            &mut encoder,
            "ringrpc_connections_open",
            "Connections open now.",
            per_core(&|c| c.open).into_iter(),
        )?;
        counter(
            &mut encoder,
            "ringrpc_connections_closed",
            "Connections closed, by reason.",
            self.cores.iter().flat_map(|c| {
                CloseKind::ALL
                    .iter()
                    .zip(c.closed_by)
                    .map(move |(kind, n)| {
                        let mut labels = core_label(c.stats.core);
                        labels.push(("reason", kind.label().to_owned()));
                        (labels, n)
                    })
            }),
        )?;
        for (name, help, get) in CORE_COUNTERS {
            counter(
                &mut encoder,
                name,
                help,
                per_core(&|c| get(&c.stats)).into_iter(),
            )?;
        }
        counter(
            &mut encoder,
            "ringrpc_method_requests",
            "Requests and notifies dispatched, by method (TCP and WebSocket; methods with no route as _not_found).",
            self.methods
                .iter()
                .map(|(name, m)| (vec![("method", name.clone())], m.calls)),
        )?;
        let mut family = encoder.encode_descriptor(
            "ringrpc_request_duration_seconds",
            "Server-side time from dispatch to the answer being queued (the handler's return, or a responder's answer reaching the reactor), by method.",
            None,
            MetricType::Histogram,
        )?;
        for (name, m) in &self.methods {
            let labels = [("method", name.as_str())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    m.latency.sum_ns as f64 / 1e9,
                    m.latency.count,
                    &buckets(&m.latency),
                    None,
                )?;
        }
        if let Some(p) = &self.pubsub {
            let one = |v: u64| std::iter::once((Vec::new(), v));
            counter(
                &mut encoder,
                "ringrpc_pubsub_published",
                "Publications accepted.",
                one(p.published),
            )?;
            counter(
                &mut encoder,
                "ringrpc_pubsub_delivered",
                "Notifies queued on subscribers' connections.",
                one(p.delivered),
            )?;
            counter(
                &mut encoder,
                "ringrpc_pubsub_skipped",
                "Deliveries skipped (slow subscriber or full inbox).",
                one(p.skipped),
            )?;
            gauge(
                &mut encoder,
                "ringrpc_pubsub_subscribers",
                "Subscriptions now (one per connection and topic).",
                one(p.subscribers as u64),
            )?;
            gauge(
                &mut encoder,
                "ringrpc_pubsub_topics",
                "Topics with at least one subscriber now.",
                one(p.topics as u64),
            )?;
            gauge(
                &mut encoder,
                "ringrpc_pubsub_connections",
                "Connections and datagram peers authenticated or subscribed now.",
                one(p.connections as u64),
            )?;
        }
        if let Some(b) = &self.bridge {
            let one = |v: u64| std::iter::once((Vec::new(), v));
            gauge(
                &mut encoder,
                "ringrpc_nats_connected",
                "1 while the NATS bridge is connected, else 0.",
                one(u64::from(b.connected)),
            )?;
            counter(
                &mut encoder,
                "ringrpc_nats_forwarded",
                "Messages handed to NATS for the other nodes.",
                one(b.forwarded),
            )?;
            counter(
                &mut encoder,
                "ringrpc_nats_received",
                "Messages received from the other nodes.",
                one(b.received),
            )?;
            counter(
                &mut encoder,
                "ringrpc_nats_dropped_outbound",
                "Messages not forwarded: NATS disconnected or the bridge queue full.",
                one(b.dropped_outbound),
            )?;
            counter(
                &mut encoder,
                "ringrpc_nats_reconnects",
                "Times the connection to NATS came back.",
                one(b.reconnects),
            )?;
        }
        Ok(())
    }
}
