//! The haproxy-tls row: HAProxy terminating TLS in front of a bundled server (what a user
//! had before native TLS), one thread, pinned to the server CPU beside its backend.
//!
//! Invariant: HAProxy runs in the foreground (`-db`) so its PID is the one measured and
//! stopped; its backend is stopped after it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::super::process::{abandon, command_line, stop};
use super::super::readiness::{free_port, wait_until_accepting};
use super::{Runner, RunningServer};
use crate::compare::servers::ServerSpec;

/// What the configuration sets, for the report's run commands.
pub(super) fn describe() -> &'static str {
    "nbthread 1, maxconn 4096, mode tcp, bind ssl crt CERT alpn arpc, one backend server"
}

/// HAProxy's configuration: TLS on `port` with `crt`, forwarding to `backend`.
fn config(port: u16, crt: &Path, backend: SocketAddr) -> String {
    format!(
        "global\n    nbthread 1\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend tls\n    bind 127.0.0.1:{port} ssl crt {} alpn arpc\n    default_backend engine\n\
         backend engine\n    server engine {backend}\n",
        crt.display()
    )
}

impl Runner {
    pub(super) fn haproxy_config_path(&self, spec: &ServerSpec) -> PathBuf {
        self.work_dir.join(format!("{}.cfg", spec.name))
    }

    pub(super) fn haproxy_command(&self, config: &Path) -> (String, Vec<String>) {
        let args = vec![
            "-c".to_owned(),
            self.pinning.server_cpu.to_string(),
            "haproxy".to_owned(),
            "-db".to_owned(),
            "-f".to_owned(),
            config.display().to_string(),
        ];
        ("taskset".into(), args)
    }

    /// Starts HAProxy in front of `backend` (already listening on `backend_addr`); ready once
    /// its TLS port accepts. On failure the backend is stopped too.
    pub(super) fn start_haproxy(
        &self,
        spec: &ServerSpec,
        mut backend: Child,
        backend_addr: SocketAddr,
        log_path: &Path,
    ) -> Result<RunningServer, String> {
        let fail = |mut backend: Child, why: String| {
            let _ = stop(&mut backend);
            Err(why)
        };
        let Some(certificate) = &self.certificate else {
            return fail(backend, "haproxy-tls needs compare's certificate".into());
        };
        let port = match free_port() {
            Ok(port) => port,
            Err(why) => return fail(backend, why),
        };
        let config_path = self.haproxy_config_path(spec);
        if let Err(e) = std::fs::write(
            &config_path,
            config(port, &certificate.combined, backend_addr),
        ) {
            return fail(
                backend,
                format!("cannot write {}: {e}", config_path.display()),
            );
        }
        let log = File::options().append(true).open(log_path);
        let (out, err) = match log.and_then(|log| Ok((log.try_clone()?, log))) {
            Ok(files) => files,
            Err(e) => return fail(backend, format!("cannot open {}: {e}", log_path.display())),
        };
        let (program, args) = self.haproxy_command(&config_path);
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                let why = format!(
                    "cannot start {}: {e} (install HAProxy: apt-get install haproxy)",
                    command_line(&program, &args)
                );
                return fail(backend, why);
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(why) = wait_until_accepting(&mut child, addr) {
            let _ = stop(&mut backend);
            return Err(abandon(child, why, log_path));
        }
        let mut server = RunningServer::tcp(child, addr);
        server.backend = Some(backend);
        Ok(server)
    }
}
