//! A whole run: opens the interval log, connects, applies the load (arpc I/O threads here,
//! gRPC callers in [`crate::grpc`]), prints progress, samples CPU time around the measured
//! window, and merges the results into a [`Report`].
//!
//! Invariants: both protocols run inside one [`Session`], so they share the phase edges
//! (warmup, measured window, drain), the progress line, CPU sampling and the report. Every
//! measured latency is published to one of the session's [`Shared`] histograms, all built by
//! [`latency_histogram`]; the report, the progress p99 and the interval log all read those.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::cli::{Config, IoMode, Proto, Transport};
use crate::conn::{Connection, Schedule};
use crate::cpu::{CpuSource, WindowCpu, process_cpu_time};
use crate::hdrlog::{HdrLogFile, IntervalLog};
use crate::pattern::Pattern;
use crate::pubsub::{
    PubsubOutcome, PubsubPlan, Subscribers, authenticate_publisher, merge_seq_sets,
};
use crate::report::{CpuUsage, Report, Window};
use crate::udp::{UdpConn, connect_udp, run_udp_worker};
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
    Connect {
        target: String,
        proto: Proto,
        cause: io::Error,
    },
    /// An I/O thread (or the gRPC runtime) could not be started or panicked.
    Worker(String),
    /// The `--hdr-log` file could not be created or written.
    HdrLog { path: PathBuf, cause: String },
    /// `--pattern pubsub`: a connection could not authenticate or subscribe.
    PubSub(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Resolve { target, cause } => write!(f, "cannot resolve {target}: {cause}"),
            RunError::Connect {
                target,
                proto,
                cause,
            } => {
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
                    match proto {
                        Proto::Arpc => write!(
                            f,
                            " — is the engine running? start it with `engine --listen :{port}`"
                        )?,
                        Proto::Grpc => write!(
                            f,
                            " — is the gRPC server running? start it with \
                             `grpc-echo --listen 127.0.0.1:{port}`"
                        )?,
                    }
                }
                Ok(())
            }
            RunError::Worker(why) => write!(f, "I/O thread failed: {why}"),
            RunError::PubSub(why) => write!(f, "pub/sub setup failed: {why}"),
            RunError::HdrLog { path, cause } => {
                write!(
                    f,
                    "cannot write the HdrHistogram log {}: {cause}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for RunError {}

/// Connects, applies the load described by `config`, and reports what happened.
pub fn run(config: &Config) -> Result<Report, RunError> {
    // Before connecting, so that a bad path fails before any load is applied.
    let hdr_log = config
        .hdr_log
        .as_deref()
        .map(|path| {
            HdrLogFile::create(path).map_err(|e| RunError::HdrLog {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })
        })
        .transpose()?;
    match config.proto {
        Proto::Arpc => run_arpc(config, hdr_log),
        Proto::Grpc => crate::grpc::run_grpc(config, hdr_log),
    }
}

fn run_arpc(config: &Config, hdr_log: Option<HdrLogFile>) -> Result<Report, RunError> {
    if config.transport == Transport::Udp {
        return run_udp(config, hdr_log);
    }
    let addrs = resolve(config)?;
    let connect_error = |cause| RunError::Connect {
        target: config.target.clone(),
        proto: Proto::Arpc,
        cause,
    };

    // Pub/sub: every subscriber is subscribed before any publisher connects.
    let subscribers = match config.pattern {
        Pattern::Pubsub => match &config.subscriber_target {
            Some(target) => {
                let other = Config {
                    target: target.clone(),
                    ..config.clone()
                };
                Some(Subscribers::start(&other, &resolve(&other)?)?)
            }
            None => Some(Subscribers::start(config, &addrs)?),
        },
        _ => None,
    };
    let mut groups: Vec<Vec<TcpStream>> = (0..config.threads).map(|_| Vec::new()).collect();
    for i in 0..config.conns {
        let mut stream = connect(&addrs, config.timeout).map_err(connect_error)?;
        if config.transport == Transport::Ws {
            stream
                .set_read_timeout(Some(config.timeout))
                .map_err(connect_error)?;
            crate::ws::handshake(&mut stream, &config.target, &config.ws_path)
                .map_err(connect_error)?;
            stream.set_read_timeout(None).map_err(connect_error)?;
        }
        if subscribers.is_some() {
            authenticate_publisher(&mut stream, i, config)?;
        }
        groups[i % config.threads].push(stream);
    }
    let mut session = Session::begin(config, CpuSource::detect(), hdr_log)?;
    let start = session.start;
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
            let mut conn = Connection::new(next_id, stream, schedule);
            if config.transport == Transport::Ws {
                conn.use_websocket();
            }
            conns.push(conn);
            next_id += 1;
        }
        workers.push(conns);
    }

    let drive: fn(Vec<Connection>, &Plan, &Shared) -> Result<WorkerOutput, String> = match config.io
    {
        IoMode::Uring => run_uring_worker,
        IoMode::Std => |conns, plan, shared| Ok(run_worker(conns, plan, shared)),
    };
    let handles = spawn_workers(config, &mut session, workers, drive)?;
    finish(session, handles, subscribers)
}

