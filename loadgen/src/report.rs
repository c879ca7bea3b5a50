//! The result of a run: figures, pass/fail verdict, and its JSON form; the text form
//! (wrk2-style) is `text`'s.
//!
//! Invariant: a report is the same for every protocol; only its `config` says which one ran.

mod text;

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::config::{Config, UdpSettings};
use crate::cli::flags::{IoMode, Proto, Transport};
use crate::counters::Counters;
use crate::cpu::CpuSource;
use crate::pattern::Pattern;

/// Percentile steps per halving of the remaining distance, as wrk2 prints them.
const SPECTRUM_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// CPU time this process spent in the measured window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUsage {
    pub source: CpuSource,
    pub time: Duration,
}

/// Timing of the run's phases as it actually happened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Measured time (shorter than asked only if every connection failed early).
    pub measured: Duration,
    /// Time from the deadline until the last outstanding request was settled.
    pub drain: Duration,
    pub cpu: Option<CpuUsage>,
    /// The server's CPU time in the window (`--server-pid`).
    pub server_cpu: Option<Duration>,
}

/// The settings the run used.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Wire protocol.
    pub proto: Proto,
    /// Server address as given (`:PORT` expanded to 127.0.0.1).
    pub target: String,
    /// Method called in every request.
    pub method: String,
    /// What one unit of load was (`call` unless `--pattern` said otherwise).
    pub pattern: Pattern,
    /// Connections (UDP: sockets).
    pub conns: usize,
    /// Requests kept in flight per connection.
    pub per_conn: usize,
    /// I/O threads (gRPC: the tokio runtime's workers).
    pub threads: usize,
    /// Payload bytes per request.
    pub payload_bytes: usize,
    /// Measured time asked for, in seconds.
    pub duration_s: f64,
    /// Unmeasured load before it, in seconds.
    pub warmup_s: f64,
    /// Per-request timeout, in seconds.
    pub timeout_s: f64,
    /// CPUs the I/O threads were pinned to; empty when unpinned.
    pub cpus: Vec<usize>,
    /// How arpc frames travel (`tcp` for gRPC too).
    pub transport: Transport,
    /// I/O engine; `None` for gRPC, which runs on tokio, and for UDP, which runs on epoll,
    /// whatever `--io` says.
    pub io: Option<IoMode>,
    /// Retry and size settings (`retry_after` in ms); `None` unless the transport is UDP.
    pub udp: Option<UdpSettings>,
    /// Open-loop rate in requests/s; `None` for the closed loop.
    pub rate: Option<f64>,
    /// Reflected requests were accepted as answers.
    pub reflect: bool,
    /// The server process whose CPU time was measured.
    pub server_pid: Option<u32>,
    /// Processes whose CPU time was added to the server's (`--also-server-pid`).
    pub also_server_pids: Vec<u32>,
}

/// Request outcomes. Every measured request (sent) ends as exactly one of answered, errors,
/// mismatches, timeouts or lost.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Requests sent inside the measured window.
    pub sent: u64,
    /// Correct answers (their latencies form the histogram).
    pub answered: u64,
    /// Of those, answered before the deadline (used for requests/s).
    pub answered_in_window: u64,
    /// Responses with the error flag.
    pub errors: u64,
    /// Responses whose payload is not what was sent.
    pub mismatches: u64,
    /// Requests unanswered within the timeout.
    pub timeouts: u64,
    /// Requests outstanding on a connection when it failed; with UDP also those still
    /// unanswered one backoff after their last attempt.
    pub lost: u64,
    /// Frames answering nothing outstanding (unknown seq, unsolicited commands).
    pub unexpected: u64,
    /// Answers that arrived after their request had timed out.
    pub late: u64,
    /// Connections that failed (closed by the server, I/O error, undecodable frame).
    pub connection_failures: u64,
    /// UDP: resends of measured requests (same seq); 0 over TCP.
    pub retries: u64,
    /// UDP: further answers to a measured seq already answered, discarded uncounted; 0 over
    /// TCP.
    pub duplicates: u64,
}

