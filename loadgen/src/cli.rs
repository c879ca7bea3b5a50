//! Command-line flags, their value parsers, and the validated [`Config`] a run uses.
//!
//! Invariant: a [`Config`] only holds flag combinations a run can honour; the ones that do not
//! apply to a protocol are refused here, never silently dropped (except `--io`, documented as
//! ignored by `--proto grpc`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringrpc_protocol::{
    DEFAULT_MAX_BODY, HEADER_LEN, MAX_METHOD_LEN, TOPIC_TRAILER_LEN, check_topic_name,
};

use crate::grpc::{GRPC_ECHO_METHOD, GRPC_MAX_PAYLOAD};
use crate::pattern::Pattern;
use crate::pubsub::{MESSAGE_HEADER_LEN, METHOD_PUBLISH};

/// Largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
pub const UDP_MAX_DATAGRAM: usize = 65_507;
/// Default `--subscribers` of `--pattern pubsub`.
pub const DEFAULT_SUBSCRIBERS: usize = 2;
/// Default `--topic` of `--pattern pubsub`.
pub const DEFAULT_TOPIC: &str = "loadgen";
/// Default `--udp-max-datagram`: an Ethernet MTU (1500) minus the IPv4 and UDP headers.
pub const UDP_DEFAULT_MAX_DATAGRAM: usize = 1472;

/// Flags of the `loadgen` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for arpc / ringrpc servers (and gRPC echo servers)",
    long_about = "Load generator for arpc / ringrpc servers (and gRPC echo servers).\n\n\
        Every connection keeps --per-conn requests in flight (or, with --rate, sends on a \
        fixed schedule); each answer is checked \
        (command, seq, error flag, echoed payload) and timed into an HdrHistogram.\n\n\
        With --proto grpc the same closed loop drives unary calls of ringrpc.echo.Echo/Echo \
        (benches/proto/echo.proto) through tonic.\n\n\
        Exit status: 0 when every measured request was answered correctly, 1 when any \
        failed (errors, mismatches, timeouts, lost), 2 for usage or connection problems."
)]
pub struct Cli {
    /// Server address, HOST:PORT (":PORT" means 127.0.0.1:PORT).
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub target: String,
    /// Number of TCP connections (with --transport udp: UDP sockets, each connected to the
    /// target).
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = parse_count::<usize>)]
    pub conns: usize,
    /// Requests kept in flight on each connection.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = parse_count::<usize>)]
    pub per_conn: usize,
    /// Measured run time after warmup: 10s, 500ms, 2m, 1h or plain seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load applied before measuring starts; its answers are not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Payload bytes per request.
    #[arg(long, value_name = "BYTES", default_value_t = 32, allow_negative_numbers = true, value_parser = parse_count::<usize>)]
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
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count::<usize>)]
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
    /// I/O engine: `uring` drives the connections through ringrpc's io_uring ring (multishot
    /// recv, one vectored send per connection per turn); `std` uses plain sockets. Ignored
    /// with --proto grpc, which runs on tokio.
    #[arg(long, value_enum, default_value = "uring")]
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
    #[arg(long, value_name = "BYTES", default_value_t = UDP_DEFAULT_MAX_DATAGRAM, allow_negative_numbers = true, value_parser = parse_count::<usize>)]
    pub udp_max_datagram: usize,
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

/// Retry and size settings of `--transport udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UdpSettings {
    /// Wait before the first resend; doubles after each.
    #[serde(serialize_with = "as_millis")]
    pub retry_after: Duration,
    /// Sends per request in all.
    pub attempts: u32,
    /// Largest datagram sent.
    pub max_datagram: usize,
}

