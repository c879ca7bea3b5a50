//! The `loadgen` command line as clap parses it ([`Cli`]), the value types of its flags, and
//! the parsers of durations, counts and CPU lists that give a clear message for bad values.
//!
//! Invariant: parsing checks each value on its own; whether values fit together is
//! [`Config::from_cli`](crate::cli::Config::from_cli)'s to check.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::pattern::Pattern;

/// Default `--udp-max-datagram`: an Ethernet MTU (1500) minus the IPv4 and UDP headers.
pub const UDP_DEFAULT_MAX_DATAGRAM: usize = 1472;

/// Flags of the `loadgen` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    after_help = "BYTES values are a whole number of bytes with an optional unit: B, k/KiB, M/MiB, \
        G/GiB (binary: 1k = 1024), e.g. --payload 4KiB.",
    about = "Load generator for arpc / ringrpc servers (and gRPC echo servers)",
    long_about = "Load generator for arpc / ringrpc servers (and gRPC echo servers).\n\n\
        Every connection keeps --per-conn requests in flight (or, with --rate, sends on a \
        fixed schedule); each answer is checked \
        (command, seq, error flag, echoed payload) and timed into an HdrHistogram.\n\n\
        With --proto grpc the same closed loop drives unary calls of ringrpc.echo.Echo/Echo \
        (loadgen/proto/echo.proto) through tonic.\n\n\
        Exit status: 0 when every measured request was answered correctly, 1 when any \
        failed (errors, mismatches, timeouts, lost), 2 for usage or connection problems."
)]
pub struct Cli {
    /// Server address, HOST:PORT (":PORT" means 127.0.0.1:PORT), or a Unix domain socket:
    /// unix:/path or unix:@abstract-name (arpc over --transport tcp only).
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub target: String,
    /// Number of TCP connections (with --transport udp: UDP sockets, each connected to the
    /// target).
    #[arg(long, value_name = "N", default_value_t = 8, allow_negative_numbers = true, value_parser = parse_positive::<usize>)]
    pub conns: usize,
    /// Requests kept in flight on each connection.
    #[arg(long, value_name = "N", default_value_t = 10, allow_negative_numbers = true, value_parser = parse_positive::<usize>)]
    pub per_conn: usize,
    /// Measured run time after warmup: 10s, 500ms, 2m, 1h or plain seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load applied before measuring starts; its answers are not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Payload bytes per request.
    #[arg(long, value_name = "BYTES", default_value_t = 32, allow_negative_numbers = true, value_parser = parse_size_as::<usize>)]
    pub payload: usize,
    /// Method name sent in every request (the server must echo the payload). arpc only:
    /// --proto grpc always calls /ringrpc.echo.Echo/Echo.
    #[arg(long)]
    pub method: Option<String>,
    /// What one unit of load is: `call` (Request → Response), `notify` (notifies, each
    /// batch confirmed by a barrier Request), `stream` (frames echoed on --per-conn
    /// long-lived streams per connection), `subscribe` (request → reply → end on a stream
    /// of its own), `pubsub` (Go arpc pub/sub: --conns publisher connections each keep
    /// --per-conn `in_P` publishes to --topic in flight, and --subscribers connections check
    /// and time every delivery). The default --method is /echo for call and notify,
    /// /echo/stream for stream and subscribe; pubsub always publishes with in_P.
    #[arg(long, value_enum, default_value = "call")]
    pub pattern: Pattern,
    /// --pattern pubsub: connections that only subscribe to --topic and receive every
    /// publication [default: 2].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<usize>)]
    pub subscribers: Option<usize>,
    /// --pattern pubsub: the topic published to and subscribed to (1 to 1024 bytes)
    /// [default: loadgen].
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// --pattern pubsub: authenticate every connection with `in_A` and this password first
    /// (for `engine --pubsub-password-file`).
    #[arg(long, value_name = "PASS")]
    pub pubsub_password: Option<String>,
    /// --pattern pubsub: connect the subscribers to this address instead of --target (another
    /// node of a cluster bridged through NATS, to time cross-node delivery).
    #[arg(long, value_name = "ADDR")]
    pub subscriber_target: Option<String>,
    /// I/O threads [default: min(conns, available CPUs or the --cpus count)]; at most conns.
    /// With --proto grpc: the tokio runtime's worker threads.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<usize>)]
    pub threads: Option<usize>,
    /// Pin I/O threads (with --proto grpc: tokio's threads) round-robin to these CPUs, e.g.
    /// `1` or `0,2-3`.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Also write the results as a JSON object to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A request unanswered for this long counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// I/O engine (also `--driver`): `uring` drives the connections through ringrpc's
    /// io_uring ring (multishot recv, one vectored send per connection per turn); `epoll`:
    /// non-blocking sockets on an epoll loop, one vectored write per connection per
    /// readiness (a second, differently shaped client; TCP arpc only); `std` uses plain
    /// sockets. Ignored with --proto grpc, which runs on tokio.
    #[arg(long, visible_alias = "driver", value_enum, default_value = "uring")]
    pub io: IoMode,
    /// Open loop: send R requests/s over all connections on a fixed schedule, with latency
    /// measured from each request's intended send time (coordinated-omission corrected);
    /// --per-conn then caps the requests in flight per connection.
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// PID of the server under test: report its CPU time per request over the measured
    /// window beside the loadgen's own.
    #[arg(long, value_name = "PID", allow_negative_numbers = true, value_parser = parse_count::<u32>)]
    pub server_pid: Option<u32>,
    /// Another process serving the same load beside --server-pid (a TLS proxy in front of
    /// it): its CPU time is added to the server's. May be given more than once.
    #[arg(long, value_name = "PID", requires = "server_pid", allow_negative_numbers = true, value_parser = parse_count::<u32>)]
    pub also_server_pid: Vec<u32>,
    /// Accept our own request frames reflected back unchanged as answers (for a server that
    /// writes back what it receives, such as `engine --reflect`).
    #[arg(long)]
    pub reflect: bool,
    /// Wire protocol: `arpc` frames, or `grpc`: unary calls of ringrpc.echo.Echo/Echo over
    /// --conns HTTP/2 connections with --per-conn concurrent calls each, on a tokio runtime
    /// with --threads workers (closed loop only: no --rate, no --reflect; --io is ignored).
    #[arg(long, value_enum, default_value = "arpc")]
    pub proto: Proto,
    /// Also write the measured latencies as an HdrHistogram interval log (V2 compressed
    /// histograms, one per second of the measured window, values in nanoseconds), as
    /// HdrHistogram's HistogramLogProcessor reads it.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Transport for arpc frames: `tcp` streams, `ws`: a WebSocket per connection (an HTTP
    /// upgrade to --ws-path, then one frame per masked binary message), or `udp`: one frame
    /// per datagram, each of --conns sockets connected to the target and driven by an epoll
    /// loop per I/O thread (--io is then ignored); unanswered requests are resent with the
    /// same seq.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// WebSocket: the path the upgrade asks for.
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    pub ws_path: String,
    /// UDP: resend a request unanswered this long after its last send, doubling the wait
    /// after each resend.
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = parse_duration)]
    pub udp_retry_after: Duration,
    /// UDP: sends per request in all (the first included); a request still unanswered one
    /// backoff after the last one counts as lost.
    #[arg(long, value_name = "N", default_value_t = 5, allow_negative_numbers = true, value_parser = parse_count::<u32>)]
    pub udp_attempts: u32,
    /// UDP: largest datagram (one whole frame: 16-byte header, method, payload) loadgen may
    /// send; 1472 fits one Ethernet MTU, 65507 is the most UDP carries.
    #[arg(long, value_name = "BYTES", default_value_t = UDP_DEFAULT_MAX_DATAGRAM, allow_negative_numbers = true, value_parser = parse_size_as::<usize>)]
    pub udp_max_datagram: usize,
    /// Speak TLS (ALPN arpc) on every arpc connection (--transport tcp); the handshake runs
    /// before the connection's first request. Needs --tls-ca or --tls-insecure.
    #[arg(long)]
    pub tls: bool,
    /// --tls: trust the CA certificates of this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// --tls: accept any server certificate (self-signed test certificates); handshake
    /// signatures are still checked.
    #[arg(long)]
    pub tls_insecure: bool,
    /// --tls: the name the server's certificate must carry, also sent as SNI [default: the
    /// target's host, or localhost for an IP address or a Unix socket].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Close each connection after N answered calls and open a new one in its place (with
    /// its TLS handshake under --tls), to measure connection set-up; the window drains
    /// before each reconnect, and the new connection (and handshake) is made on the I/O
    /// thread, blocking it meanwhile. --pattern call over --transport tcp only.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_positive::<u64>)]
    pub reconnect_every: Option<u64>,
}