/// `--pattern pubsub`: what the subscribers received. Per subscriber, every measured publish
/// answered OK is delivered or lost: `expected == delivered + lost` in a clean run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PubsubCounts {
    /// Subscriber connections.
    pub subscribers: usize,
    /// The topic published to and subscribed to.
    pub topic: String,
    /// Measured publishes answered OK × subscribers.
    pub expected: u64,
    /// Intact first deliveries of measured publishes, all subscribers.
    pub delivered: u64,
    /// Publishes answered OK that a subscriber never received (by the end of the drain;
    /// includes deliveries the server skipped for a subscriber that could not keep up).
    pub lost: u64,
    /// Deliveries of a publisher+seq the subscriber had already received.
    pub duplicates: u64,
    /// Deliveries whose bytes are not what was published (or not of this run).
    pub corrupt: u64,
    /// Frames to subscribers that are not deliveries.
    pub unexpected: u64,
    /// Subscriber connections that failed.
    pub connection_failures: u64,
    /// Each subscriber's counts, in connection order.
    pub per_subscriber: Vec<SubscriberCounts>,
    /// The first lost, duplicate or corrupt delivery, described.
    pub first_problem: Option<String>,
    /// The first frame to a subscriber that was not a delivery, described.
    pub first_unexpected: Option<String>,
    /// Why subscriber connections failed, one line each.
    pub connection_errors: Vec<String>,
}

/// One subscriber's share of [`PubsubCounts`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberCounts {
    /// Intact first deliveries.
    pub delivered: u64,
    /// Publishes answered OK that this subscriber never received.
    pub lost: u64,
    /// Deliveries it had already received.
    pub duplicates: u64,
    /// Deliveries whose bytes are not what was published.
    pub corrupt: u64,
}

/// What the subscribers of `--pattern pubsub` measured, once the run is over.
#[derive(Debug)]
pub(crate) struct PubsubOutcome {
    pub counts: PubsubCounts,
    /// Publish-to-delivery latencies (ns) of measured publishes, all subscribers.
    pub latencies: Histogram<u64>,
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Latencies recorded.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// HdrHistogram layout, as wrk2's footer reports it.
    pub buckets: u32,
    /// Sub-buckets per bucket.
    pub sub_buckets: u32,
}

/// One line of the detailed percentile spectrum.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumPoint {
    /// Latency at this percentile, in µs.
    pub value_us: f64,
    /// Quantile in 0..=1.
    pub percentile: f64,
    /// Latencies at or below it.
    pub total_count: u64,
}

/// Samples that explain failures.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostics {
    /// Why connections failed, one line each.
    pub connection_errors: Vec<String>,
    /// The first error Response's text.
    pub first_error: Option<String>,
    /// The first answer whose payload differed, described.
    pub first_mismatch: Option<String>,
    /// The first frame that answered nothing outstanding, described.
    pub first_unexpected: Option<String>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The settings the run used.
    pub config: RunConfig,
    /// Request outcomes.
    pub counts: Counts,
    /// sent == answered + errors + mismatches + timeouts + lost.
    pub accounting_ok: bool,
    /// Measured time as it happened, in seconds.
    pub measured_s: f64,
    /// Time after the deadline until the last outstanding request settled, in seconds.
    pub drain_s: f64,
    /// Answers within the measured window per second.
    pub requests_per_second: f64,
    /// Latency of the answered requests, in µs.
    pub latency_us: Latency,
    /// This process's CPU time per answered request, in µs.
    pub cpu_us_per_request: Option<f64>,
    /// This process's CPU time in the window, in ms.
    pub cpu_total_ms: Option<f64>,
    /// The server's CPU time per answered request (`--server-pid`).
    pub server_cpu_us_per_request: Option<f64>,
    /// The server's CPU time in the window, in ms (`--server-pid`).
    pub server_cpu_total_ms: Option<f64>,
    /// Where the CPU times were read from.
    pub cpu_source: Option<CpuSource>,
    /// The detailed percentile spectrum, as wrk2 prints it.
    pub percentile_spectrum: Vec<SpectrumPoint>,
    /// Samples that explain failures.
    pub diagnostics: Diagnostics,
    /// `--pattern pubsub`: deliveries at the subscribers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubsub: Option<PubsubCounts>,
    /// `--pattern pubsub`: publish-to-delivery latency of measured publishes, every
    /// subscriber (from the publish's send time to the delivery's receipt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_latency_us: Option<Latency>,
    /// Why the run failed; empty on success.
    pub failures: Vec<String>,
    /// Whether the run passed: every measured request answered correctly.
    pub success: bool,
}

