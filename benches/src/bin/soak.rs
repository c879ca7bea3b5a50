//! `soak`: runs the engine under loadgen's steady load while a chaos client misbehaves on other
//! connections, then checks that loadgen saw no failure, the engine kept its memory and
//! released every connection, and it shut down cleanly.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringrpc_benches::soak::chaos::{self, Action, ChaosConfig, Tally};
use ringrpc_benches::soak::engine_log::{ExitLine, StatsLog, parse_exit_line};
use ringrpc_benches::soak::rng::Rng;
use ringrpc_benches::soak::{LoadgenSummary, rss_kib};
use ringrpc_loadgen::parse_duration;

/// How long the engine may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the engine may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
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
    /// Extra engine flags, after `--` (soak sets --cores, --listen, --read-timeout, --stats)
    #[arg(last = true)]
    engine_args: Vec<String>,
}

/// A started engine and the output its reader threads gather.
struct Engine {
    child: Child,
    addr: SocketAddr,
    stats: Arc<Mutex<StatsLog>>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr; they end when the engine exits.
    readers: Vec<thread::JoinHandle<()>>,
}

impl Drop for Engine {
    /// An early error must not leave the engine running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child killed if soak returns early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match soak(args) {
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
    let mut child = Command::new(engine)
        .args(["--cores", "2", "--listen", "127.0.0.1:0"])
        .args(["--read-timeout", &args.read_timeout.to_string()])
        .args(["--stats", &STATS_SECS.to_string(), "--log", "info"])
        .args(&args.engine_args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", engine.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout_lines = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(Mutex::new(StatsLog::default()));
    let stderr_tail = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut readers = Vec::new();
    {
        let lines = Arc::clone(&stdout_lines);
        readers.push(thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("engine listening on ") {
                    let _ = ready_tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        }));
    }
    {
        let (stats, tail) = (Arc::clone(&stats), Arc::clone(&stderr_tail));
        readers.push(thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                stats.lock().unwrap().observe(&line);
                let mut tail = tail.lock().unwrap();
                // Keep the last lines only: stats lines arrive all run long.
                if tail.len() >= 200 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        }));
    }
    let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = stderr_tail.lock().unwrap().join(" / ");
            return Err(format!("engine did not start listening: {tail}"));
        }
    };
    // The first address is the fourth word.
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("cannot read the address in {line:?}"))?;
    Ok(Engine {
        child,
        addr,
        stats,
        stdout: stdout_lines,
        stderr_tail,
        readers,
    })
}

/// SIGTERM, then up to [`STOP_TIMEOUT`] to exit; `None` when it had to be killed.
fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Waits for a stats line from every core newer than now, each showing no open connection.
fn wait_open_zero(stats: &Mutex<StatsLog>, cores: usize, limit: Duration) -> Vec<u64> {
    let before = stats.lock().unwrap().generations();
    let deadline = Instant::now() + limit;
    loop {
        let (generations, open) = {
            let log = stats.lock().unwrap();
            (log.generations(), log.open())
        };
        let fresh = generations.len() >= cores
            && (0..cores).all(|c| generations[c] > before.get(c).copied().unwrap_or(0));
        if (fresh && open.iter().all(|&n| n == 0)) || Instant::now() >= deadline {
            return open;
        }
        thread::sleep(Duration::from_millis(100));
    }
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
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
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

    let work = std::env::temp_dir().join(format!("ringrpc-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let json = work.join("loadgen.json");
    let log_path = work.join("loadgen.log");
    let log = File::create(&log_path).map_err(|e| format!("cannot create loadgen log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| format!("loadgen log: {e}"))?;
    let duration_arg = format!("{}ms", args.duration.as_millis());
    let mut loadgen = KillOnDrop(
        Command::new(&loadgen_bin)
            .args(["--target", &engine.addr.to_string()])
            .args([
                "--conns",
                "4",
                "--per-conn",
                "8",
                "--duration",
                &duration_arg,
            ])
            .args(["--warmup", "0s", "--quiet", "--timeout", "5s", "--json"])
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", loadgen_bin.display()))?,
    );

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
                "engine RSS: {:.1} MiB before, {:.1} MiB after (bound +{} MiB)",
                mib(rss_before),
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
