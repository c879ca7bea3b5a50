//! compare's TLS and Unix socket rows end to end: engine-tls (the certificate compare
//! makes), engine-unix (a socket in the work directory) and haproxy-tls (HAProxy in front
//! of the engine, both processes' CPU counted) each started, driven by the real loadgen and
//! stopped. haproxy-tls is skipped, saying so, where HAProxy is not installed.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ringrpc_benches::compare::certs::make_certificate;
use ringrpc_benches::compare::runner::{RunFiles, Runner};
use ringrpc_benches::compare::servers::{opt_in_servers, select};
use ringrpc_benches::compare::settings::{LoadShape, Pinning};
use ringrpc_benches::compare::summary::RunOutcome;

/// Builds the engine and loadgen (the tests' profile); returns the directory they are in.
fn bin_dir() -> PathBuf {
    common::build_beside_loadgen(&["-p", "ringrpc-loadgen", "-p", "ringrpc-cli"])
}

#[test]
fn compare_runs_the_tls_unix_and_haproxy_rows() {
    let out = std::env::temp_dir().join(format!("compare-tls-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let haproxy = Command::new("haproxy").arg("-v").output().is_ok();
    let names = if haproxy {
        "engine-tls,engine-unix,haproxy-tls"
    } else {
        eprintln!("haproxy is not installed: the haproxy-tls row is not run");
        "engine-tls,engine-unix"
    };
    let servers = select(Vec::new(), opt_in_servers(), Some(names)).unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runner = Runner {
        bin_dir: bin_dir(),
        work_dir: out.clone(),
        certificate: Some(make_certificate(&out).unwrap()),
        load: LoadShape {
            conns: 4,
            per_conn: 4,
            payload_bytes: 32,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            rate: None,
        },
        pinning: Pinning {
            server_cpu: 0,
            loadgen_cpu: if cpus > 1 { 1 } else { 0 },
        },
    };
    assert!(runner.missing_binaries(&servers).is_empty());
    for spec in &servers {
        let files = RunFiles {
            json: out.join(format!("{}.json", spec.name)),
            server_log: out.join(format!("{}.server.log", spec.name)),
            loadgen_log: out.join(format!("{}.loadgen.txt", spec.name)),
        };
        let outcome = runner.run_once(spec, &files);
        let loadgen_log = std::fs::read_to_string(&files.loadgen_log).unwrap_or_default();
        match outcome {
            RunOutcome::Measured(report) => {
                assert!(report.success, "{}", spec.name);
                assert!(report.server_cpu_us_per_request.is_some(), "{}", spec.name);
            }
            RunOutcome::Failed(why) => panic!("{} failed: {why}\n{loadgen_log}", spec.name),
        }
        let expected = match spec.name.as_str() {
            "engine-unix" => "--target unix:",
            "haproxy-tls" => "--also-server-pid",
            _ => "--tls --tls-insecure",
        };
        assert!(loadgen_log.contains(expected), "{loadgen_log}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
