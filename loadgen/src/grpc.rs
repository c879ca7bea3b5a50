//! `--proto grpc`: the closed loop over tonic unary calls of `ringrpc.echo.Echo/Echo`, with the
//! checks, accounting, phases and report of the arpc engines.
//!
//! Invariants:
//! - each of `--conns` connections is its own HTTP/2 connection (one `Endpoint`, connected
//!   once), shared by its `--per-conn` callers through clones of its `Channel`;
//! - a caller has at most one call outstanding, starts none at or after the deadline, and gives
//!   each up after `--timeout`, so every measured call settles exactly once (answered, error,
//!   mismatch, timeout or lost) and the drain ends by `deadline + timeout`;
//! - a call that fails below gRPC (its status carries a transport error as its source, rather
//!   than coming from the server's `grpc-status`) is lost and fails its connection: the
//!   connection's callers start nothing more on it, as tonic would otherwise quietly reconnect.

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};

use crate::cli::config::Config;
use crate::cli::flags::Proto;
use crate::connect::resolve;
use crate::counters::Counters;
use crate::cpu::{CpuSource, process_cpu_time};
use crate::error::RunError;
use crate::grpc_echo::echo::EchoRequest;
use crate::grpc_echo::echo::echo_client::EchoClient;
use crate::hdrlog::HdrLogFile;
use crate::payload;
use crate::report::Report;
use crate::session::Session;
use crate::worker::{Plan, Shared};

/// Longest server error text kept for the report.
const ERROR_TEXT_MAX: usize = 200;

/// One HTTP/2 connection and what its callers share.
#[derive(Debug)]
struct GrpcConnection {
    id: usize,
    channel: Channel,
    /// Set by the first caller that sees a transport failure.
    failed: AtomicBool,
    /// Answers and latencies, published as they happen.
    shared: Arc<Shared>,
}

/// Connects, runs the callers through warmup, measurement and drain, and reports.
pub(crate) fn run_grpc(config: &Config, hdr_log: Option<HdrLogFile>) -> Result<Report, RunError> {
    let addrs = resolve(config)?;
    let runtime = runtime(config)?;
    let mut channels = Vec::with_capacity(config.conns);
    for _ in 0..config.conns {
        channels.push(runtime.block_on(connect(config, &addrs))?);
    }
    // tokio's threads are not ours to sample one by one: the monitor samples the whole process.
    let cpu_source = process_cpu_time(std::process::id()).map(|_| CpuSource::Process);
    let mut session = Session::begin(config, cpu_source, hdr_log)?;
    let mut callers = Vec::with_capacity(config.conns * config.per_conn);
    for (id, channel) in channels.into_iter().enumerate() {
        let connection = Arc::new(GrpcConnection {
            id,
            channel,
            failed: AtomicBool::new(false),
            shared: session.publisher(),
        });
        for _ in 0..config.per_conn {
            callers.push(runtime.spawn(call_loop(
                Arc::clone(&connection),
                Arc::clone(&session.plan),
            )));
        }
    }

    let monitored = session.monitor(&|| callers.iter().all(|caller| caller.is_finished()));

    let mut counters = Counters::default();
    let mut panicked = false;
    runtime.block_on(async {
        for caller in callers {
            match caller.await {
                Ok(caller_counters) => counters.merge(caller_counters),
                Err(_) => panicked = true,
            }
        }
    });
    if panicked {
        return Err(RunError::Worker("a gRPC caller panicked".into()));
    }
    // Everything the callers measured is in; the monitor's process-wide sample is all the CPU.
    let report = session.conclude(&counters, Some(Duration::ZERO), monitored, None);
    // Connections close with the runtime; nothing is left to wait for.
    runtime.shutdown_background();
    report
}

/// A multi-thread runtime with `--threads` workers, pinned round-robin to `--cpus`.
fn runtime(config: &Config) -> Result<Runtime, RunError> {
    let cpus = config.cpus.clone();
    let next_cpu = AtomicUsize::new(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .thread_name("loadgen-grpc")
        .enable_all()
        .on_thread_start(move || {
            if cpus.is_empty() {
                return;
            }
            // Blocking-pool threads are pinned too: all of loadgen stays on --cpus.
            let id = cpus[next_cpu.fetch_add(1, Ordering::Relaxed) % cpus.len()];
            if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                eprintln!("loadgen: warning: could not pin a tokio thread to CPU {id}");
            }
        })
        .build()
        .map_err(|e| RunError::Worker(format!("cannot start the tokio runtime: {e}")))
}

