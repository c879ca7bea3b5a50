//! Running one server and loadgen against it: start the server pinned, wait until it listens,
//! drive it with loadgen pinned to another CPU, then stop it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::idle::{IdleFigures, IdleOutcome, IdleRss, Prelude, settled, vm_rss_bytes};
use super::loadgen_report::LoadgenReport;
use ringrpc_protocol::{DEFAULT_MAX_BODY, Frame, HEADER_LEN, frame_len};

use super::servers::{Launch, PORT_PLACEHOLDER, ServerSpec};
use super::settings::{LoadShape, Pinning, loadgen_duration};
use super::summary::RunOutcome;

/// How long a server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// loadgen's own `--timeout`, the longest it waits for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Headroom beyond warmup + duration + request timeout before loadgen counts as hung.
const LOADGEN_SLACK: Duration = Duration::from_secs(30);
/// Lines of output quoted when a run fails.
const TAIL_LINES: usize = 4;

/// Where the binaries are and how each side is pinned.
#[derive(Debug, Clone)]
pub struct Runner {
    pub bin_dir: PathBuf,
    pub load: LoadShape,
    pub pinning: Pinning,
}

/// Output files of one run.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// loadgen's `--json`.
    pub json: PathBuf,
    /// The server's stdout and stderr.
    pub server_log: PathBuf,
    /// loadgen's text report and stderr.
    pub loadgen_log: PathBuf,
}

/// A started server.
#[derive(Debug)]
struct RunningServer {
    child: Child,
    addr: SocketAddr,
}