/// How arpc frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A byte stream per connection.
    Tcp,
    /// One datagram per frame, with retries.
    Udp,
    /// A WebSocket per connection (HTTP upgrade to `--ws-path`), one frame per binary
    /// message.
    Ws,
}

/// The wire protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// Go arpc frames, driven by the I/O engine chosen with `--io`.
    Arpc,
    /// gRPC unary calls through tonic.
    Grpc,
}

/// How connections are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoMode {
    /// ringrpc's io_uring ring.
    Uring,
    /// Plain sockets.
    Std,
    /// Non-blocking sockets on an epoll loop (mio), no io_uring.
    Epoll,
}

/// CPU ids parsed from `--cpus` (a newtype so clap takes the flag as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&ids.join(","))
    }
}

/// Parses a whole number of 0 or more, saying so when given `-5` or `ten` (clap alone would
/// take `-5` for an unknown flag).
pub fn parse_count<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| {
        if text.trim_start().starts_with('-') {
            format!("must not be negative, got {text}")
        } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            format!("{text} is too large")
        } else {
            format!("must be a whole number, got {text:?}")
        }
    })
}

/// Parses a whole number of 1 or more, worded like [`parse_count`] (`0` is "must be at least 1").
pub fn parse_positive<T: std::str::FromStr + PartialEq + From<u8>>(
    text: &str,
) -> Result<T, String> {
    let n = parse_count::<T>(text)?;
    if n == T::from(0) {
        return Err(format!("must be at least 1, got {text}"));
    }
    Ok(n)
}