impl UdpSettings {
    /// How long after send number `attempt` (1-based) the request is resent or given up.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_after.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(d.as_secs_f64() * 1e3)
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

/// Expands `:PORT` to `127.0.0.1:PORT` and checks that a target has a port in 0..=65535,
/// so that messages (and the hint to start the engine) name the port actually used.
fn normalize_target(target: &str) -> Result<String, String> {
    let target = match target.strip_prefix(':') {
        Some(port) if !port.contains(':') => format!("127.0.0.1:{port}"),
        _ => target.to_string(),
    };
    if target.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "--target {target} has no port; use HOST:PORT, [IPV6]:PORT or :PORT"
        ));
    }
    let port = match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port,
        _ => {
            return Err(format!(
                "--target {target:?} has no port; use HOST:PORT, [IPV6]:PORT or :PORT"
            ));
        }
    };
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        if port.parse::<u16>().is_err() {
            return Err(format!(
                "--target {target}: port {port} is out of range (0–65535)"
            ));
        }
        Ok(target)
    } else {
        Err(format!(
            "--target {target}: port {port:?} is not a number (0–65535)"
        ))
    }
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

/// A flag combination that cannot run; the binary exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Validated run settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server address as given (":PORT" already expanded to 127.0.0.1:PORT).
    pub target: String,
    /// Number of TCP connections.
    pub conns: usize,
    /// Requests kept in flight per connection.
    pub per_conn: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Payload bytes per request.
    pub payload: usize,
    /// Method name sent.
    pub method: String,
    /// What one unit of load is.
    pub pattern: Pattern,
    /// `--pattern pubsub`: subscriber connections (0 for every other pattern).
    pub subscribers: usize,
    /// `--pattern pubsub`: the topic.
    pub topic: String,
    /// `--pattern pubsub`: the `in_A` password, if any.
    pub pubsub_password: Option<String>,
    /// `--pattern pubsub`: where the subscribers connect, if not to the target.
    pub subscriber_target: Option<String>,
    /// I/O threads, 1..=conns.
    pub threads: usize,
    /// CPUs the threads are pinned to round-robin; empty means no pinning.
    pub cpus: Vec<usize>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Suppress progress lines.
    pub quiet: bool,
    /// Where to write the JSON result.
    pub json: Option<PathBuf>,
    /// I/O engine.
    pub io: IoMode,
    /// Open-loop rate over all connections; `None` for the closed loop.
    pub rate: Option<f64>,
    /// Server process whose CPU time is reported.
    pub server_pid: Option<u32>,
    /// Reflected requests count as answers.
    pub reflect: bool,
    /// Wire protocol.
    pub proto: Proto,
    /// Where to write the HdrHistogram interval log.
    pub hdr_log: Option<PathBuf>,
    /// Transport of arpc frames.
    pub transport: Transport,
    /// The upgrade path of `--transport ws`.
    pub ws_path: String,
    /// Retry and size settings; `Some` exactly with `--transport udp`.
    pub udp: Option<UdpSettings>,
}