/// Fails with a clear message unless `taskset` exists and can pin to `cpu`.
pub fn check_taskset(cpu: usize) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match status {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(
            "taskset not found: install util-linux (apt-get install util-linux), it pins the server and loadgen to their CPUs".into(),
        ),
        Err(e) => Err(format!("cannot run taskset: {e}")),
        Ok(output) if !output.status.success() => Err(format!(
            "taskset cannot pin to CPU {cpu}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// `text` quoted for a POSIX shell when it needs it.
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%{}".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last few non-empty lines of `text`, or from its first `error` line on, as one line.
pub fn failure_excerpt(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let error_line = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().starts_with("error"));
    let excerpt = match error_line {
        Some(first) => &lines[first..lines.len().min(first + TAIL_LINES)],
        None => &lines[lines.len().saturating_sub(TAIL_LINES)..],
    };
    excerpt.join(" / ")
}

impl Runner {
    fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The binaries `servers` need, plus loadgen, that are missing from the bin dir.
    pub fn missing_binaries(&self, servers: &[ServerSpec]) -> Vec<PathBuf> {
        let mut needed = vec!["loadgen"];
        for spec in servers {
            if let Launch::Bundled { binary, .. } | Launch::BundledUdp { binary, .. } = spec.launch
            {
                if !needed.contains(&binary) {
                    needed.push(binary);
                }
            }
        }
        needed
            .into_iter()
            .map(|name| self.binary(name))
            .filter(|path| !path.is_file())
            .collect()
    }

    /// The server's program and arguments, `taskset` included; `port` fills an external
    /// server's `{port}`.
    fn server_command(&self, spec: &ServerSpec, port: &str) -> (String, Vec<String>) {
        let mut args = vec!["-c".to_owned(), self.pinning.server_cpu.to_string()];
        match &spec.launch {
            Launch::Bundled {
                binary,
                args: server_args,
            } => {
                args.push(self.binary(binary).display().to_string());
                args.extend(server_args.iter().map(|a| a.to_string()));
            }
            Launch::BundledUdp {
                binary,
                args: server_args,
            } => {
                args.push(self.binary(binary).display().to_string());
                args.extend(
                    server_args
                        .iter()
                        .map(|a| a.replace(PORT_PLACEHOLDER, port)),
                );
            }
            Launch::External { command_template } => {
                // exec keeps the server's PID the one we signal and measure.
                let command = command_template.replace(PORT_PLACEHOLDER, port);
                args.extend(["sh".into(), "-c".into(), format!("exec {command}")]);
            }
        }
        ("taskset".into(), args)
    }

    /// loadgen's program and arguments against `target`, server `pid`, writing `json`.
    fn loadgen_command(
        &self,
        spec: &ServerSpec,
        target: &str,
        pid: &str,
        json: &str,
    ) -> (String, Vec<String>) {
        let load = &self.load;
        let cpu = self.pinning.loadgen_cpu.to_string();
        let mut args: Vec<String> = vec![
            "-c".into(),
            cpu.clone(),
            self.binary("loadgen").display().to_string(),
            "--target".into(),
            target.into(),
            "--conns".into(),
            load.conns.to_string(),
            "--per-conn".into(),
            load.per_conn.to_string(),
            "--payload".into(),
            load.payload_bytes.to_string(),
            "--duration".into(),
            loadgen_duration(load.duration),
            "--warmup".into(),
            loadgen_duration(load.warmup),
            "--timeout".into(),
            loadgen_duration(REQUEST_TIMEOUT),
            "--cpus".into(),
            cpu,
            "--threads".into(),
            "1".into(),
            "--quiet".into(),
            "--json".into(),
            json.into(),
            "--server-pid".into(),
            pid.into(),
        ];
        args.extend(spec.loadgen_args.iter().map(|a| a.to_string()));
        ("taskset".into(), args)
    }

    /// Markdown naming the commands of one run of `spec`, with ADDR and PID left symbolic.
    pub fn describe_run(&self, spec: &ServerSpec) -> String {
        let (program, args) = self.server_command(spec, "PORT");
        let server = command_line(&program, &args);
        let target = match spec.launch {
            Launch::Bundled { .. } => "ADDR",
            Launch::External { .. } | Launch::BundledUdp { .. } => "127.0.0.1:PORT",
        };
        let (program, args) =
            self.loadgen_command(spec, target, "PID", &format!("{}-roundN.json", spec.name));
        let loadgen = command_line(&program, &args);
        format!("{}: `{server}` then `{loadgen}`", spec.name)
    }

    /// Runs `spec` once: a fresh server, one loadgen run, the server stopped again.
    pub fn run_once(&self, spec: &ServerSpec, files: &RunFiles) -> RunOutcome {
        let mut server = match self.start_server(spec, &files.server_log) {
            Ok(server) => server,
            Err(why) => return RunOutcome::Failed(why),
        };
        let measured = self.run_loadgen(spec, &server, files);
        let stopped = stop(&mut server.child);
        match (measured, stopped) {
            (Err(why), _) => RunOutcome::Failed(why),
            (Ok(_), Err(why)) => RunOutcome::Failed(why),
            (Ok(report), Ok(())) => RunOutcome::Measured(report),
        }
    }

    /// Starts `spec` on a port chosen here, then waits until `ready` says it serves there.
    fn start_on_port(
        &self,
        spec: &ServerSpec,
        port: u16,
        stdout: File,
        stderr: File,
        log_path: &Path,
        ready: fn(&mut Child, SocketAddr) -> Result<(), String>,
    ) -> Result<RunningServer, String> {
        let (program, args) = self.server_command(spec, &port.to_string());
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", command_line(&program, &args)))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match ready(&mut child, addr) {
            Ok(()) => Ok(RunningServer { child, addr }),
            Err(why) => Err(abandon(child, why, log_path)),
        }
    }

    fn start_server(&self, spec: &ServerSpec, log_path: &Path) -> Result<RunningServer, String> {
        let log = File::create(log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let clone_log = || {
            log.try_clone()
                .map_err(|e| format!("cannot share {}: {e}", log_path.display()))
        };
        match &spec.launch {
            Launch::Bundled { .. } => {
                let (program, args) = self.server_command(spec, "0");
                let mut child = Command::new(&program)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(clone_log()?)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", command_line(&program, &args)))?;
                let stdout = child.stdout.take().expect("stdout was piped");
                let lines = forward_lines(stdout, log);
                match wait_for_announcement(&mut child, &lines) {
                    Ok(addr) => Ok(RunningServer { child, addr }),
                    Err(why) => Err(abandon(child, why, log_path)),
                }
            }
            Launch::External { .. } => self.start_on_port(
                spec,
                free_port()?,
                clone_log()?,
                log,
                log_path,
                wait_until_accepting,
            ),
            Launch::BundledUdp { .. } => self.start_on_port(
                spec,
                free_udp_port()?,
                clone_log()?,
                log,
                log_path,
                wait_until_answering_udp,
            ),
        }
    }

    fn run_loadgen(
        &self,
        spec: &ServerSpec,
        server: &RunningServer,
        files: &RunFiles,
    ) -> Result<LoadgenReport, String> {
        // A stale JSON from an earlier invocation must not pass for this run's.
        let _ = std::fs::remove_file(&files.json);
        let (program, args) = self.loadgen_command(
            spec,
            &server.addr.to_string(),
            &server.child.id().to_string(),
            &files.json.display().to_string(),
        );
        let deadline = self.load.warmup + self.load.duration + REQUEST_TIMEOUT + LOADGEN_SLACK;
        let output = run_with_deadline(Command::new(&program).args(&args), deadline)
            .map_err(|e| format!("cannot run loadgen: {e}"))?;
        let mut log = Vec::new();
        log.extend_from_slice(format!("$ {}\n", command_line(&program, &args)).as_bytes());
        log.extend_from_slice(&output.stdout);
        log.extend_from_slice(&output.stderr);
        let _ = std::fs::write(&files.loadgen_log, log);
        match output.status {
            None => return Err(format!("loadgen still running after {deadline:?}; killed")),
            Some(status) if !status.success() => {
                return Err(format!(
                    "loadgen {status}: {}",
                    loadgen_failure(&output, &files.json)
                ));
            }
            Some(_) => {}
        }
        let json = std::fs::read_to_string(&files.json).map_err(|e| {
            format!(
                "loadgen succeeded but {} is unreadable: {e}",
                files.json.display()
            )
        })?;
        LoadgenReport::from_json(&json)
            .map_err(|e| format!("{} is not a loadgen report: {e}", files.json.display()))
    }
}

/// How often an idle server's RSS is read while it settles.
const RSS_POLL: Duration = Duration::from_millis(250);
/// Readings in a row that must agree before RSS counts as settled.
const RSS_WINDOW: usize = 4;
/// Longest wait for RSS to settle; the last reading is taken after it.
const RSS_SETTLE_LIMIT: Duration = Duration::from_secs(15);

impl Runner {
    /// Starts `spec`, measures its RSS, opens `connections` connections that each make one
    /// small call (see [`Prelude`]) and stay idle, measures again once RSS settles, then
    /// closes them and stops the server.
    pub fn idle_rss(&self, spec: &ServerSpec, connections: usize, server_log: &Path) -> IdleRss {
        let grpc = spec
            .loadgen_args
            .windows(2)
            .any(|w| w == ["--proto", "grpc"]);
        let prelude = if grpc {
            Prelude::Http2Handshake
        } else {
            Prelude::ArpcEcho
        };
        let outcome = match self.measure_idle(spec, connections, prelude, server_log) {
            Ok(figures) => IdleOutcome::Measured(figures),
            Err(failure) => IdleOutcome::Failed { failure },
        };
        IdleRss {
            server: spec.name.clone(),
            connections,
            prelude,
            outcome,
        }
    }

    fn measure_idle(
        &self,
        spec: &ServerSpec,
        connections: usize,
        prelude: Prelude,
        server_log: &Path,
    ) -> Result<IdleFigures, String> {
        if matches!(spec.launch, Launch::BundledUdp { .. }) {
            return Err("a UDP server holds no connections".into());
        }
        // Huge pages off for the server (it keeps the setting across exec): its RSS then grows
        // in 4 KiB pages, so the figure per connection is not rounded by where 2 MiB pages
        // happen to fall (at 10,000 connections one such page is 210 bytes per connection).
        let thp_was_off = ringrpc_uring::sys::thp_disabled().unwrap_or(false);
        ringrpc_uring::sys::set_thp_disabled(true)
            .map_err(|e| format!("cannot turn transparent huge pages off: {e}"))?;
        let started = self.start_server(spec, server_log);
        ringrpc_uring::sys::set_thp_disabled(thp_was_off)
            .map_err(|e| format!("cannot restore transparent huge pages: {e}"))?;
        let mut server = started?;
        let pid = server.child.id();
        let measured = (|| {
            let before = settled_rss(pid)?;
            let fds_before = open_fds(pid);
            let mut open = Vec::with_capacity(connections);
            for i in 0..connections {
                let stream = open_idle_connection(server.addr, prelude, i as u64)
                    .map_err(|e| format!("connection {} of {connections}: {e}", i + 1))?;
                open.push(stream);
            }
            let after = settled_rss(pid)?;
            let fds_gained = match (fds_before, open_fds(pid)) {
                (Some(a), Some(b)) => Some(b as i64 - a as i64),
                _ => None,
            };
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("server exited ({status}) holding idle connections"));
            }
            drop(open);
            Ok(IdleFigures::new(before, after, connections, fds_gained))
        })();
        let stopped = stop(&mut server.child);
        let figures = measured?;
        stopped?;
        Ok(figures)
    }
}

