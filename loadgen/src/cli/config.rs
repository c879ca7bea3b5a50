//! The validated [`Config`] a run uses, built from the parsed flags by [`Config::from_cli`].
//!
//! Invariant: a [`Config`] only holds flag combinations a run can honour; the ones that do not
//! apply to a protocol are refused here, never silently dropped (except `--io`, documented as
//! ignored by `--proto grpc`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ringrpc_protocol::{
    DEFAULT_MAX_BODY, HEADER_LEN, MAX_METHOD_LEN, TOPIC_TRAILER_LEN, check_topic_name,
};

use crate::cli::flags::{Cli, CpuList, IoMode, Proto, Transport};
use crate::grpc_echo::{GRPC_ECHO_METHOD, GRPC_MAX_PAYLOAD};
use crate::pattern::Pattern;
use crate::pubsub::publication::{MESSAGE_HEADER_LEN, METHOD_PUBLISH};
use crate::tls::TlsSettings;

/// Largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
pub const UDP_MAX_DATAGRAM: usize = 65_507;
/// Default `--subscribers` of `--pattern pubsub`.
pub const DEFAULT_SUBSCRIBERS: usize = 2;
/// Default `--topic` of `--pattern pubsub`.
pub const DEFAULT_TOPIC: &str = "loadgen";

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

/// Expands `:PORT` to `127.0.0.1:PORT` and checks that a target has a port in 0..=65535,
/// so that messages (and the hint to start the engine) name the port actually used.
fn normalize_target(target: &str) -> Result<String, String> {
    if let Some(path) = target.strip_prefix("unix:") {
        if path.is_empty() || path == "@" {
            return Err(format!(
                "--target {target:?} names no socket; use unix:/path or unix:@name"
            ));
        }
        return Ok(target.to_string());
    }
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
    /// `--also-server-pid`: more processes whose CPU time counts as the server's.
    pub also_server_pids: Vec<u32>,
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
    /// `--tls`: how every arpc connection speaks TLS.
    pub tls: Option<TlsSettings>,
    /// A new connection after this many answered calls.
    pub reconnect_every: Option<u64>,
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
        if cli.io == IoMode::Epoll && (cli.proto != Proto::Arpc || cli.transport != Transport::Tcp)
        {
            return usage(format!(
                "--io epoll drives arpc over TCP only, not --proto {} --transport {}: drop --io epoll (or use --io uring)",
                flag_value(cli.proto),
                flag_value(cli.transport)
            ));
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
        for pid in cli.server_pid.iter().chain(&cli.also_server_pid) {
            if crate::cpu::process_cpu_time(*pid).is_none() {
                return usage(format!(
                    "--server-pid {pid}: no such process (or its /proc entry is unreadable)"
                ));
            }
        }
        let target = normalize_target(&cli.target).map_err(UsageError)?;
        let tls = check_stream_flags(&cli, &target)?;
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
            also_server_pids: cli.also_server_pid,
            reflect: cli.reflect,
            proto: cli.proto,
            hdr_log: cli.hdr_log,
            transport: cli.transport,
            ws_path: cli.ws_path,
            udp,
            tls,
            reconnect_every: cli.reconnect_every,
        })
    }
}

/// `--tls*`, a `unix:` target and `--reconnect-every` apply to arpc calls over byte
/// streams; returns the TLS settings when `--tls` is on.
fn check_stream_flags(cli: &Cli, target: &str) -> Result<Option<TlsSettings>, UsageError> {
    let refuse = |msg: String| Err(UsageError(msg));
    let unix = target.starts_with("unix:");
    let plain_tcp = cli.proto == Proto::Arpc && cli.transport == Transport::Tcp;
    for (what, given) in [
        ("--tls", cli.tls),
        ("a unix: --target", unix),
        ("--reconnect-every", cli.reconnect_every.is_some()),
    ] {
        if given && !plain_tcp {
            return refuse(format!(
                "{what} applies to arpc over --transport tcp (drop --proto grpc, --transport ws/udp)"
            ));
        }
    }
    if unix && (cli.pattern == Pattern::Pubsub || cli.subscriber_target.is_some()) {
        return refuse("--pattern pubsub needs a TCP --target".into());
    }
    if cli.reconnect_every.is_some() && cli.pattern != Pattern::Call {
        return refuse("--reconnect-every applies to --pattern call only".into());
    }
    if !cli.tls {
        for (flag, given) in [
            ("--tls-ca", cli.tls_ca.is_some()),
            ("--tls-insecure", cli.tls_insecure),
            ("--tls-server-name", cli.tls_server_name.is_some()),
        ] {
            if given {
                return refuse(format!("{flag} needs --tls"));
            }
        }
        return Ok(None);
    }
    if cli.tls_insecure && cli.tls_ca.is_some() {
        return refuse("--tls-insecure trusts any certificate; drop --tls-ca or it".into());
    }
    let name = match &cli.tls_server_name {
        Some(name) => name.clone(),
        None => default_server_name(target),
    };
    TlsSettings::new(cli.tls_ca.as_deref(), cli.tls_insecure, &name)
        .map(Some)
        .map_err(UsageError)
}

/// The target's host name; `localhost` for an IP address or a Unix socket (what a test
/// certificate carries).
fn default_server_name(target: &str) -> String {
    let host = match target.rsplit_once(':') {
        Some((host, _)) if !target.starts_with("unix:") => host.trim_matches(['[', ']']),
        _ => return "localhost".into(),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        "localhost".into()
    } else {
        host.to_string()
    }
}

/// How a flag's value is written on the command line.
fn flag_value(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
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
mod tests;
