//! A whole run: connects, starts the I/O threads, prints progress, samples CPU time around the
//! measured window, and merges the threads' results into a [`Report`].

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::cli::{Config, IoMode};
use crate::conn::{Connection, Schedule};
use crate::cpu::{CpuSource, WindowCpu, process_cpu_time};
use crate::report::{CpuUsage, Report, Window};
use crate::uring::run_uring_worker;
use crate::worker::{Counters, Plan, Shared, WorkerOutput, run_worker};

/// Longest a blocking read or write waits before the thread re-checks deadlines and timeouts.
const BLOCKING_POLL: Duration = Duration::from_millis(10);
/// Longest the monitor sleeps before noticing that every worker finished early.
const MONITOR_POLL: Duration = Duration::from_millis(50);
/// Significant digits kept by the latency histograms.
pub(crate) const LATENCY_SIGFIG: u8 = 3;

/// Why a run could not start or finish; the binary exits with status 2.
#[derive(Debug)]
pub enum RunError {
    /// The target did not resolve to any address.
    Resolve { target: String, cause: String },
    /// A connection could not be opened or configured.
    Connect { target: String, cause: io::Error },
    /// An I/O thread could not be started or panicked.
    Worker(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Resolve { target, cause } => write!(f, "cannot resolve {target}: {cause}"),
            RunError::Connect { target, cause } => {
                let kind = cause.kind();
                let what = match kind {
                    ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::ConnectionReset
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::PermissionDenied => kind.to_string(),
                    _ => cause.to_string(),
                };
                write!(f, "cannot connect to {target}: {what}")?;
                if matches!(kind, ErrorKind::ConnectionRefused | ErrorKind::TimedOut) {
                    let port = target.rsplit(':').next().unwrap_or("8888");
                    write!(
                        f,
                        " — is the engine running? start it with `engine --listen :{port}`"
                    )?;
                }
                Ok(())
            }
            RunError::Worker(why) => write!(f, "I/O thread failed: {why}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Connects, applies the load described by `config`, and reports what happened.
pub fn run(config: &Config) -> Result<Report, RunError> {
    let addrs: Vec<SocketAddr> = config
        .target
        .to_socket_addrs()
        .map_err(|e| RunError::Resolve {
            target: config.target.clone(),
            cause: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(RunError::Resolve {
            target: config.target.clone(),
            cause: "no addresses".into(),
        });
    }
    let connect_error = |cause| RunError::Connect {
        target: config.target.clone(),
        cause,
    };

    let mut groups: Vec<Vec<TcpStream>> = (0..config.threads).map(|_| Vec::new()).collect();
    for i in 0..config.conns {
        groups[i % config.threads].push(connect(&addrs, config.timeout).map_err(connect_error)?);
    }
    let start = Instant::now() + Duration::from_millis(1);
    let measure_start = start + config.warmup;
    let deadline = measure_start + config.duration;
    // Open loop: each connection gets an equal share of the rate, staggered so the requests
    // of different connections do not go out in bursts.
    let interval = config
        .rate
        .map(|rate| Duration::from_secs_f64(config.conns as f64 / rate));
    let mut workers: Vec<Vec<Connection>> = Vec::with_capacity(groups.len());
    let mut next_id = 0;
    for group in groups {
        // With plain sockets, a lone connection gets blocking I/O with short timeouts and
        // several share one thread through non-blocking sockets; io_uring needs neither.
        let blocking = config.io == IoMode::Std && group.len() == 1;
        let nonblocking = config.io == IoMode::Std && group.len() > 1;
        let mut conns = Vec::with_capacity(group.len());
        for stream in group {
            configure(&stream, blocking, nonblocking).map_err(connect_error)?;
            let schedule = interval.map(|interval| Schedule {
                next: start + interval.mul_f64(next_id as f64 / config.conns as f64),
                interval,
            });
            conns.push(Connection::new(next_id, stream, schedule));
            next_id += 1;
        }
        workers.push(conns);
    }

    let latency_high_ns =
        u64::try_from((config.timeout * 2 + Duration::from_secs(1)).as_nanos()).unwrap_or(u64::MAX);
    let empty_histogram =
        Histogram::<u64>::new_with_bounds(1, latency_high_ns.max(2), LATENCY_SIGFIG)
            .map_err(|e| RunError::Worker(format!("cannot create latency histogram: {e}")))?;
    let plan = Arc::new(Plan {
        per_conn: config.per_conn,
        method: Bytes::copy_from_slice(config.method.as_bytes()),
        payload_len: config.payload,
        timeout: config.timeout,
        measure_start,
        deadline,
        drain_deadline: deadline + config.timeout,
        cpu_source: CpuSource::detect(),
        reflect: config.reflect,
    });

    let mut handles = Vec::with_capacity(workers.len());
    let mut shared = Vec::with_capacity(workers.len());
    for (index, conns) in workers.into_iter().enumerate() {
        let worker_shared = Arc::new(Shared::new(empty_histogram.clone()));
        shared.push(Arc::clone(&worker_shared));
        let plan = Arc::clone(&plan);
        let cpu = (!config.cpus.is_empty()).then(|| config.cpus[index % config.cpus.len()]);
        let io = config.io;
        let handle = thread::Builder::new()
            .name(format!("loadgen-io-{index}"))
            .spawn(move || {
                if let Some(id) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        eprintln!("loadgen: warning: could not pin I/O thread {index} to CPU {id}");
                    }
                }
                match io {
                    IoMode::Uring => run_uring_worker(conns, &plan, &worker_shared),
                    IoMode::Std => Ok(run_worker(conns, &plan, &worker_shared)),
                }
            })
            .map_err(|e| RunError::Worker(format!("cannot start thread: {e}")))?;
        handles.push(handle);
    }

    let (measured, monitor_cpu, server_cpu) = monitor(config, &plan, start, &handles, &shared);

    let mut counters = Counters::default();
    let mut cpu_in_window = monitor_cpu;
    let mut panicked = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(output)) => {
                counters.merge(output.counters);
                cpu_in_window = cpu_in_window.zip(output.cpu_in_window).map(|(a, b)| a + b);
            }
            Ok(Err(why)) => panicked = Some(why),
            Err(_) => panicked = Some("an I/O thread panicked".to_string()),
        }
    }
    if let Some(why) = panicked {
        return Err(RunError::Worker(why));
    }
    let drained_at = Instant::now();
    let mut latencies = empty_histogram;
    for worker_shared in &shared {
        let published = worker_shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        latencies
            .add(&*published)
            .expect("worker and merged histograms are built with the same bounds");
    }
    let window = Window {
        measured,
        drain: drained_at.saturating_duration_since(deadline),
        cpu: plan
            .cpu_source
            .zip(cpu_in_window)
            .map(|(source, time)| CpuUsage { source, time }),
        server_cpu,
    };
    Ok(Report::build(config, &counters, &latencies, window))
}

fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(ErrorKind::AddrNotAvailable, "no addresses")))
}

fn configure(stream: &TcpStream, blocking: bool, nonblocking: bool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if blocking {
        stream.set_read_timeout(Some(BLOCKING_POLL))?;
        stream.set_write_timeout(Some(BLOCKING_POLL))?;
    }
    stream.set_nonblocking(nonblocking)
}

/// Prints progress once a second until the deadline passes or every worker has finished.
/// Returns the measured time, this thread's CPU time within it, and the server's (with
/// `--server-pid`), sampled at the same edges.
fn monitor(
    config: &Config,
    plan: &Plan,
    start: Instant,
    handles: &[thread::JoinHandle<Result<WorkerOutput, String>>],
    shared: &[Arc<Shared>],
) -> (Duration, Option<Duration>, Option<Duration>) {
    let mut cpu = WindowCpu::new(plan.cpu_source, plan.measure_start, plan.deadline);
    let server_sample = || config.server_pid.and_then(process_cpu_time);
    let mut server_start = None;
    let mut next_tick = start + Duration::from_secs(1);
    let mut last_tick = start;
    let mut last_frames = 0u64;
    loop {
        let now = Instant::now();
        cpu.observe(now);
        let measuring = now >= plan.measure_start;
        if measuring && server_start.is_none() {
            server_start = Some(server_sample());
        }
        if now >= plan.deadline || handles.iter().all(|h| h.is_finished()) {
            cpu.finish();
            let server = server_start
                .flatten()
                .zip(server_sample())
                .map(|(a, b)| b.saturating_sub(a));
            let end = now.min(plan.deadline);
            return (
                end.saturating_duration_since(plan.measure_start),
                cpu.used(),
                server,
            );
        }
        if !config.quiet && now >= next_tick {
            let frames: u64 = shared
                .iter()
                .map(|s| s.frames.load(Ordering::Relaxed))
                .sum();
            let rate = (frames - last_frames) as f64 / now.duration_since(last_tick).as_secs_f64();
            // Name the phase the second mostly belonged to: the tick at the edge reports warmup.
            let phase = if last_tick >= plan.measure_start {
                "measuring"
            } else {
                "warmup"
            };
            let p99 = if measuring {
                p99_so_far(shared)
            } else {
                "-".to_string()
            };
            eprintln!(
                "[{:6.1}s] {phase:<9} {rate:>12.0} req/s  p99 so far {p99}",
                now.duration_since(start).as_secs_f64()
            );
            last_frames = frames;
            last_tick = now;
            next_tick += Duration::from_secs(1);
        }
        let mut wake = plan.deadline;
        if !measuring {
            wake = wake.min(plan.measure_start);
        }
        if !config.quiet {
            wake = wake.min(next_tick);
        }
        thread::sleep(wake.saturating_duration_since(now).min(MONITOR_POLL));
    }
}

fn p99_so_far(shared: &[Arc<Shared>]) -> String {
    let mut merged: Option<Histogram<u64>> = None;
    for worker_shared in shared {
        let published = worker_shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match merged.as_mut() {
            Some(total) => total
                .add(&*published)
                .expect("worker histograms are built with the same bounds"),
            None => merged = Some(published.clone()),
        }
    }
    match merged {
        Some(h) if !h.is_empty() => format!("{:.1} µs", h.value_at_quantile(0.99) as f64 / 1000.0),
        _ => "-".to_string(),
    }
}