/// The server's RSS once [`RSS_WINDOW`] readings in a row agree within 64 KiB.
fn settled_rss(pid: u32) -> Result<u64, String> {
    let deadline = Instant::now() + RSS_SETTLE_LIMIT;
    let mut readings = Vec::new();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
        let rss =
            vm_rss_bytes(&status).ok_or_else(|| format!("/proc/{pid}/status has no VmRSS line"))?;
        readings.push(rss);
        if settled(&readings, RSS_WINDOW, 64 * 1024) || Instant::now() >= deadline {
            return Ok(rss);
        }
        thread::sleep(RSS_POLL);
    }
}

/// Descriptors the process holds, if /proc lets us count them.
fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count())
}

/// A connection to `addr` that has done `prelude` and is now idle.
fn open_idle_connection(addr: SocketAddr, prelude: Prelude, seq: u64) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_nodelay(true)?;
    match prelude {
        Prelude::ArpcEcho => {
            let request = Frame::request(seq + 1, &b"/echo"[..], vec![b'i'; 32]).to_bytes();
            stream.write_all(&request)?;
            let mut head = [0u8; HEADER_LEN];
            stream.read_exact(&mut head)?;
            let len = frame_len(&head, DEFAULT_MAX_BODY)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
            let mut rest = vec![0u8; len - HEADER_LEN];
            stream.read_exact(&mut rest)?;
        }
        Prelude::Http2Handshake => {
            // Client preface, then an empty SETTINGS frame.
            stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")?;
            stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])?;
            // The server's SETTINGS (type 4) comes first; acknowledge it.
            let mut head = [0u8; 9];
            stream.read_exact(&mut head)?;
            if head[3] != 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the server's first HTTP/2 frame is type {}, not SETTINGS",
                        head[3]
                    ),
                ));
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload)?;
            stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])?;
        }
    }
    Ok(stream)
}

