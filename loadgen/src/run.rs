//! A whole run: opens the interval log, connects, applies the load (arpc I/O threads here,
//! gRPC callers in [`crate::grpc`]) inside a [`Session`], and merges what the threads counted
//! into a [`Report`].
//!
//! Invariant: both protocols run inside one [`Session`], so they share the phase edges
//! (warmup, measured window, drain), the progress line, CPU sampling and the report.

use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::cli::config::Config;
use crate::cli::flags::{IoMode, Proto, Transport};
use crate::conn::Connection;
use crate::connect::{Dialer, resolve};
use crate::counters::Counters;
use crate::cpu::CpuSource;
use crate::epoll::run_epoll_worker;
use crate::error::RunError;
use crate::hdrlog::HdrLogFile;
use crate::pattern::Pattern;
use crate::pubsub::deliveries::merge_seq_sets;
use crate::pubsub::subscribers::{Subscribers, authenticate_publisher};
use crate::report::Report;
use crate::session::Session;
use crate::std_worker::run_std_worker;
use crate::tls::TlsSession;
use crate::udp::{UdpConn, connect_udp, run_udp_worker};
use crate::uring::run_uring_worker;
use crate::window::Schedule;
use crate::worker::{Plan, Shared, WorkerOutput};

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
    let dialer = Dialer::new(config)?;
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
            None => Some(Subscribers::start(config, &resolve(config)?)?),
        },
        _ => None,
    };
    let mut groups: Vec<Vec<(TcpStream, Option<TlsSession>)>> =
        (0..config.threads).map(|_| Vec::new()).collect();
    for i in 0..config.conns {
        let (mut stream, tls) = dialer.dial().map_err(connect_error)?;
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
        groups[i % config.threads].push((stream, tls));
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
        for (stream, tls) in group {
            dialer
                .configure(&stream, blocking, nonblocking)
                .map_err(connect_error)?;
            let schedule = interval.map(|interval| Schedule {
                next: start + interval.mul_f64(next_id as f64 / config.conns as f64),
                interval,
            });
            let mut conn = Connection::new(next_id, stream, schedule);
            conn.use_tls(tls);
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
        IoMode::Std => |conns, plan, shared| Ok(run_std_worker(conns, plan, shared)),
        IoMode::Epoll => run_epoll_worker,
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