impl Latency {
    fn of(latencies: &Histogram<u64>) -> Latency {
        let quantile = |q| micros(latencies.value_at_quantile(q));
        Latency {
            count: latencies.len(),
            min: micros(latencies.min()),
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            p99_9: quantile(0.999),
            p99_99: quantile(0.9999),
            max: micros(latencies.max()),
            mean: latencies.mean() / 1000.0,
            stdev: latencies.stdev() / 1000.0,
            buckets: u32::from(latencies.buckets()),
            sub_buckets: sub_bucket_count(latencies.sigfig()),
        }
    }
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

/// Sub-buckets per bucket for `sigfig` significant digits (HdrHistogram's layout rule).
fn sub_bucket_count(sigfig: u8) -> u32 {
    let largest_single_unit = 2 * 10u64.pow(u32::from(sigfig));
    1 << (64 - (largest_single_unit - 1).leading_zeros())
}

impl Report {
    pub(crate) fn build(
        config: &Config,
        counters: &Counters,
        latencies: &Histogram<u64>,
        window: Window,
        pubsub: Option<&PubsubOutcome>,
    ) -> Report {
        let counts = Counts {
            sent: counters.sent,
            answered: counters.answered,
            answered_in_window: counters.answered_in_window,
            errors: counters.errors,
            mismatches: counters.mismatches,
            timeouts: counters.timeouts,
            lost: counters.lost,
            unexpected: counters.unexpected,
            late: counters.late,
            connection_failures: counters.connection_failures,
            retries: counters.retries,
            duplicates: counters.duplicates,
        };
        let settled =
            counts.answered + counts.errors + counts.mismatches + counts.timeouts + counts.lost;
        let accounting_ok = counts.sent == settled;
        let measured_s = window.measured.as_secs_f64();
        let requests_per_second = if measured_s > 0.0 {
            counts.answered_in_window as f64 / measured_s
        } else {
            0.0
        };
        let latency_us = Latency::of(latencies);
        let cpu_total_ms = window.cpu.map(|cpu| cpu.time.as_secs_f64() * 1e3);
        let cpu_us_per_request = window
            .cpu
            .filter(|_| counts.answered_in_window > 0)
            .map(|cpu| cpu.time.as_secs_f64() * 1e6 / counts.answered_in_window as f64);
        let server_cpu_total_ms = window.server_cpu.map(|t| t.as_secs_f64() * 1e3);
        let server_cpu_us_per_request = window
            .server_cpu
            .filter(|_| counts.answered_in_window > 0)
            .map(|t| t.as_secs_f64() * 1e6 / counts.answered_in_window as f64);
        let diagnostics = Diagnostics {
            connection_errors: counters.connection_errors.clone(),
            first_error: counters.first_error.clone(),
            first_mismatch: counters.first_mismatch.clone(),
            first_unexpected: counters.first_unexpected.clone(),
        };
        let mut failures = failures(&counts, settled, config.timeout, &diagnostics);
        if let Some(outcome) = pubsub {
            failures.extend(pubsub_failures(&outcome.counts));
        }
        Report {
            config: RunConfig {
                proto: config.proto,
                target: config.target.clone(),
                method: config.method.clone(),
                pattern: config.pattern,
                conns: config.conns,
                per_conn: config.per_conn,
                threads: config.threads,
                payload_bytes: config.payload,
                duration_s: config.duration.as_secs_f64(),
                warmup_s: config.warmup.as_secs_f64(),
                timeout_s: config.timeout.as_secs_f64(),
                cpus: config.cpus.clone(),
                transport: config.transport,
                io: (config.proto == Proto::Arpc && config.transport != Transport::Udp)
                    .then_some(config.io),
                udp: config.udp,
                rate: config.rate,
                reflect: config.reflect,
                server_pid: config.server_pid,
                also_server_pids: config.also_server_pids.clone(),
            },
            success: failures.is_empty(),
            counts,
            accounting_ok,
            measured_s,
            drain_s: window.drain.as_secs_f64(),
            requests_per_second,
            latency_us,
            cpu_us_per_request,
            cpu_total_ms,
            server_cpu_us_per_request,
            server_cpu_total_ms,
            cpu_source: window.cpu.map(|cpu| cpu.source),
            percentile_spectrum: spectrum(latencies),
            diagnostics,
            pubsub: pubsub.map(|outcome| outcome.counts.clone()),
            delivery_latency_us: pubsub.map(|outcome| Latency::of(&outcome.latencies)),
            failures,
        }
    }