/// Why loadgen failed: the failures its report lists (it writes one when requests went wrong),
/// else its stderr (usage and connection problems), else its stdout.
fn loadgen_failure(output: &CapturedOutput, json: &Path) -> String {
    let reported = std::fs::read_to_string(json)
        .ok()
        .and_then(|text| LoadgenReport::from_json(&text).ok())
        .map(|report| report.failures.join("; "))
        .filter(|failures| !failures.is_empty());
    if let Some(failures) = reported {
        return failures;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        return failure_excerpt(&stderr);
    }
    failure_excerpt(&String::from_utf8_lossy(&output.stdout))
}

/// Copies `source` line by line into `log`, and sends each line on the returned channel.
fn forward_lines(source: impl Read + Send + 'static, mut log: File) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            // The receiver stops listening once the address is known; keep draining anyway
            // so the server never blocks on a full pipe.
            let _ = sender.send(line);
        }
    });
    receiver
}

/// The address in a `... listening on ADDR ...` line.
pub fn announced_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn wait_for_announcement(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(addr) = announced_address(&line) {
                    return Ok(addr);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(exit_reason(
                    child,
                    "closed its stdout without announcing an address",
                ));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("server exited ({status}) before listening"));
        }
    }
    Err(format!(
        "server printed no \"listening on\" line within {READY_TIMEOUT:?}"
    ))
}

