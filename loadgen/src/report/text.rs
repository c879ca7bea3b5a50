//! The report's text form, printed on stdout: a summary of the run (load, counts, accounting,
//! throughput, latency, pub/sub deliveries, CPU, diagnostics, verdict) and wrk2's detailed
//! percentile spectrum.

use std::fmt::Write as _;

use crate::cli::flags::{CpuList, IoMode, Proto, Transport};
use crate::pattern::Pattern;
use crate::report::Report;

impl Report {
    /// The human-readable form printed on stdout.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        self.write_summary(&mut out)
            .expect("writing to a String cannot fail");
        out.push('\n');
        self.write_spectrum(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        let c = &self.config;
        let n = &self.counts;
        let l = &self.latency_us;
        let pattern = match c.pattern {
            Pattern::Call => String::new(),
            other => format!("  pattern {}", other.name()),
        };
        writeln!(
            out,
            "target      {}  method {}{pattern}",
            c.target, c.method
        )?;
        let pinning = if c.cpus.is_empty() {
            String::new()
        } else {
            format!(" pinned to CPUs {}", CpuList(c.cpus.clone()))
        };
        let (proto, conns, threads) = match (c.proto, c.transport, c.io) {
            (Proto::Grpc, _, _) => ("grpc", "conns", "tokio worker thread"),
            (Proto::Arpc, Transport::Udp, _) => ("arpc over UDP", "sockets", "epoll I/O thread"),
            (Proto::Arpc, Transport::Ws, Some(IoMode::Uring)) => {
                ("arpc over WebSocket", "conns", "io_uring I/O thread")
            }
            (Proto::Arpc, Transport::Ws, _) => {
                ("arpc over WebSocket", "conns", "std sockets I/O thread")
            }
            (Proto::Arpc, _, Some(IoMode::Uring)) => ("arpc", "conns", "io_uring I/O thread"),
            (Proto::Arpc, _, Some(IoMode::Epoll)) => ("arpc", "conns", "epoll I/O thread"),
            (Proto::Arpc, _, _) => ("arpc", "conns", "std sockets I/O thread"),
        };
        writeln!(
            out,
            "load        {proto}: {} {conns} × {} in flight, payload {} B, {} {threads}{}{pinning}",
            c.conns,
            c.per_conn,
            c.payload_bytes,
            c.threads,
            if c.threads == 1 { "" } else { "s" }
        )?;
        if let Some(rate) = c.rate {
            writeln!(
                out,
                "open loop   {rate:.0} requests/s scheduled; latency measured from intended send times"
            )?;
        }
        writeln!(
            out,
            "duration    {:.3} s measured after {:.3} s warmup (drain {:.3} s, timeout {:.3} s)",
            self.measured_s, c.warmup_s, self.drain_s, c.timeout_s
        )?;
        writeln!(
            out,
            "requests    sent {}  answered {}  errors {}  mismatches {}  timeouts {}  lost {}",
            n.sent, n.answered, n.errors, n.mismatches, n.timeouts, n.lost
        )?;
        writeln!(
            out,
            "other       unexpected frames {}  late answers {}  connection failures {}",
            n.unexpected, n.late, n.connection_failures
        )?;
        if let Some(udp) = &c.udp {
            writeln!(
                out,
                "udp         retries {}  duplicates {}  lost {}  (resend after {:?}, doubling, {} attempts; datagrams ≤ {} B)",
                n.retries, n.duplicates, n.lost, udp.retry_after, udp.attempts, udp.max_datagram
            )?;
        }
        let settled = n.answered + n.errors + n.mismatches + n.timeouts + n.lost;
        writeln!(
            out,
            "accounting  sent {} {} answered + errors + mismatches + timeouts + lost {} ({})",
            n.sent,
            if self.accounting_ok { "==" } else { "!=" },
            settled,
            if self.accounting_ok { "ok" } else { "MISMATCH" }
        )?;
        writeln!(
            out,
            "throughput  {:.1} requests/s",
            self.requests_per_second
        )?;
        writeln!(
            out,
            "latency µs  min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}",
            l.min, l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
        )?;
        if let (Some(p), Some(d)) = (&self.pubsub, &self.delivery_latency_us) {
            writeln!(
                out,
                "pubsub      topic {:?}, {} subscribers: expected {}  delivered {}  lost {}  duplicates {}  corrupt {}",
                p.topic, p.subscribers, p.expected, p.delivered, p.lost, p.duplicates, p.corrupt
            )?;
            for (i, sub) in p.per_subscriber.iter().enumerate() {
                writeln!(
                    out,
                    "subscriber  {i}: delivered {}  lost {}  duplicates {}  corrupt {}",
                    sub.delivered, sub.lost, sub.duplicates, sub.corrupt
                )?;
            }
            writeln!(
                out,
                "delivery µs min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  (publish sent → delivered)",
                d.min, d.p50, d.p90, d.p99, d.p99_9, d.p99_99, d.max
            )?;
        }
        match (self.cpu_us_per_request, self.cpu_total_ms, self.cpu_source) {
            (Some(per_request), Some(total), Some(source)) => writeln!(
                out,
                "cpu         {per_request:.3} µs per answered request ({total:.1} ms user+system in the window, {})",
                source.describe()
            )?,
            _ => writeln!(
                out,
                "cpu         unavailable (no answers in the window or /proc unreadable)"
            )?,
        }
        if let (Some(per_request), Some(total), Some(pid)) = (
            self.server_cpu_us_per_request,
            self.server_cpu_total_ms,
            self.config.server_pid,
        ) {
            let also: String = self
                .config
                .also_server_pids
                .iter()
                .map(|pid| format!(" + {pid}"))
                .collect();
            writeln!(
                out,
                "server cpu  {per_request:.3} µs per answered request ({total:.1} ms user+system in the window, pid {pid}{also})"
            )?;
        }
        let d = &self.diagnostics;
        for (label, sample) in [
            ("first error", &d.first_error),
            ("first mismatch", &d.first_mismatch),
            ("first unexpected", &d.first_unexpected),
        ] {
            if let Some(text) = sample {
                writeln!(out, "{label}: {text}")?;
            }
        }
        for reason in &d.connection_errors {
            writeln!(out, "connection failure: {reason}")?;
        }
        if self.success {
            writeln!(out, "result      ok")
        } else {
            writeln!(out, "result      FAILED: {}", self.failures.join("; "))
        }
    }

    /// wrk2's `--latency` spectrum (HdrHistogram_c's classic format), with values in
    /// microseconds like the summary line (wrk2 prints milliseconds).
    fn write_spectrum(&self, out: &mut String) -> std::fmt::Result {
        let l = &self.latency_us;
        writeln!(out, "  Detailed Percentile spectrum: values in µs")?;
        writeln!(
            out,
            "{:>12} {:>12} {:>12} {:>12}\n",
            "Value(µs)", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        for point in &self.percentile_spectrum {
            writeln!(
                out,
                "{:12.3} {:12.6} {:12} {:12.2}",
                point.value_us,
                point.percentile,
                point.total_count,
                1.0 / (1.0 - point.percentile)
            )?;
        }
        writeln!(
            out,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
            l.mean, l.stdev
        )?;
        writeln!(
            out,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            l.max, l.count
        )?;
        writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            l.buckets, l.sub_buckets
        )
    }
}
