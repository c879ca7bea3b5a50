//! The `engine` binary: serves `/echo`, `/echo/async` and the stream `/echo/stream` (and
//! ping) on every core until SIGINT or SIGTERM.
//!
//! Each flag is named as the [`ringrpc::ConfigBuilder`] method it sets (`--max-body` sets
//! `max_body`); older spellings stay as aliases. Library errors name settings, never flags:
//! this binary adds the flag to each message.

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use ringrpc::{Config, ConfigError, Knob, PubSub, Server, ShutdownSignals, StartError};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core io_uring RPC server speaking the arpc wire format.
///
/// Every flag sets the ringrpc::ConfigBuilder method of the same name (dashes for
/// underscores); a seconds value of 0 turns a timeout off where that is allowed.
#[derive(Parser, Debug)]
#[command(name = "engine", version, about, after_help = SIZES_HELP)]
struct Args {
    /// Reactor threads, each pinned to its own CPU; one io_uring and one receive buffer ring
    /// each [default: all CPUs]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive)]
    cores: Option<usize>,
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8888",
        help = "Listen address: :PORT (all interfaces), HOST:PORT, [IPV6]:PORT, unix:/PATH (a Unix socket file) or unix:@NAME (abstract); repeat to listen on several"
    )]
    listen: Vec<String>,
    /// Submission queue entries per core, a power of two in 8..=32768 (128 B each per core)
    #[arg(long, value_name = "N", default_value_t = 4096, allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    ring_entries: u32,
    /// Receive buffers per core, a power of two in 1..=32768 (each costs --recv-buffer-size)
    #[arg(long, visible_alias = "buffers", value_name = "N", default_value_t = 512, allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    recv_buffers: u32,
    /// Size of each receive buffer in bytes, 256..=1048576
    #[arg(long, visible_alias = "buffer-size", value_name = "BYTES", default_value = "16KiB", allow_negative_numbers = true, value_parser = size::<usize>)]
    recv_buffer_size: usize,
    /// Let the kernel consume receive buffers incrementally (kernel >= 6.12): small reads
    /// share a buffer; no memory of its own (see --recv-buffers); ignored with --udp-listen
    #[arg(long)]
    incremental_recv_buffers: bool,
    /// Largest frame body (method + payload) a peer may send, in bytes; a connection holds at
    /// most this much for one partial frame, as its bytes arrive (room for at most twice
    /// the bytes received, at least 16 KiB)
    #[arg(long, value_name = "BYTES", default_value_t = ringrpc_protocol::DEFAULT_MAX_BODY, allow_negative_numbers = true, value_parser = size::<u32>)]
    max_body: u32,
    /// Open connections over all cores before new ones are refused (about 870 B each idle)
    #[arg(long, value_name = "N", default_value_t = 100_000, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    max_connections: usize,
    /// Most unsent output per connection before the engine stops reading from it, in bytes:
    /// the most memory a peer that never reads can cost
    #[arg(long, visible_alias = "max-send-queue", value_name = "BYTES", default_value = "4MiB", allow_negative_numbers = true, value_parser = size::<usize>)]
    max_send_queue_bytes: usize,
    /// The same limit counted in frames
    #[arg(long, value_name = "N", default_value_t = 65_536, allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    max_send_queue_frames: u64,
    /// Close connections that sent nothing for SECS seconds (0 = never)
    #[arg(long, value_name = "SECS", default_value = "3600", allow_negative_numbers = true, value_parser = seconds)]
    idle_timeout: Duration,
    /// Close connections that leave a frame unfinished for SECS seconds (0 = never)
    #[arg(long, value_name = "SECS", default_value = "30", allow_negative_numbers = true, value_parser = seconds)]
    read_timeout: Duration,
    /// Ping connections that sent nothing for SECS seconds [default: never]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = seconds)]
    keepalive: Option<Duration>,
    /// Require clients to authenticate first with the secret in FILE (its trailing newline
    /// is ignored); a secret on the command line would show in `ps`
    #[arg(long, value_name = "FILE")]
    auth_secret_file: Option<PathBuf>,
    /// Most requests per connection whose answers are deferred, and notifies waiting for a
    /// blocking handler, at once; each holds its request until answered (blocking jobs: at
    /// most 256 MiB for all connections together)
    #[arg(long, visible_alias = "max-in-flight", value_name = "N", default_value_t = 4096, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    max_in_flight_per_conn: usize,
    /// Most streams open at once per connection; a peer opening more gets an error end
    #[arg(long, value_name = "N", default_value_t = 1024, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    max_streams_per_conn: usize,
    /// Bytes one stream's inbox holds before its connection stops reading until the
    /// consumer takes it to half; each frame counts its payload, metadata and about 200
    /// bytes. Per connection at most --max-streams-per-conn times this (1 GiB by default)
    #[arg(long, value_name = "BYTES", default_value = "1MiB", allow_negative_numbers = true, value_parser = size::<usize>)]
    stream_queue_bytes: usize,
    /// Bytes a stream sender may have unsent before `send` waits
    #[arg(long, value_name = "BYTES", default_value = "1MiB", allow_negative_numbers = true, value_parser = size::<usize>)]
    stream_send_window: usize,
    /// Most connections one peer IP address may hold open [default: unlimited]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    max_connections_per_peer: Option<usize>,
    /// Print a one-line summary per core every SECS seconds [default: never]
    #[arg(long, visible_alias = "stats", value_name = "SECS", allow_negative_numbers = true, value_parser = seconds)]
    stats_interval: Option<Duration>,
    /// Seconds shutdown waits for connections to drain before closing them
    #[arg(long, value_name = "SECS", default_value = "5", allow_negative_numbers = true, value_parser = seconds)]
    shutdown_grace: Duration,
    /// Seconds shutdown first keeps serving open connections with the listeners closed (so
    /// a load balancer's health checks fail and new clients go elsewhere) before draining;
    /// ends early once every connection closed
    #[arg(long, value_name = "SECS", default_value = "0", allow_negative_numbers = true, value_parser = seconds)]
    shutdown_delay: Duration,
    /// Do not pin reactor threads to CPUs (sets pin_cores to false)
    #[arg(long)]
    no_pin: bool,
    /// Benchmark mode: write received bytes straight back without decoding (the transport
    /// limit, for comparisons); not an RPC server
    #[arg(long)]
    reflect: bool,
    /// Serve the same routes over UDP on this address too (one socket per core, one arpc
    /// frame per datagram; --reflect does not apply to it)
    #[arg(long, value_name = "ADDR")]
    udp_listen: Option<String>,
    /// Also listen on ADDR for WebSocket (and static assets) only: raw arpc there gets HTTP
    /// 400 (repeat for several; the --listen ports accept WebSocket too)
    #[arg(long, value_name = "ADDR")]
    ws_listen: Vec<String>,
    #[arg(
        long,
        value_name = "ADDR",
        help = "Serve Prometheus metrics at http://ADDR/metrics (:PORT, HOST:PORT or [IPV6]:PORT; \
                port 0 picks one, printed in the startup line) from a thread of its own [default: off]"
    )]
    metrics_listen: Option<String>,
    /// Serve only over UDP: no TCP listener (needs --udp-listen)
    #[arg(long)]
    no_tcp_listen: bool,
    /// Largest UDP datagram sent or answered, in bytes (1472 fits one Ethernet MTU; at most
    /// 65507; must fit --recv-buffer-size less 144)
    #[arg(long, value_name = "BYTES", default_value_t = 1472, allow_negative_numbers = true, value_parser = positive_size)]
    udp_max_datagram: usize,
    /// Seconds a UDP request's answer is kept to answer its retries without running the
    /// handler again; a peer quiet this long is forgotten, with its pub/sub in_A
    #[arg(long, value_name = "SECS", default_value = "5", allow_negative_numbers = true, value_parser = seconds)]
    udp_dedup_window: Duration,
    /// UDP answers kept per core for duplicate suppression (oldest evicted first)
    #[arg(long, value_name = "N", default_value_t = 65_536, allow_negative_numbers = true, value_parser = positive)]
    udp_dedup_capacity: usize,
    /// Requests per second one UDP peer address may send; past it its datagrams are dropped
    /// and counted (default unlimited)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive)]
    udp_peer_rate: Option<usize>,
    /// Send every UDP datagram on its own instead of batching equal-sized ones to a peer
    /// with UDP GSO (sets udp_gso to false)
    #[arg(long)]
    no_udp_gso: bool,
    /// Request path of WebSocket upgrades on the TCP ports (arpc frames in binary messages)
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    ws_path: String,
    /// Serve raw arpc only: no WebSocket upgrades (sets ws_path to none)
    #[arg(long)]
    no_websocket: bool,
    /// Only WebSocket upgrades with this Origin may proceed (repeat for several; default any)
    #[arg(long, value_name = "ORIGIN")]
    ws_allowed_origin: Vec<String>,
    /// A WebSocket subprotocol to agree to when a client offers it (repeat for several, in
    /// order of preference; default none)
    #[arg(long, value_name = "NAME")]
    ws_protocol: Vec<String>,
    /// Serve Go arpc-compatible publish/subscribe (in_A, in_S, in_U, in_P, in_P1); costs
    /// about 100 bytes plus the topic name, twice, per subscription
    #[arg(long)]
    pubsub: bool,
    /// Require pub/sub peers to authenticate (in_A) with the password in FILE (its trailing
    /// newline is ignored); needs --pubsub
    #[arg(long, value_name = "FILE")]
    pubsub_password_file: Option<PathBuf>,
    /// Bridge to the NATS server at URL (nats://HOST:PORT; several of one NATS cluster
    /// separated by commas): broadcasts and pub/sub publications reach every node bridged
    /// to it, once each. An unreachable NATS does not stop the node; it reconnects
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Send frames longer than BYTES gzip-compressed, arpc's way, when that makes them
    /// shorter (default off); peers must decode arpc gzip frames
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = size::<usize>)]
    gzip_threshold: Option<usize>,
    /// Send a connection's output zero-copy (io_uring SENDMSG_ZC) when one send carries at
    /// least BYTES (0: off; else at least 4KiB); its answers' buffers stay allocated until
    /// the peer has acknowledged them. Costs more CPU on loopback, where the kernel copies
    /// at delivery anyway (docs/benchmarks.md)
    #[arg(long, value_name = "BYTES", default_value = "0", allow_negative_numbers = true, value_parser = size::<usize>)]
    send_zc_min: usize,
    /// Serve TLS 1.3 and 1.2 with the PEM certificate chain in FILE (leaf first) on every
    /// listen address, plaintext arpc and WebSocket sharing the ports unless
    /// --tls-required; ALPN arpc and http/1.1; SIGHUP reloads the files. Needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, RSA or EC); must match the certificate
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require client certificates issued by a CA of the PEM FILE (handlers see
    /// the verified subject and names)
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Serve TLS only: a connection that does not start with a TLS ClientHello is refused
    #[arg(long)]
    tls_required: bool,
    /// Permissions of the unix:/PATH socket files, in octal (e.g. 0660) [default: as the
    /// umask leaves them]
    #[arg(long, value_name = "MODE", value_parser = octal)]
    unix_mode: Option<u32>,
    /// Log filter (error, warn, info, debug, trace); RUST_LOG overrides
    #[arg(long, default_value = "info")]
    log: String,
}