fn wait_until_accepting(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "server exited ({status}) before accepting on {addr}"
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "server did not accept TCP connections on {addr} within {READY_TIMEOUT:?}"
    ))
}

/// Waits until the server at `addr` answers an arpc `/echo` request datagram with any
/// datagram (the engine's response, or a reflector's copy of the request).
fn wait_until_answering_udp(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let probe = UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| {
            socket.connect(addr)?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(socket)
        })
        .map_err(|e| format!("cannot open a UDP probe socket: {e}"))?;
    let request = Frame::request(1, &b"/echo"[..], &b"ready?"[..]).to_bytes();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "server exited ({status}) before answering on UDP {addr}"
            ));
        }
        // Refused sends and receives (nothing bound yet) just mean "not yet".
        let _ = probe.send(&request);
        if probe.recv(&mut buf).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "server did not answer an arpc request datagram on UDP {addr} within {READY_TIMEOUT:?}"
    ))
}

/// A UDP port that was free a moment ago.
fn free_udp_port() -> Result<u16, String> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free UDP port: {e}"))
}

fn exit_reason(child: &mut Child, otherwise: &str) -> String {
    // Give a dying process a moment so its exit status can be reported.
    thread::sleep(Duration::from_millis(100));
    match child.try_wait() {
        Ok(Some(status)) => format!("server exited ({status}) before listening"),
        _ => format!("server {otherwise}"),
    }
}

/// Kills a server that never became ready and returns `why` with the tail of its log.
fn abandon(mut child: Child, why: String, log_path: &Path) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let excerpt = failure_excerpt(&log);
    if excerpt.is_empty() {
        why
    } else {
        format!("{why}; server log: {excerpt}")
    }
}

/// A port that was free a moment ago, for a server that cannot be told to pick its own.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL. Fails only if the server had
/// already died, which means the run measured a crashing server.
fn stop(child: &mut Child) -> Result<(), String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!("server exited ({status}) during the run"));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "compare: server pid {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// What a process left behind; `status` is `None` when it was killed at the deadline.
struct CapturedOutput {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn run_with_deadline(command: &mut Command, limit: Duration) -> io::Result<CapturedOutput> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let collect = |mut source: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = source.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout was piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr was piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(CapturedOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_servers_announcement() {
        assert_eq!(
            announced_address("engine listening on 127.0.0.1:4242 with 1 cores (methods: /echo)"),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        assert_eq!(
            announced_address("peer-tokio listening on 127.0.0.1:5000"),
            Some("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(announced_address("starting up"), None);
    }

    #[test]
    fn excerpts_prefer_the_error_line() {
        let clap = "error: unexpected argument '--proto' found\n\n  tip: to pass '--proto' as a value, use '-- --proto'\n\nUsage: loadgen [OPTIONS]\n\nFor more information, try '--help'.\n";
        assert!(failure_excerpt(clap).starts_with("error: unexpected argument '--proto' found"));
        assert_eq!(failure_excerpt("a\nb\n\nc\nd\ne\n"), "b / c / d / e");
    }

    #[test]
    fn quoting_for_a_shell() {
        assert_eq!(shell_quote("--conns"), "--conns");
        assert_eq!(shell_quote("exec srv --addr :1"), "'exec srv --addr :1'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
