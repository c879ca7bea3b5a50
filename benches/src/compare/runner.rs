//! Running one server and loadgen against it: start the server pinned, wait until it listens,
//! drive it with loadgen pinned to another CPU, then stop it. How child processes are run and
//! stopped is `process`'s, when a server is ready `readiness`'s, and the idle-memory
//! measurement `runner::idle_rss`'s.

mod idle_rss;

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::loadgen_report::LoadgenReport;
use super::process::{CapturedOutput, abandon, command_line, run_with_deadline, stop};
pub use super::process::{failure_excerpt, shell_quote};
pub use super::readiness::announced_address;
use super::readiness::{
    forward_lines, free_port, free_udp_port, wait_for_announcement, wait_until_accepting,
    wait_until_answering_udp,
};
use super::results::RunOutcome;
use super::servers::{Launch, PORT_PLACEHOLDER, ServerSpec};
use super::settings::{LoadShape, Pinning, loadgen_duration};

/// loadgen's own `--timeout`, the longest it waits for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Headroom beyond warmup + duration + request timeout before loadgen counts as hung.
const LOADGEN_SLACK: Duration = Duration::from_secs(30);

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
        if let Some(rate) = load.rate {
            args.extend(["--rate".into(), format!("{rate:.0}")]);
        }
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