/// `--transport udp`: one connected UDP socket per connection, an epoll loop per I/O thread.
fn run_udp(config: &Config, hdr_log: Option<HdrLogFile>) -> Result<Report, RunError> {
    let addrs = resolve(config)?;
    let connect_error = |cause| RunError::Connect {
        target: config.target.clone(),
        proto: Proto::Arpc,
        cause,
    };
    let mut sockets = Vec::with_capacity(config.conns);
    for _ in 0..config.conns {
        sockets.push(connect_udp(&addrs).map_err(connect_error)?);
    }
    let mut session = Session::begin(config, CpuSource::detect(), hdr_log)?;
    let start = session.start;
    let interval = config
        .rate
        .map(|rate| Duration::from_secs_f64(config.conns as f64 / rate));
    let mut workers: Vec<Vec<UdpConn>> = (0..config.threads).map(|_| Vec::new()).collect();
    for (id, socket) in sockets.into_iter().enumerate() {
        let schedule = interval.map(|interval| Schedule {
            next: start + interval.mul_f64(id as f64 / config.conns as f64),
            interval,
        });
        workers[id % config.threads].push(UdpConn::new(id, socket, schedule));
    }
    let handles = spawn_workers(config, &mut session, workers, run_udp_worker)?;
    finish(session, handles, None)
}

type WorkerHandle = thread::JoinHandle<Result<WorkerOutput, String>>;

/// Starts one I/O thread per group of connections, each pinned as `--cpus` says and running
/// `drive` on its group.
fn spawn_workers<C: Send + 'static>(
    config: &Config,
    session: &mut Session<'_>,
    workers: Vec<Vec<C>>,
    drive: fn(Vec<C>, &Plan, &Shared) -> Result<WorkerOutput, String>,
) -> Result<Vec<WorkerHandle>, RunError> {
    let mut handles = Vec::with_capacity(workers.len());
    for (index, conns) in workers.into_iter().enumerate() {
        let worker_shared = session.publisher();
        let plan = Arc::clone(&session.plan);
        let cpu = (!config.cpus.is_empty()).then(|| config.cpus[index % config.cpus.len()]);
        let handle = thread::Builder::new()
            .name(format!("loadgen-io-{index}"))
            .spawn(move || {
                if let Some(id) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        eprintln!("loadgen: warning: could not pin I/O thread {index} to CPU {id}");
                    }
                }
                drive(conns, &plan, &worker_shared)
            })
            .map_err(|e| RunError::Worker(format!("cannot start thread: {e}")))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Watches the run until the I/O threads finish, then merges what they counted; with
