//! The processes a soak runs: the engine (started, its output gathered, stopped with
//! SIGTERM), loadgen and chat-server children killed if the soak returns early, and the
//! engine's resident memory sampled through the run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::engine_log::StatsLog;
use super::rss_kib;

/// How long the engine may take to print its listening line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the engine may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A started engine and the output its reader threads gather.
#[derive(Debug)]
pub struct Engine {
    pub child: Child,
    /// The first TCP address it listens on.
    pub addr: SocketAddr,
    /// Its UDP address, when it serves UDP.
    pub udp: Option<SocketAddr>,
    pub stats: Arc<Mutex<StatsLog>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr_tail: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr; they end when the engine exits.
    pub readers: Vec<thread::JoinHandle<()>>,
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

/// A child killed if the soak returns early.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `loadgen` against `target` with `flags` for `duration` (no warmup, 5 s timeout),
/// its JSON report to `json` and its output to `log`; killed if the soak returns early.
pub fn spawn_loadgen<S: AsRef<std::ffi::OsStr>>(
    loadgen: &Path,
    target: &str,
    flags: &[S],
    duration: Duration,
    json: &Path,
    log: &Path,
) -> Result<KillOnDrop, String> {
    let out =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(loadgen)
        .args(["--target", target])
        .args(flags)
        .args(["--duration", &format!("{}ms", duration.as_millis())])
        .args(["--warmup", "0s", "--quiet", "--timeout", "5s", "--json"])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", loadgen.display()))?;
    Ok(KillOnDrop(child))
}

/// Starts `engine` with `args`, gathers its output and waits for its listening line.
pub fn start_engine(engine: &Path, args: &[String]) -> Result<Engine, String> {
    let mut child = Command::new(engine)
        .args(args)
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
    // The first address is the fourth word; a UDP one is `udp:ADDR` among the others.
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("cannot read the address in {line:?}"))?;
    let udp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp:"))
        .and_then(|a| a.parse().ok());
    Ok(Engine {
        child,
        addr,
        udp,
        stats,
        stdout: stdout_lines,
        stderr_tail,
        readers,
    })
}

/// SIGTERM, then up to [`STOP_TIMEOUT`] to exit; `None` when it had to be killed.
pub fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, "-TERM");
    wait_deadline(child, STOP_TIMEOUT)
}

/// Sends `sig` (`-TERM`, `-KILL`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// Waits up to `limit` for `child` to exit, else kills it and returns `None`.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
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
pub fn wait_open_zero(stats: &Mutex<StatsLog>, cores: usize, limit: Duration) -> Vec<u64> {
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

/// A process's resident memory sampled every 200 ms until stopped: the peak seen.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(200));
            }
        });
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The peak resident memory seen, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
