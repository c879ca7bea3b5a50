//! The awaitable client driven from tokio beside the blocking client, against a running
//! engine: `--conns` connections × `--per-conn` calls in flight each, for `--duration`.
//! The awaitable run uses one tokio thread (`current_thread`) with a task per call slot;
//! the blocking run a thread per call slot. Both report calls/s, p50/p99 latency and the
//! client's CPU per call (this process's user + system time over the run, every thread —
//! the clients' reactor included — divided by the calls made).
//!
//! Run: start `engine --cores 1 --listen 127.0.0.1:9100` (pinned with `taskset -c 0`), then
//! `taskset -c 1 target/release/async-client --target 127.0.0.1:9100 --mode both`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use ringrpc::{Client, ClientRuntime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Async,
    Blocking,
    Both,
}

#[derive(Parser, Debug)]
#[command(about = "The awaitable client (from tokio) beside the blocking client")]
struct Args {
    /// The engine's address.
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 8)]
    conns: usize,
    #[arg(long, default_value_t = 10)]
    per_conn: usize,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// Seconds to measure (after a one-second warmup).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Rounds, alternating the modes (medians are printed when above 1).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    calls_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_call: f64,
}

fn main() -> std::process::ExitCode {
    match run_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", env!("CARGO_BIN_NAME"));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let modes: Vec<Mode> = match args.mode {
        Mode::Both => vec![Mode::Async, Mode::Blocking],
        m => vec![m],
    };
    let mut results: Vec<(Mode, Vec<Figures>)> = modes.iter().map(|m| (*m, Vec::new())).collect();
    for round in 0..args.rounds {
        // Alternate which mode goes first, round by round.
        let mut order: Vec<usize> = (0..results.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (mode, figures) = &mut results[i];
            let f = match mode {
                Mode::Async => run_async(&args)?,
                Mode::Blocking => run_blocking(&args)?,
                Mode::Both => unreachable!(),
            };
            println!(
                "round {round} {mode:?}: {:.0} calls/s, p50 {} µs, p99 {} µs, client CPU {:.2} µs/call",
                f.calls_per_sec, f.p50_us, f.p99_us, f.cpu_us_per_call
            );
            figures.push(f);
        }
    }
    if args.rounds > 1 {
        for (mode, figures) in &results {
            let median = |f: fn(&Figures) -> f64| {
                let mut v: Vec<f64> = figures.iter().map(f).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            println!(
                "median {mode:?}: {:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs, client CPU {:.2} µs/call",
                median(|f| f.calls_per_sec),
                median(|f| f.p50_us as f64),
                median(|f| f.p99_us as f64),
                median(|f| f.cpu_us_per_call)
            );
        }
    }
    Ok(())
}

fn clients(args: &Args) -> Result<Vec<Client>, Box<dyn std::error::Error>> {
    // One runtime (one reactor thread) for every connection, as a service would share it.
    let runtime = ClientRuntime::new()?;
    (0..args.conns)
        .map(|_| Ok(Client::builder(&args.target).runtime(&runtime).connect()?))
        .collect()
}

/// CPU time of this whole process so far (every thread), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th,
    // in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn run_async(args: &Args) -> Result<Figures, Box<dyn std::error::Error>> {
    let clients = clients(args)?;
    let payload = Bytes::from(vec![b'x'; args.payload]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (calls, hist, cpu, elapsed) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in &clients {
            for _ in 0..args.per_conn {
                let (client, payload, stop, measuring) = (
                    client.clone(),
                    payload.clone(),
                    stop.clone(),
                    measuring.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let answer = client
                            .call_async("/echo", payload.clone(), Duration::from_secs(5))
                            .await
                            .expect("a call");
                        assert_eq!(answer.len(), payload.len());
                        if measuring.load(Ordering::Relaxed) {
                            h.record(t.elapsed().as_micros() as u64).unwrap();
                            n += 1;
                        }
                    }
                    (n, h)
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu_start = process_cpu();
        let started = Instant::now();
        measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let cpu = process_cpu() - cpu_start;
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut hist = Histogram::<u64>::new(3).unwrap();
        for task in tasks {
            let (n, h) = task.await.expect("a task");
            total += n;
            hist.add(h).unwrap();
        }
        (total, hist, cpu, elapsed)
    });
    Ok(figures(calls, &hist, cpu, elapsed))
}

fn run_blocking(args: &Args) -> Result<Figures, Box<dyn std::error::Error>> {
    let clients = clients(args)?;
    let payload = Bytes::from(vec![b'x'; args.payload]);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for client in &clients {
        for _ in 0..args.per_conn {
            let (client, payload, stop, measuring) = (
                client.clone(),
                payload.clone(),
                stop.clone(),
                measuring.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer = client
                        .call("/echo", payload.clone(), Duration::from_secs(5))
                        .expect("a call");
                    assert_eq!(answer.len(), payload.len());
                    if measuring.load(Ordering::Relaxed) {
                        h.record(t.elapsed().as_micros() as u64).unwrap();
                        n += 1;
                    }
                }
                (n, h)
            }));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let cpu_start = process_cpu();
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = process_cpu() - cpu_start;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3)?;
    for t in threads {
        let (n, h) = t.join().expect("a caller thread");
        total += n;
        hist.add(h)?;
    }
    Ok(figures(total, &hist, cpu, elapsed))
}

fn figures(calls: u64, hist: &Histogram<u64>, cpu: Duration, elapsed: Duration) -> Figures {
    Figures {
        calls_per_sec: calls as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        cpu_us_per_call: cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
    }
}