/// pub/sub, then lets the subscribers drain and counts their deliveries.
fn finish(
    mut session: Session<'_>,
    handles: Vec<WorkerHandle>,
    subscribers: Option<Subscribers>,
) -> Result<Report, RunError> {
    let monitored = session.monitor(&|| handles.iter().all(|h| h.is_finished()));
    let mut counters = Counters::default();
    let mut published_ok = Vec::new();
    // Each I/O thread samples its own CPU time at the window's edges; the monitor adds its own.
    let mut workers_cpu = Some(Duration::ZERO);
    let mut panicked = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(output)) => {
                counters.merge(output.counters);
                merge_seq_sets(&mut published_ok, output.published_ok);
                workers_cpu = workers_cpu.zip(output.cpu_in_window).map(|(a, b)| a + b);
            }
            Ok(Err(why)) => panicked = Some(why),
            Err(_) => panicked = Some("an I/O thread panicked".to_string()),
        }
    }
    if let Some(why) = panicked {
        return Err(RunError::Worker(why));
    }
    let pubsub = subscribers
        .map(|subs| subs.drain(&published_ok, session.config.timeout))
        .transpose()?;
    session.conclude(&counters, workers_cpu, monitored, pubsub)
}

/// The target's addresses, or why there are none.
pub(crate) fn resolve(config: &Config) -> Result<Vec<SocketAddr>, RunError> {
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
    Ok(addrs)
}

pub(crate) fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
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

/// An empty latency histogram (nanoseconds) with the bounds every histogram of a run shares:
/// up to twice the timeout plus a second, so a late answer in the drain still fits.
pub(crate) fn latency_histogram(timeout: Duration) -> Result<Histogram<u64>, RunError> {
    let latency_high_ns =
        u64::try_from((timeout * 2 + Duration::from_secs(1)).as_nanos()).unwrap_or(u64::MAX);
    Histogram::<u64>::new_with_bounds(1, latency_high_ns.max(2), LATENCY_SIGFIG)
        .map_err(|e| RunError::Worker(format!("cannot create latency histogram: {e}")))
}

/// What the monitor measured of the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Monitored {
    /// Measured time (shorter than asked only if every worker finished early).
    measured: Duration,
    /// The monitor thread's CPU time in the window (the whole process's with
    /// [`CpuSource::Process`]).
    cpu: Option<Duration>,
    /// The `--server-pid` process's CPU time in the window.
    server_cpu: Option<Duration>,
}

/// A run once connected, whatever the protocol: the plan, where latencies are published, the
/// interval log, and the monitor that watches the phases go by.
#[derive(Debug)]
pub(crate) struct Session<'c> {
    pub config: &'c Config,
    pub plan: Arc<Plan>,
    /// Warmup begins.
    pub start: Instant,
    /// One per publisher (an arpc I/O thread, a gRPC connection).
    shared: Vec<Arc<Shared>>,
    empty_histogram: Histogram<u64>,
    interval_log: Option<IntervalLog>,
}