/// Opens one HTTP/2 connection, trying the target's addresses in order.
async fn connect(config: &Config, addrs: &[SocketAddr]) -> Result<Channel, RunError> {
    let mut last_error = None;
    for addr in addrs {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| RunError::Resolve {
                target: config.target.clone(),
                cause: e.to_string(),
            })?
            .tcp_nodelay(true)
            .connect_timeout(config.timeout);
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => last_error = Some(as_io_error(&e)),
        }
    }
    Err(RunError::Connect {
        target: config.target.clone(),
        proto: Proto::Grpc,
        cause: last_error
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no addresses")),
    })
}

/// An I/O error of the kind found in `error`'s source chain (so refusals and timeouts read as
/// they do for arpc), carrying the whole chain as its text.
fn as_io_error(error: &(dyn std::error::Error + 'static)) -> io::Error {
    let (kind, text) = describe_chain(error.to_string(), error.source());
    io::Error::new(kind, text)
}

/// `first`, then each error of the chain from `source` on, and the last I/O error kind in it.
fn describe_chain(
    first: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> (io::ErrorKind, String) {
    let mut kind = io::ErrorKind::Other;
    let mut text = first;
    while let Some(cause) = source {
        if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            kind = io_error.kind();
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    (kind, text)
}

/// One caller: call, check, record, until the deadline or its connection fails. Returns the
/// outcomes of its measured calls.
async fn call_loop(connection: Arc<GrpcConnection>, plan: Arc<Plan>) -> Counters {
    let mut client = EchoClient::new(connection.channel.clone());
    let mut counters = Counters::default();
    let mut seq = 0u64;
    loop {
        let sent_at = Instant::now();
        if sent_at >= plan.deadline || connection.failed.load(Ordering::Relaxed) {
            return counters;
        }
        seq += 1;
        let measured = sent_at >= plan.measure_start;
        let mut payload = vec![0; plan.payload_len];
        payload::fill(seq, &mut payload);
        if measured {
            counters.sent += 1;
        }
        let request = EchoRequest {
            payload: Bytes::from(payload),
        };
        let outcome = tokio::time::timeout(plan.timeout, client.echo(request)).await;
        let received_at = Instant::now();
        let reply = match outcome {
            Err(_elapsed) => {
                // Dropping the call resets its stream; the caller moves on, as arpc's window does.
                if measured {
                    counters.timeouts += 1;
                }
                continue;
            }
            Ok(Err(status)) if status.source().is_some() => {
                if measured {
                    counters.lost += 1;
                }
                if !connection.failed.swap(true, Ordering::Relaxed) {
                    let (_, why) = describe_chain(status.message().to_string(), status.source());
                    counters
                        .note_connection_failure(format!("connection {}: {why}", connection.id));
                }
                return counters;
            }
            Ok(Err(status)) => {
                connection.shared.frames.fetch_add(1, Ordering::Relaxed);
                if measured {
                    counters.errors += 1;
                    counters.first_error.get_or_insert_with(|| {
                        let text = format!("{:?}: {}", status.code(), status.message());
                        format!(
                            "seq {seq}: {}",
                            text.chars().take(ERROR_TEXT_MAX).collect::<String>()
                        )
                    });
                }
                continue;
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        connection.shared.frames.fetch_add(1, Ordering::Relaxed);
        if !measured {
            continue;
        }
        if let Some(why) = payload::mismatch(seq, plan.payload_len, &reply.payload) {
            counters.mismatches += 1;
            counters
                .first_mismatch
                .get_or_insert_with(|| format!("connection {}: {why}", connection.id));
            continue;
        }
        counters.answered += 1;
        if received_at < plan.deadline {
            counters.answered_in_window += 1;
        }
        let nanos = received_at.saturating_duration_since(sent_at).as_nanos();
        connection
            .shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX).max(1));
    }
}