impl Config {
    /// Checks the flags and fills in derived defaults.
    pub fn from_cli(cli: Cli) -> Result<Config, UsageError> {
        let usage = |msg: String| Err(UsageError(msg));
        if cli.conns == 0 {
            return usage("--conns must be at least 1".into());
        }
        if cli.per_conn == 0 {
            return usage("--per-conn must be at least 1".into());
        }
        if cli.duration.is_zero() {
            return usage("--duration must be longer than zero".into());
        }
        if cli.timeout.is_zero() {
            return usage("--timeout must be longer than zero".into());
        }
        if cli.proto == Proto::Grpc {
            check_grpc_flags(&cli)?;
        }
        check_pattern_flags(&cli)?;
        let method = cli
            .method
            .clone()
            .unwrap_or_else(|| cli.pattern.default_method().to_string());
        if !(1..=MAX_METHOD_LEN).contains(&method.len()) {
            return usage(format!(
                "--method must be 1 to {MAX_METHOD_LEN} bytes long, got {}",
                method.len()
            ));
        }
        // A publication's data carries a header, and its topic bytes the name and a trailer.
        let overhead = match cli.pattern {
            Pattern::Pubsub => {
                MESSAGE_HEADER_LEN
                    + cli.topic.as_deref().unwrap_or(DEFAULT_TOPIC).len()
                    + TOPIC_TRAILER_LEN
            }
            _ => 0,
        };
        if cli.payload + overhead + method.len() > DEFAULT_MAX_BODY as usize {
            return usage(format!(
                "--payload {} plus the method exceeds the frame body limit of {DEFAULT_MAX_BODY} bytes",
                cli.payload
            ));
        }
        if cli.transport == Transport::Ws {
            if cli.proto == Proto::Grpc {
                return usage(
                    "--transport ws carries arpc frames; gRPC needs TCP (drop --proto grpc)".into(),
                );
            }
            if cli.pattern == Pattern::Pubsub {
                return usage("--pattern pubsub runs over TCP; drop --transport ws".into());
            }
            if !cli.ws_path.starts_with('/') || cli.ws_path.contains([' ', '\r', '\n']) {
                return usage(format!(
                    "--ws-path {:?} must start with '/' and hold no spaces",
                    cli.ws_path
                ));
            }
        }
        let udp = match cli.transport {
            Transport::Tcp | Transport::Ws => None,
            Transport::Udp => Some(check_udp_flags(&cli, &method)?),
        };
        if let Some(rate) = cli.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return usage(format!(
                    "--rate must be a positive number of requests/s, got {rate}"
                ));
            }
        }
        if let Some(pid) = cli.server_pid {
            if crate::cpu::process_cpu_time(pid).is_none() {
                return usage(format!(
                    "--server-pid {pid}: no such process (or its /proc entry is unreadable)"
                ));
            }
        }
        let cpus = cli.cpus.map(|list| list.0).unwrap_or_default();
        if !cpus.is_empty() {
            check_cpus_available(&cpus)?;
        }
        let threads = match cli.threads {
            Some(0) => return usage("--threads must be at least 1".into()),
            Some(n) => n.min(cli.conns),
            None => {
                let cores = if cpus.is_empty() {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    cpus.len()
                };
                cores.min(cli.conns)
            }
        };
        let target = normalize_target(&cli.target).map_err(UsageError)?;
        let method = match cli.proto {
            Proto::Arpc => method,
            Proto::Grpc => GRPC_ECHO_METHOD.to_string(),
        };
        Ok(Config {
            target,
            conns: cli.conns,
            per_conn: cli.per_conn,
            duration: cli.duration,
            warmup: cli.warmup,
            payload: cli.payload,
            method,
            pattern: cli.pattern,
            subscribers: match cli.pattern {
                Pattern::Pubsub => cli.subscribers.unwrap_or(DEFAULT_SUBSCRIBERS),
                _ => 0,
            },
            topic: cli.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_string()),
            pubsub_password: cli.pubsub_password,
            subscriber_target: cli
                .subscriber_target
                .as_deref()
                .map(normalize_target)
                .transpose()
                .map_err(UsageError)?,
            threads,
            cpus,
            timeout: cli.timeout,
            quiet: cli.quiet,
            json: cli.json,
            io: cli.io,
            rate: cli.rate,
            server_pid: cli.server_pid,
            reflect: cli.reflect,
            proto: cli.proto,
            hdr_log: cli.hdr_log,
            transport: cli.transport,
            ws_path: cli.ws_path,
            udp,
        })
    }
}

/// Checks the flags of `--transport udp`: arpc only, and every request frame fits one datagram.
fn check_udp_flags(cli: &Cli, method: &str) -> Result<UdpSettings, UsageError> {
    let refuse = |msg: String| Err(UsageError(msg));
    if cli.proto == Proto::Grpc {
        return refuse(
            "--transport udp carries arpc frames only; gRPC needs TCP (drop --proto grpc)".into(),
        );
    }
    if cli.udp_attempts == 0 {
        return refuse("--udp-attempts must be at least 1 (the first send counts)".into());
    }
    if cli.udp_retry_after.is_zero() {
        return refuse("--udp-retry-after must be longer than zero".into());
    }
    if !(HEADER_LEN + 1..=UDP_MAX_DATAGRAM).contains(&cli.udp_max_datagram) {
        return refuse(format!(
            "--udp-max-datagram must be {} to {UDP_MAX_DATAGRAM} bytes, got {}",
            HEADER_LEN + 1,
            cli.udp_max_datagram
        ));
    }
    let frame = HEADER_LEN + method.len() + cli.payload;
    if frame > cli.udp_max_datagram {
        let room = cli
            .udp_max_datagram
            .saturating_sub(HEADER_LEN + method.len());
        return refuse(format!(
            "--payload {}: a request frame would be {frame} bytes (16-byte header + {}-byte method + payload), \
             more than one datagram of --udp-max-datagram {} bytes; use --payload {room} or less, \
             or raise --udp-max-datagram (at most {UDP_MAX_DATAGRAM})",
            cli.payload,
            method.len(),
            cli.udp_max_datagram
        ));
    }
    Ok(UdpSettings {
        retry_after: cli.udp_retry_after,
        attempts: cli.udp_attempts,
        max_datagram: cli.udp_max_datagram,
    })
}