impl<'c> Session<'c> {
    /// Fixes the phase edges from now: warmup, then the measured window, then the drain.
    /// `cpu_source` is how the monitor (and arpc's I/O threads) read CPU time.
    pub(crate) fn begin(
        config: &'c Config,
        cpu_source: Option<CpuSource>,
        hdr_log: Option<HdrLogFile>,
    ) -> Result<Session<'c>, RunError> {
        let start = Instant::now() + Duration::from_millis(1);
        let measure_start = start + config.warmup;
        let deadline = measure_start + config.duration;
        let empty_histogram = latency_histogram(config.timeout)?;
        let interval_log = hdr_log
            .map(|file| {
                let path = file.path().to_path_buf();
                file.begin(measure_start, empty_histogram.clone())
                    .map_err(|e| RunError::HdrLog {
                        path,
                        cause: e.to_string(),
                    })
            })
            .transpose()?;
        let plan = Arc::new(Plan {
            per_conn: config.per_conn,
            pattern: config.pattern,
            method: Bytes::copy_from_slice(config.method.as_bytes()),
            payload_len: config.payload,
            timeout: config.timeout,
            measure_start,
            deadline,
            drain_deadline: deadline + config.timeout,
            cpu_source,
            reflect: config.reflect,
            udp: config.udp,
            pubsub: (config.pattern == Pattern::Pubsub).then(|| PubsubPlan::new(&config.topic)),
        });
        Ok(Session {
            config,
            plan,
            start,
            shared: Vec::new(),
            empty_histogram,
            interval_log,
        })
    }

    /// A new place to publish frames and latencies, watched by the monitor and merged at the end.
    pub(crate) fn publisher(&mut self) -> Arc<Shared> {
        let shared = Arc::new(Shared::new(self.empty_histogram.clone()));
        self.shared.push(Arc::clone(&shared));
        shared
    }

    /// Prints progress once a second and closes interval-log intervals until the deadline
    /// passes or `finished` says every worker is done. Samples this thread's CPU time (the
    /// process's with [`CpuSource::Process`]) and the server's at the same edges.
    pub(crate) fn monitor(&mut self, finished: &dyn Fn() -> bool) -> Monitored {
        let (config, plan, start) = (self.config, Arc::clone(&self.plan), self.start);
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
            if now >= plan.deadline || finished() {
                cpu.finish();
                let server_cpu = server_start
                    .flatten()
                    .zip(server_sample())
                    .map(|(a, b)| b.saturating_sub(a));
                let end = now.min(plan.deadline);
                return Monitored {
                    measured: end.saturating_duration_since(plan.measure_start),
                    cpu: cpu.used(),
                    server_cpu,
                };
            }
            if let Some(log) = self.interval_log.as_mut() {
                if now >= log.next_edge() {
                    let mut cumulative = self.empty_histogram.clone();
                    merge_published(&self.shared, &mut cumulative);
                    log.close_interval(now, &cumulative);
                }
            }
            if !config.quiet && now >= next_tick {
                let frames: u64 = self
                    .shared
                    .iter()
                    .map(|s| s.frames.load(Ordering::Relaxed))
                    .sum();
                let rate =
                    (frames - last_frames) as f64 / now.duration_since(last_tick).as_secs_f64();
                // Name the phase the second mostly belonged to: the tick at the edge reports warmup.
                let phase = if last_tick >= plan.measure_start {
                    "measuring"
                } else {
                    "warmup"
                };
                let p99 = if measuring {
                    self.p99_so_far()
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
            if let Some(log) = &self.interval_log {
                wake = wake.min(log.next_edge());
            }
            thread::sleep(wake.saturating_duration_since(now).min(MONITOR_POLL));
        }
    }

    fn p99_so_far(&self) -> String {
        let mut merged = self.empty_histogram.clone();
        merge_published(&self.shared, &mut merged);
        if merged.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} µs", merged.value_at_quantile(0.99) as f64 / 1000.0)
        }
    }

    /// Once every worker is done: merges what they published, closes the interval log, and
    /// builds the report. `workers_cpu` is the CPU time the workers measured themselves, added
    /// to the monitor's; `pubsub` is what the subscribers counted.
    pub(crate) fn conclude(
        self,
        counters: &Counters,
        workers_cpu: Option<Duration>,
        monitored: Monitored,
        pubsub: Option<PubsubOutcome>,
    ) -> Result<Report, RunError> {
        let drained_at = Instant::now();
        let mut latencies = self.empty_histogram;
        merge_published(&self.shared, &mut latencies);
        if let Some(log) = self.interval_log {
            let path = log.path().to_path_buf();
            log.finish(drained_at, &latencies)
                .map_err(|cause| RunError::HdrLog { path, cause })?;
        }
        let cpu_in_window = monitored.cpu.zip(workers_cpu).map(|(a, b)| a + b);
        let window = Window {
            measured: monitored.measured,
            drain: drained_at.saturating_duration_since(self.plan.deadline),
            cpu: self
                .plan
                .cpu_source
                .zip(cpu_in_window)
                .map(|(source, time)| CpuUsage { source, time }),
            server_cpu: monitored.server_cpu,
        };
        Ok(Report::build(
            self.config,
            counters,
            &latencies,
            window,
            pubsub.as_ref(),
        ))
    }
}

/// Adds every publisher's latencies so far to `into`.
fn merge_published(shared: &[Arc<Shared>], into: &mut Histogram<u64>) {
    for publisher in shared {
        let published = publisher
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        into.add(&*published)
            .expect("every latency histogram of a run is built with the same bounds");
    }
}
