//! Running one server and loadgen against it: start the server pinned, wait until it listens,
//! drive it with loadgen pinned to another CPU, then stop it. How child processes are run and
//! stopped is `process`'s, when a server is ready `readiness`'s, and the idle-memory
//! measurement `runner::idle_rss`'s.

mod haproxy;
mod idle_rss;

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::certs::Certificate;
use super::loadgen_report::LoadgenReport;
use super::process::{CapturedOutput, abandon, command_line, run_with_deadline, stop};
pub use super::process::{failure_excerpt, shell_quote};
pub use super::readiness::announced_address;
use super::readiness::{
    forward_lines, free_port, free_udp_port, wait_for_announcement, wait_until_accepting,
    wait_until_accepting_unix, wait_until_answering_udp,
};
use super::results::RunOutcome;
use super::servers::{Launch, PORT_PLACEHOLDER, SOCKET_PLACEHOLDER, ServerSpec};
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
    /// Where runs keep their Unix sockets and HAProxy configurations.
    pub work_dir: PathBuf,
    /// What the TLS rows serve (made at start when one is selected).
    pub certificate: Option<Certificate>,
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
    /// Its TCP address (`None` on a Unix socket).
    addr: Option<SocketAddr>,
    /// What loadgen's `--target` is.
    target: String,
    /// A server behind `child` (HAProxy's backend), stopped after it; its CPU counts too.
    backend: Option<Child>,
}

impl RunningServer {
    fn tcp(child: Child, addr: SocketAddr) -> RunningServer {
        RunningServer {
            child,
            addr: Some(addr),
            target: addr.to_string(),
            backend: None,
        }
    }
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
            if let Launch::Bundled { binary, .. }
            | Launch::BundledUdp { binary, .. }
            | Launch::BundledTls { binary, .. }
            | Launch::BundledUnix { binary, .. }
            | Launch::HaproxyTls { binary, .. } = spec.launch
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
            }
            | Launch::HaproxyTls {
                binary,
                args: server_args,
            } => {
                args.push(self.binary(binary).display().to_string());
                args.extend(server_args.iter().map(|a| a.to_string()));
            }
            Launch::BundledTls {
                binary,
                args: server_args,
            } => {
                args.push(self.binary(binary).display().to_string());
                args.extend(server_args.iter().map(|a| a.to_string()));
                if let Some(certificate) = &self.certificate {
                    args.push("--tls-cert".into());
                    args.push(certificate.cert.display().to_string());
                    args.push("--tls-key".into());
                    args.push(certificate.key.display().to_string());
                }
            }
            Launch::BundledUnix {
                binary,
                args: server_args,
            } => {
                let socket = self.socket_path(spec).display().to_string();
                args.push(self.binary(binary).display().to_string());
                args.extend(
                    server_args
                        .iter()
                        .map(|a| a.replace(SOCKET_PLACEHOLDER, &socket)),
                );
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

    /// The Unix socket a [`Launch::BundledUnix`] row listens on.
    fn socket_path(&self, spec: &ServerSpec) -> PathBuf {
        self.work_dir.join(format!("{}.sock", spec.name))
    }

    /// loadgen's program and arguments against `target`, server `pid` (and `also` beside
    /// it), writing `json`.
    fn loadgen_command(
        &self,
        spec: &ServerSpec,
        target: &str,
        pid: &str,
        also: Option<&str>,
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
        if let Some(also) = also {
            args.extend(["--also-server-pid".into(), also.into()]);
        }
        if let Some(rate) = load.rate {
            args.extend(["--rate".into(), format!("{rate:.0}")]);
        }
        args.extend(spec.loadgen_args.iter().map(|a| a.to_string()));
        ("taskset".into(), args)
    }

    /// Markdown naming the commands of one run of `spec`, with ADDR and PID left symbolic.
    pub fn describe_run(&self, spec: &ServerSpec) -> String {
        let (program, args) = self.server_command(spec, "PORT");
        let mut server = command_line(&program, &args);
        let target = match spec.launch {
            Launch::Bundled { .. } | Launch::BundledTls { .. } => "ADDR".to_string(),
            Launch::BundledUnix { .. } => format!("unix:{}", self.socket_path(spec).display()),
            Launch::External { .. } | Launch::BundledUdp { .. } | Launch::HaproxyTls { .. } => {
                "127.0.0.1:PORT".to_string()
            }
        };
        let also = matches!(spec.launch, Launch::HaproxyTls { .. }).then_some("ENGINE_PID");
        if also.is_some() {
            let (program, args) = self.haproxy_command(&self.haproxy_config_path(spec));
            server = format!(
                "{server}` (ENGINE_PID) and `{}` (PID, {} below)",
                command_line(&program, &args),
                haproxy::describe()
            );
        }
        let (program, args) = self.loadgen_command(
            spec,
            &target,
            "PID",
            also,
            &format!("{}-roundN.json", spec.name),
        );
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
        let mut stopped = stop(&mut server.child);
        if let Some(backend) = server.backend.as_mut() {
            stopped = stopped.and(stop(backend));
        }
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
            Ok(()) => Ok(RunningServer::tcp(child, addr)),
            Err(why) => Err(abandon(child, why, log_path)),
        }
    }

    /// Starts a bundled server whose stdout (forwarded to `log`, line by line to the
    /// receiver) announces where it listens.
    fn spawn_announcing(
        &self,
        spec: &ServerSpec,
        log: File,
        stderr: File,
    ) -> Result<(Child, std::sync::mpsc::Receiver<String>), String> {
        let (program, args) = self.server_command(spec, "0");
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", command_line(&program, &args)))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok((child, forward_lines(stdout, log)))
    }

    fn start_server(&self, spec: &ServerSpec, log_path: &Path) -> Result<RunningServer, String> {
        let log = File::create(log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let clone_log = || {
            log.try_clone()
                .map_err(|e| format!("cannot share {}: {e}", log_path.display()))
        };
        match &spec.launch {
            Launch::Bundled { .. } | Launch::BundledTls { .. } => {
                let stderr = clone_log()?;
                let (mut child, lines) = self.spawn_announcing(spec, log, stderr)?;
                match wait_for_announcement(&mut child, &lines) {
                    Ok(addr) => Ok(RunningServer::tcp(child, addr)),
                    Err(why) => Err(abandon(child, why, log_path)),
                }
            }
            Launch::BundledUnix { .. } => {
                let socket = self.socket_path(spec);
                let stderr = clone_log()?;
                let (mut child, _lines) = self.spawn_announcing(spec, log, stderr)?;
                match wait_until_accepting_unix(&mut child, &socket) {
                    Ok(()) => Ok(RunningServer {
                        child,
                        addr: None,
                        target: format!("unix:{}", socket.display()),
                        backend: None,
                    }),
                    Err(why) => Err(abandon(child, why, log_path)),
                }
            }
            Launch::HaproxyTls { .. } => {
                let stderr = clone_log()?;
                let (mut backend, lines) = self.spawn_announcing(spec, log, stderr)?;
                let backend_addr = match wait_for_announcement(&mut backend, &lines) {
                    Ok(addr) => addr,
                    Err(why) => return Err(abandon(backend, why, log_path)),
                };
                self.start_haproxy(spec, backend, backend_addr, log_path)
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
        let backend_pid = server.backend.as_ref().map(|b| b.id().to_string());
        let (program, args) = self.loadgen_command(
            spec,
            &server.target,
            &server.child.id().to_string(),
            backend_pid.as_deref(),
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