/// What every BYTES flag accepts, shown at the end of `--help`.
const SIZES_HELP: &str = "BYTES values are a whole number of bytes with an optional unit: B, k/KiB, M/MiB, G/GiB \
    (binary: 1k = 1024), e.g. --max-body 1MiB or --stream-queue-bytes 256k.";

/// A byte size, `65536`, `64KiB` or `1M`, as every ringrpc command line reads one.
fn size<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    ringrpc_protocol::units::parse_size_as(s).map_err(|e| e.to_string())
}

/// A byte size of 1 or more.
fn positive_size(s: &str) -> Result<usize, String> {
    match size::<usize>(s)? {
        0 => Err(format!("must be at least 1 byte, got {s}")),
        n => Ok(n),
    }
}

/// A whole number of 1 or more.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) | Err(_) if s.trim_start().starts_with('-') || s.trim() == "0" => {
            Err(format!("must be a positive integer, got {s}"))
        }
        Ok(n) => Ok(n),
        Err(_) => unsigned::<usize>(s),
    }
}

/// A whole number of 0 or more, with a message that says so for `-5` or `ten`.
fn unsigned<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| {
        if s.trim_start().starts_with('-') {
            format!("must not be negative, got {s}")
        } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            format!("{s} is too large")
        } else {
            format!("must be a whole number, got {s:?}")
        }
    })
}

