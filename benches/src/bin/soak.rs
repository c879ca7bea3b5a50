//! `soak`: runs the engine under loadgen's steady load while a chaos client misbehaves on other
//! connections, then checks that loadgen saw no failure, the engine kept its memory and
//! released every connection, and it shut down cleanly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringrpc_benches::soak::chaos::{self, Action, ChaosConfig, Tally};
use ringrpc_benches::soak::engine_log::{ExitLine, parse_exit_line};
use ringrpc_benches::soak::process::{self, Engine, RssSampler, stop};
use ringrpc_benches::soak::process::{STOP_TIMEOUT, wait_deadline, wait_open_zero};
use ringrpc_benches::soak::rng::Rng;
use ringrpc_benches::soak::{LoadgenSummary, chat, mixed, rss_kib};
use ringrpc_loadgen::parse_duration;

/// Settle time before the first memory reading.
const SETTLE: Duration = Duration::from_secs(1);
/// Headroom for loadgen beyond its duration and request timeout.
const LOADGEN_SLACK: Duration = Duration::from_secs(30);
/// The engine's `--stats` interval; the open-connection check waits for lines after the chaos.
const STATS_SECS: f64 = 0.5;

/// Soak test: engine + loadgen + a chaos client, then leak and accounting checks.
#[derive(Parser, Debug)]
#[command(name = "soak", about)]
struct Args {
    /// Directory holding the `engine` and `loadgen` binaries [default: this binary's directory]
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// How long loadgen and the chaos client run: 60s, 500ms, 2m or plain seconds
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the chaos client's choices [default: from the clock; printed]
    #[arg(long)]
    seed: Option<u64>,
    /// Most the engine's resident memory may grow over the run, in MiB
    #[arg(long, default_value_t = 64)]
    rss_bound_mib: u64,
    /// The engine's --read-timeout, in seconds (slowloris connections must close within it)
    #[arg(long, default_value_t = 2.0)]
    read_timeout: f64,
    /// Chaos client threads
    #[arg(long, default_value_t = 2)]
    chaos_threads: usize,
    /// Everything at once: TCP, WebSocket and UDP on; loadgen also over WebSocket and UDP,
    /// of notifies, streams and pub/sub; clients subscribing and unsubscribing, streaming
    /// with slow consumers; a chat workload through chat-server
    #[arg(long)]
    mixed: bool,
    /// Instead of the soak: kill chat-server with SIGKILL at random moments under load this
    /// many times, restarting it on its database, then check no acknowledged message was
    /// lost (or delivered twice to one login)
    #[arg(long, value_name = "RESTARTS")]
    chat_crash: Option<usize>,
    /// Instead of the soak: a cluster (nats-server, three engine nodes, HAProxy) under load
    /// for --duration while nodes are killed and restarted and nats-server restarted
    #[arg(long)]
    cluster: bool,
    /// Extra engine flags, after `--` (soak sets --cores, --listen, --read-timeout, --stats)
    #[arg(last = true)]
    engine_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match args.chat_crash {
        Some(restarts) => chat_crash(&args, restarts),
        None if args.cluster => cluster(&args),
        None => soak(args),
    };
    match outcome {
        Ok(failed) if failed.is_empty() => {
            println!("verdict: PASS");
            ExitCode::SUCCESS
        }
        Ok(failed) => {
            println!("verdict: FAIL ({})", failed.join(", "));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: error: {e}");
            println!("verdict: FAIL (setup: {e})");
            ExitCode::from(2)
        }
    }
}

fn bin_dir(args: &Args) -> Result<PathBuf, String> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