/// Refuses pattern combinations a run cannot honour: every pattern but `call` speaks arpc
/// over TCP, `notify` runs the closed loop (its barrier settles a whole window), and the
/// pub/sub flags belong to `pubsub` alone.
fn check_pattern_flags(cli: &Cli) -> Result<(), UsageError> {
    let refuse = |msg: String| Err(UsageError(msg));
    let name = cli.pattern.name();
    if cli.pattern == Pattern::Pubsub {
        check_pubsub_flags(cli)?;
    } else {
        for (flag, given) in [
            ("--subscribers", cli.subscribers.is_some()),
            ("--topic", cli.topic.is_some()),
            ("--pubsub-password", cli.pubsub_password.is_some()),
        ] {
            if given {
                return refuse(format!(
                    "{flag} applies to --pattern pubsub only, not {name}"
                ));
            }
        }
    }
    if cli.pattern == Pattern::Call {
        return Ok(());
    }
    if cli.proto == Proto::Grpc {
        return refuse(format!(
            "--pattern {name} needs --proto arpc; gRPC runs unary calls only"
        ));
    }
    if cli.transport == Transport::Udp {
        return refuse(format!(
            "--pattern {name} needs --transport tcp; UDP carries calls and notifies only"
        ));
    }
    if cli.reflect {
        return refuse(format!(
            "--reflect works with --pattern call only, not {name}"
        ));
    }
    if cli.pattern == Pattern::Notify && cli.rate.is_some() {
        return refuse("--pattern notify runs the closed loop; drop --rate".into());
    }
    Ok(())
}

/// Checks `--pattern pubsub`'s own flags.
fn check_pubsub_flags(cli: &Cli) -> Result<(), UsageError> {
    let refuse = |msg: String| Err(UsageError(msg));
    if cli.method.is_some() {
        return refuse(format!(
            "--method does not apply to --pattern pubsub, which always publishes with {METHOD_PUBLISH}"
        ));
    }
    if cli.subscribers == Some(0) {
        return refuse(
            "--subscribers must be at least 1: deliveries are what --pattern pubsub checks".into(),
        );
    }
    if let Some(topic) = &cli.topic {
        if let Err(e) = check_topic_name(topic.as_bytes()) {
            return refuse(format!("--topic {topic:?}: {e}"));
        }
    }
    Ok(())
}

/// Refuses the flags `--proto grpc` cannot honour.
fn check_grpc_flags(cli: &Cli) -> Result<(), UsageError> {
    let refuse = |msg: String| Err(UsageError(msg));
    if cli.rate.is_some() {
        return refuse(
            "--rate does not apply to --proto grpc: gRPC runs the closed loop only (drop --rate)"
                .into(),
        );
    }
    if cli.reflect {
        return refuse(
            "--reflect does not apply to --proto grpc: a gRPC server cannot reflect arpc frames"
                .into(),
        );
    }
    if cli.method.is_some() {
        return refuse(format!(
            "--method does not apply to --proto grpc, which always calls {GRPC_ECHO_METHOD}"
        ));
    }
    if cli.payload > GRPC_MAX_PAYLOAD {
        return refuse(format!(
            "--payload {} exceeds {GRPC_MAX_PAYLOAD} bytes, the most whose message fits tonic's \
             default 4 MiB message limit",
            cli.payload
        ));
    }
    Ok(())
}

