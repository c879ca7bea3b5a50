//! The `engine` binary: serves `/echo` (and ping) on every core until SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringrpc::{Config, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core io_uring RPC server speaking the arpc wire format.
#[derive(Parser, Debug)]
#[command(name = "engine", version, about)]
struct Args {
    /// Reactor threads, each pinned to its own CPU [default: all CPUs]
    #[arg(long)]
    cores: Option<usize>,
    #[arg(
        long,
        default_value = ":8888",
        help = "Listen address: :PORT (all interfaces), HOST:PORT or [IPV6]:PORT; repeat to listen on several"
    )]
    listen: Vec<String>,
    /// Submission queue entries per core (power of two, 8..=32768)
    #[arg(long, default_value_t = 4096)]
    ring_entries: u32,
    /// Receive buffers per core (power of two, 1..=32768)
    #[arg(long, default_value_t = 2048)]
    buffers: u32,
    /// Size of each receive buffer in bytes (256..=1048576)
    #[arg(long, default_value_t = 4096)]
    buffer_size: usize,
    /// Largest frame body (method + payload) a peer may send, in bytes
    #[arg(long, default_value_t = ringrpc_protocol::DEFAULT_MAX_BODY)]
    max_body: u32,
    /// Open connections over all cores before new ones are refused
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Most unsent output per connection before the engine stops reading from it, in bytes
    #[arg(long, default_value_t = 4 << 20)]
    max_send_queue: usize,
    /// Close connections that sent nothing for SECS seconds (0 = never)
    #[arg(long, value_name = "SECS", default_value_t = 3600.0)]
    idle_timeout: f64,
    /// Close connections that leave a frame unfinished for SECS seconds (0 = never)
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    read_timeout: f64,
    /// Ping connections that sent nothing for SECS seconds [default: never]
    #[arg(long, value_name = "SECS")]
    keepalive: Option<f64>,
    /// Require clients to authenticate first with the secret in FILE (its trailing newline
    /// is ignored); a secret on the command line would show in `ps`
    #[arg(long, value_name = "FILE")]
    auth_secret_file: Option<std::path::PathBuf>,
    /// Most requests per connection whose answers are deferred at once
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_in_flight: usize,
    /// Most connections one peer IP address may hold open [default: unlimited]
    #[arg(long, value_name = "N")]
    max_connections_per_peer: Option<usize>,
    /// Print a one-line summary per core every SECS seconds
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,
    /// Seconds shutdown waits for connections to drain before closing them
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    shutdown_grace: f64,
    /// Do not pin reactor threads to CPUs
    #[arg(long)]
    no_pin: bool,
    /// Benchmark mode: write received bytes straight back without decoding (the transport
    /// limit, for comparisons); not an RPC server
    #[arg(long)]
    reflect: bool,
    /// Log filter (error, warn, info, debug, trace); RUST_LOG overrides
    #[arg(long, default_value = "info")]
    log: String,
}

fn seconds(what: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--{what} must be a non-negative number of seconds, got {secs}"))
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
            eprintln!("engine: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut addrs = args.listen.into_iter();
    let mut config = Config::builder().listen(addrs.next().unwrap_or_else(|| ":8888".into()));
    for addr in addrs {
        config = config.also_listen(addr);
    }
    let mut config = config
        .ring_entries(args.ring_entries)
        .recv_buffers(args.buffers)
        .recv_buffer_size(args.buffer_size)
        .max_body(args.max_body)
        .max_connections(args.max_connections)
        .max_send_queue_bytes(args.max_send_queue)
        .idle_timeout(Some(seconds("idle-timeout", args.idle_timeout)?).filter(|d| !d.is_zero()))
        .keepalive(
            args.keepalive
                .map(|s| seconds("keepalive", s))
                .transpose()?,
        )
        // 0 turns it off.
        .read_timeout(Some(seconds("read-timeout", args.read_timeout)?).filter(|d| !d.is_zero()))
        .shutdown_grace(seconds("shutdown-grace", args.shutdown_grace)?)
        .stats_interval(args.stats.map(|s| seconds("stats", s)).transpose()?)
        .auth_secret(match &args.auth_secret_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    format!("cannot read the auth secret file {}: {e}", path.display())
                })?;
                let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec();
                Some(secret)
            }
            None => None,
        })
        .max_connections_per_peer(args.max_connections_per_peer)
        .max_in_flight_per_conn(args.max_in_flight)
        .pin_cores(!args.no_pin)
        .reflect(args.reflect);
    if let Some(n) = args.cores {
        config = config.cores(n);
    }
    let reflect = args.reflect;
    let config = config.build()?;
    let cores = config.cores();

    // Registered before any reactor starts, so a signal is never lost in between.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let server = Server::builder().config(config).build()?.start()?;
    let serving = if reflect {
        "reflecting received bytes"
    } else {
        "methods: /echo"
    };
    // The first address stays the fourth word: scripts and tests read it from there.
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    println!(
        "engine listening on {} with {cores} cores ({serving})",
        addrs.join(" ")
    );
    std::io::stdout().flush()?;

    let handle = server.handle();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen == 1 {
                eprintln!("engine: signal {sig} received; draining connections (send again to exit at once)");
                handle.shutdown();
            } else {
                std::process::exit(130);
            }
        }
    })?;

    let report = server.join()?;
    print!("{report}");
    std::io::stdout().flush()?;
    Ok(())
}