fn start_engine(args: &Args, engine: &Path) -> Result<Engine, String> {
    let mut flags: Vec<String> = ["--cores", "2", "--listen", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    flags.extend(["--read-timeout".into(), args.read_timeout.to_string()]);
    flags.extend([
        "--stats".into(),
        STATS_SECS.to_string(),
        "--log".into(),
        "info".into(),
    ]);
    if args.mixed {
        flags.extend([
            "--udp-listen".into(),
            "127.0.0.1:0".into(),
            "--pubsub".into(),
        ]);
    }
    flags.extend(args.engine_args.iter().cloned());
    process::start_engine(engine, &flags)
}

fn seed_of(args: &Args) -> u64 {
    args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

fn chat_crash(args: &Args, restarts: usize) -> Result<Vec<String>, String> {
    let bin = bin_dir(args)?.join("chat-server");
    let seed = seed_of(args);
    println!(
        "chat crash loop: seed {seed}, {restarts} SIGKILLs, {}",
        bin.display()
    );
    let started = Instant::now();
    let r = chat::crash_loop(&bin, 6, restarts, seed)?;
    println!(
        "chat crash loop: {} restarts in {:.0}s; {} messages acknowledged, {} unacknowledged \
         (their sender saw the crash), {} deliveries, {} of them again after a crash",
        r.restarts,
        started.elapsed().as_secs_f64(),
        r.acked,
        r.unacked,
        r.delivered,
        r.redelivered
    );
    for p in &r.problems {
        println!("problem: {p}");
    }
    Ok(if r.problems.is_empty() {
        vec![]
    } else {
        vec!["chat-crash".into()]
    })
}

fn cluster(args: &Args) -> Result<Vec<String>, String> {
    let engine = bin_dir(args)?.join("engine");
    let seed = seed_of(args);
    println!(
        "cluster chaos: seed {seed}, {:?}, {}",
        args.duration,
        engine.display()
    );
    let r = ringrpc_benches::soak::cluster::run(&engine, args.duration, seed)?;
    println!(
        "cluster chaos: {} node kills, {} nats-server restarts, {} client failovers; calls: \
         {} answered (each its own payload), {} failed over a fault; {} batches published \
         while whole, {} deliveries, each exactly once; {} publications during faults, none \
         delivered twice",
        r.node_kills,
        r.nats_restarts,
        r.failovers,
        r.calls_answered,
        r.calls_failed,
        r.batches,
        r.batch_deliveries,
        r.published_during_faults
    );
    for p in &r.problems {
        println!("problem: {p}");
    }
    Ok(if r.problems.is_empty() {
        vec![]
    } else {
        vec!["cluster".into()]
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn soak(args: Args) -> Result<Vec<String>, String> {
    let dir = bin_dir(&args)?;
    let (engine_bin, loadgen_bin) = (dir.join("engine"), dir.join("loadgen"));
    for bin in [&engine_bin, &loadgen_bin] {
        if !bin.is_file() {
            return Err(format!("{} not found (build it first)", bin.display()));
        }
    }
    let seed = seed_of(&args);
    let read_timeout = Duration::try_from_secs_f64(args.read_timeout)
        .map_err(|_| format!("bad --read-timeout {}", args.read_timeout))?;
    println!(
        "soak: seed {seed}, duration {:?}, engine {}",
        args.duration,
        engine_bin.display()
    );

    let mut engine = start_engine(&args, &engine_bin)?;
    let pid = engine.child.id();
    println!("soak: engine pid {pid} on {}", engine.addr);
    thread::sleep(SETTLE);
    let rss_before = rss_kib(pid)?;
    let rss = RssSampler::start(pid);

    let work = std::env::temp_dir().join(format!("ringrpc-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let json = work.join("loadgen.json");
    let log_path = work.join("loadgen.log");
    let mut loadgen = process::spawn_loadgen(
        &loadgen_bin,
        &engine.addr.to_string(),
        &["--conns", "4", "--per-conn", "8"],
        args.duration,
        &json,
        &log_path,
    )?;

    let mixed = if args.mixed {
        Some(mixed::MixedRun::start(
            &dir,
            engine.addr,
            engine.udp,
            args.duration,
            seed,
            &work,
        )?)
    } else {
        None
    };
    let config = ChaosConfig {
        target: engine.addr,
        until: Instant::now() + args.duration,
        read_timeout,
    };
    let chaos_threads: Vec<_> = (0..args.chaos_threads.max(1))
        .map(|i| {
            let config = config.clone();
            thread::spawn(move || chaos::run(&config, seed.wrapping_add(i as u64)))
        })
        .collect();
    let mut tally = Tally::default();
    for handle in chaos_threads {
        tally.merge(handle.join().map_err(|_| "a chaos thread panicked")?);
    }
    let loadgen_status = wait_deadline(
        &mut loadgen.0,
        args.duration + Duration::from_secs(5) + LOADGEN_SLACK,
    );

    let mut failed = Vec::new();
    let mut problems = Vec::new();
    let mixed = mixed.map(|m| m.finish(args.duration + Duration::from_secs(5) + LOADGEN_SLACK));
    let report = std::fs::read_to_string(&json)
        .map_err(|e| e.to_string())
        .and_then(|text| LoadgenSummary::from_json(&text).map_err(|e| e.to_string()));

    // Every client is gone: a fresh echo must work and every connection must be released.
    let probe = chaos::echo(engine.addr, &mut Rng::new(seed ^ 0x50_52_4f_42_45));
    let open = wait_open_zero(&engine.stats, 2, read_timeout + Duration::from_secs(5));
    let rss_after = rss_kib(pid);
    let status = stop(&mut engine.child);
    // The readers end at the pipes' EOF, so the exit report is complete once they are joined.
    for reader in std::mem::take(&mut engine.readers) {
        let _ = reader.join();
    }
    let exit_lines: Vec<ExitLine> = engine
        .stdout
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| parse_exit_line(l))
        .collect();
    let closed_total = engine.stats.lock().unwrap().closed_total;

    println!("chaos actions (seed {seed}):");
    for action in Action::ALL {
        println!(
            "  {:<18} {:>7} done, {} unexpected",
            action.to_string(),
            tally.done(action),
            tally.unexpected(action)
        );
    }
    for sample in &tally.samples {
        println!("  unexpected: {sample}");
    }
    match &report {
        Ok(r) => {
            let c = &r.counts;
            println!(
                "loadgen: {:.0} req/s, sent {}, answered {}, errors {}, mismatches {}, timeouts {}, lost {}, unexpected {}, connection failures {}",
                r.requests_per_second,
                c.sent,
                c.answered,
                c.errors,
                c.mismatches,
                c.timeouts,
                c.lost,
                c.unexpected,
                c.connection_failures
            );
            let p = r.problems();
            if !p.is_empty() {
                failed.push("loadgen".to_string());
                problems.extend(p);
            }
        }
        Err(e) => {
            failed.push("loadgen".to_string());
            problems.push(format!(
                "no loadgen report ({e}; exit {loadgen_status:?}; log {})",
                log_path.display()
            ));
        }
    }
    if let Some(m) = mixed {
        for line in &m.lines {
            println!("{line}");
        }
        failed.extend(m.failed);
        problems.extend(m.problems);
    }
    if loadgen_status.is_none() {
        failed.push("loadgen-exit".into());
        problems.push("loadgen did not finish in time; killed".into());
    }
    if tally.unexpected(Action::Echo) > 0 {
        failed.push("chaos-echo".into());
        problems.push(format!(
            "{} of {} chaos echoes failed",
            tally.unexpected(Action::Echo),
            tally.done(Action::Echo)
        ));
    }
    let other_unexpected: u64 = Action::ALL
        .iter()
        .filter(|&&a| a != Action::Echo)
        .map(|&a| tally.unexpected(a))
        .sum();
    if other_unexpected > 0 {
        failed.push("chaos-outcomes".into());
        problems.push(format!(
            "{other_unexpected} misbehaving connections were not handled as expected"
        ));
    }
    if let Err(e) = &probe {
        failed.push("probe-echo".into());
        problems.push(format!("echo after the chaos failed: {e}"));
    }
    if open.len() < 2 || open.iter().any(|&n| n > 0) {
        failed.push("open-connections".into());
        problems.push(format!(
            "open connections per core after the chaos: {open:?} (want 0 on both)"
        ));
    }
    let accepted = exit_lines
        .iter()
        .find(|l| l.core.is_none())
        .map(|l| l.accepted);
    match accepted {
        Some(accepted) if accepted == closed_total => {}
        Some(accepted) => {
            failed.push("closed-vs-accepted".into());
            problems.push(format!(
                "engine accepted {accepted} connections but its stats lines closed {closed_total}"
            ));
        }
        None => {
            failed.push("engine-report".into());
            problems.push("no `total:` line in the engine's exit report".into());
        }
    }
    match status {
        Some(s) if s.success() => {}
        Some(s) => {
            failed.push("engine-exit".into());
            problems.push(format!("engine exited with {s}"));
        }
        None => {
            failed.push("engine-exit".into());
            problems.push(format!(
                "engine still running {STOP_TIMEOUT:?} after SIGTERM; killed"
            ));
        }
    }
    let bound_kib = args.rss_bound_mib * 1024;
    match rss_after {
        Ok(after) => {
            println!(
                "engine RSS: {:.1} MiB before, {:.1} MiB at the peak, {:.1} MiB after (bound +{} MiB)",
                mib(rss_before),
                mib(rss.peak_kib().max(after)),
                mib(after),
                args.rss_bound_mib
            );
            if after > rss_before + bound_kib {
                failed.push("rss".into());
                problems.push(format!("RSS grew by {:.1} MiB", mib(after - rss_before)));
            }
        }
        Err(e) => {
            failed.push("rss".into());
            problems.push(format!("no RSS after the run: {e}"));
        }
    }
    for line in &exit_lines {
        let name = line
            .core
            .map_or_else(|| "total".to_string(), |c| format!("core {c}"));
        println!(
            "engine {name}: {} connections accepted, {} requests",
            line.accepted, line.requests
        );
    }
    println!(
        "engine connections closed (summed from its stats lines): {closed_total}; open at the end: {open:?}"
    );
    for p in &problems {
        println!("problem: {p}");
    }
    if !failed.is_empty() {
        let tail = engine.stderr_tail.lock().unwrap();
        for line in tail.iter().rev().take(5).rev() {
            println!("engine stderr: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(failed)
}