fn check_cpus_available(cpus: &[usize]) -> Result<(), UsageError> {
    // Without an affinity mask to check against, pinning failures are reported per thread.
    let Some(available) = core_affinity::get_core_ids() else {
        return Ok(());
    };
    let available: Vec<usize> = available.iter().map(|core| core.id).collect();
    match cpus.iter().find(|id| !available.contains(id)) {
        Some(missing) => Err(UsageError(format!(
            "--cpus: CPU {missing} is not available to this process (available: {})",
            CpuList(available)
        ))),
        None => Ok(()),
    }
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

    #[test]
    fn flags_defaults_and_derived_values() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "--target",
            ":9000",
            "--conns",
            "3",
            "--threads",
            "8",
        ])
        .unwrap();
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.target, "127.0.0.1:9000");
        assert_eq!(config.threads, 3, "threads are capped at conns");
        assert_eq!(config.per_conn, 10);
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.warmup, Duration::from_secs(2));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.payload, 32);
        assert_eq!(config.method, "/echo");
    }

    #[test]
    fn flags_rejected() {
        for args in [
            &["loadgen", "--conns", "0"][..],
            &["loadgen", "--per-conn", "0"],
            &["loadgen", "--duration", "0s"],
            &["loadgen", "--threads", "0"],
            &["loadgen", "--method", ""],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                Config::from_cli(cli).is_err(),
                "{args:?} should be rejected"
            );
        }
        assert!(Cli::try_parse_from(["loadgen", "--duration", "soon"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--cpus", "1-"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--proto", "http"]).is_err());
    }

    #[test]
    fn negative_numbers_are_named_not_taken_for_flags() {
        for flag in [
            "--payload",
            "--conns",
            "--per-conn",
            "--threads",
            "--server-pid",
        ] {
            let err = Cli::try_parse_from(["loadgen", flag, "-5"])
                .unwrap_err()
                .to_string();
            assert!(err.contains(flag), "{flag}: {err}");
            assert!(
                err.contains("must not be negative, got -5"),
                "{flag}: {err}"
            );
        }
        let cli = Cli::try_parse_from(["loadgen", "--rate", "-5"]).unwrap();
        let err = Config::from_cli(cli).unwrap_err();
        assert!(err.0.contains("--rate must be a positive number"), "{err}");
    }

    #[test]
    fn targets_need_a_port_in_range() {
        let target = |t: &str| normalize_target(t);
        assert_eq!(target(":9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(target("[::1]:9000").unwrap(), "[::1]:9000");
        assert_eq!(target("localhost:9000").unwrap(), "localhost:9000");
        assert!(target("::1").unwrap_err().contains("has no port"));
        assert!(target("localhost").unwrap_err().contains("has no port"));
        assert!(
            target(":99999")
                .unwrap_err()
                .contains("out of range (0–65535)")
        );
        assert!(target("host:http").unwrap_err().contains("not a number"));
    }

    #[test]
    fn grpc_calls_the_echo_service_and_refuses_arpc_only_flags() {
        let cli = Cli::try_parse_from(["loadgen", "--proto", "grpc", "--io", "std"]).unwrap();
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.proto, Proto::Grpc);
        assert_eq!(config.method, GRPC_ECHO_METHOD);
        let arpc = Config::from_cli(Cli::try_parse_from(["loadgen"]).unwrap()).unwrap();
        assert_eq!((arpc.proto, arpc.method.as_str()), (Proto::Arpc, "/echo"));

        let too_big = (GRPC_MAX_PAYLOAD + 1).to_string();
        for (flags, named) in [
            (&["--rate", "100"][..], "--rate"),
            (&["--reflect"], "--reflect"),
            (&["--method", "/other"], "--method"),
            (&["--payload", too_big.as_str()], "--payload"),
        ] {
            let mut args = vec!["loadgen", "--proto", "grpc"];
            args.extend_from_slice(flags);
            let error = Config::from_cli(Cli::try_parse_from(&args).unwrap()).unwrap_err();
            assert!(error.0.contains(named), "{args:?}: {error}");
        }
    }

    #[test]
    fn udp_flags_defaults_and_oversize_payload_refused() {
        let config =
            Config::from_cli(Cli::try_parse_from(["loadgen", "--transport", "udp"]).unwrap())
                .unwrap();
        assert_eq!(config.transport, Transport::Udp);
        let udp = config.udp.unwrap();
        assert_eq!(udp.retry_after, Duration::from_millis(20));
        assert_eq!((udp.attempts, udp.max_datagram), (5, 1472));
        assert_eq!(udp.backoff(1), Duration::from_millis(20));
        assert_eq!(udp.backoff(3), Duration::from_millis(80));
        let tcp = Config::from_cli(Cli::try_parse_from(["loadgen"]).unwrap()).unwrap();
        assert_eq!((tcp.transport, tcp.udp), (Transport::Tcp, None));

        // 16 + 5 ("/echo") + 1451 = 1472 fits; one byte more does not.
        let fits = ["loadgen", "--transport", "udp", "--payload", "1451"];
        assert!(Config::from_cli(Cli::try_parse_from(fits).unwrap()).is_ok());
        let over = ["loadgen", "--transport", "udp", "--payload", "1452"];
        let error = Config::from_cli(Cli::try_parse_from(over).unwrap()).unwrap_err();
        assert!(error.0.contains("--udp-max-datagram 1472"), "{error}");
        assert!(error.0.contains("--payload 1451 or less"), "{error}");
        let raised = [
            "loadgen",
            "--transport",
            "udp",
            "--payload",
            "1452",
            "--udp-max-datagram",
            "65507",
        ];
        assert!(Config::from_cli(Cli::try_parse_from(raised).unwrap()).is_ok());
        for bad in [
            &["--udp-max-datagram", "65508"][..],
            &["--udp-attempts", "0"],
            &["--udp-retry-after", "0ms"],
            &["--proto", "grpc"],
        ] {
            let mut args = vec!["loadgen", "--transport", "udp"];
            args.extend_from_slice(bad);
            assert!(
                Config::from_cli(Cli::try_parse_from(&args).unwrap()).is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn pubsub_flags_defaults_and_refusals() {
        let config =
            Config::from_cli(Cli::try_parse_from(["loadgen", "--pattern", "pubsub"]).unwrap())
                .unwrap();
        assert_eq!(config.pattern, Pattern::Pubsub);
        assert_eq!(config.method, METHOD_PUBLISH);
        assert_eq!(config.subscribers, DEFAULT_SUBSCRIBERS);
        assert_eq!(config.topic, DEFAULT_TOPIC);
        assert_eq!(config.pubsub_password, None);
        let given = [
            "loadgen",
            "--pattern",
            "pubsub",
            "--subscribers",
            "5",
            "--topic",
            "news",
            "--pubsub-password",
            "s3cret",
        ];
        let config = Config::from_cli(Cli::try_parse_from(given).unwrap()).unwrap();
        assert_eq!(config.subscribers, 5);
        assert_eq!(config.topic, "news");
        assert_eq!(config.pubsub_password.as_deref(), Some("s3cret"));
        let call = Config::from_cli(Cli::try_parse_from(["loadgen"]).unwrap()).unwrap();
        assert_eq!(call.subscribers, 0);

        let long_topic = "t".repeat(1025);
        for (flags, named) in [
            (
                &["--pattern", "pubsub", "--subscribers", "0"][..],
                "--subscribers",
            ),
            (&["--pattern", "pubsub", "--topic", ""], "--topic"),
            (&["--pattern", "pubsub", "--topic", &long_topic], "--topic"),
            (&["--pattern", "pubsub", "--method", "in_P1"], "--method"),
            (
                &["--pattern", "pubsub", "--transport", "udp"],
                "--transport tcp",
            ),
            (&["--pattern", "pubsub", "--reflect"], "--reflect"),
            (
                &["--subscribers", "3"],
                "--subscribers applies to --pattern pubsub",
            ),
            (&["--pattern", "stream", "--topic", "x"], "--topic applies"),
            (&["--pubsub-password", "x"], "--pubsub-password applies"),
        ] {
            let mut args = vec!["loadgen"];
            args.extend_from_slice(flags);
            let error = Config::from_cli(Cli::try_parse_from(&args).unwrap()).unwrap_err();
            assert!(error.0.contains(named), "{args:?}: {error}");
        }
    }
}
