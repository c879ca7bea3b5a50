//! Idle memory: a server's resident memory per idle connection, from `/proc/PID/status`.
//!
//! The runner opens N connections, has each make one small call (so per-connection state a
//! server allocates lazily, on the first request, is counted), leaves them idle, waits for
//! the server's RSS to settle and divides the growth by N. Kernel socket memory is not in a
//! process's RSS and is the same for every server, so it is not counted.

use std::fmt::Write as _;

use serde::Serialize;

use super::markdown::{format_rate, table_cell};

/// What one connection does before it goes idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prelude {
    /// One arpc `/echo` request with a 32 B payload, and its answer read (a reflecting
    /// server's answer is the request itself).
    ArpcEcho,
    /// The HTTP/2 connection preface and SETTINGS exchange, as a gRPC channel's first step;
    /// no call.
    Http2Handshake,
}

/// One server's idle memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleRss {
    pub server: String,
    /// Connections opened and left idle.
    pub connections: usize,
    pub prelude: Prelude,
    /// Measured, or why not.
    #[serde(flatten)]
    pub outcome: IdleOutcome,
}

/// The figures of one idle measurement, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum IdleOutcome {
    Measured(IdleFigures),
    Failed { failure: String },
}

/// RSS before and after the connections, and what each cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdleFigures {
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    /// (after − before) ÷ connections; negative growth reads 0.
    pub bytes_per_connection: f64,
    /// Descriptors the server gained, a check that it holds every connection open.
    pub server_fds_gained: Option<i64>,
}

impl IdleFigures {
    pub fn new(
        before: u64,
        after: u64,
        connections: usize,
        fds_gained: Option<i64>,
    ) -> IdleFigures {
        IdleFigures {
            rss_before_bytes: before,
            rss_after_bytes: after,
            bytes_per_connection: after.saturating_sub(before) as f64 / connections.max(1) as f64,
            server_fds_gained: fds_gained,
        }
    }
}

/// `VmRSS` in bytes from `/proc/PID/status` text.
pub fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// Whether a run of RSS readings has settled: the last `window` agree within `tolerance`
/// bytes.
pub fn settled(readings: &[u64], window: usize, tolerance: u64) -> bool {
    if window == 0 || readings.len() < window {
        return false;
    }
    let last = &readings[readings.len() - window..];
    let (min, max) = last
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    max - min <= tolerance
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// The markdown table of idle memory.
pub fn render_idle_table(rows: &[IdleRss]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut out = format!(
        "### Idle memory: RSS per idle connection at {} connections\n\n\
         Servers run with transparent huge pages off (`PR_SET_THP_DISABLE`), so RSS grows \
         in 4 KiB pages.\n\n",
        format_rate(first.connections as f64)
    );
    out.push_str("| server | RSS before MiB | RSS with connections MiB | bytes per idle connection | server fds gained | before idling |\n");
    out.push_str("|---|---:|---:|---:|---:|---|\n");
    for row in rows {
        let prelude = match row.prelude {
            Prelude::ArpcEcho => "one 32 B echo",
            Prelude::Http2Handshake => "HTTP/2 preface + SETTINGS",
        };
        let line = match &row.outcome {
            IdleOutcome::Measured(f) => format!(
                "| {} | {} | {} | {} | {} | {prelude} |",
                row.server,
                mib(f.rss_before_bytes),
                mib(f.rss_after_bytes),
                format_rate(f.bytes_per_connection),
                f.server_fds_gained
                    .map_or_else(|| "–".to_owned(), |n| n.to_string()),
            ),
            IdleOutcome::Failed { failure } => format!(
                "| {} | failed: {} | – | – | – | {prelude} |",
                row.server,
                table_cell(failure)
            ),
        };
        writeln!(out, "{line}").expect("writing to a String cannot fail");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_comes_from_the_vmrss_line() {
        let status = "Name:\tengine\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(vm_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn settling_needs_a_full_quiet_window() {
        assert!(!settled(&[1, 1], 3, 0));
        assert!(settled(&[1, 50, 100, 101, 100], 3, 1));
        assert!(!settled(&[100, 101, 200], 3, 10));
    }

    #[test]
    fn per_connection_cost_is_the_growth_shared_out() {
        let f = IdleFigures::new(10 << 20, 20 << 20, 10_240, Some(10_240));
        assert_eq!(f.bytes_per_connection, 1024.0);
        // A server that shrank costs nothing per connection, not a negative amount.
        assert_eq!(IdleFigures::new(5, 3, 10, None).bytes_per_connection, 0.0);
        let row = IdleRss {
            server: "engine".into(),
            connections: 10_240,
            prelude: Prelude::ArpcEcho,
            outcome: IdleOutcome::Measured(f),
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["bytes_per_connection"], 1024.0);
        assert_eq!(json["prelude"], "arpc_echo");
        let table = render_idle_table(&[row]);
        assert!(
            table.contains("| engine | 10.0 | 20.0 | 1,024 | 10240 | one 32 B echo |"),
            "{table}"
        );
    }
}