/// Parses a byte size (`4096`, `4KiB`, `1M`; see [`ringrpc_protocol::units`]).
pub fn parse_size_as<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    ringrpc_protocol::units::parse_size_as(text).map_err(|e| e.to_string())
}

/// Parses `10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || {
        format!(
            "invalid duration `{text}`: expected a number with an optional unit (us, ms, s, m, h), e.g. 10s or 500ms"
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(invalid());
    }
    let nanos_per_unit: u64 = match unit {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" | "µs" => 1_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        _ => return Err(invalid()),
    };
    // Whole numbers stay exact; fractions go through f64.
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(nanos_per_unit)
            .map(Duration::from_nanos)
            .ok_or_else(|| format!("duration `{text}` is too long"));
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    Duration::try_from_secs_f64(value * nanos_per_unit as f64 / 1e9)
        .map_err(|_| format!("duration `{text}` is too long"))
}

/// Parses a CPU list such as `1`, `0,2-3`: comma-separated ids and inclusive ranges.
pub fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim) {
        let parse_id = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                format!("invalid CPU list `{text}`: `{part}` is not a CPU id or a range like 2-3")
            })
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (parse_id(a)?, parse_id(b)?),
            None => {
                let id = parse_id(part)?;
                (id, id)
            }
        };
        if first > last {
            return Err(format!(
                "invalid CPU list `{text}`: range `{part}` runs backwards"
            ));
        }
        for id in first..=last {
            if ids.contains(&id) {
                return Err(format!(
                    "invalid CPU list `{text}`: CPU {id} is listed twice"
                ));
            }
            ids.push(id);
        }
    }
    Ok(CpuList(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 7 "), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_rejected() {
        for bad in ["", "s", "ms", "10x", "-1s", "1.2.3s", "10 s", "ten"] {
            assert!(parse_duration(bad).is_err(), "`{bad}` should be rejected");
        }
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpu_list("0,2-3"), Ok(CpuList(vec![0, 2, 3])));
        assert_eq!(parse_cpu_list("4-4, 1"), Ok(CpuList(vec![4, 1])));
        assert_eq!(CpuList(vec![0, 2, 3]).to_string(), "0,2,3");
    }

    #[test]
    fn cpu_lists_rejected() {
        for bad in ["", "a", "1,", "3-1", "1-", "0,0", "0-2,1", "-1"] {
            assert!(parse_cpu_list(bad).is_err(), "`{bad}` should be rejected");
        }
    }
}