    /// 0 when every measured request was answered correctly, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.success { 0 } else { 1 }
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises: plain numbers and strings")
            + "\n"
    }
}

fn spectrum(latencies: &Histogram<u64>) -> Vec<SpectrumPoint> {
    let mut total_count = 0;
    latencies
        .iter_quantiles(SPECTRUM_TICKS_PER_HALF_DISTANCE)
        .map(|step| {
            total_count += step.count_since_last_iteration();
            SpectrumPoint {
                value_us: micros(step.value_iterated_to()),
                percentile: step.quantile_iterated_to(),
                total_count,
            }
        })
        .collect()
}

fn failures(
    counts: &Counts,
    settled: u64,
    timeout: Duration,
    diagnostics: &Diagnostics,
) -> Vec<String> {
    let first = |sample: &Option<String>| {
        sample
            .as_ref()
            .map(|s| format!(" (first: {s})"))
            .unwrap_or_default()
    };
    let mut why = Vec::new();
    if counts.errors > 0 {
        why.push(format!(
            "{} error responses{}",
            counts.errors,
            first(&diagnostics.first_error)
        ));
    }
    if counts.mismatches > 0 {
        why.push(format!(
            "{} mismatched answers{}",
            counts.mismatches,
            first(&diagnostics.first_mismatch)
        ));
    }
    if counts.timeouts > 0 {
        why.push(format!(
            "{} requests unanswered after {:?}",
            counts.timeouts, timeout
        ));
    }
    if counts.lost > 0 {
        why.push(format!(
            "{} requests lost (on failed connections, or with UDP unanswered after every attempt)",
            counts.lost
        ));
    }
    if counts.connection_failures > 0 {
        let sample = diagnostics.connection_errors.first().cloned();
        why.push(format!(
            "{} connections failed{}",
            counts.connection_failures,
            first(&sample)
        ));
    }
    if counts.unexpected > 0 {
        why.push(format!(
            "{} unexpected frames{}",
            counts.unexpected,
            first(&diagnostics.first_unexpected)
        ));
    }
    if counts.answered == 0 {
        why.push("no request was answered correctly in the measured window".into());
    }
    if counts.sent != settled {
        why.push(format!(
            "accounting broken: sent {} but answered + errors + mismatches + timeouts + lost = {settled}",
            counts.sent
        ));
    }
    why
}

/// Why the subscribers' side of a pub/sub run failed.
fn pubsub_failures(p: &PubsubCounts) -> Vec<String> {
    let first = |sample: &Option<String>| {
        sample
            .as_ref()
            .map(|s| format!(" (first: {s})"))
            .unwrap_or_default()
    };
    let mut why = Vec::new();
    if p.lost > 0 {
        why.push(format!(
            "{} deliveries lost: publishes answered OK that a subscriber never received \
             (skipped by the server for a subscriber that could not keep up, or still unsent \
             when the drain ended)",
            p.lost
        ));
    }
    if p.duplicates > 0 {
        why.push(format!(
            "{} duplicate deliveries{}",
            p.duplicates,
            first(&p.first_problem)
        ));
    }
    if p.corrupt > 0 {
        why.push(format!(
            "{} corrupt deliveries{}",
            p.corrupt,
            first(&p.first_problem)
        ));
    }
    if p.unexpected > 0 {
        why.push(format!(
            "{} unexpected frames to subscribers{}",
            p.unexpected,
            first(&p.first_unexpected)
        ));
    }
    if p.connection_failures > 0 {
        let sample = p.connection_errors.first().cloned();
        why.push(format!(
            "{} subscriber connections failed{}",
            p.connection_failures,
            first(&sample)
        ));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_buckets_match_hdrhistogram_c() {
        assert_eq!(sub_bucket_count(1), 32);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(3), 2048);
    }

    #[test]
    fn spectrum_is_cumulative_and_ends_at_one() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        for ns in 1..=10_000u64 {
            h.record(ns * 1000).unwrap();
        }
        let points = spectrum(&h);
        let last = points.last().unwrap();
        assert_eq!(last.percentile, 1.0);
        assert_eq!(last.total_count, 10_000);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].total_count <= w[1].total_count)
        );
        assert!(points.windows(2).all(|w| w[0].percentile < w[1].percentile));
    }
}