/// Seconds, fractions allowed: `0.5`, `30`.
fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("must be a number of seconds, got {s:?}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("must be a non-negative number of seconds, got {s}"))
}

/// File permissions in octal: `0660`, `660`.
fn octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("must be octal permissions 0..=0777, e.g. 0660, got {s:?}"))
}

/// Zero turns a timeout off.
fn off_if_zero(d: Duration) -> Option<Duration> {
    Some(d).filter(|d| !d.is_zero())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine: error: {}", describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, then the flag that fixes it where there is one.
fn describe(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut hint = flag_hint(e);
    let mut cause = e.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        hint = hint.or_else(|| flag_hint(err));
        cause = err.source();
    }
    match hint {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

/// Which flag to change for a library error.
fn flag_hint(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(c) = e.downcast_ref::<ConfigError>() {
        return Some(match c.knob() {
            Some(Knob::AuthSecret) => "check the file given to --auth-secret-file".into(),
            Some(Knob::PubsubPassword) => {
                "check --pubsub and the file given to --pubsub-password-file".into()
            }
            Some(Knob::Tls) => "check the files given to --tls-cert and --tls-key".into(),
            Some(knob) => format!("set by --{}", flag(knob)),
            None => "set by --listen, --udp-listen or --metrics-listen".into(),
        });
    }
    match e.downcast_ref::<StartError>()? {
        StartError::MetricsBind(..) => Some("set by --metrics-listen".into()),
        StartError::AddrInUse(_)
        | StartError::PermissionDenied(_)
        | StartError::AddrNotAvailable(_) => Some("set by --listen".into()),
        _ => None,
    }
}

/// A knob's flag: its builder method's name with dashes.
fn flag(knob: Knob) -> String {
    knob.name().replace('_', "-")
}

fn serve(args: Args) -> Result<(), Box<dyn Error>> {
    // Unix listeners have no socket address to report: the banner names them as given.
    let unix_listens: Vec<String> = args
        .listen
        .iter()
        .filter(|a| a.starts_with("unix:"))
        .cloned()
        .collect();
    let mut addrs = args.listen.into_iter();
    let mut config = Config::builder().listen(addrs.next().unwrap_or_else(|| ":8888".into()));
    for addr in addrs {
        config = config.also_listen(addr);
    }
    let auth_secret = match &args.auth_secret_file {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read the auth secret file {} (--auth-secret-file): {e}",
                    path.display()
                )
            })?;
            Some(bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec())
        }
        None => None,
    };
    let pubsub_password = match &args.pubsub_password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    let mut config = config
        .pubsub(args.pubsub)
        .pubsub_password(pubsub_password)
        .ring_entries(args.ring_entries)
        .recv_buffers(args.recv_buffers)
        .recv_buffer_size(args.recv_buffer_size)
        .incremental_recv_buffers(args.incremental_recv_buffers)
        .max_body(args.max_body)
        .max_connections(args.max_connections)
        .max_send_queue_bytes(args.max_send_queue_bytes)
        .max_send_queue_frames(args.max_send_queue_frames)
        .idle_timeout(off_if_zero(args.idle_timeout))
        .keepalive(args.keepalive)
        .read_timeout(off_if_zero(args.read_timeout))
        .shutdown_grace(args.shutdown_grace)
        .shutdown_delay(args.shutdown_delay)
        .stats_interval(args.stats_interval)
        .auth_secret(auth_secret)
        .max_connections_per_peer(args.max_connections_per_peer)
        .max_in_flight_per_conn(args.max_in_flight_per_conn)
        .max_streams_per_conn(args.max_streams_per_conn)
        .stream_queue_bytes(args.stream_queue_bytes)
        .stream_send_window(args.stream_send_window)
        .pin_cores(!args.no_pin)
        .reflect(args.reflect)
        .udp_max_datagram(args.udp_max_datagram)
        .udp_dedup_window(args.udp_dedup_window)
        .udp_dedup_capacity(args.udp_dedup_capacity)
        .udp_gso(!args.no_udp_gso)
        .gzip_threshold(args.gzip_threshold)
        .send_zc_min(args.send_zc_min)
        .nats(args.nats)
        .ws_path((!args.no_websocket).then_some(args.ws_path))
        .ws_allowed_origins((!args.ws_allowed_origin.is_empty()).then_some(args.ws_allowed_origin))
        .ws_protocols(args.ws_protocol)
        .udp_peer_rate(
            args.udp_peer_rate
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        );
    for addr in args.ws_listen {
        config = config.ws_listen(addr);
    }
    if let Some(addr) = args.udp_listen {
        config = config.udp_listen(addr);
    }
    config = config.metrics_listen(args.metrics_listen);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config = config.tls(path_text(cert), path_text(key));
    }
    config = config
        .tls_client_ca(args.tls_client_ca.as_deref().map(path_text))
        .tls_required(args.tls_required)
        .unix_mode(args.unix_mode);
    if args.no_tcp_listen {
        config = config.no_tcp_listen();
    }
    if let Some(n) = args.cores {
        config = config.cores(n);
    }
    let reflect = args.reflect;
    let config = config.build()?;
    let tls = config.tls();
    let cores = config.cores();

    // Caught before any reactor starts, so a signal is never lost in between.
    let signals = ShutdownSignals::install()?;
    // SIGHUP reloads the TLS files (and no longer ends the process).
    let reloads = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let pubsub = PubSub::from_config(&config);
    // `/echo/async` answers from an async task after one yield, so loadgen can measure the
    // async path beside `/echo` (`--method /echo/async`).
    let mut builder = Server::builder().route_async("/echo/async", |payload: Bytes| async move {
        ringrpc::yield_now().await;
        payload
    });
    if let Some(pubsub) = &pubsub {
        builder = builder.pubsub(pubsub.clone());
    }
    let server = builder.config(config).build()?.start()?;
    let serving = match (reflect, &pubsub) {
        (true, _) => "reflecting received bytes",
        (false, None) => "methods: /echo, /echo/async, stream /echo/stream",
        (false, Some(_)) => {
            "methods: /echo, /echo/async, stream /echo/stream, pub/sub in_A in_S in_U in_P in_P1"
        }
    };
    // The first address stays the fourth word: scripts and tests read it from there.
    let mut addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    addrs.extend(unix_listens);
    if let Some(udp) = server.udp_addr() {
        addrs.push(format!("udp:{udp}"));
    }
    for ws in server.ws_addrs() {
        addrs.push(format!("ws:{ws}"));
    }
    if let Some(metrics) = server.metrics_addr() {
        addrs.push(format!("metrics:http://{metrics}/metrics"));
    }
    let plural = if cores == 1 { "core" } else { "cores" };
    println!(
        "engine listening on {} with {cores} {plural} ({serving})",
        addrs.join(" ")
    );
    std::io::stdout().flush()?;

    let handle = server.handle();
    watch_reloads(reloads, handle.clone(), tls);
    let report = signals.wait(server)?;
    let bridge = handle.bridge_stats();
    print!("{report}");
    if let Some(pubsub) = pubsub {
        let s = pubsub.stats();
        println!(
            " pubsub: {} published, {} delivered, {} skipped (slow subscribers)",
            s.published, s.delivered, s.skipped
        );
    }
    if let Some(b) = bridge {
        println!(
            "   nats: {} forwarded, {} received, {} not forwarded (NATS down or queue full), {} reconnects",
            b.forwarded, b.received, b.dropped_outbound, b.reconnects
        );
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// A path as the library's TLS knobs take it.
fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Reloads the TLS certificate and key on each SIGHUP (logging the outcome), from a thread
/// of its own; without TLS, says there is nothing to reload.
fn watch_reloads(
    mut reloads: signal_hook::iterator::Signals,
    handle: ringrpc::ServerHandle,
    tls: bool,
) {
    let spawned = std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in reloads.forever() {
                if !tls {
                    tracing::warn!("SIGHUP: no TLS to reload (give --tls-cert and --tls-key)");
                    continue;
                }
                // reload_tls logs success, or the refusal and that the old files stay.
                let _ = handle.reload_tls();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for SIGHUP (TLS reloads off): {e}");
    }
}

/// The pub/sub password from `path`, less one trailing newline; missing, unreadable and
/// empty files are refused with the fix.
fn read_password(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the pub/sub password file {} (--pubsub-password-file): {e}; create it with the password on one line, readable by this user",
            path.display()
        )
    })?;
    let password = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let password = password.strip_suffix(b"\r").unwrap_or(password);
    if password.is_empty() {
        return Err(format!(
            "the pub/sub password file {} (--pubsub-password-file) is empty; put the password in it on one line",
            path.display()
        ));
    }
    Ok(password.to_vec())
}
